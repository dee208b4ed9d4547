import numpy as np
import pytest
import torch
import zarr

from repsim.errors import InsufficientDataError, ShapeError
from repsim.similarity import (
    LinearCKAAccumulator,
    MinibatchCKAAccumulator,
    SimilarityWarning,
    cka,
    minibatch_cka,
    stream_linear_cka,
)
from tests.similarity import _reference as ref

UNEVEN = [0, 1, 4, 17, 18, 60, 99, 150]


def data(seed=0, n=150, dx=9, dy=6):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dx)) * rng.uniform(0.1, 3, dx)
    Y = np.tanh(X @ rng.normal(size=(dx, dy))) + 0.5 * rng.normal(size=(n, dy))
    return X, Y


def feed(X, Y, cuts):
    acc = LinearCKAAccumulator()
    for i, j in zip(cuts[:-1], cuts[1:]):
        acc.update(X[i:j], Y[i:j])
    return acc


@pytest.mark.parametrize("debiased", [False, True])
def test_uneven_batches_equal_full_computation(debiased):
    X, Y = data()
    acc = feed(X, Y, UNEVEN)
    assert acc.n == 150
    assert acc.result(debiased=debiased) == pytest.approx(cka(X, Y, debiased=debiased), abs=1e-10)
    want = ref.debiased_linear_cka_ref(X, Y) if debiased else ref.linear_cka_ref(X, Y)
    assert acc.result(debiased=debiased) == pytest.approx(want, abs=1e-10)


@pytest.mark.parametrize("debiased", [False, True])
def test_merge_equals_single_pass(debiased):
    X, Y = data(1)
    parts = [feed(X, Y, [0, 3, 40]), feed(X, Y, [40, 41, 90]), feed(X, Y, [90, 150])]
    merged = LinearCKAAccumulator()
    for p in parts:
        merged.merge(p)
    assert merged.n == 150
    assert merged.result(debiased) == pytest.approx(cka(X, Y, debiased=debiased), abs=1e-10)
    # merge order does not matter
    other = feed(X, Y, [90, 150]).merge(feed(X, Y, [0, 3, 40])).merge(feed(X, Y, [40, 90]))
    assert other.result(debiased) == pytest.approx(merged.result(debiased), abs=1e-10)


def test_float32_batches_with_offset_give_float64_answer():
    X, Y = data(2, n=400, dx=20, dy=10)
    X32 = (np.maximum(X, 0) + 1000).astype(np.float32)
    Y32 = (np.maximum(Y, 0) + 1000).astype(np.float32)
    X64, Y64 = X32.astype(np.float64), Y32.astype(np.float64)
    acc = feed(X32, Y32, [0, 7, 100, 101, 333, 400])
    parts = feed(X32, Y32, [0, 200]).merge(feed(X32, Y32, [200, 300, 400]))
    for deb in (False, True):
        want = cka(X64, Y64, debiased=deb)
        assert acc.result(deb) == pytest.approx(want, abs=1e-10)
        assert parts.result(deb) == pytest.approx(want, abs=1e-10)


def test_torch_batches():
    X, Y = data(3)
    acc = feed(torch.tensor(X, dtype=torch.float32), torch.tensor(Y, dtype=torch.float32), UNEVEN)
    want = cka(
        torch.tensor(X, dtype=torch.float32), torch.tensor(Y, dtype=torch.float32), debiased=True
    )
    assert acc.result(True) == pytest.approx(want, abs=1e-10)


def test_stream_from_zarr(tmp_path):
    X, Y = data(4, n=1000, dx=12, dy=5)
    za = zarr.create_array(tmp_path / "a.zarr", shape=X.shape, chunks=(128, 12), dtype="f4")
    zb = zarr.create_array(tmp_path / "b.zarr", shape=Y.shape, chunks=(128, 5), dtype="f4")
    za[:] = X.astype(np.float32)
    zb[:] = Y.astype(np.float32)
    X32, Y32 = X.astype(np.float32).astype(np.float64), Y.astype(np.float32).astype(np.float64)
    for deb in (False, True):
        got = stream_linear_cka(za, zb, batch_size=300, debiased=deb)
        assert got == pytest.approx(cka(X32, Y32, debiased=deb), abs=1e-10)


def test_accumulator_errors():
    X, Y = data(5)
    with pytest.raises(InsufficientDataError):
        LinearCKAAccumulator().result()
    acc = LinearCKAAccumulator().update(X[:3], Y[:3])
    with pytest.warns(SimilarityWarning, match="at least 4"):  # NaN below the minimum n
        assert np.isnan(acc.result(debiased=True))
    with pytest.raises(ShapeError):
        acc.update(X[:3, :2], Y[:3])
    with pytest.raises(ShapeError):
        acc.update(X[:3], Y[:4])
    with pytest.raises(ShapeError):
        LinearCKAAccumulator().update(X[:, :2], Y).merge(LinearCKAAccumulator().update(X, Y))


def test_zero_variance_streaming_is_nan():
    X, _ = data(6)
    acc = feed(X, np.zeros((150, 3)), UNEVEN)
    with pytest.warns(SimilarityWarning):
        assert np.isnan(acc.result())


def test_minibatch_cka_is_mean_of_minibatch_hsic():
    X, Y = data(7, n=128)
    got = minibatch_cka(X, Y, batch_size=32, seed=3)
    order = np.random.default_rng(3).permutation(128)
    hs = []
    for i in range(0, 128, 32):
        idx = order[i : i + 32]
        K, L = X[idx] @ X[idx].T, Y[idx] @ Y[idx].T
        hs.append([ref.hsic_song(K, L), ref.hsic_song(K, K), ref.hsic_song(L, L)])
    h = np.mean(hs, axis=0)
    assert got == pytest.approx(h[0] / np.sqrt(h[1] * h[2]), abs=1e-10)
    assert minibatch_cka(X, Y, batch_size=32, seed=3) == got  # deterministic
    # one minibatch holding everything is the full debiased CKA
    assert minibatch_cka(X, Y, batch_size=128) == pytest.approx(cka(X, Y, debiased=True), abs=1e-10)


def test_minibatch_accumulator_merge_and_small_batch():
    X, Y = data(8, n=64)
    a = MinibatchCKAAccumulator().update(X[:32], Y[:32])
    b = MinibatchCKAAccumulator().update(X[32:], Y[32:])
    both = MinibatchCKAAccumulator().update(X[:32], Y[:32]).update(X[32:], Y[32:])
    assert a.merge(b).result() == pytest.approx(both.result(), abs=1e-12)
    with pytest.raises(InsufficientDataError):
        MinibatchCKAAccumulator().update(X[:3], Y[:3])
    with pytest.warns(SimilarityWarning, match="dropped a last minibatch"):
        minibatch_cka(X[:34], Y[:34], batch_size=32)
