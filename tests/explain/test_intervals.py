"""Intervals that respect the unit of replication and say what they rest on."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from repsim._core.stats import (
    adjust_pvalues,
    bootstrap_interval,
    bootstrap_mean,
    bootstrap_replicates,
    cluster_interval,
    percentile_interval,
)
from repsim.errors import RelationWarning
from repsim.explain import relate
from tests.explain._family import family


def test_cluster_bootstrap_covers_where_the_member_bootstrap_does_not():
    # 30 dense seeds with 6 members each; members share their seed's effect (ICC 0.8). The
    # estimate is the mean of every member. Seeded simulation, 200 replications.
    rng = np.random.default_rng(2024)
    n_seeds, n_members, reps = 30, 6, 200
    clusters = np.repeat(np.arange(n_seeds), n_members)
    covered = {"cluster": 0, "member": 0}
    width = {"cluster": [], "member": []}
    for r in range(reps):
        values = rng.normal(size=n_seeds)[clusters] + 0.5 * rng.normal(size=clusters.size)
        res = cluster_interval(
            lambda idx, v=values: v[idx].mean(axis=-1),
            clusters,
            ci=0.95,
            n_boot=400,
            seed=r,
            vectorized=True,
        )
        assert res["interval"] == "bca_cluster_bootstrap" and res["n_clusters"] == n_seeds
        lo_m, hi_m = bootstrap_mean(values, n_boot=400, ci=0.95, seed=r)
        covered["cluster"] += res["low"] <= 0.0 <= res["high"]
        covered["member"] += lo_m <= 0.0 <= hi_m
        width["cluster"].append(res["high"] - res["low"])
        width["member"].append(hi_m - lo_m)
    # nominal 0.95; 200 replications give a binomial sd of 0.015
    assert 0.90 <= covered["cluster"] / reps <= 0.99
    assert covered["member"] / reps <= 0.75
    assert np.mean(width["cluster"]) > 1.8 * np.mean(width["member"])


def test_few_seeds_use_the_seed_jackknife_and_nan_below_two():
    values = np.array([0.1, 0.3, 0.2, 0.5, 0.4, 0.6])
    clusters = np.repeat(np.arange(3), 2)
    res = cluster_interval(lambda i: values[i].mean(), clusters, n_boot=100)
    assert res["interval"] == "cluster_jackknife_t" and res["n_clusters"] == 3
    seed_means = values.reshape(3, 2).mean(1)  # balanced: the jackknife is the t interval
    from scipy import stats

    lo, hi = stats.t.interval(0.95, 2, loc=seed_means.mean(), scale=stats.sem(seed_means))
    assert (res["low"], res["high"]) == pytest.approx((lo, hi))
    with pytest.warns(RelationWarning, match="at least 2 seeds"):
        one = cluster_interval(lambda i: values[i].mean(), np.zeros(6), n_boot=10)
    assert math.isnan(one["low"]) and one["interval"] == "none"


def test_nan_estimate_never_gets_a_finite_interval():
    reps = np.random.default_rng(0).normal(0.95, 0.02, 500)  # e.g. SVCCA on resamples
    for method in ("percentile", "bc"):
        assert all(math.isnan(v) for v in bootstrap_interval(math.nan, reps, method=method))
    res = cluster_interval(lambda i: math.nan, np.arange(12), n_boot=50)
    assert math.isnan(res["low"]) and math.isnan(res["high"]) and res["interval"] == "none"
    # in relate: a layer whose divergence is undefined for every member
    sim, shifts = family(n_seeds=4, seed=0, controls=False)
    for r in sim:
        if r["layer"] == "conv2":
            r["value"] = math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rel = relate(sim, shifts, bias="cev", n_boot=50, n_permutations=200)
    for table in (rel.controlled, rel.pooled, rel.effects):
        for r in table:
            if r["layer"] == "conv2":
                point = r.get("estimate", r.get("effect"))
                assert math.isnan(point) and math.isnan(r["low"]) and math.isnan(r["high"])


def _cka_bootstrap(n: int, d: int, noise: float):
    from repsim.similarity.cka import linear_cka

    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d))
    Y = X @ rng.standard_normal((d, d)) + noise * rng.standard_normal((n, d))
    est = linear_cka(X, Y)
    reps = np.array(bootstrap_replicates(lambda i: linear_cka(X[i], Y[i]), n, n_boot=1000, seed=1))
    return est, reps


def test_bias_corrected_interval_contains_its_estimate():
    # Resampling rows with replacement duplicates samples, which inflates biased CKA: the
    # replicates sit above the estimate and the percentile interval hugs or misses it.
    est, reps = _cka_bootstrap(40, 10, 3.0)
    lo_p, hi_p = percentile_interval(reps)
    lo, hi = bootstrap_interval(est, reps, method="bc")
    assert lo_p < est < hi_p and np.mean(reps < est) < 0.2  # lopsided
    assert lo < est < hi and lo < lo_p and hi < hi_p  # shifted down around the estimate
    # so biased that BC alone would miss it: extended to the estimate, with a warning
    est, reps = _cka_bootstrap(30, 20, 3.0)
    lo_p, _ = percentile_interval(reps)
    assert est < lo_p  # the 0.2 interval does not contain its own estimate
    with pytest.warns(RelationWarning, match="extended to contain the estimate"):
        lo, hi = bootstrap_interval(est, reps, method="bc")
    assert lo <= est <= hi


def test_few_seeds_flag_and_seed_counts():
    for n_seeds, flagged in ((3, True), (5, False)):
        sim, shifts = family(n_seeds=n_seeds, seed=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rel = relate(sim, shifts, bias=["cev", "sde"], n_boot=50, n_permutations=200)
        tables = (
            rel.controlled,
            rel.pooled,
            rel.within,
            rel.effects,
            rel.bias_effects,
            rel.controlled_onset,
        )
        for table in tables:
            assert table
            for r in table:
                assert r["n_seeds"] == n_seeds and r["few_seeds"] is flagged
                assert "p_adjusted" in r and "low" in r and "high" in r


def test_relate_corrects_across_layers_and_metrics_beside_raw_p():
    sim, shifts = family(n_seeds=6, link=2.0, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        holm = relate(sim, shifts, bias=["cev", "sde"], n_boot=50, n_permutations=500)
        bh = relate(
            sim, shifts, bias=["cev", "sde"], n_boot=50, n_permutations=500, correction="bh"
        )
        raw = relate(
            sim, shifts, bias=["cev", "sde"], n_boot=50, n_permutations=500, correction="none"
        )
    p = [r["p"] for r in holm.controlled]
    assert [r["p_adjusted"] for r in holm.controlled] == pytest.approx(
        list(adjust_pvalues(p, "holm"))
    )
    assert [r["p_adjusted"] for r in bh.controlled] == pytest.approx(list(adjust_pvalues(p, "bh")))
    assert [r["p_adjusted"] for r in raw.controlled] == pytest.approx(p)
    assert all(r["correction"] == "holm" for r in holm.controlled)
    assert holm.settings["correction"] == "holm" and bh.settings["correction"] == "bh"
    # effects: Holm across the layers of one configuration and comparison
    fam = [
        r
        for r in holm.effects
        if r["method"] == "magnitude+ft" and r["sparsity"] == 0.7 and r["comparison"] == "recovery"
    ]
    assert len(fam) == 3
    assert [r["p_adjusted"] for r in fam] == pytest.approx(
        list(adjust_pvalues([r["p"] for r in fam], "holm"))
    )


def test_relations_to_dict_is_json_ready_and_keeps_the_old_keys():
    import json

    sim, shifts = family(n_seeds=4, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rel = relate(sim, shifts, n_boot=50, n_permutations=200)
    d = rel.to_dict()
    json.loads(json.dumps(d))
    for key in ("correlations", "noise_floor", "onset", "onset_layer", "group_gaps"):
        assert key in d
    for key in ("controlled", "pooled", "within", "effects", "bias_effects", "controlled_onset"):
        assert d[key]
    assert d["settings"]["unit"] == "dense seed"


def test_bh_alias_and_holm_bh_against_hand_loops():
    from repsim._core.stats import CORRECTIONS

    assert "bh" in CORRECTIONS
    rng = np.random.default_rng(11)
    p = np.round(rng.uniform(0, 0.2, 9), 3)
    p[3] = p[5]  # a tie
    p[7] = np.nan
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    srt = ok[np.argsort(p[ok], kind="stable")]
    holm, bh = np.full(9, np.nan), np.full(9, np.nan)
    running = 0.0
    for i, j in enumerate(srt):  # Holm: step-down, running maximum
        running = max(running, min(1.0, (m - i) * p[j]))
        holm[j] = running
    running = 1.0
    for i in range(m - 1, -1, -1):  # BH: step-up, running minimum from the largest
        j = srt[i]
        running = min(running, min(1.0, m * p[j] / (i + 1)))
        bh[j] = running
    np.testing.assert_allclose(adjust_pvalues(p, "holm"), holm, equal_nan=True)
    np.testing.assert_allclose(adjust_pvalues(p, "bh"), bh, equal_nan=True)
    np.testing.assert_array_equal(adjust_pvalues(p, "bh"), adjust_pvalues(p, "fdr_bh"))
