"""Per-group classification metrics, between-group aggregates and bootstrap intervals.

Everything is computed from confusion matrices, so binary and multiclass tasks share one path:
a multiclass task is read one-vs-rest per class (class ``c`` positive, every other class
negative). Definitions, with ``TP, FP, TN, FN`` the one-vs-rest counts of a class within a group:

* accuracy ``= sum_k C[k, k] / n``; error rate ``= 1 - accuracy``
* TPR (recall) ``= TP / (TP + FN)``; FNR ``= FN / (TP + FN) = 1 - TPR``
* FPR ``= FP / (FP + TN)``; TNR ``= TN / (FP + TN)``
* precision (PPV) ``= TP / (TP + FP)``; NPV ``= TN / (TN + FN)``
* selection rate ``= (TP + FP) / n``; base rate ``= (TP + FN) / n``
* Cohen's kappa ``= (p_o - p_e) / (1 - p_e)``, ``p_o`` the accuracy,
  ``p_e = sum_k (row_k / n)(col_k / n)`` (Cohen 1960)
* AUC: the Mann-Whitney probability that a positive outranks a negative, ties counting 1/2.

A zero denominator gives NaN and an :class:`UndefinedMetricWarning`, never 0. Sources:
Hardt et al. 2016 (equalised odds, equal opportunity), Feldman et al. 2015 (disparate impact),
Chouldechova 2017 (predictive parity), fairlearn's ``MetricFrame`` conventions (Bird et al. 2020).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata

from repsim._core.stats import bootstrap_replicates, percentile_interval
from repsim._core.validation import as_array, as_vector
from repsim.errors import ConfigError, DataError
from repsim.fairness._validate import (
    UndefinedMetricWarning,
    encode,
    encode_groups,
    missing_groups,
    positive_index,
    safe_div,
    warn_undefined,
)
from repsim.fairness.table import MetricTable

#: One-vs-rest rates reported per group (binary) or per group and class (multiclass).
RATE_METRICS = ("tpr", "fpr", "fnr", "tnr", "precision", "npv", "selection_rate", "base_rate")


@dataclass
class GroupMetrics:
    """Result of :func:`group_metrics`.

    Attributes
    ----------
    by_group : MetricTable
        One row per group: ``group, n`` and the metrics (binary: accuracy, the one-vs-rest
        rates of the positive class, kappa, AUC, ``ppv_ratio_to_best``; multiclass: accuracy,
        error rate, kappa). With ``n_boot > 0`` each metric has ``<metric>_ci_low`` and
        ``<metric>_ci_high`` columns.
    by_class : MetricTable or None
        Multiclass only: one-vs-rest rates per class over all samples.
    by_group_class : MetricTable or None
        Multiclass only: one-vs-rest rates per group and class.
    overall : dict
        The same metrics over all samples.
    aggregates : dict of str to float
        Between-group summaries (see :func:`group_metrics`).
    aggregates_ci : dict of str to (float, float), or None
        Percentile bootstrap intervals of the aggregates.
    confusion : dict of str to ndarray
        ``[K, K]`` confusion matrix (rows true, columns predicted, in ``labels`` order) per
        group and under ``"overall"``.
    labels : list
        The class labels, sorted.
    pos_label : object or None
        The positive label of a binary task, else None.
    """

    by_group: MetricTable
    by_class: MetricTable | None
    by_group_class: MetricTable | None
    overall: dict[str, float]
    aggregates: dict[str, float]
    aggregates_ci: dict[str, tuple[float, float]] | None
    confusion: dict[str, np.ndarray]
    labels: list[Any]
    pos_label: Any = None
    group_names: list[str] = field(default_factory=list)

    def aggregate_table(self) -> MetricTable:
        """The aggregates as a tidy table: ``metric, value`` (and CI bounds)."""
        rows = []
        for k, v in self.aggregates.items():
            row: dict[str, Any] = {"metric": k, "value": v}
            if self.aggregates_ci is not None:
                row["ci_low"], row["ci_high"] = self.aggregates_ci.get(k, (np.nan, np.nan))
            rows.append(row)
        return MetricTable(rows)

    def __repr__(self) -> str:
        return (
            f"GroupMetrics(groups={self.group_names}, labels={self.labels}, "
            f"pos_label={self.pos_label!r})\n{self.by_group!r}"
        )


def _confusions(yt: np.ndarray, yp: np.ndarray, g: np.ndarray, k: int, n_groups: int):
    flat = (g * k + yt) * k + yp
    return np.bincount(flat, minlength=n_groups * k * k).reshape(n_groups, k, k).astype(float)


def _ovr(cm: np.ndarray) -> dict[str, np.ndarray]:
    """One-vs-rest rates from confusion matrices ``[..., K, K]`` -> arrays ``[..., K]``."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    row = cm.sum(-1)
    col = cm.sum(-2)
    n = cm.sum((-2, -1))[..., None]
    fn = row - tp
    fp = col - tp
    tn = n - tp - fn - fp
    return {
        "n_pos": row,
        "tpr": safe_div(tp, tp + fn),
        "fpr": safe_div(fp, fp + tn),
        "fnr": safe_div(fn, tp + fn),
        "tnr": safe_div(tn, fp + tn),
        "precision": safe_div(tp, tp + fp),
        "npv": safe_div(tn, tn + fn),
        "selection_rate": safe_div(tp + fp, n),
        "base_rate": safe_div(row, n),
    }


