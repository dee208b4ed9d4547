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

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from repsim._core.validation import as_pair
from repsim.errors import ConfigError
from repsim.similarity._center import center, constant_columns, warn


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


def _basis(Xc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Economy SVD of centered data, truncated to its numerical rank (numpy's matrix_rank tol)."""
    U, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    if s.size == 0 or s[0] == 0:
        r = 0
    else:
        tol = s[0] * max(Xc.shape) * np.finfo(np.float64).eps
        r = int((s > tol).sum())
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


def _prepare(X: Any, Y: Any, what: str) -> tuple[np.ndarray, np.ndarray, int, int]:
    Xm, Ym = as_pair(X, Y, min_n=2, allow_torch=False, what=what)
    cx, cy = constant_columns(Xm), constant_columns(Ym)
    dx, dy = int(cx.sum()), int(cy.sum())
    if dx or dy:
        warn(
            f"{what}: dropped {dx} constant (dead) unit(s) of {Xm.shape[1]} from X and {dy} of "
            f"{Ym.shape[1]} from Y before CCA.",
            stacklevel=4,
        )
    return center(Xm[:, ~cx]), center(Ym[:, ~cy]), dx, dy


def _ill_posed(n: int, kx: int, ky: int, what: str) -> bool:
    if kx == 0 or ky == 0:
        side = "X" if kx == 0 else "Y"
        warn(
            f"{what} is undefined: {side} has zero variance (every unit constant); returning NaN.",
            stacklevel=4,
        )
        return True
    if kx + ky > n - 1:
        warn(
            f"{what} is ill-posed: {kx} + {ky} dimensions enter CCA but n = {n} samples span only "
            f"{n - 1} dimensions after centering, so at least {kx + ky - n + 1} canonical "
            "correlation(s) equal 1 by construction; returning NaN. Use more samples (many more "
            "than the kept dimensions), a smaller SVCCA 'keep', or CKA, which is defined for n < d.",
            stacklevel=4,
        )
        return True
    return False


def _cca(Ux: np.ndarray, Uy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical correlations and X-side rotation from orthonormal bases ``Ux``, ``Uy``."""
    A, rho, _ = np.linalg.svd(Ux.T @ Uy, full_matrices=False)
    return np.clip(rho, 0.0, 1.0), A


def _nan_result(n: int, kx: int, ky: int, dx: int, dy: int) -> CCAResult:
    return CCAResult(float("nan"), np.empty(0), kx, ky, dx, dy, n)


def svcca(
    X: Any,
    Y: Any,
    *,
    keep: float = 0.99,
    rule: Literal["variance", "singular_values"] = "variance",
    n_components: int | None = None,
    return_details: bool = False,
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

    Returns
    -------
    float or CCAResult
        Mean canonical correlation in ``[0, 1]``. NaN with a warning when CCA is ill-posed
        (``k_x + k_y >= n``) or a side has zero variance.
    """
    what = "SVCCA"
    Xc, Yc, dx, dy = _prepare(X, Y, what)
    n = Xc.shape[0]
    Ux, sx, _ = _basis(Xc)
    Uy, sy, _ = _basis(Yc)
    kx = n_kept(sx, keep, rule, n_components)
    ky = n_kept(sy, keep, rule, n_components)
    if _ill_posed(n, kx, ky, what):
        res = _nan_result(n, kx, ky, dx, dy)
    else:
        rho, _ = _cca(Ux[:, :kx], Uy[:, :ky])
        res = CCAResult(float(rho.mean()), rho, kx, ky, dx, dy, n)
    return res if return_details else res.value


def mean_cca(X: Any, Y: Any, *, return_details: bool = False) -> float | CCAResult:
    """Mean canonical correlation ``(1/m) sum_i rho_i`` over all ``m = min(rank X, rank Y)`` pairs.

    CCA (Hotelling 1936) finds directions ``w_x``, ``w_y`` maximising
    ``rho = corr(X w_x, Y w_y)``; here via the singular values of ``U_x^T U_y`` with ``U`` the
    orthonormal bases of the centered column spaces. Invariant to any invertible linear map and
    translation of either side. This is the ``rho-bar`` of Kornblith et al. (2019, Table 1).

    Returns NaN with a warning when ``rank X + rank Y >= n`` (ill-posed; see :func:`svcca`).
    """
    what = "mean CCA"
    Xc, Yc, dx, dy = _prepare(X, Y, what)
    n = Xc.shape[0]
    Ux, _, _ = _basis(Xc)
    Uy, _, _ = _basis(Yc)
    kx, ky = Ux.shape[1], Uy.shape[1]
    if _ill_posed(n, kx, ky, what):
        res = _nan_result(n, kx, ky, dx, dy)
    else:
        rho, _ = _cca(Ux, Uy)
        res = CCAResult(float(rho.mean()), rho, kx, ky, dx, dy, n)
    return res if return_details else res.value


def pwcca(X: Any, Y: Any, *, return_details: bool = False) -> float | CCAResult:
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
    Returns NaN with a warning when ``rank X + rank Y >= n``.
    """
    what = "PWCCA"
    Xc, Yc, dx, dy = _prepare(X, Y, what)
    n = Xc.shape[0]
    Ux, sx, Vx = _basis(Xc)
    Uy, sy, Vy = _basis(Yc)
    kx, ky = Ux.shape[1], Uy.shape[1]
    if _ill_posed(n, kx, ky, what):
        res = _nan_result(n, kx, ky, dx, dy)
        return res if return_details else res.value
    if Xc.shape[1] <= Yc.shape[1]:  # fewer live (non-constant) units, as google/svcca
        rho, A = _cca(Ux, Uy)
        side, s, Vt = "X", sx, Vx
    else:
        rho, A = _cca(Uy, Ux)
        side, s, Vt = "Y", sy, Vy
    # <h_i, z_k> for h = U A and Z = U diag(s) V^T is (A^T diag(s) V^T)_{ik}.
    a = np.abs(A.T @ (s[:, None] * Vt)).sum(axis=1)
    alpha = a / a.sum()
    res = CCAResult(float(alpha @ rho), rho, kx, ky, dx, dy, n, alpha, side)
    return res if return_details else res.value
