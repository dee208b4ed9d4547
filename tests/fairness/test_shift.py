"""compression_shift: CEV/SDE conventions, hand-worked values, Hooker test, BiasAmp."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from repsim.errors import ConfigError, DataError, InsufficientDataError, ShapeError
from repsim.fairness import (
    UndefinedMetricWarning,
    bias_amplification,
    cev_sde,
    compression_shift,
    per_class_test,
)


def _population(rng, y, n_models, acc, k):
    out = []
    for _ in range(n_models):
        wrong = rng.random(len(y)) > acc
        out.append(np.where(wrong, (y + rng.integers(1, k, len(y))) % k, y))
    return np.stack(out)


def test_cev_sde_hand_worked():
    d_fpr = np.array([10.0, -10.0, 30.0])
    d_fnr = np.array([0.0, 20.0, 40.0])
    cev, sde = cev_sde(d_fpr, d_fnr, convention="2021")
    var_fpr = np.mean((d_fpr - 10.0) ** 2)  # 800/3
    var_fnr = np.mean((d_fnr - 20.0) ** 2)  # 800/3
    assert cev == pytest.approx((var_fpr + var_fnr) / 2)
    assert sde == pytest.approx((10 + 30 + 10) / 3 / np.sqrt(2))


def test_conventions_relate_exactly():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 500)
    dense = _population(rng, y, 3, 0.9, 5)
    comp = _population(rng, y, 4, 0.7, 5)
    a = compression_shift(y_true=y, dense_preds=dense, compressed_preds=comp)
    b = compression_shift(y_true=y, dense_preds=dense, compressed_preds=comp, convention="2022")
    assert a.cev == pytest.approx(5000 * b.cev, rel=1e-12)
    assert a.sde == pytest.approx(100 / np.sqrt(2) * b.sde, rel=1e-12)
    np.testing.assert_allclose(
        a.per_class.column("delta_fpr"), 100 * b.per_class.column("delta_fpr")
    )


def test_rates_are_population_means_and_formula_from_scratch():
    rng = np.random.default_rng(1)
    k = 3
    y = rng.integers(0, k, 300)
    dense = _population(rng, y, 2, 0.9, k)
    comp = _population(rng, y, 3, 0.75, k)
    r = compression_shift(y_true=y, dense_preds=dense, compressed_preds=comp)

    def rates(preds):
        fpr, fnr = np.zeros(k), np.zeros(k)
        for c in range(k):
            fp = np.sum((preds == c) & (y != c))
            tn = np.sum((preds != c) & (y != c))
            fn = np.sum((preds != c) & (y == c))
            tp = np.sum((preds == c) & (y == c))
            fpr[c], fnr[c] = fp / (fp + tn), fn / (fn + tp)
        return fpr, fnr

    fd = np.mean([rates(m)[0] for m in dense], axis=0)
    nd = np.mean([rates(m)[1] for m in dense], axis=0)
    fc = np.mean([rates(m)[0] for m in comp], axis=0)
    nc = np.mean([rates(m)[1] for m in comp], axis=0)
    dfpr = 100 * (fc - fd) / fd
    dfnr = 100 * (nc - nd) / nd
    cev = (np.sum((dfpr - dfpr.mean()) ** 2) + np.sum((dfnr - dfnr.mean()) ** 2)) / (2 * k)
    sde = np.mean(np.abs(dfpr - dfnr)) / np.sqrt(2)
    assert r.cev == pytest.approx(cev) and r.sde == pytest.approx(sde)
    np.testing.assert_allclose(r.per_class.column("dense_fpr"), fd)
    np.testing.assert_allclose(r.per_class.column("compressed_fnr"), nc)


def test_zero_baseline_nan_warning_and_eps():
    y = np.array([0, 0, 1, 1, 2, 2])
    dense = np.array([0, 0, 1, 1, 2, 1])  # class 0 perfect: FPR_0 = FNR_0 = 0
    comp = np.array([0, 1, 1, 1, 2, 0])
    with pytest.warns(UndefinedMetricWarning, match="class 0"):
        r = compression_shift(y_true=y, dense_preds=dense, compressed_preds=comp)
    assert np.isnan(r.per_class.row(**{"class": 0})["delta_fnr"])
    assert np.isnan(r.cev) and np.isnan(r.sde)  # never a number over fewer classes by default
    y3 = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    dense3 = np.array([0, 0, 0, 1, 1, 2, 2, 2, 1])  # class 0 perfect, 1 and 2 not
    comp3 = np.array([0, 1, 0, 1, 2, 2, 2, 1, 1])
    with pytest.warns(UndefinedMetricWarning, match="class 0"):
        dropped = compression_shift(
            y_true=y3, dense_preds=dense3, compressed_preds=comp3, on_undefined="drop"
        )
    assert 0 not in dropped.classes_used and np.isfinite(dropped.cev)
    d = dropped.per_class
    kept = [1, 2]
    a = np.array([d.row(**{"class": c})["delta_fpr"] for c in kept])
    b = np.array([d.row(**{"class": c})["delta_fnr"] for c in kept])
    assert dropped.cev == pytest.approx((np.var(a) + np.var(b)) / 2)
    r2 = compression_shift(y_true=y, dense_preds=dense, compressed_preds=comp, eps=0.01)
    # FNR_0 goes 0 -> 0.5: change = 100 * 0.5 / 0.01
    assert r2.per_class.row(**{"class": 0})["delta_fnr"] == pytest.approx(5000.0)
    assert 0 in r2.classes_used


def test_hooker_test_matches_scipy_and_flags_hurt_class():
    rng = np.random.default_rng(2)
    k = 4
    y = np.repeat(np.arange(k), 100)
    dense = _population(rng, y, 5, 0.95, k)
    comp = _population(rng, y, 5, 0.95, k)
    comp[:, y == 3] = np.where(rng.random((5, 100)) < 0.4, 0, 3)  # class 3 hurt
    r = compression_shift(y_true=y, dense_preds=dense, compressed_preds=comp, correction="holm")
    t = r.per_class_test
    row = t.row(**{"class": 3})
    assert row["significant"] and row["direction"] == "hurt"

    def rel(pop):
        return np.array(
            [[np.mean(m[y == c] == c) - np.mean(m == y) for c in range(k)] for m in pop]
        )

    tt = stats.ttest_ind(rel(comp), rel(dense), equal_var=False)
    np.testing.assert_allclose(t.column("p_value"), tt.pvalue)
    # Holm from scratch
    p = tt.pvalue
    order = np.argsort(p)
    holm = np.empty(k)
    holm[order] = np.minimum(np.maximum.accumulate((k - np.arange(k)) * p[order]), 1)
    np.testing.assert_allclose(t.column("p_adjusted"), holm)


def test_bh_and_bonferroni_corrections():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 300)
    dense = _population(rng, y, 4, 0.9, 3)
    comp = _population(rng, y, 4, 0.8, 3)
    base = per_class_test(y_true=y, dense_preds=dense, compressed_preds=comp)
    bonf = per_class_test(
        y_true=y, dense_preds=dense, compressed_preds=comp, correction="bonferroni"
    )
    bh = per_class_test(y_true=y, dense_preds=dense, compressed_preds=comp, correction="fdr_bh")
    p = base.column("p_value")
    np.testing.assert_allclose(bonf.column("p_adjusted"), np.minimum(3 * p, 1))
    np.testing.assert_allclose(bh.column("p_adjusted"), stats.false_discovery_control(p))


def test_single_model_population_errors_for_test():
    y = np.array([0, 1, 0, 1])
    with pytest.raises(InsufficientDataError, match="at least 2 models"):
        per_class_test(y_true=y, dense_preds=y, compressed_preds=np.stack([y, y]))
    r = compression_shift(
        y_true=y,
        dense_preds=y[None].repeat(2, 0) * 0 + y,
        compressed_preds=1 - y,
        test=False,
        eps=0.01,
    )
    assert r.per_class_test is None
    with pytest.raises(InsufficientDataError):
        compression_shift(y_true=y, dense_preds=y, compressed_preds=1 - y, test=True, eps=0.01)


def test_bad_input():
    y = np.array([0, 1, 2, 0])
    with pytest.raises(ShapeError):
        compression_shift(y_true=y, dense_preds=y[:3], compressed_preds=y)
    with pytest.raises(DataError, match="not among the labels"):
        compression_shift(y_true=y, dense_preds=np.array([0, 1, 5, 0]), compressed_preds=y)
    with pytest.raises(ConfigError):
        compression_shift(y_true=y, dense_preds=y, compressed_preds=y, convention="2020")


def test_bias_amplification_hand_worked():
    # groups a/b, classes 0/1; labels: a mostly 1, b mostly 0.
    g = np.array(["a"] * 4 + ["b"] * 4)
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    # predictions exaggerate: a all 1, b all 0
    p = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    # y_at: (a,1),(b,0) positively associated. D(a,1)=1-0.75, D(a,0)=0-0.25,
    # D(b,0)=1-0.75, D(b,1)=0-0.25 -> terms 0.25, 0.25, 0.25, 0.25 -> mean 0.25
    assert bias_amplification(y_true=y, y_pred=p, groups=g) == pytest.approx(0.25)
    assert bias_amplification(y_true=y, y_pred=y, groups=g) == pytest.approx(0.0)
    r = compression_shift(y_true=y, dense_preds=y, compressed_preds=p, groups=g, eps=0.01)
    assert r.bias_amplification["change"] == pytest.approx(0.25)
    assert r.per_group.row(group="a")["accuracy_change"] == pytest.approx(-0.25)
