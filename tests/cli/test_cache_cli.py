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


def test_rm_all_and_ls_leave_foreign_zarr_groups_alone(tmp_path, capsys):
    import numpy as np
    import zarr

    from repsim.cli import main

    data = load_dataset("digits").test.subset(slice(0, 60))
    cap = record(tiny_resnet(), data, ["block1"], store=tmp_path, progress=False)
    key = f"{cap.model_fingerprint}-{cap.data_fingerprint}"
    theirs = zarr.open_group(str(tmp_path / "theirs"), mode="w", attributes={"owner": "x"})
    theirs.create_array("a", shape=(3,), dtype="i4")[:] = np.arange(3)
    assert main(["cache", "ls", "--path", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert key in out and "theirs" not in out and "(1 entry)" in out
    assert main(["cache", "rm", "--all", "--path", str(tmp_path)]) == 0
    assert f"removed {key}" in capsys.readouterr().out
    reopened = zarr.open_group(str(tmp_path / "theirs"), mode="r")
    assert reopened.attrs["owner"] == "x" and list(reopened["a"][:]) == [0, 1, 2]
    assert main(["cache", "rm", "theirs", "--path", str(tmp_path)]) == 2
    assert "No cache entry 'theirs'" in capsys.readouterr().err
    assert (tmp_path / "theirs" / "a" / "zarr.json").is_file()


def test_foreign_stores_and_flipped_chunks_on_the_command_line(tmp_path, capsys):
    import zarr

    from repsim.cli import main

    v2 = tmp_path / "v2"
    zarr.open_group(str(v2), mode="w", zarr_format=2)
    assert main(["cache", "rm", "--all", "--path", str(v2)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("repsim: error:") and "Zarr v2" in err and len(err.splitlines()) == 1
    assert (v2 / ".zgroup").is_file()

    store = tmp_path / "store"
    data = load_dataset("digits").test.subset(slice(0, 60))
    cap = record(tiny_resnet(), data, ["block1"], store=store, progress=False)
    chunk = next((store / f"{cap.model_fingerprint}-{cap.data_fingerprint}").rglob("c/0/0"))
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    chunk.write_bytes(bytes(raw))
    assert main(["cache", "verify", "--path", str(store), "--quick"]) == 0  # sizes unchanged
    assert main(["cache", "verify", "--path", str(store)]) == 1
    assert "checksum" in capsys.readouterr().out
