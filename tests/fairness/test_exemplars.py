"""PIE/CIE on populations with known modes; summaries from scratch."""

from __future__ import annotations

import numpy as np
import pytest

from repsim.errors import ConfigError, ShapeError
from repsim.fairness import exemplars


def test_modal_known_modes_and_tie_rule():
    dense = np.array([[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 1, 2]])  # modes 0,1,2,3
    comp = np.array(
        [[0, 2, 2, 2], [1, 2, 2, 3], [0, 1, 1, 2]]
    )  # modes 0,2,2, tie{2,3,2}->2 ; col3 votes 2,3,2 -> 2
    r = exemplars(dense_preds=dense, compressed_preds=comp)
    np.testing.assert_array_equal(r.dense_mode, [0, 1, 2, 3])
    np.testing.assert_array_equal(r.compressed_mode, [0, 2, 2, 2])
    assert sorted(r.indices.tolist()) == [1, 3]


def test_tie_goes_to_smallest_label():
    dense = np.array([[5], [5]])
    comp = np.array([[7], [4]])  # tie between 4 and 7 -> 4
    r = exemplars(dense_preds=dense, compressed_preds=comp)
    assert r.compressed_mode.tolist() == [4]
    assert r.indices.tolist() == [0]


def test_taxicab_distance_and_top_fraction():
    dense = np.array([[0, 0, 0, 0], [0, 0, 0, 0]])
    comp = np.array([[1, 0, 1, 0], [1, 1, 0, 0]])
    r = exemplars(
        dense_preds=dense,
        compressed_preds=comp,
        method="taxicab",
        fraction=0.5,
        sample_id=[10, 11, 12, 13],
    )
    np.testing.assert_allclose(r.scores, [2.0, 1.0, 1.0, 0.0])
    assert r.indices.tolist() == [0, 1]  # ties broken by index
    assert r.sample_ids.tolist() == [10, 11]


def test_summary_from_scratch():
    rng = np.random.default_rng(0)
    n, k = 200, 4
    y = rng.integers(0, k, n)
    groups = (y == 3).astype(int)
    dense = np.stack([np.where(rng.random(n) < 0.95, y, (y + 1) % k) for _ in range(5)])
    comp = np.stack(
        [np.where(rng.random(n) < np.where(y == 3, 0.4, 0.9), y, (y + 1) % k) for _ in range(5)]
    )
    r = exemplars(
        dense_preds=dense,
        compressed_preds=comp,
        y_true=y,
        groups=groups,
        group_names=["majority", "minority"],
    )
    ex = np.zeros(n, bool)
    ex[r.indices] = True
    err = comp != y
    assert r.summary["share_of_test"] == pytest.approx(ex.mean())
    assert r.summary["share_of_compressed_errors"] == pytest.approx(err[:, ex].sum() / err.sum())
    assert r.summary["compressed_accuracy_exemplars"] == pytest.approx((~err[:, ex]).mean())
    assert r.summary["dense_accuracy_rest"] == pytest.approx((dense[:, ~ex] == y[~ex]).mean())
    mino = r.by_group.row(group="minority")
    assert mino["n_exemplars"] == int(ex[y == 3].sum())
    assert mino["over_representation"] > 1  # the hurt class dominates the exemplars
    assert sum(r.by_group.column("share_of_exemplars")) == pytest.approx(1.0)


def test_bad_input():
    with pytest.raises(ShapeError):
        exemplars(dense_preds=np.zeros((2, 5), int), compressed_preds=np.zeros((2, 4), int))
    with pytest.raises(ConfigError):
        exemplars(dense_preds=[0, 1], compressed_preds=[0, 1], method="mode")
    with pytest.raises(ConfigError):
        exemplars(dense_preds=[0, 1], compressed_preds=[0, 1], method="taxicab", fraction=0)
