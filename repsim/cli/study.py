"""``repsim train CONFIG`` and ``repsim run STUDY``: the dense models of a config, and a study."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _cmd_train(args: argparse.Namespace) -> int:
    from repsim.pipeline.config import dataset_from_config, load_config
    from repsim.pipeline.study import dense_model_path, train_dense
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
    from repsim.pipeline.study import run_study

    out = run_study(args.config)
    summary = json.loads((out / "results.json").read_text())
    print(f"report written to {out}")
    for row in summary["results"].get("dense", []):
        print(f"  dense seed {row['seed']}: test accuracy {row['test_accuracy']:.4f}")
    return 0


def add_parser(subparsers: Any) -> None:
    """Add ``train CONFIG`` and ``run STUDY``."""
    p = subparsers.add_parser("train", help="train the dense model(s) a config describes")
    p.add_argument("config", help="TOML config with [study], [data], [model], [train]")
    p.add_argument("--seed", type=int, default=None, help="train this seed only")
    p.add_argument("--out", default=None, help="also save the model(s) in this directory")
    p.set_defaults(func=_cmd_train)

    p = subparsers.add_parser("run", help="run a study end to end and write its report")
    p.add_argument("config", help="study TOML, e.g. analyses/quickstart.toml")
    p.set_defaults(func=_cmd_run)
