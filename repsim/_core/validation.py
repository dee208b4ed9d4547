"""Array input checks and conversions: the one home of repsim's shape and finiteness checks.

Every stage reads user arrays through these functions, so an input is described the same way
wherever it is wrong. Inputs may be numpy arrays, torch tensors (CPU or CUDA), array-likes with
``__array__`` (a ``zarr.Array``) or nested lists.

* :func:`to_numpy`: any of those as a numpy array (a tensor is detached and moved to the CPU).
* :func:`as_array` / :func:`as_vector`: a numpy array with the expected dimensions, optionally
  one entry per sample (``n``), a dtype, and no NaN or infinity.
* :func:`as_matrix` / :func:`as_pair`: finite float64 ``[n_samples, n_features]`` matrices
  (numpy, or torch on the tensor's own device), the input of every similarity measure.
* :func:`check_consistent_length`: the one check that arrays hold the same samples (rows).

Failures raise :class:`repsim.errors.ShapeError`, :class:`repsim.errors.NonFiniteError`,
:class:`repsim.errors.DataError` or :class:`repsim.errors.InsufficientDataError`, with a
message that names the argument and says what to pass instead.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from repsim.errors import DataError, InsufficientDataError, NonFiniteError, ShapeError

__all__ = [
    "Matrix",
    "as_array",
    "as_like",
    "as_matrix",
    "as_pair",
    "as_vector",
    "check_consistent_length",
    "is_torch",
    "n_rows",
    "to_numpy",
]

Matrix = Any  # np.ndarray (float64) or torch.Tensor (float64); both support @, .T, .sum, .mean

#: What :func:`as_matrix` tells the user to do about NaN or infinite activations by default.
NONFINITE_HINT = "remove those samples or fix the capture (e.g. an overflow in float16)"


def _torch() -> ModuleType | None:
    # A tensor exists only once torch is imported, so this module never imports torch itself
    # (``import repsim.cli`` stays light).
    return sys.modules.get("torch")


def is_torch(a: Any) -> bool:
    """Whether ``a`` is a torch tensor."""
    torch = _torch()
    return torch is not None and isinstance(a, torch.Tensor)


def to_numpy(x: Any, name: str = "input", *, dtype: Any = None) -> np.ndarray:
    """``x`` as a numpy array: a torch tensor is detached and copied to the CPU.

    Parameters
    ----------
    x : array-like
        A list, numpy array, torch tensor or anything ``np.asarray`` accepts.
    name : str
        The argument's name, for the message.
    dtype : numpy dtype, optional
        Convert to this dtype (no copy when it already has it).

    Raises
    ------
    DataError
        When ``x`` is ``None``.
    """
    if x is None:
        raise DataError(f"'{name}' is required.")
    if is_torch(x):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def as_like(a: Any, ref: Any) -> Any:
    """Convert ``a`` to the array kind of ``ref`` (torch on its device, or numpy).

    ``a`` as the same kind of array as ``ref``: a torch tensor on ``ref``'s device when
    ``ref`` is one, else a numpy array. ``ref=None`` returns ``a`` unchanged.

    Accumulators use it to keep their state and each new batch on one device.
    """
    if ref is None:
        return a
    if is_torch(ref) and not is_torch(a):
        return _torch().as_tensor(a, device=ref.device)
    if not is_torch(ref) and is_torch(a):
        return a.cpu().numpy()
    return a


def n_rows(a: Any) -> int:
    """Number of samples (rows, the first dimension) of an array-like."""
    shape = getattr(a, "shape", None)
    return int(shape[0]) if shape is not None else len(a)


def _join(items: Sequence[Any]) -> str:
    words = [str(i) for i in items]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def check_consistent_length(*arrays: Any, names: Sequence[str] | None = None) -> int:
    """The number of samples (rows) that ``arrays`` share, or a ``ShapeError``.

    Only ``.shape`` (or ``len``) is read, so ``zarr.Array`` inputs are not loaded.

    Parameters
    ----------
    *arrays : array-like
        Arrays whose first dimension indexes the same samples.
    names : sequence of str, optional
        The arguments' names, for the message (default ``"the arrays"``).

    Returns
    -------
    int
        The common number of rows.

    Raises
    ------
    ShapeError
        When no array is given or the row counts differ (the message lists every count).
    """
    if not arrays:
        raise ShapeError("no arrays to read.")
    counts = [n_rows(a) for a in arrays]
    if len(set(counts)) > 1:
        what = _join(names) if names else "the arrays"
        raise ShapeError(
            f"{what} hold {_join(counts)} samples (rows); they must hold the same samples in "
            "the same order (one row per sample)."
        )
    return counts[0]


def _ndim_text(ndim: tuple[int, ...]) -> str:
    return " or ".join(f"{d}-D" for d in ndim)


def as_array(
    x: Any,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    n: int | None = None,
    against: str | None = None,
    dtype: Any = None,
    finite: bool = False,
) -> np.ndarray:
    """``x`` as a numpy array with ``ndim`` dimensions and ``n`` rows (each when given).

    Parameters
    ----------
    x : array-like
        The input (see :func:`to_numpy`).
    name : str
        The argument's name, for messages.
    ndim : int or sequence of int, optional
        Allowed numbers of dimensions.
    n : int, optional
        Required number of rows (one per sample).
    against : str, optional
        What ``n`` was taken from (e.g. ``"y_true"``), for the message.
    dtype : numpy dtype, optional
        Convert to this dtype.
    finite : bool
        Reject NaN and infinite values.

    Raises
    ------
    DataError
        ``x`` is ``None``.
    ShapeError
        Wrong number of dimensions or of rows.
    NonFiniteError
        ``finite=True`` and ``x`` holds NaN or infinity.
    """
    arr = to_numpy(x, name, dtype=dtype)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            rows = "one entry per sample" if allowed == (1,) else "one row per sample"
            raise ShapeError(
                f"'{name}' must be {_ndim_text(allowed)} ({rows}), got shape {arr.shape}."
            )
    if n is not None and n_rows(arr) != n:
        source = f" (as in {against})" if against is not None else ""
        raise ShapeError(
            f"'{name}' has {n_rows(arr)} entries but there are {n} samples{source}; pass one "
            "entry per sample, in the same order."
        )
    if finite and arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        raise NonFiniteError(f"'{name}' holds NaN or inf values; drop or fix those samples.")
    return arr


def as_vector(
    x: Any,
    name: str,
    n: int | None = None,
    *,
    against: str | None = None,
    dtype: Any = None,
    finite: bool = False,
) -> np.ndarray:
    """A 1-D numpy array (one entry per sample), of length ``n`` when given.

    See :func:`as_array` for the parameters and errors.
    """
    return as_array(x, name, ndim=1, n=n, against=against, dtype=dtype, finite=finite)


def _nonfinite(m: Matrix, name: str, hint: str) -> NonFiniteError:
    if is_torch(m):
        torch = _torch()
        bad_mask = ~torch.isfinite(m)
        bad = bad_mask.nonzero()[0].tolist()
        count = int(bad_mask.sum().item())
    else:
        bad_idx = np.argwhere(~np.isfinite(m))
        bad, count = bad_idx[0].tolist(), len(bad_idx)
    return NonFiniteError(
        f"{name} holds {count} NaN or infinite value(s), the first at row {bad[0]}, column "
        f"{bad[1]}; {hint}."
    )


def as_matrix(
    a: Any, name: str = "X", *, allow_torch: bool = True, hint: str = NONFINITE_HINT
) -> Matrix:
    """Convert ``a`` to a finite float64 ``[n, d]`` matrix (numpy, or torch on ``a``'s device).

    The conversion to float64 comes before anything else, so float32 activations with a large
    offset (post-ReLU features + 1000) give the float64 answer.

    Parameters
    ----------
    a : array-like
        numpy array, torch tensor, zarr array, or anything ``np.asarray`` accepts; any real
        dtype.
    name : str
        The argument's name, used in error messages.
    allow_torch : bool
        Keep torch tensors as torch (float64, same device). When False, they are moved to CPU
        numpy.
    hint : str
        What the NaN/infinity message tells the user to do.

    Returns
    -------
    np.ndarray or torch.Tensor
        A float64 copy (or view) with two dimensions.

    Raises
    ------
    ShapeError
        When ``a`` is not 2-D, has no features, or is complex or non-numeric.
    NonFiniteError
        When ``a`` holds NaN or infinite values (the message gives the first position).
    """
    torch = _torch()
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
        advice = (
            f"reshape it with {name}.reshape(-1, 1) if it is one feature per sample"
            if m.ndim == 1
            else "flatten or pool the trailing dimensions first, e.g. "
            f"{name}.reshape(len({name}), -1) or a mean over spatial axes"
        )
        raise ShapeError(
            f"{name} must be 2-D [n_samples, n_features], got {m.ndim}-D with shape {shape}; "
            f"{advice}."
        )
    if m.shape[1] == 0:
        raise ShapeError(f"{name} has shape {tuple(m.shape)}: no features.")
    finite = torch.isfinite(m).all().item() if is_torch(m) else bool(np.isfinite(m).all())
    if not finite:
        raise _nonfinite(m, name, hint)
    return m


def as_pair(
    X: Any,
    Y: Any,
    *,
    min_n: int = 2,
    allow_torch: bool = True,
    what: str = "this measure",
    names: tuple[str, str] = ("X", "Y"),
    hint: str = NONFINITE_HINT,
) -> tuple[Matrix, Matrix]:
    """Validate ``X`` and ``Y`` together: both 2-D, finite, same number of rows, ``n >= min_n``.

    When either is a torch tensor (and ``allow_torch``), both are returned as float64 tensors on
    that tensor's device; otherwise both are float64 numpy arrays.

    Parameters
    ----------
    X, Y : array-like
        Row-aligned matrices (see :func:`as_matrix`).
    min_n : int
        Fewest samples accepted.
    allow_torch : bool
        Keep torch tensors as torch.
    what : str
        What needs the samples, for the message (``"CKA"``).
    names : (str, str)
        The arguments' names, for messages.
    hint : str
        What the NaN/infinity message tells the user to do.

    Raises
    ------
    ShapeError
        Not 2-D, or different numbers of rows.
    NonFiniteError
        NaN or infinite values.
    InsufficientDataError
        Fewer than ``min_n`` samples.
    """
    use_torch = allow_torch and (is_torch(X) or is_torch(Y))
    if use_torch:
        torch = _torch()
        device = X.device if is_torch(X) else Y.device
        X = X if is_torch(X) else torch.as_tensor(np.asarray(X))
        Y = Y if is_torch(Y) else torch.as_tensor(np.asarray(Y))
        X, Y = X.to(device), Y.to(device)
    Xm = as_matrix(X, names[0], allow_torch=use_torch, hint=hint)
    Ym = as_matrix(Y, names[1], allow_torch=use_torch, hint=hint)
    n = check_consistent_length(Xm, Ym, names=names)
    if n < min_n:
        raise InsufficientDataError(
            f"{what} needs at least {min_n} samples, got {n}; pass more samples."
        )
    return Xm, Ym
