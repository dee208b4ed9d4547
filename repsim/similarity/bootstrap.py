"""Bootstrap linear CKA from per-sample statistics: ``O(n^2)`` per resample, not ``O(n d^2)``.

A bootstrap resample draws rows ``i_1..i_n`` with replacement; call ``u_i`` the number of times
row ``i`` was drawn (``sum u = n``) and ``P`` the ``n x n`` selection matrix of the draws
(``P 1 = 1``, ``1^T P = u^T``, ``P^T P = diag(u)``). The resampled data ``X* = P X`` have the Gram
matrix ``P K P^T`` (``K = X X^T``, any fixed centering of ``X``), and centering ``X*`` gives

    H P K P^T H = P K~ P^T,   K~ = K - a 1^T - 1 a^T + alpha 1 1^T,
    a = K u / n,   alpha = u^T K u / n^2                         (weighted centering)

(because ``H P = P - 1 u^T / n``). Hence, with ``b``, ``beta`` the same for ``L = Y Y^T``,

    tr(K*_c L*_c) = sum_ij u_i u_j K~_ij L~_ij
                  = u^T (K o L) u - 2 n sum_i u_i a_i b_i + n^2 alpha beta,

where ``o`` is the elementwise product (expand the sixteen terms; ``u^T 1 = n``,
``K u = n a``, ``u^T a = n alpha``). The debiased estimator also needs the resample's row norms,
the diagonal of ``P K~ P^T``: ``K~_ii = K_ii - 2 a_i + alpha`` for each draw of row ``i``, so

    sum_rows k* = u^T diag(K) - n alpha,    sum_rows k* l* = sum_i u_i K~_ii L~_ii.

These are exactly the quantities :func:`repsim.similarity.cka` computes on ``X[idx]``,
``Y[idx]`` (duplicated rows count as distinct samples there too), so each replicate equals the
naive one to rounding (tested). For ``B`` resamples at once, with ``U`` the ``n x B`` matrix of
counts, everything is a product with ``U``: ``K U`` per layer (shared by every pair the layer
is in) and ``(K o L) U`` per pair, ``n^2 B`` multiply-adds each, against ``B n d^2`` for
recomputing CKA on every resample. ``K`` is computed once per layer and serves every group
(a group's Gram is a submatrix; centering is redone by the weights).

References
----------
Efron, Tibshirani (1993). An Introduction to the Bootstrap. (Percentile intervals.)
Kornblith, Norouzi, Lee, Hinton (2019). Similarity of Neural Network Representations Revisited.
Song, Smola, Gretton, Bedo, Borgwardt (2012). Feature Selection via Dependence Maximization.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import blas

from repsim._core.stats import bootstrap_indices
from repsim.similarity._linear import centered_block, column_stats, hsic_u, mirror_upper

__all__ = [
    "GramSide",
    "bootstrap_counts",
    "bootstrap_linear_cka",
    "centered_gram",
    "resampled_cka",
]


def bootstrap_counts(n: int, n_boot: int, seed: Any = 0) -> np.ndarray:
    """``[n, n_boot]`` float64 counts ``u``: how often each row is drawn in each resample.

    The draws are those of :func:`repsim._core.stats.bootstrap_indices` (and so of
    :func:`repsim._core.stats.bootstrap_replicates` with the same seed).
    """
    idx = bootstrap_indices(n, n_boot, seed)
    flat = (idx + n * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n * n_boot).reshape(n_boot, n).T.astype(np.float64)


def counts_from_indices(idx: np.ndarray, n: int) -> np.ndarray:
    """``[n, B]`` counts from ``[B, n]`` resample indices."""
    b = idx.shape[0]
    flat = (idx + n * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=n * b).reshape(b, n).T.astype(np.float64)


def centered_gram(X: np.ndarray) -> np.ndarray:
    """``K = X_c X_c^T`` (full, symmetric) of column-centered ``X`` (constant columns zeroed).

    Formed with BLAS ``syrk`` (half a product) and mirrored.
    """
    cols = column_stats(X, "X")
    Xc = centered_block(X, cols, slice(0, cols.n))
    n = Xc.shape[0]
    K = np.zeros((n, n), order="F")
    blas.dsyrk(1.0, Xc.T, beta=1.0, c=K, trans=1, overwrite_c=1)
    mirror_upper(K)
    return K


@dataclass
class GramSide:
    """One layer's per-sample statistics under ``B`` resamples: ``K``, ``K U`` and its centring.

    Attributes
    ----------
    K : np.ndarray
        ``n x n`` Gram of the (centered) layer.
    KU : np.ndarray
        ``K U``, ``n x B``.
    a : np.ndarray
        ``K U / n`` (the weighted row means), ``n x B``.
    alpha : np.ndarray
        ``u^T K u / n^2`` per resample, ``B``.
    kdiag : np.ndarray
        Per resample, ``K~_ii = K_ii - 2 a_i + alpha`` (``n x B``).
    """

    K: np.ndarray
    KU: np.ndarray
    a: np.ndarray
    alpha: np.ndarray
    kdiag: np.ndarray

    @classmethod
    def build(cls, K: np.ndarray, U: np.ndarray) -> GramSide:
        """Statistics of Gram ``K`` under the resample counts ``U`` (``n x B``)."""
        n = U.sum(0)
        KU = K @ U
        a = KU / n
        alpha = np.einsum("ib,ib->b", U, KU) / (n * n)
        kdiag = np.diagonal(K)[:, None] - 2.0 * a + alpha[None, :]
        return cls(K, KU, a, alpha, kdiag)


def _cross(
    s: GramSide, t: GramSide, U: np.ndarray, same: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per resample ``c = tr(K*_c L*_c)``, ``sum k* l*``, ``sum k*``, ``sum l*``."""
    n = U.sum(0)
    M = s.K * s.K if same else s.K * t.K
    T1 = np.einsum("ib,ib->b", U, M @ U)
    del M
    c = T1 - 2.0 * n * np.einsum("ib,ib,ib->b", U, s.a, t.a) + n * n * s.alpha * t.alpha
    kl = np.einsum("ib,ib,ib->b", U, s.kdiag, t.kdiag)
    sk = np.einsum("ib,ib->b", U, s.kdiag)
    sl = sk if same else np.einsum("ib,ib->b", U, t.kdiag)
    return c, kl, sk, sl


