"""Centered kernel alignment (CKA): linear and RBF, biased and debiased.

References
----------
Kornblith, Norouzi, Lee, Hinton (2019). Similarity of Neural Network Representations Revisited.
ICML. (CKA, the RBF bandwidth convention.)
Gretton, Bousquet, Smola, Schoelkopf (2005). Measuring Statistical Dependence with
Hilbert-Schmidt Norms. ALT. (HSIC.)
Song, Smola, Gretton, Bedo, Borgwardt (2012). Feature Selection via Dependence Maximization.
JMLR 13. (The unbiased HSIC estimator, eq. 5.)
Nguyen, Raghu, Kornblith (2021). Do Wide and Deep Networks Learn the Same Things? ICLR.
(Debiased and minibatch CKA.)
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from repsim._core.validation import Matrix, as_pair, is_torch
from repsim.errors import ConfigError, InsufficientDataError
from repsim.similarity._center import center, warn

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

Route = Literal["auto", "feature", "gram"]


def _fro2(A: Matrix) -> float:
    """Squared Frobenius norm ``sum(A * A)`` as a Python float."""
    if is_torch(A):
        return float((A * A).sum())
    return float(np.einsum("ij,ij->", A, A))


def choose_route(n: int, d_x: int, d_y: int) -> Literal["feature", "gram"]:
    """Pick the cheaper route for linear CKA by multiply-add count.

    The feature route forms ``X^T Y``, ``X^T X``, ``Y^T Y``: ``n (d_x + d_y)^2`` flops at most.
    The Gram route forms ``X X^T`` and ``Y Y^T`` (``n^2 (d_x + d_y)``) and their inner product.
    """
    feature = n * (d_x * d_x + d_y * d_y + d_x * d_y)
    gram = n * n * (d_x + d_y) + 3 * n * n
    return "feature" if feature <= gram else "gram"


def _self_fro2(Xc: Matrix) -> float:
    """``||Xc^T Xc||_F^2``; numpy computes ``A.T @ A`` with a symmetric rank-k update (syrk)."""
    return _fro2(Xc.T @ Xc)


def _row_norms(Xc: Matrix) -> Matrix:
    return (Xc * Xc).sum(1) if is_torch(Xc) else np.einsum("ij,ij->i", Xc, Xc)


def linear_hsic_terms(
    Xc: Matrix, Yc: Matrix, route: Route = "auto", *, row_norms: bool = True
) -> tuple[float, float, float, Matrix | None, Matrix | None]:
    """Sufficient statistics of linear CKA on column-centered data.

    Returns ``(c_xy, c_xx, c_yy, k, l)`` with ``c_xy = ||Xc^T Yc||_F^2 = tr(K L)``,
    ``c_xx = ||Xc^T Xc||_F^2``, ``c_yy = ||Yc^T Yc||_F^2`` and the row norms
    ``k_i = ||x_i||^2 = K_ii``, ``l_i = ||y_i||^2 = L_ii`` (``K = Xc Xc^T``, ``L = Yc Yc^T``;
    None unless ``row_norms``). The feature route needs one ``d_x x d_y`` matrix product and two
    symmetric ones (numpy evaluates ``A.T @ A`` with syrk, half the cost of a product).
    """
    n, d_x = Xc.shape
    d_y = Yc.shape[1]
    if route == "auto":
        route = choose_route(n, d_x, d_y)
    if route == "feature":
        c_xy = _fro2(Xc.T @ Yc)
        c_xx = _self_fro2(Xc)
        c_yy = _self_fro2(Yc)
    elif route == "gram":
        K = Xc @ Xc.T
        L = Yc @ Yc.T
        c_xy = float((K * L).sum())
        c_xx = _fro2(K)
        c_yy = _fro2(L)
    else:
        raise ConfigError(f"route must be 'auto', 'feature' or 'gram', got {route!r}.")
    if not row_norms:
        return c_xy, c_xx, c_yy, None, None
    return c_xy, c_xx, c_yy, _row_norms(Xc), _row_norms(Yc)


def hsic_unbiased_from_terms(c: float, k: Matrix, l: Matrix, n: int) -> float:  # noqa: E741
    """Song et al.'s unbiased HSIC for linear kernels on column-centered data.

    With ``K~``, ``L~`` the Gram matrices with zeroed diagonals,

    ``HSIC_1 = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n(n-3))``.

    For centered data ``K 1 = 0``, so ``tr(K~ L~) = c - k.l``, ``1^T K~ 1 = -sum(k)``, and
    ``1^T K~ L~ 1 = k.l``.
    """
    kl = float((k * l).sum())
    sk, sl = float(k.sum()), float(l.sum())
    return (c - kl + sk * sl / ((n - 1) * (n - 2)) - 2.0 * kl / (n - 2)) / (n * (n - 3))


def hsic_unbiased_gram(K: Matrix, L: Matrix) -> float:
    """Song et al. (2012, eq. 5) unbiased HSIC from two (uncentered) ``n x n`` Gram matrices.

    ``HSIC_1 = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n(n-3))``
    where ``K~`` is ``K`` with its diagonal set to zero. Needs ``n >= 4``.
    """
    n = K.shape[0]
    if n < 4:
        raise InsufficientDataError(f"the unbiased HSIC needs n >= 4 samples, got {n}.")
    Kt, Lt = _zero_diag(K), _zero_diag(L)
    t1 = float((Kt * Lt).sum())
    sk, sl = float(Kt.sum()), float(Lt.sum())
    t3 = float((Kt.sum(1) * Lt.sum(1)).sum())
    return (t1 + sk * sl / ((n - 1) * (n - 2)) - 2.0 * t3 / (n - 2)) / (n * (n - 3))


def _zero_diag(K: Matrix) -> Matrix:
    K = K.clone() if is_torch(K) else K.copy()
    if is_torch(K):
        K.fill_diagonal_(0.0)
    else:
        np.fill_diagonal(K, 0.0)
    return K


def _center_gram(K: Matrix) -> Matrix:
    """``H K H`` with ``H = I - 11^T / n``."""
    if is_torch(K):
        return K - K.mean(0, keepdim=True) - K.mean(1, keepdim=True) + K.mean()
    return K - K.mean(0, keepdims=True) - K.mean(1, keepdims=True) + K.mean()


def _ratio(num: float, den_x: float, den_y: float, what: str) -> float:
    if den_x <= 0 or den_y <= 0:
        side = "X" if den_x <= 0 else "Y"
        warn(
            f"{what} is undefined: {side} has zero variance (every unit constant, e.g. a fully "
            "pruned layer) or a non-positive debiased self-HSIC (too few samples); returning NaN."
        )
        return float("nan")
    return float(num / np.sqrt(den_x * den_y))


def _median(a: Matrix) -> float:
    """Median of all entries, averaging the two middle values for an even count (np.median)."""
    if not is_torch(a):
        return float(np.median(a))
    flat = a.reshape(-1)
    m = flat.numel()
    lo = flat.kthvalue((m + 1) // 2).values
    hi = flat.kthvalue(m // 2 + 1).values
    return float((lo + hi) / 2)


def rbf_gram(
    X: Matrix,
    *,
    sigma: float | None = None,
    threshold: float = 1.0,
    bandwidth: Literal["kornblith", "median"] = "kornblith",
) -> Matrix:
    """RBF Gram matrix ``K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2))`` of centered rows.

    Parameters
    ----------
    X : matrix
        ``[n, d]`` float64 (numpy or torch).
    sigma : float, optional
        Absolute bandwidth. When None, it is set relative to the data by ``bandwidth``.
    threshold : float
        The multiplier ``t`` of the data-dependent bandwidth.
    bandwidth : {"kornblith", "median"}
        ``"kornblith"`` (default; Kornblith et al. 2019 and their reference code):
        ``sigma^2 = t^2 median(D2)``, the median taken over all ``n^2`` squared distances
        *including* the zero diagonal. ``"median"``: the median heuristic of Gretton et al.,
        ``sigma = t median_{i<j} ||x_i - x_j||``, off-diagonal distances only.
    """
    sq = (X * X).sum(1)
    D2 = sq[:, None] + sq[None, :] - 2.0 * (X @ X.T)
    D2 = D2.clip(min=0.0)
    if is_torch(D2):
        D2.fill_diagonal_(0.0)
    else:
        np.fill_diagonal(D2, 0.0)
    if sigma is not None:
        if not sigma > 0:
            raise ConfigError(f"sigma must be a positive bandwidth, got {sigma!r}.")
        s2 = float(sigma) ** 2
    elif bandwidth == "kornblith":
        s2 = threshold**2 * _median(D2)
    elif bandwidth == "median":
        n = D2.shape[0]
        if is_torch(D2):
            iu = torch.triu_indices(n, n, 1, device=D2.device)
            dist = D2[iu[0], iu[1]].sqrt()
        else:
            dist = np.sqrt(D2[np.triu_indices(n, 1)])
        s2 = (threshold * _median(dist)) ** 2
    else:
        raise ConfigError(f"bandwidth must be 'kornblith' or 'median', got {bandwidth!r}.")
    if not s2 > 0:
        return D2 * float("nan")
    return (-D2 / (2.0 * s2)).exp() if is_torch(D2) else np.exp(-D2 / (2.0 * s2))


def cka(
    X: Any,
    Y: Any,
    *,
    kernel: Literal["linear", "rbf"] = "linear",
    debiased: bool = False,
    sigma: float | tuple[float, float] | None = None,
    threshold: float = 1.0,
    bandwidth: Literal["kornblith", "median"] = "kornblith",
    route: Route = "auto",
) -> float:
    """Centered kernel alignment between two representations of the same samples.

    ``CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` (Kornblith et al. 2019), with
    ``K``, ``L`` the Gram matrices of ``X`` and ``Y`` (rows = samples). For the linear kernel on
    column-centered data this is ``||X^T Y||_F^2 / (||X^T X||_F ||Y^T Y||_F)``.

    * Biased (default): ``HSIC(K, L) = tr(K H L H) / (n - 1)^2`` (Gretton et al. 2005); the
      normaliser cancels in the ratio.
    * ``debiased=True``: HSIC is Song et al.'s (2012) unbiased estimator ``HSIC_1`` (see
      :func:`hsic_unbiased_gram`), as in Nguyen et al. (2021) and Kornblith's reference code.
      Debiased CKA of independent representations is near 0; biased linear CKA of independent
      Gaussians sits near ``d / (n - 1 + d)``. Needs ``n >= 4``; can be slightly negative.

    Parameters
    ----------
    X, Y : array-like
        ``[n, d_x]`` and ``[n, d_y]`` activations of the same ``n`` samples in the same order
        (numpy, torch CPU/CUDA, any real dtype). Computed in float64 after centering columns;
        torch inputs are computed on their device.
    kernel : {"linear", "rbf"}
        The kernel.
    debiased : bool
        Use the unbiased HSIC estimator.
    sigma : float or (float, float), optional
        RBF only: an absolute bandwidth (one for both, or one per side). Default: relative to
        each side's distances, ``threshold`` times the median distance (see :func:`rbf_gram`).
    threshold : float
        RBF only: the multiplier of the median distance (Kornblith et al. use 0.2-1.0; the
        default 1.0 is their code's default).
    bandwidth : {"kornblith", "median"}
        RBF only: which median, see :func:`rbf_gram`.
    route : {"auto", "feature", "gram"}
        Linear only: compute from ``d x d`` feature products or ``n x n`` Gram matrices;
        ``"auto"`` picks the cheaper one. Both give the same value (to rounding).

    Returns
    -------
    float
        In ``[0, 1]`` for biased CKA (1 = identical up to rotation and scale); NaN with a
        :class:`SimilarityWarning` when a side has zero variance.

    Raises
    ------
    ShapeError, NonFiniteError, InsufficientDataError, ConfigError
        Bad shapes, NaN/inf, too few samples (``n < 4`` with ``debiased``), unknown option.
    """
    if kernel not in ("linear", "rbf"):
        raise ConfigError(f"kernel must be 'linear' or 'rbf', got {kernel!r}.")
    min_n = 4 if debiased else 2
    what = ("debiased " if debiased else "") + "CKA"
    Xm, Ym = as_pair(X, Y, min_n=min_n, what=what)
    n = Xm.shape[0]
    Xc, Yc = center(Xm), center(Ym)
    if kernel == "linear":
        c_xy, c_xx, c_yy, k, l = linear_hsic_terms(Xc, Yc, route, row_norms=debiased)  # noqa: E741
        if c_xx == 0 or c_yy == 0:
            return _ratio(c_xy, c_xx, c_yy, what)
        if not debiased:
            return _ratio(c_xy, c_xx, c_yy, what)
        h_xy = hsic_unbiased_from_terms(c_xy, k, l, n)
        h_xx = hsic_unbiased_from_terms(c_xx, k, k, n)
        h_yy = hsic_unbiased_from_terms(c_yy, l, l, n)
        return _ratio(h_xy, h_xx, h_yy, what)
    sx, sy = sigma if isinstance(sigma, tuple) else (sigma, sigma)
    if _fro2(Xc) == 0 or _fro2(Yc) == 0:
        return _ratio(0.0, _fro2(Xc), _fro2(Yc), what)
    K = rbf_gram(Xc, sigma=sx, threshold=threshold, bandwidth=bandwidth)
    L = rbf_gram(Yc, sigma=sy, threshold=threshold, bandwidth=bandwidth)
    if debiased:
        return _ratio(
            hsic_unbiased_gram(K, L), hsic_unbiased_gram(K, K), hsic_unbiased_gram(L, L), what
        )
    Kc, Lc = _center_gram(K), _center_gram(L)
    return _ratio(float((Kc * Lc).sum()), _fro2(Kc), _fro2(Lc), what)


def linear_cka(X: Any, Y: Any, **options: Any) -> float:
    """Biased linear CKA, ``cka(X, Y, kernel="linear")``; see :func:`cka`."""
    return cka(X, Y, kernel="linear", debiased=False, **options)


def linear_cka_debiased(X: Any, Y: Any, **options: Any) -> float:
    """Debiased linear CKA, ``cka(X, Y, kernel="linear", debiased=True)``; see :func:`cka`."""
    return cka(X, Y, kernel="linear", debiased=True, **options)


def rbf_cka(X: Any, Y: Any, **options: Any) -> float:
    """RBF CKA with Kornblith's bandwidth (``threshold`` x median distance); see :func:`cka`."""
    return cka(X, Y, kernel="rbf", **options)
