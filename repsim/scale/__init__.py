"""Scale past one process: the streaming accumulators as Dask reductions over Zarr chunks.

:mod:`~repsim.scale.dask` needs the ``repsim-bias[dask]`` extra; it is imported only when used.
"""

from __future__ import annotations

from repsim.scale.dask import (
    ClusterError,
    compare_distributed,
    connect,
    distributed_cca,
    distributed_cka,
    distributed_group_metrics,
    reduce_rows,
)

__all__ = [
    "ClusterError",
    "compare_distributed",
    "connect",
    "distributed_cca",
    "distributed_cka",
    "distributed_group_metrics",
    "reduce_rows",
]
