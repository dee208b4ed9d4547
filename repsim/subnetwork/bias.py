"""Bias labels, bias-aligned and bias-conflicting samples, and the loss weights built on them.

A sample is **bias-conflicting** when its (class, bias value) cell is *not* over-represented in
the training data:

    aligned(c, k)  <=>  P_train(b = k | y = c) > P_train(b = k),

i.e. knowing the class makes that bias value more likely than it is overall. With bias values
that mirror the classes (a colour per digit, as in Biased-MNIST) the aligned cells are exactly
the diagonal ``b = y`` used by BISE's code (``is_conflicting = private_label != target``); the
definition extends it to bias attributes with their own codes (Adult: ``sex`` vs ``income``,
where the aligned cells are (>50K, Male) and (<=50K, Female)). A dataset that carries its own
aligned/conflicting attribute (digits-colour's ``bias``) can pass it instead.

The loss weights are those of BISE's code (``src/losses.py``, ``computeCEloss``):

- ``"bise"`` (``balanced_loss = 1``, used there for Biased-MNIST and Corrupted CIFAR-10): with
  ``C`` classes and ``rho`` the share of aligned training samples,
  ``w = 1 / (C rho)`` for aligned and ``w = (C - 1) / (C (1 - rho))`` for conflicting samples
  (mean 1 over the training set; aligned samples then carry a total weight ``1 / C``, as if the
  bias value were drawn independently of the class among ``C`` values);
- ``"cells"`` (``balanced_loss = 8``, used there for CelebA and CivilComments):
  ``w = 1 / (C K P(y, b))`` for ``K`` bias values, i.e. every (class, bias) cell carries the
  same total weight (:func:`cell_weights` with ``power = 1``);
- ``"independent"`` **(repsim's generalisation of ``"bise"``)**: ``w = P(y) P(b) / P(y, b)``,
  the reweighing of Kamiran & Calders (2012, "Data preprocessing techniques for classification
  without discrimination"): under the weights class and bias are independent with the
  training split's own marginals. With uniform class and bias marginals and one aligned bias
  value per class it equals ``"bise"`` (aligned ``(1/C)(1/C) / (rho/C) = 1/(C rho)``, conflicting
  ``(1/C)(1/C) / ((1 - rho)/(C (C - 1))) = (C - 1)/(C (1 - rho))``); unlike ``"bise"`` it stays
  meaningful for a binary task whose aligned share is near 1/2 (Adult), and unlike ``"cells"``
  it does not also balance the classes;
- ``"none"``: equal weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from repsim.data.base import GroupedData
from repsim.errors import ConfigError, DataError, ShapeError, did_you_mean

REWEIGHTS = ("bise", "cells", "independent", "none")


def bias_array(data: GroupedData, bias_labels: Any, what: str) -> np.ndarray:
    """Bias labels of ``data`` as int64 codes ``0..K-1``.

    Parameters
    ----------
    data : GroupedData
    bias_labels : str or array of int
        An attribute name of ``data`` (``"colour"``, ``"sex"``) or codes aligned with its samples.
    what : str
        How the split is named in error messages.

    Raises
    ------
    DataError
        Unknown attribute (with close names), non-integer or negative codes.
    ShapeError
        Codes that are not one per sample.
    """
    if isinstance(bias_labels, str):
        if bias_labels not in data.attributes:
            raise DataError(
                f"{what} has no attribute {bias_labels!r} to use as bias label; it has "
                f"{sorted(data.attributes)}." + did_you_mean(bias_labels, data.attributes)
            )
        b = np.asarray(data.attributes[bias_labels])
    else:
        b = np.asarray(bias_labels)
    if b.ndim != 1 or len(b) != len(data):
        raise ShapeError(
            f"bias_labels for {what} must be 1-D with one entry per sample ({len(data)}), got "
            f"shape {b.shape}. Pass an attribute name (e.g. 'colour') or an array aligned with "
            "the data's sample order."
        )
    if not np.issubdtype(b.dtype, np.integer):
        if np.issubdtype(b.dtype, np.floating) and np.all(b == np.round(b)):
            b = b.astype(np.int64)
        else:
            raise DataError(f"bias_labels for {what} must be integer codes 0..K-1.")
    if len(b) and b.min() < 0:
        raise DataError(f"bias_labels for {what} must be non-negative integer codes.")
    return b.astype(np.int64)


def cell_weights(y: np.ndarray, b: np.ndarray, power: float) -> np.ndarray:
    """Weights ``w_s proportional to n(y_s, b_s) ** -power``, scaled to mean 1.

    ``power = 1`` balances every (class, bias) cell, so class and bias label are independent
    under the weighted distribution and bias-conflicting samples count as much as aligned ones;
    ``power = 0`` gives equal weights.
    """
    if power == 0:
        return np.ones(len(y))
    k = int(b.max()) + 1
    cell = np.asarray(y).astype(np.int64) * k + b
    counts = np.bincount(cell)[cell].astype(np.float64)
    w = counts ** -float(power)
    return w / w.mean()


def aligned_cells(y: np.ndarray, b: np.ndarray, n_classes: int, n_bias: int) -> np.ndarray:
    """``[C, K]`` booleans: cell ``(c, k)`` is aligned when ``P(b = k | y = c) > P(b = k)``.

    Computed from the (training) labels ``y`` and bias codes ``b``; a class absent from ``y``
    has no aligned cell.
    """
    y = np.asarray(y, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    counts = np.zeros((n_classes, n_bias))
    np.add.at(counts, (y, b), 1.0)
    n_c = counts.sum(1, keepdims=True)
    p_b = counts.sum(0, keepdims=True) / max(len(y), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cond = np.where(n_c > 0, counts / np.maximum(n_c, 1), 0.0)
    return cond > p_b


def conflicting_samples(
    y: np.ndarray,
    b: np.ndarray,
    cells: np.ndarray | None = None,
    *,
    n_classes: int | None = None,
    n_bias: int | None = None,
) -> np.ndarray:
    """Boolean ``[n]``: True for bias-conflicting samples (cell not aligned).

    Parameters
    ----------
    y, b : array of int
        Class labels and bias codes of the samples to classify.
    cells : array of bool, optional
        Aligned cells (:func:`aligned_cells`), usually from the *training* split; default: from
        ``y`` and ``b`` themselves.
    n_classes, n_bias : int, optional
        Table size when ``cells`` is computed here (default: from the largest codes).
    """
    y = np.asarray(y, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if cells is None:
        c = n_classes or int(y.max()) + 1
        k = n_bias or int(b.max()) + 1
        cells = aligned_cells(y, b, c, k)
    inside = (y < cells.shape[0]) & (b < cells.shape[1])
    out = np.ones(len(y), dtype=bool)
    out[inside] = ~cells[y[inside], b[inside]]
    return out


def bise_weights(conflicting: np.ndarray, n_classes: int) -> np.ndarray:
    """BISE's aligned/conflicting weights (``balanced_loss = 1`` of its code).

    ``w = 1 / (C rho)`` for aligned and ``(C - 1) / (C (1 - rho))`` for conflicting samples,
    ``rho`` the share of aligned samples; their mean is exactly 1.

    Raises
    ------
    DataError
        When there is no aligned or no conflicting sample (the weights are undefined).
    """
    conflicting = np.asarray(conflicting, dtype=bool)
    rho = 1.0 - float(conflicting.mean()) if len(conflicting) else float("nan")
    if not 0.0 < rho < 1.0:
        raise DataError(
            "BISE's reweighting needs both bias-aligned and bias-conflicting training samples; "
            f"the share of aligned samples is {rho}. Use reweight='none', or check the bias "
            "attribute."
        )
    c = float(n_classes)
    return np.where(conflicting, (c - 1.0) / (c * (1.0 - rho)), 1.0 / (c * rho))


def independence_weights(y: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``w_s = P(y_s) P(b_s) / P(y_s, b_s)`` on the given samples, scaled to mean 1.

    Kamiran & Calders (2012) reweighing: class and bias label are independent under the
    weighted distribution, with the unweighted marginals.
    """
    y = np.asarray(y, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    n = len(y)
    k = int(b.max()) + 1
    cell = y * k + b
    p_cell = np.bincount(cell)[cell] / n
    p_y = np.bincount(y)[y] / n
    p_b = np.bincount(b)[b] / n
    w = p_y * p_b / p_cell
    return w / w.mean()


def loss_weights(
    kind: str, y: np.ndarray, b: np.ndarray, conflicting: np.ndarray, n_classes: int
) -> np.ndarray:
    """Per-sample task-loss weights of kind ``"bise"``, ``"cells"``, ``"independent"`` or ``"none"``.

    All have mean 1 over the training split.
    """
    if kind == "bise":
        return bise_weights(conflicting, n_classes)
    if kind == "cells":
        return cell_weights(np.asarray(y), np.asarray(b), 1.0)
    if kind == "independent":
        return independence_weights(np.asarray(y), np.asarray(b))
    if kind == "none":
        return np.ones(len(y))
    raise ConfigError(f"Unknown reweight {kind!r}; use one of {REWEIGHTS}.")


def conflicting_from(
    data: GroupedData, spec: Any, b: np.ndarray, cells: np.ndarray, what: str
) -> np.ndarray:
    """The conflicting indicator of ``data``: from an attribute, an array, or ``cells``.

    ``spec``: ``None`` (derive from ``cells``), an attribute name holding 0 (aligned) / 1
    (conflicting), or a boolean array aligned with the samples.
    """
    if spec is None:
        return conflicting_samples(np.asarray(data.y), b, cells)
    if isinstance(spec, str):
        if spec not in data.attributes:
            raise DataError(
                f"{what} has no attribute {spec!r} marking bias-conflicting samples; it has "
                f"{sorted(data.attributes)}." + did_you_mean(spec, data.attributes)
            )
        arr = np.asarray(data.attributes[spec])
    else:
        arr = np.asarray(spec)
    if arr.shape != (len(data),):
        raise ShapeError(f"The conflicting indicator of {what} must have one entry per sample.")
    return arr.astype(bool)
