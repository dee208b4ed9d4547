"""compare(): cheap resampling, shared statistics, finishing despite bad cells, one warning line."""

import importlib
import warnings

import numpy as np
import pytest
import zarr

from repsim._core.stats import bootstrap_indices
from repsim.similarity import (
    SimilarityWarning,
    bootstrap_linear_cka,
    cka,
    compare,
    mean_cca,
    pwcca,
    svcca,
)
from repsim.similarity import cca as cca_module
from tests.similarity.test_compare import make_captures


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("shape", [(60, 9), (25, 70)], ids=["n>d", "d>n"])
def test_resampled_statistics_bootstrap_equals_naive(debiased, shape):
    rng = np.random.default_rng(0)
    n, d = shape
    X = rng.normal(size=(n, d)) + 30.0
    Y = np.tanh(X @ rng.normal(size=(d, 11))) + rng.normal(size=(n, 11))
    X[:, 0] = 1.0  # a dead unit
    idx = bootstrap_indices(n, 40, 7)
    fast = bootstrap_linear_cka(X, Y, indices=idx, debiased=debiased)
    naive = np.array([cka(X[i], Y[i], debiased=debiased) for i in idx])
    np.testing.assert_allclose(fast, naive, rtol=0, atol=1e-10)
    # the same draws from the seed
    np.testing.assert_array_equal(
        bootstrap_linear_cka(X, Y, n_boot=40, seed=7, debiased=debiased), fast
    )


def test_compare_intervals_per_group_equal_the_naive_bootstrap():
    a, b = make_captures(3, n=90)
    t = compare(
        a, b, layers=["l1"], measures=["cka", "cka_debiased"], groups=True, n_boot=30, seed=5
    )
    for r in t:
        rows = np.arange(90) if r["group"] is None else np.flatnonzero(a.groups == r["group"])
        X, Y = a["l1"][rows], b["l1"][rows]
        idx = bootstrap_indices(len(rows), 30, 5)
        vals = [cka(X[i], Y[i], debiased=r["measure"] == "cka_debiased") for i in idx]
        lo, hi = np.quantile(vals, [0.025, 0.975])
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((lo, hi), abs=1e-10)


def test_all_pairs_of_one_capture_share_work_and_match_pairwise():
    a, _ = make_captures(4, n=80, widths=(8, 30, 100, 5))
    calls = {"n": 0}
    compare_mod = importlib.import_module("repsim.similarity.compare")

    orig = compare_mod._LinearStats.cross

    def counting(self, other):
        calls["n"] += 1
        return orig(self, other)

    compare_mod._LinearStats.cross = counting
    try:
        t = compare(a, a, pairs="all", measures=["cka", "cka_debiased"])
    finally:
        compare_mod._LinearStats.cross = orig
    L = 4
    assert calls["n"] == L * (L + 1) // 2  # each unordered pair once, self products reused
    M = t.matrix("cka").values
    np.testing.assert_allclose(M, M.T, atol=0)
    for i, la in enumerate(a):
        for j, lb in enumerate(a):
            assert M[i, j] == pytest.approx(cka(a[la], a[lb]), abs=1e-12)
    assert np.allclose(np.diag(M), 1.0)
    # narrow layers (n >= d): every product from one syrk of the concatenated layers
    b, _ = make_captures(5, n=200, widths=(8, 12, 5, 9))
    t2 = compare(b, b, pairs="all", measures=["cka", "cka_debiased"])
    for r in t2:
        X, Y = b[r["layer_a"]], b[r["layer_b"]]
        want = cka(X, Y, debiased=r["measure"] == "cka_debiased")
        assert r["value"] == pytest.approx(want, abs=1e-12)


def test_cca_family_reuses_per_layer_bases_and_matches_direct_calls():
    a, b = make_captures(5, n=150, widths=(6, 9, 4))
    t = compare(
        a,
        b,
        pairs="all",
        measures=["svcca", "pwcca", "mean_cca"],
        options={"svcca": {"keep": 0.9}},
    )
    for r in t:
        X, Y = a[r["layer_a"]], b[r["layer_b"]]
        want = {
            "svcca": svcca(X, Y, keep=0.9),
            "pwcca": pwcca(X, Y),
            "mean_cca": mean_cca(X, Y),
        }[r["measure"]]
        assert r["value"] == pytest.approx(want, abs=1e-12)


def test_svd_that_does_not_converge_falls_back_then_gives_a_nan_cell(monkeypatch):
    a, b = make_captures(6, n=60)
    want = svcca(a["l0"], b["l0"])
    real = np.linalg.svd

    def flaky(*args, **kwargs):
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(np.linalg, "svd", flaky)
    assert svcca(a["l0"], b["l0"]) == pytest.approx(want, abs=1e-10)  # gesvd fallback
    import scipy.linalg

    monkeypatch.setattr(scipy.linalg, "svd", flaky)
    with pytest.warns(SimilarityWarning, match="SVD did not converge"):
        t = compare(a, b, measures=["cka", "svcca"], n_boot=5)
    monkeypatch.setattr(np.linalg, "svd", real)
    sv = t.filter(measure="svcca")
    assert all(np.isnan(r["value"]) and "LinAlgError" in r["note"] for r in sv)
    assert all(np.isfinite(r["value"]) for r in t.filter(measure="cka"))
    assert cca_module.svd is not None


