"""The ``repsim`` command line.

Every error repsim raises on bad input (:class:`repsim.errors.RepsimError`) is printed as one
line naming the problem, and the command exits with code 2 (as argparse does for bad usage).
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from repsim.errors import ConfigError, RepsimError


def _parse_option(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"--option takes KEY=VALUE, got {text!r}.")
    key, value = text.split("=", 1)
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip(), parsed


def _cmd_data_list(args: argparse.Namespace) -> int:
    from repsim.data import list_datasets

    for name, summary in list_datasets().items():
        print(f"{name:20s} {summary}")
    return 0


def _cmd_data_show(args: argparse.Namespace) -> int:
    from repsim.data import load_dataset

    options = dict(_parse_option(o) for o in args.option)
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


def _cmd_train(args: argparse.Namespace) -> int:
    from repsim.config import dataset_from_config, load_config
    from repsim.study import dense_model_path, train_dense
    from repsim.train import evaluate

    config = load_config(args.config)
    seeds = (
        [args.seed]
        if args.seed is not None
        else (config["study"]["seeds"] or [config["study"]["seed"]])
    )
    data = dataset_from_config(config)
    for seed in seeds:
        model, trained = train_dense(config, seed, data=data)
        ev = evaluate(model, data.test)
        where = dense_model_path(config, seed).with_suffix(".safetensors")
        if args.out:
            from repsim.models import save_model

            where = save_model(model, Path(args.out) / f"seed{seed}")
        status = "trained" if trained else "loaded from cache"
        print(f"seed {seed}: test accuracy {ev.accuracy:.4f} ({status}) -> {where}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from repsim.study import run_study

    out = run_study(args.config)
    summary = json.loads((out / "results.json").read_text())
    print(f"report written to {out}")
    for row in summary["results"].get("dense", []):
        print(f"  dense seed {row['seed']}: test accuracy {row['test_accuracy']:.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``repsim`` command."""
    parser = argparse.ArgumentParser(
        prog="repsim",
        description="Layer-wise representation similarity to explain why compressing a neural "
        "network makes it unfair.",
    )
    from repsim import __version__

    parser.add_argument("--version", action="version", version=f"repsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    data = sub.add_parser("data", help="list and inspect the built-in datasets")
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

    models = sub.add_parser("models", help="list the reference architectures")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION")
    models_sub.required = True
    p = models_sub.add_parser("list", help="list architectures and their options")
    p.set_defaults(func=_cmd_models_list)

    p = sub.add_parser("train", help="train the dense model(s) a config describes")
    p.add_argument("config", help="TOML config with [study], [data], [model], [train]")
    p.add_argument("--seed", type=int, default=None, help="train this seed only")
    p.add_argument("--out", default=None, help="also save the model(s) in this directory")
    p.set_defaults(func=_cmd_train)

    from repsim.cli_cache import add_parser as add_cache_parser

    add_cache_parser(sub)
    from repsim.cli_compress import add_parser as add_compress_parser

    add_compress_parser(sub)
    from repsim.cli_subnetwork import add_parser as add_subnetwork_parser

    add_subnetwork_parser(sub)
    from repsim.similarity.cli import add_parsers as add_similarity_parsers

    add_similarity_parsers(sub)
    from repsim.cli_compare import add_parser as add_compare_parser

    add_compare_parser(sub)
    from repsim.saliency.cli import add_parser as add_saliency_parser

    add_saliency_parser(sub)

    p = sub.add_parser("run", help="run a study end to end and write its report")
    p.add_argument("config", help="study TOML, e.g. analyses/quickstart.toml")
    p.set_defaults(func=_cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``repsim`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        handler = getattr(args, "func", None) or args.handler
        return int(handler(args) or 0)
    except RepsimError as exc:
        print(f"repsim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("repsim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
