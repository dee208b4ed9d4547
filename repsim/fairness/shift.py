"""How compression moves errors between classes and groups.

How compression moves errors between classes and groups: CEV, SDE, bias amplification, and
Hooker et al.'s per-class significance test.

Rates are one-vs-rest per class ``c``: ``FPR_c = FP_c / (FP_c + TN_c)``,
``FNR_c = FN_c / (FN_c + TP_c)``. For a population of models (``[n_models, n]`` predictions)
each rate is the mean of the models' rates.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

from repsim._core.stats import CORRECTIONS, adjust_pvalues
from repsim._core.validation import as_vector
from repsim.errors import ConfigError, DataError, InsufficientDataError
from repsim.fairness._validate import (
    UndefinedMetricWarning,
    as_population,
    encode,
    encode_groups,
    missing_groups,
    safe_div,
    warn_undefined,
)
from repsim.fairness.table import MetricTable

Convention = Literal["2021", "2022"]


@dataclass
class CompressionShift:
    """Result of :func:`compression_shift`.

    Attributes
    ----------
    per_class : MetricTable
        Per class: ``n`` (its samples), dense and compressed FPR, FNR and recall (population
        means), ``delta_fpr``/``delta_fnr`` (relative changes in the convention's unit),
        ``abs_delta_fpr``/``abs_delta_fnr`` (compressed minus dense) and ``accuracy_change``
        (change of the class's recall).
    per_group : MetricTable
        Per group: ``n``, dense/compressed accuracy and their change, and for a binary task the
        positive class's FPR and FNR with their changes. Without ``groups`` it is
        ``per_class`` (the classes are the groups), with a ``group`` column.
    per_group_class : MetricTable or None
        With ``groups``: one-vs-rest rates per group and class.
    cev, sde : float
        Combined error variance and symmetric distance error over the classes whose changes
        are defined (see :func:`compression_shift`).
    convention : str
        ``"2021"`` or ``"2022"``.
    classes_used : list
        The classes that entered CEV and SDE.
    bias_amplification : dict or None
        With ``groups``: ``{"dense", "compressed", "change"}`` of
        :func:`bias_amplification` (population means).
    per_class_test : MetricTable or None
        Hooker et al. (2020) per-class Welch test (see :func:`per_class_test`), when both
        populations hold at least two models.
    n_dense, n_compressed : int
        Population sizes.
    labels : list
        Class labels.
    """

    per_class: MetricTable
    per_group: MetricTable
    per_group_class: MetricTable | None
    cev: float
    sde: float
    convention: str
    classes_used: list[Any]
    bias_amplification: dict[str, float] | None
    per_class_test: MetricTable | None
    n_dense: int
    n_compressed: int
    labels: list[Any]

    def __repr__(self) -> str:
        return (
            f"CompressionShift(convention={self.convention!r}, cev={self.cev:.6g}, "
            f"sde={self.sde:.6g}, n_dense={self.n_dense}, n_compressed={self.n_compressed})\n"
            f"{self.per_class!r}"
        )


def _model_confusions(yt: np.ndarray, preds: np.ndarray, k: int) -> np.ndarray:
    """``[n_models, K, K]`` confusion matrices (rows true, columns predicted)."""
    m = preds.shape[0]
    flat = (np.arange(m)[:, None] * k + yt[None, :]) * k + preds
    return np.bincount(flat.ravel(), minlength=m * k * k).reshape(m, k, k).astype(float)


def _rates(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-model one-vs-rest FPR, FNR, recall ``[M, K]`` and accuracy ``[M]``."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    row = cm.sum(-1)
    col = cm.sum(-2)
    n = cm.sum((-2, -1))
    fn = row - tp
    fp = col - tp
    tn = n[..., None] - tp - fn - fp
    return {
        "fpr": safe_div(fp, fp + tn),
        "fnr": safe_div(fn, fn + tp),
        "recall": safe_div(tp, tp + fn),
        "accuracy": safe_div(tp.sum(-1), n),
    }


def _pop_mean(x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=0)


def relative_change(
    dense: np.ndarray,
    compressed: np.ndarray,
    *,
    convention: Convention = "2021",
    eps: float | None = None,
) -> np.ndarray:
    """Relative change of a rate, ``(compressed - dense) / dense``.

    ``"2021"`` (Blakeney et al. 2021) multiplies by 100 (percent); ``"2022"`` (Blakeney et al.
    2022) keeps the fraction. A zero baseline gives NaN; with ``eps`` the denominator is
    ``max(dense, eps)`` instead, so non-zero baselines above ``eps`` are unchanged.
    """
    dense = np.asarray(dense, dtype=float)
    compressed = np.asarray(compressed, dtype=float)
    den = dense if eps is None else np.maximum(dense, eps)
    scale = 100.0 if convention == "2021" else 1.0
    return scale * safe_div(compressed - dense, den)


def cev_sde(
    delta_fpr: np.ndarray, delta_fnr: np.ndarray, *, convention: Convention = "2021"
) -> tuple[float, float]:
    """Combined error variance and symmetric distance error from per-class changes.

    With ``C`` classes and relative changes ``dFPR_c``, ``dFNR_c`` (population variances,
    ``ddof = 0``):

    * 2021 (Blakeney et al. 2021, "Simon Says"; changes in percent):
      ``CEV = (1 / 2C) sum_c [(dFPR_c - mean dFPR)^2 + (dFNR_c - mean dFNR)^2]`` and
      ``SDE = (1 / C) sum_c |dFPR_c - dFNR_c| / sqrt(2)``;
    * 2022 (Blakeney et al. 2022, "Measuring bias and fairness in multiclass
      classification"; fractional changes): ``CEV = Var(dFPR) + Var(dFNR)`` and
      ``SDE = (1 / C) sum_c |dFPR_c - dFNR_c|``.

    Hence ``CEV_2021 = 5000 CEV_2022`` and ``SDE_2021 = (100 / sqrt 2) SDE_2022``.
    """
    a = np.asarray(delta_fpr, dtype=float)
    b = np.asarray(delta_fnr, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise DataError("delta_fpr and delta_fnr must be 1-D, of equal non-zero length.")
    var_sum = np.var(a) + np.var(b)
    dist = np.mean(np.abs(a - b))
    if convention == "2021":
        return float(var_sum / 2.0), float(dist / np.sqrt(2.0))
    if convention == "2022":
        return float(var_sum), float(dist)
    raise ConfigError(f"convention must be '2021' or '2022', got {convention!r}.")


def bias_amplification(*, y_true: Any, y_pred: Any, groups: Any) -> float:
    """Directional bias amplification from attribute to task, ``BiasAmp_{A->T}``.

    Wang & Russakovsky (2021), "Directional Bias Amplification", the measure Iofinova et al.
    (2023), "Bias in Pruned Vision Models", track across sparsities. With groups ``a`` (the
    attribute A) and classes ``t`` (the task T):

    ``BiasAmp = 1 / (|A||T|) sum_{a,t} [y_at D_at + (1 - y_at)(-D_at)]``,
    ``y_at = 1[P(A=a, T=t) > P(A=a) P(T=t)]``,
    ``D_at = P(T_hat=t | A=a) - P(T=t | A=a)``,

    all probabilities estimated on the given samples (``y_at`` from ``y_true``). Positive values
    mean the predictions exaggerate the group-class associations in the labels. ``y_pred`` may
    be a population ``[n_models, n]``: the result is the mean over models.
    """
    yt_raw = as_vector(y_true, "y_true")
    n = len(yt_raw)
    preds_raw = as_population(y_pred, "y_pred", n)
    lab = np.unique(yt_raw)
    yt = encode(yt_raw, lab, "y_true")
    preds = encode(preds_raw.ravel(), lab, "y_pred").reshape(preds_raw.shape)
    g, _ = encode_groups(groups, n)
    return float(np.mean(_biasamp(yt, preds, g, len(lab))))


def _biasamp(
    yt: np.ndarray, preds: np.ndarray, g: np.ndarray, k: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """BiasAmp per model; ``groups`` (a mask over group codes) limits the average to them."""
    n_groups = int(g.max()) + 1
    n = len(yt)
    joint = np.bincount(g * k + yt, minlength=n_groups * k).reshape(n_groups, k) / n
    p_a = joint.sum(1)
    p_t = joint.sum(0)
    y_at = joint > np.outer(p_a, p_t)
    p_t_given_a = joint / p_a[:, None]
    out = []
    for row in preds:
        pj = np.bincount(g * k + row, minlength=n_groups * k).reshape(n_groups, k) / n
        delta = pj / p_a[:, None] - p_t_given_a
        terms = np.where(y_at, delta, -delta)
        if groups is not None:
            terms = terms[np.asarray(groups[:n_groups], dtype=bool)]
        out.append(np.mean(terms) if terms.size else np.nan)
    return np.asarray(out)


def per_class_test(
    *,
    y_true: Any,
    dense_preds: Any,
    compressed_preds: Any,
    labels: Sequence[Any] | None = None,
    alpha: float = 0.05,
    correction: str = "none",
) -> MetricTable:
    """Hooker et al. (2020) per-class test of which classes compression hurts.

    For each model ``m`` and class ``c`` the relative recall is ``recall_c^m - accuracy^m``
    (the class's recall minus the model's top-1 accuracy). A two-sided Welch t-test compares
    the dense and the compressed populations' relative recalls per class; a class is
    ``significant`` when its (adjusted) p-value is below ``alpha``. Hooker et al., "Characterising
    Bias in Compressed Models" (2020), use no correction; ``correction`` may be ``"bonferroni"``,
    ``"holm"`` (Holm 1979) or ``"fdr_bh"`` (Benjamini & Hochberg 1995).

    Returns
    -------
    MetricTable
        Per class: ``n``, dense and compressed mean relative recall, their difference
        (compressed minus dense), ``t``, ``p_value``, ``p_adjusted``, ``significant``,
        ``direction`` ("hurt" when the compressed relative recall is lower).

    Raises
    ------
    InsufficientDataError
        A population with fewer than two models (a t-test needs a variance).
    """
    yt, dense, comp, lab = _prepare(y_true, dense_preds, compressed_preds, labels)
    return _per_class_test(yt, dense, comp, lab, alpha, correction)


def _per_class_test(yt, dense, comp, lab, alpha, correction) -> MetricTable:
    if correction not in CORRECTIONS:
        raise ConfigError(f"correction must be one of {CORRECTIONS}, got {correction!r}.")
    for name, pop in (("dense_preds", dense), ("compressed_preds", comp)):
        if pop.shape[0] < 2:
            raise InsufficientDataError(
                f"the per-class test needs at least 2 models in '{name}' (a Welch t-test needs "
                f"a variance), got {pop.shape[0]}; pass predictions as [n_models, n_samples]."
            )
    k = len(lab)
    rd = _rates(_model_confusions(yt, dense, k))
    rc = _rates(_model_confusions(yt, comp, k))
    rel_d = rd["recall"] - rd["accuracy"][:, None]
    rel_c = rc["recall"] - rc["accuracy"][:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t, p = stats.ttest_ind(rel_c, rel_d, axis=0, equal_var=False)
    t = np.asarray(t, dtype=float)
    p = np.asarray(p, dtype=float)
    p_adj = adjust_pvalues(p, correction)
    counts = np.bincount(yt, minlength=k)
    rows = []
    undefined = []
    for c in range(k):
        if not np.isfinite(p[c]):
            undefined.append(
                f"class {lab[c].item()!r}: p_value (zero variance in both populations "
                "or no samples)"
            )
        md, mc = float(np.mean(rel_d[:, c])), float(np.mean(rel_c[:, c]))
        rows.append(
            {
                "class": lab[c].item(),
                "n": int(counts[c]),
                "dense_relative_recall": md,
                "compressed_relative_recall": mc,
                "difference": mc - md,
                "t": float(t[c]),
                "p_value": float(p[c]),
                "p_adjusted": float(p_adj[c]),
                "significant": bool(np.isfinite(p_adj[c]) and p_adj[c] < alpha),
                "direction": "hurt" if mc < md else ("helped" if mc > md else "none"),
            }
        )
    warn_undefined(undefined, "per_class_test", stacklevel=4)
    return MetricTable(rows)


def _prepare(y_true, dense_preds, compressed_preds, labels):
    yt_raw = as_vector(y_true, "y_true")
    n = len(yt_raw)
    if n == 0:
        raise DataError("y_true is empty.")
    d_raw = as_population(dense_preds, "dense_preds", n)
    c_raw = as_population(compressed_preds, "compressed_preds", n)
    lab = np.unique(yt_raw) if labels is None else np.unique(np.asarray(list(labels)))
    yt = encode(yt_raw, lab, "y_true")
    dense = encode(d_raw.ravel(), lab, "dense_preds").reshape(d_raw.shape)
    comp = encode(c_raw.ravel(), lab, "compressed_preds").reshape(c_raw.shape)
    if len(lab) < 2:
        raise DataError("at least two classes are needed for one-vs-rest rates.")
    return yt, dense, comp, lab


def compression_shift(
    *,
    y_true: Any,
    dense_preds: Any,
    compressed_preds: Any,
    groups: Any = None,
    group_names: Sequence[str] | None = None,
    convention: Convention = "2021",
    eps: float | None = None,
    labels: Sequence[Any] | None = None,
    test: bool | None = None,
    alpha: float = 0.05,
    correction: str = "none",
    on_undefined: str = "nan",
    min_group_size: int = 1,
    dropna: bool = False,
) -> CompressionShift:
    """Per-class and per-group error shifts from a dense to a compressed model (or population).

    Parameters
    ----------
    y_true : array-like, shape ``[n]``
        True labels.
    dense_preds, compressed_preds : array-like, ``[n]`` or ``[n_models, n]``
        Predicted labels of one model or of a population (e.g. seeds). Rates are averaged over
        each population's models.
    groups : array-like, optional
        Group per sample for ``per_group`` and bias amplification; default: the classes.
    group_names : sequence of str, optional
        Names of integer group codes.
    convention : {"2021", "2022"}
        CEV/SDE convention (see :func:`cev_sde`); default the 2021 one (Simon Says).
    eps : float, optional
        Floor for zero baseline rates in the relative changes (see :func:`relative_change`).
        Without it a class with a zero dense FPR or FNR has an undefined (NaN) change and a
        warning names it; what that does to CEV and SDE is set by ``on_undefined``.
    on_undefined : {"nan", "drop"}
        ``"nan"`` (default): CEV and SDE are NaN when any class's change is undefined, never a
        number silently computed over fewer classes. ``"drop"``: CEV and SDE are computed over
        the classes whose changes are defined (listed in ``classes_used``; ``C`` is their count).
    labels : sequence, optional
        All classes; default the distinct values of ``y_true``. Predictions outside the labels
        raise ``DataError``; a label with no sample has NaN FNR (warned).
    test : bool, optional
        Run :func:`per_class_test`: ``None`` runs it when both populations hold two or more
        models, ``True`` requires it (raises otherwise), ``False`` skips it.
    alpha, correction
        Passed to :func:`per_class_test`.
    min_group_size : int
        Groups with fewer samples get NaN for every derived figure (accuracies, their change,
        rates and relative changes), with a warning, so a tiny group never becomes the
        worst group; they are left out of the bias amplification too.
    dropna : bool
        Leave out samples whose group label is ``None`` or NaN (with a warning); without it
        such labels raise ``DataError``.

    Returns
    -------
    CompressionShift
    """
    if convention not in ("2021", "2022"):
        raise ConfigError(f"convention must be '2021' or '2022', got {convention!r}.")
    if eps is not None and not eps > 0:
        raise ConfigError(f"eps must be a positive float, got {eps!r}.")
    if (
        isinstance(min_group_size, bool)
        or not isinstance(min_group_size, int | np.integer)
        or min_group_size < 1
    ):
        raise ConfigError(f"min_group_size must be a positive integer, got {min_group_size!r}.")
    if groups is not None:
        yt_all = as_vector(y_true, "y_true")
        n_all = len(yt_all)
        keep = missing_groups(groups, n_all, dropna=dropna, context="compression_shift")
        if keep is not None:
            y_true = yt_all[keep]
            dense_preds = as_population(dense_preds, "dense_preds", n_all)[:, keep]
            compressed_preds = as_population(compressed_preds, "compressed_preds", n_all)[:, keep]
            groups = as_vector(groups, "groups", n_all)[keep]
    yt, dense, comp, lab = _prepare(y_true, dense_preds, compressed_preds, labels)
    k = len(lab)
    n = len(yt)
    undefined: list[str] = []
    rd = _rates(_model_confusions(yt, dense, k))
    rc = _rates(_model_confusions(yt, comp, k))
    mean_d = {m: _pop_mean(v) for m, v in rd.items()}
    mean_c = {m: _pop_mean(v) for m, v in rc.items()}
    d_fpr = relative_change(mean_d["fpr"], mean_c["fpr"], convention=convention, eps=eps)
    d_fnr = relative_change(mean_d["fnr"], mean_c["fnr"], convention=convention, eps=eps)
    counts = np.bincount(yt, minlength=k)
    rows = []
    for c in range(k):
        rows.append(
            {
                "class": lab[c].item(),
                "n": int(counts[c]),
                "dense_fpr": float(mean_d["fpr"][c]),
                "compressed_fpr": float(mean_c["fpr"][c]),
                "dense_fnr": float(mean_d["fnr"][c]),
                "compressed_fnr": float(mean_c["fnr"][c]),
                "delta_fpr": float(d_fpr[c]),
                "delta_fnr": float(d_fnr[c]),
                "abs_delta_fpr": float(mean_c["fpr"][c] - mean_d["fpr"][c]),
                "abs_delta_fnr": float(mean_c["fnr"][c] - mean_d["fnr"][c]),
                "dense_recall": float(mean_d["recall"][c]),
                "compressed_recall": float(mean_c["recall"][c]),
                "accuracy_change": float(mean_c["recall"][c] - mean_d["recall"][c]),
            }
        )
        bad = [
            nm for nm, v in (("delta_fpr", d_fpr[c]), ("delta_fnr", d_fnr[c])) if not np.isfinite(v)
        ]
        if bad:
            undefined.append(f"class {lab[c].item()!r}: {', '.join(bad)}")
    per_class = MetricTable(rows)
    if on_undefined not in ("nan", "drop"):
        raise ConfigError(f"on_undefined must be 'nan' or 'drop', got {on_undefined!r}.")
    ok = np.isfinite(d_fpr) & np.isfinite(d_fnr)
    if on_undefined == "nan" and not ok.all():
        ok = np.zeros_like(ok)
        cev = sde = float("nan")
        undefined.append("CEV and SDE (pass on_undefined='drop' or eps= to define them)")
    elif ok.any():
        cev, sde = cev_sde(d_fpr[ok], d_fnr[ok], convention=convention)
    else:
        cev = sde = float("nan")
        undefined.append("CEV and SDE (no class has defined changes)")

    per_group_class = None
    ba = None
    if groups is None:
        per_group = MetricTable([{"group": str(r["class"]), **r} for r in rows])
    else:
        g, names = encode_groups(groups, n, group_names)
        per_group, per_group_class = _group_tables(
            yt, dense, comp, g, names, lab, convention, eps, undefined, min_group_size
        )
        large = np.bincount(g, minlength=len(names)) >= min_group_size
        bd = float(np.mean(_biasamp(yt, dense, g, k, large)))
        bc = float(np.mean(_biasamp(yt, comp, g, k, large)))
        ba = {"dense": bd, "compressed": bc, "change": bc - bd}

    warn_undefined(
        undefined,
        "compression_shift (a zero dense FPR/FNR makes that class's change "
        "undefined; pass eps= to floor the baseline)",
    )
    table = None
    can_test = dense.shape[0] >= 2 and comp.shape[0] >= 2
    if test or (test is None and can_test):
        table = _per_class_test(yt, dense, comp, lab, alpha, correction)
    return CompressionShift(
        per_class=per_class,
        per_group=per_group,
        per_group_class=per_group_class,
        cev=cev,
        sde=sde,
        convention=convention,
        classes_used=[lab[c].item() for c in np.flatnonzero(ok)],
        bias_amplification=ba,
        per_class_test=table,
        n_dense=int(dense.shape[0]),
        n_compressed=int(comp.shape[0]),
        labels=lab.tolist(),
    )


def _group_tables(yt, dense, comp, g, names, lab, convention, eps, undefined, min_group_size=1):
    k = len(lab)
    binary = k == 2
    group_rows = []
    gc_rows = []
    for j, name in enumerate(names):
        m = g == j
        rd = _rates(_model_confusions(yt[m], dense[:, m], k))
        rc = _rates(_model_confusions(yt[m], comp[:, m], k))
        md = {key: _pop_mean(v) for key, v in rd.items()}
        mc = {key: _pop_mean(v) for key, v in rc.items()}
        if int(m.sum()) < min_group_size:  # too few samples: every derived figure is NaN
            undefined.append(f"group {name!r} (n={int(m.sum())} < min_group_size={min_group_size})")
            md = {key: np.full_like(np.asarray(v, dtype=float), np.nan) for key, v in md.items()}
            mc = {key: np.full_like(np.asarray(v, dtype=float), np.nan) for key, v in mc.items()}
        row: dict[str, Any] = {
            "group": name,
            "n": int(m.sum()),
            "dense_accuracy": float(md["accuracy"]),
            "compressed_accuracy": float(mc["accuracy"]),
            "accuracy_change": float(mc["accuracy"] - md["accuracy"]),
        }
        if binary:
            for rate in ("fpr", "fnr"):
                row[f"dense_{rate}"] = float(md[rate][1])
                row[f"compressed_{rate}"] = float(mc[rate][1])
                row[f"delta_{rate}"] = float(
                    relative_change(md[rate][1], mc[rate][1], convention=convention, eps=eps)
                )
                if not np.isfinite(row[f"delta_{rate}"]):
                    undefined.append(f"group {name!r}: delta_{rate}")
        group_rows.append(row)
        for c in range(k):
            gc_rows.append(
                {
                    "group": name,
                    "class": lab[c].item(),
                    "n_pos": int(np.sum(yt[m] == c)),
                    "dense_fpr": float(md["fpr"][c]),
                    "compressed_fpr": float(mc["fpr"][c]),
                    "dense_fnr": float(md["fnr"][c]),
                    "compressed_fnr": float(mc["fnr"][c]),
                }
            )
    return MetricTable(group_rows), MetricTable(gc_rows)


__all__ = [
    "CompressionShift",
    "UndefinedMetricWarning",
    "bias_amplification",
    "cev_sde",
    "compression_shift",
    "per_class_test",
    "relative_change",
]