def test_repeated_warnings_collapse_to_one_line_per_measure():
    a, b = make_captures(7, n=40, widths=(8, 12, 5))
    labels = np.array(["big"] * 37 + ["tiny"] * 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = compare(a, b, groups=labels, measures=["cka", "svcca"], n_boot=8)
    sim = [w for w in caught if issubclass(w.category, SimilarityWarning)]
    assert len(sim) == 2  # one summary per measure
    assert all("tiny" in str(w.message) for w in sim)
    tiny = t.filter(group="tiny")
    assert all(np.isnan(r["value"]) and "min_group_size" in r["note"] for r in tiny)


def test_minimum_n_per_measure_in_compare():
    a, b = make_captures(8, n=40)
    labels = np.array(["big"] * 37 + ["three"] * 3)
    t = compare(
        a, b, groups=labels, measures=["cka", "cka_debiased"], min_group_size=2, layers="l0"
    )
    assert np.isfinite(t.value(group="three", measure="cka"))
    assert np.isnan(t.value(group="three", measure="cka_debiased"))
    assert "at least 4" in t.value("note", group="three", measure="cka_debiased")


def test_wide_zarr_layers_take_the_gram_route(tmp_path):
    rng = np.random.default_rng(9)
    n = 50
    layers_a, layers_b = {}, {}
    for name, d in (("wide", 900), ("narrow", 6)):
        X = rng.normal(size=(n, d)).astype(np.float32)
        Y = (X + rng.normal(size=(n, d))).astype(np.float32)
        za = zarr.open_array(tmp_path / f"a{name}", mode="w", shape=X.shape, chunks=(8, d))
        zb = zarr.open_array(tmp_path / f"b{name}", mode="w", shape=Y.shape, chunks=(8, d))
        za[:], zb[:] = X, Y
        layers_a[name], layers_b[name] = za, zb
    groups = np.where(np.arange(n) < 30, "g0", "g1")
    t = compare(layers_a, layers_b, measures=["cka", "cka_debiased"], groups=groups)
    for r in t:
        rows = np.arange(n) if r["group"] is None else np.flatnonzero(groups == r["group"])
        X = layers_a[r["layer_a"]][:][rows].astype(np.float64)
        Y = layers_b[r["layer_b"]][:][rows].astype(np.float64)
        want = cka(X, Y, debiased=r["measure"] == "cka_debiased")
        assert r["value"] == pytest.approx(want, abs=1e-10)


class CountingArray:
    """A read-only array-like that counts the rows read through it (like a zarr.Array)."""

    def __init__(self, a):
        self.a, self.rows_read = a, 0
        self.shape, self.dtype = a.shape, a.dtype

    def __getitem__(self, key):
        out = self.a[key]
        self.rows_read += out.shape[0] if out.ndim == 2 else 0
        return out


def test_all_pairs_from_a_store_read_each_layer_once():
    a, _ = make_captures(10, n=300, widths=(8, 12, 5, 9))
    store = {k: CountingArray(v.astype(np.float32)) for k, v in a.items()}
    t = compare(store, store, pairs="all", measures=["cka", "cka_debiased"], groups=a.groups)
    assert all(x.rows_read == 300 for x in store.values())  # one pass, whatever L
    for r in t:
        rows = np.arange(300) if r["group"] is None else np.flatnonzero(a.groups == r["group"])
        X = store[r["layer_a"]].a[rows].astype(np.float64)
        Y = store[r["layer_b"]].a[rows].astype(np.float64)
        want = cka(X, Y, debiased=r["measure"] == "cka_debiased")
        assert r["value"] == pytest.approx(want, abs=1e-10)


@pytest.mark.parametrize("pairs", [[(0, 1), (1, 2), (0, 2)], [(0, 3)]], ids=["dense", "blocks"])
def test_multilayer_accumulator_matches_pairwise_cka(pairs):
    from repsim.similarity import MultiLayerCKAAccumulator

    rng = np.random.default_rng(12)
    Ls = [rng.normal(size=(250, d)) * (i + 1) + 50 * i for i, d in enumerate((5, 12, 7, 30))]
    Ls[1][:, 2] = 3.0  # a dead unit
    dense = len(pairs) == 3
    acc = MultiLayerCKAAccumulator([L.shape[1] for L in Ls], pairs, dense=dense)
    assert acc.dense == dense
    for r in range(0, 250, 37):
        acc.update([L[r : r + 37] for L in Ls])
    for debiased in (False, True):
        got = acc.results(pairs, debiased=debiased)
        want = [cka(Ls[i], Ls[j], debiased=debiased) for i, j in pairs]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


def test_all_pairs_of_torch_layers_stay_on_their_device():
    import torch

    a, _ = make_captures(13, n=100, widths=(8, 12, 5))
    t_layers = {k: torch.as_tensor(v) for k, v in a.items()}
    t = compare(t_layers, t_layers, pairs="all")
    for r in t:
        want = cka(a[r["layer_a"]], a[r["layer_b"]])
        assert r["value"] == pytest.approx(want, abs=1e-12)
