"""Input checks and conversions shared by the fairness functions."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from repsim.errors import DataError, NonFiniteError, ShapeError, UndefinedMetricWarning


def to_numpy(x: Any, name: str) -> np.ndarray:
    """Convert a list, numpy array or torch tensor to a numpy array."""
    if x is None:
        raise DataError(f"'{name}' is required.")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def as_vector(x: Any, name: str, n: int | None = None) -> np.ndarray:
    """A 1-D array of length ``n`` (when given)."""
    arr = to_numpy(x, name)
    if arr.ndim != 1:
        raise ShapeError(f"'{name}' must be 1-D (one entry per sample), got shape {arr.shape}.")
    if n is not None and len(arr) != n:
        raise ShapeError(
            f"'{name}' has {len(arr)} entries but y_true has {n}; pass one entry per sample, "
            "in the same order."
        )
    return arr


def as_population(x: Any, name: str, n: int) -> np.ndarray:
    """Predictions as ``[n_models, n]``: a 1-D array is one model."""
    arr = to_numpy(x, name)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ShapeError(
            f"'{name}' must be [n_samples] (one model) or [n_models, n_samples] (a population), "
            f"got shape {arr.shape}."
        )
    if arr.shape[1] != n:
        raise ShapeError(
            f"'{name}' holds predictions for {arr.shape[1]} samples but y_true has {n}; "
            "predictions must be [n_models, n_samples] in y_true's sample order."
        )
    if arr.shape[0] < 1:
        raise ShapeError(f"'{name}' holds no model.")
    return arr


def check_scores(y_score: Any, n: int) -> np.ndarray:
    """Scores as float ``[n]`` or ``[n, n_classes]``, finite."""
    arr = to_numpy(y_score, "y_score").astype(float)
    if arr.ndim not in (1, 2) or len(arr) != n:
        raise ShapeError(
            f"'y_score' must be [n_samples] or [n_samples, n_classes] with n_samples={n}, "
            f"got shape {arr.shape}."
        )
    if not np.all(np.isfinite(arr)):
        raise NonFiniteError("'y_score' holds NaN or inf values; drop or fix those samples.")
    return arr


def encode(values: np.ndarray, labels: np.ndarray, name: str) -> np.ndarray:
    """Integer codes of ``values`` in ``labels`` (sorted); unknown values raise ``DataError``."""
    idx = np.searchsorted(labels, values)
    idx = np.clip(idx, 0, len(labels) - 1)
    bad = labels[idx] != values
    if np.any(bad):
        unknown = np.unique(values[bad])[:10]
        raise DataError(
            f"'{name}' holds labels {unknown.tolist()} that are not among the labels "
            f"{labels.tolist()}; pass labels= listing every class, or fix the predictions."
        )
    return idx.astype(np.int64)


def encode_groups(
    groups: Any, n: int, group_names: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Group codes ``0..G-1`` and a name per code.

    With ``group_names``, integer ``groups`` index into it (as ``GroupedData.groups`` do);
    otherwise the names are the sorted distinct values of ``groups`` as strings.
    """
    g = as_vector(groups, "groups", n)
    if group_names is not None:
        names = [str(s) for s in group_names]
        if not np.issubdtype(g.dtype, np.integer):
            raise DataError("with group_names, 'groups' must hold integer codes into group_names.")
        if len(g) and (g.min() < 0 or g.max() >= len(names)):
            raise DataError(
                f"group codes must lie in [0, {len(names)}) to index group_names, got "
                f"[{g.min()}, {g.max()}]."
            )
        present = np.unique(g)
        codes_map = np.full(len(names), -1)
        codes_map[present] = np.arange(len(present))
        return codes_map[g].astype(np.int64), [names[i] for i in present]
    uniq, codes = np.unique(g, return_inverse=True)
    return codes.astype(np.int64), [str(u) for u in uniq.tolist()]


def safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with NaN where ``den == 0`` (no numpy warning)."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def warn_undefined(items: list[str], context: str, stacklevel: int = 3) -> None:
    """One warning listing every undefined value (set to NaN)."""
    if not items:
        return
    shown = ", ".join(items[:12]) + (f", ... ({len(items)} in all)" if len(items) > 12 else "")
    warnings.warn(
        f"{context}: undefined (zero denominator or empty group), set to NaN: {shown}.",
        UndefinedMetricWarning,
        stacklevel=stacklevel,
    )


def positive_index(lab: np.ndarray, pos_label: Any = None) -> int | None:
    """Index in ``lab`` of the positive class: ``pos_label``'s, or label 1's for a binary task.

    Returns ``None`` for a multiclass task without ``pos_label`` (metrics are one-vs-rest).

    Raises
    ------
    DataError
        ``pos_label`` with more than two labels or not among them, or a single label.
    """
    k = len(lab)
    if pos_label is not None:
        if k > 2:
            raise DataError(f"pos_label is for binary tasks; there are {k} labels {lab.tolist()}.")
        hits = np.flatnonzero(lab == pos_label)
        if len(hits) == 0:
            raise DataError(f"pos_label {pos_label!r} is not among the labels {lab.tolist()}.")
        return int(hits[0])
    if k == 2:
        return int(np.flatnonzero(lab == 1)[0]) if 1 in lab.tolist() else 1
    if k == 1:
        raise DataError(
            f"only one label ({lab[0]!r}) occurs; pass labels= naming every class of the task."
        )
    return None
