"""Running a study from its config: the pipeline behind ``repsim run``.

One TOML config names the data, the architecture, the dense seeds, the compression family, the
layers, the similarity measures and the bias metrics. :func:`run_study` chains seven stages,
each a function that takes and returns plain values (dataclasses of dicts, arrays and tables),
so any stage can be called alone from Python:

1. :func:`plan_study` (after :func:`~repsim.pipeline.config.load_config`): validates the whole
   config (unknown keys, measures, metrics, pruning methods, layers missing in a model of the
   family) before any long work starts, and returns a :class:`Plan`;
2. :func:`build_models` -> :class:`Models`: trains the dense model of every seed and builds the
   family with :func:`repsim.pipeline.family.build` (see :func:`family_spec`): every dense seed
   pruned to every sparsity with every method, then recovered by fine-tuning (``"ft"``),
   knowledge distillation from its own dense model (``"kd"``) or not at all (``"none"``); every
   model is cached under ``<cache_dir>/models/``, shared with ``repsim train`` and
   ``repsim family build``;
3. :func:`capture_models` -> :class:`Captures`: every model's layers on the test split, through
   the activation store;
4. :func:`measure_similarity` -> :class:`SimilarityResults`: per-layer similarity dense vs
   compressed *and* dense seed vs dense seed (the noise floor), on all samples and per group;
5. :func:`measure_fairness` -> :class:`FairnessResults`: per-group metrics, compression shift
   with CEV/SDE, exemplars;
6. :func:`explain_study` -> :class:`Explanation`: divergence related to bias
   (:func:`repsim.explain.relate`), per-configuration means, distillation vs fine-tuning;
7. :func:`write_study_report`: ``<out_dir>/<study>/`` with ``results.json``, tidy CSVs, PNGs
   and ``index.html``.

Every cached step is reused: a second run of the same config trains, captures and measures
nothing (similarity tables are cached by :mod:`repsim.pipeline.similarity_cache`), keeps the
report's figures when none of their inputs changed, and gives identical numbers
(``results.json["work"]`` counts what was trained, captured, measured and written).

Each finished stage is logged on the ``repsim`` logger (one INFO line with its time; the
command line shows them on stderr, see :mod:`repsim._core.log`), progress bars show on a
terminal, and the study runs under the CPU thread limit of ``[study] threads``
(:mod:`repsim._core.threads`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from repsim._core.io import write_json
from repsim._core.log import bar, get_logger, progress_enabled, ticker
from repsim._core.provenance import provenance
from repsim._core.stats import alpha_renamed_to_ci, alpha_to_ci
from repsim.errors import ConfigError, LayerNotFoundError, did_you_mean
from repsim.pipeline.config import (
    Field,
    Section,
    dataset_from_config,
    load_config,
    model_from_config,
    output_dir,
    positive_int,
    positive_number,
    read_toml,
    register_section,
    study_seeds,
    validate,
)

if TYPE_CHECKING:
    from repsim.capture.record import Capture

logger = get_logger(__name__)

RECOVERIES = ("none", "ft", "kd")
METRICS = ("cev", "sde", "worst_group_drop", "acc_drop")


def _check_names(values: Any, known: Sequence[str], key: str) -> list[str]:
    if not isinstance(values, list) or not values:
        raise ConfigError(f"'{key}' must be a non-empty list, got {values!r}.")
    for v in values:
        if v not in known:
            raise ConfigError(
                f"'{key}' names unknown {v!r}; known: {list(known)}.{did_you_mean(str(v), known)}"
            )
    return list(values)


def _check_prune_methods(values: Any, key: str) -> list[str]:
    from repsim.compress.prune import METHODS, parse_nm

    nm = [v for v in values if isinstance(v, str) and ":" in v] if isinstance(values, list) else []
    for v in nm:  # N:M patterns ('2:4') are methods too
        try:
            parse_nm(v)
        except ConfigError as exc:
            raise ConfigError(f"'{key}': {exc}") from None
    return _check_names(values, [*METHODS, *nm], key)


def _check_bits(values: Any, key: str) -> list[int]:
    from repsim.compress.quantize import check_bits

    if not isinstance(values, list):
        raise ConfigError(f"'{key}' must be a list of bit widths, got {values!r}.")
    try:
        return [check_bits(b) for b in values]
    except ConfigError as exc:
        raise ConfigError(f"'{key}': {exc}") from None


def _check_reductions(value: Any, key: str) -> Any:
    from repsim.capture.reductions import PER_SAMPLE_REDUCTIONS

    values = [value] if isinstance(value, str) else value
    if not values or len(set(values)) != len(values):
        raise ConfigError(f"'{key}' must be a reduction or a list of distinct ones, got {value!r}.")
    for v in values:
        if v not in PER_SAMPLE_REDUCTIONS:
            raise ConfigError(
                f"'{key}' = {v!r} is not one of {list(PER_SAMPLE_REDUCTIONS)} (a study compares "
                f"one row per sample; 'tokens' is for per-token analyses from Python)."
                f"{did_you_mean(str(v), PER_SAMPLE_REDUCTIONS)}"
            )
    return value


def capture_reductions(config: Mapping[str, Any]) -> list[str]:
    """``[capture] reduction`` as a list (a study may record several in one pass)."""
    value = config["capture"]["reduction"]
    return [value] if isinstance(value, str) else list(value)


def quantized_label(bits: int) -> str:
    """Method label of a study's quantised members: ``"quantize-4bit"``."""
    return f"quantize-{bits}bit"


def _check_recoveries(values: Any, key: str) -> list[str]:
    return _check_names(values, RECOVERIES, key)


def _check_controls(values: Any, key: str) -> list[str]:
    from repsim.pipeline.family import CONTROLS

    return _check_names(values, CONTROLS, key) if values else []


def _check_metrics(values: Any, key: str) -> list[str]:
    return _check_names(values, METRICS, key)


