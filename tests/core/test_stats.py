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


# --------------------------------------------------------------------------------------------
# clustered designs (issue 14)


def test_t_test_matches_scipy_and_is_nan_when_undefined():
    from repsim._core.stats import t_test
    from repsim.errors import RelationWarning

    v = np.array([0.3, 0.1, 0.5, 0.2, np.nan, 0.45])
    out = t_test(v, ci=0.9)
    finite = v[np.isfinite(v)]
    ref = stats.ttest_1samp(finite, 0.0)
    assert out["t"] == pytest.approx(ref.statistic) and out["p"] == pytest.approx(ref.pvalue)
    lo, hi = stats.t.interval(0.9, 4, loc=finite.mean(), scale=stats.sem(finite))
    assert (out["low"], out["high"]) == pytest.approx((lo, hi))
    greater = t_test(finite, alternative="greater")
    assert greater["p"] == pytest.approx(stats.ttest_1samp(finite, 0, alternative="greater").pvalue)
    with pytest.warns(RelationWarning, match="do not vary"):
        flat = t_test([1.0, 1.0, 1.0])
    assert flat["mean"] == 1.0 and math.isnan(flat["low"]) and math.isnan(flat["p"])
    with pytest.warns(RelationWarning, match="at least 2"):
        assert math.isnan(t_test([1.0])["high"])


def test_jackknife_of_a_mean_is_the_t_interval():
    from repsim._core.stats import jackknife_interval, t_test

    v = np.random.default_rng(3).normal(size=7)
    reps = np.array([np.delete(v, i).mean() for i in range(7)])
    jk = jackknife_interval(v.mean(), reps, ci=0.95)
    t = t_test(v, ci=0.95)
    assert jk["se"] == pytest.approx(t["se"]) and jk["df"] == 6
    assert (jk["low"], jk["high"]) == pytest.approx((t["low"], t["high"]))
    assert jk["p"] == pytest.approx(t["p"])
    # Fisher scale: the bounds are tanh of the z-scale interval
    r = np.array([0.5, 0.55, 0.6, 0.45, 0.52])
    fz = jackknife_interval(0.52, r, transform="fisher")
    z = np.arctanh(r)
    se = math.sqrt(4 / 5 * np.sum((z - z.mean()) ** 2))
    half = stats.t.ppf(0.975, 4) * se
    assert fz["low"] == pytest.approx(math.tanh(math.atanh(0.52) - half))
    assert math.isnan(jackknife_interval(math.nan, r)["low"])


def test_bc_and_bca_against_the_formula():
    from scipy.stats import norm

    from repsim._core.stats import bootstrap_interval

    rng = np.random.default_rng(5)
    reps = rng.gamma(3.0, 1.0, 4000)
    est = 2.6
    jk = rng.normal(est, 0.3, 20) ** 2 / est  # skewed jackknife values
    z0 = norm.ppf(np.mean(reps < est))
    d = jk.mean() - jk
    a = np.sum(d**3) / (6 * np.sum(d**2) ** 1.5)
    want = []
    for q in (0.025, 0.975):
        zq = norm.ppf(q)
        want.append(np.quantile(reps, norm.cdf(z0 + (z0 + zq) / (1 - a * (z0 + zq)))))
    assert bootstrap_interval(est, reps, method="bca", jackknife=jk) == pytest.approx(tuple(want))
    bc = [np.quantile(reps, norm.cdf(2 * z0 + norm.ppf(q))) for q in (0.025, 0.975)]
    assert bootstrap_interval(est, reps, method="bc") == pytest.approx(tuple(bc))
    assert bootstrap_interval(est, reps, method="percentile") == pytest.approx(
        tuple(np.quantile(reps, [0.025, 0.975]))
    )
    with pytest.raises(ConfigError, match="jackknife"):
        bootstrap_interval(est, reps, method="bca")


def test_rank_within_matches_scipy_per_stratum_with_ties():
    from repsim._core.stats import rank_within

    rng = np.random.default_rng(2)
    v = rng.integers(0, 4, size=(5, 12)).astype(float)  # many ties
    strata = np.array(list("aabbbcacbaab"))
    got = rank_within(v, strata)
    for k in "abc":
        cols = strata == k
        np.testing.assert_array_equal(got[:, cols], stats.rankdata(v[:, cols], axis=-1))
    np.testing.assert_array_equal(rank_within(v[0]), stats.rankdata(v[0]))


