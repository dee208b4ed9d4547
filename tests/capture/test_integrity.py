"""The cache never serves a wrong number: keys cover everything, chunks are checksummed."""

import dataclasses
import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from torch import nn

from repsim.capture import record
from repsim.capture.store import ActivationStore, array_name, parse_array_name
from repsim.compress.quantize import quantize
from repsim.data import load_dataset
from repsim.errors import (
    CacheCorruptError,
    CacheError,
    ConfigError,
    DataError,
    FingerprintError,
)
from tests.helpers import tiny_resnet


@pytest.fixture(scope="module")
def data():
    return load_dataset("digits").test.subset(slice(0, 150))


def _entry(store, cap):
    return store.path / f"{cap.model_fingerprint}-{cap.data_fingerprint}"


def _chunks(array_dir):
    return sorted(p for p in (array_dir / "c").rglob("*") if p.is_file())


def _forward_counter(model):
    calls = []

    def count(m, a):
        calls.append(1)

    count.repsim_fingerprint = ""  # observe-only: not part of the key
    model.register_forward_pre_hook(count)
    return calls


# ------------------------------------------------------------------------------ keys


def test_data_key_covers_labels_groups_and_ids(tmp_path, data):
    store = ActivationStore(tmp_path)
    model = tiny_resnet()
    base = record(model, data, ["fc"], store=store, progress=False)
    other_groups = dataclasses.replace(
        data, groups=(data.y % 2).astype(np.int64), group_names=("even", "odd"), attributes={}
    )
    other_labels = dataclasses.replace(data, y=(data.y + 1) % 10)
    other_ids = dataclasses.replace(data, sample_id=data.sample_id + 1000)
    fps = {base.data_fingerprint}
    for variant in (other_groups, other_labels, other_ids):
        cap = record(model, variant, ["fc"], store=store, progress=False)
        fps.add(cap.data_fingerprint)
        # served metadata is the variant's own, never another entry's
        np.testing.assert_array_equal(cap.groups, variant.groups)
        np.testing.assert_array_equal(cap.labels, variant.y)
        np.testing.assert_array_equal(cap.sample_id, variant.sample_id)
    assert len(fps) == 4 and len(store.keys()) == 4


def test_model_key_covers_activation_quantisation_buffers_and_hyperparameters(tmp_path, data):
    store = ActivationStore(tmp_path)
    x = torch.from_numpy(data.x[:64])
    plain, _ = quantize(tiny_resnet(), 8)
    act, _ = quantize(tiny_resnet(), 8, activations=True, calibration=x, activation_bits=2)
    a = record(plain, data, ["fc"], store=store, progress=False)
    b = record(act, data, ["fc"], store=store, progress=False)
    assert a.model_fingerprint != b.model_fingerprint
    assert not np.array_equal(a.numpy("fc"), b.numpy("fc"))

    def mlp(slope):
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.LeakyReLU(slope), nn.Linear(8, 3))

    c = record(mlp(0.1), data, ["2"], store=store, progress=False)
    d = record(mlp(0.5), data, ["2"], store=store, progress=False)  # same weights, other slope
    assert c.model_fingerprint != d.model_fingerprint
    assert not np.array_equal(c.numpy("2"), d.numpy("2"))

    class Shifted(nn.Module):
        def __init__(self, shift):
            super().__init__()
            self.lin = nn.Linear(64, 3)
            self.register_buffer("shift", torch.tensor(shift), persistent=False)

        def forward(self, x):
            return self.lin(x.reshape(len(x), -1)) + self.shift

    torch.manual_seed(0)
    e = Shifted(0.0)
    f = Shifted(1.0)
    f.lin.load_state_dict(e.lin.state_dict())
    assert e.state_dict().keys() == f.state_dict().keys()  # the buffer is not in the state dict
    fp_e = record(e, data, ["lin"], store=store, progress=False).model_fingerprint
    fp_f = record(f, data, ["lin"], store=store, progress=False).model_fingerprint
    assert fp_e != fp_f


def test_parametrisations_are_in_the_key():
    from torch.nn.utils import parametrize

    from repsim._core.fingerprints import model_fingerprint

    class Scale(nn.Module):
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def forward(self, w):
            return w * self.factor

    def model(factor):
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(4, 3))
        parametrize.register_parametrization(m[0], "weight", Scale(factor))
        return m

    plain = nn.Sequential(nn.Linear(4, 3))
    assert len({model_fingerprint(model(1.0)), model_fingerprint(model(2.0))}) == 2
    assert model_fingerprint(model(2.0)) == model_fingerprint(model(2.0))
    assert model_fingerprint(plain) not in {model_fingerprint(model(1.0))}


