"""Subnetwork runs from a study config: the pipeline behind ``repsim subnetwork search|report``.

A config is a study TOML with ``[study]``, ``[data]``, ``[model]``, ``[train]`` (the vanilla
models, trained or loaded from the model cache, one per seed) and a ``[subnetwork]`` section
with the settings of :func:`repsim.subnetwork.search`. Runs go to
``<out_dir>/<study name>/seed<k>/`` (checkpoint, JSON log, mask, record); the report of a
finished run directory compares vanilla, subnetwork and magnitude pruning per seed and across
seeds (mean with a Student-t 95% interval).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from repsim._core.io import read_json, write_json, write_text
from repsim._core.stats import t_interval
from repsim._core.table import write_csv
from repsim.errors import ConfigError, DataError
from repsim.pipeline.config import (
    Field,
    Section,
    dataset_from_config,
    extend_schema,
    load_config,
    study_seeds,
    validate,
)

_F = (int, float)
SUBNETWORK_SECTION = Section(
    {
        "bias": Field((str,), help="attribute holding the bias label (colour, sex)"),
        "granularity": Field((str,), "weight", ("weight", "channel")),
        "objective": Field((str,), "ce+mi", ("ce+mi", "ce")),
        "gamma": Field(_F, 1.0),
        "reweight": Field(_F, 1.0),
        "target_sparsity": Field(_F, None),
        "sparsity_weight": Field(_F, 1.0),
        "steps": Field((int,), 600),
        "batch_size": Field((int,), 128),
        "lr": Field(_F, 5e-3),
        "head_lr": Field(_F, 1e-2),
        "tau": Field(_F, 0.1),
        "tau_decay": Field(_F, 0.5),
        "tau_min": Field(_F, 1e-3),
        "plateau_patience": Field((int,), 2),
        "plateau_delta": Field(_F, 1e-3),
        "eval_every": Field((int,), 25),
        "max_acc_drop": Field(_F, 0.02),
        "selection": Field((str,), "bias-head", ("bias-head", "val-acc")),
        "gate_init": Field(_F, 0.1),
        "checkpoint_every": Field((int,), 100),
        "val_fraction": Field(_F, 0.15, help="share of train held out when data has no val"),
        "biased_test": Field((dict,), None, help="dataset options giving a biased test split"),
        "conflict_attribute": Field((str,), "bias"),
    },
    required=True,
)
SEARCH_KEYS = (
    "granularity",
    "objective",
    "gamma",
    "reweight",
    "target_sparsity",
    "sparsity_weight",
    "steps",
    "batch_size",
    "lr",
    "head_lr",
    "tau",
    "tau_decay",
    "tau_min",
    "plateau_patience",
    "plateau_delta",
    "eval_every",
    "max_acc_drop",
    "selection",
    "gate_init",
    "checkpoint_every",
)


def _schema() -> dict[str, Section]:
    """The study schema plus the required ``[subnetwork]`` section.

    The study schema plus the required ``[subnetwork]`` section (a new schema: the shared one
    is left as it is, so other studies do not need the section).
    """
    return extend_schema({"subnetwork": SUBNETWORK_SECTION})


def _splits(config: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """train, val, test and the optional biased test split of a subnetwork config."""
    data = dataset_from_config(config)
    sec = config["subnetwork"]
    train, val = data.train, data.val
    if val is None:
        rng = np.random.default_rng(config["study"]["seed"])
        order = rng.permutation(len(train))
        n_val = int(round(sec["val_fraction"] * len(train)))
        if n_val < 2:
            raise ConfigError("subnetwork.val_fraction leaves no validation samples.")
        val = train.subset(np.sort(order[:n_val]))
        train = train.subset(np.sort(order[n_val:]))
    biased = None
    if sec["biased_test"]:
        cfg = {**config, "data": {**config["data"], **sec["biased_test"]}}
        biased = dataset_from_config(cfg).test
    return train, val, data.test, biased


def run_search(
    config_path: str | Path,
    *,
    resume: bool = False,
    seed: int | None = None,
    progress: bool | None = None,
) -> Path:
    """Search a subnetwork for every seed of the config; return the run directory."""
    from repsim.pipeline.study import train_dense
    from repsim.subnetwork import search

    config = load_config(config_path, schema=_schema())
    sec = config["subnetwork"]
    out = Path(config["study"]["out_dir"]) / config["study"]["name"]
    out.mkdir(parents=True, exist_ok=True)
    write_json(config, out / "study.json", indent=1, allow_nan=True)
    train, val, _test, _ = _splits(config)
    for s in [seed] if seed is not None else study_seeds(config):
        model, _ = train_dense(config, s, progress=progress)
        run_dir = out / f"seed{s}"
        resume_this = resume and (run_dir / "checkpoint.pt").exists()
        res = search(
            model,
            train,
            bias_labels=sec["bias"],
            val=val,
            run_dir=run_dir,
            resume=resume_this,
            seed=s,
            progress=progress,
            **{k: sec[k] for k in SEARCH_KEYS},
        )
        print(
            f"seed {s}: chosen step {res.record['chosen_step']}, sparsity "
            f"{res.record['sparsity']['overall']:.4f} -> {run_dir}"
        )
    return out


def _t_interval(values: list[float]) -> dict[str, float]:
    """Mean and Student-t 95% interval over seeds (:func:`repsim._core.stats.t_interval`)."""
    return t_interval(values, ci=0.95)


def run_report(run_dir: str | Path) -> dict[str, Any]:
    """Compare vanilla, subnetwork and magnitude pruning for each seed of a finished run."""
    from repsim.compress import Mask
    from repsim.pipeline.study import train_dense
    from repsim.subnetwork.report import compare_subnetwork

    run = Path(run_dir)
    if not (run / "study.json").is_file():
        raise DataError(
            f"{run} is not a subnetwork run directory (no study.json); pass the "
            "directory 'repsim subnetwork search' wrote, <out_dir>/<study name>."
        )
    raw = read_json(run / "study.json", what="subnetwork run config")
    try:  # a damaged or hand-edited study.json: one clear error, not a KeyError
        if not isinstance(raw, dict):
            raise ConfigError("it is not a JSON object")
        config = validate(
            {k: v for k, v in raw.items() if not k.startswith("_")},
            source=str(run / "study.json"),
            schema=_schema(),
        )
    except ConfigError as exc:
        raise DataError(
            f"{run} is not a usable subnetwork run directory ({exc}); run "
            "'repsim subnetwork search CONFIG' again to rewrite it."
        ) from None
    sec = config["subnetwork"]
    train, _val, test, biased = _splits(config)
    per_seed, rows = [], []
    for s in study_seeds(config):
        mask_file = run / f"seed{s}" / "mask.safetensors"  # written by Mask.save
        if not mask_file.is_file():
            raise DataError(
                f"{mask_file} is missing: seed {s} has not finished; run "
                "'repsim subnetwork search CONFIG --resume'."
            )
        model, _ = train_dense(config, s)
        mask = Mask.load(run / f"seed{s}" / "mask")
        rep = compare_subnetwork(
            model,
            mask,
            train=train,
            test=test,
            bias_labels=sec["bias"],
            biased_test=biased,
            conflict_attribute=sec.get("conflict_attribute"),
        )
        record = read_json(run / f"seed{s}" / "record.json", what="subnetwork record")
        if not isinstance(record, dict) or "chosen_step" not in record:
            raise DataError(
                f"{run / f'seed{s}' / 'record.json'} has no chosen_step; it is damaged. Run "
                "'repsim subnetwork search CONFIG --resume' to rewrite it."
            )
        per_seed.append({"seed": s, **rep, "chosen_step": record["chosen_step"]})
        rows += [{"seed": s, **r} for r in rep["rows"]]
    metrics = [k for k in rows[0] if k not in ("seed", "model")]
    summary = {
        m: {k: _t_interval([r[k] for r in rows if r["model"] == m]) for k in metrics}
        for m in ("vanilla", "subnetwork", "magnitude")
    }
    # paired over seeds: each compressed model minus its own vanilla model
    paired = {}
    for m in ("subnetwork", "magnitude"):
        paired[m] = {}
        for k in metrics:
            diffs = [
                a[k] - v[k]
                for a, v in zip(
                    [r for r in rows if r["model"] == m],
                    [r for r in rows if r["model"] == "vanilla"],
                )
            ]
            paired[m][k] = _t_interval(diffs)
    report = {
        "study": config["study"]["name"],
        "summary": summary,
        "minus_vanilla": paired,
        "per_seed": per_seed,
    }
    write_text(json.dumps(report, indent=1, default=float), run / "report.json")
    write_csv(rows, run / "report.csv", columns=["seed", "model", *metrics])
    return report
