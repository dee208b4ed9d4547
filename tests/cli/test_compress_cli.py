import argparse
import json

import pytest
import torch

from repsim.cli.compress import add_parser
from repsim.compress import Mask
from repsim.errors import ConfigError
from repsim.models import load_model, save_model


def _run(argv):
    parser = argparse.ArgumentParser(prog="repsim")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_prune_quantize_distill(tmp_path, cnn, capsys):
    dense = save_model(cnn, tmp_path / "dense")
    assert _run(["prune", str(dense), "--sparsity", "0.8", "--out", str(tmp_path / "p")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sparsity"] == pytest.approx(0.8, abs=1e-4)
    pruned = load_model(tmp_path / "p")
    mask = Mask.load(out["mask"])
    assert torch.equal(pruned.fc.weight_mask.bool(), mask["fc.weight"])

    assert _run(["quantize", str(dense), "--bits", "4", "--out", str(tmp_path / "q")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bits"] == 4 and all(v["max_levels"] <= 15 for v in out["layers"].values())

    assert (
        _run(
            [
                "distill",
                str(dense),
                str(tmp_path / "p.safetensors"),
                "--dataset",
                "digits-imbalanced",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    student = load_model(tmp_path / "s")
    assert (student.fc.weight[~student.fc.weight_mask.bool()] == 0).all()
    assert 0 <= out["test_accuracy"] <= 1


def test_prune_finetune_needs_dataset(tmp_path, cnn):
    dense = save_model(cnn, tmp_path / "dense")
    with pytest.raises(ConfigError, match="--dataset"):
        _run(
            [
                "prune",
                str(dense),
                "--sparsity",
                "0.5",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "p"),
            ]
        )


def test_family_plan_and_build(tmp_path, capsys):
    cfg = tmp_path / "f.toml"
    cfg.write_text(
        '[family]\nname = "cli"\ndataset = "digits"\nmodel = "mlp"\nseeds = [0]\n'
        "model_options = {hidden = [16]}\n[family.train]\nepochs = 1\n"
        '[[family.compression]]\nmethod = "magnitude"\nsparsities = [0.5]\nfinetune_epochs = 1\n'
    )
    cache = str(tmp_path / "cache")
    assert _run(["family", "plan", str(cfg), "--cache-dir", cache]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["exists"] for m in listed] == [False, False]
    assert _run(["family", "build", str(cfg), "--cache-dir", cache]) == 0
    assert json.loads(capsys.readouterr().out)["built"] == 2
    assert _run(["family", "build", str(cfg), "--cache-dir", cache]) == 0
    assert json.loads(capsys.readouterr().out)["built"] == 0
