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
from scipy.linalg import blas

from repsim._core.validation import Matrix, as_pair, check_consistent_length, is_torch
from repsim.errors import ConfigError, InsufficientDataError
from repsim.similarity import _linear
from repsim.similarity._center import center, too_few, warn

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

Route = Literal["auto", "feature", "gram"]
Precision = Literal["float64", "float32"]

#: Fewest samples each CKA estimator is defined on. With two samples the centered data have rank
#: one and biased CKA (linear or RBF) is 1 whatever the data; the unbiased HSIC divides by
#: ``n - 3``.
MIN_N = {"biased": 3, "debiased": 4}


def _fro2(A: Matrix) -> float:
    """Squared Frobenius norm ``sum(A * A)`` as a Python float."""
    if is_torch(A):
        return float((A * A).sum())
    return float(np.einsum("ij,ij->", A, A))


def choose_route(
    n: int, d_x: int, d_y: int, *, memory_limit: Any = None, precision: Precision = "float64"
) -> Literal["feature", "gram"]:
    """Pick the route for linear CKA: the cheaper by multiply-adds among those that fit.

    The feature route forms ``X^T Y``, ``X^T X``, ``Y^T Y`` (``n (d_x^2/2 + d_y^2/2 + d_x d_y)``
    multiply-adds, working memory ``8 max(d_x^2, d_y^2, d_x d_y)`` bytes plus a row block); the
    Gram route forms ``X X^T`` and ``Y Y^T`` (``n^2 (d_x + d_y) / 2``, ``16 n^2`` bytes plus a
    column block) and their inner product. With ``memory_limit`` (bytes, or e.g. ``"2GB"``) a
    route whose working memory exceeds it is not taken (see :func:`plan_cka`).
    """
    return _linear.plan(  # type: ignore[return-value]
        n, d_x, d_y, memory_limit=memory_limit, precision=precision
    ).route


def plan_cka(
    n: int,
    d_x: int,
    d_y: int,
    *,
    route: Route = "auto",
    memory_limit: Any = None,
    precision: Precision = "float64",
) -> _linear.Plan:
    """The plan of exact linear CKA: route, block sizes, working-memory estimate, multiply-adds.

    See :func:`repsim.similarity._linear.plan`: the feature route needs
    ``8 max(d_x^2, d_y^2, d_x d_y)`` bytes plus one row block whatever ``n``; the Gram route
    ``16 n^2`` bytes plus one column block whatever ``d`` (or ``16 t n`` in row tiles of ``t``,
    one pass over the columns per tile, when the kernels do not fit ``memory_limit``).
    """
    return _linear.plan(n, d_x, d_y, route=route, memory_limit=memory_limit, precision=precision)


def _self_fro2(Xc: Matrix) -> float:
    """``||Xc^T Xc||_F^2``; numpy computes ``A.T @ A`` with a symmetric rank-k update (syrk)."""
    return _fro2(Xc.T @ Xc)


def _row_norms(Xc: Matrix) -> Matrix:
    return (Xc * Xc).sum(1) if is_torch(Xc) else np.einsum("ij,ij->i", Xc, Xc)


def linear_hsic_terms(
    Xc: Matrix,
    Yc: Matrix,
    route: Route = "auto",
    *,
    row_norms: bool = True,
    precision: Precision = "float64",
) -> tuple[float, float, float, Matrix | None, Matrix | None]:
    """Sufficient statistics of linear CKA on column-centered data (numpy or torch).

    Returns ``(c_xy, c_xx, c_yy, k, l)`` with ``c_xy = ||Xc^T Yc||_F^2 = tr(K L)``,
    ``c_xx = ||Xc^T Xc||_F^2``, ``c_yy = ||Yc^T Yc||_F^2`` and the row norms
    ``k_i = ||x_i||^2 = K_ii``, ``l_i = ||y_i||^2 = L_ii`` (``K = Xc Xc^T``, ``L = Yc Yc^T``;
    None unless ``row_norms``). With ``precision="float32"`` the products are formed in float32
    from the float64-centered data and summed in float64.
    """
    n, d_x = Xc.shape
    d_y = Yc.shape[1]
    if route == "auto":
        feature = n * (d_x * d_x + d_y * d_y + d_x * d_y)
        route = "feature" if feature <= n * n * (d_x + d_y) + 3 * n * n else "gram"
    A, B = Xc, Yc
    if precision == "float32":
        A = Xc.float() if is_torch(Xc) else Xc.astype(np.float32)
        B = Yc.float() if is_torch(Yc) else Yc.astype(np.float32)

    def wide(M: Matrix) -> Matrix:
        return M.double() if is_torch(M) else M.astype(np.float64, copy=False)

    if route == "feature":
        c_xy = _fro2(wide(A.T @ B))
        c_xx = _fro2(wide(A.T @ A))
        c_yy = _fro2(wide(B.T @ B))
    elif route == "gram":
        K = wide(A @ A.T)
        L = wide(B @ B.T)
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


