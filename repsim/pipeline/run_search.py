"""Subnetwork runs from a study config: the pipeline behind ``repsim subnetwork search|report``.

A config is a study TOML with ``[study]``, ``[data]``, ``[model]``, ``[train]`` (the vanilla
models, trained or loaded from the model cache, one per seed) and a ``[subnetwork]`` section:
``method`` (``"bise"``, the default, or ``"surgeon"``), the bias attribute, the settings of that
method (absent keys take the method's own defaults; a key of the other method is an error),
how the validation and test splits are built, and the random control's ``random_k``.

``run_search`` writes, per seed, ``<out_dir>/<study name>/seed<k>/``: the search's checkpoint,
JSON log, mask and record, then the two controls at the found mask's per-layer sparsity
(``random`` and ``magnitude`` masks, ``controls.json``). ``run_report`` compares vanilla,
subnetwork, random and magnitude on the test split per seed and across seeds (mean with a
Student-t 95% interval, and paired differences), with bias probes per layer, group metrics,
CKA to vanilla and the data budget, and writes ``report.json``, CSV tables, figures and a
self-contained ``index.html``.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Mapping, Sequence
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
MODELS = ("vanilla", "subnetwork", "random", "magnitude")
COMPARISONS = (
    ("subnetwork", "vanilla"),
    ("subnetwork", "random"),
    ("subnetwork", "magnitude"),
    ("random", "vanilla"),
    ("magnitude", "vanilla"),
)

# Defaults of method="surgeon" as this section shipped them before BISE (they differ from
# search_surgeon's own keyword defaults; kept so that old configs give the same masks).
SURGEON_DEFAULTS: dict[str, Any] = {
    "granularity": "weight",
    "objective": "ce+mi",
    "gamma": 1.0,
    "reweight": 1.0,
    "target_sparsity": None,
    "sparsity_weight": 1.0,
    "steps": 600,
    "batch_size": 128,
    "lr": 5e-3,
    "head_lr": 1e-2,
    "tau": 0.1,
    "tau_decay": 0.5,
    "tau_min": 1e-3,
    "plateau_patience": 2,
    "plateau_delta": 1e-3,
    "eval_every": 25,
    "max_acc_drop": 0.02,
    "selection": "bias-head",
    "gate_init": 0.1,
    "checkpoint_every": 100,
}
BISE_KEYS = (
    "gamma",
    "reweight",
    "mi_samples",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "head_lr",
    "head_epochs",
    "tau",
    "tau_decay",
    "tau_period",
    "tau_min",
    "max_epochs",
    "gate_init",
    "selection",
    "checkpoint_every",
)
SEARCH_KEYS = tuple(SURGEON_DEFAULTS)
BUDGET_COLUMNS = (
    "seed",
    "search_n",
    "search_n_bias_labelled",
    "search_n_conflicting",
    "selection_rule",
    "selection_n",
    "selection_labels",
    "selection_n_conflicting",
    "selection_candidates",
    "random_k",
    "random_n_val",
)  # the surgeon's keys (the name earlier code imported)


def _bise_defaults() -> dict[str, Any]:
    from repsim.subnetwork.bise import search_bise

    params = inspect.signature(search_bise).parameters
    return {k: params[k].default for k in BISE_KEYS}


def _method_keys(method: str) -> tuple[str, ...]:
    return BISE_KEYS if method == "bise" else SEARCH_KEYS


def _check_section(values: dict[str, Any], where: str) -> dict[str, Any]:
    """Fill the method's defaults; a key of the other method only is an error naming it."""
    method = values["method"]
    own = _method_keys(method)
    other = "surgeon" if method == "bise" else "bise"
    for key in set(BISE_KEYS) | set(SEARCH_KEYS):
        if key not in own and values.get(key) is not None:
            raise ConfigError(
                f"'{where}.{key}' is a setting of method = \"{other}\", but this config has "
                f'method = "{method}" (BISE is the default). Remove the key or set '
                f'{where}.method = "{other}".'
            )
    defaults = _bise_defaults() if method == "bise" else SURGEON_DEFAULTS
    every = set(BISE_KEYS) | set(SEARCH_KEYS)
    out = {k: v for k, v in values.items() if k not in every or k in own}
    for key in own:
        if out.get(key) is None:
            out[key] = defaults[key]
    if method == "bise":
        if out["reweight"] not in ("bise", "cells", "independent", "none"):
            raise ConfigError(
                f'\'{where}.reweight\' must be "bise", "cells", "independent" or "none" for method = '
                f'"bise", got {out["reweight"]!r}.'
            )
        if out["selection"] not in ("val-acc", "final"):
            raise ConfigError(
                f'\'{where}.selection\' must be "val-acc" or "final" for method = "bise".'
            )
    else:
        if isinstance(out["reweight"], str):
            raise ConfigError(
                f"'{where}.reweight' is an exponent (0 = none, 1 = cells balanced) for method "
                f'= "surgeon", got {out["reweight"]!r}.'
            )
        if out["selection"] not in ("bias-head", "val-acc"):
            raise ConfigError(
                f'\'{where}.selection\' must be "bias-head" or "val-acc" for method = "surgeon".'
            )
    if out["random_k"] < 0:
        raise ConfigError(f"'{where}.random_k' must be >= 0 (0: as many as the search scored).")
    return out


