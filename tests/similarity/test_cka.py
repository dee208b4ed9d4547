import numpy as np
import pytest
import torch

from repsim.errors import ConfigError, InsufficientDataError, NonFiniteError, ShapeError
from repsim.similarity import SimilarityWarning, cka, hsic_unbiased_gram
from tests.similarity import _reference as ref


def related(rng, n=60, dx=12, dy=9, noise=0.7):
    X = rng.normal(size=(n, dx))
    Y = np.tanh(X @ rng.normal(size=(dx, dy))) + noise * rng.normal(size=(n, dy))
    return X, Y


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("debiased", [False, True])
def test_cka_of_itself_is_one(kernel, debiased):
    X = np.random.default_rng(0).normal(size=(40, 7))
    assert cka(X, X, kernel=kernel, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


def test_linear_cka_matches_explicit_centering_matrix():
    X, Y = related(np.random.default_rng(1))
    assert cka(X, Y) == pytest.approx(ref.linear_cka_ref(X, Y), abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("shape", [(80, 5, 7), (12, 40, 30), (30, 30, 1), (300, 70, 90)])
def test_gram_and_feature_routes_agree(debiased, shape):
    n, dx, dy = shape
    rng = np.random.default_rng(2)
    X, Y = related(rng, n, dx, dy)
    f = cka(X, Y, debiased=debiased, route="feature")
    g = cka(X, Y, debiased=debiased, route="gram")
    assert f == pytest.approx(g, abs=1e-10)


def test_unbiased_hsic_equals_u_statistic_bruteforce():
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(7, 3)) + 2.0, rng.normal(size=(7, 4))
    K, L = X @ X.T, Y @ Y.T
    assert hsic_unbiased_gram(K, L) == pytest.approx(ref.hsic_ustat_bruteforce(K, L), rel=1e-10)
    assert hsic_unbiased_gram(K, L) == pytest.approx(ref.hsic_song(K, L), rel=1e-10)


@pytest.mark.parametrize("n", [4, 9, 50])
def test_debiased_cka_equals_direct_song_formula(n):
    X, Y = related(np.random.default_rng(n), n, 6, 5)
    expected = ref.debiased_linear_cka_ref(X + 3.0, Y - 1.0)
    assert cka(X, Y, debiased=True) == pytest.approx(expected, abs=1e-10)


def test_debiased_cka_equals_u_centered_gram_inner_product():
    X, Y = related(np.random.default_rng(11), 25, 30, 4)
    expected = ref.debiased_cka_ucentered(X @ X.T, Y @ Y.T)
    assert cka(X, Y, debiased=True) == pytest.approx(expected, abs=1e-10)
    expected = ref.debiased_cka_ucentered(ref.rbf_gram_ref(X), ref.rbf_gram_ref(Y))
    assert cka(X, Y, kernel="rbf", debiased=True) == pytest.approx(expected, abs=1e-10)


def test_rbf_cka_matches_kornblith_convention():
    X, Y = related(np.random.default_rng(4))
    for t in (0.5, 1.0):
        expected = ref.cka_from_grams(ref.rbf_gram_ref(X, t), ref.rbf_gram_ref(Y, t))
        assert cka(X, Y, kernel="rbf", threshold=t) == pytest.approx(expected, abs=1e-12)


def test_rbf_absolute_sigma_and_median_heuristic():
    from scipy.spatial.distance import cdist, pdist

    X, Y = related(np.random.default_rng(5), 30, 4, 4)
    K = np.exp(-cdist(X, X, "sqeuclidean") / (2 * 2.0**2))
    L = np.exp(-cdist(Y, Y, "sqeuclidean") / (2 * 2.0**2))
    assert cka(X, Y, kernel="rbf", sigma=2.0) == pytest.approx(ref.cka_from_grams(K, L), abs=1e-12)
    sx, sy = np.median(pdist(X)), np.median(pdist(Y))
    K = np.exp(-cdist(X, X, "sqeuclidean") / (2 * sx**2))
    L = np.exp(-cdist(Y, Y, "sqeuclidean") / (2 * sy**2))
    got = cka(X, Y, kernel="rbf", bandwidth="median")
    assert got == pytest.approx(ref.cka_from_grams(K, L), abs=1e-12)
    got = cka(X, Y, kernel="rbf", debiased=True, bandwidth="median")
    want = ref.hsic_song(K, L) / np.sqrt(ref.hsic_song(K, K) * ref.hsic_song(L, L))
    assert got == pytest.approx(want, abs=1e-12)


def test_noise_floor_biased_vs_debiased():
    n, d = 400, 40
    biased, debiased = [], []
    for seed in range(5):
        rng = np.random.default_rng(100 + seed)
        X, Y = rng.normal(size=(n, d)), rng.normal(size=(n, d))
        biased.append(cka(X, Y))
        debiased.append(cka(X, Y, debiased=True))
    floor = d / (n - 1 + d)
    assert np.mean(biased) == pytest.approx(floor, rel=0.1)
    assert abs(np.mean(debiased)) < 0.01
    assert np.mean(biased) > 5 * abs(np.mean(debiased))


def test_float32_with_large_offset_gives_float64_answer():
    rng = np.random.default_rng(6)
    X, Y = related(rng, 500, 32, 16)
    X, Y = np.maximum(X, 0) + 1000.0, np.maximum(Y, 0) + 1000.0
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    for deb in (False, True):
        exact = cka(X32.astype(np.float64), Y32.astype(np.float64), debiased=deb)
        assert cka(X32, Y32, debiased=deb) == pytest.approx(exact, abs=1e-12)
        assert cka(torch.from_numpy(X32), torch.from_numpy(Y32), debiased=deb) == pytest.approx(
            exact, abs=1e-12
        )
        # and float32 storage itself moves the answer by no more than its rounding
        assert cka(X32, Y32, debiased=deb) == pytest.approx(cka(X, Y, debiased=deb), abs=1e-3)


def test_torch_input_matches_numpy():
    X, Y = related(np.random.default_rng(7))
    for kw in ({}, {"debiased": True}, {"kernel": "rbf"}, {"kernel": "rbf", "debiased": True}):
        want = cka(X, Y, **kw)
        assert cka(torch.tensor(X), torch.tensor(Y), **kw) == pytest.approx(want, abs=1e-12)
        assert cka(torch.tensor(X, dtype=torch.float32), Y, **kw) == pytest.approx(want, abs=1e-5)


def test_dead_units_do_not_produce_nan():
    X, Y = related(np.random.default_rng(8))
    Xd = np.concatenate([X, np.zeros((len(X), 5)), np.full((len(X), 3), 7.25)], axis=1)
    assert cka(Xd, Y) == pytest.approx(cka(X, Y), abs=1e-12)
    assert cka(Xd, Y, debiased=True) == pytest.approx(cka(X, Y, debiased=True), abs=1e-12)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_zero_variance_layer_is_nan_with_warning(kernel):
    X = np.random.default_rng(9).normal(size=(20, 3))
    dead = np.full((20, 4), 0.5)
    with pytest.warns(SimilarityWarning, match="zero variance"):
        assert np.isnan(cka(X, dead, kernel=kernel))


def test_bad_input_errors():
    rng = np.random.default_rng(10)
    X = rng.normal(size=(10, 3))
    with pytest.raises(ShapeError, match="same samples"):
        cka(X, X[:9])
    with pytest.raises(ShapeError, match="2-D"):
        cka(X[:, 0], X)
    with pytest.raises(ShapeError, match="flatten or pool"):
        cka(X.reshape(10, 3, 1), X)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(NonFiniteError, match="row 3, column 1"):
        cka(X, bad)
    bad[3, 1] = np.inf
    with pytest.raises(NonFiniteError):
        cka(bad, X)
    # below a measure's minimum n: NaN with a warning naming the minimum (issue 18 item 6)
    with pytest.warns(SimilarityWarning, match="at least 4 samples, got 3"):
        assert np.isnan(cka(X[:3], X[:3], debiased=True))
    with pytest.raises(InsufficientDataError):
        cka(X[:0], X[:0])
    with pytest.raises(ConfigError):
        cka(X, X, kernel="poly")
    with pytest.raises(ConfigError):
        cka(X, X, kernel="rbf", bandwidth="mean")
