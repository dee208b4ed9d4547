"""Exact linear CKA whatever the width: routes, memory limits, float32, Zarr, sketching."""

import tracemalloc

import numpy as np
import pytest
import zarr

from repsim.errors import ConfigError, SimilarityWarning
from repsim.similarity import _linear, cka, plan_cka, stream_cka
from tests.similarity import _reference as ref


def pair(seed, n, dx, dy, offset=0.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dx)) + offset
    W = rng.normal(size=(dx, dy)) / np.sqrt(dx)
    Y = np.maximum(X @ W, 0) + 0.5 * rng.normal(size=(n, dy))
    X[:, 3] = 2.5  # a dead unit
    return X, Y


SHAPES = [(40, 300, 250), (300, 20, 35), (64, 64, 10)]


@pytest.mark.parametrize("shape", SHAPES, ids=["d>n", "d<n", "mixed"])
@pytest.mark.parametrize("debiased", [False, True])
def test_gram_route_equals_feature_route(shape, debiased):
    X, Y = pair(0, *shape, offset=50.0)
    f = cka(X, Y, route="feature", debiased=debiased)
    g = cka(X, Y, route="gram", debiased=debiased)
    assert g == pytest.approx(f, abs=1e-10)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)  # the references are translation invariant
    want = ref.debiased_linear_cka_ref(Xc, Yc) if debiased else ref.linear_cka_ref(Xc, Yc)
    assert f == pytest.approx(want, abs=1e-10)
    # the Gram route in row tiles (kernels that do not fit) gives the same number
    n = shape[0]
    p = plan_cka(n, shape[1], shape[2], route="gram", memory_limit=16 * n * 7 + 16 * n + 8 * n * 9)
    assert 1 <= p.tile_rows < n and p.passes > 1
    t = _linear.linear_terms(
        _linear.as_source(X, "X"),
        _linear.as_source(Y, "Y"),
        route="gram",
        memory_limit=p.bytes,
        need_row_norms=True,
    )
    val = _linear.ratio(*_linear.cka_from_terms(t, debiased))
    assert val == pytest.approx(f, abs=1e-10)


def test_route_choice_respects_memory_limit():
    # Gram is cheaper here (n < d) but its kernels need 16 n^2 = 4 MB; with 2 MB: feature
    auto = plan_cka(500, 400, 400)
    assert auto.route == "gram"
    lim = plan_cka(500, 400, 400, memory_limit=2 * 2**20)
    assert lim.route == "feature" and lim.bytes <= 2 * 2**20
    # neither route fits whole: the Gram route in row tiles
    tiled = plan_cka(300, 3000, 3000, memory_limit=2**20)
    assert tiled.route == "gram" and tiled.tile_rows < 300 and tiled.bytes <= 2**20
    # the feature route forms its products in column tiles that fit
    feat = plan_cka(300, 3000, 3000, route="feature", memory_limit=2**20)
    assert feat.tile_cols < 3000 and feat.bytes <= 2**20
    # a limit too small for any route is refused with what to do
    with pytest.raises(ConfigError, match="sketched_cka"):
        plan_cka(300, 3000, 3000, route="feature", memory_limit=3000)
    with pytest.raises(ConfigError, match="too small"):
        plan_cka(10_000, 10, 10, memory_limit=1000)
    with pytest.raises(ConfigError, match="not understood"):
        plan_cka(10, 10, 10, memory_limit="lots")
    assert _linear.parse_bytes("2GB") == 2 * 2**30
    assert _linear.parse_bytes("512 MiB") == 512 * 2**20