def test_int8_weights_are_in_the_key():
    from repsim._core.fingerprints import model_fingerprint
    from repsim.compress.quantize import torch_int8_dynamic

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    a = torch_int8_dynamic(m)
    with torch.no_grad():
        m[0].weight.mul_(3)
    b = torch_int8_dynamic(m)
    assert model_fingerprint(a) != model_fingerprint(b)


def test_a_hook_function_is_refused_with_a_reason(tmp_path, data):
    store = ActivationStore(tmp_path)
    model = tiny_resnet()
    model.block1.register_forward_hook(lambda m, i, o: o * 2)
    with pytest.raises(FingerprintError, match="module 'block1' has a forward hook"):
        record(model, data, ["fc"], store=store, progress=False)
    assert store.keys() == []
    # in memory the capture runs (no cache key is needed)
    assert record(model, data, ["fc"], progress=False).n_samples == len(data)
    # a hook that declares what it computes is cached, under a key of its own
    model2 = tiny_resnet()
    plain = record(model2, data, ["fc"], store=store, progress=False)

    def double(m, i, o):
        return o * 2

    double.repsim_fingerprint = "double v1"
    model2.block1.register_forward_hook(double)
    doubled = record(model2, data, ["fc"], store=store, progress=False)
    assert doubled.model_fingerprint != plain.model_fingerprint
    assert not np.array_equal(doubled.numpy("fc"), plain.numpy("fc"))


def test_replaced_forward_is_refused(tmp_path, data):
    model = tiny_resnet()
    model.fc.forward = lambda x: x
    with pytest.raises(FingerprintError, match="forward replaced"):
        record(model, data, ["stem"], store=ActivationStore(tmp_path), progress=False)


# ------------------------------------------------------------------------------ names


class Named(nn.Module):
    """A model whose modules have awkward names (added with add_module)."""

    NAMES = ("fc", "fc+input", "a~b", "x@y", "é" * 40, "layer_" + "n" * 300, "ü" * 200)

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        for i, name in enumerate(self.NAMES):
            self.add_module(name, nn.Linear(64 if i == 0 else 10, 10))

    def forward(self, x):
        x = x.reshape(len(x), -1)
        for name in self.NAMES:
            x = getattr(self, name)(x)
        return x


def test_array_names_are_collision_free_and_fit_the_file_system(tmp_path, data):
    layers = [*Named.NAMES, "fc:input", "fc+input:input"]
    names = [array_name(layer, "flatten") for layer in layers]
    assert len(set(names)) == len(names)
    for name in names:
        assert len(name.encode()) <= 200 and "/" not in name and name.isascii()
    for layer, name in zip(layers, names, strict=True):
        parsed = parse_array_name(name)
        assert parsed is None or parsed == (layer, "flatten")
    assert array_name("fc:input", "mean") == "fc+input@mean"
    assert array_name("fc+input", "mean") == "fc%2Binput@mean"

    store = ActivationStore(tmp_path)
    model = Named()
    mem = record(model, data, layers, progress=False)
    cap = record(model, data, layers, store=store, progress=False)
    for layer in layers:
        np.testing.assert_array_equal(cap.numpy(layer), mem[layer])
        assert cap[layer].attrs["layer"] == layer
    listed = {(layer, red) for layer, red, _ in store.entry(store.keys()[0]).layers}
    assert listed == {(layer, "flatten") for layer in layers}
    assert store.verify() == []


# ------------------------------------------------------------------------------ checksums


def test_swapped_chunk_is_detected_by_verify_and_on_read(tmp_path, data):
    store = ActivationStore(tmp_path, chunk_bytes=4096)
    model = tiny_resnet()
    cap = record(model, data, ["block1"], store=store, progress=False)
    expected = cap.numpy("block1")
    d = _entry(store, cap) / "block1@flatten"
    c0, c1 = _chunks(d)[:2]
    shutil.copyfile(c0, c1)  # rows of chunk 1 served from chunk 0
    problems = store.verify(mark=False)
    with pytest.raises(CacheCorruptError, match=r"block1@flatten.*(checksum|bytes).*run the"):
        store.open(cap.model_fingerprint, cap.data_fingerprint, "block1@flatten")[:]
    assert [p.array for p in problems] == ["block1@flatten"]
    # the damaged array was flagged on read; the next capture rebuilds it, bit-identical
    calls = _forward_counter(model)
    again = record(model, data, ["block1"], store=store, progress=False)
    assert calls and again.numpy("block1").tobytes() == expected.tobytes()
    assert store.verify() == []