def resampled_cka(
    s: GramSide,
    t: GramSide,
    U: np.ndarray,
    *,
    debiased: bool = False,
    self_terms: tuple[Any, Any] | None = None,
) -> np.ndarray:
    """Linear CKA of every resample (``B`` values; NaN where undefined) from two :class:`GramSide`.

    ``self_terms``: the ``_cross(s, s)`` and ``_cross(t, t)`` results when already computed
    (they depend on one layer only and are shared by every pair it is in).
    """
    n = U.sum(0)
    cxy, kl, sk, sl = _cross(s, t, U, s is t)
    xx, yy = self_terms or (_cross(s, s, U, True), _cross(t, t, U, True))
    with np.errstate(invalid="ignore", divide="ignore"):
        if not debiased:
            num, dx, dy = cxy, xx[0], yy[0]
        else:
            num = hsic_u(cxy, kl, sk, sl, n)
            dx = hsic_u(*xx, n)
            dy = hsic_u(*yy, n)
        ok = (xx[0] > 0) & (yy[0] > 0) & (dx > 0) & (dy > 0)
        out = np.where(ok, num / np.sqrt(np.where(ok, dx * dy, 1.0)), np.nan)
    return out


def bootstrap_linear_cka(
    X: Any,
    Y: Any,
    *,
    n_boot: int = 200,
    seed: Any = 0,
    debiased: bool = False,
    indices: np.ndarray | None = None,
) -> np.ndarray:
    """Linear CKA on ``n_boot`` bootstrap resamples of the rows of ``X`` and ``Y``.

    Equals ``[cka(X[i], Y[i], debiased=...) for i in indices]`` to rounding, with ``indices``
    the ``[n_boot, n]`` draws of :func:`repsim._core.stats.bootstrap_indices` (``seed``) unless
    given, at ``O(n^2)`` per resample after one ``O(n^2 d)`` Gram per side (module docstring).

    Returns
    -------
    np.ndarray
        One value per resample; NaN where a resample leaves a side without variance.
    """
    X = np.asarray(X)
    Y = np.asarray(Y)
    n = X.shape[0]
    if indices is None:
        U = bootstrap_counts(n, n_boot, seed)
    else:
        U = counts_from_indices(np.asarray(indices), n)
    s, t = GramSide.build(centered_gram(X), U), GramSide.build(centered_gram(Y), U)
    return resampled_cka(s, t, U, debiased=debiased)
