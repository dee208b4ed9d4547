"""Row batches of aligned array-likes: the one batch iterator of streaming code.

Every streaming reduction (similarity accumulators, confusion counts, Dask tasks) reads its
inputs through :func:`iter_rows`; the row counts are checked by
:func:`repsim._core.validation.check_consistent_length`, the one row-count check.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from tqdm.auto import tqdm

from repsim._core.validation import check_consistent_length
from repsim.errors import ShapeError

__all__ = ["common_rows", "iter_rows"]


def common_rows(arrays: Sequence[Any]) -> int:
    """Row count shared by ``arrays`` (the samples), or a ``ShapeError`` naming the mismatch.

    The sequence form of :func:`repsim._core.validation.check_consistent_length`.
    """
    return check_consistent_length(*arrays)


def iter_rows(
    arrays: Sequence[Any],
    batch_size: int,
    *,
    progress: bool | None = None,
    desc: str = "rows",
) -> Iterator[tuple[Any, ...]]:
    """Yield aligned row batches ``(a[i:j] for a in arrays)`` of array-likes with equal ``n``.

    Only ``.shape`` and slicing are used, so a ``zarr.Array`` is read one batch at a time.

    Raises
    ------
    ShapeError
        When the arrays hold different numbers of rows, or ``batch_size < 1``.
    """
    n = common_rows(arrays)
    if int(batch_size) < 1:
        raise ShapeError(f"batch_size must be a positive number of rows, got {batch_size}.")
    starts = range(0, n, int(batch_size))
    for i in tqdm(
        starts, desc=desc, disable=None if progress is None else not progress, leave=False
    ):
        yield tuple(a[i : i + batch_size] for a in arrays)