def test_a_lost_predictions_chunk_is_never_served_as_fill_values(tmp_path, data):
    store = ActivationStore(tmp_path, chunk_bytes=256)  # 32 rows per int64 chunk
    model = tiny_resnet()
    cap = record(model, data, ["fc"], store=store, progress=False)
    preds = cap.predictions.copy()
    d = _entry(store, cap)
    _chunks(d / "predictions")[1].unlink()
    with pytest.raises(CacheCorruptError, match="predictions.*missing"):
        store.open(cap.model_fingerprint, cap.data_fingerprint, "predictions")
    assert any(p.array == "predictions" and "missing" in p.reason for p in store.verify())
    calls = _forward_counter(model)
    again = record(model, data, ["fc"], store=store, progress=False)
    assert calls  # recaptured, not served
    np.testing.assert_array_equal(again.predictions, preds)
    assert (again.predictions >= 0).all()


def test_truncated_and_garbage_chunks_are_recaptured(tmp_path, data):
    store = ActivationStore(tmp_path, chunk_bytes=4096)
    model = tiny_resnet()
    cap = record(model, data, ["block1", "block2"], store=store, progress=False)
    expected = {k: cap.numpy(k) for k in cap}
    d = _entry(store, cap)
    first = _chunks(d / "block1@flatten")[0]
    first.write_bytes(first.read_bytes()[:-7])
    garbage = _chunks(d / "block2@flatten")[-1]
    garbage.write_bytes(os.urandom(garbage.stat().st_size))
    reasons = {p.array: p.reason for p in store.verify(mark=False)}
    assert "bytes" in reasons["block1@flatten"] and "checksum" in reasons["block2@flatten"]
    again = record(model, data, ["block1", "block2"], store=store, progress=False)
    for k, v in expected.items():
        assert again.numpy(k).tobytes() == v.tobytes()
    assert store.verify() == []


def test_random_byte_flips_are_detected_or_change_nothing(tmp_path, data):
    """Property: a flipped byte in any chunk is caught by verify and on read, or is harmless."""
    store = ActivationStore(tmp_path, chunk_bytes=2048)
    model = tiny_resnet()
    cap = record(model, data, ["stem", "block1", "fc"], store=store, progress=False)
    entry = _entry(store, cap)
    arrays = sorted(p.name for p in entry.iterdir() if p.is_dir())
    originals = {
        name: np.asarray(
            zarr.open_array(zarr.storage.LocalStore(entry / name, read_only=True))[...]
        )
        for name in arrays
    }
    rng = np.random.default_rng(18)
    detected = 0
    for _ in range(40):
        name = arrays[rng.integers(len(arrays))]
        chunk = _chunks(entry / name)[rng.integers(len(_chunks(entry / name)))]
        meta_path = entry / name / "zarr.json"
        meta_before, raw = meta_path.read_bytes(), chunk.read_bytes()
        flipped = bytearray(raw)
        pos = int(rng.integers(len(raw)))
        flipped[pos] ^= int(rng.integers(1, 256))
        chunk.write_bytes(bytes(flipped))
        try:
            by_verify = any(p.array == name for p in store.verify([entry.name], mark=False))
            try:
                arr = store.open(cap.model_fingerprint, cap.data_fingerprint, name)
                same = np.array_equal(np.asarray(arr[...]), originals[name], equal_nan=True)
                on_read = False
            except CacheCorruptError:
                on_read, same = True, None
            assert by_verify == on_read, (name, pos)
            if by_verify:
                detected += 1
            else:
                assert same, f"undetected flip at byte {pos} of {chunk} changed {name}"
        finally:
            chunk.write_bytes(raw)
            meta_path.write_bytes(meta_before)  # reading flagged the array; undo for the next
    assert detected == 40  # a CRC catches every single-byte change
    assert store.verify() == []


# ------------------------------------------------------------------------------ ownership


