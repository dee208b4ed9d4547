"""Running a study from its config: the pipeline behind ``repsim run``.

One TOML config names the data, the architecture, the dense seeds, the compression family, the
layers, the similarity measures and the bias metrics. :func:`run_study` then

1. validates the whole config (unknown keys, measures, metrics, pruning methods, layers missing
   in a model of the family) before any long work starts;
2. trains the dense model of every seed and
3. builds the family with :func:`repsim.pipeline.family.build` (see :func:`family_spec`): every dense
   seed pruned to every sparsity with every method, then recovered by fine-tuning (``"ft"``),
   knowledge distillation from its own dense model (``"kd"``) or not at all (``"none"``); every
   model is cached under ``<cache_dir>/models/``, shared with ``repsim train`` and
   ``repsim family build``;
4. captures every model's layers on the test split into the activation store;
5. measures per-layer similarity dense vs compressed *and* dense seed vs dense seed (the noise
   floor), on all samples and per group;
6. measures fairness (per-group metrics, compression shift with CEV/SDE, exemplars);
7. relates divergence to bias (:func:`repsim.explain.relate`);
8. writes ``<out_dir>/<study>/``: ``results.json``, tidy CSVs, PNGs and ``index.html``.

Every cached step is reused: a second run of the same config trains and captures nothing and
gives identical numbers (``results.json["work"]`` counts what was trained and captured).
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from repsim._core.stats import alpha_renamed_to_ci, alpha_to_ci
from repsim._version import __version__
from repsim.errors import ConfigError, LayerNotFoundError, did_you_mean
from repsim.pipeline.config import (
    Field,
    Section,
    dataset_from_config,
    load_config,
    model_from_config,
    register_section,
)

RECOVERIES = ("none", "ft", "kd")
METRICS = ("cev", "sde", "worst_group_drop", "acc_drop")

register_section(
    "compression",
    Section(
        {
            "methods": Field(
                (list,), ["magnitude"], help="pruning methods (repsim.compress.prune)"
            ),
            "sparsities": Field((list,), [0.5, 0.8, 0.9], help="target sparsities in [0, 1)"),
            "recovery": Field(
                (list,),
                ["ft"],
                help="after pruning: 'none', 'ft' (fine-tune), 'kd' (distil from the dense model)",
            ),
            "scope": Field((str,), None, ("global", "layerwise"), help="pruning scope"),
            "epochs": Field((int,), 3, help="fine-tuning / distillation epochs"),
            "lr": Field((int, float), 1e-3, help="fine-tuning / distillation learning rate"),
            "kd_temperature": Field((int, float), 4.0, help="distillation temperature T"),
            "kd_alpha": Field((int, float), 0.9, help="weight of the soft (teacher) term"),
            "kd_gamma": Field((int, float), 0.1, help="weight of the hard (label) term"),
        },
        help="the compressed family",
    ),
)
register_section(
    "capture",
    Section(
        {
            "layers": Field((list, str), None, help="layer names or globs (default: every leaf)"),
            "reduction": Field(
                (str,), "flatten", ("flatten", "mean", "max"), help="how conv maps become [n, d]"
            ),
            "batch_size": Field((int,), 256),
        },
        help="which activations are recorded",
    ),
)
register_section(
    "similarity",
    Section(
        {
            "measures": Field((list,), ["cka"], help="similarity measures (repsim.similarity)"),
            "divergence": Field((str,), "1-cka", help="'1-<measure>' or a distance measure"),
            "by_group": Field((bool,), True, help="also compute each measure per group"),
            "heatmaps": Field((bool,), True, help="layer x layer CKA matrix per configuration"),
        },
        help="layer similarity",
    ),
)
register_section(
    "fairness",
    Section(
        {
            "metrics": Field((list,), list(METRICS), help=f"bias metrics among {list(METRICS)}"),
            "convention": Field((str,), "2021", ("2021", "2022"), help="CEV/SDE convention"),
            "eps": Field((int, float), None, help="floor of zero dense rates in relative changes"),
            "exemplar_fraction": Field(
                (int, float),
                0.1,
                help="share of test samples flagged as CIE candidates (taxicab ranking)",
            ),
        },
        help="group fairness and compression bias",
    ),
)
register_section(
    "report",
    Section(
        {
            "n_boot": Field((int,), 1000, help="bootstrap resamples of every CI"),
            "n_permutations": Field((int,), 5000, help="permutations of every p-value"),
            "alpha": Field((int, float), 0.05, help="CIs are 1 - alpha"),
        },
        help="statistics and output",
    ),
)


def family_spec(
    config: Mapping[str, Any], *, compression: bool = True, seeds: Sequence[int] | None = None
) -> dict[str, Any]:
    """The study's models as a :mod:`repsim.pipeline.family` config (one cache for every command).

    Dense models come from ``[data]``, ``[model]``, ``[train]`` and the study's seeds; with
    ``compression``, each ``[compression]`` method gets a population per recovery: ``"none"``
    (pruned, no fine-tuning), ``"ft"`` (fine-tuned) and ``"kd"`` (distilled from the seed's own
    dense model), ``compression.epochs`` epochs at ``compression.lr``.
    """
    data, model = config["data"], config["model"]
    spec: dict[str, Any] = {
        "name": f"{data['name']}-{model['name']}",
        "dataset": data["name"],
        "dataset_options": {k: v for k, v in data.items() if k not in ("name", "groups")},
        "model": model["name"],
        "model_options": {k: v for k, v in model.items() if k != "name"},
        "seeds": list(seeds) if seeds is not None else _seeds(config),
        "cache_dir": str(config["study"]["cache_dir"]),
        "train": {k: v for k, v in config.get("train", {}).items() if v is not None},
        "compression": [],
    }
    if compression:
        comp = config["compression"]
        recovery = comp["recovery"]
        for method in comp["methods"]:
            base = {
                "method": method,
                "sparsities": [float(x) for x in comp["sparsities"]],
                "scope": comp["scope"],
            }
            if "none" in recovery:
                spec["compression"].append({**base, "kd": [False], "finetune_epochs": 0})
            kd = [r == "kd" for r in ("ft", "kd") if r in recovery]
            if kd:
                spec["compression"].append(
                    {
                        **base,
                        "kd": kd,
                        "finetune_epochs": comp["epochs"],
                        "finetune": {"lr": comp["lr"]},
                        "kd_options": {
                            "T": comp["kd_temperature"],
                            "alpha": comp["kd_alpha"],
                            "gamma": comp["kd_gamma"],
                        },
                    }
                )
    return spec


def dense_model_path(config: Mapping[str, Any], seed: int) -> Path:
    """Cache path (``.safetensors``) of the dense model a config trains with ``seed``."""
    from repsim.pipeline.family import plan

    return plan(family_spec(config, compression=False, seeds=[seed])).dense(seed).path


def train_dense(
    config: Mapping[str, Any], seed: int, *, data: Any = None, progress: bool | None = None
) -> tuple[nn.Module, bool]:
    """Train the config's dense model for ``seed`` (:func:`repsim.pipeline.family.build`), or load it.

    ``data`` is accepted for callers that already loaded the dataset; the family loads its
    own copy only when it has to train.

    Returns
    -------
    (torch.nn.Module, bool)
        The model (eval mode, CPU) and whether it was trained now (False: loaded from cache).
    """
    from repsim.pipeline.family import build

    member = build(family_spec(config, compression=False, seeds=[seed]), progress=False).dense(seed)
    return member.load().eval(), member.built


def environment() -> dict[str, str]:
    """Versions that determine the numbers (recorded in every report)."""
    import numpy
    import scipy
    import sklearn

    return {
        "repsim": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
        "threads": str(torch.get_num_threads()),
    }


# --------------------------------------------------------------------------------------------
# validation


def _seeds(config: Mapping[str, Any]) -> list[int]:
    study = config["study"]
    seeds = study["seeds"] if study["seeds"] is not None else [study["seed"]]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"'study.seeds' must be a non-empty list of integers, got {seeds!r}.")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"'study.seeds' repeats a seed: {seeds}.")
    return list(seeds)


def _check_names(values: Any, known: Sequence[str], key: str) -> list[str]:
    if not isinstance(values, list) or not values:
        raise ConfigError(f"'{key}' must be a non-empty list, got {values!r}.")
    for v in values:
        if v not in known:
            raise ConfigError(
                f"'{key}' names unknown {v!r}; known: {list(known)}.{did_you_mean(str(v), known)}"
            )
    return list(values)


@dataclass
class Plan:
    """A validated study: what :func:`run_study` will do."""

    config: dict[str, Any]
    seeds: list[int]
    layers: list[str]
    configs: list[tuple[str, str, float]]  # (prune method, recovery, sparsity)
    measures: list[str]
    divergence: str
    metrics: list[str]

    @property
    def n_members(self) -> int:
        return len(self.configs) * len(self.seeds)


def method_label(prune_method: str, recovery: str) -> str:
    """Family label of a member: ``"magnitude+ft"``, ``"random+kd"``, ``"magnitude"`` (none)."""
    return prune_method if recovery == "none" else f"{prune_method}+{recovery}"


def plan_study(config: Mapping[str, Any], data: Any = None) -> Plan:
    """Check everything a study needs before any long work and return its plan.

    Raises
    ------
    ConfigError
        Unknown measure, metric, pruning method or recovery; a divergence whose measure is not
        measured; a sparsity outside [0, 1).
    LayerNotFoundError
        A ``[capture] layers`` entry that is not in the model (or in a model of the family).
    """
    from repsim.compress.prune import METHODS
    from repsim.explain import parse_divergence
    from repsim.layers import select_layers
    from repsim.similarity import get_measure

    seeds = _seeds(config)
    comp = config["compression"]
    methods = _check_names(comp["methods"], list(METHODS), "compression.methods")
    recoveries = _check_names(comp["recovery"], RECOVERIES, "compression.recovery")
    sparsities = comp["sparsities"]
    if (
        not isinstance(sparsities, list)
        or not sparsities
        or not all(
            isinstance(s, int | float) and not isinstance(s, bool) and 0 <= s < 1
            for s in sparsities
        )
    ):
        raise ConfigError(
            f"'compression.sparsities' must be a non-empty list of numbers in [0, 1), got "
            f"{sparsities!r}."
        )
    sim = config["similarity"]
    if not isinstance(sim["measures"], list) or not sim["measures"]:
        raise ConfigError("'similarity.measures' must be a non-empty list of measure names.")
    measures = [get_measure(m).name for m in sim["measures"]]
    div_measure, _ = parse_divergence(sim["divergence"])
    if div_measure not in measures:
        raise ConfigError(
            f"'similarity.divergence' = {sim['divergence']!r} uses measure {div_measure!r}, which "
            f"is not in 'similarity.measures' {measures}; add it there."
        )
    metrics = _check_names(config["fairness"]["metrics"], METRICS, "fairness.metrics")
    for key in ("n_boot", "n_permutations"):
        if config["report"][key] < 1:
            raise ConfigError(f"'report.{key}' must be at least 1.")
    if not 0 < config["report"]["alpha"] < 1:
        raise ConfigError("'report.alpha' must lie in (0, 1).")
    data = data if data is not None else dataset_from_config(config)
    probe = model_from_config(config, data, seeds[0])
    try:
        layers = select_layers(probe, config["capture"]["layers"])
    except LayerNotFoundError as exc:
        raise LayerNotFoundError(f"[capture] layers: {exc}") from None
    from repsim.compress import prune

    pruned, _ = prune(
        probe, float(sparsities[0]), method=methods[0], scope=comp["scope"], data=data.train
    )
    missing = [name for name in layers if name.split(":")[0] not in dict(pruned.named_modules())]
    if missing:
        raise LayerNotFoundError(
            f"[capture] layers {missing} exist in the dense model but not in the compressed one; "
            "choose layers every model of the family has."
        )
    configs = [(m, r, float(s)) for m in methods for r in recoveries for s in sparsities]
    return Plan(dict(config), seeds, layers, configs, measures, sim["divergence"], metrics)


# --------------------------------------------------------------------------------------------
# the pipeline


def _log(message: str, progress: bool | None) -> None:
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return
    print(f"[repsim] {message}", file=sys.stderr, flush=True)


def _sim_rows(table: Any, **meta: Any) -> list[dict[str, Any]]:
    out = []
    for r in table.to_records():
        row = {
            **meta,
            "layer": r["layer_a"],
            "measure": r["measure"],
            "value": r["value"],
            "group": r.get("group"),
            "n": r.get("n"),
        }
        out.append(row)
    return out


def _shift_rows(
    shift: Any, **meta: Any
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    groups = shift.per_group.to_records()
    drops = {f"acc_drop:{g['group']}": -float(g["accuracy_change"]) for g in groups}
    finite = [v for v in drops.values() if np.isfinite(v)]
    row = {
        **meta,
        "cev": float(shift.cev),
        "sde": float(shift.sde),
        "worst_group_drop": max(finite) if finite else float("nan"),
        **drops,
    }
    group_rows = [{**meta, **g} for g in groups]
    class_rows = [{**meta, **c} for c in shift.per_class.to_records()]
    return row, group_rows, class_rows


class _MemoryCapture(dict):
    """Layer -> numpy array, with the capture attributes :func:`repsim.similarity.compare`
    reads (``sample_id``, ``groups``, ``name``) and the predictions."""

    sample_id: Any
    groups: Any
    name: str
    predictions: Any


def _in_memory(cap: Any) -> _MemoryCapture:
    out = _MemoryCapture({layer: np.asarray(cap[layer][...]) for layer in cap})
    out.sample_id = np.asarray(cap.sample_id)
    out.groups = np.asarray(cap.groups)
    out.name = cap.name
    out.predictions = np.asarray(cap.predictions)
    return out


def _quiet_group_metrics(fn: Any, y_true: Any, y_pred: Any, groups: Any, names: Any) -> Any:
    """Per-group metrics; the per-group one-vs-rest rates that are undefined when the groups
    are the classes themselves (e.g. FPR of class c within group c) stay NaN in the CSV
    without a warning per model."""
    import warnings

    from repsim.fairness import UndefinedMetricWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return fn(y_true=y_true, y_pred=y_pred, groups=groups, group_names=names)


def _mean(values: Sequence[float]) -> float:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def run_study(path: str | Path, *, progress: bool | None = None) -> Path:
    """Run the study in the TOML config at ``path`` and return its report directory.

    See the module docstring for the stages; ``docs/guide.md`` documents every config key.

    Raises
    ------
    ConfigError, LayerNotFoundError, DataError
        On a bad config, before any training or capture.
    """
    from repsim.capture import record
    from repsim.capture.store import ActivationStore
    from repsim.explain import parse_divergence, relate
    from repsim.fairness import compression_shift, exemplars, group_metrics
    from repsim.similarity import compare

    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(stage: str, t0: float) -> float:
        now = time.perf_counter()
        timings[stage] = round(now - t0, 3)
        return now

    config = load_config(path)
    study = config["study"]
    data = dataset_from_config(config)
    plan = plan_study(config, data)
    seeds, layers = plan.seeds, plan.layers
    out = Path(study["out_dir"]) / study["name"]
    out.mkdir(parents=True, exist_ok=True)
    report = config["report"]
    rseed = int(study["seed"])
    test = data.test
    group_names = list(test.group_names)
    group_labels = np.asarray(group_names, dtype=object)[test.groups]
    t = lap("validate", t_start)
    work = {"dense_trained": 0, "compressed_built": 0, "captures": 0}

    # 1-2. dense models and the compressed family: one repsim.pipeline.family build (cached)
    from repsim.pipeline.family import build

    _log(f"family: {len(seeds)} dense seeds, {plan.n_members} compressed models", progress)
    family = build(family_spec(config), progress=progress)
    dense = {s: family.dense(s).load().eval() for s in seeds}
    members: dict[tuple[str, float, int], nn.Module] = {}
    for pm, rec, sp in plan.configs:
        for m in family.select(method=pm, sparsity=sp, kd=rec == "kd"):
            if (m.setting.options["finetune_epochs"] == 0) == (rec == "none"):
                members[(method_label(pm, rec), sp, m.seed)] = m.load().eval()
    work["dense_trained"] = sum(m.built for m in family if m.method == "dense")
    work["compressed_built"] = sum(m.built for m in family if m.method != "dense")
    t = lap("family", t)

    # 3. capture
    store = ActivationStore(Path(study["cache_dir"]) / "activations")
    before = set(store.keys())
    cap_opts = {
        "reduction": config["capture"]["reduction"],
        "store": store,
        "batch_size": config["capture"]["batch_size"],
        "progress": progress,
    }
    dense_caps = {
        s: record(m, test, layers, name=f"dense-seed{s}", **cap_opts) for s, m in dense.items()
    }
    caps = {
        k: record(m, test, layers, name=f"{k[0]}@{k[1]:g}-seed{k[2]}", **cap_opts)
        for k, m in members.items()
    }
    work["captures"] = len(set(store.keys()) - before)
    # test-split activations are small: compare them in memory (exact same numbers as
    # streaming, without a d x d accumulator per batch)
    dense_caps = {s: _in_memory(c) for s, c in dense_caps.items()}
    caps = {k: _in_memory(c) for k, c in caps.items()}
    t = lap("capture", t)

    # 4. similarity: dense vs compressed, dense vs dense (noise floor)
    by = group_labels if config["similarity"]["by_group"] else None
    sim_opts = {
        "layers": layers,
        "measures": plan.measures,
        "by": by,
        "seed": rseed,
        "progress": False,
    }
    similarity: list[dict[str, Any]] = []
    for i, sa in enumerate(seeds):
        for sb in seeds[i + 1 :]:
            table = compare(dense_caps[sa], dense_caps[sb], **sim_opts)
            similarity += _sim_rows(
                table, kind="dense", method="dense", sparsity=0.0, seed=sa, seed_b=sb
            )
    for (label, sp, seed), cap in caps.items():
        table = compare(dense_caps[seed], cap, **sim_opts)
        similarity += _sim_rows(
            table, kind="compressed", method=label, sparsity=sp, seed=seed, seed_b=seed
        )
    heatmaps: list[tuple[str, Any]] = []
    if config["similarity"]["heatmaps"]:
        s0 = seeds[0]
        pairs = (
            [(f"dense seed {s0} vs dense seed {seeds[1]}", dense_caps[seeds[1]])]
            if len(seeds) > 1
            else []
        )
        pairs += [
            (f"dense vs {label}@{sp:g} (seed {s0})", cap)
            for (label, sp, seed), cap in caps.items()
            if seed == s0
        ]
        for title, cap in pairs:
            tab = compare(
                dense_caps[s0], cap, layers=layers, measures=["cka"], pairs="all", progress=False
            )
            heatmaps.append((title, tab.matrix("cka")))
    t = lap("similarity", t)

    # 5. fairness
    y_true = test.y
    fair_opts = {
        "convention": config["fairness"]["convention"],
        "eps": config["fairness"]["eps"],
        "test": False,
    }
    shifts, group_shift_rows, class_rows, gm_rows = [], [], [], []
    for seed, cap in dense_caps.items():
        gm = _quiet_group_metrics(group_metrics, y_true, cap.predictions, test.groups, group_names)
        gm_rows += [
            {"model": "dense", "method": "dense", "sparsity": 0.0, "seed": seed, **r}
            for r in gm.by_group.to_records()
        ]
    for (label, sp, seed), cap in caps.items():
        meta = {"method": label, "sparsity": sp, "seed": seed}
        shift = compression_shift(
            y_true=y_true,
            dense_preds=dense_caps[seed].predictions,
            compressed_preds=cap.predictions,
            groups=test.groups,
            group_names=group_names,
            **fair_opts,
        )
        row, g_rows, c_rows = _shift_rows(shift, **meta)
        row["accuracy"] = float(np.mean(cap.predictions == y_true))
        row["dense_accuracy"] = float(np.mean(dense_caps[seed].predictions == y_true))
        shifts.append(row)
        group_shift_rows += g_rows
        class_rows += c_rows
        gm = _quiet_group_metrics(group_metrics, y_true, cap.predictions, test.groups, group_names)
        gm_rows += [{"model": "compressed", **meta, **r} for r in gm.by_group.to_records()]
    exemplar_rows: list[dict[str, Any]] = []
    exemplar_sets: dict[str, Any] = {}
    dense_pop = np.stack([dense_caps[s].predictions for s in seeds])
    for label, sp in dict.fromkeys((k[0], k[1]) for k in caps):
        comp_pop = np.stack([caps[(label, sp, s)].predictions for s in seeds])
        ex = exemplars(
            dense_preds=dense_pop,
            compressed_preds=comp_pop,
            method="taxicab",
            fraction=config["fairness"]["exemplar_fraction"],
            sample_id=test.sample_id,
            y_true=y_true,
            groups=test.groups,
            group_names=group_names,
        )
        exemplar_sets[f"{label}@{sp:g}"] = ex
        for rank, i in enumerate(ex.indices):
            exemplar_rows.append(
                {
                    "method": label,
                    "sparsity": sp,
                    "rank": rank,
                    "sample_id": int(test.sample_id[i]),
                    "score": float(ex.scores[i]),
                    "label": int(y_true[i]),
                    "group": group_names[int(test.groups[i])],
                    "dense_mode": int(ex.dense_mode[i]),
                    "compressed_mode": int(ex.compressed_mode[i]),
                }
            )
    t = lap("fairness", t)

    # 6. explain
    bias = [m for m in plan.metrics if m != "acc_drop"] + (
        ["acc_drop"] if "acc_drop" in plan.metrics else []
    )
    rel = relate(
        similarity,
        shifts,
        divergence=plan.divergence,
        bias=bias,
        layers=layers,
        n_boot=report["n_boot"],
        n_permutations=report["n_permutations"],
        ci=alpha_to_ci(report["alpha"]),
        seed=rseed,
    )
    div_measure, one_minus = parse_divergence(plan.divergence)
    config_rows = []
    for label, sp in dict.fromkeys((k[0], k[1]) for k in caps):
        mine = [r for r in shifts if r["method"] == label and r["sparsity"] == sp]
        sims = [
            r["value"]
            for r in similarity
            if r["kind"] == "compressed"
            and r["method"] == label
            and r["sparsity"] == sp
            and r["group"] is None
            and r["measure"] == div_measure
        ]
        config_rows.append(
            {
                "method": label,
                "sparsity": sp,
                "n_seeds": len(mine),
                "accuracy": _mean([r["accuracy"] for r in mine]),
                "cev": _mean([r["cev"] for r in mine]),
                "sde": _mean([r["sde"] for r in mine]),
                "worst_group_drop": _mean([r["worst_group_drop"] for r in mine]),
                "mean_similarity": _mean(sims),
            }
        )
    kd_rows = kd_vs_ft(
        shifts,
        similarity,
        measure=div_measure,
        n_boot=report["n_boot"],
        ci=alpha_to_ci(report["alpha"]),
        seed=rseed,
    )
    t = lap("explain", t)

    # 7. report
    from repsim.report.write import write_report

    results = {
        "study": study["name"],
        "description": study["description"],
        "config": {k: v for k, v in config.items() if not k.startswith("_")},
        "config_file": config.get("_source"),
        "versions": environment(),
        "seeds": seeds,
        "layers": layers,
        "dense": [
            {"seed": s, "test_accuracy": float(np.mean(dense_caps[s].predictions == y_true))}
            for s in seeds
        ],
        "configs": config_rows,
        "kd_vs_ft": kd_rows,
        "relations": rel.to_dict(),
        "alpha": report["alpha"],
        "work": work,
    }
    results["results"] = {"dense": results["dense"]}  # the layout `repsim run` prints from
    write_report(
        out,
        results=results,
        similarity=similarity,
        shifts=shifts,
        group_shifts=group_shift_rows,
        class_shifts=class_rows,
        group_metrics=gm_rows,
        exemplars=exemplar_rows,
        exemplar_sets=exemplar_sets,
        heatmaps=heatmaps,
        data=test,
        measure=div_measure,
        one_minus=one_minus,
        seed=rseed,
    )
    lap("report", t)
    timings["total"] = round(time.perf_counter() - t_start, 3)
    results["timings"] = timings
    from repsim.report.tables import write_json

    write_json(results, out / "results.json")
    _log(
        f"report written to {out} in {timings['total']:.1f} s "
        f"(trained {work['dense_trained']} dense, built {work['compressed_built']} compressed, "
        f"{work['captures']} new captures)",
        progress,
    )
    return out


@alpha_renamed_to_ci
def kd_vs_ft(
    shifts: Sequence[Mapping[str, Any]],
    similarity: Sequence[Mapping[str, Any]],
    *,
    measure: str = "cka",
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Distillation against plain fine-tuning at the same pruning method and sparsity.

    For every ``(prune method, sparsity)`` that has both ``<m>+ft`` and ``<m>+kd`` members, the
    per-seed paired differences ``kd - ft`` of CEV, SDE, accuracy and mean layer similarity to
    the dense model (``measure`` averaged over layers), each with its mean and percentile
    bootstrap CI over seeds at level ``ci`` (:func:`repsim.explain.paired_difference`; the
    deprecated ``alpha=a`` means ``ci=1 - a``). Blakeney et al. (2021,
    "Simon Says") report that distillation lowers CEV/SDE against fine-tuning.
    """
    from repsim.explain import paired_difference

    by_member = {(r["method"], r["sparsity"], r["seed"]): r for r in shifts}
    sim_mean: dict[tuple[Any, Any, Any], float] = {}
    acc: dict[tuple[Any, Any, Any], list[float]] = {}
    for r in similarity:
        if r["kind"] == "compressed" and r.get("group") is None and r["measure"] == measure:
            acc.setdefault((r["method"], r["sparsity"], r["seed"]), []).append(r["value"])
    sim_mean = {k: _mean(v) for k, v in acc.items()}
    out = []
    bases = dict.fromkeys((m.rsplit("+", 1)[0], sp) for m, sp, _ in by_member if "+" in m)
    for base, sp in bases:
        ft, kd = f"{base}+ft", f"{base}+kd"
        seeds = sorted(
            {s for m, p, s in by_member if m == ft and p == sp}
            & {s for m, p, s in by_member if m == kd and p == sp}
        )
        if not seeds:
            continue
        row: dict[str, Any] = {"prune_method": base, "sparsity": sp, "n_seeds": len(seeds)}
        for name in ("cev", "sde", "accuracy", "similarity"):
            if name == "similarity":
                a = [sim_mean.get((kd, sp, s), np.nan) for s in seeds]
                b = [sim_mean.get((ft, sp, s), np.nan) for s in seeds]
            else:
                a = [by_member[(kd, sp, s)][name] for s in seeds]
                b = [by_member[(ft, sp, s)][name] for s in seeds]
            d = paired_difference(a, b, n_boot=n_boot, ci=ci, seed=seed)
            row.update(
                {
                    f"{name}_ft": _mean(b),
                    f"{name}_kd": _mean(a),
                    f"{name}_diff": d["mean"],
                    f"{name}_diff_low": d["low"],
                    f"{name}_diff_high": d["high"],
                }
            )
        out.append(row)
    return out


__all__ = [
    "METRICS",
    "RECOVERIES",
    "Plan",
    "family_spec",
    "dense_model_path",
    "environment",
    "kd_vs_ft",
    "method_label",
    "plan_study",
    "run_study",
    "train_dense",
]
