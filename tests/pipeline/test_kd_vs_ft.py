"""Distillation against fine-tuning: paired differences over seeds with bootstrap CIs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from repsim._core.stats import bootstrap_mean
from repsim.pipeline.study import kd_vs_ft


def _members(seed: int = 0):
    rng = np.random.default_rng(seed)
    shifts, sims = [], []
    for s in range(5):
        for m in ("mag+ft", "mag+kd"):
            shifts.append(
                {
                    "method": m,
                    "sparsity": 0.5,
                    "seed": s,
                    "cev": rng.random(),
                    "sde": rng.random(),
                    "accuracy": rng.random(),
                }
            )
            for layer in ("a", "b"):
                sims.append(
                    {
                        "kind": "compressed",
                        "method": m,
                        "sparsity": 0.5,
                        "seed": s,
                        "layer": layer,
                        "measure": "cka",
                        "value": rng.random(),
                    }
                )
    return shifts, sims


def test_few_seeds_get_student_t_intervals_and_paired_t_p_values():
    shifts, sims = _members()
    (row,) = kd_vs_ft(shifts, sims, n_boot=200, ci=0.9, seed=4)
    assert row["prune_method"] == "mag" and row["n_seeds"] == 5 and not row["few_seeds"]
    kd = np.array([r["cev"] for r in shifts if r["method"] == "mag+kd"])
    ft = np.array([r["cev"] for r in shifts if r["method"] == "mag+ft"])
    d = kd - ft
    assert row["cev_diff"] == pytest.approx(np.mean(d))
    # 5 seeds: the Student t interval (a percentile bootstrap of 5 values undercovers)
    half = stats.t.ppf(0.95, df=4) * d.std(ddof=1) / np.sqrt(5)
    assert row["cev_diff_low"] == pytest.approx(d.mean() - half)
    assert row["cev_diff_high"] == pytest.approx(d.mean() + half)
    assert row["cev_p"] == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue)
    assert row["cev_diff_interval"] == "t"
    ps = [row[f"{n}_p"] for n in ("cev", "sde", "accuracy", "similarity")]
    adj = [row[f"{n}_p_adjusted"] for n in ("cev", "sde", "accuracy", "similarity")]
    assert all(a >= p - 1e-12 for a, p in zip(adj, ps, strict=True))
    assert min(adj) == pytest.approx(min(1.0, 4 * min(ps)))  # Holm's first step


def test_many_seeds_get_bootstrap_intervals():
    rng = np.random.default_rng(3)
    shifts = [
        {"method": m, "sparsity": 0.5, "seed": s, "cev": rng.random(), "sde": 0.0, "accuracy": 0.0}
        for s in range(12)
        for m in ("mag+ft", "mag+kd")
    ]
    (row,) = kd_vs_ft(shifts, [], n_boot=200, ci=0.9, seed=4)
    kd = np.array([r["cev"] for r in shifts if r["method"] == "mag+kd"])
    ft = np.array([r["cev"] for r in shifts if r["method"] == "mag+ft"])
    lo, hi = bootstrap_mean(kd - ft, n_boot=200, ci=0.9, seed=4)
    assert (row["cev_diff_low"], row["cev_diff_high"]) == (lo, hi)
    assert row["cev_diff_interval"] == "bootstrap"


def test_three_seeds_are_flagged():
    shifts = [
        {
            "method": m,
            "sparsity": 0.5,
            "seed": s,
            "cev": float(s + (m == "a+kd")),
            "sde": 0.0,
            "accuracy": 0.0,
        }
        for s in range(3)
        for m in ("a+ft", "a+kd")
    ]
    (row,) = kd_vs_ft(shifts, [], n_boot=50)
    assert row["few_seeds"] and row["n_seeds"] == 3


def test_old_alpha_spelling_warns_and_gives_the_same_rows():
    shifts, sims = _members(1)
    new = kd_vs_ft(shifts, sims, n_boot=100, ci=0.8, seed=0)
    with pytest.warns(DeprecationWarning, match=r"kd_vs_ft\(alpha=\.\.\.\)"):
        old = kd_vs_ft(shifts, sims, n_boot=100, alpha=0.2, seed=0)
    assert old == new
