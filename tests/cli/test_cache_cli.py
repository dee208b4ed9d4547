import argparse

from repsim.capture import record
from repsim.cli.cache import add_parser
from repsim.data import load_dataset
from tests.helpers import tiny_resnet


def run(argv):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cache_commands(tmp_path, capsys):
    data = load_dataset("digits").test.subset(slice(0, 60))
    cap = record(tiny_resnet(), data, ["block1"], store=tmp_path, progress=False)
    key = f"{cap.model_fingerprint}-{cap.data_fingerprint}"
    assert run(["cache", "ls", "--path", str(tmp_path), "--layers"]) == 0
    out = capsys.readouterr().out
    assert key in out and "TinyResNet" in out and "block1 [flatten] 256" in out
    assert run(["cache", "info", key[:8], "--path", str(tmp_path)]) == 0
    assert "block1@flatten" in capsys.readouterr().out
    assert run(["cache", "verify", "--path", str(tmp_path)]) == 0
    (tmp_path / key / "logits" / "zarr.json").write_text("garbage")
    assert run(["cache", "verify", "--path", str(tmp_path)]) == 1
    assert "logits" in capsys.readouterr().out
    assert run(["cache", "rm", key, "--path", str(tmp_path)]) == 0
    assert run(["cache", "ls", "--path", str(tmp_path)]) == 0
    assert "No cache entries" in capsys.readouterr().out
