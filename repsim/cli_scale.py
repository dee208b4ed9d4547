"""CLI pieces for running on Dask: ``repsim compare --scheduler ADDRESS`` and friends.

The ``compare`` command belongs to the similarity CLI; it wires these in with
:func:`add_scheduler_options` (adds ``--scheduler``, ``--timeout``, ``--retries``,
``--chunk-rows``) and, when ``args.scheduler`` is set, calls :func:`compare_with_args` instead
of the in-process ``compare``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from repsim.distributed import compare_distributed


def add_scheduler_options(parser: argparse.ArgumentParser) -> None:
    """Add the Dask options to a subcommand's parser."""
    g = parser.add_argument_group("Dask (the repsim[dask] extra)")
    g.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run the reductions on Dask: 'threads', 'processes', 'sync', or a dask.distributed "
        "scheduler address such as tcp://10.0.0.5:8786 (default: no Dask, one process)",
    )
    g.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds to wait for the scheduler to answer (default 10)",
    )
    g.add_argument(
        "--retries",
        type=int,
        default=2,
        help="times a failed task is retried on the cluster (default 2)",
    )
    g.add_argument(
        "--chunk-rows",
        type=int,
        default=None,
        help="rows per task (default: the store's Zarr chunk)",
    )


def scheduler_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of the :mod:`repsim.distributed` functions from parsed args."""
    return {
        "scheduler": args.scheduler,
        "timeout": args.timeout,
        "retries": args.retries,
        "chunk_rows": args.chunk_rows,
    }


def compare_with_args(
    args: argparse.Namespace,
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    *,
    layers: Sequence[str] | Mapping[str, str] | None = None,
    measures: Sequence[str] = ("cka",),
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Any:
    """:func:`repsim.distributed.compare_distributed` with the scheduler options of ``args``."""
    return compare_distributed(
        a, b, layers=layers, measures=measures, options=options, **scheduler_kwargs(args)
    )
