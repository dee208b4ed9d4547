"""``repsim train STUDY`` and ``repsim run STUDY``: the dense models of a config, and a study.

``STUDY`` is a shipped study's name (``quickstart``; ``repsim studies list``) or the path of a
TOML config; ``--set SECTION.KEY=VALUE`` changes one key for this run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from repsim.cli._common import parse_set


def _say(args: argparse.Namespace, text: str) -> None:
    """Print a result line on stdout unless ``-q``."""
    if not getattr(args, "quiet", False):
        print(text)


def _cmd_train(args: argparse.Namespace) -> int:
    from repsim._core.threads import limit_threads
    from repsim.pipeline.config import dataset_from_config
    from repsim.pipeline.study import dense_model_path, load_study, train_dense
    from repsim.train import evaluate

    config = load_study(args.config, parse_set(args.set))
    seeds = (
        [args.seed]
        if args.seed is not None
        else (config["study"]["seeds"] or [config["study"]["seed"]])
    )
    threads = config["study"]["threads"] if args.threads is None else args.threads
    with limit_threads(threads):
        data = dataset_from_config(config)
        for seed in seeds:
            model, trained = train_dense(config, seed, data=data)
            ev = evaluate(model, data.test)
            where = dense_model_path(config, seed).with_suffix(".safetensors")
            if args.out:
                from repsim.models import save_model

                where = save_model(model, Path(args.out) / f"seed{seed}")
            status = "trained" if trained else "loaded from cache"
            _say(args, f"seed {seed}: test accuracy {ev.accuracy:.4f} ({status}) -> {where}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from repsim.pipeline.study import run_study

    out = run_study(args.config, threads=args.threads, overrides=parse_set(args.set))
    summary = json.loads((out / "results.json").read_text())
    _say(args, f"report written to {out} (open {out / 'index.html'} in a browser)")
    for row in summary["results"].get("dense", []):
        _say(args, f"  dense seed {row['seed']}: test accuracy {row['test_accuracy']:.4f}")
    from repsim.report.lead import association_sentences

    _say(args, "what holds (controlled for sparsity; the report's first section):")
    for sentence in association_sentences(summary):
        _say(args, f"  {sentence}")
    return 0


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="change one config key for this run, e.g. --set train.epochs=1 "
        "--set 'study.seeds=[0, 1]' (repeatable; values are TOML)",
    )


def add_parser(subparsers: Any) -> None:
    """Add ``train STUDY`` and ``run STUDY``."""
    p = subparsers.add_parser("train", help="train the dense model(s) a study config describes")
    p.add_argument(
        "config",
        metavar="STUDY",
        help="a shipped study's name or a TOML config with [study], [data], [model], [train]",
    )
    p.add_argument("--seed", type=int, default=None, help="train this seed only")
    p.add_argument("--out", default=None, help="also save the model(s) in this directory")
    _add_set(p)
    p.set_defaults(func=_cmd_train)

    p = subparsers.add_parser(
        "run",
        help="run a study end to end and write its report",
        description="Run a study end to end: train the dense models, compress them, capture "
        "their layers, measure similarity and bias, relate them, and write the report to "
        "<out_dir>/<study name>/ (results.json, CSV, PNG, index.html). Models, activations "
        "and similarity results are cached under [study] cache_dir, so a re-run computes "
        "only what changed. One line per finished stage goes to stderr.",
    )
    p.add_argument(
        "config",
        metavar="STUDY",
        help="a shipped study's name (e.g. quickstart; see 'repsim studies list') or the path "
        "of a TOML config",
    )
    _add_set(p)
    p.set_defaults(func=_cmd_run)
