"""Group gaps fair to group size, with intervals over seeds."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from repsim.errors import RelationWarning
from repsim.explain import group_gaps
from repsim.similarity.groups import group_similarity

GROUPS = np.array(["minor"] * 50 + ["major"] * 500)


def _rows(size_matching: str, *, n_seeds: int = 8, base: int = 0, measure: str = "cka"):
    """Group rows of a family whose two groups come from one distribution (no real gap)."""
    rows = []
    for s in range(n_seeds):
        rng = np.random.default_rng([base, s])
        X = rng.standard_normal((550, 20))
        Y = X @ rng.standard_normal((20, 20)) + 2.0 * rng.standard_normal((550, 20))
        for r in group_similarity(
            X, Y, GROUPS, measure=measure, size_matching=size_matching, n_draws=10, seed=s
        ):
            rows.append(
                {"kind": "compressed", "method": "magnitude+ft", "sparsity": 0.5, "seed": s}
                | {"layer": "fc1"}
                | r
            )
    return rows


def test_same_distribution_groups_of_50_and_500_show_no_gap():
    # one seeded family (a 95% CI misses 0 in 5% of families: the next test checks the rate)
    gaps = group_gaps(_rows("subsample", base=1))
    row = gaps[0]
    assert row["method"] == "all" and row["group"] == "minor" and row["reference"] == "major"
    assert row["size_matched"] and row["n_seeds"] == 8 and not row["few_seeds"]
    assert row["gap_low"] < 0 < row["gap_high"]
    # contrast: biased CKA on the whole groups shows a gap that is group size alone
    with pytest.warns(RelationWarning, match="partly measure group size"):
        naive = group_gaps(_rows("none", base=1))[0]
    assert not naive["size_matched"]
    assert naive["gap_high"] < 0 or naive["gap_low"] > 0
    assert naive["p_adjusted"] < 0.05


def test_size_matched_gap_intervals_cover_zero_at_the_nominal_rate():
    # 20 independent families: the 95% CI of the size-matched gap holds 0 about 95% of the
    # time; the unmatched gap's almost never.
    hold = {"subsample": 0, "none": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RelationWarning)
        for base in range(20):
            for scheme in hold:
                row = group_gaps(_rows(scheme, n_seeds=6, base=base + 100))[0]
                hold[scheme] += row["gap_low"] <= 0 <= row["gap_high"]
    assert hold["subsample"] >= 17
    assert hold["none"] <= 2


def test_gap_is_a_t_interval_over_seeds_per_configuration():
    rng = np.random.default_rng(7)
    sim = []
    for sp in (0.5, 0.9):
        for s in range(5):
            for g, n, shift in (("major", 900, 0.0), ("minor", 100, 0.05 * sp)):
                sim.append(
                    {
                        "kind": "compressed",
                        "method": "m+ft",
                        "sparsity": sp,
                        "seed": s,
                        "layer": "b",
                        "measure": "cka",
                        "group": g,
                        "n": n,
                        "n_used": 100,
                        "size_matching": "subsample",
                        "value": 0.9 - shift + 0.01 * rng.standard_normal(),
                    }
                )
    rows = group_gaps(sim, ci=0.9)
    assert [r["method"] for r in rows] == ["all", "m+ft", "m+ft"]
    per = {}
    for sp in (0.5, 0.9):
        d = np.array(
            [
                next(
                    1 - r["value"]
                    for r in sim
                    if r["sparsity"] == sp and r["seed"] == s and r["group"] == "minor"
                )
                - next(
                    1 - r["value"]
                    for r in sim
                    if r["sparsity"] == sp and r["seed"] == s and r["group"] == "major"
                )
                for s in range(5)
            ]
        )
        per[sp] = d
        row = next(r for r in rows if r["sparsity"] == sp)
        lo, hi = stats.t.interval(0.9, 4, loc=d.mean(), scale=stats.sem(d))
        assert row["gap"] == pytest.approx(d.mean())
        assert (row["gap_low"], row["gap_high"]) == pytest.approx((lo, hi))
        assert row["n_seeds"] == 5 and row["size_matched"]
    both = (per[0.5] + per[0.9]) / 2  # "all": per seed, the mean gap over its members
    assert rows[0]["gap"] == pytest.approx(both.mean())
    assert rows[0]["n_members"] == 10 and rows[0]["n_seeds"] == 5
