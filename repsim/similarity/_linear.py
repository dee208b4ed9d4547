"""Exact linear CKA by route, in bounded memory: the engine behind :func:`repsim.similarity.cka`.

Linear CKA needs three numbers from column-centered ``X`` (``[n, d_x]``) and ``Y`` (``[n, d_y]``):
``c_xy = ||X^T Y||_F^2 = <K, L>``, ``c_xx = ||X^T X||_F^2 = ||K||_F^2``, ``c_yy``, and for the
debiased estimator the row norms ``k_i = ||x_i||^2 = K_ii``, ``l_i``. Two exact routes give them:

* **feature route**: ``X^T X``, ``Y^T Y``, ``X^T Y`` accumulated over row blocks, one ``d x d``
  product at a time (BLAS ``syrk`` for the self products, half the flops of a product).
  Working memory ``8 max(d_x^2, d_y^2, d_x d_y)`` bytes plus one row block; ``n`` is free.
* **Gram route**: ``K = X X^T`` and ``L = Y Y^T`` accumulated over *column* blocks. Centering is
  per column, so each column block is centered exactly on its own, and ``K`` is the sum of the
  blocks' Grams. Working memory ``16 n^2`` bytes plus one column block; ``d`` is free. When the
  two kernels do not fit, they are formed ``t`` rows at a time (``16 t n`` bytes): each tile is one
  pass over the columns, and the tiles' contributions to ``<K, L>``, ``||K||^2``, ``||L||^2`` add.

Both routes read their inputs only by slicing (``X[i:j]``, ``X[:, i:j]``), so a ``zarr.Array``
is never loaded whole, and neither makes a float64 copy of a whole input: each block is
converted to float64 and centered on its own (the column means are computed in float64 first).

``precision="float32"`` centers each block in float64, multiplies in float32 and accumulates
the block products in float64: about twice as fast, relative error of CKA about ``1e-7``
(measured in docs/similarity.md). ``"float64"`` (default) is exact to rounding.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.linalg import blas

from repsim._core.validation import NONFINITE_HINT, as_matrix
from repsim.errors import ConfigError, NonFiniteError

Precision = Literal["float64", "float32"]

#: Working memory (bytes) a row or column block aims at when no ``memory_limit`` is given.
BLOCK_BYTES = 32 * 2**20
#: Largest feature-route product (``w x w`` float64) formed at once when no ``memory_limit`` is
#: given: wider layers are multiplied in column tiles, so the working memory stays a small
#: fraction of the inputs (``8 w^2`` bytes against ``8 n d``).
TILE_BYTES = 48 * 2**20
#: ``precision="float32"`` is the fast path: without a ``memory_limit`` it keeps all three
#: ``d x d`` float64 sums (plus float32 block products) when they fit in this many bytes, so
#: each input is read and centered once (0.55 GB at ``d = 4096``).
ONE_PASS_BYTES_F32 = 640 * 2**20
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_bytes(limit: Any) -> int | None:
    """A memory limit in bytes from an int, a float or a string such as ``"2GB"`` or ``"512 MiB"``.

    Units are binary (``1 GB = 2**30`` bytes); ``None`` means no limit.
    """
    if limit is None:
        return None
    if isinstance(limit, bool):
        raise ConfigError(f"memory_limit must be a number of bytes or e.g. '2GB', got {limit!r}.")
    if isinstance(limit, int | float):
        value = float(limit)
    else:
        m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)(i?b)?\s*", str(limit).lower())
        if m is None:
            raise ConfigError(
                f"memory_limit {limit!r} is not understood; pass bytes (an int) or a string such "
                "as '512MB' or '2GB'."
            )
        value = float(m.group(1)) * _UNITS[m.group(2)]
    if not value > 0:
        raise ConfigError(f"memory_limit must be positive, got {limit!r}.")
    return int(value)


def check_precision(precision: str) -> None:
    """Raise ``ConfigError`` unless ``precision`` is ``"float64"`` or ``"float32"``."""
    if precision not in ("float64", "float32"):
        raise ConfigError(f"precision must be 'float64' or 'float32', got {precision!r}.")


@dataclass(frozen=True)
class Plan:
    """How linear CKA will be computed: the route, its blocking and its working memory.

    Attributes
    ----------
    route : {"feature", "gram"}
        Feature products (``d x d``) or Gram kernels (``n x n``).
    block : int
        Rows per block (feature route) or columns per block (Gram route).
    tile_rows : int
        Gram route: rows of ``K`` and ``L`` formed per pass over the columns (``n``: all at once).
    tile_cols : int
        Feature route: columns per tile; products are ``tile_cols x tile_cols`` at most, formed
        one tile pair at a time (``>= d``: whole products).
    one_pass : bool
        Feature route: keep all three ``d x d`` sums at once and read (and center) each input
        once, instead of one product at a time.
    bytes : int
        Estimated peak working memory beyond the inputs.
    flops : float
        Multiply-adds.
    n : int
        Samples.
    """

    route: str
    block: int
    tile_rows: int
    bytes: int
    flops: float
    n: int
    tile_cols: int = 0
    one_pass: bool = False

    @property
    def passes(self) -> int:
        """Passes over the inputs' columns: more than 1 only for the Gram route in tiles."""
        return 1 if self.route == "feature" else -(-self.n // self.tile_rows)


def _feature_bytes(n: int, w: int, block: int, precision: str) -> int:
    """Working memory of the feature route with column tiles of ``w`` and row blocks."""
    f32 = precision == "float32"
    # the float64 tile product (+ float32 block products of syrk and gemm)
    prod = w * w * (16 if f32 else 8)
    per_row = 2 * w * (4 if f32 else 8)  # centered row blocks of two tiles
    return prod + block * per_row + 16 * n


def _tile(d: int, w_max: int) -> int:
    """Equal tile width ``<= w_max`` covering ``d`` columns (``d`` when it fits)."""
    if w_max >= d:
        return d
    t = -(-d // max(w_max, 1))
    return -(-d // t)


def _gram_bytes(n: int, block: int, tile: int, precision: str) -> int:
    kernels = 16 * tile * n + (4 * tile * n if precision == "float32" else 0)
    per_col = n * (12 if precision == "float32" else 8)
    return kernels + block * per_col + 16 * n


def plan(
    n: int,
    d_x: int,
    d_y: int,
    *,
    route: str = "auto",
    memory_limit: Any = None,
    precision: str = "float64",
    block_bytes: int = BLOCK_BYTES,
) -> Plan:
    """Choose the route of linear CKA and its block sizes (see the module docstring).

    ``route="auto"`` takes the route with fewer multiply-adds among those whose working memory
    fits ``memory_limit`` (feature: ``n (d_x^2 + d_y^2)/2 + n d_x d_y``; Gram:
    ``n^2 (d_x + d_y) / 2``, twice that in row tiles). The feature route forms its products in
    column tiles of ``w`` (``8 w^2`` bytes, the widest that fits; ``TILE_BYTES`` without a
    limit), the Gram route its kernels in row tiles when ``16 n^2`` bytes do not fit. An
    explicit ``route`` is honoured or refused with a ``ConfigError``. Blocks hold up to
    ``block_bytes`` (less when the limit leaves less room).

    Raises
    ------
    ConfigError
        Unknown route, or a limit too small for the route (the message gives the minimum and
        suggests :func:`repsim.similarity.sketched_cka`).
    """
    if route not in ("auto", "feature", "gram"):
        raise ConfigError(f"route must be 'auto', 'feature' or 'gram', got {route!r}.")
    check_precision(precision)
    limit = parse_bytes(memory_limit)
    f32 = precision == "float32"
    d = max(d_x, d_y)
    cands: list[Plan] = []
    # feature route: one tile product at a time plus row blocks of two tiles
    bpe = 16 if f32 else 8
    m_min = min(n, 64)
    if limit is None:
        w = _tile(d, int(math.isqrt(TILE_BYTES // 8)))  # the float64 tile product
    else:  # the widest tile whose product and minimal blocks fit
        room = limit - 16 * n
        w_fit = (
            int(
                (-(2 * m_min * bpe) + math.sqrt((2 * m_min * bpe) ** 2 + 4 * bpe * max(room, 0)))
                / (2 * bpe)
            )
            if room > 0
            else 0
        )
        w = _tile(d, w_fit) if w_fit >= 1 else 0
    if w >= 1:
        fixed = _feature_bytes(n, w, 0, precision)
        per_row = 2 * w * (4 if f32 else 8)
        room = block_bytes if limit is None else min(block_bytes, limit - fixed)
        if room >= per_row:
            block = int(min(n, room // per_row))
            f_flops = n * (d_x * d_x / 2 + d_y * d_y / 2 + d_x * d_y)
            cands.append(
                Plan("feature", block, n, fixed + block * per_row, f_flops, n, tile_cols=w)
            )
    # feature route in one pass: all three sums at once
    one = 8 * (d_x * d_x + d_y * d_y + d_x * d_y) + (4 * max(d_x, d_y) ** 2 if f32 else 0)
    one_budget = (ONE_PASS_BYTES_F32 if f32 else TILE_BYTES) if limit is None else limit
    per_row1 = (d_x + d_y) * (4 if f32 else 8)
    room1 = min(block_bytes, one_budget - one - 16 * n)
    if room1 >= per_row1:
        block = int(min(n, room1 // per_row1))
        f_flops = n * (d_x * d_x / 2 + d_y * d_y / 2 + d_x * d_y)
        # fewer passes over the data than the tiled plan: preferred at equal multiply-adds
        cands.insert(
            0,
            Plan(
                "feature",
                block,
                n,
                one + 16 * n + block * per_row1,
                f_flops,
                n,
                tile_cols=d,
                one_pass=True,
            ),
        )
    # Gram route: both kernels whole, or in row tiles
    per_col = n * (12 if f32 else 8)
    tile = n
    if limit is not None:
        per_tile_row = 16 * n + (4 * n if f32 else 0)
        tile = int(min(n, max(0, (limit - 16 * n - per_col) // per_tile_row)))
    if tile >= 1:
        fixed = _gram_bytes(n, 0, tile, precision)
        room = block_bytes if limit is None else min(max(block_bytes, per_col), limit - fixed)
        if room >= per_col:
            block = int(min(d, room // per_col))
            g_flops = n * n * (d_x + d_y) / 2 + 3 * n * n
            if tile < n:
                g_flops *= 2  # tiles use general products, not syrk
            cands.append(Plan("gram", block, tile, fixed + block * per_col, g_flops, n))
    if route != "auto":
        chosen = [p for p in cands if p.route == route]
        if not chosen:
            raise ConfigError(_too_small(route, n, d_x, d_y, limit, precision))
        return chosen[0]
    if not cands:
        raise ConfigError(_too_small("any", n, d_x, d_y, limit, precision))
    return min(cands, key=lambda p: p.flops)


def _too_small(route: str, n: int, d_x: int, d_y: int, limit: int | None, precision: str) -> str:
    f = _feature_bytes(n, 1, 1, precision)
    g = _gram_bytes(n, 1, 1, precision)
    need = f if route == "feature" else g if route == "gram" else min(f, g)
    return (
        f"memory_limit={limit} bytes is too small for the {route} route of linear CKA with "
        f"n={n}, d_x={d_x}, d_y={d_y}: it needs at least {need} bytes "
        f"({need / 2**20:.1f} MiB). Raise memory_limit, or use "
        "repsim.similarity.sketched_cka for an approximate value with error bars."
    )


# --------------------------------------------------------------------------- column statistics
@dataclass
class Columns:
    """Column means (float64) and constant-column mask of one input, and its shape."""

    mean: np.ndarray
    const: np.ndarray
    n: int
    d: int


def _is_float(a: Any) -> bool:
    return np.dtype(getattr(a, "dtype", np.float64)).kind == "f"


def as_source(a: Any, name: str) -> Any:
    """An input readable by slicing: numpy/zarr kept as they are, anything else via numpy.

    Shape and dtype are checked as :func:`repsim._core.validation.as_matrix` does (its messages),
    without reading the data; finiteness is checked later, from the column sums.
    """
    if not hasattr(a, "shape") or not hasattr(a, "dtype") or not hasattr(a, "__getitem__"):
        a = np.asarray(a)
    if len(a.shape) != 2:
        as_matrix(np.asarray(a), name)  # raises the ShapeError with the reshape advice
    as_matrix(a[:0], name)  # dtype, complex, no features: checked on an empty slice
    if not _is_float(a) and isinstance(a, np.ndarray):
        a = a.astype(np.float64)
    return a


def _block(a: Any, rows: slice, cols: slice | None = None) -> np.ndarray:
    b = a[rows] if cols is None else a[rows, cols]
    b = np.asarray(b)
    return b if _is_float(b) else b.astype(np.float64)


def raise_nonfinite(a: Any, name: str, hint: str = NONFINITE_HINT, rows: int = 4096) -> None:
    """Scan ``a`` in row blocks and raise ``NonFiniteError`` naming the first bad entry."""
    n = a.shape[0]
    first, count = None, 0
    for i in range(0, n, rows):
        b = _block(a, slice(i, i + rows))
        bad = ~np.isfinite(b)
        c = int(bad.sum())
        if c and first is None:
            r, col = np.argwhere(bad)[0]
            first = (i + int(r), int(col))
        count += c
    if first is None:  # finite after all: the column sum overflowed
        return
    raise NonFiniteError(
        f"{name} holds {count} NaN or infinite value(s), the first at row {first[0]}, column "
        f"{first[1]}; {hint}."
    )


def column_stats(a: Any, name: str, *, rows: int | None = None) -> Columns:
    """Column means (in float64), constant columns (``max == min``) and the finiteness check.

    In memory, reductions over the whole array (no copy: numpy converts to float64 in small
    buffers); otherwise one pass over row blocks. A NaN or infinity makes its column's sum
    non-finite, so the check costs nothing beyond the means.
    """
    n, d = int(a.shape[0]), int(a.shape[1])
    if isinstance(a, np.ndarray):
        mean = a.mean(0, dtype=np.float64) if n else np.zeros(d)
        const = (a.max(0) == a.min(0)) if n else np.ones(d, bool)
    else:
        rows = rows or max(1, BLOCK_BYTES // max(8 * d, 1))
        total = np.zeros(d)
        lo = hi = None
        for i in range(0, n, rows):
            b = _block(a, slice(i, i + rows))
            total += b.sum(0, dtype=np.float64)
            bl, bh = b.min(0), b.max(0)
            lo = bl if lo is None else np.minimum(lo, bl)
            hi = bh if hi is None else np.maximum(hi, bh)
        mean = total / max(n, 1)
        const = (lo == hi) if lo is not None else np.ones(d, bool)
    if not np.all(np.isfinite(mean)):
        raise_nonfinite(a, name)
    return Columns(np.asarray(mean, dtype=np.float64), np.asarray(const, bool), n, d)


def centered_block(
    a: Any,
    cols: Columns,
    rows: slice,
    colsl: slice | None = None,
    order: str = "C",
    buf: np.ndarray | None = None,
) -> np.ndarray:
    """Rows (and columns) of ``a`` as float64, centered by the column means, constants zeroed.

    ``buf``: a reusable float64 buffer with at least the block's rows (C order) or columns
    (F order): writing into the same memory block after block avoids the page faults of fresh
    allocations.
    """
    b = _block(a, rows, colsl)
    mean = cols.mean if colsl is None else cols.mean[colsl]
    const = cols.const if colsl is None else cols.const[colsl]
    if buf is None:
        out = np.empty(b.shape, dtype=np.float64, order=order)
    elif order == "C":
        out = buf[: b.shape[0]]
    else:
        out = buf[:, : b.shape[1]]
    # the subtraction runs in float64 (the mean is float64); a float32 buffer receives the
    # centered values rounded once (precision="float32": center in float64, multiply in float32)
    np.subtract(b, mean, out=out, casting="same_kind")
    if const.any():
        out[:, const] = 0.0
    return out


# --------------------------------------------------------------------------- BLAS helpers
def _f32(work: dict | None, key: str, A: np.ndarray) -> np.ndarray:
    """``A`` rounded to float32 in a reusable C-ordered buffer (fresh when ``work`` is None)."""
    if work is None:
        return A.astype(np.float32)
    buf = work.get(key)
    if buf is None or buf.size < A.size:
        buf = work[key] = np.empty(A.size, np.float32)
    out = buf[: A.size].reshape(A.shape)
    np.copyto(out, A, casting="same_kind")
    return out


def _p32(work: dict | None, shape: tuple[int, int], kind: str) -> np.ndarray | None:
    """A reusable zeroed float32 product buffer (Fortran order) of ``shape``.

    ``kind`` keeps ``syrk`` buffers (whose lower triangle must stay zero) apart from ``gemm``
    ones (written whole).
    """
    if work is None:
        return None
    key = (kind, shape)
    if key not in work:
        work[key] = np.zeros(shape, np.float32, order="F")
    return work[key]


def syrk_into(
    C: np.ndarray, A: np.ndarray, precision: str = "float64", work: dict | None = None
) -> None:
    """``C += A^T A`` on the upper triangle of the Fortran-ordered ``C`` (lower left untouched).

    float32: the product in float32 (into a reusable buffer of ``work``), added to the float64
    ``C``.
    """
    if precision == "float32":
        a = A if A.dtype == np.float32 else _f32(work, "a", A)
        P = _p32(work, (A.shape[1], A.shape[1]), "syrk")
        if P is None:
            P = blas.ssyrk(1.0, a.T, trans=0)
        else:
            P = blas.ssyrk(1.0, a.T, beta=0.0, c=P, trans=0, overwrite_c=1)
        np.add(C, P, out=C)
        return
    blas.dsyrk(1.0, A.T, beta=1.0, c=C, trans=0, overwrite_c=1)


def syrk_rows_into(C: np.ndarray, A: np.ndarray, precision: str = "float64") -> None:
    """``C += A A^T`` on the upper triangle of the Fortran-ordered ``C``; ``A`` Fortran-ordered."""
    if precision == "float32":
        P = blas.ssyrk(1.0, np.asfortranarray(A, dtype=np.float32), trans=0)
        np.add(C, P, out=C)
        return
    blas.dsyrk(1.0, A, beta=1.0, c=C, trans=0, overwrite_c=1)


def gemm_tn_into(
    C: np.ndarray,
    A: np.ndarray,
    B: np.ndarray,
    precision: str = "float64",
    work: dict | None = None,
) -> None:
    """``C += A^T B`` for the Fortran-ordered ``C`` (``A``, ``B`` C-ordered row blocks)."""
    if precision == "float32":
        a = A if A.dtype == np.float32 else _f32(work, "a", A)
        b = B if B.dtype == np.float32 else _f32(work, "b", B)
        P = _p32(work, (A.shape[1], B.shape[1]), "gemm")
        if P is None:
            P = blas.sgemm(1.0, a.T, b.T, trans_b=1)
        else:
            P = blas.sgemm(1.0, a.T, b.T, beta=0.0, c=P, trans_b=1, overwrite_c=1)
        np.add(C, P, out=C)
        return
    blas.dgemm(1.0, A.T, B.T, beta=1.0, c=C, trans_b=1, overwrite_c=1)


def mirror_upper(G: np.ndarray, block: int = 512) -> None:
    """Copy the upper triangle of the square ``G`` onto its lower triangle, in place."""
    n = G.shape[0]
    for j in range(0, n, block):
        e = min(j + block, n)
        D = G[j:e, j:e]
        D[:] = np.triu(D) + np.triu(D, 1).T
        if e < n:
            G[e:, j:e] = G[j:e, e:].T


def upper_fro2(C: np.ndarray) -> float:
    """``||S||_F^2`` of the symmetric ``S`` whose upper triangle ``C`` holds (lower part zero)."""
    diag = np.diagonal(C)
    return float(2.0 * np.einsum("ij,ij->", C, C) - np.dot(diag, diag))


def upper_inner(A: np.ndarray, B: np.ndarray) -> float:
    """``<S, T>_F`` of symmetric ``S``, ``T`` held as upper triangles (lower parts zero)."""
    da, db = np.diagonal(A), np.diagonal(B)
    return float(2.0 * np.einsum("ij,ij->", A, B) - np.dot(da, db))


# --------------------------------------------------------------------------- the two routes
@dataclass
class Terms:
    """Sufficient statistics of linear CKA (column-centered data) and how they were computed."""

    c_xy: float
    c_xx: float
    c_yy: float
    k: np.ndarray | None
    l: np.ndarray | None  # noqa: E741
    n: int
    route: str


def _spans(d: int, w: int) -> list[slice]:
    return [slice(i, min(i + w, d)) for i in range(0, d, w)]


def _self_tiled(
    A: Any, cols: Columns, w: int, m: int, precision: str, norms: np.ndarray | None
) -> float:
    """``||A_c^T A_c||_F^2`` from column-tile products (``syrk`` on the diagonal tiles)."""
    n, total = cols.n, 0.0
    spans = _spans(cols.d, w)
    dt = np.float32 if precision == "float32" else np.float64
    bufs = [np.empty((min(m, n), sp.stop - sp.start), dt) for sp in spans[:2]]
    work: dict = {}
    for a_i, ti in enumerate(spans):
        for tj in spans[a_i:]:
            diag = ti == tj
            C = np.zeros((ti.stop - ti.start, tj.stop - tj.start), order="F")
            for r in range(0, n, m):
                rows = slice(r, r + m)
                bi = centered_block(A, cols, rows, ti, buf=_fit(bufs, 0, ti))
                if diag:
                    syrk_into(C, bi, precision, work)
                    if norms is not None:
                        norms[rows] += np.einsum("ij,ij->i", bi, bi, dtype=np.float64)
                else:
                    bj = centered_block(A, cols, rows, tj, buf=_fit(bufs, 1, tj))
                    gemm_tn_into(C, bi, bj, precision, work)
            total += upper_fro2(C) if diag else 2.0 * float(np.einsum("ij,ij->", C, C))
            del C
    return total


def _fit(bufs: list[np.ndarray], i: int, span: slice) -> np.ndarray:
    """Buffer ``i`` viewed as ``[rows, width of span]`` (C-contiguous), regrown if too small."""
    w = span.stop - span.start
    rows = bufs[i].shape[0]
    if bufs[i].size < rows * w:
        bufs[i] = np.empty((rows, w), bufs[i].dtype)
    return bufs[i].reshape(-1)[: rows * w].reshape(rows, w)


def _cross_tiled(X: Any, Y: Any, cx: Columns, cy: Columns, w: int, m: int, precision: str) -> float:
    """``||X_c^T Y_c||_F^2`` from column-tile products."""
    total = 0.0
    rows_b = min(m, cx.n)
    dt = np.float32 if precision == "float32" else np.float64
    bufs = [np.empty((rows_b, min(w, cx.d)), dt), np.empty((rows_b, min(w, cy.d)), dt)]
    work: dict = {}
    for ti in _spans(cx.d, w):
        for tj in _spans(cy.d, w):
            C = np.zeros((ti.stop - ti.start, tj.stop - tj.start), order="F")
            for r in range(0, cx.n, m):
                rows = slice(r, r + m)
                bi = centered_block(X, cx, rows, ti, buf=_fit(bufs, 0, ti))
                bj = centered_block(Y, cy, rows, tj, buf=_fit(bufs, 1, tj))
                gemm_tn_into(C, bi, bj, precision, work)
            total += float(np.einsum("ij,ij->", C, C))
            del C
    return total


def _feature(
    X: Any, Y: Any, cx: Columns, cy: Columns, p: Plan, precision: str, need_k: bool
) -> Terms:
    n, m, w = cx.n, p.block, p.tile_cols or max(cx.d, cy.d)
    k = np.zeros(n) if need_k else None
    l = np.zeros(n) if need_k else None  # noqa: E741
    if p.one_pass:
        return _feature_one_pass(X, Y, cx, cy, m, precision, k, l)
    c_xx = _self_tiled(X, cx, w, m, precision, k)
    c_yy = _self_tiled(Y, cy, w, m, precision, l)
    c_xy = _cross_tiled(X, Y, cx, cy, w, m, precision)
    return Terms(c_xy, c_xx, c_yy, k, l, n, "feature")


def _feature_one_pass(
    X: Any,
    Y: Any,
    cx: Columns,
    cy: Columns,
    m: int,
    precision: str,
    k: np.ndarray | None,
    l: np.ndarray | None,  # noqa: E741
) -> Terms:
    """All three sums at once: each row block of ``X`` and ``Y`` centered once."""
    n = cx.n
    dt = np.float32 if precision == "float32" else np.float64
    Sxx = np.zeros((cx.d, cx.d), order="F")
    Syy = np.zeros((cy.d, cy.d), order="F")
    Sxy = np.zeros((cx.d, cy.d), order="F")
    bx, by = np.empty((min(m, n), cx.d), dt), np.empty((min(m, n), cy.d), dt)
    work: dict = {}
    for r in range(0, n, m):
        rows = slice(r, r + m)
        xb = centered_block(X, cx, rows, buf=bx)
        yb = centered_block(Y, cy, rows, buf=by)
        syrk_into(Sxx, xb, precision, work)
        syrk_into(Syy, yb, precision, work)
        gemm_tn_into(Sxy, xb, yb, precision, work)
        if k is not None:
            k[rows] = np.einsum("ij,ij->i", xb, xb, dtype=np.float64)
            l[rows] = np.einsum("ij,ij->i", yb, yb, dtype=np.float64)
    c_xy = float(np.einsum("ij,ij->", Sxy, Sxy))
    return Terms(c_xy, upper_fro2(Sxx), upper_fro2(Syy), k, l, n, "feature")


def _gram_tile(
    A: Any, cols: Columns, rows: slice, block: int, precision: str, norms: np.ndarray | None
) -> np.ndarray:
    """Rows ``rows`` of ``K = A_c A_c^T`` (the upper triangle only when ``rows`` is all rows)."""
    n, d = cols.n, cols.d
    whole = rows.start == 0 and rows.stop >= n
    t = min(rows.stop, n) - rows.start
    K = np.zeros((n, n) if whole else (t, n), order="F")
    for j in range(0, d, block):
        b = centered_block(A, cols, slice(0, n), slice(j, j + block), order="F")
        if whole:
            syrk_rows_into(K, b, precision)
        elif precision == "float32":
            b32 = b.astype(np.float32)
            np.add(K, blas.sgemm(1.0, b32[rows], b32, trans_b=1), out=K)
        else:
            blas.dgemm(1.0, b[rows], b, beta=1.0, c=K, trans_b=1, overwrite_c=1)
        if norms is not None:
            norms[rows] += np.einsum("ij,ij->i", b[rows], b[rows])
        del b  # before the next block is made
    return K


def _gram(X: Any, Y: Any, cx: Columns, cy: Columns, p: Plan, precision: str, need_k: bool) -> Terms:
    n = cx.n
    k = np.zeros(n) if need_k else None
    l = np.zeros(n) if need_k else None  # noqa: E741
    if p.tile_rows >= n:
        K = _gram_tile(X, cx, slice(0, n), p.block, precision, k)
        L = _gram_tile(Y, cy, slice(0, n), p.block, precision, l)
        return Terms(upper_inner(K, L), upper_fro2(K), upper_fro2(L), k, l, n, "gram")
    c_xy = c_xx = c_yy = 0.0
    for i in range(0, n, p.tile_rows):
        rows = slice(i, min(i + p.tile_rows, n))
        K = _gram_tile(X, cx, rows, p.block, precision, k)
        L = _gram_tile(Y, cy, rows, p.block, precision, l)
        c_xy += float(np.einsum("ij,ij->", K, L))
        c_xx += float(np.einsum("ij,ij->", K, K))
        c_yy += float(np.einsum("ij,ij->", L, L))
        del K, L
    return Terms(c_xy, c_xx, c_yy, k, l, n, "gram")


def linear_terms(
    X: Any,
    Y: Any,
    *,
    route: str = "auto",
    memory_limit: Any = None,
    precision: str = "float64",
    need_row_norms: bool = False,
    names: tuple[str, str] = ("X", "Y"),
    columns: tuple[Columns, Columns] | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> Terms:
    """``c_xy``, ``c_xx``, ``c_yy`` (and row norms) of linear CKA by the planned route.

    ``X``, ``Y`` are sources from :func:`as_source` (numpy or any array readable by slicing).
    """
    cx, cy = columns or (column_stats(X, names[0]), column_stats(Y, names[1]))
    p = plan(
        cx.n,
        cx.d,
        cy.d,
        route=route,
        memory_limit=memory_limit,
        precision=precision,
        block_bytes=block_bytes,
    )
    fn = _feature if p.route == "feature" else _gram
    return fn(X, Y, cx, cy, p, precision, need_row_norms)


def hsic_u(c: float, kl: float, sk: float, sl: float, n: int) -> float:
    """Song et al.'s unbiased HSIC of centered data from ``c = <K, L>``, ``k.l``, ``sum k``, ``sum l``."""
    return (c - kl + sk * sl / ((n - 1) * (n - 2)) - 2.0 * kl / (n - 2)) / (n * (n - 3))


def cka_from_terms(t: Terms, debiased: bool) -> tuple[float, float, float]:
    """``(numerator, den_x, den_y)`` of CKA: biased ``c``'s or debiased ``HSIC_1``'s."""
    if not debiased:
        return t.c_xy, t.c_xx, t.c_yy
    k, l, n = t.k, t.l, t.n  # noqa: E741
    sk, sl = float(k.sum()), float(l.sum())
    return (
        hsic_u(t.c_xy, float(k @ l), sk, sl, n),
        hsic_u(t.c_xx, float(k @ k), sk, sk, n),
        hsic_u(t.c_yy, float(l @ l), sl, sl, n),
    )


def ratio(num: float, den_x: float, den_y: float) -> float:
    """``num / sqrt(den_x den_y)`` (the caller has checked positivity)."""
    return float(num / math.sqrt(den_x * den_y))