SUBNETWORK_SECTION = Section(
    {
        "method": Field((str,), "bise", ("bise", "surgeon"), help="bise (default) or surgeon"),
        "bias": Field((str,), help="attribute holding the bias label (colour, sex)"),
        # shared names (each method has its own default)
        "gamma": Field(_F, None),
        "reweight": Field((int, float, str), None),
        "batch_size": Field((int,), None),
        "lr": Field(_F, None),
        "head_lr": Field(_F, None),
        "tau": Field(_F, None),
        "tau_decay": Field(_F, None),
        "tau_min": Field(_F, None),
        "gate_init": Field(_F, None),
        "selection": Field((str,), None),
        "checkpoint_every": Field((int,), None),
        # BISE only
        "mi_samples": Field((str,), None, ("conflicting", "all")),
        "momentum": Field(_F, None),
        "weight_decay": Field(_F, None),
        "head_epochs": Field((int,), None),
        "tau_period": Field((int,), None),
        "max_epochs": Field((int,), None),
        # surgeon only
        "granularity": Field((str,), None, ("weight", "channel")),
        "objective": Field((str,), None, ("ce+mi", "ce")),
        "target_sparsity": Field(_F, None),
        "sparsity_weight": Field(_F, None),
        "steps": Field((int,), None),
        "plateau_patience": Field((int,), None),
        "plateau_delta": Field(_F, None),
        "eval_every": Field((int,), None),
        "max_acc_drop": Field(_F, None),
        # data
        "val_fraction": Field(_F, 0.15, help="share of train held out when data has no val"),
        "balance_val": Field(
            (str, bool),
            "none",
            help="subsample val so class and bias are independent: none, independent, cells",
            check=lambda v, key: _check_balance(v, key),
        ),
        "balance_test": Field(
            (str, bool),
            "none",
            help="evaluate on a test subsample where class and bias are independent (the full "
            "test split is then reported as biased_test): none, independent, cells",
            check=lambda v, key: _check_balance(v, key),
        ),
        "biased_test": Field((dict,), None, help="dataset options giving a biased test split"),
        "conflict_attribute": Field((str,), "bias"),
        # controls and report
        "random_k": Field((int,), 0, help="random masks drawn (0: as many as the search scored)"),
    },
    required=True,
    check=_check_section,
)


def _schema() -> dict[str, Section]:
    """The study schema plus the required ``[subnetwork]`` section.

    The study schema plus the required ``[subnetwork]`` section (a new schema: the shared one
    is left as it is, so other studies do not need the section).
    """
    return extend_schema({"subnetwork": SUBNETWORK_SECTION})


BALANCES = ("none", "independent", "cells")


def _check_balance(value: Any, key: str) -> str:
    if value is True:  # run directories written before the modes existed
        return "cells"
    if value is False:
        return "none"
    if value not in BALANCES:
        raise ConfigError(f"'{key}' must be one of {BALANCES}, got {value!r}.")
    return value


