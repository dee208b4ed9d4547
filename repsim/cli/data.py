"""``repsim data list|show`` and ``repsim models list``: the built-in datasets and architectures."""

from __future__ import annotations

import argparse
from typing import Any

from repsim.cli._common import parse_option


def _cmd_data_list(args: argparse.Namespace) -> int:
    from repsim.data import list_datasets

    for name, summary in list_datasets().items():
        print(f"{name:20s} {summary}")
    return 0


def _cmd_data_show(args: argparse.Namespace) -> int:
    from repsim.data import load_dataset

    options = dict(parse_option(o) for o in args.option)
    if args.root is not None:
        options["root"] = args.root
    ds = load_dataset(args.name, **options)
    print(f"{ds.name}: {ds.description}")
    print(f"source: {ds.source}")
    for split, data in ds.splits().items():
        print(
            f"\n[{split}] n = {len(data)}, input shape = {data.input_shape}, "
            f"classes = {data.n_classes}"
        )
        sizes = data.class_sizes()
        print("  class balance: " + ", ".join(f"{k}: {v}" for k, v in sizes.items()))
        for attribute in data.attributes:
            if attribute == "class":
                continue
            counts = data.group_sizes(attribute)
            marker = " (active groups)" if attribute == data.group_attribute else ""
            print(
                f"  groups by {attribute}{marker}: "
                + ", ".join(f"{k}: {v}" for k, v in counts.items())
            )
    return 0


def _cmd_models_list(args: argparse.Namespace) -> int:
    from repsim.models import list_models, model_options

    for name, doc in list_models().items():
        print(f"{name:8s} {doc}\n         options: {', '.join(model_options(name))}")
    return 0


def add_parser(subparsers: Any) -> None:
    """Add ``data list|show`` and ``models list``."""
    data = subparsers.add_parser("data", help="list and inspect the built-in datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    data_sub.required = True
    p = data_sub.add_parser("list", help="list the built-in datasets")
    p.set_defaults(func=_cmd_data_list)
    p = data_sub.add_parser("show", help="sizes, groups and class balance of a dataset")
    p.add_argument("name", help="dataset name (see 'repsim data list')")
    p.add_argument("--root", default=None, help="directory holding the dataset's files")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dataset option, e.g. --option rho=0.95 (repeatable)",
    )
    p.set_defaults(func=_cmd_data_show)

    models = subparsers.add_parser("models", help="list the reference architectures")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION")
    models_sub.required = True
    p = models_sub.add_parser("list", help="list architectures and their options")
    p.set_defaults(func=_cmd_models_list)
