"""``repsim compare A B``: the layer-similarity report for two saved checkpoints.

The report itself is :func:`repsim.pipeline.compare_report.compare_report`; ``--scheduler``
runs the whole-sample reductions on Dask (the ``repsim-bias[dask]`` extra).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from repsim.cli._common import activation_dir, add_alias, parse_option


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
    """The keyword arguments of the :mod:`repsim.scale.dask` functions from parsed args."""
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
    """:func:`repsim.scale.dask.compare_distributed` with the scheduler options of ``args``."""
    from repsim.scale.dask import compare_distributed

    return compare_distributed(
        a, b, layers=layers, measures=measures, options=options, **scheduler_kwargs(args)
    )


def _cmd_compare(args: argparse.Namespace) -> int:
    from repsim.pipeline.compare_report import compare_report

    options = dict(parse_option(o) for o in args.option)
    out = compare_report(
        args.a,
        args.b,
        data=args.data,
        data_options=options,
        groups=args.groups,
        layers=args.layers,
        measures=args.measures,
        reduction=args.reduction,
        out=args.out or f"reports/compare-{Path(args.a).stem}-{Path(args.b).stem}",
        cache_dir=args.cache,
        by_group=not args.no_groups,
        n_boot=args.n_boot,
        n_boot_other=args.n_boot_other,
        seed=args.seed,
        scheduler=None if args.scheduler is None else scheduler_kwargs(args),
    )
    print(f"report written to {out}")
    for line in (out / "similarity.csv").read_text().splitlines()[:1]:
        print(f"  columns: {line}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``compare A B`` to the ``repsim`` command's subparsers."""
    p = subparsers.add_parser("compare", help="layer-similarity report for two checkpoints")
    p.add_argument("a", help="first checkpoint (save_model path)")
    p.add_argument("b", help="second checkpoint (save_model path)")
    p.add_argument(
        "--data",
        default="digits",
        help="built-in dataset, package.module:function, or a .npz file (default digits)",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dataset option (repeatable)",
    )
    p.add_argument("--groups", default=None, help="group attribute of the dataset")
    p.add_argument("--layers", nargs="+", default=None, help="layer names or globs")
    p.add_argument("--measures", nargs="+", default=["cka"], help="similarity measures")
    p.add_argument(
        "--reduction",
        default="flatten",
        choices=["flatten", "mean", "max", "cls", "last", "mean_tokens"],
        help="flatten/mean/max for conv maps, cls/last/mean_tokens for token sequences",
    )
    p.add_argument("--out", default=None, help="report directory")
    p.add_argument(
        "--cache-dir",
        dest="cache",
        metavar="DIR",
        type=activation_dir,
        default=None,
        help="cache directory to reuse (activations under CACHE_DIR/activations)",
    )
    add_alias(p, "--cache", dest="cache", type=activation_dir)
    p.add_argument(
        "--no-by-group", dest="no_groups", action="store_true", help="skip per-group similarity"
    )
    add_alias(p, "--no-groups", dest="no_groups", action="store_true")
    p.add_argument(
        "--n-boot",
        type=int,
        default=200,
        help="bootstrap resamples of linear CKA's intervals (cheap: from per-sample "
        "statistics; default 200, 0: none)",
    )
    p.add_argument(
        "--n-boot-other",
        type=int,
        default=0,
        help="bootstrap resamples of the other measures' intervals (each resample recomputes "
        "the measure, e.g. two SVDs per cell for SVCCA; default 0: none)",
    )
    p.add_argument("--seed", type=int, default=0)
    add_scheduler_options(p)
    p.set_defaults(func=_cmd_compare)
    return p
