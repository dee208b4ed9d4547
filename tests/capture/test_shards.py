"""Capture split by sample ranges: shards write one entry, published only when all are done."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repsim._core.fingerprints import model_fingerprint
from repsim.capture import record
from repsim.capture.shards import finalize_shards, record_shard, shard_ranges, shard_status
from repsim.capture.store import ActivationStore, array_name
from repsim.data import load_dataset
from repsim.errors import ConfigError
from repsim.models import build_model


@pytest.fixture(scope="module")
def setup():
    data = load_dataset("digits").test
    model = build_model("mlp", input_shape=data.x.shape[1:], n_classes=10, seed=0)
    return model, data


def test_shard_ranges_are_chunk_aligned_and_cover():
    for n, k, r in [(1000, 3, 64), (10, 4, 3), (5, 8, 2), (0, 2, 4)]:
        ranges = shard_ranges(n, k, r)
        assert len(ranges) == k and ranges[0][0] == 0 and ranges[-1][1] == n
        for (a, b), (c, _) in zip(ranges, ranges[1:]):
            assert b == c and a <= b and b % r == 0
    with pytest.raises(ConfigError):
        shard_ranges(10, 0, 4)


def test_shards_publish_only_when_all_done_and_equal_full_capture(tmp_path, setup):
    model, data = setup
    layers = ["features.relu1", "features.fc2"]
    # chunk_rows a multiple of batch_size: every forward batch is the one the full run sees,
    # so the result is bit-identical (other sizes differ by float32 kernel rounding only)
    full = record(model, data, layers, store=tmp_path / "full", batch_size=32)
    store = ActivationStore(tmp_path / "sharded")
    m_fp, d_fp = model_fingerprint(model), data.fingerprint()
    published = [
        record_shard(model, data, layers, shard=(i, 3), store=store, chunk_rows=64, batch_size=32)
        for i in (2, 0)
    ]
    assert published == [False, False]
    assert store.keys() == []  # nothing visible until every range is written
    assert shard_status(store, m_fp, d_fp)["missing"] == [1]
    assert finalize_shards(store, m_fp, d_fp) is False
    assert (
        record_shard(model, data, layers, shard=(1, 3), store=store, chunk_rows=64, batch_size=32)
        is True
    )
    assert store.verify() == []
    for layer in full:
        arr = store.open(m_fp, d_fp, array_name(layer, "flatten"))
        np.testing.assert_array_equal(arr[:], np.asarray(full[layer][:]))
    calls = []

    def count(*a):
        calls.append(1)

    count.repsim_fingerprint = ""  # observe-only: left out of the cache key
    h = model.register_forward_hook(count)
    try:
        again = record(model, data, list(full), store=store)
    finally:
        h.remove()
    assert calls == []  # served from the published entry, no forward pass
    np.testing.assert_array_equal(again.labels, full.labels)
    np.testing.assert_array_equal(again.sample_id, full.sample_id)
    np.testing.assert_array_equal(again.predictions, full.predictions)


def test_rerun_of_a_shard_is_idempotent(tmp_path, setup):
    model, data = setup
    store = ActivationStore(tmp_path / "s")
    record_shard(model, data, shard=(0, 2), store=store, chunk_rows=100)
    record_shard(model, data, shard=(0, 2), store=store, chunk_rows=100)  # a retried worker
    assert store.keys() == []
    assert record_shard(model, data, shard=(1, 2), store=store, chunk_rows=100)
    assert store.verify() == []
    # once published, a late or repeated shard has nothing to do
    assert record_shard(model, data, shard=(0, 2), store=store, chunk_rows=100) is False
    assert store.verify() == []


def test_bad_shard_arguments(tmp_path, setup):
    model, data = setup
    with pytest.raises(ConfigError, match="0 <= i < k"):
        record_shard(model, data, shard=(2, 2), store=tmp_path)
    with pytest.raises(ConfigError, match="pair"):
        record_shard(model, data, shard=3, store=tmp_path)
    with pytest.raises(ConfigError, match="reduction"):
        record_shard(model, data, shard=(0, 1), store=tmp_path, reduction="median")
    torch.manual_seed(0)


def test_concurrent_shards_write_one_entry(tmp_path, setup):
    """Four workers at once (threads, each with its own copy of the model) race to create the
    shared arrays and to publish; exactly one publishes and the entry equals a full capture."""
    import copy
    from concurrent.futures import ThreadPoolExecutor

    model, data = setup
    full = record(model, data, ["features.fc2"], batch_size=25)
    store = ActivationStore(tmp_path / "c")

    def work(i):
        return record_shard(
            copy.deepcopy(model),
            data,
            ["features.fc2"],
            shard=(i, 4),
            store=store,
            chunk_rows=50,
            batch_size=25,
        )

    with ThreadPoolExecutor(4) as pool:
        published = list(pool.map(work, range(4)))
    assert sum(published) == 1
    assert store.verify() == []
    arr = store.open(
        model_fingerprint(model), data.fingerprint(), array_name("features.fc2", "flatten")
    )
    np.testing.assert_array_equal(arr[:], full["features.fc2"])


def test_failing_shard_writes_no_marker_and_restores_the_model(tmp_path, setup):
    """The shard runs capture's own forward loop: the same checks, errors and restores."""
    from torch import nn

    from repsim.errors import NonFiniteError, ShapeError

    _, data = setup

    class NaNAfter(nn.Module):
        def forward(self, x):
            return x * float("nan")

    model = build_model("mlp", input_shape=data.x.shape[1:], n_classes=10, seed=0)
    model.train()
    model.features.fc2 = nn.Sequential(model.features.fc2, NaNAfter())
    store = ActivationStore(tmp_path / "s")
    with pytest.raises(NonFiniteError, match=r"'features.fc2.1'.*samples 0-"):
        record_shard(model, data, ["features.fc2.1"], shard=(0, 2), store=store, chunk_rows=100)
    status = shard_status(store, model_fingerprint(model), data.fingerprint())
    assert status["done"] == []
    assert all(m.training for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())

    unused = build_model("mlp", input_shape=data.x.shape[1:], n_classes=10, seed=0)
    unused.spare = nn.Linear(3, 3)  # never called in forward
    with pytest.raises(ShapeError, match="'spare' did not run"):
        record_shard(unused, data, ["spare"], shard=(1, 2), store=store, chunk_rows=100)
    assert not unused.spare._forward_hooks