@pytest.mark.parametrize(
    "shape,limit", [((200, 1500, 1200), 3 * 2**20), ((2000, 300, 200), 3 * 2**20)]
)
def test_memory_limit_holds_in_practice(shape, limit):
    X, Y = pair(1, *shape)
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    exact = cka(X32, Y32)
    tracemalloc.start()
    try:
        got = cka(X32, Y32, memory_limit=limit, debiased=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == pytest.approx(exact, abs=1e-10)
    # numpy reports its allocations to tracemalloc; small slack for Python objects
    assert peak <= limit * 1.05 + 2**18


def test_inputs_are_not_copied_whole():
    X, Y = pair(2, 40_000, 200, 150)
    tracemalloc.start()
    try:
        cka(X, Y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.5 * (X.nbytes + Y.nbytes)  # was two float64 copies per side before


def test_float32_precision_error_is_below_1e6():
    X, Y = pair(3, 3000, 256, 128, offset=100.0)
    for debiased in (False, True):
        exact = cka(X, Y, debiased=debiased)
        for route in ("feature", "gram"):
            fast = cka(X, Y, debiased=debiased, precision="float32", route=route)
            assert abs(fast - exact) / abs(exact) < 1e-6
    with pytest.raises(ConfigError):
        cka(X, Y, precision="float16")


def test_streaming_gram_route_from_zarr_is_exact(tmp_path):
    X, Y = pair(4, 60, 700, 500, offset=1000.0)
    za = zarr.open_array(tmp_path / "x", mode="w", shape=X.shape, chunks=(7, 700), dtype="f4")
    zb = zarr.open_array(tmp_path / "y", mode="w", shape=Y.shape, chunks=(7, 500), dtype="f4")
    za[:] = X.astype(np.float32)
    zb[:] = Y.astype(np.float32)
    X32, Y32 = za[:].astype(np.float64), zb[:].astype(np.float64)
    for debiased in (False, True):
        want = cka(X32, Y32, debiased=debiased, route="feature")
        got = stream_cka(za, zb, debiased=debiased)  # auto: Gram (d >> n)
        assert got == pytest.approx(want, abs=1e-10)
        small = stream_cka(za, zb, debiased=debiased, route="gram", memory_limit=200_000)
        assert small == pytest.approx(want, abs=1e-10)
        feat = stream_cka(za, zb, debiased=debiased, route="feature", batch_size=13)
        assert feat == pytest.approx(want, abs=1e-10)
    # cka() itself reads a zarr.Array in blocks
    assert cka(za, zb) == pytest.approx(cka(X32, Y32), abs=1e-10)


def test_rbf_in_place_equals_reference():
    X, Y = pair(5, 90, 12, 7)
    K, L = ref.rbf_gram_ref(X), ref.rbf_gram_ref(Y)
    assert cka(X, Y, kernel="rbf") == pytest.approx(ref.cka_from_grams(K, L), abs=1e-12)
    want = ref.hsic_song(K, L) / np.sqrt(ref.hsic_song(K, K) * ref.hsic_song(L, L))
    assert cka(X, Y, kernel="rbf", debiased=True) == pytest.approx(want, abs=1e-12)
    for n in (5, 6):  # odd and even n^2: the median of all n^2 distances, exactly
        Xs = X[:n]
        D2 = ((Xs[:, None, :] - Xs[None, :, :]) ** 2).sum(-1)
        got = cka(Xs, Xs[:, ::-1] ** 2, kernel="rbf", sigma=None)
        Kx = np.exp(-D2 / (2 * np.median(D2)))
        Ys = Xs[:, ::-1] ** 2
        Dy = ((Ys[:, None, :] - Ys[None, :, :]) ** 2).sum(-1)
        Ky = np.exp(-Dy / (2 * np.median(Dy)))
        assert got == pytest.approx(ref.cka_from_grams(Kx, Ky), abs=1e-12)


def test_two_samples_are_nan_not_one():
    X, Y = pair(6, 10, 5, 4)
    for kwargs in ({}, {"kernel": "rbf"}):
        with pytest.warns(SimilarityWarning, match="at least 3 samples, got 2"):
            assert np.isnan(cka(X[:2], Y[:2], **kwargs))
    assert np.isfinite(cka(X[:3], Y[:3]))


def test_sketched_cka_is_labelled_approximate_and_covers_the_exact_value():
    from repsim.similarity import sketched_cka

    rng = np.random.default_rng(11)
    X = rng.normal(size=(200, 1200)) * np.linspace(2, 0.1, 1200) + 3.0
    Y = np.tanh(X[:, :600]) + 0.5 * rng.normal(size=(200, 600))
    for debiased in (False, True):
        exact = cka(X, Y, debiased=debiased)
        s = sketched_cka(X, Y, n_components=128, n_sketches=5, debiased=debiased, seed=2)
        assert s.approximate and s.stderr > 0 and s.ci_low < s.value < s.ci_high
        assert abs(s.value - exact) < 5 * s.stderr + 0.02
    # the sketched numerator is unbiased: its mean over sketches approaches tr(K H L H)
    from repsim.similarity.sketch import _count_sketch

    Xc, Yc = X[:, :50] - X[:, :50].mean(0), Y[:, :40] - Y[:, :40].mean(0)
    want = np.sum((Xc.T @ Yc) ** 2)
    draws = []
    for r in range(300):
        g = np.random.default_rng(r)
        xs, ys = Xc @ _count_sketch(50, 20, g), Yc @ _count_sketch(40, 20, g)
        draws.append(np.sum((xs.T @ ys) ** 2))
    assert np.mean(draws) == pytest.approx(want, rel=4 * np.std(draws) / np.sqrt(300) / want)
    with pytest.raises(ConfigError):
        sketched_cka(X, Y, n_sketches=1)
