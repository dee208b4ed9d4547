"""Streaming linear CKA: exact full-data accumulators, and Nguyen et al.'s minibatch estimator.

:class:`LinearCKAAccumulator` gives the *same number* as :func:`repsim.similarity.cka` on all the
data (biased or debiased), batch by batch, in ``O(d_x^2 + d_y^2 + d_x d_y)`` memory. It keeps
float64 sums of shifted rows ``x_i - c_x`` (``c_x`` = the first batch's mean), so float32
activations with a large offset lose nothing to cancellation; :meth:`~LinearCKAAccumulator.merge`
re-expresses one accumulator's sums about the other's shift exactly. The derivation is in
docs/similarity.md.

:class:`MinibatchCKAAccumulator` is a *different estimator* (Nguyen, Raghu, Kornblith 2021):
the unbiased HSIC averaged over minibatches. It depends on the batch size and order.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy.linalg import blas

from repsim._core.rows import common_rows, iter_rows
from repsim._core.validation import as_like, as_pair, is_torch
from repsim.errors import InsufficientDataError, ShapeError
from repsim.similarity._center import center, too_few, warn
from repsim.similarity.cka import hsic_unbiased_from_terms, linear_hsic_terms

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

_VECTORS = ("sx", "sy", "kx", "ky", "lx", "ly", "cx", "cy")
_MATRICES = ("Sxx", "Syy", "Sxy")
_SCALARS = ("ak", "al", "kk", "ll", "kl")


def _dot(a: Any, b: Any) -> float:
    return float((a * b).sum())


def _outer(a: Any, b: Any) -> Any:
    return a[:, None] * b[None, :]


def _shifted_cross(S: Any, sa: Any, sb: Any, da: Any, db: Any, n: int) -> Any:
    """Cross-product sum of shifted rows from unshifted sums.

    ``sum_i (a_i + da)(b_i + db)^T`` from ``S = sum_i a_i b_i^T``, ``sa = sum a_i``,
    ``sb = sum b_i``: ``S + sa db^T + da sb^T + n da db^T``.
    """
    return S + _outer(sa, db) + _outer(da, sb) + n * _outer(da, db)


def _shifted_norm2_sq(
    kk: float, kx: Any, d: Any, Sd: Any, D: float, ak: float, sd: float, n: int
) -> float:
    """Sum of squared shifted row norms from unshifted sums.

    ``sum_i k'_i^2`` for rows ``x_i + d``, ``k'_i = k_i + 2 x_i.d + D`` (``D = d.d``), from
    ``kk = sum k_i^2``, ``kx = sum k_i x_i``, ``Sd = (sum x_i x_i^T) d``, ``ak = sum k_i``,
    ``sd = sum x_i.d``.
    """
    return kk + 4 * _dot(kx, d) + 4 * _dot(d, Sd) + 2 * D * ak + 4 * D * sd + n * D * D


def _shifted_weighted(v: Any, a: float, w: Any, M: Any, s: float, Q: float, S: Any, n: int) -> Any:
    """Weighted sum of shifted rows from unshifted sums.

    ``sum_i k'_i (u_i + w)`` for ``k'_i = k_i + 2 x_i.d + Q``, from ``v = sum k_i u_i``,
    ``a = sum k_i``, ``M = sum u_i (x_i.d)``, ``s = sum x_i.d``, ``S = sum u_i``:
    ``v + a w + 2 M + 2 s w + Q S + n Q w``.
    """
    return v + a * w + 2 * M + 2 * s * w + Q * S + n * Q * w


def check_widths(got: tuple[int, int], held: tuple[int, int]) -> None:
    """Raise ``ShapeError`` unless a batch's ``(d_x, d_y)`` equal an accumulator's."""
    if tuple(got) != tuple(held):
        raise ShapeError(
            f"the batch has {got[0]} and {got[1]} features but the accumulator holds {held[0]} "
            f"and {held[1]}; every batch must come from the same two layers."
        )


def _hsic_u(c: float, kl: float, sk: float, sl: float, n: int) -> float:
    """Unbiased HSIC of centered data from ``c = ||X^T Y||_F^2``, ``sum k l``, ``sum k``, ``sum l``."""
    return (c - kl + sk * sl / ((n - 1) * (n - 2)) - 2.0 * kl / (n - 2)) / (n * (n - 3))


class LinearCKAAccumulator:
    """Exact streaming linear CKA (biased and debiased) over row batches.

    Accumulates, over shifted rows ``x_i = x_i^raw - c_x`` and ``y_i = y_i^raw - c_y``:
    ``n``, ``s_x = sum x_i``, ``s_y``, ``X^T X``, ``Y^T Y``, ``X^T Y``, and for the debiased
    estimator the row-norm sums with ``k_i = ||x_i||^2``, ``l_i = ||y_i||^2``:
    ``sum k``, ``sum l``, ``sum k^2``, ``sum l^2``, ``sum k l``, ``sum k_i x_i``, ``sum k_i y_i``,
    ``sum l_i x_i``, ``sum l_i y_i``. :meth:`result` re-centres these sums at the data mean and
    evaluates the same formulas as :func:`repsim.similarity.cka`.

    Parameters
    ----------
    debiased : bool
        Default estimator for :meth:`result`.

    Examples
    --------
    >>> acc = LinearCKAAccumulator()
    >>> for i in range(0, n, 1000):                     # doctest: +SKIP
    ...     acc.update(X[i:i + 1000], Y[i:i + 1000])
    >>> acc.result(), acc.result(debiased=True)         # doctest: +SKIP
    """

    def __init__(self, *, debiased: bool = False) -> None:
        self.debiased = debiased
        self.n = 0
        self._s: dict[str, Any] = {}

    def __repr__(self) -> str:
        dims = (self._s["sx"].shape[0], self._s["sy"].shape[0]) if self.n else None
        return f"LinearCKAAccumulator(n={self.n}, dims={dims}, debiased={self.debiased})"

    # ------------------------------------------------------------------ accumulation
    def _convert(self, m: Any) -> Any:
        return as_like(m, self._s["sx"] if self.n else None)

    def update(self, x_batch: Any, y_batch: Any) -> LinearCKAAccumulator:
        """Add a batch of rows ``[m, d_x]``, ``[m, d_y]`` (any float dtype, numpy or torch).

        Returns ``self``, so ``acc.update(x, y).result()`` works.
        """
        xb, yb = as_pair(x_batch, y_batch, min_n=1, what="an accumulator batch")
        xb, yb = self._convert(xb), self._convert(yb)
        if self.n == 0:
            self._init_state(xb, yb)
        else:
            check_widths(
                (xb.shape[1], yb.shape[1]), (self._s["sx"].shape[0], self._s["sy"].shape[0])
            )
        s = self._s
        xb = xb - s["cx"][None, :]
        yb = yb - s["cy"][None, :]
        k = (xb * xb).sum(1)
        l = (yb * yb).sum(1)  # noqa: E741
        self.n += xb.shape[0]
        s["sx"] = s["sx"] + xb.sum(0)
        s["sy"] = s["sy"] + yb.sum(0)
        _accumulate(s, xb, yb)
        s["ak"] += float(k.sum())
        s["al"] += float(l.sum())
        s["kk"] += _dot(k, k)
        s["ll"] += _dot(l, l)
        s["kl"] += _dot(k, l)
        s["kx"] = s["kx"] + xb.T @ k
        s["ky"] = s["ky"] + yb.T @ k
        s["lx"] = s["lx"] + xb.T @ l
        s["ly"] = s["ly"] + yb.T @ l
        return self

    def _init_state(self, xb: Any, yb: Any) -> None:
        dx, dy = xb.shape[1], yb.shape[1]

        def zeros(*shape: int) -> Any:
            return xb.new_zeros(shape) if is_torch(xb) else np.zeros(shape, order="F")

        self._s = {
            "cx": xb.mean(0),
            "cy": yb.mean(0),
            "sx": zeros(dx),
            "sy": zeros(dy),
            "kx": zeros(dx),
            "lx": zeros(dx),
            "ky": zeros(dy),
            "ly": zeros(dy),
            "Sxx": zeros(dx, dx),
            "Syy": zeros(dy, dy),
            "Sxy": zeros(dx, dy),
            **dict.fromkeys(_SCALARS, 0.0),
        }

    # ------------------------------------------------------------------ re-basing and merging
    def _rebased(self, delta: Any, eps: Any) -> dict[str, Any]:
        """The sums about new shifts, i.e. for rows ``x_i + delta`` and ``y_i + eps``."""
        _full(self._s)
        s, n = self._s, self.n
        D, E = _dot(delta, delta), _dot(eps, eps)
        sxd, sye = _dot(s["sx"], delta), _dot(s["sy"], eps)
        Sxx_d = s["Sxx"] @ delta
        Syy_e = s["Syy"] @ eps
        Sxy_e = s["Sxy"] @ eps
        SyxT_d = s["Sxy"].T @ delta
        ak, al = s["ak"], s["al"]
        return {
            "cx": s["cx"] - delta,
            "cy": s["cy"] - eps,
            "sx": s["sx"] + n * delta,
            "sy": s["sy"] + n * eps,
            "Sxx": _shifted_cross(s["Sxx"], s["sx"], s["sx"], delta, delta, n),
            "Syy": _shifted_cross(s["Syy"], s["sy"], s["sy"], eps, eps, n),
            "Sxy": _shifted_cross(s["Sxy"], s["sx"], s["sy"], delta, eps, n),
            "ak": ak + 2 * sxd + n * D,
            "al": al + 2 * sye + n * E,
            "kk": _shifted_norm2_sq(s["kk"], s["kx"], delta, Sxx_d, D, ak, sxd, n),
            "ll": _shifted_norm2_sq(s["ll"], s["ly"], eps, Syy_e, E, al, sye, n),
            "kl": s["kl"]
            + 2 * _dot(s["ky"], eps)
            + E * ak
            + 2 * _dot(s["lx"], delta)
            + 4 * _dot(delta, Sxy_e)
            + 2 * E * sxd
            + D * al
            + 2 * D * sye
            + n * D * E,
            "kx": _shifted_weighted(s["kx"], ak, delta, Sxx_d, sxd, D, s["sx"], n),
            "ky": _shifted_weighted(s["ky"], ak, eps, SyxT_d, sxd, D, s["sy"], n),
            "lx": _shifted_weighted(s["lx"], al, delta, Sxy_e, sye, E, s["sx"], n),
            "ly": _shifted_weighted(s["ly"], al, eps, Syy_e, sye, E, s["sy"], n),
        }

    def merge(self, other: LinearCKAAccumulator) -> LinearCKAAccumulator:
        """Fold ``other`` (e.g. another worker's rows) into ``self``; returns ``self``.

        The result equals one accumulator fed both sets of rows (to rounding).
        """
        if not isinstance(other, LinearCKAAccumulator):
            raise TypeError(f"can only merge a LinearCKAAccumulator, got {type(other).__name__}.")
        if other.n == 0:
            return self
        if self.n == 0:
            _full(other._s)
            self.n, self._s = other.n, copy.deepcopy(other._s)
            return self
        o = {k: self._convert(v) if not isinstance(v, float) else v for k, v in other._s.items()}
        if o["sx"].shape != self._s["sx"].shape or o["sy"].shape != self._s["sy"].shape:
            raise ShapeError("cannot merge accumulators of layers with different widths.")
        tmp = LinearCKAAccumulator()
        tmp.n, tmp._s = other.n, o
        moved = tmp._rebased(o["cx"] - self._s["cx"], o["cy"] - self._s["cy"])
        for key in _VECTORS + _MATRICES + _SCALARS:
            if key not in ("cx", "cy"):
                self._s[key] = self._s[key] + moved[key]
        self.n += other.n
        return self

    # ------------------------------------------------------------------ results
    def centered_terms(self) -> dict[str, Any]:
        """Sums about the exact data mean: ``c_xy, c_xx, c_yy`` and ``kl, kk, ll, sk, sl``."""
        if self.n == 0:
            raise InsufficientDataError(
                "the accumulator is empty; call update() with batches first."
            )
        c = self._rebased(-self._s["sx"] / self.n, -self._s["sy"] / self.n)
        return {
            "c_xy": _dot(c["Sxy"], c["Sxy"]),
            "c_xx": _dot(c["Sxx"], c["Sxx"]),
            "c_yy": _dot(c["Syy"], c["Syy"]),
            "kl": c["kl"],
            "kk": c["kk"],
            "ll": c["ll"],
            "sk": c["ak"],
            "sl": c["al"],
        }

    def result(self, debiased: bool | None = None) -> float:
        """Linear CKA of all rows seen so far (``debiased`` defaults to the constructor's).

        Equal to ``cka(X_all, Y_all, debiased=...)``. NaN with a warning for a zero-variance side.
        """
        debiased = self.debiased if debiased is None else debiased
        n = self.n
        need = 4 if debiased else 3
        if n == 0:
            raise InsufficientDataError(
                "the accumulator is empty; call update() with batches first."
            )
        if n < need:
            return too_few(f"{'debiased ' if debiased else ''}CKA", n, need)
        t = self.centered_terms()
        if t["c_xx"] <= 0 or t["c_yy"] <= 0:
            return _nan("CKA")
        if not debiased:
            return t["c_xy"] / np.sqrt(t["c_xx"] * t["c_yy"])
        hxy = _hsic_u(t["c_xy"], t["kl"], t["sk"], t["sl"], n)
        hxx = _hsic_u(t["c_xx"], t["kk"], t["sk"], t["sk"], n)
        hyy = _hsic_u(t["c_yy"], t["ll"], t["sl"], t["sl"], n)
        if hxx <= 0 or hyy <= 0:
            return _nan("debiased CKA")
        return float(hxy / np.sqrt(hxx * hyy))


def _accumulate(s: dict[str, Any], xb: Any, yb: Any) -> None:
    """``S_xx += X^T X``, ``S_yy += Y^T Y``, ``S_xy += X^T Y`` in place (no ``d x d`` temporary).

    numpy: BLAS ``syrk`` on the upper triangles of the symmetric sums (half the flops of a
    product; the lower triangles are filled in by :func:`_full` before the sums are read) and
    ``gemm`` for the cross sum, all with ``beta = 1`` into the Fortran-ordered state. torch:
    ``addmm_``.
    """
    if is_torch(xb):
        s["Sxx"].addmm_(xb.T, xb)
        s["Syy"].addmm_(yb.T, yb)
        s["Sxy"].addmm_(xb.T, yb)
        return
    s["Sxx"] = blas.dsyrk(1.0, xb.T, beta=1.0, c=s["Sxx"], trans=0, overwrite_c=1)
    s["Syy"] = blas.dsyrk(1.0, yb.T, beta=1.0, c=s["Syy"], trans=0, overwrite_c=1)
    s["Sxy"] = blas.dgemm(1.0, xb.T, yb.T, beta=1.0, c=s["Sxy"], trans_b=1, overwrite_c=1)
    s["_upper"] = True


def _full(s: dict[str, Any]) -> None:
    """Mirror the upper triangles of ``S_xx``, ``S_yy`` after :func:`_accumulate` (in place)."""
    if s.pop("_upper", False):
        from repsim.similarity._linear import mirror_upper

        mirror_upper(s["Sxx"])
        mirror_upper(s["Syy"])


def _nan(what: str) -> float:
    warn(
        f"{what} is undefined: a side has zero variance (every unit constant, e.g. a fully "
        "pruned layer) or a non-positive debiased self-HSIC; returning NaN."
    )
    return float("nan")


class MinibatchCKAAccumulator:
    """Minibatch CKA of Nguyen, Raghu, Kornblith (2021): a different estimator from full CKA.

    ``CKA_mb = mean_b HSIC_1(K_b, L_b) / sqrt(mean_b HSIC_1(K_b, K_b) mean_b HSIC_1(L_b, L_b))``

    with ``HSIC_1`` Song et al.'s unbiased estimator on minibatch ``b``'s linear Grams. Each
    :meth:`update` call is one minibatch (at least 4 rows). Its value depends on batch size and
    composition; use :class:`LinearCKAAccumulator` for the full-data CKA.
    """

    def __init__(self) -> None:
        self.n_batches = 0
        self.n = 0
        self._h = np.zeros(3)

    def update(self, x_batch: Any, y_batch: Any) -> MinibatchCKAAccumulator:
        """Add one minibatch ``[m, d_x]``, ``[m, d_y]`` with ``m >= 4``; returns ``self``."""
        xb, yb = as_pair(x_batch, y_batch, min_n=4, what="a minibatch of minibatch CKA")
        xc, yc = center(xb), center(yb)
        m = xc.shape[0]
        c_xy, c_xx, c_yy, k, l = linear_hsic_terms(xc, yc)  # noqa: E741
        self._h += np.array(
            [
                hsic_unbiased_from_terms(c_xy, k, l, m),
                hsic_unbiased_from_terms(c_xx, k, k, m),
                hsic_unbiased_from_terms(c_yy, l, l, m),
            ]
        )
        self.n_batches += 1
        self.n += m
        return self

    def merge(self, other: MinibatchCKAAccumulator) -> MinibatchCKAAccumulator:
        """Fold another accumulator's minibatches into ``self``; returns ``self``."""
        self._h = self._h + other._h
        self.n_batches += other.n_batches
        self.n += other.n
        return self

    def result(self) -> float:
        """The minibatch CKA so far; NaN with a warning if a mean self-HSIC is not positive."""
        if self.n_batches == 0:
            raise InsufficientDataError("no minibatch seen yet; call update() first.")
        hxy, hxx, hyy = self._h
        if hxx <= 0 or hyy <= 0:
            return _nan("minibatch CKA")
        return float(hxy / np.sqrt(hxx * hyy))


def iter_row_batches(
    A: Any, B: Any, batch_size: int, *, progress: bool | None = None, desc: str = "rows"
) -> Iterator[tuple[Any, Any]]:
    """Yield ``(A[i:j], B[i:j])`` row slices of two 2-D array-likes (numpy, torch, zarr).

    Only ``.shape`` and slicing are used, so a ``zarr.Array`` is read one batch at a time.
    :func:`repsim._core.rows.iter_rows` for two layers, which must be 2-D.
    """
    if len(A.shape) != 2 or len(B.shape) != 2:
        raise ShapeError(
            f"layers must be 2-D [n_samples, n_features], got shapes {tuple(A.shape)} and "
            f"{tuple(B.shape)}."
        )
    yield from iter_rows([A, B], batch_size, progress=progress, desc=desc)


def to_device(batch: Any, device: Any) -> Any:
    """``batch`` as a torch tensor on ``device``; unchanged when ``device`` is None."""
    if device is None:
        return batch
    if is_torch(batch):
        return batch.to(device)
    return torch.as_tensor(np.asarray(batch)).to(device)


def stream_cka(
    X: Any,
    Y: Any,
    *,
    debiased: bool = False,
    batch_size: int = 4096,
    device: Any = None,
    progress: bool | None = None,
    route: str = "auto",
    memory_limit: Any = None,
    precision: str = "float64",
) -> float:
    """Exact linear CKA of two row-aligned arrays too large to load, whatever their width.

    ``CKA(X, Y) = ||X_c^T Y_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` (Kornblith et al. 2019),
    or the debiased form with Song et al.'s (2012) unbiased HSIC. ``X`` and ``Y`` may be
    ``zarr.Array`` objects larger than memory. Two exact routes (:func:`repsim.similarity.plan_cka`):

    * feature: the shared :class:`LinearCKAAccumulator` over row batches of ``batch_size``, one
      pass; memory one batch plus ``d_x^2 + d_y^2 + d_x d_y`` float64 values, whatever ``n``;
    * Gram: ``n x n`` kernels accumulated from column blocks (each block is centered exactly on
      its own), for wide layers (``d >> n``); memory ``16 n^2`` bytes plus one column block,
      whatever ``d`` (in row tiles of the kernels when even those do not fit).

    ``route="auto"`` takes the cheaper route that fits ``memory_limit`` (bytes or e.g.
    ``"2GB"``; default half of this machine's memory). Equal to
    ``repsim.similarity.cka(X[:], Y[:])`` to rounding. With ``device`` (e.g. ``"cuda"``), the
    feature route runs there as torch tensors (float64 state on that device).
    """
    from repsim.similarity import _linear

    n = common_rows([X, Y])
    d_x, d_y = int(X.shape[1]), int(Y.shape[1])
    limit = _linear.parse_bytes(memory_limit) or default_memory_limit()
    if device is None and route != "feature":
        # the streaming feature route holds all three d x d sums at once
        feature_bytes = 8 * (d_x * d_x + d_y * d_y + d_x * d_y) + 8 * max(d_x, d_y) ** 2
        gram_cheaper = n * (d_x + d_y) < (d_x * d_x + d_y * d_y + 2 * d_x * d_y)
        if route == "gram" or gram_cheaper or feature_bytes > limit:
            Xs, Ys = _linear.as_source(X, "X"), _linear.as_source(Y, "Y")
            what = ("debiased " if debiased else "") + "CKA"
            need = 4 if debiased else 3
            if n < need:
                return too_few(what, n, need)
            t = _linear.linear_terms(
                Xs,
                Ys,
                route="gram",
                memory_limit=limit,
                precision=precision,
                need_row_norms=debiased,
                block_bytes=2**29,
            )
            if t.c_xx <= 0 or t.c_yy <= 0:
                return _nan(what)
            num, dx, dy = _linear.cka_from_terms(t, debiased)
            if dx <= 0 or dy <= 0:
                return _nan(what)
            return float(num / np.sqrt(dx * dy))
    acc = LinearCKAAccumulator(debiased=debiased)
    for xb, yb in iter_rows([X, Y], batch_size, progress=progress, desc="linear CKA"):
        acc.update(to_device(xb, device), to_device(yb, device))
    return acc.result()


def default_memory_limit() -> int:
    """Half of this machine's physical memory (bytes); 4 GiB when it cannot be read."""
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2)
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def stream_linear_cka(
    A: Any,
    B: Any,
    *,
    batch_size: int = 4096,
    debiased: bool = False,
    progress: bool | None = None,
) -> float:
    """Exact linear CKA of two row-aligned array-likes read ``batch_size`` rows at a time.

    The same as :func:`stream_cka` (on the CPU); equal to ``cka(A[:], B[:], debiased=...)``.
    """
    return stream_cka(A, B, debiased=debiased, batch_size=batch_size, progress=progress)


def minibatch_cka(
    X: Any, Y: Any, *, batch_size: int = 256, seed: int | None = 0, shuffle: bool = True
) -> float:
    """Minibatch CKA (Nguyen et al. 2021) over ``X``, ``Y`` split into minibatches.

    Rows are shuffled with ``numpy.random.default_rng(seed)`` (unless ``shuffle=False``) and cut
    into consecutive minibatches of ``batch_size``; a last minibatch with fewer than 4 rows is
    dropped with a warning. See :class:`MinibatchCKAAccumulator` for the formula.
    """
    Xm, Ym = as_pair(X, Y, min_n=0, what="minibatch CKA")
    n = Xm.shape[0]
    if batch_size < 4:
        raise InsufficientDataError(f"minibatch CKA needs batch_size >= 4, got {batch_size}.")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    if is_torch(Xm):
        order = torch.as_tensor(order, device=Xm.device)
    acc = MinibatchCKAAccumulator()
    for i in range(0, n, batch_size):
        idx = order[i : i + batch_size]
        if len(idx) < 4:
            warn(f"minibatch CKA: dropped a last minibatch of {len(idx)} < 4 rows.")
            continue
        acc.update(Xm[idx], Ym[idx])
    return acc.result()
