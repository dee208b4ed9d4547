"""group_metrics: hand-worked examples, fairlearn agreement, NaN rules, bootstrap."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from repsim.errors import DataError, ShapeError
from repsim.fairness import MetricTable, UndefinedMetricWarning, group_metrics

# Hand-worked binary example. Group a: y=[1,1,0,0], p=[1,0,1,0] -> TP1 FN1 FP1 TN1.
# Group b: y=[1,1,1,0,0,0], p=[1,1,1,1,0,0] -> TP3 FN0 FP1 TN2.
Y = np.array([1, 1, 0, 0, 1, 1, 1, 0, 0, 0])
P = np.array([1, 0, 1, 0, 1, 1, 1, 1, 0, 0])
G = np.array(["a"] * 4 + ["b"] * 6)


def test_hand_worked_binary():
    r = group_metrics(y_true=Y, y_pred=P, groups=G)
    a, b = r.by_group.row(group="a"), r.by_group.row(group="b")
    assert a["n"] == 4 and b["n"] == 6
    assert a["accuracy"] == pytest.approx(0.5) and b["accuracy"] == pytest.approx(5 / 6)
    assert a["tpr"] == pytest.approx(0.5) and b["tpr"] == pytest.approx(1.0)
    assert a["fpr"] == pytest.approx(0.5) and b["fpr"] == pytest.approx(1 / 3)
    assert a["fnr"] == pytest.approx(0.5) and b["fnr"] == pytest.approx(0.0)
    assert a["precision"] == pytest.approx(0.5) and b["precision"] == pytest.approx(0.75)
    assert a["npv"] == pytest.approx(0.5) and b["npv"] == pytest.approx(1.0)
    assert a["selection_rate"] == pytest.approx(0.5) and b["selection_rate"] == pytest.approx(4 / 6)
    agg = r.aggregates
    assert agg["worst_group_accuracy"] == pytest.approx(0.5)
    assert agg["accuracy_difference"] == pytest.approx(5 / 6 - 0.5)
    assert agg["demographic_parity_difference"] == pytest.approx(4 / 6 - 0.5)
    assert agg["demographic_parity_ratio"] == pytest.approx(0.5 / (4 / 6))
    assert agg["disparate_impact"] == pytest.approx(0.5 / (4 / 6))
    assert agg["equal_opportunity_difference"] == pytest.approx(0.5)
    assert agg["equalized_odds_difference"] == pytest.approx(max(0.5, 0.5 - 1 / 3))
    assert agg["predictive_parity_difference"] == pytest.approx(0.25)
    assert agg["disparate_impact_ppv"] == pytest.approx(0.5 / 0.75)
    assert a["ppv_ratio_to_best"] == pytest.approx(0.5 / 0.75) and b["ppv_ratio_to_best"] == 1
    # to overall: overall accuracy 7/10
    assert agg["accuracy_difference_to_overall"] == pytest.approx(0.2)
    assert agg["accuracy_ratio_to_overall"] == pytest.approx(0.5 / 0.7)
    np.testing.assert_array_equal(r.confusion["a"], [[1, 1], [1, 1]])
    np.testing.assert_array_equal(r.confusion["b"], [[2, 1], [0, 3]])
    assert r.aggregates["cohen_kappa"] == pytest.approx(cohen_kappa_score(Y, P))


def test_inputs_as_lists_and_tensors_agree():
    r1 = group_metrics(y_true=Y, y_pred=P, groups=G)
    r2 = group_metrics(y_true=torch.tensor(Y), y_pred=list(P), groups=list(G))
    assert r1.aggregates == r2.aggregates


def test_fairlearn_metricframe_agrees():
    fl = pytest.importorskip("fairlearn.metrics")
    rng = np.random.default_rng(1)
    n = 400
    y = rng.integers(0, 2, n)
    p = np.where(rng.random(n) < 0.7, y, 1 - y)
    g = rng.choice(["x", "y", "z"], n, p=[0.5, 0.3, 0.2])
    r = group_metrics(y_true=y, y_pred=p, groups=g)
    from sklearn.metrics import accuracy_score, precision_score

    mf = fl.MetricFrame(
        metrics={
            "accuracy": accuracy_score,
            "selection_rate": fl.selection_rate,
            "tpr": fl.true_positive_rate,
            "fpr": fl.false_positive_rate,
            "fnr": fl.false_negative_rate,
            "precision": precision_score,
        },
        y_true=y,
        y_pred=p,
        sensitive_features=g,
    )
    for name in ("x", "y", "z"):
        row = r.by_group.row(group=name)
        for m in ("accuracy", "selection_rate", "tpr", "fpr", "fnr", "precision"):
            assert row[m] == pytest.approx(mf.by_group.loc[name, m]), (name, m)
    agg = r.aggregates
    assert agg["demographic_parity_difference"] == pytest.approx(
        fl.demographic_parity_difference(y, p, sensitive_features=g)
    )
    assert agg["demographic_parity_ratio"] == pytest.approx(
        fl.demographic_parity_ratio(y, p, sensitive_features=g)
    )
    assert agg["equalized_odds_difference"] == pytest.approx(
        fl.equalized_odds_difference(y, p, sensitive_features=g)
    )
    assert agg["equalized_odds_ratio"] == pytest.approx(
        fl.equalized_odds_ratio(y, p, sensitive_features=g)
    )
    assert agg["accuracy_difference_to_overall"] == pytest.approx(
        mf.difference(method="to_overall")["accuracy"]
    )
    assert agg["accuracy_ratio_to_overall"] == pytest.approx(
        mf.ratio(method="to_overall")["accuracy"]
    )


def test_auc_matches_sklearn_per_group():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    s = y + rng.normal(0, 1.0, 300)
    s[:20] = np.round(s[:20])  # some ties
    p = (s > 0.5).astype(int)
    g = rng.integers(0, 2, 300)
    r = group_metrics(y_true=y, y_pred=p, groups=g, y_score=s, group_names=["u", "v"])
    for j, name in enumerate(["u", "v"]):
        m = g == j
        assert r.by_group.row(group=name)["auc"] == pytest.approx(roc_auc_score(y[m], s[m]))


def test_multiclass_one_vs_rest_and_classes_as_groups():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 0, 2])
    with pytest.warns(UndefinedMetricWarning):
        r = group_metrics(y_true=y, y_pred=p, groups=y)  # classes are the groups
    acc = r.by_group.column("accuracy")
    np.testing.assert_allclose(acc, [0.5, 1.0, 0.5])  # = per-class recall
    c0 = r.by_class.row(**{"class": 0})
    # class 0: TP1 FN1 FP1 TN3
    assert c0["tpr"] == pytest.approx(0.5) and c0["fpr"] == pytest.approx(0.25)
    assert c0["precision"] == pytest.approx(0.5)
    # within group 0 there are no negatives for class 0: FPR undefined -> NaN, never 0
    assert np.isnan(r.by_group_class.row(group="0", **{"class": 0})["fpr"])


def test_empty_denominator_is_nan_with_warning():
    y = np.array([1, 1, 0, 0])
    p = np.array([1, 1, 0, 1])
    g = np.array([0, 0, 1, 1])  # group 0 has no negatives
    with pytest.warns(UndefinedMetricWarning, match="fpr"):
        r = group_metrics(y_true=y, y_pred=p, groups=g)
    assert np.isnan(r.by_group.row(group="0")["fpr"])


def test_min_group_size_blanks_small_groups():
    g = np.array(["a"] * 4 + ["b"] * 6)
    with pytest.warns(UndefinedMetricWarning, match="min_group_size"):
        r = group_metrics(y_true=Y, y_pred=P, groups=g, min_group_size=5)
    assert np.isnan(r.by_group.row(group="a")["accuracy"])
    assert r.aggregates["worst_group_accuracy"] == pytest.approx(5 / 6)


def test_bad_input():
    with pytest.raises(ShapeError):
        group_metrics(y_true=Y, y_pred=P[:-1], groups=G)
    with pytest.raises(ShapeError):
        group_metrics(y_true=Y, y_pred=P, groups=G[:3])
    with pytest.raises(DataError):
        group_metrics(y_true=Y, y_pred=P, groups=G, labels=[0])  # label 1 not listed
    with pytest.raises(DataError):
        group_metrics(y_true=Y, y_pred=P, groups=G, pos_label=7)


def test_bootstrap_deterministic_and_covers_point():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    p = np.where(rng.random(200) < 0.8, y, 1 - y)
    g = rng.integers(0, 2, 200)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UndefinedMetricWarning)
        r1 = group_metrics(y_true=y, y_pred=p, groups=g, n_boot=200, seed=5)
    r2 = group_metrics(y_true=y, y_pred=p, groups=g, n_boot=200, seed=5)
    assert r1.aggregates_ci == r2.aggregates_ci
    lo, hi = r1.aggregates_ci["accuracy_difference"]
    assert lo <= r1.aggregates["accuracy_difference"] <= hi
    row = r1.by_group.rows[0]
    assert row["accuracy_ci_low"] <= row["accuracy"] <= row["accuracy_ci_high"]
    assert isinstance(r1.aggregate_table(), MetricTable)


def test_table_csv_roundtrip(tmp_path):
    r = group_metrics(y_true=Y, y_pred=P, groups=G)
    path = r.by_group.to_csv(tmp_path / "t.csv")
    text = path.read_text().splitlines()
    assert text[0].split(",")[:2] == ["group", "n"]
    assert len(text) == 3
    assert "accuracy" in repr(r.by_group)
