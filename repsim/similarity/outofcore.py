"""Out-of-core similarity: stream linear CKA and the CCA family from row-aligned arrays.

Every function here reads its inputs in row batches (``zarr.Array`` objects from
:class:`repsim.capture.ActivationStore`, numpy arrays or torch tensors: only ``.shape`` and row
slicing are used), accumulates in float64, and keeps memory bounded by one batch plus a
``d x d`` state, whatever the number of samples ``n``. Each accumulator has ``update``,
``merge`` and ``result``-style methods, so :mod:`repsim.scale.dask` runs the same code as a
reduction over Zarr chunks.

* Linear CKA (biased and debiased): :class:`repsim.similarity.LinearCKAAccumulator`
  (the shared exact accumulator; :func:`stream_cka` drives it).
* SVCCA, PWCCA, mean CCA: :class:`CCAAccumulator`, a tall-skinny QR (TSQR; Demmel, Grigori,
  Hoemmen, Langou 2012) of the centered, concatenated activations ``[X Y]``. Its triangular
  factor ``R`` determines every CCA-family measure *without squaring the condition number*
  (as a covariance matrix would): ``X_c = Q R_x`` and ``Y_c = Q R_y`` with one orthonormal
  ``Q``, so the singular values and right singular vectors of ``R_x`` are those of ``X_c``, and
  ``U_x^T U_y = U'_x^T U'_y`` with ``U'`` the left singular vectors of ``R_x``, ``R_y``.

See docs/scale.md for the derivations and the memory bounds.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import numpy as np
import torch

from repsim._core.rows import iter_rows
from repsim._core.validation import as_like, as_pair, is_torch, to_numpy
from repsim.errors import ConfigError, InsufficientDataError
from repsim.similarity._center import too_few, warn
from repsim.similarity.cca import basis, cca_of_bases, n_kept, svd, warn_dropped
from repsim.similarity.streaming import check_widths, stream_cka, to_device

__all__ = [
    "QR_MEASURES",
    "CCAAccumulator",
    "cca_from_accumulator",
    "stream_cca",
    "stream_cka",
]


QR_MEASURES = ("svcca", "pwcca", "mean_cca", "procrustes")
"""Measures computed from a :class:`CCAAccumulator` (:func:`cca_from_accumulator`)."""


#: What a NaN in a streamed batch means, for the error message.
_NEVER_WRITTEN = (
    "a NaN row in a store array is a row never written: run `repsim cache verify` and "
    "re-capture the entry"
)


# --------------------------------------------------------------------------- CCA family
def _qr_r(a: Any) -> Any:
    if is_torch(a):
        return torch.linalg.qr(a, mode="r")[1]
    return np.linalg.qr(a, mode="r")


class CCAAccumulator:
    """Streaming state for SVCCA, PWCCA and mean CCA: a TSQR of centered ``[X Y]``.

    Holds ``n``, the column means ``mu`` of ``Z = [X Y]``, the upper-triangular ``R`` with
    ``R^T R = (Z - 1 mu^T)^T (Z - 1 mu^T)``, and per-column minimum and maximum (to find
    constant, dead units exactly as the in-memory measures do: ``max == min``).

    Update with a batch ``B`` (``m`` rows, mean ``b``): ``R <- qr([R; qr(B - 1 b^T);
    sqrt(n m / (n + m)) (mu - b)^T])``, ``mu <- (n mu + m b) / (n + m)``; merging two states is
    the same formula with the other state's ``R`` and mean. This is the centered TSQR of
    Demmel et al. (2012) with Chan, Golub, LeVeque's (1979) pairwise mean correction; the result
    is exact in exact arithmetic and backward stable in floating point.

    Memory: ``(d_x + d_y)^2`` float64 values plus one batch. Accepts numpy arrays or torch
    tensors (CPU or CUDA; the state then stays on that device in float64).
    """

    def __init__(self) -> None:
        self.n = 0
        self.dx = 0
        self.dy = 0
        self.mu: Any = None
        self.R: Any = None
        self.lo: Any = None
        self.hi: Any = None

    def __repr__(self) -> str:
        return f"CCAAccumulator(n={self.n}, dx={self.dx}, dy={self.dy})"

    def _match(self, a: Any) -> Any:
        return as_like(a, self.R)

    def update(self, x_batch: Any, y_batch: Any) -> CCAAccumulator:
        """Add row batches ``[m, d_x]`` and ``[m, d_y]`` of the same samples; returns ``self``."""
        xb, yb = as_pair(x_batch, y_batch, min_n=0, what="a batch", hint=_NEVER_WRITTEN)
        xb, yb = self._match(xb), self._match(yb)
        m = int(xb.shape[0])
        if m == 0:
            return self
        z = torch.cat([xb, yb], 1) if is_torch(xb) else np.concatenate([xb, yb], 1)
        other = CCAAccumulator()
        other.n, other.dx, other.dy = m, int(xb.shape[1]), int(yb.shape[1])
        other.mu = z.mean(0)
        other.R = _qr_r(z - other.mu[None, :])
        if is_torch(z):
            other.lo, other.hi = z.amin(0), z.amax(0)
        else:
            other.lo, other.hi = z.min(0), z.max(0)
        return self._absorb(other)

    def merge(self, other: CCAAccumulator) -> CCAAccumulator:
        """Fold another accumulator (other rows of the same two layers) into ``self``."""
        if not isinstance(other, CCAAccumulator):
            raise TypeError(f"can only merge a CCAAccumulator, got {type(other).__name__}.")
        return self._absorb(copy.deepcopy(other))

    def _absorb(self, o: CCAAccumulator) -> CCAAccumulator:
        if o.n == 0:
            return self
        if self.n == 0:
            self.n, self.dx, self.dy = o.n, o.dx, o.dy
            self.mu, self.R, self.lo, self.hi = o.mu, o.R, o.lo, o.hi
            return self
        check_widths((o.dx, o.dy), (self.dx, self.dy))
        mu, R, lo, hi = (self._match(v) for v in (o.mu, o.R, o.lo, o.hi))
        n, m = self.n, o.n
        corr = (np.sqrt(n * m / (n + m)) * (self.mu - mu))[None, :]
        if is_torch(self.R):
            self.R = _qr_r(torch.cat([self.R, R, corr], 0))
            self.lo, self.hi = torch.minimum(self.lo, lo), torch.maximum(self.hi, hi)
        else:
            self.R = _qr_r(np.concatenate([self.R, R, corr], 0))
            self.lo, self.hi = np.minimum(self.lo, lo), np.maximum(self.hi, hi)
        self.mu = (n * self.mu + m * mu) / (n + m)
        self.n = n + m
        return self


def _procrustes(Rx: np.ndarray, Ry: np.ndarray) -> float:
    """``2 - 2 ||X_c^T Y_c||_* / (||X_c||_F ||Y_c||_F)`` with ``X_c^T Y_c = R_x^T R_y``."""
    nx, ny = float(np.linalg.norm(Rx)), float(np.linalg.norm(Ry))
    if nx == 0 or ny == 0:
        warn(
            f"Procrustes distance is undefined: {'X' if nx == 0 else 'Y'} has zero variance "
            "(every unit constant); returning NaN."
        )
        return float("nan")
    nuc = float(svd((Rx / nx).T @ (Ry / ny), compute_uv=False).sum())
    return float(min(max(2.0 - 2.0 * nuc, 0.0), 2.0))


def cca_from_accumulator(
    acc: CCAAccumulator,
    measure: str = "svcca",
    *,
    keep: float = 0.99,
    rule: Literal["variance", "singular_values"] = "variance",
    n_components: int | None = None,
    return_details: bool = False,
) -> Any:
    """SVCCA, PWCCA, mean CCA or the Procrustes distance of all rows an accumulator has seen.

    Follows :mod:`repsim.similarity.cca` step by step on the factor ``R`` instead of the data:
    drop constant units (``max == min``), take each side's SVD (of ``R_x``, ``R_y``: same
    singular values and right vectors as ``X_c``, ``Y_c``), truncate (SVCCA: ``keep`` of the
    variance, Raghu et al. 2017; the rank for PWCCA and mean CCA), and take the canonical
    correlations as the singular values of ``U'_x^T U'_y`` (Bjorck & Golub 1973). PWCCA weights
    (Morcos et al. 2018) use ``A^T diag(s) V^T`` on the side with fewer live units (X on a
    tie), as the in-memory code and google/svcca do. The result equals
    the in-memory measure to rounding (about 1e-12 on well-conditioned data).

    ``measure="procrustes"``: the squared orthogonal Procrustes distance of centered, unit-norm
    data, ``2 - 2 ||X_c^T Y_c||_* / (||X_c||_F ||Y_c||_F)`` (Schoenemann 1966; Ding et al.
    2021), with ``X_c^T Y_c = R_x^T R_y`` (constant units contribute exactly zero, as there).

    Returns
    -------
    float or repsim.similarity.CCAResult
        NaN with a :class:`repsim.similarity.SimilarityWarning` when ill-posed
        (``k_x + k_y > n - 1``) or a side has zero variance.
    """
    if measure not in QR_MEASURES:
        raise ConfigError(
            f"measure must be one of {', '.join(QR_MEASURES)} for a CCAAccumulator, got "
            f"{measure!r}; linear CKA streams with repsim.similarity.LinearCKAAccumulator."
        )
    if acc.n == 0:
        raise InsufficientDataError(
            f"{measure} needs samples; the accumulator is empty: call update() first."
        )
    if acc.n < 3:
        return too_few(measure, acc.n, 3)

    R, lo, hi = to_numpy(acc.R), to_numpy(acc.lo), to_numpy(acc.hi)
    const = lo == hi
    cx, cy = const[: acc.dx], const[acc.dx :]
    dx, dy = int(cx.sum()), int(cy.sum())
    label = {"svcca": "SVCCA", "pwcca": "PWCCA", "mean_cca": "mean CCA"}.get(measure, measure)
    if measure != "procrustes":
        warn_dropped(label, dx, acc.dx, dy, acc.dy, stacklevel=3)
    Rx = R[:, : acc.dx][:, ~cx]
    Ry = R[:, acc.dx :][:, ~cy]
    n = acc.n
    if measure == "procrustes":
        return _procrustes(Rx, Ry)
    n_keep = (lambda s: n_kept(s, keep, rule, n_components)) if measure == "svcca" else None
    bx, by = basis(Rx, n), basis(Ry, n)
    res = cca_of_bases(
        bx, by, n, dx, dy, label, n_keep=n_keep, weighted=measure == "pwcca", stacklevel=3
    )
    return res if return_details else res.value


def stream_cca(
    X: Any,
    Y: Any,
    measure: str = "svcca",
    *,
    batch_size: int = 4096,
    device: Any = None,
    progress: bool | None = None,
    **options: Any,
) -> Any:
    """SVCCA / PWCCA / mean CCA of row-aligned arrays read ``batch_size`` rows at a time.

    Memory: one batch plus ``(d_x + d_y)^2`` float64 values. ``options`` go to
    :func:`cca_from_accumulator` (``keep``, ``rule``, ``n_components``, ``return_details``).
    With ``device`` (e.g. ``"cuda"``), the per-batch QR runs there in float64.
    """
    acc = CCAAccumulator()
    for xb, yb in iter_rows([X, Y], batch_size, progress=progress, desc=measure):
        acc.update(to_device(xb, device), to_device(yb, device))
    return cca_from_accumulator(acc, measure, **options)
