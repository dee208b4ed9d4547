import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from torch.nn.utils import prune

from repsim.capture import record
from repsim.capture.store import META_ARRAYS, ActivationStore, array_name, parse_array_name
from repsim.data import load_dataset
from repsim.errors import CacheError, NonFiniteError
from tests.capture.kill_worker import CHUNK_BYTES, LAYERS
from tests.helpers import tiny_resnet

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data():
    return load_dataset("digits").test.subset(slice(0, 150))


def entry_dir(store, cap):
    return store.path / f"{cap.model_fingerprint}-{cap.data_fingerprint}"


def test_array_names_roundtrip():
    for layer in ["block1.conv2", "fc:input", "weird/name", "a+b"]:
        name = array_name(layer, "mean")
        assert "/" not in name and ":" not in name
        if "+" not in layer:
            assert parse_array_name(name) == (layer, "mean")


def test_store_roundtrip_layout_and_provenance(tmp_path, data):
    model = tiny_resnet()
    mem = record(model, data, ["stem", "block1", "fc:input"], batch_size=32, progress=False)
    store = ActivationStore(tmp_path / "c", chunk_bytes=8192)
    cap = record(
        model, data, ["stem", "block1", "fc:input"], store=store, batch_size=32, progress=False
    )
    for layer in cap:
        assert isinstance(cap[layer], zarr.Array)
        np.testing.assert_array_equal(cap.numpy(layer), mem[layer])
    for k in ("logits", "predictions", "labels", "groups", "sample_id"):
        np.testing.assert_array_equal(getattr(cap, k), getattr(mem, k))
    arr = cap["block1"]
    assert arr.shape == (150, 4 * 8 * 8)
    assert arr.chunks == (8192 // (4 * 256), 256)  # full rows, about chunk_bytes
    assert np.isnan(arr.fill_value)
    codec = arr.compressors[0]
    assert type(codec).__name__ == "BloscCodec" and codec.cname.value == "zstd"
    attrs = dict(arr.attrs)
    assert attrs["complete"] and attrs["layer"] == "block1" and attrs["reduction"] == "flatten"
    assert attrs["repsim_schema"] == 2 and attrs["dtype"] == "<f4" and attrs["seed"] == 0
    assert attrs["checksum"] == "crc32c" and len(attrs["chunk_checksums"]) == -(-150 // 8)
    group = zarr.open_group(str(entry_dir(store, cap)), mode="r")
    assert set(group.attrs["versions"]) >= {"repsim", "torch", "zarr"}
    assert group.attrs["n_samples"] == 150
    assert set(META_ARRAYS) <= set(group.array_keys())
    assert store.verify() == []
    info = store.entries()[0]
    assert info.ok and ("block1", "flatten", 256) in info.layers and info.nbytes > 0


def test_cache_hit_skips_forward_and_new_layers_are_added(tmp_path, data):
    model = tiny_resnet()
    store = ActivationStore(tmp_path)
    calls = []

    def count(m, a):
        calls.append(1)

    count.repsim_fingerprint = ""  # observe-only: left out of the cache key
    model.register_forward_pre_hook(count)
    record(model, data, ["block1"], store=store, batch_size=50, progress=False)
    n_first = len(calls)
    assert n_first == 3
    again = record(model, data, ["block1"], store=store, batch_size=50, progress=False)
    assert len(calls) == n_first  # served from disk
    more = record(model, data, ["block1", "block2"], store=store, batch_size=50, progress=False)
    assert len(calls) == 2 * n_first
    np.testing.assert_array_equal(more.numpy("block1"), again.numpy("block1"))
    assert len(store.keys()) == 1 and store.verify() == []


def test_changed_weights_or_mask_get_a_new_entry(tmp_path, data):
    store = ActivationStore(tmp_path)
    model = tiny_resnet()
    a = record(model, data, ["fc"], store=store, progress=False)
    with torch.no_grad():
        model.fc.weight[0, 0] += 1.0
    b = record(model, data, ["fc"], store=store, progress=False)
    assert a.model_fingerprint != b.model_fingerprint
    assert not np.array_equal(a.numpy("fc"), b.numpy("fc"))
    prune.l1_unstructured(model.fc, "weight", amount=0.5)
    c = record(model, data, ["fc"], store=store, progress=False)
    assert len({a.model_fingerprint, b.model_fingerprint, c.model_fingerprint}) == 3
    assert len(store.keys()) == 3


def test_bad_store_paths(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(CacheError, match="is a file"):
        ActivationStore(f)
    foreign = tmp_path / "foreign"
    zarr.open_group(str(foreign), mode="w", attributes={"owner": "someone"})
    with pytest.raises(CacheError, match="did not write"):
        ActivationStore(foreign)


def test_nonfinite_leaves_no_entry_and_keeps_cache(tmp_path, data):
    store = ActivationStore(tmp_path)
    model = tiny_resnet()
    good = record(model, data, ["block1"], store=store, progress=False)
    before = good.numpy("block1")
    with torch.no_grad():
        model.block2.conv1.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="block2.conv1"):
        record(model, data, ["block2.conv1"], store=store, batch_size=50, progress=False)
    assert not list((tmp_path / ".tmp").iterdir())
    assert len(store.keys()) == 1
    np.testing.assert_array_equal(good.numpy("block1"), before)
    assert store.verify() == []


def _corrupt_and_rebuild(store, data, damage):
    model = tiny_resnet()
    ref = record(model, data, ["block1", "block2"], store=store, batch_size=32, progress=False)
    expected = {k: ref.numpy(k) for k in ref}
    damage(entry_dir(store, ref))
    problems = store.verify()
    assert problems, "verify must report the damage"
    rebuilt = record(model, data, ["block1", "block2"], store=store, batch_size=32, progress=False)
    for k, v in expected.items():
        np.testing.assert_array_equal(rebuilt.numpy(k), v)
    assert store.verify() == []
    return problems


def test_lost_chunk_is_reported_and_rebuilt(tmp_path, data):
    def damage(d):
        chunks = sorted(
            p for p in (d / "block1@flatten").rglob("*") if p.is_file() and p.name != "zarr.json"
        )
        chunks[0].unlink()

    problems = _corrupt_and_rebuild(ActivationStore(tmp_path, chunk_bytes=4096), data, damage)
    assert any("missing" in p.reason and p.array == "block1@flatten" for p in problems)


def test_garbage_metadata_is_reported_and_rebuilt(tmp_path, data):
    problems = _corrupt_and_rebuild(
        ActivationStore(tmp_path),
        data,
        lambda d: (d / "block2@flatten" / "zarr.json").write_text("{not json"),
    )
    assert any("unreadable" in p.reason for p in problems)


def test_damaged_group_metadata_is_reported_and_rebuilt(tmp_path, data):
    problems = _corrupt_and_rebuild(
        ActivationStore(tmp_path), data, lambda d: (d / "zarr.json").write_text("{garbage")
    )
    assert any("unreadable group metadata" in p.reason for p in problems)


def test_foreign_group_at_key_is_left_alone(tmp_path, data):
    # a readable group without repsim's marker is someone else's: never listed, never replaced
    store = ActivationStore(tmp_path)
    model = tiny_resnet()
    ref = record(model, data, ["block1"], store=store, batch_size=32, progress=False)
    d = entry_dir(store, ref)
    meta = json.loads((d / "zarr.json").read_text())
    meta["attributes"] = {"owner": "someone else"}
    (d / "zarr.json").write_text(json.dumps(meta))
    assert store.keys() == [] and store.verify() == []
    with pytest.raises(CacheError, match="not written by repsim"):
        record(model, data, ["block1"], store=store, batch_size=32, progress=False)
    assert json.loads((d / "zarr.json").read_text())["attributes"] == {"owner": "someone else"}
    assert (d / "block1@flatten" / "zarr.json").is_file()
    assert not list((tmp_path / ".tmp").iterdir())


def test_wrong_shape_is_reported(tmp_path, data):
    def damage(d):
        meta = json.loads((d / "block1@flatten" / "zarr.json").read_text())
        meta["shape"] = [10, meta["shape"][1]]
        (d / "block1@flatten" / "zarr.json").write_text(json.dumps(meta))

    problems = _corrupt_and_rebuild(ActivationStore(tmp_path), data, damage)
    assert any("rows" in p.reason for p in problems)


def test_rm(tmp_path, data):
    store = ActivationStore(tmp_path)
    cap = record(tiny_resnet(), data, ["block1", "block2"], store=store, progress=False)
    key = store.keys()[0]
    store.rm(key[:6], layers=[("block1", "flatten")])
    assert [x[0] for x in store.entry(key).layers] == ["block2"]
    store.rm(key)
    assert store.keys() == []
    assert cap.model_fingerprint in key


def _worker(path, batch, sleep):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REPSIM_TEST_SLEEP": str(sleep),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.capture.kill_worker", str(path), str(batch)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _n_chunks(tmp):
    n = 0
    for root, _, files in os.walk(tmp):
        n += sum(1 for f in files if f != "zarr.json" and "/c" in root)
    return n


def test_killed_capture_resumes_bit_identical(tmp_path):
    data_all = load_dataset("digits").test
    path = tmp_path / "store"
    proc = _worker(path, 20, 0.15)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:  # wait until some chunks are on disk
            if _n_chunks(path / ".tmp") >= 6:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        else:
            pytest.fail("worker wrote no chunks")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    store = ActivationStore(path, chunk_bytes=CHUNK_BYTES)
    assert store.keys() == []  # nothing visible as an entry
    assert any(".tmp" in p.key for p in store.verify())
    resumed = record(
        tiny_resnet(slow=True), data_all, LAYERS, store=store, batch_size=20, progress=False
    )
    clean_store = ActivationStore(tmp_path / "clean", chunk_bytes=CHUNK_BYTES)
    clean = record(
        tiny_resnet(slow=True), data_all, LAYERS, store=clean_store, batch_size=20, progress=False
    )
    for layer in LAYERS:
        a, b = resumed.numpy(layer), clean.numpy(layer)
        assert a.tobytes() == b.tobytes()
    assert resumed.logits.tobytes() == clean.logits.tobytes()
    assert store.verify() == []  # the dead process's temp group was cleaned up


@pytest.mark.slow
def test_two_processes_same_key(tmp_path):
    path = tmp_path / "store"
    procs = [_worker(path, 60, 0.02) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    store = ActivationStore(path, chunk_bytes=CHUNK_BYTES)
    assert store.verify() == [] and len(store.keys()) == 1
    data_all = load_dataset("digits").test
    ref = record(tiny_resnet(slow=True), data_all, LAYERS, batch_size=60, progress=False)
    cached = record(tiny_resnet(slow=True), data_all, LAYERS, store=store, progress=False)
    for layer in LAYERS:
        np.testing.assert_array_equal(cached.numpy(layer), ref[layer])
