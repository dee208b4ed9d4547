"""The ``repsim saliency`` subcommand: per-group weight saliency and what a pruning removed.

``add_parser(subparsers)`` registers it; :func:`run_saliency` takes the parsed arguments and
returns an exit code.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

from repsim.cli._common import add_renamed


def add_parser(subparsers: Any) -> None:
    """Add ``saliency`` to the ``repsim`` subparsers."""
    p = subparsers.add_parser(
        "saliency",
        help="per-group weight saliency (SalUn) and salient weights pruning removed",
        description="Compute SalUn gradient weight saliency per group of a dataset split for a "
        "saved model; with --pruned, report the share of each group's top-FRACTION salient "
        "weights that the pruned model's mask removed, against chance (the sparsity).",
    )
    p.add_argument("model", help="saved dense model path (.safetensors + .json)")
    add_renamed(
        p,
        "--data",
        "--dataset",
        dest="dataset",
        required=True,
        help="built-in dataset, package.module:function, or a .npz file",
    )
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    add_renamed(
        p, "--groups", "--by", dest="by", help="group attribute (default: the dataset's groups)"
    )
    p.add_argument("--pruned", default=None, help="saved pruned model whose mask to compare")
    p.add_argument(
        "--fraction",
        type=float,
        default=0.1,
        help="share of weights in each group's salient set, in (0, 1] (default 0.1)",
    )
    p.add_argument("--scope", default="global", choices=["global", "layerwise"])
    p.add_argument("--reduce", default="sum_then_abs", choices=["sum_then_abs", "abs_then_sum"])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out", default=None, help="directory for CSV tables and PNG figures")
    p.set_defaults(func=run_saliency)


def run_saliency(args: argparse.Namespace) -> int:
    """Handler of ``repsim saliency``; prints a JSON summary, writes tables/figures to --out."""
    from repsim.compress import prunable_parameters
    from repsim.errors import DataError
    from repsim.models import load_model
    from repsim.saliency.gradient import check_fraction, weight_saliency
    from repsim.saliency.overlap import pruning_mask, salient_jaccard, salient_removed
    from repsim.saliency.plots import plot_saliency_histograms, plot_salient_removed

    check_fraction(args.fraction)
    from repsim.pipeline.config import open_dataset

    dataset = open_dataset(args.dataset)
    data = dataset.splits().get(args.split)
    if data is None:
        raise DataError(
            f"{args.dataset} has no {args.split!r} split; use one of {list(dataset.splits())}."
        )
    if args.by:
        data = data.with_groups(args.by)
    model = load_model(args.model)
    keep = pruning_mask(load_model(args.pruned)) if args.pruned else None
    names = (
        list(keep)
        if keep is not None
        else prunable_parameters(model, exclude_classifier=False).names
    )
    sal = weight_saliency(
        model, data, reduce=args.reduce, batch_size=args.batch_size, parameters=names
    )
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        plot_saliency_histograms(sal, path=out / "saliency_hist.png")
    summary: dict[str, Any] = {
        "groups": list(sal),
        "parameters": names,
        "fraction": args.fraction,
        "jaccard": salient_jaccard(sal, fraction=args.fraction, scope=args.scope).to_records(),
    }
    if keep is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            table = salient_removed(sal, keep, fraction=args.fraction, scope=args.scope)
        summary["salient_removed"] = [r for r in table.to_records() if r["parameter"] == "(all)"]
        if out is not None:
            table.to_csv(out / "salient_removed.csv")
            plot_salient_removed(table, path=out / "salient_removed.png")
    print(json.dumps(summary, indent=2, default=float))
    return 0
