"""Numbers, labels and configuration roles for humans: one home for the report's wording.

* :func:`number`: ``8442000.0`` -> ``"8.44×10⁶"``, ``0.01234`` -> ``"0.0123"``; no ``e+06``.
* :func:`pvalue`: ``0.0004`` -> ``"< 0.001"``.
* :func:`interval`: ``"0.12 [0.05, 0.19]"``.
* :func:`role` / :func:`grouped_configs`: which configurations are controls and the order that
  puts each control beside what it controls.
* :func:`collapsed`: configurations whose accuracy is near chance (rule in its docstring).
* :data:`METRIC_LABELS`: axis and column labels with units and definitions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from repsim.explain._tables import control_role, split_method

_SUP = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


#: Human labels, with units and definitions, of the bias metrics.
METRIC_LABELS = {
    "cev": "CEV (variance of relative FPR/FNR change, unitless)",
    "sde": "SDE (mean distance from y = x, unitless)",
    "worst_group_drop": "worst-group accuracy drop (dense − compressed, fraction)",
    "accuracy": "accuracy (fraction correct)",
    "accuracy_drop": "accuracy drop (dense − compressed, fraction)",
}

#: Short names of the bias metrics, for sentences.
METRIC_SHORT = {
    "cev": "CEV",
    "sde": "SDE",
    "worst_group_drop": "worst-group accuracy drop",
    "accuracy_drop": "accuracy drop",
}

CORRECTION_NAMES = {
    "holm": "Holm",
    "bh": "Benjamini-Hochberg",
    "fdr_bh": "Benjamini-Hochberg",
    "bonferroni": "Bonferroni",
    "none": "uncorrected",
}


def finite(v: Any) -> bool:
    """True for a real number that is neither NaN nor infinite (bools and None excluded)."""
    if v is None or isinstance(v, bool):
        return False
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def number(v: Any, digits: int = 3) -> str:
    """A number as a person writes it: ``digits`` significant digits, ``×10ⁿ`` beyond 1e5.

    ``None`` -> ``""``, NaN -> ``"NaN"``, integers unchanged, ``|v| >= 1e5`` or
    ``0 < |v| < 1e-3`` as ``m×10ⁿ``, thousands with a comma separator.
    """
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1e5 or a < 1e-3:
        exp = int(math.floor(math.log10(a)))
        mant = x / 10**exp
        if round(abs(mant), digits - 1) >= 10:
            mant, exp = mant / 10, exp + 1
        return f"{mant:.{digits - 1}f}×10{str(exp).translate(_SUP)}"
    if a >= 1000:
        return f"{x:,.0f}"
    dec = max(0, digits - 1 - int(math.floor(math.log10(a))))
    text = f"{x:.{dec}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def signed(v: Any, digits: int = 3) -> str:
    """:func:`number` with an explicit sign (``+0.12``, ``−0.05``)."""
    s = number(v, digits)
    if not finite(v):
        return s
    return ("+" + s) if float(v) >= 0 else "−" + s.lstrip("-")


def pvalue(p: Any) -> str:
    """``"< 0.001"``, ``"0.0312"`` or ``"NaN"``."""
    if not finite(p):
        return "NaN"
    p = float(p)
    if p < 0.001:
        return "< 0.001"
    return f"{p:.2g}" if p < 0.01 else f"{p:.3f}".rstrip("0").rstrip(".") or "0"


def interval(est: Any, low: Any, high: Any, digits: int = 3, sign: bool = False) -> str:
    """``"est [low, high]"``; ``"undefined"`` for a NaN estimate."""
    if not finite(est):
        return "undefined"
    f = signed if sign else number
    return f"{f(est, digits)} [{f(low, digits)}, {f(high, digits)}]"


def correction_name(name: Any) -> str:
    """``"holm"`` -> ``"Holm"`` (unknown names returned as given)."""
    return CORRECTION_NAMES.get(str(name), str(name))


def metric_short(metric: str) -> str:
    """``"cev"`` -> ``"CEV"``, ``"acc_drop:min"`` -> ``"accuracy drop of group min"``."""
    if metric.startswith("acc_drop:"):
        return f"accuracy drop of group {metric.split(':', 1)[1]}"
    return METRIC_SHORT.get(metric, metric)


def metric_label(metric: str) -> str:
    """Axis label with unit/definition for a bias metric or accuracy column."""
    if metric.startswith("acc_drop:"):
        return f"accuracy drop of group {metric.split(':', 1)[1]} (dense − compressed, fraction)"
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def role(method: Any, row: Mapping[str, Any] | None = None) -> str:
    """A configuration's role, as the report shows it.

    ``row["role"]`` when the study wrote one (a study that asks for random pruning as a method
    marks it ``"compressed"``), else what the method label says
    (:func:`repsim.explain.control_role`).
    """
    if row is not None and row.get("role"):
        return str(row["role"])
    return control_role(method)


def is_control(method: Any) -> bool:
    """True for a recovery-only or random-pruning control's method label."""
    return role(method) != "compressed"


