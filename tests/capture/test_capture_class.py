"""``Capture.load()`` and ``Capture.subset(rows)``: in-memory copies and row subsets."""

import numpy as np
import pytest
import zarr

from repsim.capture import Capture, record
from repsim.capture.store import ActivationStore
from repsim.data import load_dataset
from repsim.errors import DataError, LayerNotFoundError
from repsim.similarity import compare
from tests.helpers import tiny_resnet

LAYERS = ["stem", "block1", "fc:input"]
META = ("sample_id", "logits", "predictions", "labels", "groups")


@pytest.fixture(scope="module")
def data():
    return load_dataset("digits-imbalanced").test.subset(slice(0, 90))


@pytest.fixture(scope="module")
def stored(tmp_path_factory, data):
    store = ActivationStore(tmp_path_factory.mktemp("store"), chunk_bytes=4096)
    return record(tiny_resnet(), data, LAYERS, store=store, batch_size=32, progress=False)


@pytest.fixture(scope="module")
def memory(data):
    return record(tiny_resnet(), data, LAYERS, batch_size=32, progress=False)


def test_load_reads_every_layer_into_numpy_with_the_same_metadata(stored, memory):
    assert all(isinstance(stored[layer], zarr.Array) for layer in stored)
    loaded = stored.load()
    assert isinstance(loaded, Capture) and loaded.store is None and "in=memory" in repr(loaded)
    assert list(loaded) == LAYERS
    for layer in LAYERS:
        assert isinstance(loaded[layer], np.ndarray) and loaded[layer].dtype == np.float32
        np.testing.assert_array_equal(loaded[layer], stored.numpy(layer))
        np.testing.assert_array_equal(loaded[layer], memory[layer])
    for key in META:
        np.testing.assert_array_equal(getattr(loaded, key), getattr(stored, key))
    for key in ("name", "model_fingerprint", "data_fingerprint", "reduction", "n_samples"):
        assert getattr(loaded, key) == getattr(stored, key), key
    with pytest.raises(LayerNotFoundError, match="block2"):
        loaded["block2"]


def test_loaded_capture_compares_like_the_stored_one(stored):
    loaded = stored.load()
    by = np.asarray(["a", "b", "c"], dtype=object)[np.arange(stored.n_samples) % 3]
    opts = dict(layers=LAYERS, measures=["cka"], groups=by, progress=False)
    a = compare(stored, stored, **opts).to_records()
    b = compare(loaded, loaded, **opts).to_records()
    assert [r["value"] for r in a] == pytest.approx([r["value"] for r in b], abs=1e-12)


@pytest.mark.parametrize("source", ["stored", "memory"])
def test_subset_takes_the_rows_of_every_array(request, source):
    cap = request.getfixturevalue(source)
    rows = np.array([5, 0, 89, 5, 17])
    sub = cap.subset(rows)
    assert sub.n_samples == 5 and sub.store is None and list(sub) == LAYERS
    for layer in LAYERS:
        assert isinstance(sub[layer], np.ndarray)
        np.testing.assert_array_equal(sub[layer], cap.numpy(layer)[rows])
    for key in META:
        np.testing.assert_array_equal(getattr(sub, key), np.asarray(getattr(cap, key))[rows])
    np.testing.assert_array_equal(sub.sample_id, cap.sample_id[[5, 0, 89, 5, 17]])
    assert sub.model_fingerprint == cap.model_fingerprint and sub.name == cap.name
    assert sub.data_fingerprint != cap.data_fingerprint
    assert cap.subset([5, 0, 89, 5, 17]).data_fingerprint == sub.data_fingerprint
    assert cap.subset([0, 5]).data_fingerprint != cap.subset([5, 0]).data_fingerprint


def test_subset_by_mask_equals_subset_by_positions(memory):
    mask = memory.groups == memory.groups[0]
    by_mask = memory.subset(mask)
    by_rows = memory.subset(np.flatnonzero(mask))
    assert 0 < by_mask.n_samples < memory.n_samples
    assert np.all(by_mask.groups == memory.groups[0])
    for layer in LAYERS:
        np.testing.assert_array_equal(by_mask[layer], by_rows[layer])
    assert by_mask.data_fingerprint == by_rows.data_fingerprint
    empty = memory.subset([])
    assert empty.n_samples == 0 and empty["block1"].shape == (0, memory["block1"].shape[1])


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ([0, 90], r"\[0, 90\)"),
        ([-1], r"\[0, 90\)"),
        ([True, False], "length n_samples = 90"),
        ([[0, 1]], "1-D"),
        ([0.5], "integer"),
    ],
)
def test_subset_rejects_bad_rows(memory, rows, match):
    with pytest.raises(DataError, match=match):
        memory.subset(rows)
