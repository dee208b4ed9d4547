"""Canonical correlation measures: mean CCA, SVCCA, PWCCA.

All three first drop constant (dead) units, center the columns in float64, and take an orthonormal
basis of each side's column space from a rank-revealing SVD. Canonical correlations are then the
singular values of ``U_x^T U_y`` (Bjorck & Golub 1973), which is numerically stable and never
inverts a covariance matrix; they are clipped to ``[0, 1]``.

References
----------
Hotelling (1936). Relations between two sets of variates. Biometrika.
Bjorck, Golub (1973). Numerical methods for computing angles between linear subspaces.
Raghu, Gilmer, Yosinski, Sohl-Dickstein (2017). SVCCA: Singular Vector Canonical Correlation
Analysis for Deep Learning Dynamics and Interpretability. NeurIPS.
Morcos, Raghu, Bengio (2018). Insights on representational similarity in neural networks with
canonical correlation. NeurIPS. (PWCCA.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from repsim._core.validation import as_pair
from repsim.errors import ConfigError
from repsim.similarity._center import center, constant_columns, too_few, warn
from repsim.similarity._linear import check_precision


@dataclass(frozen=True)
class CCAResult:
    """Details of a CCA-family computation.

    Attributes
    ----------
    value : float
        The similarity (mean canonical correlation, or the PWCCA weighted mean); NaN if ill-posed.
    correlations : np.ndarray
        Canonical correlations in decreasing order, clipped to ``[0, 1]``.
    kept_x, kept_y : int
        Dimensions of each side entering CCA (after dropping dead units, rank and truncation).
    dropped_x, dropped_y : int
        Constant (dead) units dropped from each side.
    n : int
        Number of samples.
    weights : np.ndarray or None
        PWCCA weights (sum to 1), aligned with ``correlations``; None for other measures.
    weights_side : str or None
        ``"X"`` or ``"Y"``: whose canonical variates the PWCCA weights come from.
    """

    value: float
    correlations: np.ndarray
    kept_x: int
    kept_y: int
    dropped_x: int
    dropped_y: int
    n: int
    weights: np.ndarray | None = field(default=None)
    weights_side: str | None = None


def svd(A: np.ndarray, *, compute_uv: bool = True) -> Any:
    """Economy SVD that survives LAPACK's rare non-convergence.

    numpy's ``gesdd`` (divide and conquer) first; if it reports "SVD did not converge", the
    slower but more robust ``gesvd`` (scipy). Only if both fail does ``LinAlgError`` propagate
    (:func:`repsim.similarity.compare` then reports that cell as NaN with the reason).
    """
    with _one_thread(A.size):
        try:
            if compute_uv:
                return np.linalg.svd(A, full_matrices=False)
            return np.linalg.svd(A, compute_uv=False)
        except np.linalg.LinAlgError:
            import scipy.linalg

            return scipy.linalg.svd(
                A, full_matrices=False, compute_uv=compute_uv, lapack_driver="gesvd"
            )


#: Matrices up to this many entries are decomposed on one BLAS thread: LAPACK's SVD of a
#: layer-sized matrix is bound by level-2 operations and gains little from threads, while on a
#: busy machine (more threads than free cores) it was measured 8-10x slower with 2 threads.
SVD_ONE_THREAD_SIZE = 2**24


def _one_thread(size: int) -> Any:
    """A context that limits BLAS to one thread for matrices of up to ``SVD_ONE_THREAD_SIZE``."""
    import contextlib

    if size > SVD_ONE_THREAD_SIZE:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency of scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def basis(
    A: np.ndarray, n: int | None = None, *, precision: str = "float64", d: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Economy SVD ``A = U diag(s) V^T`` truncated to the numerical rank of the centered data.

    The rank tolerance is numpy's ``matrix_rank`` one on the ``[n, d]`` data,
    ``s_0 max(n, d) eps``. ``A`` is the centered data itself (``n`` = its rows) or, for the
    streaming measures, a triangular factor ``R`` of it (same singular values and right
    vectors; pass the data's ``n``). ``d``: the data's width when ``A`` is a reduced form.
    ``precision="float32"``: the SVD runs in float32 (the float64-centered data rounded once),
    the factors come back as float64 and the tolerance uses float32's ``eps``.
    """
    f32 = precision == "float32"
    U, s, Vt = svd(A.astype(np.float32) if f32 else A)
    if f32:
        U, s, Vt = (np.asarray(v, dtype=np.float64) for v in (U, s, Vt))
    if s.size == 0 or s[0] == 0:
        r = 0
    else:
        width = A.shape[1] if d is None else d
        size = max(A.shape[0], width) if n is None else max(n, width)
        eps = np.finfo(np.float32 if f32 else np.float64).eps
        r = int((s > s[0] * size * eps).sum())
    return U[:, :r], s[:r], Vt[:r]