def _accuracy_kappa(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = cm.sum((-2, -1))
    p_o = safe_div(np.trace(cm, axis1=-2, axis2=-1), n)
    p_e = safe_div((cm.sum(-1) * cm.sum(-2)).sum(-1), n**2)
    kappa = safe_div(p_o - p_e, 1.0 - p_e)
    kappa = np.where(np.isclose(p_e, 1.0), np.nan, kappa)
    return p_o, kappa


def _auc(pos: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUC (ties count 1/2); NaN without positives or negatives."""
    n_pos = int(pos.sum())
    n_neg = len(pos) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _aucs(yt, g, scores, k: int, n_groups: int, pos: int | None):
    """AUC per group and class ``[G, K]`` and overall ``[K]``; NaN where undefined."""
    per = np.full((n_groups, k), np.nan)
    overall = np.full(k, np.nan)
    cols = range(k) if scores.ndim == 2 else [pos]
    for c in cols:
        s = scores[:, c] if scores.ndim == 2 else scores
        overall[c] = _auc(yt == c, s)
        for j in range(n_groups):
            m = g == j
            per[j, c] = _auc(yt[m] == c, s[m])
    return per, overall


def _spread(values: np.ndarray, overall: np.ndarray) -> dict[str, np.ndarray]:
    """Between-group difference/ratio and to-overall difference/ratio along axis 0.

    ``values`` is ``[G, ...]``, ``overall`` is ``[...]``. NaN groups are ignored; a column with
    no defined group gives NaN.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        hi = np.nanmax(values, axis=0)
        lo = np.nanmin(values, axis=0)
        dev = np.nanmax(np.abs(values - overall), axis=0)
        pair_hi = np.maximum(values, overall)
        pair_lo = np.minimum(values, overall)
        to_overall = np.nanmin(safe_div(pair_lo, pair_hi), axis=0)
    return {
        "difference": hi - lo,
        "ratio": safe_div(lo, hi),
        "difference_to_overall": dev,
        "ratio_to_overall": to_overall,
    }


def _worst(x: np.ndarray, worst: str) -> float:
    x = np.atleast_1d(np.asarray(x, dtype=float))
    if not np.any(np.isfinite(x)):
        return float("nan")
    return float(np.nanmax(x) if worst == "max" else np.nanmin(x))


def encode_inputs(
    true_raw: np.ndarray,
    pred_raw: np.ndarray,
    groups: Any,
    n: int,
    *,
    labels: Sequence[Any] | None,
    group_names: Sequence[str] | None,
    pos_label: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], np.ndarray, int | None]:
    """Encode labels, predictions and groups as the metrics need them.

    Label codes of true and predicted labels, group codes and names, the sorted labels and
    the positive class's index: the encoding :func:`group_metrics` and
    :func:`repsim.fairness.counts.group_metrics_from_counts` share.
    """
    lab = (
        np.unique(np.concatenate([true_raw, pred_raw]))
        if labels is None
        else np.unique(np.asarray(list(labels)))
    )
    yt = encode(true_raw, lab, "y_true")
    yp = encode(pred_raw, lab, "y_pred")
    g, names = encode_groups(groups, n, group_names)
    return yt, yp, g, names, lab, positive_index(lab, pos_label)


def metrics_from_confusions(
    cm: np.ndarray, k: int, pos: int | None, aucs: tuple[np.ndarray, np.ndarray] | None = None
) -> dict:
    """Every metric and aggregate from per-group confusion matrices ``cm`` ``[G, K, K]``.

    ``aucs``: AUC per group and class ``[G, K]`` and overall ``[K]`` when scores were given.
    """
    cm_all = cm.sum(0)
    ovr_g = _ovr(cm)
    ovr_o = _ovr(cm_all)
    acc_g, kappa_g = _accuracy_kappa(cm)
    acc_o, kappa_o = _accuracy_kappa(cm_all)
    if aucs is not None:
        ovr_g["auc"], ovr_o["auc"] = aucs
    ovr_o["ppv_ratio_to_best"] = np.full(k, np.nan)
    rate_names = [*RATE_METRICS, *(["auc"] if aucs is not None else [])]
    res = {
        "cm": cm,
        "cm_all": cm_all,
        "ovr_g": ovr_g,
        "ovr_o": ovr_o,
        "acc_g": acc_g,
        "acc_o": float(acc_o),
        "kappa_g": kappa_g,
        "kappa_o": float(kappa_o),
        "n_g": cm.sum((1, 2)),
        "rate_names": rate_names,
    }
    res["agg"] = _compute_agg_only(res, k, pos, None)
    return res


def _compute(yt, yp, g, k, n_groups, pos, scores):
    """All metrics for one (possibly resampled) data set, as arrays."""
    cm = _confusions(yt, yp, g, k, n_groups)
    aucs = None if scores is None else _aucs(yt, g, scores, k, n_groups, pos)
    return metrics_from_confusions(cm, k, pos, aucs)


def metrics_result(
    res: dict,
    names: list[str],
    lab: np.ndarray,
    pos: int | None,
    undefined: list[str],
    context: str,
    boot: tuple[dict, dict] | None = None,
) -> GroupMetrics:
    """Assemble a :class:`GroupMetrics` from computed metrics.

    The :class:`GroupMetrics` of computed metrics ``res`` (with bootstrap intervals
    ``boot = (per_group, aggregates)`` when given); warns once about undefined values.
    """
    boot_g, boot_agg = boot if boot is not None else (None, None)
    by_group, by_class, by_group_class, overall = _tables(
        res, names, lab, pos, len(lab), boot_g, undefined
    )
    warn_undefined(undefined, context, stacklevel=4)
    confusion = {names[j]: res["cm"][j].astype(np.int64) for j in range(len(names))}
    confusion["overall"] = res["cm_all"].astype(np.int64)
    return GroupMetrics(
        by_group=by_group,
        by_class=by_class,
        by_group_class=by_group_class,
        overall=overall,
        aggregates=res["agg"],
        aggregates_ci=boot_agg,
        confusion=confusion,
        labels=lab.tolist(),
        pos_label=None if pos is None else lab[pos].item(),
        group_names=names,
    )


def group_metrics(
    *,
    y_true: Any,
    y_pred: Any,
    groups: Any,
    y_score: Any = None,
    group_names: Sequence[str] | None = None,
    labels: Sequence[Any] | None = None,
    pos_label: Any = None,
    min_group_size: int = 1,
    n_boot: int = 0,
    ci: float = 0.95,
    seed: int = 0,
    dropna: bool = False,
) -> GroupMetrics:
    """Per-group classification metrics, between-group gaps, and bootstrap intervals.

    Parameters
    ----------
    y_true, y_pred : array-like, shape ``[n]``
        True and predicted labels (numpy, list or torch).
    groups : array-like, shape ``[n]``, or a container
        Group of each sample (any labels; integer codes with ``group_names``). Passing
        ``y_true`` makes the classes the groups. A ``GroupedData``, torch ``Dataset`` (e.g.
        ``TensorDataset(x, y, g)``) or ``DataLoader`` gives its groups and their names
        (:func:`repsim.data.as_grouped`); as ``y_true`` it gives its labels.
    y_score : array-like, optional
        Scores for AUC: ``[n]`` (score of the positive class, binary) or ``[n, K]``
        (one column per label, in sorted label order).
    group_names : sequence of str, optional
        Names of integer group codes (``GroupedData.group_names``).
    labels : sequence, optional
        All class labels; default the sorted union of ``y_true`` and ``y_pred``.
    pos_label : optional
        Positive label of a binary task; default ``1`` when the labels are ``{0, 1}``, else the
        larger label. Giving ``pos_label`` with more than two labels is an error.
    min_group_size : int
        Groups with fewer samples get NaN metrics (with a warning) and are left out of the
        aggregates.
    n_boot : int
        Bootstrap replicates for percentile intervals (0: none). Samples are redrawn with
        replacement within each group, so group sizes stay fixed.
    ci : float
        Confidence level of the intervals.
    seed : int
        Seed of the bootstrap.
    dropna : bool
        Leave out samples whose group label is ``None`` or NaN (with a warning); without it
        such labels raise ``DataError``.

    Returns
    -------
    GroupMetrics
        Tables per group (and per group and class for multiclass tasks), overall metrics,
        confusion matrices and these aggregates, over groups ``g`` with metric value ``m_g``
        and overall value ``m``:

        * ``<m>_difference = max_g m_g - min_g m_g``; ``<m>_ratio = min_g m_g / max_g m_g``
        * ``<m>_difference_to_overall = max_g |m_g - m|``;
          ``<m>_ratio_to_overall = min_g min(m_g, m) / max(m_g, m)`` (fairlearn's
          ``method="to_overall"``)
        * ``worst_group_accuracy = min_g accuracy_g``
        * ``demographic_parity_difference/ratio``: of the selection rate (Calders & Verwer 2010)
        * ``equalized_odds_difference = max(tpr_difference, fpr_difference)``,
          ``equalized_odds_ratio = min(tpr_ratio, fpr_ratio)`` (Hardt et al. 2016; fairlearn)
        * ``equal_opportunity_difference = tpr_difference`` (Hardt et al. 2016)
        * ``predictive_parity_difference = precision_difference`` (Chouldechova 2017)
        * ``disparate_impact = min_g SR_g / max_g SR_g``, the selection-rate ratio (Feldman et
          al. 2015, the "80% rule")
        * ``disparate_impact_ppv = min_g PPV_g / max_g' PPV_g'``: each group's precision as a
          share of the best group's, the seed term paper's "disparate impact"
        * ``cohen_kappa`` over all samples, ``cohen_kappa_difference`` between groups.

        For a multiclass task the rate aggregates take, per class, the gap between groups of
        that class's one-vs-rest rate, then the worst class (largest difference, smallest
        ratio).

    Raises
    ------
    ShapeError
        Mismatched lengths or shapes.
    DataError
        Labels outside ``labels``, a bad ``pos_label``, missing group labels without
        ``dropna``.
    ConfigError
        ``min_group_size`` is not a positive integer.
    """
    from repsim.data.adapt import as_grouped, group_labels, is_container

    if is_container(y_true):  # a GroupedData, Dataset or DataLoader: its labels
        y_true = as_grouped(y_true, require_groups=False, what="y_true").y
    found = group_labels(groups)  # a container: its group codes and names
    if found is not None:
        groups, group_names = found[0], group_names or found[1]
    yt_raw = as_vector(y_true, "y_true")
    n = len(yt_raw)
    if n == 0:
        raise DataError("y_true is empty.")
    yp_raw = as_vector(y_pred, "y_pred", n, against="y_true")
    _check_min_group_size(min_group_size)
    keep = missing_groups(groups, n, dropna=dropna, context="group_metrics")
    if keep is not None:
        yt_raw, yp_raw = yt_raw[keep], yp_raw[keep]
        groups = as_vector(groups, "groups", n)[keep]
        if y_score is not None:
            y_score = as_array(y_score, "y_score", ndim=(1, 2), n=n, against="y_true")[keep]
        n = len(yt_raw)
    yt, yp, g, names, lab, pos = encode_inputs(
        yt_raw, yp_raw, groups, n, labels=labels, group_names=group_names, pos_label=pos_label
    )
    k, n_groups = len(lab), len(names)
    scores = None
    if y_score is not None:
        scores = as_array(
            y_score, "y_score", ndim=(1, 2), n=n, against="y_true", dtype=float, finite=True
        )
        if scores.ndim == 2 and scores.shape[1] != k:
            raise DataError(f"y_score has {scores.shape[1]} columns but there are {k} labels.")
        if scores.ndim == 1 and pos is None:
            raise DataError("a multiclass task needs y_score of shape [n, n_classes].")

    res = _compute(yt, yp, g, k, n_groups, pos, scores)
    res, small, undefined = apply_min_group_size(res, names, min_group_size, k, pos, scores)

    boot = None
    if n_boot > 0:
        boot = _bootstrap(yt, yp, g, k, n_groups, pos, scores, n_boot, ci, seed, small)
    return metrics_result(res, names, lab, pos, undefined, "group_metrics", boot)


def _check_min_group_size(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"min_group_size must be a positive integer, got {value!r}.")


def apply_min_group_size(
    res: dict, names: Sequence[str], min_group_size: int, k: int, pos: int | None, scores: Any
) -> tuple[dict, np.ndarray, list[str]]:
    """Blank the groups smaller than ``min_group_size`` (NaN) and recompute the aggregates.

    Returns the results, the boolean mask of small groups, and one message per small group for
    the undefined-metric warning.
    """
    small = res["n_g"] < min_group_size
    undefined: list[str] = []
    if np.any(small):
        undefined = [
            f"group {names[j]!r} (n={int(res['n_g'][j])} < min_group_size={min_group_size})"
            for j in np.flatnonzero(small)
        ]
        res = _blank_small(res, small)
        res["agg"] = _compute_agg_only(res, k, pos, scores)
    return res, small, undefined


def _blank_small(res: dict, small: np.ndarray) -> dict:
    for key in ("acc_g", "kappa_g"):
        res[key] = np.where(small, np.nan, res[key])
    for m, v in res["ovr_g"].items():
        if m != "n_pos":
            v[small] = np.nan
    return res


def _compute_agg_only(res: dict, k: int, pos, scores) -> dict[str, float]:
    """Aggregates from the per-group arrays (also after small groups were blanked)."""
    ovr_g, ovr_o = res["ovr_g"], res["ovr_o"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        best_ppv = np.nanmax(ovr_g["precision"], axis=0)
    ovr_g["ppv_ratio_to_best"] = safe_div(ovr_g["precision"], best_ppv[None, :])
    agg: dict[str, float] = {}
    for name, v in _spread(res["acc_g"], res["acc_o"]).items():
        agg[f"accuracy_{name}"] = float(v)
    agg["worst_group_accuracy"] = _worst(res["acc_g"], "min")
    agg["worst_group_error_rate"] = 1.0 - agg["worst_group_accuracy"]
    agg["cohen_kappa"] = res["kappa_o"]
    agg["cohen_kappa_difference"] = float(_spread(res["kappa_g"], res["kappa_o"])["difference"])
    cls = [pos] if pos is not None else list(range(k))
    spreads = {m: _spread(ovr_g[m][:, cls], ovr_o[m][cls]) for m in res["rate_names"]}
    for m in res["rate_names"]:
        for name, v in spreads[m].items():
            agg[f"{m}_{name}"] = _worst(v, "min" if "ratio" in name else "max")
    agg["demographic_parity_difference"] = agg["selection_rate_difference"]
    agg["demographic_parity_ratio"] = agg["selection_rate_ratio"]
    agg["equalized_odds_difference"] = _worst(
        np.maximum(spreads["tpr"]["difference"], spreads["fpr"]["difference"]), "max"
    )
    agg["equalized_odds_ratio"] = _worst(
        np.minimum(spreads["tpr"]["ratio"], spreads["fpr"]["ratio"]), "min"
    )
    agg["equal_opportunity_difference"] = agg["tpr_difference"]
    agg["predictive_parity_difference"] = agg["precision_difference"]
    agg["disparate_impact"] = agg["selection_rate_ratio"]
    agg["disparate_impact_ppv"] = _worst(ovr_g["ppv_ratio_to_best"][:, cls], "min")
    return agg


def _bootstrap(yt, yp, g, k, n_groups, pos, scores, n_boot, ci, seed, small):
    """Percentile intervals of every per-group metric and aggregate, resampling within groups."""

    def replicate(idx: np.ndarray) -> tuple[dict, dict]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = _compute(
                yt[idx], yp[idx], g[idx], k, n_groups, pos, None if scores is None else scores[idx]
            )
            if np.any(small):
                r = _blank_small(r, small)
                r["agg"] = _compute_agg_only(r, k, pos, scores)
        # keep only what the intervals need (not the [G, K, K] confusion matrices)
        return {"accuracy": r["acc_g"], "kappa": r["kappa_g"], **r["ovr_g"]}, r["agg"]

    members = [np.flatnonzero(g == j) for j in range(n_groups)]
    samples_g: dict[str, list[np.ndarray]] = {}
    samples_agg: dict[str, list[float]] = {}
    for per_group, agg in bootstrap_replicates(replicate, members, n_boot=n_boot, seed=seed):
        for m, v in per_group.items():
            samples_g.setdefault(m, []).append(v)
        for m, v in agg.items():
            samples_agg.setdefault(m, []).append(v)
    boot_g = {m: percentile_interval(np.stack(v), ci, axis=0) for m, v in samples_g.items()}
    boot_agg = {}
    for m, v in samples_agg.items():
        lo, hi = percentile_interval(v, ci)
        boot_agg[m] = (float(lo), float(hi))
    return boot_g, boot_agg


def _tables(res, names, lab, pos, k, boot_g, undefined):
    n_groups = len(names)
    ovr_g, ovr_o = res["ovr_g"], res["ovr_o"]
    rate_cols = [*res["rate_names"], "ppv_ratio_to_best"]

    def add_ci(row, metric, j, c=None):
        if boot_g is None or metric not in boot_g:
            return
        lo, hi = boot_g[metric]
        row[f"{metric}_ci_low"] = float(lo[j] if c is None else lo[j, c])
        row[f"{metric}_ci_high"] = float(hi[j] if c is None else hi[j, c])

    group_rows = []
    for j in range(n_groups):
        row: dict[str, Any] = {"group": names[j], "n": int(res["n_g"][j])}
        row["accuracy"] = float(res["acc_g"][j])
        add_ci(row, "accuracy", j)
        if pos is None:
            row["error_rate"] = 1.0 - row["accuracy"]
        else:
            row["n_pos"] = int(ovr_g["n_pos"][j, pos])
            for m in rate_cols:
                row[m] = float(ovr_g[m][j, pos])
                add_ci(row, m, j, pos)
        row["kappa"] = float(res["kappa_g"][j])
        add_ci(row, "kappa", j)
        group_rows.append(row)
    by_group = MetricTable(group_rows)
    _collect_nan(by_group, ("group",), undefined)

    overall: dict[str, float] = {
        "n": int(res["n_g"].sum()),
        "accuracy": res["acc_o"],
        "kappa": res["kappa_o"],
    }
    by_class = by_group_class = None
    if pos is not None:
        for m in res["rate_names"]:
            overall[m] = float(ovr_o[m][pos])
    else:
        class_rows = [
            {
                "class": lab[c].item(),
                "n_pos": int(ovr_o["n_pos"][c]),
                **{m: float(ovr_o[m][c]) for m in res["rate_names"]},
            }
            for c in range(k)
        ]
        by_class = MetricTable(class_rows)
        _collect_nan(by_class, ("class",), undefined)
        gc_rows = []
        for j in range(n_groups):
            for c in range(k):
                row = {
                    "group": names[j],
                    "class": lab[c].item(),
                    "n": int(res["n_g"][j]),
                    "n_pos": int(ovr_g["n_pos"][j, c]),
                }
                for m in rate_cols:
                    row[m] = float(ovr_g[m][j, c])
                    add_ci(row, m, j, c)
                gc_rows.append(row)
        by_group_class = MetricTable(gc_rows)
        _collect_nan(by_group_class, ("group", "class"), undefined)
    return by_group, by_class, by_group_class, overall


def _collect_nan(table: MetricTable, keys: tuple[str, ...], undefined: list[str]) -> None:
    for r in table.rows:
        bad = [
            c
            for c, v in r.items()
            if isinstance(v, float) and np.isnan(v) and not c.endswith(("_ci_low", "_ci_high"))
        ]
        if bad:
            where = "/".join(f"{r[k]}" for k in keys)
            undefined.append(f"{where}: {', '.join(bad)}")


__all__ = ["GroupMetrics", "UndefinedMetricWarning", "group_metrics"]
