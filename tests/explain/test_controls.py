"""Drift and bias beside their controls; the onset layer against the recovery-only control."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from repsim._core.stats import adjust_pvalues
from repsim.errors import RelationWarning
from repsim.explain import (
    bias_effects,
    controls_of,
    drift_effects,
    floor_effect,
    onset_tests,
    relate,
)
from tests.explain._family import LAYERS, family


def _values(sim, method, sparsity, layer):
    return {
        r["seed"]: 1 - r["value"]
        for r in sim
        if r["kind"] == "compressed"
        and r["method"] == method
        and r["sparsity"] == sparsity
        and r["layer"] == layer
    }


def test_control_labels():
    configs = [("none+ft", 0.0), ("none+kd", 0.0), ("magnitude+kd", 0.5), ("random+kd", 0.5)]
    assert controls_of(("magnitude+kd", 0.5), configs) == {
        "recovery": ("none+kd", 0.0),
        "random": ("random+kd", 0.5),
    }
    assert controls_of(("random+kd", 0.5), configs) == {
        "recovery": ("none+kd", 0.0),
        "random": None,
    }
    assert controls_of(("none+ft", 0.0), configs) == {"recovery": None, "random": None}
    assert controls_of(("magnitude+ft", 0.7), configs) == {
        "recovery": ("none+ft", 0.0),
        "random": None,
    }
    # one-shot pruning without recovery: no recovery-only control; random is "random"
    assert controls_of(("magnitude", 0.5), [("random", 0.5)]) == {
        "recovery": None,
        "random": ("random", 0.5),
    }


def test_drift_beyond_recovery_and_random_are_paired_t_tests_over_seeds():
    sim, _ = family(n_seeds=6, seed=0)
    rows = drift_effects(sim, ci=0.9)
    for layer in LAYERS:
        a = _values(sim, "magnitude+ft", 0.7, layer)
        for comparison, ctrl in (("recovery", ("none+ft", 0.0)), ("random", ("random+ft", 0.7))):
            b = _values(sim, *ctrl, layer)
            seeds = sorted(a)
            d = np.array([a[s] - b[s] for s in seeds])
            row = next(
                r
                for r in rows
                if r["method"] == "magnitude+ft"
                and r["sparsity"] == 0.7
                and r["layer"] == layer
                and r["comparison"] == comparison
            )
            ref = stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
            assert row["control"] == f"{ctrl[0]}@{ctrl[1]}"
            assert row["effect"] == pytest.approx(d.mean()) and row["p"] == pytest.approx(
                ref.pvalue
            )
            lo, hi = stats.t.interval(0.9, 5, loc=d.mean(), scale=stats.sem(d))
            assert (row["low"], row["high"]) == pytest.approx((lo, hi))
            assert row["n_seeds"] == 6 and row["interval"] == "t"
    # the recovery-only control itself is compared with the floor only
    own = {r["comparison"] for r in rows if r["method"] == "none+ft"}
    assert own == {"dense_floor"}
    # magnitude drifts beyond recovery at conv2 and fc1, not at conv1 (synthetic truth)
    rec = {
        r["layer"]: r
        for r in rows
        if r["method"] == "magnitude+ft" and r["sparsity"] == 0.9 and r["comparison"] == "recovery"
    }
    assert rec["conv1"]["p_adjusted"] > 0.05 and rec["fc1"]["p_adjusted"] < 0.01
    assert [rec[la]["p_adjusted"] for la in LAYERS] == pytest.approx(
        list(adjust_pvalues([rec[la]["p"] for la in LAYERS], "holm"))
    )


def test_floor_effect_is_a_seed_jackknife_of_the_mean_difference():
    values = {0: 0.30, 1: 0.35, 2: 0.28, 3: 0.40}
    pairs = [(0, 1, 0.02), (0, 2, 0.03), (0, 3, 0.01), (1, 2, 0.05), (1, 3, 0.02), (2, 3, 0.04)]
    res = floor_effect(values, pairs, ci=0.95)
    est = np.mean(list(values.values())) - np.mean([v for *_, v in pairs])
    reps = np.array(
        [
            np.mean([v for s, v in values.items() if s != g])
            - np.mean([v for a, b, v in pairs if g not in (a, b)])
            for g in range(4)
        ]
    )
    se = math.sqrt(3 / 4 * np.sum((reps - reps.mean()) ** 2))
    half = stats.t.ppf(0.975, 3) * se
    assert res["effect"] == pytest.approx(est) and res["se"] == pytest.approx(se)
    assert (res["low"], res["high"]) == pytest.approx((est - half, est + half))
    assert res["n_seeds"] == 4 and res["n_pairs"] == 6 and res["df"] == 3


def test_onset_is_the_first_layer_beyond_the_recovery_control():
    for onset_from, want in ((1, "conv2"), (2, "fc1")):
        sim, _ = family(n_seeds=6, seed=1, onset_from=onset_from)
        rows, first = onset_tests(sim)
        assert first["magnitude+ft@0.9"] == want
        assert "none+ft@0.0" not in first  # the control is not tested against itself
        fam = [r for r in rows if r["method"] == "magnitude+ft" and r["sparsity"] == 0.9]
        p = [r["p"] for r in fam]
        assert [r["p_adjusted"] for r in fam] == pytest.approx(list(adjust_pvalues(p, "holm")))
        layer = next(r for r in fam if r["layer"] == want)
        d = np.array(
            [
                _values(sim, "magnitude+ft", 0.9, want)[s] - _values(sim, "none+ft", 0.0, want)[s]
                for s in range(6)
            ]
        )
        ref = stats.ttest_1samp(d, 0.0, alternative="greater")
        assert layer["p"] == pytest.approx(ref.pvalue) and layer["significant"]
        assert layer["excess"] == pytest.approx(d.mean())


def test_onset_without_a_recovery_control_warns_and_relate_keeps_the_old_rule():
    sim, shifts = family(n_seeds=5, seed=2, controls=False)
    with pytest.warns(RelationWarning, match="recovery-only control"):
        rows, first = onset_tests(sim)
    assert rows == [] and first == {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rel = relate(sim, shifts, bias="cev", n_boot=100, n_permutations=200)
    assert rel.controlled_onset == [] and rel.onset_layer  # 0.2 floor rule still there


def test_bias_beyond_the_dense_floor_and_the_controls():
    sim, shifts = family(n_seeds=6, seed=3)
    rows = bias_effects(shifts, bias=["cev", "sde"])
    floor = [r for r in shifts if r.get("kind") == "dense"]
    mine = [r for r in shifts if r.get("method") == "magnitude+ft" and r.get("sparsity") == 0.5]
    want = floor_effect(
        {str(r["seed"]): r["cev"] for r in mine},
        [(str(r["seed"]), str(r["seed_b"]), r["cev"]) for r in floor],
    )
    got = next(
        r
        for r in rows
        if r["method"] == "magnitude+ft"
        and r["sparsity"] == 0.5
        and r["metric"] == "cev"
        and r["comparison"] == "dense_floor"
    )
    assert got["effect"] == pytest.approx(want["effect"]) and got["low"] == pytest.approx(
        want["low"]
    )
    assert got["control"] == "dense" and got["p_adjusted"] < 0.05
    rec = next(
        r
        for r in rows
        if r["method"] == "magnitude+ft"
        and r["sparsity"] == 0.5
        and r["metric"] == "cev"
        and r["comparison"] == "recovery"
    )
    ctrl = {r["seed"]: r["cev"] for r in shifts if r.get("method") == "none+ft"}
    d = [r["cev"] - ctrl[r["seed"]] for r in mine]
    assert rec["effect"] == pytest.approx(np.mean(d))
    assert rec["p"] == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue)
    # Holm across the metrics of one configuration and comparison
    fam = [
        r
        for r in rows
        if r["method"] == "magnitude+ft" and r["sparsity"] == 0.5 and r["comparison"] == "recovery"
    ]
    assert {r["metric"] for r in fam} == {"cev", "sde"}
    assert [r["p_adjusted"] for r in fam] == pytest.approx(
        list(adjust_pvalues([r["p"] for r in fam], "holm"))
    )


def test_control_role_reads_the_family_labels():
    from repsim.explain import control_role, split_method

    assert control_role("none+ft") == control_role("none+kd") == "recovery-only control"
    assert control_role("random+ft") == control_role("random") == "random-pruning control"
    assert control_role("magnitude+kd") == control_role("2:4") == "compressed"
    assert control_role("quantize-4bit") == "compressed"
    assert split_method("wanda+ft") == ("wanda", "ft") and split_method("2:4") == ("2:4", None)
