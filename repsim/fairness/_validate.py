"""Label and group encoding shared by the fairness functions.

Array checks (``to_numpy``, ``as_vector``, ``check_consistent_length``) live in
:mod:`repsim._core.validation`; this module holds what is particular to classification
outputs: a population of models' predictions, label and group codes, the positive class, and
NaN-not-zero division with its warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from repsim._core.validation import as_vector, to_numpy
from repsim.errors import DataError, ShapeError, UndefinedMetricWarning


def as_population(x: Any, name: str, n: int | None = None) -> np.ndarray:
    """Predictions as ``[n_models, n]``: a 1-D array is one model.

    Parameters
    ----------
    x : array-like
        ``[n_samples]`` (one model) or ``[n_models, n_samples]`` (a population).
    name : str
        The argument's name, for messages.
    n : int, optional
        The number of samples (``y_true``'s length); without it any positive length is taken.

    Raises
    ------
    ShapeError
        Not 1-D or 2-D, the wrong number of samples, or no model.
    """
    arr = to_numpy(x, name)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ShapeError(
            f"'{name}' must be [n_samples] (one model) or [n_models, n_samples] (a population), "
            f"got shape {arr.shape}."
        )
    if n is None and arr.shape[1] == 0:
        raise ShapeError(f"'{name}' holds predictions for no sample; pass at least one.")
    if n is not None and arr.shape[1] != n:
        raise ShapeError(
            f"'{name}' holds predictions for {arr.shape[1]} samples but y_true has {n}; "
            "predictions must be [n_models, n_samples] in y_true's sample order."
        )
    if arr.shape[0] < 1:
        raise ShapeError(f"'{name}' holds no model.")
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


def missing_groups(groups: Any, n: int, *, dropna: bool, context: str) -> np.ndarray | None:
    """The samples that have a group label, or ``None`` when every sample has one.

    A group label is missing when it is ``None`` or NaN. Without ``dropna`` that is an error
    (a missing label must not become a group called ``"nan"`` or vanish silently); with it the
    samples are left out, with a warning saying how many.

    Returns
    -------
    numpy.ndarray of bool or None
        The mask of samples to keep (``None``: keep all).

    Raises
    ------
    DataError
        Missing group labels without ``dropna``, or with no labelled sample left.
    """
    g = as_vector(groups, "groups", n, against="y_true")
    if g.dtype.kind == "f":
        miss = np.isnan(g)
    elif g.dtype.kind == "O":
        miss = np.fromiter(
            (v is None or (isinstance(v, float | np.floating) and v != v) for v in g),
            dtype=bool,
            count=len(g),
        )
    else:
        return None
    k = int(miss.sum())
    if k == 0:
        return None
    if not dropna:
        raise DataError(
            f"{context}: {k} of {n} samples have no group label (None or NaN). Give every "
            "sample a group, or pass dropna=True to leave those samples out."
        )
    if k == n:
        raise DataError(f"{context}: no sample has a group label (all {n} are None or NaN).")
    warnings.warn(
        f"{context}: left out {k} of {n} samples without a group label (dropna=True).",
        UserWarning,
        stacklevel=3,
    )
    return ~miss


def encode_groups(
    groups: Any, n: int, group_names: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Group codes ``0..G-1`` and a name per code.

    With ``group_names``, integer ``groups`` index into it (as ``GroupedData.groups`` do);
    otherwise the names are the sorted distinct values of ``groups`` as strings.
    """
    g = as_vector(groups, "groups", n, against="y_true")
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
