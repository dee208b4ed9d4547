"""The controlled (within-configuration) analysis against the pooled one."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from repsim.errors import ConfigError
from repsim.explain import (
    controlled_correlations,
    pooled_correlations,
    relate,
    stratum_correlations,
)
from tests.explain._family import LAYERS, family

FAST = {"n_boot": 200, "n_permutations": 2000, "seed": 0}


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def test_confounded_family_shows_nothing_within_configurations():
    # divergence and bias both grow with sparsity; within a sparsity they are independent
    sim, shifts = family(n_seeds=8, link=0.0, seed=1, controls=False)
    rel = _quiet(relate, sim, shifts, bias=["cev", "sde"], **FAST)
    assert rel.settings["headline"] == "controlled"
    assert rel.settings["strata"] == ["method", "sparsity"]
    assert len(rel.controlled) == len(LAYERS) * 2
    for r in rel.controlled:
        assert r["analysis"] == "within strata" and r["permutation"] == "joint"
        assert r["p_adjusted"] > 0.05 and r["p_adjusted"] >= r["p"]
        assert r["n_seeds"] == 8 and r["n_members"] == 24 and r["n_strata"] == 3
        assert r["low"] < r["estimate"] < r["high"]
    # the pooled correlation is large, "significant", and labelled confounded
    fc1 = next(r for r in rel.pooled if r["layer"] == "fc1" and r["bias"] == "cev")
    assert fc1["estimate"] > 0.8 and fc1["p_adjusted"] < 0.05
    for r in rel.pooled:
        assert "sparsity" in r["confounded_by"] and "confounded" in r["label"]
    assert all("confounded" in r["label"] for r in rel.correlations)


def test_a_real_within_configuration_link_is_found():
    sim, shifts = family(n_seeds=8, link=3.0, seed=1, controls=False)
    rel = _quiet(relate, sim, shifts, bias=["cev", "sde"], **FAST)
    for r in rel.controlled:
        if r["bias"] == "cev":
            assert r["estimate"] > 0.5 and r["p_adjusted"] < 0.05 and r["low"] > 0
        else:  # sde carries no link
            assert r["p_adjusted"] > 0.05


def test_controlled_estimate_is_the_mean_of_the_strata_spearman():
    sim, shifts = family(n_seeds=6, link=1.0, seed=2, controls=False)
    ctrl = _quiet(controlled_correlations, sim, shifts, bias="cev", **FAST)
    within = _quiet(stratum_correlations, sim, shifts, bias="cev", **FAST)
    for layer in LAYERS:
        x = {
            (r["sparsity"], r["seed"]): 1 - r["value"]
            for r in sim
            if r["kind"] == "compressed" and r["layer"] == layer
        }
        y = {(r["sparsity"], r["seed"]): r["cev"] for r in shifts if r.get("kind") != "dense"}
        rhos = []
        for sp in (0.5, 0.7, 0.9):
            keys = [k for k in x if k[0] == sp]
            rho = stats.spearmanr([x[k] for k in keys], [y[k] for k in keys]).statistic
            rhos.append(rho)
            row = next(r for r in within if r["layer"] == layer and r["stratum"]["sparsity"] == sp)
            assert row["estimate"] == pytest.approx(rho)
            assert row["p_exact"] and row["n_seeds"] == 6  # 6! = 720 <= 2000 permutations
            assert np.isnan(row["low"]) and row["interval"] == "none"  # under 10 seeds
        row = next(r for r in ctrl if r["layer"] == layer)
        assert row["estimate"] == pytest.approx(np.mean(rhos))
        assert row["interval"] == "cluster_jackknife_t"


def test_joint_permutation_holds_its_level_when_seeds_carry_both_effects():
    # Under the null, a seed effect shared by a seed's members makes the strata's correlations
    # move together. Permuting seeds jointly keeps the test's level; permuting each stratum
    # independently (members treated as exchangeable across strata) rejects far too often.
    from repsim._core.stats import stratified_permutation_test

    rng = np.random.default_rng(0)
    n_seeds, n_strata, reps = 8, 4, 150
    strata = np.repeat(np.arange(n_strata), n_seeds)
    seeds = np.tile(np.arange(n_seeds), n_strata)
    rejections = {"joint": 0, "within": 0}
    for _ in range(reps):
        a, b = rng.normal(size=n_seeds), rng.normal(size=n_seeds)
        x = a[seeds] + 0.3 * rng.normal(size=seeds.size)
        y = b[seeds] + 0.3 * rng.normal(size=seeds.size)
        joint = stratified_permutation_test(
            x, y, strata=strata, clusters=seeds, n_permutations=300, seed=1
        )
        within = stratified_permutation_test(x, y, strata=strata, n_permutations=300, seed=1)
        assert joint["scheme"] == "joint" and within["scheme"] == "within"
        rejections["joint"] += joint["p"] < 0.05
        rejections["within"] += within["p"] < 0.05
    assert rejections["joint"] / reps < 0.1
    assert rejections["within"] / reps > 0.25


def test_covariates_partial_out_accuracy_drop_derived_from_accuracies():
    # within a configuration both drift and bias follow the accuracy lost, nothing else links
    # them: the within-stratum correlation is high, the partial one given accuracy_drop is not
    sim, shifts = family(n_seeds=8, link=0.0, seed=3, controls=False)
    rng = np.random.default_rng(7)
    drop = {}
    for r in shifts:
        if r.get("kind") != "dense":
            d = r["dense_accuracy"] - r["accuracy"]  # accuracy_drop is not given: derived
            drop[(r["sparsity"], r["seed"])] = d
            r["cev"] = 10 * d + 0.05 * rng.standard_normal()
    for r in sim:
        if r["kind"] == "compressed":
            r["value"] = 1 - (drop[(r["sparsity"], r["seed"])] + 0.005 * rng.standard_normal())
    plain = _quiet(controlled_correlations, sim, shifts, bias="cev", **FAST)
    partial = _quiet(
        controlled_correlations, sim, shifts, bias="cev", covariates=["accuracy_drop"], **FAST
    )
    assert all(r["estimate"] > 0.5 and r["p_adjusted"] < 0.05 for r in plain)
    assert all(r["covariates"] == ["accuracy_drop"] for r in partial)
    assert all(r["analysis"] == "partial within strata" for r in partial)
    assert all(abs(r["estimate"]) < 0.5 and r["p_adjusted"] > 0.05 for r in partial)
    assert all(0.3 < r["covariate_r2_x"] < 0.95 for r in partial)
    with pytest.raises(ConfigError, match="covariate 'acc_dropp'"):
        controlled_correlations(sim, shifts, bias="cev", covariates=["acc_dropp"])


def test_pooled_table_is_the_plain_spearman():
    sim, shifts = family(n_seeds=4, seed=4, controls=False)
    pooled = _quiet(pooled_correlations, sim, shifts, bias="cev", **FAST)
    x = [1 - r["value"] for r in sim if r["kind"] == "compressed" and r["layer"] == "fc1"]
    y = [r["cev"] for r in shifts if r.get("kind") != "dense"]
    fc1 = next(r for r in pooled if r["layer"] == "fc1")
    assert fc1["estimate"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert fc1["permutation"] == "members" and fc1["n_seeds"] == 4 and fc1["few_seeds"]


def test_no_strata_and_unknown_stratum():
    sim, shifts = family(n_seeds=5, seed=5, controls=False)
    rows = _quiet(controlled_correlations, sim, shifts, bias="cev", strata=None, **FAST)
    assert all(r["analysis"] == "unadjusted" for r in rows)
    with pytest.raises(ConfigError, match="stratum column 'optimiser'"):
        controlled_correlations(sim, shifts, bias="cev", strata=["optimiser"])
