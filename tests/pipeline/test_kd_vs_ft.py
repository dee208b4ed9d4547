"""Distillation against fine-tuning: paired differences over seeds with bootstrap CIs."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_paired_differences_and_their_bootstrap_intervals():
    shifts, sims = _members()
    (row,) = kd_vs_ft(shifts, sims, n_boot=200, ci=0.9, seed=4)
    assert row["prune_method"] == "mag" and row["n_seeds"] == 5
    kd = np.array([r["cev"] for r in shifts if r["method"] == "mag+kd"])
    ft = np.array([r["cev"] for r in shifts if r["method"] == "mag+ft"])
    assert row["cev_diff"] == pytest.approx(np.mean(kd - ft))
    lo, hi = bootstrap_mean(kd - ft, n_boot=200, ci=0.9, seed=4)
    assert (row["cev_diff_low"], row["cev_diff_high"]) == (lo, hi)


def test_old_alpha_spelling_warns_and_gives_the_same_rows():
    shifts, sims = _members(1)
    new = kd_vs_ft(shifts, sims, n_boot=100, ci=0.8, seed=0)
    with pytest.warns(DeprecationWarning, match=r"kd_vs_ft\(alpha=\.\.\.\)"):
        old = kd_vs_ft(shifts, sims, n_boot=100, alpha=0.2, seed=0)
    assert old == new