def n_kept(
    s: np.ndarray,
    keep: float = 0.99,
    rule: Literal["variance", "singular_values"] = "variance",
    n_components: int | None = None,
) -> int:
    """Number of leading singular directions SVCCA keeps.

    ``rule="variance"`` (Raghu et al. 2017): the smallest ``k`` with
    ``sum_{i<=k} s_i^2 / sum_i s_i^2 >= keep``. ``rule="singular_values"`` (anatome and the
    "Simon Says" code): the same with ``s_i`` in place of ``s_i^2``. ``n_components`` fixes
    ``k`` directly (capped at the rank). Always at least 1 when the rank is positive.
    """
    r = len(s)
    if r == 0:
        return 0
    if n_components is not None:
        if isinstance(n_components, bool) or int(n_components) != n_components or n_components < 1:
            raise ConfigError(f"n_components must be a positive integer, got {n_components!r}.")
        return min(int(n_components), r)
    if not 0 < keep <= 1:
        raise ConfigError(
            f"keep must be a fraction in (0, 1] (e.g. 0.99 for 99% of the variance), got {keep!r}."
        )
    if rule == "variance":
        w = s**2
    elif rule == "singular_values":
        w = np.abs(s)
    else:
        raise ConfigError(f"rule must be 'variance' or 'singular_values', got {rule!r}.")
    cum = np.cumsum(w) / w.sum()
    return int(np.argmax(cum >= keep - 1e-12)) + 1


def warn_dropped(what: str, dx: int, nx: int, dy: int, ny: int, stacklevel: int) -> None:
    """Warn that ``dx`` of ``nx`` X units and ``dy`` of ``ny`` Y units were constant (dead).

    ``stacklevel``: as the caller would pass it to :func:`~repsim.similarity._center.warn`
    (this frame is added).
    """
    if dx or dy:
        warn(
            f"{what}: dropped {dx} constant (dead) unit(s) of {nx} from X and {dy} of "
            f"{ny} from Y before CCA.",
            stacklevel=stacklevel + 1,
        )


#: Fewest samples a CCA-family measure is defined on (with 2, centered data have rank 1 and the
#: only canonical correlation is 1 by construction); CCA also needs ``k_x + k_y <= n - 1``.
MIN_N = 3


def _prepare(X: Any, Y: Any, what: str) -> tuple[np.ndarray, np.ndarray, int, int]:
    Xm, Ym = as_pair(X, Y, min_n=1, allow_torch=False, what=what)
    cx, cy = constant_columns(Xm), constant_columns(Ym)
    dx, dy = int(cx.sum()), int(cy.sum())
    warn_dropped(what, dx, Xm.shape[1], dy, Ym.shape[1], stacklevel=5)
    return center(Xm[:, ~cx]), center(Ym[:, ~cy]), dx, dy


def ill_posed(n: int, kx: int, ky: int, what: str, stacklevel: int) -> bool:
    """Whether CCA is undefined or ill-posed on these dimensions (warns).

    Whether CCA of ``kx`` and ``ky`` kept dimensions on ``n`` samples is undefined (a side
    with zero variance) or ill-posed (``kx + ky > n - 1``); warns saying which.

    ``stacklevel``: as the caller would pass it to :func:`~repsim.similarity._center.warn`
    (this frame is added).
    """
    if kx == 0 or ky == 0:
        side = "X" if kx == 0 else "Y"
        warn(
            f"{what} is undefined: {side} has zero variance (every unit constant); returning NaN.",
            stacklevel=stacklevel + 1,
        )
        return True
    if kx + ky > n - 1:
        warn(
            f"{what} is ill-posed: {kx} + {ky} dimensions enter CCA but n = {n} samples span only "
            f"{n - 1} dimensions after centering, so at least {kx + ky - n + 1} canonical "
            "correlation(s) equal 1 by construction; returning NaN. Use more samples (many more "
            "than the kept dimensions), a smaller SVCCA 'keep', or CKA, which is defined for n < d.",
            stacklevel=stacklevel + 1,
        )
        return True
    return False


