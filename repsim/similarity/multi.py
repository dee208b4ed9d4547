"""Exact linear CKA between many layers from one pass over their rows (each layer read once).

:class:`MultiLayerCKAAccumulator` is :class:`repsim.similarity.LinearCKAAccumulator` for ``L``
layers at once: it keeps, over rows shifted by the first batch's means (so an offset never meets
a product), per layer ``s_l = sum x_l``, ``a_l = sum k_l`` (``k_l = ||x_l||^2`` per row), the
``L x L`` matrix ``KK_lm = sum k_l k_m``, the vectors ``KZ_{l,(m)} = sum k_l x_m``, and the
cross-product sums ``G_lm = sum x_l x_m^T`` of the requested pairs only (``syrk`` for
``l = m``). :meth:`result` re-bases to the exact means, ``delta_l = -s_l / n``, with the
formulas of docs/similarity.md written for a pair of layers ``(l, m)``
(``D_l = ||delta_l||^2``, ``sd_l = s_l.delta_l``):

    G'_lm  = G_lm + s_l delta_m^T + delta_l s_m^T + n delta_l delta_m^T
    a'_l   = a_l + 2 sd_l + n D_l
    KK'_lm = KK_lm + 2 KZ_{l,(m)}.delta_m + D_m a_l + 2 KZ_{m,(l)}.delta_l
             + 4 delta_l^T G_lm delta_m + 2 D_m sd_l + D_l a_m + 2 D_l sd_m + n D_l D_m

then ``c_lm = ||G'_lm||_F^2`` and biased CKA ``c_lm / sqrt(c_ll c_mm)`` or Song et al.'s
unbiased HSIC ``HSIC_1(c_lm, KK'_lm, a'_l, a'_m)``. An ``L x L`` matrix therefore costs one
read of each layer and one product per unordered pair (self products at half cost), against
``L^2`` passes over the data pair by pair. Memory: ``sum over pairs of 8 d_l d_m`` bytes plus
one row batch of every layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.linalg import blas

from repsim._core.validation import as_matrix
from repsim.errors import InsufficientDataError, NonFiniteError, ShapeError
from repsim.similarity._center import too_few, warn
from repsim.similarity._linear import hsic_u, mirror_upper

__all__ = ["MultiLayerCKAAccumulator"]


class MultiLayerCKAAccumulator:
    """Exact streaming linear CKA (biased and debiased) for chosen pairs of ``L`` layers.

    Parameters
    ----------
    widths : sequence of int
        Features of each layer.
    pairs : sequence of (int, int)
        The layer pairs whose CKA is wanted (indices into ``widths``); self pairs are added.
    dense : bool, optional
        Keep every product in one ``(sum d) x (sum d)`` matrix updated by one ``syrk`` per batch
        (default: when the wanted products are at least two thirds of it), else only the
        wanted blocks.
    """

    def __init__(
        self,
        widths: Sequence[int],
        pairs: Sequence[tuple[int, int]],
        *,
        dense: bool | None = None,
    ) -> None:
        self.widths = [int(w) for w in widths]
        L = len(self.widths)
        want = {(min(i, j), max(i, j)) for i, j in pairs} | {(i, i) for i in range(L)}
        self.pairs = sorted(want)
        self.n = 0
        self.c: list[np.ndarray] = []
        self.s = [np.zeros(w) for w in self.widths]
        self.a = np.zeros(L)
        self.KK = np.zeros((L, L))
        self.KZ = [np.zeros((L, w)) for w in self.widths]
        total = sum(self.widths)
        wanted = sum(self.widths[i] * self.widths[j] for i, j in self.pairs)
        # most pairs wanted: one syrk of the concatenated batch forms every product at once
        self.dense = total * (total + 1) / 2 <= 1.5 * wanted if dense is None else dense
        self.edges = np.cumsum([0, *self.widths])
        self.Gfull = np.zeros((total, total), order="F") if self.dense else None
        self.G = (
            {}
            if self.dense
            else {
                (i, j): np.zeros((self.widths[i], self.widths[j]), order="F") for i, j in self.pairs
            }
        )
        self._cached: Any = None

    @staticmethod
    def bytes_needed(widths: Sequence[int], pairs: Sequence[tuple[int, int]]) -> int:
        """The state's size in bytes (the cross-product sums dominate)."""
        want = {(min(i, j), max(i, j)) for i, j in pairs} | {(i, i) for i in range(len(widths))}
        return 8 * sum(widths[i] * widths[j] for i, j in want)

    def update(self, batches: Sequence[Any]) -> MultiLayerCKAAccumulator:
        """Add one row batch of every layer (same rows, any float dtype); returns ``self``.

        The shifted rows of all layers are written once into one ``m x sum(d)`` float64 block;
        NaN or infinity is caught from the column sums (:meth:`results` raises
        ``NonFiniteError``), so no mask is built per batch.
        """
        self._cached = None
        arrs = [np.asarray(b) for b in batches]
        for i, b in enumerate(arrs):
            if b.ndim != 2 or b.shape[1] != self.widths[i]:
                as_matrix(b, f"layer {i}", allow_torch=False)  # the ShapeError for bad input
                raise ShapeError(
                    f"layer {i}: a batch of shape {b.shape} but the accumulator holds "
                    f"{self.widths[i]} features; every batch must come from the same layers."
                )
        if self.n == 0:
            self.c = [b.mean(0, dtype=np.float64) for b in arrs]
        m = arrs[0].shape[0]
        e = self.edges
        Z = np.empty((m, e[-1]))
        for i, (b, c) in enumerate(zip(arrs, self.c, strict=True)):
            np.subtract(b, c, out=Z[:, e[i] : e[i + 1]], casting="same_kind")
        kn = np.stack(
            [
                np.einsum("ij,ij->i", Z[:, e[i] : e[i + 1]], Z[:, e[i] : e[i + 1]])
                for i in range(len(arrs))
            ],
            axis=1,
        )  # m x L
        self.n += m
        self.a += kn.sum(0)
        self.KK += kn.T @ kn
        zsum = Z.sum(0)
        kz = kn.T @ Z
        zs = [Z[:, e[i] : e[i + 1]] for i in range(len(arrs))]
        for i in range(len(arrs)):
            self.s[i] += zsum[e[i] : e[i + 1]]
            self.KZ[i] += kz[:, e[i] : e[i + 1]]
        if self.dense:
            self.Gfull = blas.dsyrk(1.0, Z.T, beta=1.0, c=self.Gfull, trans=0, overwrite_c=1)
            return self
        for i, j in self.pairs:
            if i == j:
                zi = np.ascontiguousarray(zs[i])
                self.G[(i, j)] = blas.dsyrk(
                    1.0, zi.T, beta=1.0, c=self.G[(i, j)], trans=0, overwrite_c=1
                )
            else:
                zi, zj = np.ascontiguousarray(zs[i]), np.ascontiguousarray(zs[j])
                self.G[(i, j)] = blas.dgemm(
                    1.0, zi.T, zj.T, beta=1.0, c=self.G[(i, j)], trans_b=1, overwrite_c=1
                )
        return self

    def _terms(self) -> tuple[dict[tuple[int, int], float], np.ndarray, np.ndarray]:
        """``c_lm`` for the pairs, ``KK'`` and ``a'`` about the exact means."""
        n = self.n
        L = len(self.widths)
        d = [-s / n for s in self.s]
        D = np.array([float(v @ v) for v in d])
        sd = np.array([float(s @ v) for s, v in zip(self.s, d, strict=True)])
        a2 = self.a + 2 * sd + n * D
        KK2 = np.full((L, L), np.nan)
        c: dict[tuple[int, int], float] = {}
        if self.dense:
            mirror_upper(self.Gfull)
        e = self.edges
        for i, j in self.pairs:
            if self.dense:
                G = self.Gfull[e[i] : e[i + 1], e[j] : e[j + 1]]
            else:
                G = self.G[(i, j)]
                if i == j:
                    mirror_upper(G)
            Gd = G @ d[j]
            kk = (
                self.KK[i, j]
                + 2 * float(self.KZ[j][i] @ d[j])  # KZ[m][l] = sum_rows k_l x_m
                + D[j] * self.a[i]
                + 2 * float(self.KZ[i][j] @ d[i])
                + 4 * float(d[i] @ Gd)
                + 2 * D[j] * sd[i]
                + D[i] * self.a[j]
                + 2 * D[i] * sd[j]
                + n * D[i] * D[j]
            )
            KK2[i, j] = KK2[j, i] = kk
            Gc = (
                G + np.outer(self.s[i], d[j]) + np.outer(d[i], self.s[j]) + n * np.outer(d[i], d[j])
            )
            c[(i, j)] = c[(j, i)] = float(np.einsum("ij,ij->", Gc, Gc))
        return c, KK2, a2

    def result(self, i: int, j: int, *, debiased: bool = False) -> float:
        """Linear CKA of layers ``i`` and ``j`` over every row seen (NaN with a warning if undefined)."""
        return self.results([(i, j)], debiased=debiased)[0]

    def results(self, pairs: Sequence[tuple[int, int]], *, debiased: bool = False) -> list[float]:
        """:meth:`result` for several pairs, re-basing once."""
        if self.n == 0:
            raise InsufficientDataError("the accumulator is empty; call update() first.")
        need = 4 if debiased else 3
        what = ("debiased " if debiased else "") + "CKA"
        if self.n < need:
            return [too_few(what, self.n, need) for _ in pairs]
        if self._cached is None:
            for i, v in enumerate(self.s):
                if not (np.all(np.isfinite(v)) and np.isfinite(self.a[i])):
                    raise NonFiniteError(
                        f"layer {i} holds NaN or infinite values; remove those samples or fix "
                        "the capture (a NaN row in a store array is a row never written: run "
                        "`repsim cache verify`)."
                    )
            self._cached = self._terms()
        c, KK, a = self._cached
        out = []
        for i, j in pairs:
            if c[(i, i)] <= 0 or c[(j, j)] <= 0:
                warn(f"{what} is undefined: a layer has zero variance; returning NaN.")
                out.append(float("nan"))
                continue
            if not debiased:
                out.append(c[(i, j)] / float(np.sqrt(c[(i, i)] * c[(j, j)])))
                continue
            n = self.n
            h = hsic_u(c[(i, j)], KK[i, j], a[i], a[j], n)
            hi = hsic_u(c[(i, i)], KK[i, i], a[i], a[i], n)
            hj = hsic_u(c[(j, j)], KK[j, j], a[j], a[j], n)
            if hi <= 0 or hj <= 0:
                warn(f"{what} is undefined: a non-positive self-HSIC; returning NaN.")
                out.append(float("nan"))
                continue
            out.append(float(h / np.sqrt(hi * hj)))
        return out
