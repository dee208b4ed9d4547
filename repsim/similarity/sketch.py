"""APPROXIMATE linear CKA from random sketches, with error bars, for when both n and d are huge.

Exact CKA costs ``n d^2`` (feature route) or ``n^2 d`` (Gram route). When neither fits the time
or memory at hand, :func:`sketched_cka` projects each layer's rows to ``k`` dimensions with a
CountSketch ``S`` (``d x k``, one ``+-1`` per row, hashed column; Charikar, Chen, Farach-Colton
2002; Clarkson & Woodruff 2013), whose ``E[S S^T] = I``: the sketched Gram
``K_S = X S S^T X^T`` is an unbiased estimate of ``K = X X^T``. HSIC is bilinear in its two
kernels, so with *independent* sketches ``S_1``, ``S_2``:

    E tr(K_S1 H L_T1 H) = tr(K H L H)           (cross term, X and Y sketched independently)
    E tr(K_S1 H K_S2 H) = tr(K H K H)           (self term, two independent sketches of X)

and likewise for Song et al.'s unbiased HSIC (debiased CKA). Each repeat ``r`` draws four
sketches (two per side); the estimate is ``mean_r h_xy / sqrt(mean_r h_xx mean_r h_yy)``
(a ratio of unbiased estimates: consistent, not itself unbiased), and its standard error is the
jackknife over repeats. The cost is ``O(n d)`` per sketch plus ``O(n k^2)``; memory
``O(k^2)`` per accumulator, whatever ``n`` and ``d``; rows are read in batches (Zarr works).

The result is labelled approximate (:class:`SketchedCKA`); use :func:`repsim.similarity.cka`
or :func:`repsim.similarity.stream_cka` for the exact value whenever they fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from repsim._core.rows import iter_rows
from repsim._core.validation import as_matrix
from repsim.errors import ConfigError
from repsim.similarity._center import too_few
from repsim.similarity._linear import hsic_u
from repsim.similarity.streaming import LinearCKAAccumulator

__all__ = ["SketchedCKA", "sketched_cka"]


@dataclass(frozen=True)
class SketchedCKA:
    """An APPROXIMATE CKA value with its error bar (see :func:`sketched_cka`).

    Attributes
    ----------
    value : float
        The estimate.
    stderr : float
        Jackknife standard error over the ``n_sketches`` repeats.
    ci_low, ci_high : float
        ``value -/+ 1.96 stderr`` (a normal approximation).
    n_components : int
        Sketch width ``k``.
    n_sketches : int
        Independent repeats.
    approximate : bool
        Always True: this is not the exact CKA.
    """

    value: float
    stderr: float
    ci_low: float
    ci_high: float
    n_components: int
    n_sketches: int
    approximate: bool = True

    def __float__(self) -> float:
        return self.value


def _count_sketch(d: int, k: int, rng: np.random.Generator) -> Any:
    import scipy.sparse

    cols = rng.integers(0, k, size=d)
    signs = rng.choice(np.array([-1.0, 1.0]), size=d)
    return scipy.sparse.csr_matrix((signs, (np.arange(d), cols)), shape=(d, k))


def sketched_cka(
    X: Any,
    Y: Any,
    *,
    n_components: int = 512,
    n_sketches: int = 4,
    debiased: bool = False,
    seed: int | None = 0,
    batch_size: int = 2048,
    progress: bool | None = None,
) -> SketchedCKA:
    """APPROXIMATE linear CKA of two row-aligned arrays from CountSketch projections.

    Parameters
    ----------
    X, Y : array-like
        ``[n, d_x]``, ``[n, d_y]`` (numpy or ``zarr.Array``; read ``batch_size`` rows at a time).
    n_components : int
        Sketch width ``k`` (the error shrinks about as ``1 / sqrt(k)``).
    n_sketches : int
        Independent repeats (at least 2, for the jackknife error bar).
    debiased : bool
        Sketch the unbiased HSIC (debiased CKA) instead of the biased one.
    seed : int, optional
        Seed of the sketches.

    Returns
    -------
    SketchedCKA
        ``value``, ``stderr``, a normal ``ci_low``/``ci_high``, marked ``approximate``.
    """
    if n_components < 1 or n_sketches < 2:
        raise ConfigError(
            f"need n_components >= 1 and n_sketches >= 2 (for the error bar), got "
            f"{n_components} and {n_sketches}."
        )
    n = int(X.shape[0])
    need = 4 if debiased else 3
    if n < need:
        v = too_few(("debiased " if debiased else "") + "sketched CKA", n, need)
        return SketchedCKA(v, math.nan, math.nan, math.nan, n_components, n_sketches)
    rng = np.random.default_rng(seed)
    dx, dy = int(X.shape[1]), int(Y.shape[1])
    k = int(n_components)
    sk = [
        [_count_sketch(dx, k, rng), _count_sketch(dx, k, rng)]
        + [_count_sketch(dy, k, rng), _count_sketch(dy, k, rng)]
        for _ in range(n_sketches)
    ]
    # per repeat: (X1, Y1), (X2, Y2), (X1, X2), (Y1, Y2)
    accs = [[LinearCKAAccumulator() for _ in range(4)] for _ in range(n_sketches)]
    for xb, yb in iter_rows([X, Y], batch_size, progress=progress, desc="sketched CKA"):
        xb = as_matrix(np.asarray(xb), "X", allow_torch=False)
        yb = as_matrix(np.asarray(yb), "Y", allow_torch=False)
        for (sx1, sx2, sy1, sy2), acc in zip(sk, accs, strict=True):
            x1, x2 = np.asarray(xb @ sx1), np.asarray(xb @ sx2)
            y1, y2 = np.asarray(yb @ sy1), np.asarray(yb @ sy2)
            acc[0].update(x1, y1)
            acc[1].update(x2, y2)
            acc[2].update(x1, x2)
            acc[3].update(y1, y2)

    def h(acc: LinearCKAAccumulator) -> float:
        t = acc.centered_terms()
        if not debiased:
            return t["c_xy"]
        return hsic_u(t["c_xy"], t["kl"], t["sk"], t["sl"], n)

    H = np.array([[(h(a[0]) + h(a[1])) / 2, h(a[2]), h(a[3])] for a in accs])  # R x 3

    def ratio(rows: np.ndarray) -> float:
        hxy, hxx, hyy = rows.mean(0)
        return float(hxy / math.sqrt(hxx * hyy)) if hxx > 0 and hyy > 0 else math.nan

    value = ratio(H)
    R = len(H)
    loo = np.array([ratio(np.delete(H, r, axis=0)) for r in range(R)])
    stderr = float(math.sqrt((R - 1) / R * np.sum((loo - loo.mean()) ** 2)))
    return SketchedCKA(
        value, stderr, value - 1.96 * stderr, value + 1.96 * stderr, k, int(n_sketches)
    )
