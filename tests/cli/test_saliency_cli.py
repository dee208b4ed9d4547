"""The saliency subcommand handler, called with parsed arguments."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from repsim.cli.saliency import add_parser
from repsim.compress import prune
from repsim.data import load_dataset
from repsim.models import build_model, save_model


def test_saliency_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = load_dataset("digits-imbalanced")
    model = build_model("mlp", input_shape=data.train.input_shape, n_classes=10, seed=0)
    pruned, _ = prune(model, 0.8)
    save_model(model, tmp_path / "dense")
    save_model(pruned, tmp_path / "pruned")
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(
        [
            "saliency",
            str(tmp_path / "dense"),
            "--dataset",
            "digits-imbalanced",
            "--pruned",
            str(tmp_path / "pruned"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["groups"] == ["majority", "minority", "overall"]
    rows = summary["salient_removed"]
    assert [r["group"] for r in rows] == ["majority", "minority", "overall"]
    assert all(r["chance"] == pytest.approx(0.8, abs=0.01) for r in rows)
    assert (tmp_path / "out" / "salient_removed.csv").exists()
    assert (tmp_path / "out" / "salient_removed.png").exists()