def balanced_subset(data: Any, bias: np.ndarray, seed: int, mode: str = "cells") -> Any:
    """The largest subset of ``data`` in which class and bias label are independent.

    ``mode="cells"``: every non-empty (class, bias) cell keeps the same number of samples (the
    smallest cell's count), so class and bias are independent *and* uniform. ``mode=
    "independent"``: cell ``(c, k)`` keeps ``floor(s P(c) P(k))`` samples with the split's own
    marginals ``P(c)``, ``P(k)`` and the largest ``s`` the cells allow, so class and bias are
    independent while the class prior and the bias prior stay those of the split (Adult: a
    quarter of the rows earn >50K, two thirds are men, in every subset). Samples are drawn
    with ``seed``.

    Raises
    ------
    DataError
        ``mode="independent"`` with an empty cell whose class and bias both occur.
    """
    y = np.asarray(data.y, dtype=np.int64)
    k = int(bias.max()) + 1
    c = int(y.max()) + 1
    counts = np.zeros((c, k), dtype=np.int64)
    np.add.at(counts, (y, bias), 1)
    if mode == "cells":
        target = np.where(counts > 0, counts[counts > 0].min(), 0)
    elif mode == "independent":
        prod = np.outer(counts.sum(1), counts.sum(0)) / counts.sum() ** 2
        if np.any((prod > 0) & (counts == 0)):
            raise DataError(
                "A (class, bias) cell is empty although its class and bias value occur; no "
                "subset can make them independent. Use balance = 'cells' or 'none'."
            )
        scale = np.min(counts[prod > 0] / prod[prod > 0])
        target = np.floor(scale * prod + 1e-9).astype(np.int64)
    else:
        raise ConfigError(f"Unknown balance mode {mode!r}; use one of {BALANCES}.")
    rng = np.random.default_rng(seed)
    keep = [
        rng.choice(np.flatnonzero((y == ci) & (bias == ki)), int(target[ci, ki]), replace=False)
        for ci in range(c)
        for ki in range(k)
        if target[ci, ki] > 0
    ]
    return data.subset(np.sort(np.concatenate(keep)))