def test_partial_rank_correlation_against_direct_computation():
    from repsim._core.stats import partial_rank_correlation

    rng = np.random.default_rng(4)
    n = 24
    x, y, c = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    y = y + 0.5 * x + c
    strata = np.repeat([0, 1, 2], 8)
    # no strata, no covariates: Spearman
    assert partial_rank_correlation(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    # strata only: weighted mean of the strata's Spearman (equal sizes: the plain mean)
    per = [stats.spearmanr(x[strata == k], y[strata == k]).statistic for k in range(3)]
    assert partial_rank_correlation(x, y, strata=strata) == pytest.approx(np.mean(per))
    # strata + covariate: residuals of within-stratum ranks on [stratum dummies, ranks of c]
    rk = np.empty((3, n))
    for k in range(3):
        for j, v in enumerate((x, y, c)):
            rk[j, strata == k] = stats.rankdata(v[strata == k])
    z = np.column_stack([(strata == k).astype(float) for k in range(3)] + [rk[2]])
    res = [v - z @ np.linalg.lstsq(z, v, rcond=None)[0] for v in rk[:2]]
    want = np.corrcoef(*res)[0, 1]
    assert partial_rank_correlation(x, y, strata=strata, covariates=c) == pytest.approx(want)


def test_cluster_bootstrap_carries_every_member_of_a_drawn_seed():
    from repsim._core.stats import cluster_bootstrap, cluster_bootstrap_indices

    clusters = np.repeat(["s0", "s1", "s2", "s3"], 3)
    idx = cluster_bootstrap_indices(clusters, 50, seed=9)
    draws = np.random.default_rng(9).integers(0, 4, size=(50, 4))
    for got, d in zip(idx, draws, strict=True):
        assert np.array_equal(got, np.concatenate([np.arange(3 * g, 3 * g + 3) for g in d]))
    values = np.arange(12.0)
    loop = cluster_bootstrap(lambda i: values[i].mean(), clusters, n_boot=50, seed=9)
    batch = cluster_bootstrap(
        lambda i: values[i].mean(-1), clusters, n_boot=50, seed=9, vectorized=True
    )
    np.testing.assert_allclose(loop, batch)
    np.testing.assert_allclose(loop, [values[i].mean() for i in idx])


def test_joint_permutations_move_seeds_together_and_enumerate_exactly():
    from repsim._core.stats import cluster_permutations

    blocks = ["a"] * 4 + ["b"] * 4
    clusters = [0, 1, 2, 3, 3, 2, 1, 0]
    perms, exact, scheme = cluster_permutations(blocks, clusters, n_permutations=100)
    assert exact and scheme == "joint" and len(perms) == 24
    for p in perms:  # the seed given to seed s is the same in both blocks
        in_a = {clusters[i]: clusters[p[i]] for i in range(4)}
        in_b = {clusters[i]: clusters[p[i]] for i in range(4, 8)}
        assert in_a == in_b
        assert sorted(p[:4]) == [0, 1, 2, 3] and sorted(p[4:]) == [4, 5, 6, 7]
    assert len({tuple(p) for p in perms}) == 24
    mc, exact, _ = cluster_permutations(blocks, clusters, n_permutations=10, seed=1)
    assert not exact and mc.shape == (10, 8)
    # a block missing a seed: independent permutations within blocks, warned
    from repsim.errors import RelationWarning

    with pytest.warns(RelationWarning, match="incomplete family"):
        w, exact, scheme = cluster_permutations(blocks[:7], clusters[:7], n_permutations=1000)
    assert scheme == "within" and exact and len(w) == 24 * 6


def test_stratified_permutation_p_against_brute_force():
    import itertools

    from repsim._core.stats import partial_rank_correlation, stratified_permutation_test

    rng = np.random.default_rng(8)
    strata = np.repeat([0, 1], 4)
    seeds = np.tile(np.arange(4), 2)
    x = rng.normal(size=8)
    y = x + 0.8 * rng.normal(size=8)
    obs = partial_rank_correlation(x, y, strata=strata)
    hits = 0
    for p in itertools.permutations(range(4)):  # joint: seed s takes seed p[s]'s y in both
        yp = np.concatenate([y[:4][list(p)], y[4:][list(p)]])
        hits += abs(partial_rank_correlation(x, yp, strata=strata)) >= abs(obs) - 1e-12
    out = stratified_permutation_test(
        x, y, strata=strata, clusters=seeds, n_permutations=100, studentize=False
    )
    assert out["exact"] and out["scheme"] == "joint" and out["n_permutations"] == 24
    assert out["estimate"] == pytest.approx(obs) and out["p"] == pytest.approx(hits / 24)
    assert 1 < hits < 24

    def student(yy):  # sum over seeds of the per-seed sums of residual products, studentised
        ex, ey = (
            np.concatenate([stats.rankdata(v[:4]) - 2.5, stats.rankdata(v[4:]) - 2.5])
            for v in (x, yy)
        )
        s_g = np.array([np.sum((ex * ey)[seeds == g]) for g in range(4)])
        return s_g.sum() / np.sqrt(np.sum(s_g**2))

    t_obs = student(y)
    hits = sum(
        abs(student(np.concatenate([y[:4][list(p)], y[4:][list(p)]]))) >= abs(t_obs) - 1e-12
        for p in itertools.permutations(range(4))
    )
    out = stratified_permutation_test(
        x, y, strata=strata, clusters=seeds, n_permutations=100, studentize=True
    )
    assert out["p"] == pytest.approx(hits / 24) and 1 < hits < 24


def test_freedman_lane_with_a_covariate_against_brute_force():
    import itertools

    from repsim._core.stats import stratified_permutation_test

    rng = np.random.default_rng(12)
    strata = np.repeat([0, 1], 5)
    seeds = np.tile(np.arange(5), 2)
    c = rng.normal(size=10)
    x, y = c + rng.normal(size=10), c + rng.normal(size=10)
    rk = np.empty((3, 10))
    for k in (0, 1):
        for j, v in enumerate((x, y, c)):
            rk[j, strata == k] = stats.rankdata(v[strata == k])
    z = np.column_stack([(strata == 0).astype(float), (strata == 1).astype(float), rk[2]])

    def resid(v):
        return v - z @ np.linalg.lstsq(z, v, rcond=None)[0]

    ex, ey = resid(rk[0]), resid(rk[1])
    fitted = rk[1] - ey
    obs = np.corrcoef(ex, ey)[0, 1]
    hits = 0
    for p in itertools.permutations(range(5)):
        perm = np.concatenate([np.array(p), 5 + np.array(p)])
        ystar = fitted + ey[perm]  # Freedman-Lane: reduced-model fit + permuted residuals
        hits += abs(np.corrcoef(ex, resid(ystar))[0, 1]) >= abs(obs) - 1e-12
    out = stratified_permutation_test(
        x, y, strata=strata, covariates=c, clusters=seeds, n_permutations=200, studentize=False
    )
    assert out["exact"] and out["n_permutations"] == 120
    assert out["estimate"] == pytest.approx(obs)
    assert out["p"] == pytest.approx(hits / 120) and 1 < hits < 120

    # the default statistic: studentised by the per-seed sums of residual products
    def student(e):
        s_g = np.array([np.sum((ex * e)[seeds == g]) for g in range(5)])
        return s_g.sum() / np.sqrt(np.sum(s_g**2))

    t_obs = student(ey)
    hits = 0
    for p in itertools.permutations(range(5)):
        perm = np.concatenate([np.array(p), 5 + np.array(p)])
        hits += abs(student(resid(fitted + ey[perm]))) >= abs(t_obs) - 1e-12
    out = stratified_permutation_test(
        x, y, strata=strata, covariates=c, clusters=seeds, n_permutations=200
    )
    assert out["p"] == pytest.approx(hits / 120) and 1 < hits < 120
    assert 0 < out["covariate_r2_x"] < 1 and 0 < out["covariate_r2_y"] < 1


def test_studentised_statistic_of_zero_is_not_extreme():
    # every product of residuals is 0 (x varies only in one stratum, y only in the other):
    # T = 0/0 is read as 0, so p = 1, never a spurious 0
    from repsim._core.stats import stratified_permutation_test

    x, y = np.array([1.0, 2.0, 5.0, 5.0]), np.array([3.0, 3.0, 1.0, 2.0])
    out = stratified_permutation_test(
        x, y, strata=[0, 0, 1, 1], n_permutations=100, studentize=True
    )
    assert out["estimate"] == 0.0 and out["exact"] and out["p"] == 1.0
