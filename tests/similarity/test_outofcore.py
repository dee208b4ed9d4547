"""Out-of-core accumulators: equal to the in-memory measures on the same data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import zarr

from repsim._core.rows import iter_rows
from repsim.errors import NonFiniteError, ShapeError
from repsim.fairness import group_metrics
from repsim.fairness.counts import ConfusionCounter, stream_group_metrics
from repsim.similarity import cka, mean_cca, procrustes, pwcca, svcca
from repsim.similarity.outofcore import CCAAccumulator, cca_from_accumulator, stream_cca, stream_cka


def _pair(seed: int, n: int = 300, dx: int = 12, dy: int = 9, offset: float = 0.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dx)) @ rng.standard_normal((dx, dx)) + offset
    Y = np.tanh(X[:, :dy] @ rng.standard_normal((dy, dy))) + 0.3 * rng.standard_normal((n, dy))
    return X, Y


def _zarr(tmp_path, name, a, rows):
    z = zarr.create_array(
        str(tmp_path / name), shape=a.shape, chunks=(rows, a.shape[1]), dtype=a.dtype
    )
    z[:] = a
    return z


@pytest.mark.parametrize("debiased", [False, True])
def test_stream_cka_from_zarr_equals_in_memory(tmp_path, debiased):
    X, Y = _pair(0, offset=100.0)
    zx, zy = _zarr(tmp_path, "x", X, 64), _zarr(tmp_path, "y", Y, 50)
    got = stream_cka(zx, zy, debiased=debiased, batch_size=37)
    assert got == pytest.approx(cka(X, Y, debiased=debiased), abs=1e-10)


@pytest.mark.parametrize(
    "measure,ref",
    [("svcca", svcca), ("pwcca", pwcca), ("mean_cca", mean_cca), ("procrustes", procrustes)],
)
@pytest.mark.parametrize("batch", [7, 64, 300])
def test_qr_measures_equal_in_memory(tmp_path, measure, ref, batch):
    X, Y = _pair(1, offset=50.0)
    zx, zy = _zarr(tmp_path, "x", X, 64), _zarr(tmp_path, "y", Y, 64)
    assert stream_cca(zx, zy, measure, batch_size=batch) == pytest.approx(ref(X, Y), abs=1e-10)


def test_svcca_details_and_options_match():
    X, Y = _pair(2, dx=20, dy=15)
    for kw in ({"keep": 0.9}, {"rule": "singular_values", "keep": 0.95}, {"n_components": 5}):
        ref = svcca(X, Y, return_details=True, **kw)
        got = stream_cca(X, Y, "svcca", batch_size=41, return_details=True, **kw)
        assert (got.kept_x, got.kept_y) == (ref.kept_x, ref.kept_y)
        np.testing.assert_allclose(got.correlations, ref.correlations, atol=1e-10)


@pytest.mark.parametrize("swap,side", [(False, "Y"), (True, "X")])
def test_pwcca_weights_side_matches(swap, side):
    X, Y = _pair(3, dx=12, dy=6)
    if swap:
        X, Y = Y, X
    ref = pwcca(X, Y, return_details=True)
    got = stream_cca(X, Y, "pwcca", batch_size=50, return_details=True)
    assert got.weights_side == ref.weights_side == side
    np.testing.assert_allclose(got.weights, ref.weights, atol=1e-10)
    assert got.value == pytest.approx(ref.value, abs=1e-10)


def test_dead_units_dropped_like_in_memory():
    X, Y = _pair(4)
    X[:, 3] = 7.25  # a dead unit with an offset
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        got = stream_cca(X, Y, "svcca", batch_size=33, return_details=True)
    assert any("dropped 1 constant" in str(w.message) for w in rec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = svcca(X, Y, return_details=True)
    assert got.dropped_x == ref.dropped_x == 1
    assert got.value == pytest.approx(ref.value, abs=1e-10)


def test_merge_is_order_free_and_matches_one_pass():
    X, Y = _pair(5)
    whole = CCAAccumulator().update(X, Y)
    parts = [CCAAccumulator().update(X[i:j], Y[i:j]) for i, j in [(0, 90), (90, 91), (91, 300)]]
    merged = parts[2].merge(parts[0]).merge(parts[1])
    assert merged.n == 300
    np.testing.assert_allclose(merged.mu, X.mean(0).tolist() + Y.mean(0).tolist(), atol=1e-12)
    # R^T R is the centered Gram of [X Y], whatever the order.
    Z = np.hstack([X, Y]) - np.hstack([X, Y]).mean(0)
    np.testing.assert_allclose(merged.R.T @ merged.R, Z.T @ Z, rtol=1e-10, atol=1e-8)
    assert cca_from_accumulator(merged) == pytest.approx(cca_from_accumulator(whole), abs=1e-12)


def test_torch_batches_accumulate_in_float64_on_device():
    X, Y = _pair(6)
    acc = CCAAccumulator()
    for xb, yb in iter_rows(
        [torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(Y, dtype=torch.float32)], 64
    ):
        acc.update(xb, yb)
    assert isinstance(acc.R, torch.Tensor) and acc.R.dtype == torch.float64
    ref = svcca(X.astype(np.float32), Y.astype(np.float32))
    assert cca_from_accumulator(acc) == pytest.approx(ref, abs=1e-10)


def test_ill_posed_and_zero_variance_give_nan_with_warning():
    X, Y = _pair(7, n=10, dx=8, dy=8)
    with pytest.warns(UserWarning, match="ill-posed"):
        assert np.isnan(stream_cca(X, Y, "mean_cca", batch_size=4))
    with pytest.warns(UserWarning, match="zero variance"):
        assert np.isnan(stream_cca(np.ones((20, 3)), Y[:10].repeat(2, 0), "svcca"))


def test_bad_input_errors():
    X, Y = _pair(8)
    with pytest.raises(ShapeError, match="rows"):
        stream_cca(X, Y[:-1])
    Xn = X.copy()
    Xn[5, 2] = np.nan
    with pytest.raises(NonFiniteError, match="never written"):
        stream_cca(Xn, Y)
    with pytest.raises(ShapeError, match="positive"):
        stream_cka(X, Y, batch_size=0)
    acc = CCAAccumulator().update(X, Y)
    with pytest.raises(ShapeError, match="same two layers"):
        acc.update(X[:, :3], Y)


def _labels(seed, n=2000, k=3, n_groups=4):
    rng = np.random.default_rng(seed)
    yt = rng.integers(0, k, n)
    yp = np.where(rng.random(n) < 0.8, yt, rng.integers(0, k, n))
    g = rng.integers(0, n_groups, n)
    return yt, yp, g


@pytest.mark.parametrize("k", [2, 3])
def test_group_metrics_from_counts_equal_group_metrics(tmp_path, k):
    yt, yp, g = _labels(9, k=k)
    names = ["a", "b", "c", "d"]
    ref = group_metrics(y_true=yt, y_pred=yp, groups=g, group_names=names)
    zs = [
        zarr.create_array(str(tmp_path / f"v{i}"), shape=v.shape, chunks=(300,), dtype=v.dtype)
        for i, v in enumerate((yt, yp, g))
    ]
    for z, v in zip(zs, (yt, yp, g)):
        z[:] = v
    got = stream_group_metrics(*zs, batch_size=333, group_names=names)
    assert got.by_group.rows == ref.by_group.rows
    assert got.aggregates.keys() == ref.aggregates.keys()
    for key, v in ref.aggregates.items():
        assert got.aggregates[key] == pytest.approx(v, abs=1e-12, nan_ok=True), key
    for name, cm in ref.confusion.items():
        np.testing.assert_array_equal(got.confusion[name], cm)


def test_confusion_counter_merge_and_small_groups():
    yt, yp, g = _labels(10, n=500)
    g[:3] = 9  # a tiny group
    a = ConfusionCounter().update(yt[:200], yp[:200], g[:200])
    b = ConfusionCounter().update(yt[200:], yp[200:], g[200:])
    got = a.merge(b).result(min_group_size=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = group_metrics(y_true=yt, y_pred=yp, groups=g, min_group_size=5)
    assert str(got.by_group.rows) == str(ref.by_group.rows)  # NaN-aware equality
    with pytest.raises(ShapeError):
        ConfusionCounter().update(yt, yp[:-1], g)


@pytest.mark.filterwarnings("ignore::repsim.fairness.UndefinedMetricWarning")
def test_store_arrays_stream_like_in_memory(tmp_path):
    """Capture two models into the store, then stream CKA, SVCCA and group metrics from it."""
    from repsim.capture import record
    from repsim.capture.store import ActivationStore, array_name
    from repsim.data import load_dataset
    from repsim.models import build_model

    data = load_dataset("digits").test
    store = ActivationStore(tmp_path / "cache", chunk_bytes=32768)  # several chunks
    caps = [
        record(
            build_model("mlp", input_shape=data.x.shape[1:], n_classes=10, seed=s),
            data,
            ["features.fc1"],
            store=store,
        )
        for s in (0, 1)
    ]
    za, zb = (
        store.open(c.model_fingerprint, c.data_fingerprint, array_name("features.fc1", "flatten"))
        for c in caps
    )
    assert za.chunks[0] < za.shape[0]
    A, B = np.asarray(za[:]), np.asarray(zb[:])
    assert stream_cka(za, zb, batch_size=100) == pytest.approx(cka(A, B), abs=1e-10)
    assert stream_cca(za, zb, "svcca", batch_size=100) == pytest.approx(svcca(A, B), abs=1e-10)
    c = caps[1]
    arrays = [
        store.open(c.model_fingerprint, c.data_fingerprint, k)
        for k in ("labels", "predictions", "groups")
    ]
    got = stream_group_metrics(*arrays, batch_size=77, group_names=data.group_names)
    ref = group_metrics(
        y_true=c.labels, y_pred=c.predictions, groups=c.groups, group_names=data.group_names
    )
    assert got.by_group.rows == ref.by_group.rows


def test_pwcca_side_follows_live_units_not_rank():
    rng = np.random.default_rng(11)
    Z = rng.standard_normal((300, 3))
    X = Z @ rng.standard_normal((3, 12))  # 12 live units of rank 3
    Y = np.hstack([Z, rng.standard_normal((300, 3))]) @ rng.standard_normal((6, 6))
    ref = pwcca(X, Y, return_details=True)
    got = stream_cca(X, Y, "pwcca", batch_size=64, return_details=True)
    assert got.weights_side == ref.weights_side
    assert got.value == pytest.approx(ref.value, abs=1e-10)


def test_device_option_streams_torch_batches():
    X, Y = _pair(12)
    assert stream_cka(X, Y, batch_size=50, device="cpu", debiased=True) == pytest.approx(
        cka(X, Y, debiased=True), abs=1e-10
    )
    assert stream_cca(X, Y, "svcca", batch_size=50, device="cpu") == pytest.approx(
        svcca(X, Y), abs=1e-10
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_accumulators_match_cpu():
    X, Y = _pair(13)
    assert stream_cka(X, Y, batch_size=64, device="cuda") == pytest.approx(cka(X, Y), abs=1e-10)
    assert stream_cca(X, Y, "pwcca", batch_size=64, device="cuda") == pytest.approx(
        pwcca(X, Y), abs=1e-10
    )