def _splits(config: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """train, val, test and the optional biased test split of a subnetwork config."""
    from repsim.subnetwork.bias import bias_array

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
    seed = config["study"]["seed"]
    bal_val = _check_balance(sec.get("balance_val", "none"), "subnetwork.balance_val")
    bal_test = _check_balance(sec.get("balance_test", "none"), "subnetwork.balance_test")
    if bal_val != "none":
        val = balanced_subset(val, bias_array(val, sec["bias"], "val"), seed, bal_val)
    test, biased = data.test, None
    if bal_test != "none":
        biased = test
        test = balanced_subset(test, bias_array(test, sec["bias"], "test"), seed + 1, bal_test)
    if sec["biased_test"]:
        cfg = {**config, "data": {**config["data"], **sec["biased_test"]}}
        biased = dataset_from_config(cfg).test
    return train, val, test, biased


def _settings(sec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: sec[k] for k in _method_keys(sec.get("method", "surgeon"))}


def _structure(sec: Mapping[str, Any]) -> str:
    if sec.get("method", "surgeon") == "bise":
        return "channel"
    return "row" if sec["granularity"] == "channel" else "weight"


def _controls(model: Any, res: Any, sec: Mapping[str, Any], train, val, seed: int) -> dict:
    """Random (best of k, same rule and split) and magnitude masks at the found per-layer sparsity."""
    import torch

    from repsim.subnetwork.channels import channel_units
    from repsim.subnetwork.controls import magnitude_control, random_control

    structure = _structure(sec)
    units = (
        channel_units(model, torch.from_numpy(np.ascontiguousarray(val.x[:2])))
        if structure == "channel"
        else None
    )
    k = sec["random_k"] or max(1, len(res.evals))
    extra: dict[str, Any] = {}
    if sec["selection"] == "bias-head":
        extra = {
            "train": train,
            "bias_labels": sec["bias"],
            "vanilla_val_acc": res.record["vanilla_val_acc"],
            "max_acc_drop": sec["max_acc_drop"],
        }
    rnd, rec = random_control(
        model,
        res.mask,
        structure=structure,
        units=units,
        k=k,
        rule=sec["selection"],
        val=val,
        seed=seed,
        **extra,
    )
    mag = magnitude_control(model, res.mask, structure=structure, units=units)
    return {"random": (rnd, rec), "magnitude": (mag, {"rule": "L1 norm per layer", "data": 0})}


def run_search(
    config_path: str | Path,
    *,
    resume: bool = False,
    seed: int | None = None,
    progress: bool | None = None,
) -> Path:
    """Search a subnetwork (and its controls) for every seed of the config; return the run dir."""
    from repsim.pipeline.study import train_dense
    from repsim.subnetwork import search
    from repsim.subnetwork.search import as_mask

    config = load_config(config_path, schema=_schema())
    sec = config["subnetwork"]
    out = Path(config["study"]["out_dir"]) / config["study"]["name"]
    out.mkdir(parents=True, exist_ok=True)
    write_json(config, out / "study.json", indent=1, allow_nan=True)
    train, val, _test, _ = _splits(config)
    extra: dict[str, Any] = {}
    if sec["method"] == "bise" and sec["conflict_attribute"] in train.attributes:
        extra["conflicting"] = sec["conflict_attribute"]
    for s in [seed] if seed is not None else study_seeds(config):
        model, _ = train_dense(config, s, progress=progress)
        run_dir = out / f"seed{s}"
        resume_this = resume and (run_dir / "checkpoint.pt").exists()
        res = search(
            model,
            train,
            bias_labels=sec["bias"],
            method=sec["method"],
            val=val,
            run_dir=run_dir,
            resume=resume_this,
            seed=s,
            progress=progress,
            **extra,
            **_settings(sec),
        )
        if not (run_dir / "controls.json").is_file():
            controls = _controls(model, res, sec, train, val, s)
            for name, (mask, _rec) in controls.items():
                as_mask(mask, fingerprint=res.mask.fingerprint).save(run_dir / name)
            write_json(
                {name: rec for name, (_m, rec) in controls.items()},
                run_dir / "controls.json",
                indent=1,
                allow_nan=True,
            )
        print(
            f"seed {s}: {sec['method']}, chosen {res.record.get('chosen_unit', 'step')} "
            f"{res.record['chosen_step']}, weight sparsity "
            f"{res.record['sparsity']['overall']:.4f} -> {run_dir}"
        )
    return out


def _t_interval(values: list[float]) -> dict[str, float]:
    """Mean and Student-t 95% interval over seeds (:func:`repsim._core.stats.t_interval`)."""
    return t_interval([float(v) for v in values], ci=0.95)


def _fmt_ci(ci: Mapping[str, float], digits: int = 3) -> str:
    if ci is None or ci.get("mean") is None or math.isnan(ci["mean"]):
        return "n/a"
    if math.isnan(ci["lo"]):
        return f"{ci['mean']:.{digits}f} (n={ci['n']})"
    return f"{ci['mean']:.{digits}f} [{ci['lo']:.{digits}f}, {ci['hi']:.{digits}f}]"


def _fmt_diff(ci: Mapping[str, float], digits: int = 3) -> str:
    if ci is None or math.isnan(ci.get("mean", math.nan)):
        return "n/a"
    if math.isnan(ci["lo"]):
        return f"{ci['mean']:+.{digits}f} (n={ci['n']})"
    return f"{ci['mean']:+.{digits}f} [{ci['lo']:+.{digits}f}, {ci['hi']:+.{digits}f}]"


def _paired(rows: list[dict], a: str, b: str, key: str) -> dict[str, float]:
    """t-interval of ``a - b`` over seeds (each seed's models compared with each other)."""
    by = {(r["seed"], r["model"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    diffs = [
        by[(s, a)][key] - by[(s, b)][key]
        for s in seeds
        if (s, a) in by and (s, b) in by and key in by[(s, a)] and key in by[(s, b)]
    ]
    return _t_interval(diffs)


def verdicts(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report's claims, each decided by a paired 95% t-interval over seeds.

    - ``beats_random``/``beats_magnitude``/``beats_vanilla``: the interval of the subnetwork's
      bias-conflicting accuracy minus the other model's lies above 0;
    - ``less_decodable``: the interval of its bottleneck bias-probe accuracy minus the vanilla
      model's lies below 0; ``less_decodable_than_random`` likewise against the random control;
    - ``bias_free_bottleneck``: the interval of its bottleneck probe accuracy includes the
      probe's chance level or lies below it (bias not decodable above chance).
    """
    p = report["paired"]
    s = report["summary"]["subnetwork"]
    key = "conflicting_acc"

    def above(ci):
        return bool(ci and not math.isnan(ci["lo"]) and ci["lo"] > 0)

    def below(ci):
        return bool(ci and not math.isnan(ci["hi"]) and ci["hi"] < 0)

    probe = s.get("bias_probe_acc")
    chance = s.get("bias_chance", {}).get("mean", math.nan)
    return {
        "n_seeds": report["n_seeds"],
        "beats_vanilla": above(p["subnetwork-vanilla"].get(key)),
        "beats_random": above(p["subnetwork-random"].get(key)),
        "beats_magnitude": above(p["subnetwork-magnitude"].get(key)),
        "less_decodable": below(p["subnetwork-vanilla"].get("bias_probe_acc")),
        "less_decodable_than_random": below(p["subnetwork-random"].get("bias_probe_acc")),
        "bias_free_bottleneck": bool(
            probe is not None and not math.isnan(probe["lo"]) and probe["lo"] <= chance
        ),
    }


def _verdict_text(report: Mapping[str, Any]) -> list[str]:
    v = report["verdicts"]
    p, s = report["paired"], report["summary"]
    n = report["n_seeds"]
    key = "conflicting_acc"
    lines = [
        f"{n} seeds; intervals are Student-t 95% over seeds, differences paired within a seed.",
        "Bias-conflicting test accuracy: vanilla "
        f"{_fmt_ci(s['vanilla'][key])}, subnetwork {_fmt_ci(s['subnetwork'][key])}, random "
        f"control {_fmt_ci(s['random'][key])}, magnitude {_fmt_ci(s['magnitude'][key])}.",
        "Subnetwork minus random control: "
        f"{_fmt_diff(p['subnetwork-random'][key])}; minus magnitude: "
        f"{_fmt_diff(p['subnetwork-magnitude'][key])}; minus vanilla: "
        f"{_fmt_diff(p['subnetwork-vanilla'][key])}. "
        + (
            "The subnetwork beats both controls on bias-conflicting samples."
            if v["beats_random"] and v["beats_magnitude"]
            else "The subnetwork does NOT beat both controls on bias-conflicting samples "
            f"(random: {'yes' if v['beats_random'] else 'no'}, magnitude: "
            f"{'yes' if v['beats_magnitude'] else 'no'})."
        ),
        "Bias probe on the bottleneck (fresh linear probe, held-out halves of the test split): "
        f"vanilla {_fmt_ci(s['vanilla']['bias_probe_acc'])}, subnetwork "
        f"{_fmt_ci(s['subnetwork']['bias_probe_acc'])} (chance "
        f"{s['subnetwork']['bias_chance']['mean']:.3f}); subnetwork minus vanilla "
        f"{_fmt_diff(p['subnetwork-vanilla']['bias_probe_acc'])}. "
        + (
            "The bias attribute is less decodable from the subnetwork's features"
            if v["less_decodable"]
            else "The bias attribute is NOT measurably less decodable from the subnetwork's "
            "features"
        )
        + (
            ", and not decodable above chance."
            if v["bias_free_bottleneck"]
            else "; it remains decodable above chance, so the subnetwork is not bias-free."
        ),
    ]
    return lines


def _aggregate(rows: list[dict], probes: list[dict], cka_rows: list[dict]) -> dict[str, Any]:
    metrics = [k for k in rows[0] if k not in ("seed", "model")]
    summary = {
        m: {k: _t_interval([r[k] for r in rows if r["model"] == m and k in r]) for k in metrics}
        for m in MODELS
    }
    paired = {f"{a}-{b}": {k: _paired(rows, a, b, k) for k in metrics} for a, b in COMPARISONS}
    layers = list(dict.fromkeys(r["layer"] for r in probes))
    probe_summary = []
    for layer in layers:
        entry: dict[str, Any] = {"layer": layer}
        for m in MODELS:
            vals = [r["acc"] for r in probes if r["layer"] == layer and r["model"] == m]
            entry[m] = _t_interval(vals)
        entry["chance"] = float(np.mean([r["chance"] for r in probes if r["layer"] == layer]))
        prow = [
            {"seed": r["seed"], "model": r["model"], "acc": r["acc"]}
            for r in probes
            if r["layer"] == layer
        ]
        entry["subnetwork-vanilla"] = _paired(prow, "subnetwork", "vanilla", "acc")
        entry["subnetwork-random"] = _paired(prow, "subnetwork", "random", "acc")
        probe_summary.append(entry)
    cka_summary = []
    for layer in layers:
        entry = {"layer": layer}
        for m in MODELS[1:]:
            vals = [r["cka"] for r in cka_rows if r["layer"] == layer and r["model"] == m]
            entry[m] = _t_interval(vals)
        cka_summary.append(entry)
    return {
        "summary": summary,
        "paired": paired,
        "probes": probe_summary,
        "cka": cka_summary,
        "metrics": metrics,
    }


def run_report(run_dir: str | Path, *, html: bool = True) -> dict[str, Any]:
    """Compare vanilla, subnetwork, random and magnitude for each seed of a finished run.

    Returns the report (also written to ``report.json``, ``report.csv``, ``probes.csv``,
    ``cka.csv`` and, with ``html``, ``index.html`` with its figures).

    Raises
    ------
    DataError
        ``run_dir`` is not a subnetwork run, or a seed has not finished.
    """
    from repsim.compress import Mask
    from repsim.pipeline.study import train_dense
    from repsim.subnetwork.report import conflicting_test_samples, evaluate_models
    from repsim.subnetwork.search import apply_mask

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
    sec.setdefault("method", "surgeon")  # runs written before BISE became the default
    train, val, test, biased = _splits(config)
    conflicting = conflicting_test_samples(train, test, sec["bias"], sec.get("conflict_attribute"))
    per_seed, rows, probes, cka_rows, budgets = [], [], [], [], []
    for s in study_seeds(config):
        seed_dir = run / f"seed{s}"
        for name in ("mask", "random", "magnitude"):
            if not (seed_dir / f"{name}.safetensors").is_file():
                raise DataError(
                    f"{seed_dir / (name + '.safetensors')} is missing: seed {s} has not "
                    "finished; run 'repsim subnetwork search CONFIG --resume'."
                )
        model, _ = train_dense(config, s)
        record = read_json(seed_dir / "record.json", what="subnetwork record")
        if not isinstance(record, dict) or "chosen_step" not in record:
            raise DataError(
                f"{seed_dir / 'record.json'} has no chosen_step; it is damaged. Run "
                "'repsim subnetwork search CONFIG --resume' to rewrite it."
            )
        controls = read_json(seed_dir / "controls.json", what="subnetwork controls")
        masks = {
            "subnetwork": Mask.load(seed_dir / "mask"),
            "random": Mask.load(seed_dir / "random"),
            "magnitude": Mask.load(seed_dir / "magnitude"),
        }
        models = {"vanilla": model, **{k: apply_mask(model, m) for k, m in masks.items()}}
        weights = [
            k for k in masks["subnetwork"] if k in _weight_names(record, masks["subnetwork"])
        ]
        sparsity = {"vanilla": 0.0}
        for k, m in masks.items():
            kept = sum(int(m[w].sum()) for w in weights)
            total = sum(m[w].numel() for w in weights)
            sparsity[k] = 1.0 - kept / total
        layers = record.get("probe_layers") or list(
            dict.fromkeys(w.rsplit(".", 1)[0] for w in weights)
        )
        rep = evaluate_models(
            models,
            test=test,
            bias_labels=sec["bias"],
            conflicting=conflicting,
            layers=layers,
            biased_test=biased,
            sparsity=sparsity,
            seed=s,
        )
        rows += [{"seed": s, **r} for r in rep["rows"]]
        probes += [{"seed": s, **r} for r in rep["probes"]]
        cka_rows += [{"seed": s, **r} for r in rep["cka"]]
        budgets.append(
            {
                "seed": s,
                **_flat_budget(record.get("data_budget")),
                "random_k": controls["random"]["k"],
                "random_n_val": controls["random"]["data_budget"]["n_samples"],
            }
        )
        per_seed.append(
            {
                "seed": s,
                "chosen_step": record["chosen_step"],
                "chosen_unit": record.get("chosen_unit", "step"),
                "record": {k: record.get(k) for k in ("chosen", "layers", "vanilla_val_acc")},
                "shift": rep["shift"],
                "random_control": {k: v for k, v in controls["random"].items() if k != "val_accs"},
            }
        )
    agg = _aggregate(rows, probes, cka_rows)
    report = {
        "study": config["study"]["name"],
        "method": sec["method"],
        "settings": {k: v for k, v in sec.items()},
        "n_seeds": len(per_seed),
        "seeds": [p["seed"] for p in per_seed],
        "n_test": len(test),
        "n_test_conflicting": int(conflicting.sum()),
        **agg,
        "data_budget": budgets,
        "per_seed": per_seed,
        # old keys, kept for readers of earlier reports
        "minus_vanilla": {
            m: agg["paired"][f"{m}-vanilla"] for m in ("subnetwork", "magnitude", "random")
        },
    }
    report["verdicts"] = verdicts(report)
    report["verdict_text"] = _verdict_text(report)
    write_text(json.dumps(report, indent=1, default=float), run / "report.json")
    write_csv(rows, run / "report.csv", columns=["seed", "model", *agg["metrics"]])
    write_csv(probes, run / "probes.csv", columns=["seed", "model", "layer", "acc", "chance", "n"])
    write_csv(cka_rows, run / "cka.csv", columns=["seed", "model", "layer", "cka"])
    if html:
        write_search_html(run, report, rows)
    return report


def _weight_names(record: Mapping[str, Any], mask: Mapping[str, Any]) -> set[str]:
    """The gated layers' weights of a mask (BISE masks also hold bias and BatchNorm entries)."""
    layers = record.get("layers")
    if layers:
        return {f"{layer}.weight" for layer in layers}
    return {k for k in mask if k.endswith(".weight")}


def _flat_budget(budget: Mapping[str, Any] | None) -> dict[str, Any]:
    if not budget:
        return {}
    s, v = budget["search"], budget["selection"]
    return {
        "search_split": s["split"],
        "search_n": s["n_samples"],
        "search_n_bias_labelled": s["n_bias_labelled"],
        "search_n_conflicting": s["n_conflicting"],
        "selection_rule": v["rule"],
        "selection_split": v["split"],
        "selection_n": v["n_samples"],
        "selection_labels": "+".join(v["labels_used"]) or "none",
        "selection_n_conflicting": v["n_conflicting"],
        "selection_candidates": v["n_candidates_scored"],
    }


def _plots(run: Path, report: Mapping[str, Any]) -> list[tuple[Path, str]]:
    """Bar chart of the headline metrics and the per-layer probe curve (PNG, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = []
    s = report["summary"]
    keys = [
        ("test_acc", "test accuracy"),
        ("conflicting_acc", "bias-conflicting acc."),
        ("aligned_acc", "bias-aligned acc."),
        ("bias_probe_acc", "bias probe (bottleneck)"),
    ]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    width = 0.2
    colours = {
        "vanilla": "#777777",
        "subnetwork": "#1f77b4",
        "random": "#ff7f0e",
        "magnitude": "#2ca02c",
    }
    for i, m in enumerate(MODELS):
        means = [s[m][k]["mean"] for k, _ in keys]
        err = [
            [
                s[m][k]["mean"] - s[m][k]["lo"] if not math.isnan(s[m][k]["lo"]) else 0
                for k, _ in keys
            ],
            [
                s[m][k]["hi"] - s[m][k]["mean"] if not math.isnan(s[m][k]["hi"]) else 0
                for k, _ in keys
            ],
        ]
        ax.bar(
            np.arange(len(keys)) + (i - 1.5) * width,
            means,
            width,
            yerr=err,
            capsize=3,
            label=m,
            color=colours[m],
        )
    chance = s["subnetwork"]["bias_chance"]["mean"]
    ax.axhline(chance, xmin=0.75, xmax=1.0, color="k", ls=":", lw=1)
    ax.set_xticks(np.arange(len(keys)), [label for _, label in keys])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean over seeds, 95% t-interval")
    ax.legend(ncol=4, fontsize=8, loc="upper left")
    ax.set_title(f"{report['study']}: subnetwork vs controls ({report['n_seeds']} seeds)")
    fig.tight_layout()
    path = run / "metrics.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    figs.append((path, "Headline metrics per model (dotted: bias-probe chance level)."))
    fig, ax = plt.subplots(figsize=(9, 3.5))
    layers = [p["layer"] for p in report["probes"]]
    for m in MODELS:
        mean = [p[m]["mean"] for p in report["probes"]]
        lo = [p[m]["lo"] for p in report["probes"]]
        hi = [p[m]["hi"] for p in report["probes"]]
        ax.plot(layers, mean, marker="o", label=m, color=colours[m])
        ax.fill_between(layers, lo, hi, alpha=0.15, color=colours[m])
    ax.plot(layers, [p["chance"] for p in report["probes"]], "k:", label="chance")
    ax.set_ylabel("bias-probe accuracy (held out)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, ncol=5)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.tight_layout()
    path = run / "probes.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    figs.append((path, "How well a fresh linear probe reads the bias attribute, per layer."))
    return figs


def write_search_html(run: Path, report: Mapping[str, Any], rows: Sequence[Mapping]) -> Path:
    """``index.html`` of a subnetwork run: verdicts, controls, probes, CKA, data budget."""
    from repsim.report.html import Section as HtmlSection
    from repsim.report.html import write_index

    s, p = report["summary"], report["paired"]
    cols = [
        ("test_acc", "test acc"),
        ("conflicting_acc", "conflicting acc"),
        ("aligned_acc", "aligned acc"),
        ("biased_test_acc", "biased test acc"),
        ("bias_probe_acc", "bias probe (bottleneck)"),
        ("worst_group_accuracy", "worst-group acc"),
        ("accuracy_difference", "group acc gap"),
        ("equalized_odds_difference", "equalized-odds diff"),
        ("sparsity", "weight sparsity"),
    ]
    cols = [(k, label) for k, label in cols if k in s["vanilla"]]
    main = [{"model": m, **{label: _fmt_ci(s[m][k]) for k, label in cols}} for m in MODELS]
    diffs = [
        {
            "comparison": name.replace("-", " - "),
            **{label: _fmt_diff(p[name][k]) for k, label in cols if k != "sparsity"},
        }
        for name in p
    ]
    probe_rows = [
        {
            "layer": e["layer"],
            **{m: _fmt_ci(e[m]) for m in MODELS},
            "chance": f"{e['chance']:.3f}",
            "subnetwork - vanilla": _fmt_diff(e["subnetwork-vanilla"]),
            "subnetwork - random": _fmt_diff(e["subnetwork-random"]),
        }
        for e in report["probes"]
    ]
    cka_rows = [
        {"layer": e["layer"], **{m: _fmt_ci(e[m]) for m in MODELS[1:]}} for e in report["cka"]
    ]
    budget = report["data_budget"]
    b0 = budget[0] if budget else {}
    budget_text = [
        f"Search: {b0.get('search_n', 'n/a')} training samples ({b0.get('search_split', '')}), "
        f"every one with a class and a bias label; {b0.get('search_n_conflicting', 'n/a')} of "
        "them bias-conflicting.",
        f"Selection: rule '{b0.get('selection_rule', 'n/a')}' on {b0.get('selection_n', 0)} "
        f"samples of {b0.get('selection_split') or 'no split'} (labels used: "
        f"{b0.get('selection_labels', 'none')}; {b0.get('selection_n_conflicting', 0)} of them "
        f"bias-conflicting), {b0.get('selection_candidates', 0)} candidate masks scored.",
        f"Random control: best of {b0.get('random_k', 'n/a')} random masks under the same rule, "
        f"on the same {b0.get('random_n_val', 0)} validation samples. Magnitude control: no data.",
        "Whether this counts as 'without extra data' depends on the selection split: a "
        "validation split that is less biased than the training data is extra information the "
        "vanilla model's training did not have.",
    ]
    figs = _plots(run, report)
    per_seed = [
        {
            k: r.get(k)
            for k in (
                "seed",
                "model",
                "test_acc",
                "conflicting_acc",
                "aligned_acc",
                "bias_probe_acc",
                "sparsity",
            )
        }
        for r in rows
    ]
    settings = report["settings"]
    sections = [
        HtmlSection(
            "Subnetwork vs controls",
            text=[
                "Each model on the same test samples: the vanilla model, the found subnetwork, "
                "the best of k random masks with the subnetwork's per-layer sparsity (same "
                "selection rule, same validation split), and magnitude pruning (L1) at the same "
                "per-layer sparsity. Cells: mean over seeds [Student-t 95% interval]."
            ],
            figures=[figs[0]],
            tables=[("Metrics per model", main)],
        ),
        HtmlSection(
            "Paired differences",
            text=["Each seed's models compared with each other, then a t-interval over seeds."],
            tables=[("Differences (mean [95% interval])", diffs)],
        ),
        HtmlSection(
            "Bias decodability per layer",
            text=[
                "A fresh multinomial logistic regression predicts the bias attribute from each "
                "layer's frozen features (spatial means for conv maps), fitted on one half of "
                "the test split and scored on the other (2-fold cross-fitting), with "
                "(class, bias)-balanced weights so reading the class does not count. "
                "'bottleneck' is the classifier's input: the same tensor as the last gated "
                "layer's output when nothing sits between them."
            ],
            figures=[figs[1]],
            tables=[("Bias-probe accuracy per layer", probe_rows)],
        ),
        HtmlSection(
            "Representation drift: CKA to the vanilla model",
            text=["Linear CKA between each model's layer and the vanilla model's same layer."],
            tables=[("CKA per layer", cka_rows)],
        ),
        HtmlSection(
            "Data budget",
            text=budget_text,
            tables=[
                (
                    "Data used per seed",
                    [{k: b.get(k) for k in BUDGET_COLUMNS if k in b} for b in budget],
                )
            ],
        ),
        HtmlSection("Per seed", tables=[("Per seed and model", per_seed)]),
        HtmlSection(
            "Method and settings",
            text=[
                f"method = {report['method']}; "
                + ", ".join(f"{k} = {v}" for k, v in settings.items() if k != "method"),
                "Definitions and sources: docs/subnetwork.md.",
            ],
        ),
    ]
    return write_index(
        run,
        title=f"Bias-free subnetwork search: {report['study']}",
        summary=report["verdict_text"] + [budget_text[0], budget_text[1]],
        sections=sections,
        meta=f"repsim subnetwork report; method {report['method']}; seeds {report['seeds']}; "
        f"{report['n_test']} test samples ({report['n_test_conflicting']} bias-conflicting).",
    )
