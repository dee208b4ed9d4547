import argparse
import csv

import numpy as np
import pytest

from repsim.cli.similarity import add_parser as add_parsers
from repsim.errors import DataError
from repsim.similarity import cka


def parse(argv):
    parser = argparse.ArgumentParser(prog="repsim")
    add_parsers(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_similarity_command_writes_table(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(50, 6)), rng.normal(size=(50, 4))
    ids = np.arange(50)
    groups = np.array(["g0", "g1"] * 25)
    np.savez(tmp_path / "dense.npz", fc=X, sample_id=ids, groups=groups)
    np.savez(
        tmp_path / "pruned.npz", fc=X + 0.3 * rng.normal(size=X.shape), sample_id=ids, groups=groups
    )
    args = parse(
        [
            "similarity",
            str(tmp_path / "dense.npz"),
            str(tmp_path / "pruned.npz"),
            "--measure",
            "cka",
            "--by-groups",
            "--out",
            str(tmp_path / "t.csv"),
        ]
    )
    assert args.func(args) == 0
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert [r["group"] for r in rows] == ["", "g0", "g1"]
    assert rows[0]["model_a"] == "dense" and rows[0]["layer_a"] == "fc"
    pruned = np.load(tmp_path / "pruned.npz")["fc"]
    assert float(rows[0]["value"]) == pytest.approx(cka(X, pruned))
    np.savez(tmp_path / "other.npz", fc=Y, sample_id=ids[::-1])
    args = parse(["similarity", str(tmp_path / "dense.npz"), str(tmp_path / "other.npz")])
    from repsim.errors import SampleOrderError

    with pytest.raises(SampleOrderError):
        args.func(args)
    args = parse(["similarity", str(tmp_path / "missing.npz"), str(tmp_path / "other.npz")])
    with pytest.raises(DataError):
        args.func(args)


def test_measures_command(capsys):
    args = parse(["measures"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "cka_debiased" in out and "procrustes" in out and "distance" in out
