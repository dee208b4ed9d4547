"""``repsim cache ls`` finds study caches under the cache root and prints whole names."""

import argparse

from repsim.capture import record
from repsim.cli.cache import add_parser, find_stores
from repsim.data import load_dataset
from tests.helpers import tiny_resnet


def run(argv):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_ls_lists_every_store_under_the_root_with_whole_names(tmp_path, capsys):
    data = load_dataset("digits").test.subset(slice(0, 40))
    store = tmp_path / "cache" / "activations"  # where a study writes
    other = tmp_path / "cache" / "compare"
    long_name = "a-model-name-longer-than-sixteen-characters"
    record(tiny_resnet(), data, ["block1"], store=store, progress=False, name=long_name)
    record(tiny_resnet(1), data, ["block1"], store=other, progress=False)
    assert find_stores(tmp_path / "cache") == [store, other]
    assert run(["cache", "ls", "--path", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert str(store) in out and str(other) in out
    assert long_name in out  # not cut to 16 characters
    # a store path itself still works, and an empty root says so
    assert run(["cache", "ls", "--path", str(store)]) == 0
    assert long_name in capsys.readouterr().out
    assert run(["cache", "ls", "--path", str(tmp_path / "empty")]) == 0
    assert "No cache entries" in capsys.readouterr().out
