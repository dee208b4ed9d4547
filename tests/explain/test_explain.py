"""Tests of repsim.explain against scipy.stats and known-answer permutation tests."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from repsim.errors import ConfigError, DataError
from repsim.explain import (
    RelationWarning,
    bootstrap_ci,
    correlate,
    group_gaps,
    noise_floor,
    onset,
    permutation_pvalue,
    relate,
)

LAYERS = ["conv1", "conv2", "fc1", "fc2"]


def _family(seed: int = 0, n_seeds: int = 4, sparsities=(0.5, 0.7, 0.9)):
    """Synthetic family: divergence grows with sparsity and depth; CEV tracks fc1's divergence."""
    rng = np.random.default_rng(seed)
    sim, shifts = [], []
    for s_a in range(n_seeds):
        for s_b in range(s_a + 1, n_seeds):
            for li, layer in enumerate(LAYERS):
                sim.append(
                    {
                        "kind": "dense",
                        "seed": s_a,
                        "seed_b": s_b,
                        "layer": layer,
                        "measure": "cka",
                        "value": 0.98 - 0.001 * li + 0.002 * rng.standard_normal(),
                    }
                )
    for method in ("magnitude", "random"):
        for sp in sparsities:
            for s in range(n_seeds):
                div = {}
                for li, layer in enumerate(LAYERS):
                    # conv1 sits on the floor, later layers drift with sparsity
                    d = 0.02 + (li > 0) * sp * 0.1 * li + 0.005 * rng.standard_normal()
                    div[layer] = d
                    sim.append(
                        {
                            "kind": "compressed",
                            "method": method,
                            "sparsity": sp,
                            "seed": s,
                            "layer": layer,
                            "measure": "cka",
                            "value": 1 - d,
                        }
                    )
                shifts.append(
                    {
                        "method": method,
                        "sparsity": sp,
                        "seed": s,
                        "cev": 3.0 * div["fc1"] + 0.01 * rng.standard_normal(),
                        "sde": rng.standard_normal(),
                        "label": "x",
                    }
                )
    return sim, shifts