def _check_sparsities(values: Any, key: str) -> list[Any]:
    if not values or not all(
        isinstance(s, int | float) and not isinstance(s, bool) and 0 <= s < 1 for s in values
    ):
        raise ConfigError(f"'{key}' must be a non-empty list of numbers in [0, 1), got {values!r}.")
    return values


def _check_measures(values: Any, key: str) -> list[str]:
    from repsim.similarity import get_measure

    if not values:
        raise ConfigError(f"'{key}' must be a non-empty list of measure names.")
    for m in values:
        if not isinstance(m, str):
            raise ConfigError(f"'{key}' must list measure names (strings), got {m!r}.")
        try:
            get_measure(m)
        except ConfigError as exc:
            raise ConfigError(f"'{key}': {exc}") from None
    return values


def _at_least_one(value: int, key: str) -> int:
    if value < 1:
        raise ConfigError(f"'{key}' must be at least 1.")
    return value


def _open_unit(value: float, key: str) -> float:
    if not 0 < value < 1:
        raise ConfigError(f"'{key}' must lie in (0, 1).")
    return value


STUDY_SECTIONS: dict[str, Section] = {
    "compression": Section(
        {
            "methods": Field(
                (list,),
                ["magnitude"],
                help="pruning methods (repsim.compress.prune)",
                check=_check_prune_methods,
            ),
            "sparsities": Field(
                (list,),
                [0.5, 0.8, 0.9],
                help="target sparsities in [0, 1)",
                check=_check_sparsities,
            ),
            "recovery": Field(
                (list,),
                ["ft"],
                help="after pruning: 'none', 'ft' (fine-tune), 'kd' (distil from the dense model)",
                check=_check_recoveries,
            ),
            "scope": Field((str,), None, ("global", "layerwise"), help="pruning scope"),
            "bits": Field(
                (list,),
                [],
                help="also quantise every dense seed to these bit widths (post-training "
                "round-to-nearest, per output channel); sparsity 0 in the report",
                check=_check_bits,
            ),
            "epochs": Field((int,), 3, help="fine-tuning / distillation epochs"),
            "schedule": Field(
                (str,),
                "oneshot",
                ("oneshot", "agp"),
                help="'oneshot': prune, then recover; 'agp': prune gradually (Zhu & Gupta 2017) "
                "during the recovery epochs (KD during pruning with 'kd', as Simon Says)",
            ),
            "lr": Field((int, float), 1e-3, help="fine-tuning / distillation learning rate"),
            "kd_temperature": Field((int, float), 4.0, help="distillation temperature T"),
            "kd_alpha": Field((int, float), 0.9, help="weight of the soft (teacher) term"),
            "kd_gamma": Field((int, float), 0.1, help="weight of the hard (label) term"),
            "controls": Field(
                (list,),
                ["recovery", "random"],
                help="control populations: 'recovery' (each dense seed fine-tuned/distilled "
                "with the same recipe at sparsity 0: method 'none+ft'/'none+kd') and 'random' "
                "(random pruning at each sparsity, same recovery: 'random+ft'); [] for none",
                check=_check_controls,
            ),
        },
        help="the compressed family",
    ),
    "capture": Section(
        {
            "layers": Field((list, str), None, help="layer names or globs (default: every leaf)"),
            "reduction": Field(
                (str, list),
                "flatten",
                help="how activations become [n, d]: flatten/mean/max (conv maps), "
                "cls/last/mean_tokens (token sequences); a list records each, the layers are "
                "then named '<layer>@<reduction>'",
                check=_check_reductions,
            ),
            "batch_size": Field((int,), 256, check=positive_int),
        },
        help="which activations are recorded",
    ),
    "similarity": Section(
        {
            "measures": Field(
                (list,),
                ["cka"],
                help="similarity measures (repsim.similarity)",
                check=_check_measures,
            ),
            "divergence": Field((str,), "1-cka", help="'1-<measure>' or a distance measure"),
            "by_group": Field((bool,), True, help="also compute each measure per group"),
            "heatmaps": Field((bool,), True, help="layer x layer CKA matrix per configuration"),
        },
        help="layer similarity",
    ),
    "fairness": Section(
        {
            "metrics": Field(
                (list,),
                list(METRICS),
                help=f"bias metrics among {list(METRICS)}",
                check=_check_metrics,
            ),
            "convention": Field((str,), "2021", ("2021", "2022"), help="CEV/SDE convention"),
            "eps": Field(
                (int, float),
                None,
                help="floor of zero dense rates in relative changes",
                check=positive_number,
            ),
            "min_group_size": Field(
                (int,),
                10,
                help="groups with fewer test samples get NaN figures (never the worst group)",
                check=positive_int,
            ),
            "exemplar_fraction": Field(
                (int, float),
                0.1,
                help="share of test samples flagged as CIE candidates (taxicab ranking)",
            ),
        },
        help="group fairness and compression bias",
    ),
    "report": Section(
        {
            "n_boot": Field(
                (int,), 1000, help="bootstrap resamples of every CI", check=_at_least_one
            ),
            "n_permutations": Field(
                (int,), 5000, help="permutations of every p-value", check=_at_least_one
            ),
            "alpha": Field((int, float), 0.05, help="CIs are 1 - alpha", check=_open_unit),
        },
        help="statistics and output",
    ),
}
"""The sections a study adds to :data:`repsim.pipeline.config.SCHEMA` (registered on import,
so :func:`repsim.pipeline.config.load_config` validates them)."""

for _name, _section in STUDY_SECTIONS.items():
    register_section(_name, _section)
del _name, _section


