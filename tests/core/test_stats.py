"""The one home of resampling statistics, against scipy and direct computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from repsim._core.stats import (
    adjust_pvalues,
    alpha_to_ci,
    bootstrap_ci,
    bootstrap_indices,
    bootstrap_mean,
    bootstrap_mean_difference,
    bootstrap_replicates,
    paired_difference,
    percentile_interval,
    t_interval,
    tail_probability,
)
from repsim.errors import ConfigError


def test_tail_probability_is_exact_for_decimal_levels():
    assert tail_probability(0.95) == 0.05
    assert tail_probability(0.9) == 0.1
    assert tail_probability(0.99) == 0.01
    assert alpha_to_ci(0.05) == 0.95 and alpha_to_ci(0.1) == 0.9
    for bad in (0.0, 1.0, 95, -0.5):
        with pytest.raises(ConfigError, match="ci must be a confidence level"):
            tail_probability(bad)


def test_percentile_interval_is_numpy_quantile():
    v = np.random.default_rng(0).normal(size=1001)
    lo, hi = percentile_interval(v, 0.95)
    assert (lo, hi) == tuple(np.quantile(v, [0.025, 0.975]))
    lo1, hi1 = percentile_interval(v, 0.9, sides=1)
    assert lo1 == np.quantile(v, 0.1) and hi1 == math.inf
    with_nan = np.append(v, [np.nan, np.nan])
    assert percentile_interval(with_nan, 0.95) == (lo, hi)
    stack = np.random.default_rng(1).normal(size=(200, 3, 2))
    stack[:, 0, 0] = np.nan  # an all-NaN column gives NaN, without a warning
    lo_s, hi_s = percentile_interval(stack, 0.8, axis=0)
    assert np.isnan(lo_s[0, 0]) and np.isnan(hi_s[0, 0])
    assert lo_s[1, 1] == np.quantile(stack[:, 1, 1], 0.1)
    assert hi_s[2, 0] == np.quantile(stack[:, 2, 0], 0.9)
    with pytest.raises(ConfigError, match="sides"):
        percentile_interval(v, 0.95, sides=3)


def test_t_interval_matches_scipy():
    v = [1.2, 0.4, 2.2, 1.9, float("nan"), 0.8]
    out = t_interval(v, ci=0.9)
    finite = np.array([x for x in v if not math.isnan(x)])
    lo, hi = stats.t.interval(0.9, len(finite) - 1, loc=finite.mean(), scale=stats.sem(finite))
    assert out["n"] == 5 and out["mean"] == pytest.approx(finite.mean())
    assert (out["lo"], out["hi"]) == pytest.approx((lo, hi), abs=1e-12)
    one = t_interval([3.0])
    assert one["mean"] == 3.0 and math.isnan(one["lo"]) and one["n"] == 1
    assert math.isnan(t_interval([])["mean"])


def test_bootstrap_indices_and_replicates_make_the_same_draws():
    idx = bootstrap_indices(9, 50, seed=4)
    assert np.array_equal(idx, np.random.default_rng(4).integers(0, 9, size=(50, 9)))
    one_by_one = bootstrap_replicates(lambda i: i, 9, n_boot=50, seed=4)
    assert np.array_equal(np.stack(one_by_one), idx)


def test_stratified_replicates_resample_within_each_stratum():
    strata = [np.array([0, 2, 4]), np.array([1, 3]), np.array([5])]
    reps = bootstrap_replicates(lambda i: i, strata, n_boot=40, seed=7)
    rng = np.random.default_rng(7)  # the reference draw: rng.choice within each stratum
    for got in reps:
        want = np.concatenate([rng.choice(m, size=len(m), replace=True) for m in strata])
        assert np.array_equal(got, want)
        assert set(got[:3]) <= {0, 2, 4} and set(got[3:5]) <= {1, 3} and got[5] == 5


def test_bootstrap_mean_and_difference_against_direct_computation():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=12), rng.normal(size=7) + 1
    boot = a[np.random.default_rng(3).integers(0, 12, size=(500, 12))].mean(1)
    assert bootstrap_mean(a, n_boot=500, ci=0.9, seed=3) == tuple(np.quantile(boot, [0.05, 0.95]))
    g = np.random.default_rng(5)
    ba = a[g.integers(0, 12, size=(300, 12))].mean(1)
    bb = b[g.integers(0, 7, size=(300, 7))].mean(1)
    low, high = bootstrap_mean_difference(a, b, n_boot=300, seed=5, sides=1)
    assert low == np.quantile(ba - bb, 0.05) and high == math.inf
    assert all(math.isnan(v) for v in bootstrap_mean([1.0], n_boot=10))
    assert all(math.isnan(v) for v in bootstrap_mean_difference([], b, n_boot=10))


def test_paired_difference_and_bootstrap_ci_use_the_shared_bootstrap():
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=10), rng.normal(size=10)
    d = paired_difference(a, b, n_boot=400, ci=0.8, seed=1)
    assert d["mean"] == pytest.approx(np.mean(a - b))
    assert (d["low"], d["high"]) == bootstrap_mean(a - b, n_boot=400, ci=0.8, seed=1)
    lo, hi, n_ok = bootstrap_ci(a, b, "slope", n_boot=300, ci=0.9, seed=2)
    idx = np.random.default_rng(2).integers(0, 10, size=(300, 10))
    slopes = [stats.linregress(a[i], b[i]).slope for i in idx]
    assert n_ok == 300
    assert (lo, hi) == pytest.approx(tuple(np.quantile(slopes, [0.05, 0.95])), abs=1e-10)


@pytest.mark.parametrize("function", [bootstrap_ci, paired_difference])
def test_old_alpha_spelling_warns_and_gives_the_same_interval(function):
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=11), rng.normal(size=11)
    new = function(x, y, n_boot=200, ci=0.9, seed=0)
    with pytest.warns(DeprecationWarning, match=r"alpha=\.\.\.\) is deprecated; use ci="):
        old = function(x, y, n_boot=200, alpha=0.1, seed=0)
    assert old == new
    with pytest.raises(TypeError, match="both 'alpha'"):
        function(x, y, alpha=0.1, ci=0.9)


def test_unequal_pairs_are_a_shape_error():
    from repsim.errors import ShapeError

    with pytest.raises(ShapeError, match="x and y hold 3 and 2"):
        paired_difference([1.0, 2.0, 3.0], [1.0, 2.0])


def test_adjust_pvalues_against_scipy_and_hand_holm():
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.2])
    finite = p[np.isfinite(p)]
    bh = adjust_pvalues(p, "fdr_bh")
    assert np.isnan(bh[2])
    np.testing.assert_allclose(bh[np.isfinite(p)], stats.false_discovery_control(finite))
    holm = adjust_pvalues(p, "holm")  # sorted 0.01, 0.03, 0.04, 0.2 times 4, 3, 2, 1, running max
    np.testing.assert_allclose(holm[[0, 3, 1, 4]], [0.04, 0.09, 0.09, 0.2])
    np.testing.assert_allclose(adjust_pvalues(p, "bonferroni")[[0, 4]], [0.04, 0.8])
    assert np.array_equal(adjust_pvalues(p, "none"), p, equal_nan=True)
    with pytest.raises(ConfigError, match="correction must be one of"):
        adjust_pvalues(p, "sidak")
