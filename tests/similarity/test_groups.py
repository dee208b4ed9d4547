"""Group-conditional similarity on equal sample sizes (repsim.similarity.groups)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from repsim.errors import ConfigError, ShapeError, SimilarityWarning
from repsim.similarity.cka import linear_cka, linear_cka_debiased
from repsim.similarity.groups import compare_groups, group_similarity


def _data(n=120, d=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, X @ rng.standard_normal((d, d)) + rng.standard_normal((n, d))


def test_subsampling_matches_a_direct_computation():
    X, Y = _data()
    groups = np.array(["a"] * 20 + ["b"] * 100)
    rows = group_similarity(X, Y, groups, n_draws=5, seed=3)
    a, b = rows
    assert a["group"] == "a" and a["n"] == 20 and a["n_used"] == 20 and a["n_draws"] == 1
    assert a["value"] == pytest.approx(linear_cka(X[:20], Y[:20])) and math.isnan(a["sd"])
    rng = np.random.default_rng([3, 1])  # group b is the second group seen
    rows_b = np.arange(20, 120)
    draws = []
    for _ in range(5):
        idx = np.sort(rng.choice(rows_b, size=20, replace=False))
        draws.append(linear_cka(X[idx], Y[idx]))
    assert b["n"] == 100 and b["n_used"] == 20 and b["n_draws"] == 5
    assert b["value"] == pytest.approx(np.mean(draws))
    assert b["sd"] == pytest.approx(np.std(draws, ddof=1))
    assert {r["size_matching"] for r in rows} == {"subsample"}


def test_no_matching_and_other_measures():
    X, Y = _data()
    groups = np.repeat([0, 1], [30, 90])
    rows = group_similarity(
        X, Y, groups, size_matching="none", measure="cka_debiased", group_names=["g0", "g1"]
    )
    assert [r["group"] for r in rows] == ["g0", "g1"]
    assert rows[1]["value"] == pytest.approx(linear_cka_debiased(X[30:], Y[30:]))
    assert rows[1]["n_used"] == 90
    # equal sizes: subsampling changes nothing
    eq = np.repeat([0, 1], 60)
    same = group_similarity(X, Y, eq)
    assert same[0]["value"] == pytest.approx(linear_cka(X[:60], Y[:60]))
    # any callable
    rows = group_similarity(X, Y, eq, measure=lambda a, b: float(a.shape[0]))
    assert [r["value"] for r in rows] == [60.0, 60.0]


def test_small_groups_and_errors():
    X, Y = _data()
    groups = np.array(["tiny"] * 3 + ["big"] * 117)
    with pytest.warns(SimilarityWarning, match="tiny"):
        rows = group_similarity(X, Y, groups, n_draws=2)
    assert math.isnan(rows[0]["value"]) and rows[1]["n_used"] == 117  # tiny sets no size
    with pytest.raises(ShapeError):
        group_similarity(X, Y[:10], groups)
    with pytest.raises(ConfigError, match="size_matching"):
        group_similarity(X, Y, groups, size_matching="debiased")
    with pytest.raises(ConfigError, match="unknown similarity measure"):
        group_similarity(X, Y, groups, measure="ckaa")


def test_compare_groups_over_layers():
    X, Y = _data()
    a, b = {"l1": X, "l2": X[:, :4]}, {"l1": Y, "l2": Y[:, :3]}
    groups = np.repeat(["x", "y"], [40, 80])
    rows = compare_groups(a, b, groups, measures=["cka", "svcca"], n_draws=3)
    assert [(r["layer"], r["measure"], r["group"]) for r in rows][:4] == [
        ("l1", "cka", "x"),
        ("l1", "cka", "y"),
        ("l1", "svcca", "x"),
        ("l1", "svcca", "y"),
    ]
    assert len(rows) == 8 and all(r["n_used"] == 40 for r in rows)
    with pytest.raises(ConfigError, match="not in both"):
        compare_groups(a, b, groups, layers=["l3"])