def family_spec(
    config: Mapping[str, Any], *, compression: bool = True, seeds: Sequence[int] | None = None
) -> dict[str, Any]:
    """The study's models as a :mod:`repsim.pipeline.family` config (one cache for every command).

    Dense models come from ``[data]``, ``[model]``, ``[train]`` and the study's seeds; with
    ``compression``, each ``[compression]`` method gets a population per recovery: ``"none"``
    (pruned, no fine-tuning), ``"ft"`` (fine-tuned) and ``"kd"`` (distilled from the seed's own
    dense model), ``compression.epochs`` epochs at ``compression.lr``, and the
    ``compression.controls`` (:data:`repsim.pipeline.family.CONTROLS`): the recovery-only
    control of every recovery that trains, and the random-pruning control at every sparsity.
    """
    data, model = config["data"], config["model"]
    spec: dict[str, Any] = {
        "name": f"{data['name']}-{model['name']}",
        "dataset": data["name"],
        "dataset_options": {k: v for k, v in data.items() if k not in ("name", "groups")},
        "model": model["name"],
        "model_options": {k: v for k, v in model.items() if k != "name"},
        "seeds": list(seeds) if seeds is not None else study_seeds(config),
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
            controls = list(comp.get("controls") or [])
            if "none" in recovery:
                spec["compression"].append(
                    {
                        **base,
                        "kd": [False],
                        "finetune_epochs": 0,
                        "controls": [c for c in controls if c == "random"],
                    }
                )
            kd = [r == "kd" for r in ("ft", "kd") if r in recovery]
            if kd:
                spec["compression"].append(
                    {
                        **base,
                        "schedule": comp.get("schedule", "oneshot"),
                        "controls": controls,
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
        if comp.get("bits"):
            spec["compression"].append(
                {"method": "quantize", "bits": list(comp["bits"]), "finetune_epochs": 0}
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
    """Versions that determine the numbers (recorded in every report).

    The same record as the activation cache's entries:
    :func:`repsim._core.provenance.provenance`.
    """
    return provenance()


# --------------------------------------------------------------------------------------------
# stage 1: validate and plan


@dataclass
class Plan:
    """A validated study: what :func:`run_study` will do."""

    config: dict[str, Any]
    seeds: list[int]
    layers: list[str]
    configs: list[tuple[str, str, float]]  # (prune method, recovery, sparsity), controls last
    measures: list[str]
    divergence: str
    metrics: list[str]
    bits: list[int] = field(default_factory=list)  # quantised members' bit widths

    @property
    def n_members(self) -> int:
        """The number of compressed models the study builds."""
        return (len(self.configs) + len(self.bits)) * len(self.seeds)


def method_label(prune_method: str, recovery: str) -> str:
    """Family label of a member: ``"magnitude+ft"``, ``"random+kd"``, ``"magnitude"`` (none)."""
    return prune_method if recovery == "none" else f"{prune_method}+{recovery}"


def plan_study(config: Mapping[str, Any], data: Any = None) -> Plan:
    """Check everything a study needs before any long work and return its plan.

    ``config`` is a validated study config (:func:`repsim.pipeline.config.load_config`), whose
    keys have passed the checks of :data:`STUDY_SECTIONS`; this adds the checks that need
    several keys or the model.

    Raises
    ------
    ConfigError
        A divergence whose measure is not measured (and any error of the per-key checks on a
        config that did not go through validation).
    LayerNotFoundError
        A ``[capture] layers`` entry that is not in the model (or in a model of the family).
    """
    from repsim.explain import parse_divergence
    from repsim.layers import select_layers
    from repsim.similarity import get_measure

    seeds = study_seeds(config)
    comp = config["compression"]
    methods = _check_prune_methods(comp["methods"], "compression.methods")
    recoveries = _check_recoveries(comp["recovery"], "compression.recovery")
    sparsities = comp["sparsities"]
    if not isinstance(sparsities, list):
        raise ConfigError(
            f"'compression.sparsities' must be a non-empty list of numbers in [0, 1), got "
            f"{sparsities!r}."
        )
    _check_sparsities(sparsities, "compression.sparsities")
    sim = config["similarity"]
    if not isinstance(sim["measures"], list):
        raise ConfigError("'similarity.measures' must be a non-empty list of measure names.")
    measures = [
        get_measure(m).name for m in _check_measures(sim["measures"], "similarity.measures")
    ]
    div_measure, _ = parse_divergence(sim["divergence"])
    if div_measure not in measures:
        raise ConfigError(
            f"'similarity.divergence' = {sim['divergence']!r} uses measure {div_measure!r}, which "
            f"is not in 'similarity.measures' {measures}; add it there."
        )
    metrics = _check_metrics(config["fairness"]["metrics"], "fairness.metrics")
    for key in ("n_boot", "n_permutations"):
        _at_least_one(config["report"][key], f"report.{key}")
    _open_unit(config["report"]["alpha"], "report.alpha")
    data = data if data is not None else dataset_from_config(config)
    probe = model_from_config(config, data, seeds[0])
    try:
        layers = select_layers(probe, config["capture"]["layers"])
    except LayerNotFoundError as exc:
        raise LayerNotFoundError(f"[capture] layers: {exc}") from None
    for method in methods:
        if ":" in method:
            from repsim.compress.prune import parse_nm

            n, m = parse_nm(method)
            if any(abs(float(s) - (1 - n / m)) > 1e-9 for s in sparsities):
                raise ConfigError(
                    f"'compression.methods' has {method!r}, whose sparsity is {1 - n / m:g}; "
                    f"'compression.sparsities' {sparsities} must then be [{1 - n / m:g}]."
                )
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
    controls = list(comp.get("controls") or [])
    if "recovery" in controls:
        configs += [("none", r, 0.0) for r in recoveries if r != "none"]
    if "random" in controls and "random" not in methods:
        configs += [("random", r, float(s)) for r in recoveries for s in sparsities]
    reductions = capture_reductions(config)
    if len(reductions) > 1:
        layers = [f"{layer}@{red}" for red in reductions for layer in layers]
    return Plan(
        dict(config),
        seeds,
        layers,
        configs,
        measures,
        sim["divergence"],
        metrics,
        bits=list(comp.get("bits") or []),
    )


# --------------------------------------------------------------------------------------------
# the stages: plain values in, plain values out

Key = tuple[str, float, int]
"""A compressed member of a study: ``(method label, sparsity, seed)``, e.g.
``("magnitude+kd", 0.9, 0)``."""


@dataclass
class Models:
    """Stage 2, :func:`build_models`: the study's models (eval mode, CPU).

    Attributes
    ----------
    dense : dict of int to torch.nn.Module
        The dense model of each seed.
    compressed : dict of Key to torch.nn.Module
        Each compressed member, keyed ``(method label, sparsity, seed)``.
    work : dict of str to int
        ``dense_trained``, ``compressed_built``: how many models this call trained.
    """

    dense: dict[int, nn.Module]
    compressed: dict[Key, nn.Module]
    work: dict[str, int] = field(default_factory=dict)


@dataclass
class Captures:
    """Stage 3, :func:`capture_models`: every model's activations on the test split, in memory.

    Attributes
    ----------
    dense : dict of int to Capture
    compressed : dict of Key to Capture
    new : int
        Activation-store entries this call wrote (0 when everything was cached).
    """

    dense: dict[int, Capture]
    compressed: dict[Key, Capture]
    new: int = 0


@dataclass
class SimilarityResults:
    """Stage 4, :func:`measure_similarity`.

    Attributes
    ----------
    rows : list of dict
        ``kind`` (``"dense"``: seed vs seed, the noise floor; ``"compressed"``: dense vs its
        compressed member), ``method``, ``sparsity``, ``seed``, ``seed_b``, ``layer``,
        ``measure``, ``value``, ``group`` (``None``: all samples), ``n``.
    heatmaps : list of (str, LabelledMatrix)
        Titled layer x layer CKA matrices.
    computed, cached : int
        Comparisons computed now, and taken from the similarity cache.
    """

    rows: list[dict[str, Any]]
    heatmaps: list[tuple[str, Any]] = field(default_factory=list)
    computed: int = 0
    cached: int = 0


@dataclass
class FairnessResults:
    """Stage 5, :func:`measure_fairness`: tidy rows for ``shifts.csv`` and its companions.

    Attributes
    ----------
    shifts : list of dict
        Per compressed member: ``cev``, ``sde``, ``worst_group_drop``, ``acc_drop:<group>``,
        ``accuracy``, ``dense_accuracy``.
    group_shifts, class_shifts : list of dict
        Per member and group (class): the compression shift's per-group (per-class) rows.
    group_metrics : list of dict
        Per model (dense and compressed) and group: :func:`repsim.fairness.group_metrics`.
    exemplars : list of dict
        Per configuration: the ranked compression-identified exemplars.
    exemplar_sets : dict of str to Exemplars
        ``"method@sparsity"`` -> :class:`repsim.fairness.Exemplars`.
    dense_floor : list of dict
        The dense-vs-dense floor of every shift metric: per pair of dense seeds ``seed <
        seed_b``, dense seed ``seed_b`` scored as if it were a compressed version of dense
        seed ``seed`` (``kind="dense"``; the same columns as ``shifts``). What two dense
        models of the recipe differ by without any compression.
    """

    shifts: list[dict[str, Any]]
    group_shifts: list[dict[str, Any]]
    class_shifts: list[dict[str, Any]]
    group_metrics: list[dict[str, Any]]
    exemplars: list[dict[str, Any]]
    exemplar_sets: dict[str, Any]
    dense_floor: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Explanation:
    """Stage 6, :func:`explain_study`.

    Attributes
    ----------
    relations : repsim.explain.Relations
        Divergence against bias per layer, with the noise floor.
    configs : list of dict
        Per configuration (method, sparsity): means over seeds.
    kd_vs_ft : list of dict
        :func:`kd_vs_ft`.
    measure : str
        The similarity measure of the divergence.
    one_minus : bool
        Whether the divergence is ``1 - measure``.
    """

    relations: Any
    configs: list[dict[str, Any]]
    kd_vs_ft: list[dict[str, Any]]
    measure: str
    one_minus: bool


class StageTimer:
    """Wall time of consecutive stages, for ``results.json["timings"]``."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        """Record the time since the previous lap (or the start) as ``stage``."""
        now = time.perf_counter()
        self.laps[stage] = round(now - self.last, 3)
        self.last = now

    def finish(self) -> dict[str, float]:
        """Every lap and ``total``, the time from the start to the first call of ``finish``."""
        if "total" not in self.laps:
            self.laps["total"] = round(time.perf_counter() - self.start, 3)
        return dict(self.laps)


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


def _quiet_group_metrics(
    fn: Any, y_true: Any, y_pred: Any, groups: Any, names: Any, **options: Any
) -> Any:
    """Per-group metrics without one warning per model for expected NaN rates.

    Per-group metrics; the per-group one-vs-rest rates that are undefined when the groups
    are the classes themselves (e.g. FPR of class c within group c) stay NaN in the CSV
    without a warning per model.
    """
    import warnings

    from repsim.fairness import UndefinedMetricWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return fn(y_true=y_true, y_pred=y_pred, groups=groups, group_names=names, **options)


def _mean(values: Sequence[float]) -> float:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _configurations(keys: Any) -> list[tuple[str, float]]:
    """The distinct ``(method label, sparsity)`` of member keys, in order."""
    return list(dict.fromkeys((k[0], k[1]) for k in keys))


def build_models(plan: Plan, *, progress: bool | None = None) -> Models:
    """Stage 2: train the dense seeds and build the compressed family (cached), then load them.

    One :func:`repsim.pipeline.family.build` of :func:`family_spec`; every model is cached
    under ``<cache_dir>/models/``, so a second call trains nothing.
    """
    from repsim.pipeline.family import build

    logger.debug("family: %d dense seeds, %d compressed models", len(plan.seeds), plan.n_members)
    family = build(family_spec(plan.config), progress=progress_enabled(progress))
    dense = {s: family.dense(s).load().eval() for s in plan.seeds}
    compressed: dict[Key, nn.Module] = {}
    for pm, rec, sp in plan.configs:
        for m in family.select(method=pm, sparsity=sp, kd=rec == "kd"):
            if (m.setting.options["finetune_epochs"] == 0) == (rec == "none"):
                compressed[(method_label(pm, rec), sp, m.seed)] = m.load().eval()
    for bits in plan.bits:
        for m in family.select(method="quantize", bits=bits):
            compressed[(quantized_label(bits), 0.0, m.seed)] = m.load().eval()
    work = {
        "dense_trained": sum(m.built for m in family if m.method == "dense"),
        "compressed_built": sum(m.built for m in family if m.method != "dense"),
    }
    return Models(dense, compressed, work)


def capture_models(
    plan: Plan, models: Models, test: Any, *, progress: bool | None = None
) -> Captures:
    """Stage 3: record every model's ``plan.layers`` on ``test`` into the activation store.

    The store is ``<cache_dir>/activations``; entries already there are reused. The captures
    are returned in memory (:meth:`repsim.capture.Capture.load`): test-split activations are
    small, and comparing them in memory gives the same numbers as streaming, without a
    ``d x d`` accumulator per batch.
    """
    from repsim.capture import record_reductions
    from repsim.capture.record import combine_reductions
    from repsim.capture.store import ActivationStore

    config = plan.config
    store = ActivationStore(Path(config["study"]["cache_dir"]) / "activations")
    before = set(store.keys())
    reductions = capture_reductions(config)
    layers = plan.layers
    if len(reductions) > 1:  # plan.layers are '<layer>@<reduction>'
        layers = list(dict.fromkeys(name.rpartition("@")[0] for name in plan.layers))
    opts = {
        "store": store,
        "batch_size": config["capture"]["batch_size"],
        "progress": False,
    }
    todo = [(s, f"dense-seed{s}", m) for s, m in models.dense.items()] + [
        (k, f"{k[0]}@{k[1]:g}-seed{k[2]}", m) for k, m in models.compressed.items()
    ]
    done: dict[Any, Any] = {}
    with bar(total=len(todo), desc="capture", unit="model", progress=progress) as b:
        for key, name, model in todo:
            caps = record_reductions(
                model, test, dict.fromkeys(reductions, layers), name=name, **opts
            )
            done[key] = caps[reductions[0]] if len(reductions) == 1 else combine_reductions(caps)
            b.update()
    dense = {s: done[s] for s in models.dense}
    compressed = {k: done[k] for k in models.compressed}
    new = len(set(store.keys()) - before)
    return Captures(
        {s: c.load() for s, c in dense.items()},
        {k: c.load() for k, c in compressed.items()},
        new,
    )


def measure_similarity(
    plan: Plan,
    captures: Captures,
    test: Any,
    *,
    progress: bool | None = None,
    cache: bool = True,
) -> SimilarityResults:
    """Stage 4: per-layer similarity of dense vs compressed and of dense seed vs dense seed.

    Every measure of the plan on all samples and (with ``similarity.by_group``) per group of
    ``test``; with ``similarity.heatmaps``, the layer x layer CKA matrix of the first seed
    against the second dense seed and against each of its compressed members.

    With ``cache`` (default), each comparison is looked up in and stored to
    ``<cache_dir>/similarity/`` (:func:`repsim.pipeline.similarity_cache.cached_compare`,
    keyed by both models' and the data's fingerprints, the layers, measures and options), so
    a re-run of an unchanged study measures nothing again.
    """
    from repsim.pipeline.similarity_cache import cached_compare

    config, seeds, layers = plan.config, plan.seeds, plan.layers
    dense_caps, caps = captures.dense, captures.compressed
    group_labels = np.asarray(list(test.group_names), dtype=object)[test.groups]
    by = group_labels if config["similarity"]["by_group"] else None
    cache_dir = Path(config["study"]["cache_dir"]) if cache else None
    sim_opts = {
        "layers": layers,
        "measures": plan.measures,
        "groups": by,
        "seed": int(config["study"]["seed"]),
        "progress": False,
    }
    jobs: list[tuple[str, Any, Any, dict[str, Any]]] = []
    for i, sa in enumerate(seeds):
        for sb in seeds[i + 1 :]:
            meta = {"kind": "dense", "method": "dense", "sparsity": 0.0, "seed": sa, "seed_b": sb}
            jobs.append(("rows", dense_caps[sa], dense_caps[sb], meta))
    for (label, sp, seed), cap in caps.items():
        meta = {"kind": "compressed", "method": label, "sparsity": sp, "seed": seed}
        jobs.append(("rows", dense_caps[seed], cap, {**meta, "seed_b": seed}))
    if config["similarity"]["heatmaps"]:
        s0 = seeds[0]
        if len(seeds) > 1:
            title = f"dense seed {s0} vs dense seed {seeds[1]}"
            jobs.append(("heatmap", dense_caps[s0], dense_caps[seeds[1]], {"title": title}))
        for (label, sp, seed), cap in caps.items():
            if seed == s0:
                title = f"dense vs {label}@{sp:g} (seed {s0})"
                jobs.append(("heatmap", dense_caps[s0], cap, {"title": title}))
    heat_opts = {"layers": layers, "measures": ["cka"], "pairs": "all", "progress": False}
    rows: list[dict[str, Any]] = []
    heatmaps: list[tuple[str, Any]] = []
    hits = 0
    with bar(jobs, desc="similarity", unit="pair", progress=progress) as todo:
        for what, a, b, meta in todo:
            opts = sim_opts if what == "rows" else heat_opts
            table, hit = cached_compare(a, b, cache_dir=cache_dir, **opts)
            hits += hit
            if what == "rows":
                rows += _sim_rows(table, **meta)
            else:
                heatmaps.append((meta["title"], table.matrix("cka")))
    return SimilarityResults(rows, heatmaps, computed=len(jobs) - hits, cached=hits)


def measure_fairness(plan: Plan, captures: Captures, test: Any) -> FairnessResults:
    """Stage 5: per-group metrics, compression shift (CEV, SDE) and exemplars on ``test``."""
    from repsim.fairness import compression_shift, exemplars, group_metrics

    config, seeds = plan.config, plan.seeds
    dense_caps, caps = captures.dense, captures.compressed
    group_names = list(test.group_names)
    y_true = test.y
    min_size = config["fairness"].get("min_group_size", 1)
    fair_opts = {
        "convention": config["fairness"]["convention"],
        "eps": config["fairness"]["eps"],
        "test": False,
        "min_group_size": min_size,
    }
    shifts, group_shift_rows, class_rows, gm_rows = [], [], [], []
    for seed, cap in dense_caps.items():
        gm = _quiet_group_metrics(
            group_metrics,
            y_true,
            cap.predictions,
            test.groups,
            group_names,
            min_group_size=min_size,
        )
        gm_rows += [
            {"model": "dense", "method": "dense", "sparsity": 0.0, "seed": seed, **r}
            for r in gm.by_group.to_records()
        ]
    for (label, sp, seed), cap in caps.items():
        meta = {"kind": "compressed", "method": label, "sparsity": sp, "seed": seed}
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
        gm = _quiet_group_metrics(
            group_metrics,
            y_true,
            cap.predictions,
            test.groups,
            group_names,
            min_group_size=min_size,
        )
        gm_rows += [{"model": "compressed", **meta, **r} for r in gm.by_group.to_records()]
    floor_rows = []
    for i, sa in enumerate(seeds):
        for sb in seeds[i + 1 :]:
            meta = {"kind": "dense", "method": "dense", "sparsity": 0.0, "seed": sa, "seed_b": sb}
            shift = compression_shift(
                y_true=y_true,
                dense_preds=dense_caps[sa].predictions,
                compressed_preds=dense_caps[sb].predictions,
                groups=test.groups,
                group_names=group_names,
                **fair_opts,
            )
            row, _, _ = _shift_rows(shift, **meta)
            row["accuracy"] = float(np.mean(dense_caps[sb].predictions == y_true))
            row["dense_accuracy"] = float(np.mean(dense_caps[sa].predictions == y_true))
            floor_rows.append(row)
    exemplar_rows: list[dict[str, Any]] = []
    exemplar_sets: dict[str, Any] = {}
    dense_pop = np.stack([dense_caps[s].predictions for s in seeds])
    for label, sp in _configurations(caps):
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
    return FairnessResults(
        shifts, group_shift_rows, class_rows, gm_rows, exemplar_rows, exemplar_sets, floor_rows
    )


def explain_study(
    plan: Plan, similarity: SimilarityResults, fairness: FairnessResults
) -> Explanation:
    """Stage 6: relate divergence to bias.

    Stage 6: relate divergence to bias per layer, summarise each configuration, and pair
    distillation against fine-tuning (:func:`repsim.explain.relate`, :func:`kd_vs_ft`).
    """
    from repsim.explain import control_role, parse_divergence, relate

    report = plan.config["report"]
    rseed = int(plan.config["study"]["seed"])
    shifts, sim_rows = fairness.shifts, similarity.rows
    bias = [m for m in plan.metrics if m != "acc_drop"] + (
        ["acc_drop"] if "acc_drop" in plan.metrics else []
    )
    rel = relate(
        sim_rows,
        [*shifts, *fairness.dense_floor],
        divergence=plan.divergence,
        bias=bias,
        layers=plan.layers,
        n_boot=report["n_boot"],
        n_permutations=report["n_permutations"],
        ci=alpha_to_ci(report["alpha"]),
        seed=rseed,
    )
    div_measure, one_minus = parse_divergence(plan.divergence)
    config_rows = []
    for label, sp in _configurations((r["method"], r["sparsity"]) for r in shifts):
        mine = [r for r in shifts if r["method"] == label and r["sparsity"] == sp]
        sims = [
            r["value"]
            for r in sim_rows
            if r["kind"] == "compressed"
            and r["method"] == label
            and r["sparsity"] == sp
            and r["group"] is None
            and r["measure"] == div_measure
        ]
        role = control_role(label)
        if role == "random-pruning control" and "random" in plan.config["compression"]["methods"]:
            role = "compressed"  # random pruning asked for as a method of the study
        config_rows.append(
            {
                "method": label,
                "sparsity": sp,
                "role": role,
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
        sim_rows,
        measure=div_measure,
        n_boot=report["n_boot"],
        ci=alpha_to_ci(report["alpha"]),
        seed=rseed,
    )
    return Explanation(rel, config_rows, kd_rows, div_measure, one_minus)


def write_study_report(
    plan: Plan,
    test: Any,
    captures: Captures,
    similarity: SimilarityResults,
    fairness: FairnessResults,
    explanation: Explanation,
    *,
    work: Mapping[str, int] | None = None,
    timer: StageTimer | None = None,
    threads: int | None = None,
    progress: bool | None = None,
) -> Path:
    """Stage 7: write the report directory and return it.

    Stage 7: write ``<out_dir>/<study name>/``: tidy CSVs, figures, ``index.html`` and
    ``results.json``; return the directory.

    ``work`` (what was trained and captured), ``timer`` (the stage timings, to which this
    stage adds ``report`` and ``total``) and ``threads`` (the CPU thread limit the study ran
    with) go into ``results.json`` when given.
    """
    from repsim.report.write import write_report

    config, seeds = plan.config, plan.seeds
    study, report = config["study"], config["report"]
    out = output_dir(study["out_dir"], study["name"])
    results: dict[str, Any] = {
        "study": study["name"],
        "description": study["description"],
        "config": {k: v for k, v in config.items() if not k.startswith("_")},
        "config_file": config.get("_source"),
        "versions": environment(),
        "seeds": seeds,
        "layers": plan.layers,
        "dense": [
            {"seed": s, "test_accuracy": float(np.mean(captures.dense[s].predictions == test.y))}
            for s in seeds
        ],
        "configs": explanation.configs,
        "fairness_floor": fairness.dense_floor,
        "n_classes": int(len(getattr(test, "class_names", None) or np.unique(test.y))),
        "kd_vs_ft": explanation.kd_vs_ft,
        "relations": explanation.relations.to_dict(),
        "alpha": report["alpha"],
        "work": dict(work or {}),
        "threads": threads,
    }
    results["results"] = {"dense": results["dense"]}  # the layout `repsim run` prints from
    key = _report_key(results, test, captures, similarity, fairness, explanation, study["seed"])
    manifest = out / ".report.json"
    current = _report_is_current(manifest, key)
    if current:
        logger.debug("report inputs unchanged since the last run; figures and index.html kept")
    else:
        manifest.unlink(missing_ok=True)
        with ticker("report: figures and index.html", progress=progress):
            write_report(
                out,
                results=results,
                similarity=similarity.rows,
                shifts=fairness.shifts,
                group_shifts=fairness.group_shifts,
                class_shifts=fairness.class_shifts,
                group_metrics=fairness.group_metrics,
                exemplars=fairness.exemplars,
                exemplar_sets=fairness.exemplar_sets,
                heatmaps=similarity.heatmaps,
                data=test,
                measure=explanation.measure,
                one_minus=explanation.one_minus,
                seed=int(study["seed"]),
            )
        files = sorted(p.name for p in out.iterdir() if p.name not in _NOT_REPORT_FILES)
        write_json({"key": key, "files": files}, manifest)
    if work is not None:
        results["work"]["report_written"] = int(not current)
    if timer is not None:
        timer.lap("report")
        results["timings"] = timer.finish()
    write_json(results, out / "results.json")
    return out


_NOT_REPORT_FILES = ("results.json", ".report.json")


def _report_key(
    results: Mapping[str, Any],
    test: Any,
    captures: Captures,
    similarity: SimilarityResults,
    fairness: FairnessResults,
    explanation: Explanation,
    seed: int,
) -> str:
    """A digest of everything the report's files are drawn from, and of the code drawing them.

    The stage inputs (numbers, config, test-data fingerprint), the repsim version, the
    matplotlib version and the source of :mod:`repsim.report`: when none of them changed,
    the figures and ``index.html`` of the last run are still exact.
    """
    import hashlib
    import importlib.metadata

    import repsim.report

    h = hashlib.sha256()

    def feed(obj: Any) -> None:
        h.update(json.dumps(obj, sort_keys=True, default=str, allow_nan=True).encode())
        h.update(b"\x00")

    skip = ("work", "threads", "timings", "versions", "config_file")
    feed({k: v for k, v in results.items() if k not in skip})
    feed(results.get("versions", {}).get("repsim"))
    feed(importlib.metadata.version("matplotlib"))
    for rows in (
        similarity.rows,
        fairness.shifts,
        fairness.group_shifts,
        fairness.class_shifts,
        fairness.group_metrics,
        fairness.exemplars,
    ):
        feed(rows)
    feed([(t, m.values.tolist(), m.rows, m.cols, m.measure) for t, m in similarity.heatmaps])
    feed(sorted({c.data_fingerprint for c in captures.dense.values()}))
    feed([explanation.measure, explanation.one_minus, int(seed), len(test)])
    for source in sorted(Path(repsim.report.__file__).parent.glob("*.py")):
        h.update(source.read_bytes())
    return h.hexdigest()


def _report_is_current(manifest: Path, key: str) -> bool:
    """Whether ``manifest`` records ``key`` and every file it lists is still there."""
    from repsim._core.io import read_json
    from repsim.errors import OutputError

    if not manifest.is_file():
        return False
    try:
        entry = read_json(manifest, what="report manifest")
    except OutputError:
        return False
    if not isinstance(entry, dict) or entry.get("key") != key:
        return False
    files = entry.get("files")
    return isinstance(files, list) and all((manifest.parent / f).is_file() for f in files)


def load_study(study: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read and validate a study config, named by path or as a shipped study.

    Parameters
    ----------
    study : str or path-like
        A TOML file, or the name of a study that ships with repsim (``"quickstart"``; see
        :func:`repsim.studies.list_studies`).
    overrides : mapping of str to Any, optional
        ``{"section.key": value}`` set on the file's content before validation
        (:func:`repsim.studies.apply_overrides`), e.g. ``{"train.epochs": 1}``: the command
        line's ``--set train.epochs=1``.

    Raises
    ------
    ConfigError
        An unknown study or missing file, invalid TOML, or a key or value the schema rejects
        (an override's too, named as in the file).
    """
    from repsim.studies import apply_overrides, study_path

    path = study_path(study)
    if not overrides:
        return load_config(path)
    raw = apply_overrides(read_toml(path), overrides)
    config = validate(raw, source=f"{path} (with --set {', '.join(overrides)})")
    config["_source"] = str(path)
    return config


#: The stages of :func:`run_study`, in order, as named in logs and ``results.json["timings"]``.
STAGES = ("validate", "family", "capture", "similarity", "fairness", "explain", "report")


def _stage_line(timer: StageTimer, stage: str, detail: str) -> None:
    """Log one finished stage: ``family      27.8 s  trained 3 dense, built 18 compressed``."""
    logger.info("%-10s %6.1f s  %s", stage, timer.laps[stage], detail)


def run_study(
    path: str | Path,
    *,
    progress: bool | None = None,
    threads: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Run a study and return its report directory.

    Chains the stages, each callable alone: :func:`plan_study` (after :func:`load_study`),
    :func:`build_models`, :func:`capture_models`, :func:`measure_similarity`,
    :func:`measure_fairness`, :func:`explain_study`, :func:`write_study_report`.
    ``docs/guide.md`` documents every config key.

    Each finished stage is logged at INFO on the ``repsim`` logger with its time (one line
    each, then a summary line); progress bars show on a terminal.

    Parameters
    ----------
    path : str or path-like
        A study config file, or the name of a shipped study (``"quickstart"``).
    progress : bool, optional
        Progress bars: ``None`` on a terminal only, ``True`` always, ``False`` never.
    threads : int, optional
        CPU threads for torch and the BLAS (``0``: the libraries' defaults); default the
        config's ``[study] threads`` (1). Recorded in ``results.json["threads"]``.
    overrides : mapping of str to Any, optional
        ``{"section.key": value}`` applied to the config before validation
        (:func:`load_study`).

    Raises
    ------
    ConfigError, LayerNotFoundError, DataError
        On a bad config, before any training or capture.
    """
    from repsim._core.threads import check_threads, deterministic_torch, limit_threads

    timer = StageTimer()
    config = load_study(path, overrides)
    if threads is not None:
        check_threads(threads, "threads")
    n_threads = config["study"].get("threads", 1) if threads is None else threads
    with limit_threads(n_threads), deterministic_torch():
        data = dataset_from_config(config)
        plan = plan_study(config, data)
        test = data.test
        timer.lap("validate")
        _stage_line(
            timer,
            "validate",
            f"{config['study']['name']}: {len(plan.seeds)} dense seeds, {plan.n_members} "
            f"compressed models, {len(plan.layers)} layers, {n_threads or 'all'} thread(s)",
        )
        models = build_models(plan, progress=progress)
        timer.lap("family")
        _stage_line(
            timer,
            "family",
            f"trained {models.work['dense_trained']} dense, built "
            f"{models.work['compressed_built']} compressed "
            f"({len(models.dense) + len(models.compressed)} models)",
        )
        captures = capture_models(plan, models, test, progress=progress)
        work = {**models.work, "captures": captures.new}
        timer.lap("capture")
        n_models = len(captures.dense) + len(captures.compressed)
        _stage_line(
            timer, "capture", f"{n_models} models on {len(test)} test samples, {captures.new} new"
        )
        similarity = measure_similarity(plan, captures, test, progress=progress)
        work["similarity_computed"] = similarity.computed
        timer.lap("similarity")
        _stage_line(
            timer,
            "similarity",
            f"{similarity.computed + similarity.cached} comparisons, {similarity.cached} from "
            f"cache, {len(similarity.rows)} rows",
        )
        fairness = measure_fairness(plan, captures, test)
        timer.lap("fairness")
        _stage_line(timer, "fairness", f"{len(fairness.shifts)} compressed models")
        report = config["report"]
        with ticker("explain: bootstrap CIs and permutation tests", progress=progress):
            explanation = explain_study(plan, similarity, fairness)
        timer.lap("explain")
        _stage_line(
            timer,
            "explain",
            f"{report['n_boot']} bootstrap resamples, {report['n_permutations']} permutations",
        )
        out = write_study_report(
            plan,
            test,
            captures,
            similarity,
            fairness,
            explanation,
            work=work,
            timer=timer,
            threads=n_threads,
            progress=progress,
        )
    laps = timer.finish()
    written = json.loads((out / "results.json").read_text())["work"].get("report_written", 1)
    _stage_line(
        timer,
        "report",
        f"{len(list(out.glob('*.png')))} figures, {len(list(out.glob('*.csv')))} tables"
        if written
        else "unchanged inputs: figures and index.html kept from the last run",
    )
    logger.info(
        "done in %.1f s (%s) -> %s",
        laps["total"],
        ", ".join(f"{stage} {laps[stage]:.1f} s" for stage in STAGES if stage in laps),
        out / "index.html",
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
    the dense model (``measure`` averaged over layers), each with its mean, an interval over
    seeds at level ``ci`` and the two-sided paired t-test p-value
    (:func:`repsim.explain.paired_difference` with ``interval="auto"``: Student t below
    :data:`repsim._core.stats.MIN_SEEDS_BOOTSTRAP` seeds, percentile bootstrap from there;
    the deprecated ``alpha=a`` means ``ci=1 - a``). ``<name>_p_adjusted`` is Holm-adjusted
    across the four metrics of one configuration; ``<name>_diff_interval`` says which interval
    each metric got (its finite pairs decide); ``few_seeds`` flags fewer than
    :data:`repsim._core.stats.FEW_SEEDS` pairs. Blakeney et al. (2021, "Simon Says") report
    that distillation lowers CEV/SDE against fine-tuning.
    """
    import warnings

    from repsim._core.stats import FEW_SEEDS, adjust_pvalues, t_test
    from repsim.errors import RelationWarning
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
        row: dict[str, Any] = {
            "prune_method": base,
            "sparsity": sp,
            "n_seeds": len(seeds),
            "few_seeds": len(seeds) < FEW_SEEDS,
        }
        names = ("cev", "sde", "accuracy", "similarity")
        for name in names:
            if name == "similarity":
                a = [sim_mean.get((kd, sp, s), np.nan) for s in seeds]
                b = [sim_mean.get((ft, sp, s), np.nan) for s in seeds]
            else:
                a = [by_member[(kd, sp, s)][name] for s in seeds]
                b = [by_member[(ft, sp, s)][name] for s in seeds]
            d = paired_difference(a, b, n_boot=n_boot, ci=ci, seed=seed, interval="auto")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RelationWarning)  # NaN p is reported as NaN
                t = t_test(np.asarray(a, dtype=float) - np.asarray(b, dtype=float), ci=ci)
            row.update(
                {
                    f"{name}_ft": _mean(b),
                    f"{name}_kd": _mean(a),
                    f"{name}_diff": d["mean"],
                    f"{name}_diff_low": d["low"],
                    f"{name}_diff_high": d["high"],
                    f"{name}_p": t["p"],
                    f"{name}_diff_interval": d["interval"],
                }
            )
        adjusted = adjust_pvalues([row[f"{n}_p"] for n in names], "holm")
        row.update({f"{n}_p_adjusted": float(q) for n, q in zip(names, adjusted, strict=True)})
        out.append(row)
    return out


__all__ = [
    "METRICS",
    "RECOVERIES",
    "STAGES",
    "STUDY_SECTIONS",
    "Captures",
    "Explanation",
    "FairnessResults",
    "Models",
    "Plan",
    "SimilarityResults",
    "StageTimer",
    "build_models",
    "capture_models",
    "dense_model_path",
    "environment",
    "explain_study",
    "family_spec",
    "kd_vs_ft",
    "load_study",
    "measure_fairness",
    "measure_similarity",
    "method_label",
    "plan_study",
    "run_study",
    "train_dense",
    "write_study_report",
]
