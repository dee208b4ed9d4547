"""One spelling per option across commands; old spellings still parse, hidden from --help."""

from __future__ import annotations

import pytest

from repsim.cli import build_parser, main
from repsim.cli._common import SPELLINGS, activation_dir

# (old argv, new argv, dest): the old spelling must parse to what the new one gives.
RENAMED = [
    (["prune", "m", "--sparsity", "0.5", "--out", "o", "--dataset", "digits"], "--data", "dataset"),
    (["distill", "t", "s", "--out", "o", "--dataset", "digits"], "--data", "dataset"),
    (["saliency", "m", "--dataset", "digits"], "--data", "dataset"),
    (["saliency", "m", "--data", "digits", "--by", "class"], "--groups", "by"),
    (["similarity", "a", "b", "--by-groups"], "--by-group", "by_groups"),
    (["similarity", "a", "b", "--measure", "cka"], "--measures", "measures"),
    (["similarity", "a", "b", "--layer", "x"], "--layers", "layers"),
    (["compare", "a", "b", "--cache", "c"], "--cache-dir", "cache"),
    (["compare", "a", "b", "--no-groups"], "--no-by-group", "no_groups"),
]


def _parse(argv):
    return build_parser().parse_args(argv)


def _new_argv(old, new):
    aliases = {a for olds in SPELLINGS.values() for a in olds}
    return [new if a in aliases else a for a in old]


@pytest.mark.parametrize(("old", "new", "dest"), RENAMED)
def test_old_spelling_parses_like_the_new_one(old, new, dest, capsys):
    assert getattr(_parse(old), dest) == getattr(_parse(_new_argv(old, new)), dest)
    command = [a for a in old if not a.startswith("-")][:1]
    if old[0] in ("cache",):
        command = old[:2]
    with pytest.raises(SystemExit):
        _parse([*command, "--help"])
    text = capsys.readouterr().out
    olds = [
        a for a in old if a.startswith("--") and a in {x for v in SPELLINGS.values() for x in v}
    ]
    assert new in text
    for a in olds:
        assert f"{a} " not in text and f"{a}\n" not in text, a


def test_every_new_spelling_replaces_its_old_ones_everywhere():
    """No --help of any command shows an old spelling."""
    import argparse

    from repsim.cli import _leaf_parsers

    old = {a for olds in SPELLINGS.values() for a in olds}
    for leaf in _leaf_parsers(build_parser()):
        if leaf.prog == "repsim cache rm":
            continue  # --layer NAME --reduction R: the one array of an entry to delete
        shown = {
            s for a in leaf._actions if a.help is not argparse.SUPPRESS for s in a.option_strings
        }
        assert not shown & old, (leaf.prog, shown & old)


def test_list_options_take_several_values_or_repeat_and_replace_the_default():
    assert _parse(["similarity", "a", "b", "--measures", "cka", "svcca"]).measures == [
        "cka",
        "svcca",
    ]
    assert _parse(["similarity", "a", "b", "--measure", "cka", "--measure", "svcca"]).measures == [
        "cka",
        "svcca",
    ]
    assert _parse(["similarity", "a", "b", "--layer", "x", "--layers", "y", "z"]).layers == [
        "x",
        "y",
        "z",
    ]
    assert _parse(["similarity", "a", "b"]).measures is None


@pytest.mark.parametrize(
    "argv",
    [
        ["-q", "--threads", "3", "data", "list"],
        ["data", "list", "-q", "--threads", "3"],
        ["--threads", "3", "data", "list", "--quiet"],
    ],
)
def test_common_options_go_before_or_after_the_command(argv):
    args = _parse(argv)
    assert args.quiet is True and args.threads == 3 and args.verbose == 0


def test_verbose_counts_and_defaults():
    args = _parse(["data", "list"])
    assert (args.quiet, args.threads, args.verbose) == (False, None, 0)
    assert _parse(["data", "list", "-vv"]).verbose == 2
    assert _parse(["-v", "data", "list"]).verbose == 1


def test_activation_dir_takes_the_cache_root_or_an_old_store_path(tmp_path):
    assert activation_dir(tmp_path) == tmp_path / "activations"
    assert activation_dir(tmp_path / "activations") == tmp_path / "activations"
    store = tmp_path / "old-store"
    (store / "0123-4567").mkdir(parents=True)
    (store / "0123-4567" / "zarr.json").write_text("{}")
    assert activation_dir(store) == store


def test_cache_ls_finds_a_study_cache_from_its_root(tmp_path, capsys):
    from repsim.capture import record
    from repsim.capture.store import ActivationStore
    from repsim.data import load_dataset
    from tests.helpers import tiny_resnet

    data = load_dataset("digits").test.subset(slice(0, 30))
    store = ActivationStore(tmp_path / "cache" / "activations")
    cap = record(tiny_resnet(), data, ["block1"], store=store, progress=False)
    key = f"{cap.model_fingerprint}-{cap.data_fingerprint}"
    for argv in (
        ["cache", "ls", "--cache-dir", str(tmp_path / "cache")],
        ["cache", "ls", "--path", str(tmp_path / "cache" / "activations")],
    ):
        assert main(argv) == 0
        assert key in capsys.readouterr().out


def test_a_command_group_without_its_action_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["subnetwork"])
    assert exc.value.code == 2
    assert "'repsim subnetwork' needs an action" in capsys.readouterr().err


def test_old_cache_path_option_names_the_store_itself(tmp_path):
    """``--path`` (0.1) named the activation store; ``--cache-dir`` names the cache root."""
    old = _parse(["cache", "verify", "--path", str(tmp_path / "store")])
    new = _parse(["cache", "verify", "--cache-dir", str(tmp_path / "root")])
    assert old.path == tmp_path / "store"
    assert new.path == tmp_path / "root" / "activations"
