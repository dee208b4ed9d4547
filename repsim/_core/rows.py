"""Row batches of aligned array-likes: the one row-count check and the one batch iterator.

Every streaming reduction (similarity accumulators, confusion counts, Dask tasks) reads its
inputs through these, so ``n`` is checked in one place.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from tqdm.auto import tqdm

from repsim.errors import ShapeError

__all__ = ["common_rows", "iter_rows"]


def common_rows(arrays: Sequence[Any]) -> int:
    """Row count shared by ``arrays`` (the samples), or a ``ShapeError`` naming the mismatch."""
    if not arrays:
        raise ShapeError("no arrays to read.")
    n = int(arrays[0].shape[0])
    for a in arrays[1:]:
        if int(a.shape[0]) != n:
            raise ShapeError(
                f"the arrays hold {n} and {a.shape[0]} rows; they must be the same samples in "
                "the same order."
            )
    return n


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
