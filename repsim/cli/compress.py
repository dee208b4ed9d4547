"""Command-line subcommands for compression: ``prune``, ``quantize``, ``distill``, ``family``.

``add_parser(subparsers)`` registers them on the ``repsim`` command; each handler takes the
parsed arguments and returns an exit code. Errors are :class:`repsim.errors.RepsimError`
subclasses, which the ``repsim`` command turns into a message and exit code 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from repsim.cli._common import add_renamed
from repsim.errors import ConfigError


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _fit_args(p: argparse.ArgumentParser, epochs: int) -> None:
    p.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default {epochs})")
    p.add_argument("--lr", type=float, default=3e-3, help="learning rate (default 3e-3)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"])
    p.add_argument("--seed", type=int, default=0, help="seed of training and random pruning")
    p.add_argument("--device", default=None, help="cpu, cuda... (default: cuda if available)")


def add_parser(subparsers: Any) -> None:
    """Add ``prune``, ``quantize``, ``distill`` and ``family build|plan`` to ``subparsers``."""
    p = subparsers.add_parser(
        "prune",
        help="prune a saved model (optionally fine-tune it)",
        description="Prune a model saved by repsim (save_model) and save "
        "the pruned model, its mask and a sparsity record.",
    )
    p.add_argument("model", help="saved model path (.safetensors + .json)")
    p.add_argument("--sparsity", type=float, required=True, help="total sparsity in [0, 1)")
    p.add_argument(
        "--method",
        default="magnitude",
        help="pruning method (magnitude, random, ln_structured, fairgrape; default magnitude)",
    )
    p.add_argument("--scope", default=None, choices=["global", "layerwise"])
    p.add_argument("--n", type=float, default=1, help="norm order of ln_structured (default 1)")
    p.add_argument("--dim", type=int, default=0, help="dimension ln_structured removes slices of")
    p.add_argument("--exclude", nargs="*", default=[], help="layer names or globs kept dense")
    p.add_argument(
        "--prune-classifier",
        action="store_true",
        help="also prune the last Linear layer (excluded by default)",
    )
    add_renamed(
        p,
        "--data",
        "--dataset",
        dest="dataset",
        help="fine-tune (and calibrate wanda/sparsegpt) on this dataset's train split: a "
        "built-in name, package.module:function, or a .npz file",
    )
    p.add_argument("--schedule", default="oneshot", choices=["oneshot", "agp"])
    p.add_argument("--kd", action="store_true", help="fine-tune by distillation from the dense")
    _fit_args(p, 0)
    p.add_argument("--out", required=True, help="output model path")
    p.set_defaults(func=run_prune)

    q = subparsers.add_parser(
        "quantize",
        help="post-training weight quantisation",
        description="Fake-quantise a saved model's Linear/Conv weights "
        "(symmetric, per channel) and save it.",
    )
    q.add_argument("model")
    q.add_argument("--bits", type=int, default=8, help="2..8 (default 8)")
    q.add_argument("--per-tensor", action="store_true", help="one scale per tensor")
    q.add_argument("--exclude", nargs="*", default=[])
    q.add_argument("--out", required=True)
    q.set_defaults(func=run_quantize)

    d = subparsers.add_parser(
        "distill",
        help="knowledge distillation (Hinton KD)",
        description="Train STUDENT to match TEACHER on a dataset's train "
        "split; a pruned student keeps its masks.",
    )
    d.add_argument("teacher")
    d.add_argument("student")
    add_renamed(
        d,
        "--data",
        "--dataset",
        dest="dataset",
        required=True,
        help="built-in dataset, package.module:function, or a .npz file",
    )
    d.add_argument("--T", type=float, default=4.0, help="temperature (default 4)")
    d.add_argument("--alpha", type=float, default=0.9, help="weight of the KL term")
    d.add_argument("--gamma", type=float, default=0.1, help="weight of the CE term")
    _fit_args(d, 5)
    d.add_argument("--out", required=True)
    d.set_defaults(func=run_distill)

    f = subparsers.add_parser("family", help="populations of dense and compressed models")
    fsub = f.add_subparsers(dest="family_command", required=True)
    fb = fsub.add_parser("build", help="build (or complete) a family from a TOML config")
    fb.add_argument("config", help="TOML file with a [family] section")
    fb.add_argument("--cache-dir", default=None, help="override family.cache_dir")
    fb.add_argument("--device", default="cpu")
    fb.set_defaults(func=run_family_build)
    fp = fsub.add_parser("plan", help="list a family's members and which exist")
    fp.add_argument("config")
    fp.add_argument("--cache-dir", default=None)
    fp.set_defaults(func=run_family_plan)


def _load_data(name: str | None) -> Any:
    from repsim.pipeline.config import open_dataset

    return None if name is None else open_dataset(name)


def run_prune(args: argparse.Namespace) -> int:
    """``repsim prune``: prune, optionally fine-tune, save model + mask, print the record."""
    from repsim._core.fingerprints import model_fingerprint
    from repsim.compress import DistillationLoss, Mask, distill, gradual_prune, prune
    from repsim.compress.prune import clone_model
    from repsim.models import load_model, save_model
    from repsim.train import fit

    dense = load_model(args.model)
    ds = _load_data(args.dataset)
    if args.epochs > 0 and ds is None:
        raise ConfigError("Fine-tuning (--epochs > 0) needs --dataset.")
    if (args.kd or args.schedule == "agp") and args.epochs < 1:
        raise ConfigError("--kd and --schedule agp need --epochs >= 1 and --dataset.")
    fit_opts = dict(
        lr=args.lr,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        device=args.device,
        progress=None,
    )
    prune_opts = dict(
        method=args.method,
        scope=args.scope,
        exclude=args.exclude or None,
        n=args.n,
        dim=args.dim,
        seed=args.seed,
    )
    res = None
    if args.schedule == "agp":
        if args.prune_classifier:
            raise ConfigError("--prune-classifier is only supported with --schedule oneshot.")
        loss = DistillationLoss(dense) if args.kd else None
        model, record, res = gradual_prune(
            clone_model(dense),
            ds.train,
            args.sparsity,
            epochs=args.epochs,
            loss=loss,
            test=ds.test,
            **prune_opts,
            **fit_opts,
        )
    else:
        model, record = prune(
            dense,
            args.sparsity,
            exclude_classifier=not args.prune_classifier,
            data=None if ds is None else ds.train,  # calibration of wanda/sparsegpt/fairgrape
            **prune_opts,
        )
        if args.epochs > 0 and args.kd:
            model, res = distill(
                dense,
                model,
                ds.train,
                epochs=args.epochs,
                seed=args.seed,
                test=ds.test,
                inplace=True,
                **fit_opts,
            )
        elif args.epochs > 0:
            res = fit(model, ds.train, epochs=args.epochs, seed=args.seed, test=ds.test, **fit_opts)
    out = save_model(model, args.out, prune=record.to_dict())
    mask_path = Mask.from_model(model).save(Path(args.out).with_suffix("").as_posix() + "-mask")
    _print(
        {
            "model": str(out),
            "mask": str(mask_path),
            "fingerprint": model_fingerprint(model),
            "sparsity": record.sparsity,
            "layers": record.layers,
            "test_accuracy": None if res is None or res.test is None else res.test.accuracy,
        }
    )
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    """``repsim quantize``: fake-quantise weights, save, print the record."""
    from repsim._core.fingerprints import model_fingerprint
    from repsim.compress import quantize
    from repsim.models import load_model, save_model

    model, record = quantize(
        load_model(args.model),
        args.bits,
        per_channel=not args.per_tensor,
        exclude=args.exclude or None,
    )
    out = save_model(model, args.out, quantize=record.to_dict())
    _print({"model": str(out), "fingerprint": model_fingerprint(model), **record.to_dict()})
    return 0


def run_distill(args: argparse.Namespace) -> int:
    """``repsim distill``: train the student against the teacher, save it."""
    from repsim._core.fingerprints import model_fingerprint
    from repsim.compress import distill
    from repsim.models import load_model, save_model
    from repsim.pipeline.config import open_dataset

    ds = open_dataset(args.dataset)
    student, res = distill(
        load_model(args.teacher),
        load_model(args.student),
        ds.train,
        T=args.T,
        alpha=args.alpha,
        gamma=args.gamma,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        seed=args.seed,
        device=args.device,
        test=ds.test,
        progress=None,
    )
    out = save_model(
        student,
        args.out,
        distill={"T": args.T, "alpha": args.alpha, "gamma": args.gamma, "epochs": args.epochs},
    )
    _print(
        {
            "model": str(out),
            "fingerprint": model_fingerprint(student),
            "test_accuracy": res.test.accuracy,
            "history": res.history,
        }
    )
    return 0


def _family_cfg(args: argparse.Namespace) -> Any:
    from repsim.pipeline.family import family_config

    cfg = family_config(args.config)
    if args.cache_dir is not None:
        cfg["cache_dir"] = args.cache_dir
    return cfg


def run_family_build(args: argparse.Namespace) -> int:
    """``repsim family build CONFIG``: build what is missing, print a summary."""
    from repsim.pipeline.family import build

    fam = build(_family_cfg(args), device=args.device, progress=None)
    _print(
        {
            "family": fam.name,
            "root": str(fam.root),
            "members": len(fam),
            "built": fam.n_built,
            "seconds": round(fam.seconds, 2),
            "settings": [s.key for s in fam.settings],
        }
    )
    return 0


def run_family_plan(args: argparse.Namespace) -> int:
    """``repsim family plan CONFIG``: list members and whether each exists."""
    from repsim.pipeline.family import plan

    fam = plan(_family_cfg(args))
    _print(
        [
            {
                "setting": m.setting.key,
                "seed": m.seed,
                "exists": bool(m.fingerprint),
                "path": str(m.path),
            }
            for m in fam
        ]
    )
    return 0