def test_correlate_matches_scipy():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(12)
    y = 0.5 * x + rng.standard_normal(12)
    out = correlate(x, y, n_boot=500, n_permutations=2000, seed=0)
    assert out["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert out["pearson"] == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    lr = stats.linregress(x, y)
    assert out["slope"] == pytest.approx(lr.slope, abs=1e-12)
    assert out["intercept"] == pytest.approx(lr.intercept, abs=1e-12)
    for key in ("spearman", "pearson", "slope"):
        assert out[f"{key}_low"] <= out[key] <= out[f"{key}_high"]
    assert not out["p_exact"]


def test_spearman_with_ties_matches_scipy():
    x = np.array([1, 2, 2, 3, 4, 4, 4, 5.0])
    y = np.array([2, 1, 3, 3, 5, 4, 6, 6.0])
    out = correlate(x, y, n_boot=200, n_permutations=100, seed=0)
    assert out["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_exact_permutation_known_answers():
    # n = 4 perfectly monotone: only the identity and the reversal reach |rho| = 1 -> 2/24.
    x = np.arange(4.0)
    p, exact = permutation_pvalue(x, 2 * x + 1, "spearman", n_permutations=10000)
    assert exact and p == pytest.approx(2 / 24)
    p, exact = permutation_pvalue(x, -x, "pearson", n_permutations=10000)
    assert exact and p == pytest.approx(2 / 24)
    # n = 5 monotone: 2/120
    x5 = np.arange(5.0)
    p, _ = permutation_pvalue(x5, x5**3, "spearman")
    assert p == pytest.approx(2 / 120)


def test_exact_permutation_matches_brute_force():
    import itertools

    rng = np.random.default_rng(3)
    x, y = rng.standard_normal(6), rng.standard_normal(6)
    r0 = abs(stats.pearsonr(x, y).statistic)
    hits = sum(
        abs(stats.pearsonr(x, y[list(p)]).statistic) >= r0 - 1e-12
        for p in itertools.permutations(range(6))
    )
    p, exact = permutation_pvalue(x, y, "pearson")
    assert exact and p == pytest.approx(hits / 720)


def test_monte_carlo_permutation_close_to_scipy_and_never_zero():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(15)
    y = 0.3 * x + rng.standard_normal(15)
    p, exact = permutation_pvalue(x, y, "pearson", n_permutations=4000, seed=1)
    ref = stats.permutation_test(
        (y,),
        lambda a, axis: stats.pearsonr(np.broadcast_to(x, a.shape), a, axis=axis).statistic,
        permutation_type="pairings",
        n_resamples=4000,
        vectorized=True,
        random_state=7,
    ).pvalue
    assert not exact and abs(p - ref) < 0.03
    p_strong, _ = permutation_pvalue(x, x, "pearson", n_permutations=500, seed=1)
    assert p_strong == pytest.approx(1 / 501)


def test_seeded_determinism():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal(20), rng.standard_normal(20)
    a = bootstrap_ci(x, y, "spearman", n_boot=300, seed=11)
    b = bootstrap_ci(x, y, "spearman", n_boot=300, seed=11)
    c = bootstrap_ci(x, y, "spearman", n_boot=300, seed=12)
    assert a == b and a != c


def test_bootstrap_ci_is_percentile_of_resampled_statistic():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal(10), rng.standard_normal(10)
    lo, hi, nvalid = bootstrap_ci(x, y, "pearson", n_boot=400, seed=3)
    idx = np.random.default_rng(3).integers(0, 10, size=(400, 10))
    ref = np.array([stats.pearsonr(x[i], y[i]).statistic for i in idx])
    assert nvalid == 400
    assert (lo, hi) == pytest.approx(tuple(np.quantile(ref, [0.025, 0.975])), abs=1e-10)


def test_undefined_is_nan_with_warning():
    with pytest.warns(RelationWarning):
        out = correlate([1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0], n_boot=50)
    assert math.isnan(out["spearman"]) and math.isnan(out["pearson_p"])
    with pytest.warns(RelationWarning):
        out = correlate([1.0, 2.0], [1.0, 2.0])
    assert math.isnan(out["pearson"]) and out["n"] == 2


def test_relate_recovers_the_layer_that_drives_cev():
    sim, shifts = _family()
    rel = relate(
        sim, shifts, divergence="1-cka", bias=["cev", "sde"], n_boot=300, n_permutations=500, seed=0
    )
    assert rel.layers == LAYERS
    fc1 = next(r for r in rel.correlations if r["layer"] == "fc1" and r["bias"] == "cev")
    assert fc1["spearman"] > 0.9 and fc1["spearman_low"] > 0.5 and fc1["pearson_p"] < 0.01
    assert fc1["n"] == 24
    # independent: the member divergences in the same order
    x = [1 - r["value"] for r in sim if r["kind"] == "compressed" and r["layer"] == "fc1"]
    y = [s["cev"] for s in shifts]
    assert fc1["pearson"] == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    assert fc1["slope"] == pytest.approx(stats.linregress(x, y).slope, abs=1e-12)
    sde = next(r for r in rel.correlations if r["layer"] == "fc1" and r["bias"] == "sde")
    # SDE is noise independent of divergence: the same Spearman as scipy's, an interval that
    # holds 0, and no significant permutation p-value (each can fail on its own).
    y_sde = [s["sde"] for s in shifts]
    assert sde["spearman"] == pytest.approx(stats.spearmanr(x, y_sde).statistic, abs=1e-12)
    assert sde["spearman_low"] < 0 < sde["spearman_high"]
    assert sde["spearman_p"] > 0.05
    # noise floor beside every figure
    assert fc1["noise_floor"] == pytest.approx(
        np.mean([1 - r["value"] for r in sim if r["kind"] == "dense" and r["layer"] == "fc1"])
    )
    # conv1 stays on the floor; conv2 is the first layer past it
    assert rel.onset_layer["all"] == "conv2"
    assert rel.onset_layer["magnitude@0.5"] == "conv2"
    assert rel.best("cev")["layer"] in ("conv2", "fc1", "fc2")


def test_noise_floor_values_and_missing_dense():
    sim, _ = _family(n_seeds=3)
    floor = noise_floor(sim)
    fc2 = [1 - r["value"] for r in sim if r["kind"] == "dense" and r["layer"] == "fc2"]
    row = next(r for r in floor if r["layer"] == "fc2")
    assert row["n_pairs"] == 3
    assert row["mean"] == pytest.approx(np.mean(fc2))
    assert row["sd"] == pytest.approx(np.std(fc2, ddof=1))
    from repsim.errors import InsufficientDataError

    with pytest.raises(InsufficientDataError, match="two dense seeds"):
        noise_floor([r for r in sim if r["kind"] == "compressed"])


def test_onset_none_when_nothing_exceeds():
    sim, _ = _family()
    flat = [dict(r, value=0.98) if r["kind"] == "compressed" else r for r in sim]
    rows, first = onset(flat, n_boot=200)
    assert first["all"] is None
    assert not any(r["exceeds"] for r in rows)


def test_group_gaps_against_independent_mean():
    rng = np.random.default_rng(7)
    sim = []
    member = {"kind": "compressed", "method": "m", "sparsity": 0.9, "measure": "cka"}
    for s in range(5):
        for layer in ("a", "b"):
            for group, n, shift in (
                ("major", 900, 0.0),
                ("minor", 100, 0.05 if layer == "b" else 0.0),
            ):
                value = 0.9 - shift + 0.001 * rng.standard_normal()
                sim.append(
                    {**member, "seed": s, "layer": layer, "group": group, "n": n, "value": value}
                )
            sim.append({**member, "seed": s, "layer": layer, "value": 0.9})
    gaps = group_gaps(sim, n_boot=300)
    assert {g["reference"] for g in gaps} == {"major"}
    b = next(g for g in gaps if g["layer"] == "b")
    ref = np.mean(
        [
            next(
                1 - r["value"]
                for r in sim
                if r.get("group") == "minor" and r["seed"] == s and r["layer"] == "b"
            )
            - next(
                1 - r["value"]
                for r in sim
                if r.get("group") == "major" and r["seed"] == s and r["layer"] == "b"
            )
            for s in range(5)
        ]
    )
    assert b["gap"] == pytest.approx(ref)
    assert b["gap_low"] > 0.04
    a = next(g for g in gaps if g["layer"] == "a")
    assert a["gap_low"] < 0.01


def test_bad_input_errors():
    sim, shifts = _family(n_seeds=2)
    with pytest.raises(ConfigError, match="cka"):
        relate(sim, shifts, divergence="1-ckaa")
    with pytest.raises(ConfigError, match="Did you mean 'cev'"):
        relate(sim, shifts, bias="cevv")
    with pytest.raises(ConfigError, match="conv9"):
        relate(sim, shifts, layers=["conv9"])
    with pytest.raises(DataError, match="kind"):
        relate([{"layer": "a", "measure": "cka", "value": 1.0, "seed": 0}], shifts)
    with pytest.raises(DataError, match="different layers"):
        relate(
            [
                {
                    "kind": "dense",
                    "seed": 0,
                    "layer_a": "a",
                    "layer_b": "b",
                    "measure": "cka",
                    "value": 1.0,
                }
            ],
            shifts,
        )


def test_relate_without_dense_pairs_warns_and_keeps_correlations():
    sim, shifts = _family(n_seeds=3)
    only = [r for r in sim if r["kind"] == "compressed"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rel = relate(only, shifts, bias="cev", n_boot=100, n_permutations=100)
    assert any(issubclass(w.category, RelationWarning) for w in caught)
    assert rel.noise_floor == [] and rel.onset_layer == {}
    assert len(rel.correlations) == len(LAYERS)


@pytest.mark.parametrize("function", ["relate", "onset", "group_gaps", "correlations", "correlate"])
def test_old_alpha_spelling_warns_and_gives_the_same_numbers(function):
    import repsim.explain as explain

    sim, shifts = _family(n_seeds=3)
    noise = np.random.default_rng(2).standard_normal(len(sim))
    for r, e in zip(sim[::3], noise):  # group-conditional rows for group_gaps
        sim.append({**r, "group": "minor", "n": 10, "value": r["value"] - 0.01 * e})
        sim.append({**r, "group": "major", "n": 90})
    if function == "correlate":
        rng = np.random.default_rng(0)
        args, kw = (rng.standard_normal(9), rng.standard_normal(9)), {"n_permutations": 50}
    elif function in ("relate", "correlations"):
        args, kw = (sim, shifts), {"bias": ["cev"], "n_permutations": 50}
    else:
        args, kw = (sim,), {}

    def run(**level):
        out = getattr(explain, function)(*args, n_boot=100, seed=1, **kw, **level)
        return repr(out.to_dict() if function == "relate" else out)  # repr: NaN equals NaN

    with pytest.warns(DeprecationWarning, match=rf"{function}\(alpha=\.\.\.\) is deprecated"):
        old = run(alpha=0.1)
    assert old == run(ci=0.9)
    assert run(ci=0.5) != old  # the level is used
