"""Input checks shared by every similarity measure: shape, finiteness, float64, centering.

Every measure in :mod:`repsim.similarity` takes two activation matrices ``X`` ``[n, d_x]`` and
``Y`` ``[n, d_y]`` whose rows are the same samples in the same order. Inputs may be numpy arrays,
torch tensors (CPU or CUDA), array-likes with ``__array__`` (a ``zarr.Array``), or nested lists;
any real dtype. They are converted to float64 *before* anything else, so float32 activations with
a large offset (post-ReLU features + 1000) give the float64 answer.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from repsim.errors import InsufficientDataError, NonFiniteError, ShapeError, SimilarityWarning

try:  # torch is a hard dependency of repsim, but keep this module importable without it
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

Matrix = Any  # np.ndarray (float64) or torch.Tensor (float64); both support @, .T, .sum, .mean


def warn(message: str, stacklevel: int = 3) -> None:
    """Issue a :class:`SimilarityWarning` attributed to the caller of the public measure."""
    warnings.warn(message, SimilarityWarning, stacklevel=stacklevel)


def is_torch(a: Any) -> bool:
    """Whether ``a`` is a torch tensor."""
    return torch is not None and isinstance(a, torch.Tensor)


def as_matrix(a: Any, name: str = "X", *, allow_torch: bool = True) -> Matrix:
    """Convert ``a`` to a finite float64 ``[n, d]`` matrix (numpy, or torch on ``a``'s device).

    Parameters
    ----------
    a : array-like
        numpy array, torch tensor, zarr array, or anything ``np.asarray`` accepts.
    name : str
        The argument's name, used in error messages.
    allow_torch : bool
        Keep torch tensors as torch (float64, same device). When False, they are moved to CPU
        numpy.

    Returns
    -------
    np.ndarray or torch.Tensor
        A float64 copy (or view) with two dimensions.

    Raises
    ------
    ShapeError
        When ``a`` is not 2-D or has no features.
    NonFiniteError
        When ``a`` holds NaN or infinite values.
    """
    if is_torch(a):
        if a.is_complex():
            raise ShapeError(f"{name} is complex; pass real-valued activations.")
        m = a.detach().to(torch.float64) if allow_torch else a.detach().cpu().double().numpy()
    else:
        arr = np.asarray(a)
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
        ):
            raise ShapeError(
                f"{name} has dtype {arr.dtype}; pass a numeric [n_samples, n_features] array."
            )
        if np.iscomplexobj(arr):
            raise ShapeError(f"{name} is complex; pass real-valued activations.")
        m = arr.astype(np.float64, copy=False)
    if m.ndim != 2:
        shape = tuple(m.shape)
        hint = (
            f"reshape it with {name}.reshape(-1, 1) if it is one feature per sample"
            if m.ndim == 1
            else "flatten or pool the trailing dimensions first, e.g. "
            f"{name}.reshape(len({name}), -1) or a mean over spatial axes"
        )
        raise ShapeError(
            f"{name} must be 2-D [n_samples, n_features], got {m.ndim}-D with shape {shape}; {hint}."
        )
    if m.shape[1] == 0:
        raise ShapeError(f"{name} has shape {tuple(m.shape)}: no features.")
    finite = torch.isfinite(m).all().item() if is_torch(m) else bool(np.isfinite(m).all())
    if not finite:
        if is_torch(m):
            bad = (~torch.isfinite(m)).nonzero()[0].tolist()
            count = int((~torch.isfinite(m)).sum().item())
        else:
            bad_idx = np.argwhere(~np.isfinite(m))
            bad, count = bad_idx[0].tolist(), len(bad_idx)
        raise NonFiniteError(
            f"{name} holds {count} NaN or infinite value(s), the first at row {bad[0]}, column "
            f"{bad[1]}; remove those samples or fix the capture (e.g. an overflow in float16)."
        )
    return m


def as_pair(
    X: Any, Y: Any, *, min_n: int = 2, allow_torch: bool = True, what: str = "this measure"
) -> tuple[Matrix, Matrix]:
    """Validate ``X`` and ``Y`` together: both 2-D, finite, same number of rows, ``n >= min_n``.

    When either is a torch tensor (and ``allow_torch``), both are returned as float64 tensors on
    that tensor's device; otherwise both are float64 numpy arrays.

    Raises
    ------
    ShapeError
        Different numbers of rows.
    InsufficientDataError
        Fewer than ``min_n`` samples.
    """
    use_torch = allow_torch and (is_torch(X) or is_torch(Y))
    if use_torch:
        device = X.device if is_torch(X) else Y.device
        X = X if is_torch(X) else torch.as_tensor(np.asarray(X))
        Y = Y if is_torch(Y) else torch.as_tensor(np.asarray(Y))
        X, Y = X.to(device), Y.to(device)
    Xm = as_matrix(X, "X", allow_torch=use_torch)
    Ym = as_matrix(Y, "Y", allow_torch=use_torch)
    if Xm.shape[0] != Ym.shape[0]:
        raise ShapeError(
            f"X has {Xm.shape[0]} samples but Y has {Ym.shape[0]}; both must hold the same samples "
            "in the same order (rows are samples, columns are features)."
        )
    n = Xm.shape[0]
    if n < min_n:
        raise InsufficientDataError(
            f"{what} needs at least {min_n} samples, got {n}; pass more samples."
        )
    return Xm, Ym


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


def to_numpy(X: Matrix) -> np.ndarray:
    """A float64 numpy copy of a numpy array or torch tensor."""
    if is_torch(X):
        return X.detach().cpu().numpy()
    return np.asarray(X, dtype=np.float64)


def constant_columns(X: np.ndarray) -> np.ndarray:
    """Boolean mask of columns whose values are all identical (dead or constant units).

    Exact test (``max == min``), so a constant column stays constant whatever its offset.
    """
    return np.ptp(X, axis=0) == 0
