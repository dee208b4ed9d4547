"""Column centering and the warning helper shared by the similarity measures.

Inputs are checked and converted to float64 by :mod:`repsim._core.validation` (``as_matrix``,
``as_pair``) before they reach these helpers.
"""

from __future__ import annotations

import warnings

import numpy as np

from repsim._core.validation import Matrix, is_torch
from repsim.errors import SimilarityWarning

__all__ = ["Matrix", "center", "constant_columns", "too_few", "warn"]


def warn(message: str, stacklevel: int = 3) -> None:
    """Issue a :class:`SimilarityWarning` attributed to the caller of the public measure."""
    warnings.warn(message, SimilarityWarning, stacklevel=stacklevel)


def too_few(what: str, n: int, min_n: int, stacklevel: int = 4) -> float:
    """NaN with a :class:`SimilarityWarning`: ``what`` needs ``min_n`` samples and got ``n``."""
    warn(
        f"{what} needs at least {min_n} samples, got {n}; returning NaN. Pass more samples "
        "(on fewer the value is undefined or fixed by construction, e.g. CKA of 2 samples is 1).",
        stacklevel=stacklevel,
    )
    return float("nan")


def center(X: Matrix) -> Matrix:
    """Subtract each column's mean (computed in float64): ``X - 1 mean(X, axis=0)``.

    Constant columns (all values identical: dead units of a pruned layer) are set to exactly
    zero, so that a rounding residue of the mean cannot masquerade as signal.
    """
    if is_torch(X):
        Xc = X - X.mean(0, keepdim=True)
        const = X.amax(0) == X.amin(0)
        if bool(const.any()):
            Xc[:, const] = 0.0
        return Xc
    Xc = X - X.mean(0, keepdims=True)
    const = constant_columns(X)
    if const.any():
        Xc[:, const] = 0.0
    return Xc


def constant_columns(X: np.ndarray) -> np.ndarray:
    """Boolean mask of columns whose values are all identical (dead or constant units).

    Exact test (``max == min``), so a constant column stays constant whatever its offset.
    """
    return np.ptp(X, axis=0) == 0