def _cca(Ux: np.ndarray, Uy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical correlations and X-side rotation from orthonormal bases ``Ux``, ``Uy``."""
    A, rho, _ = svd(Ux.T @ Uy)
    return np.clip(rho, 0.0, 1.0), A


def nan_result(n: int, kx: int, ky: int, dx: int, dy: int) -> CCAResult:
    """The :class:`CCAResult` of an undefined or ill-posed CCA (value NaN)."""
    return CCAResult(float("nan"), np.empty(0), kx, ky, dx, dy, n)


def cca_of_bases(
    bx: tuple[np.ndarray, np.ndarray, np.ndarray],
    by: tuple[np.ndarray, np.ndarray, np.ndarray],
    n: int,
    dx: int,
    dy: int,
    what: str,
    *,
    n_keep: Callable[[np.ndarray], int] | None = None,
    weighted: bool = False,
    stacklevel: int = 2,
) -> CCAResult:
    """CCA of two sides given their SVD bases ``(U, s, V^T)`` (:func:`basis`).

    Keeps ``k = n_keep(s)`` leading directions per side (default: the rank), returns the NaN
    result (warned, :func:`ill_posed`) when CCA is undefined or ill-posed, and otherwise the
    canonical correlations, the singular values of ``U_x^T U_y`` (Bjorck & Golub 1973) clipped
    to ``[0, 1]``. The value is their mean (SVCCA, mean CCA) or, with ``weighted``, the PWCCA
    mean weighted by ``a_i = sum_k |(A^T diag(s) V^T)_{ik}|`` (Morcos et al. 2018) on the side
    with fewer live units (X on a tie), as google/svcca. ``dx``, ``dy``: dead units dropped.
    ``stacklevel``: as the caller would pass it to :func:`~repsim.similarity._center.warn`.
    """
    (Ux, sx, Vx), (Uy, sy, Vy) = bx, by
    kx, ky = (n_keep(sx), n_keep(sy)) if n_keep else (len(sx), len(sy))
    if ill_posed(n, kx, ky, what, stacklevel=stacklevel + 1):
        return nan_result(n, kx, ky, dx, dy)
    if weighted and Vx.shape[1] > Vy.shape[1]:  # fewer live (non-constant) units: Y
        rho, A = _cca(Uy[:, :ky], Ux[:, :kx])
        side, s, Vt = "Y", sy, Vy
    else:
        rho, A = _cca(Ux[:, :kx], Uy[:, :ky])
        side, s, Vt = "X", sx, Vx
    if not weighted:
        return CCAResult(float(rho.mean()), rho, kx, ky, dx, dy, n)
    # <h_i, z_k> for h = U A and Z = U diag(s) V^T is (A^T diag(s) V^T)_{ik}.
    a = np.abs(A.T @ (s[:, None] * Vt)).sum(axis=1)
    alpha = a / a.sum()
    return CCAResult(float(alpha @ rho), rho, kx, ky, dx, dy, n, alpha, side)


def _cca_measure(
    X: Any,
    Y: Any,
    what: str,
    *,
    n_keep: Callable[[np.ndarray], int] | None = None,
    weighted: bool = False,
    precision: str = "float64",
) -> CCAResult:
    """Drop dead units, center, take each side's SVD basis, then :func:`cca_of_bases`."""
    check_precision(precision)
    Xc, Yc, dx, dy = _prepare(X, Y, what)
    n = Xc.shape[0]
    if n < MIN_N:
        too_few(what, n, MIN_N, stacklevel=5)
        return nan_result(n, 0, 0, dx, dy)
    bx, by = basis(Xc, precision=precision), basis(Yc, precision=precision)
    return cca_of_bases(bx, by, n, dx, dy, what, n_keep=n_keep, weighted=weighted, stacklevel=4)


def svcca(
    X: Any,
    Y: Any,
    *,
    keep: float = 0.99,
    rule: Literal["variance", "singular_values"] = "variance",
    n_components: int | None = None,
    return_details: bool = False,
    precision: str = "float64",
) -> float | CCAResult:
    """Singular vector canonical correlation analysis (Raghu et al. 2017).

    1. Center each side and take its SVD ``X = U S V^T``.
    2. Keep the top ``k`` directions: by default the smallest ``k`` whose squared singular values
       reach ``keep`` (99%) of the total variance ``sum s_i^2``, as in the paper;
       ``rule="singular_values"`` uses the share of ``sum |s_i|`` instead, as anatome and the
       Simon Says code do (it keeps more directions); ``n_components`` fixes ``k``.
    3. CCA between the reduced views ``U_k S_k``; SVCCA is the mean of the
       ``min(k_x, k_y)`` canonical correlations ``rho_i``.

    Invariant to orthogonal transforms, isotropic scaling and translation of either side (not to
    arbitrary invertible maps, because the truncation depends on the spectrum).

    Parameters
    ----------
    X, Y : array-like
        ``[n, d_x]``, ``[n, d_y]`` activations of the same samples (computed on CPU in float64).
    keep : float
        Fraction in ``(0, 1]`` of variance (or of singular-value mass) to keep on each side.
    rule : {"variance", "singular_values"}
        What ``keep`` is a share of.
    n_components : int, optional
        Keep exactly this many directions per side instead (capped at the rank).
    return_details : bool
        Return a :class:`CCAResult` (correlations, kept dimensions, dropped units) instead of
        the float.
    precision : {"float64", "float32"}
        ``"float32"``: center in float64, take the SVDs in float32 (about twice as fast; error
        measured in docs/similarity.md). Default float64.

    Returns
    -------
    float or CCAResult
        Mean canonical correlation in ``[0, 1]``. NaN with a warning when CCA is ill-posed
        (``k_x + k_y >= n``) or a side has zero variance.
    """
    res = _cca_measure(
        X,
        Y,
        "SVCCA",
        n_keep=lambda s: n_kept(s, keep, rule, n_components),
        precision=precision,
    )
    return res if return_details else res.value


def mean_cca(
    X: Any, Y: Any, *, return_details: bool = False, precision: str = "float64"
) -> float | CCAResult:
    """Mean canonical correlation ``(1/m) sum_i rho_i`` over all ``m = min(rank X, rank Y)`` pairs.

    CCA (Hotelling 1936) finds directions ``w_x``, ``w_y`` maximising
    ``rho = corr(X w_x, Y w_y)``; here via the singular values of ``U_x^T U_y`` with ``U`` the
    orthonormal bases of the centered column spaces. Invariant to any invertible linear map and
    translation of either side. This is the ``rho-bar`` of Kornblith et al. (2019, Table 1).

    Returns NaN with a warning when ``rank X + rank Y >= n`` (ill-posed; see :func:`svcca`).
    ``precision="float32"``: SVDs in float32, see :func:`svcca`.
    """
    res = _cca_measure(X, Y, "mean CCA", precision=precision)
    return res if return_details else res.value


def pwcca(
    X: Any, Y: Any, *, return_details: bool = False, precision: str = "float64"
) -> float | CCAResult:
    """Projection-weighted CCA (Morcos et al. 2018).

    ``PWCCA = sum_i alpha_i rho_i`` with ``alpha_i = a_i / sum_j a_j`` and
    ``a_i = sum_k |<h_i, z_k>|``: ``h_i`` is the ``i``-th canonical variate (unit norm) of one
    side and ``z_k`` that side's ``k``-th centered neuron activation vector over the samples. So
    a canonical direction weighs by how much of the side's actual neurons it accounts for.

    Which side: as google/svcca's ``compute_pwcca``, the side with fewer live (non-constant)
    units, X on a tie; so PWCCA is not symmetric in general. Departures from that code: the
    weights use centered activations (it adds the means back), and the Y-side branch uses Y's
    own activations (that code's Y branch projects ``acts1``, a known slip).

    Invariant to isotropic scaling, translation and permutation of units.
    Returns NaN with a warning when ``rank X + rank Y >= n``. ``precision="float32"``: SVDs in
    float32, see :func:`svcca`.
    """
    res = _cca_measure(X, Y, "PWCCA", weighted=True, precision=precision)
    return res if return_details else res.value
