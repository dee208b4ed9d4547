"""Too little data and missing group labels: never a number that stands for nothing."""

from __future__ import annotations

import numpy as np
import pytest

from repsim.errors import ConfigError, DataError
from repsim.fairness import UndefinedMetricWarning, compression_shift, group_metrics


def _data(seed=0, n=300):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    groups = np.where(rng.random(n) < 0.5, "a", "b").astype(object)
    groups[7] = "tiny"  # a one-sample group
    dense = np.where(rng.random(n) < 0.9, y, 1 - y)
    dense[7] = y[7]
    comp = np.where(rng.random(n) < 0.85, y, 1 - y)
    comp[7] = 1 - y[7]  # the tiny group's only sample flips: accuracy change -1.0
    return y, dense, comp, groups


def test_a_one_sample_group_is_not_the_worst_group():
    from repsim.pipeline.study import _shift_rows

    y, dense, comp, groups = _data()
    with pytest.warns(UndefinedMetricWarning):
        raw = compression_shift(y_true=y, dense_preds=dense, compressed_preds=comp, groups=groups)
    tiny = {r["group"]: r for r in raw.per_group.to_records()}["tiny"]
    assert tiny["accuracy_change"] == -1.0  # what min_group_size guards against
    with pytest.warns(UndefinedMetricWarning, match=r"group 'tiny' \(n=1 < min_group_size=10\)"):
        shift = compression_shift(
            y_true=y, dense_preds=dense, compressed_preds=comp, groups=groups, min_group_size=10
        )
    rows = {r["group"]: r for r in shift.per_group.to_records()}
    assert rows["tiny"]["n"] == 1
    for key in ("dense_accuracy", "compressed_accuracy", "accuracy_change", "delta_fpr"):
        assert np.isnan(rows["tiny"][key])
    assert all(np.isfinite(rows[g]["accuracy_change"]) for g in ("a", "b"))
    for r in shift.per_group_class.to_records():
        if r["group"] == "tiny":
            assert np.isnan(r["dense_fpr"]) and np.isnan(r["compressed_fnr"])
    row, _, _ = _shift_rows(shift)
    assert row["worst_group_drop"] == max(-rows[g]["accuracy_change"] for g in ("a", "b"))
    assert np.isnan(row["acc_drop:tiny"])
    assert np.isfinite(shift.bias_amplification["change"])


def test_group_metrics_apply_min_group_size_to_worst_group_figures():
    y, _, comp, groups = _data()
    with pytest.warns(UndefinedMetricWarning):
        raw = group_metrics(y_true=y, y_pred=comp, groups=groups)
    assert raw.aggregates["worst_group_accuracy"] == 0.0  # the one wrong sample
    with pytest.warns(UndefinedMetricWarning, match="tiny"):
        gm = group_metrics(y_true=y, y_pred=comp, groups=groups, min_group_size=10)
    accs = {r["group"]: r["accuracy"] for r in gm.by_group.to_records()}
    assert np.isnan(accs["tiny"])
    assert gm.aggregates["worst_group_accuracy"] == min(accs["a"], accs["b"])
    assert gm.aggregates["worst_group_error_rate"] == pytest.approx(1 - min(accs["a"], accs["b"]))
    assert gm.aggregates["accuracy_difference"] == pytest.approx(abs(accs["a"] - accs["b"]))
    with pytest.raises(ConfigError, match="min_group_size"):
        group_metrics(y_true=y, y_pred=comp, groups=groups, min_group_size=0)
    with pytest.raises(ConfigError, match="min_group_size"):
        compression_shift(
            y_true=y, dense_preds=comp, compressed_preds=comp, groups=groups, min_group_size=-1
        )


@pytest.mark.parametrize("missing", [None, np.nan])
def test_missing_group_labels_are_an_error_unless_dropna(missing):
    y, dense, comp, groups = _data()
    groups = groups.copy()
    groups[7] = "a"
    if missing is None:
        groups[[3, 4]] = None
    else:
        groups = np.where(groups == "a", 0.0, 1.0)
        groups[[3, 4]] = np.nan
    with pytest.raises(DataError, match="2 of 300 samples have no group label.*dropna=True"):
        group_metrics(y_true=y, y_pred=comp, groups=groups)
    with pytest.raises(DataError, match="no group label"):
        compression_shift(y_true=y, dense_preds=dense, compressed_preds=comp, groups=groups)
    keep = np.ones(len(y), bool)
    keep[[3, 4]] = False
    with pytest.warns(UserWarning, match="left out 2 of 300"):
        gm = group_metrics(y_true=y, y_pred=comp, groups=groups, dropna=True)
    ref = group_metrics(y_true=y[keep], y_pred=comp[keep], groups=groups[keep])
    assert gm.by_group.rows == ref.by_group.rows
    names = {str(r["group"]) for r in gm.by_group.to_records()}
    assert "nan" not in names and "None" not in names
    with pytest.warns(UserWarning, match="left out 2"):
        shift = compression_shift(
            y_true=y, dense_preds=dense, compressed_preds=comp, groups=groups, dropna=True
        )
    assert sum(r["n"] for r in shift.per_group.to_records()) == 298