def test_foreign_zarr_stores_are_refused_for_writing(tmp_path):
    v2 = tmp_path / "v2"
    zarr.open_group(str(v2), mode="w", zarr_format=2)
    before = sorted(p.name for p in v2.iterdir())
    with pytest.raises(CacheError, match="Zarr v2 store that repsim did not write"):
        ActivationStore(v2)
    assert sorted(p.name for p in v2.iterdir()) == before
    v3 = tmp_path / "v3"
    zarr.create_array(str(v3), shape=(3,), dtype="i4")
    with pytest.raises(CacheError, match="did not write"):
        ActivationStore(v3)


def test_foreign_groups_inside_a_cache_are_never_counted_or_removed(tmp_path, data):
    store = ActivationStore(tmp_path)
    record(tiny_resnet(), data, ["fc"], store=store, progress=False)
    foreign = zarr.open_group(str(tmp_path / "theirs"), mode="w", attributes={"owner": "x"})
    foreign.create_array("a", shape=(4,), dtype="i4")[:] = np.arange(4)
    keylike = tmp_path / ("ab" * 8 + "-" + "cd" * 8)  # a repsim-shaped name, not repsim's
    zarr.open_group(str(keylike), mode="w", attributes={"owner": "x"})
    plain = tmp_path / ("ef" * 8 + "-" + "01" * 8)  # a plain directory of other files
    plain.mkdir()
    (plain / "notes.txt").write_text("mine")
    assert len(store.keys()) == 1
    for key in store.keys():
        store.rm(key)
    assert store.keys() == []
    assert (tmp_path / "theirs" / "a" / "zarr.json").is_file()
    assert (keylike / "zarr.json").is_file() and (plain / "notes.txt").read_text() == "mine"
    with pytest.raises(CacheError, match="No cache entry"):
        store.rm(keylike.name)
    root = json.loads((tmp_path / "zarr.json").read_text())
    assert root["attributes"]["repsim_cache"]["schema"] == 2


# ------------------------------------------------------------------------------ failures


def test_full_disk_mid_capture_is_one_clear_error_and_leaves_nothing(tmp_path, data, monkeypatch):
    import zarr.storage._local as local

    store = ActivationStore(tmp_path, chunk_bytes=4096)
    real_put = local._put
    writes = []

    def put(path, value, exclusive=False):
        if "/c/" in str(path):
            writes.append(path)
            if len(writes) > 5:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_put(path, value, exclusive=exclusive)

    monkeypatch.setattr(local, "_put", put)
    with pytest.raises(CacheError, match="No space left on device.*nothing was published"):
        record(tiny_resnet(), data, ["block1"], store=store, progress=False)
    monkeypatch.setattr(local, "_put", real_put)
    assert store.keys() == [] and not list((tmp_path / ".tmp").iterdir())


def test_read_only_cache_serves_hits_and_refuses_misses_clearly(tmp_path, data, monkeypatch):
    store = ActivationStore(tmp_path)
    model = tiny_resnet()
    first = record(model, data, ["fc"], store=store, progress=False)
    snapshot = sorted(str(p) for p in tmp_path.rglob("*"))

    def refuse(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path)):
            raise PermissionError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    real_mkdir = Path.mkdir
    monkeypatch.setattr(Path, "mkdir", refuse)
    again = record(model, data, ["fc"], store=store, progress=False)  # a hit needs no write
    np.testing.assert_array_equal(again.numpy("fc"), first.numpy("fc"))
    with pytest.raises(CacheError, match="Read-only file system; choose a writable cache path"):
        record(model, data, ["block1"], store=store, progress=False)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == snapshot


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_for_real(tmp_path, data):  # pragma: no cover - non-root only
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(CacheError, match="cache"):
            record(tiny_resnet(), data, ["fc"], store=ro / "cache", progress=False)
    finally:
        ro.chmod(0o755)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(data):
    with pytest.raises(ConfigError, match="CUDA is not available"):
        record(tiny_resnet(), data, ["fc"], device="cuda", progress=False)
    with pytest.raises(ConfigError, match="not a torch device"):
        record(tiny_resnet(), data, ["fc"], device="gpu0", progress=False)


def test_missing_group_labels_are_an_error(data):
    groups = data.groups.astype(float)
    groups[3] = np.nan
    with pytest.raises(DataError, match="1 group label"):
        dataclasses.replace(data, groups=groups, attributes={})
    objs = data.groups.astype(object)
    objs[[0, 5]] = None
    with pytest.raises(DataError, match="2 group label"):
        dataclasses.replace(data, groups=objs, attributes={})