def config_label(method: Any, sparsity: Any) -> str:
    """``"method@sparsity"`` as :mod:`repsim.explain` writes per-configuration keys."""
    return f"{method}@{sparsity}"


def _sp(v: Any) -> float:
    return float(v) if finite(v) else 0.0


def grouped_configs(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Configuration rows ordered so that each control sits beside what it controls.

    Per recovery recipe (``ft``, ``kd``, ...): the recovery-only control (sparsity 0) first,
    then per sparsity the compressed methods followed by the random-pruning control at that
    sparsity. Rows need ``method`` and ``sparsity``; unknown layouts keep their order.
    """
    rows = list(rows)
    recs = list(dict.fromkeys(split_method(r["method"])[1] or "" for r in rows))
    rank = {"recovery-only control": 0, "compressed": 1, "random-pruning control": 2}

    def key(ir: tuple[int, Mapping[str, Any]]) -> tuple[Any, ...]:
        i, r = ir
        rl = role(r["method"])
        return (
            recs.index(split_method(r["method"])[1] or ""),
            0 if rl == "recovery-only control" else 1,
            _sp(r["sparsity"]),
            rank[rl],
            i,
        )

    return [r for _, r in sorted(enumerate(rows), key=key)]


def chance_level(n_classes: Any) -> float:
    """``1 / n_classes``; NaN when unknown."""
    return 1.0 / int(n_classes) if finite(n_classes) and int(n_classes) > 0 else math.nan


def collapse_threshold(dense_accuracy: Any, n_classes: Any, share: float = 0.1) -> float:
    """Accuracy below which a model counts as collapsed.

    ``chance + share * (dense - chance)``: a model that keeps less than ``share`` (10%) of
    the dense model's margin over chance (``chance = 1 / n_classes``) has collapsed. NaN when
    the dense accuracy or the number of classes is unknown.
    """
    c = chance_level(n_classes)
    if not (finite(dense_accuracy) and finite(c)):
        return math.nan
    return c + share * (float(dense_accuracy) - c)


def collapsed(
    configs: Sequence[Mapping[str, Any]], dense_accuracy: Any, n_classes: Any
) -> set[tuple[Any, Any]]:
    """``(method, sparsity)`` of configurations whose mean accuracy is below the collapse line."""
    t = collapse_threshold(dense_accuracy, n_classes)
    if not finite(t):
        return set()
    return {
        (c["method"], c["sparsity"])
        for c in configs
        if finite(c.get("accuracy")) and float(c["accuracy"]) < t
    }


def seeds_text(ns: Iterable[Any], few: int = 5) -> str:
    """``"3 seeds"`` / ``"2–3 seeds"``, with ``", few seeds"`` when any is below ``few``."""
    vals = sorted({int(n) for n in ns if finite(n)})
    if not vals:
        return "no seeds"
    core = f"{vals[0]}" if len(vals) == 1 else f"{vals[0]}–{vals[-1]}"
    unit = "seed" if vals[-1] == 1 else "seeds"
    flag = f"; few seeds (< {few})" if vals[0] < few else ""
    return f"{core} {unit}{flag}"