def _rbf_bandwidth2(D2: np.ndarray, threshold: float, bandwidth: str) -> float:
    """``sigma^2`` from the squared distances ``D2`` (full symmetric, zero diagonal), in numpy.

    The strict upper triangle is copied once (half a Gram) and partially sorted in place; the
    diagonal zeros and the doubling of off-diagonal entries are accounted for exactly, so the
    value equals ``np.median`` over all ``n^2`` entries (``"kornblith"``) or over ``i < j``
    (``"median"``, of the distances).
    """
    n = D2.shape[0]
    m = n * (n - 1) // 2
    if m == 0:
        return 0.0
    up = np.empty(m)
    pos = 0
    for j in range(1, n):  # column j of the upper triangle: rows 0..j-1
        up[pos : pos + j] = D2[:j, j]
        pos += j
    if bandwidth == "median":
        ranks = [(m - 1) // 2, m // 2]
        up.partition(ranks)
        return float((threshold * (np.sqrt(up[ranks[0]]) + np.sqrt(up[ranks[1]])) / 2) ** 2)
    total = n * n  # n diagonal zeros, then every off-diagonal value twice, in sorted order
    wanted = [(total - 1) // 2, total // 2]
    idx = sorted({(r - n) // 2 for r in wanted if r >= n})
    if idx:
        up.partition(idx)
    vals = [0.0 if r < n else float(up[(r - n) // 2]) for r in wanted]
    return threshold**2 * (vals[0] + vals[1]) / 2


def _rbf_kernel_inplace(
    Xc: np.ndarray,
    sigma: float | None,
    threshold: float,
    bandwidth: str,
    precision: Precision,
) -> np.ndarray:
    """The RBF Gram of centered ``Xc`` (numpy), built in one ``n x n`` array, in place.

    ``X X^T`` by BLAS ``syrk`` (upper triangle, mirrored), then ``D2 = k_i + k_j - 2 G``
    clipped at 0 with a zero diagonal, the bandwidth, and ``exp(-D2 / (2 sigma^2))``, each in
    place. Equal to :func:`rbf_gram` to rounding.
    """
    n = Xc.shape[0]
    G = np.zeros((n, n), order="F")
    if precision == "float32":
        np.add(G, blas.ssyrk(1.0, Xc.astype(np.float32).T, trans=1), out=G)
    else:
        blas.dsyrk(1.0, Xc.T, beta=1.0, c=G, trans=1, overwrite_c=1)  # Xc C-ordered: no copy
    _linear.mirror_upper(G)
    sq = np.diagonal(G).copy()
    G *= -2.0
    G += sq[:, None]
    G += sq[None, :]
    np.maximum(G, 0.0, out=G)
    np.fill_diagonal(G, 0.0)
    if sigma is not None:
        if not sigma > 0:
            raise ConfigError(f"sigma must be a positive bandwidth, got {sigma!r}.")
        s2 = float(sigma) ** 2
    elif bandwidth in ("kornblith", "median"):
        s2 = _rbf_bandwidth2(G, threshold, bandwidth)
    else:
        raise ConfigError(f"bandwidth must be 'kornblith' or 'median', got {bandwidth!r}.")
    if not s2 > 0:
        G[:] = np.nan
        return G
    G *= -1.0 / (2.0 * s2)
    np.exp(G, out=G)
    return G


def _center_gram_inplace(K: np.ndarray) -> np.ndarray:
    """``H K H`` of a symmetric ``K`` in place (row means = column means)."""
    m = K.mean(1)
    K -= m[:, None]
    K -= m[None, :]
    K += m.mean()
    return K


def _hsic_u_zeroed(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al.'s ``HSIC_1`` of symmetric ``K``, ``L`` whose diagonals are already zero."""
    n = K.shape[0]
    t1 = float(np.einsum("ij,ij->", K, L))
    rk = K.sum(1)
    rl = rk if L is K else L.sum(1)
    sk, sl = float(rk.sum()), float(rl.sum())
    t3 = float(rk @ rl)
    return (t1 + sk * sl / ((n - 1) * (n - 2)) - 2.0 * t3 / (n - 2)) / (n * (n - 3))


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
    precision: Precision = "float64",
    memory_limit: Any = None,
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
        (numpy, torch CPU/CUDA, ``zarr.Array``, any real dtype). Computed in float64 after
        centering columns; torch inputs are computed on their device. numpy and Zarr inputs are
        read in blocks and never copied whole (linear kernel).
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
        ``"auto"`` picks the cheaper one that fits ``memory_limit``. Both give the same value
        (to rounding); see :func:`plan_cka` for their memory.
    precision : {"float64", "float32"}
        ``"float64"`` (default): exact to rounding. ``"float32"``: center in float64, multiply
        in float32, accumulate in float64; about twice as fast, relative error about ``1e-7``
        (docs/similarity.md).
    memory_limit : int or str, optional
        Linear only: bound on the working memory beyond the inputs (bytes, or e.g. ``"2GB"``);
        the route and block sizes are chosen to respect it (:func:`plan_cka`).

    Returns
    -------
    float
        In ``[0, 1]`` for biased CKA (1 = identical up to rotation and scale); NaN with a
        :class:`SimilarityWarning` when a side has zero variance, or with fewer samples than
        the estimator needs (3 for biased CKA, whose value on 2 samples is 1 by construction;
        4 for debiased CKA).

    Raises
    ------
    ShapeError, NonFiniteError, ConfigError
        Bad shapes, NaN/inf, unknown option.
    """
    if kernel not in ("linear", "rbf"):
        raise ConfigError(f"kernel must be 'linear' or 'rbf', got {kernel!r}.")
    _linear.check_precision(precision)
    min_n = MIN_N["debiased" if debiased else "biased"]
    what = ("debiased " if debiased else "") + "CKA"
    if is_torch(X) or is_torch(Y):
        return _cka_torch(X, Y, kernel, debiased, sigma, threshold, bandwidth, route, precision)
    Xs, Ys = _linear.as_source(X, "X"), _linear.as_source(Y, "Y")
    n = check_consistent_length(Xs, Ys, names=("X", "Y"))
    if n < min_n:
        if n < 1:
            raise InsufficientDataError(f"{what} needs at least {min_n} samples, got {n}.")
        return too_few(what, n, min_n)
    if kernel == "linear":
        t = _linear.linear_terms(
            Xs,
            Ys,
            route=route,
            memory_limit=memory_limit,
            precision=precision,
            need_row_norms=debiased,
        )
        if t.c_xx == 0 or t.c_yy == 0:
            return _ratio(t.c_xy, t.c_xx, t.c_yy, what)
        return _ratio(*_linear.cka_from_terms(t, debiased), what)
    cx, cy = _linear.column_stats(Xs, "X"), _linear.column_stats(Ys, "Y")
    Xc = _linear.centered_block(Xs, cx, slice(0, n))
    Yc = _linear.centered_block(Ys, cy, slice(0, n))
    nx, ny = _fro2(Xc), _fro2(Yc)
    if nx == 0 or ny == 0:
        return _ratio(0.0, nx, ny, what)
    sx, sy = sigma if isinstance(sigma, tuple) else (sigma, sigma)
    K = _rbf_kernel_inplace(Xc, sx, threshold, bandwidth, precision)
    del Xc
    L = _rbf_kernel_inplace(Yc, sy, threshold, bandwidth, precision)
    del Yc
    if debiased:
        np.fill_diagonal(K, 0.0)
        np.fill_diagonal(L, 0.0)
        hxy = _hsic_u_zeroed(K, L)
        hxx = _hsic_u_zeroed(K, K)
        hyy = _hsic_u_zeroed(L, L)
        return _ratio(hxy, hxx, hyy, what)
    Kc, Lc = _center_gram_inplace(K), _center_gram_inplace(L)
    return _ratio(float(np.einsum("ij,ij->", Kc, Lc)), _fro2(Kc), _fro2(Lc), what)


def _cka_torch(
    X: Any,
    Y: Any,
    kernel: str,
    debiased: bool,
    sigma: Any,
    threshold: float,
    bandwidth: Any,
    route: Route,
    precision: Precision,
) -> float:
    """:func:`cka` on torch tensors, on their device (float64 after centering)."""
    min_n = MIN_N["debiased" if debiased else "biased"]
    what = ("debiased " if debiased else "") + "CKA"
    Xm, Ym = as_pair(X, Y, min_n=1, what=what)
    n = Xm.shape[0]
    if n < min_n:
        return too_few(what, n, min_n)
    Xc, Yc = center(Xm), center(Ym)
    if kernel == "linear":
        c_xy, c_xx, c_yy, k, l = linear_hsic_terms(  # noqa: E741
            Xc, Yc, route, row_norms=debiased, precision=precision
        )
        if c_xx == 0 or c_yy == 0 or not debiased:
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
