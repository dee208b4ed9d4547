"""Relate per-layer representation divergence to the bias compression causes.

Across a *family* of compressed models (methods x sparsities x dense seeds), every member ``i``
has, per layer ``l``, a divergence from its dense parent, ``D_il`` (e.g. ``1 - CKA``), and one
bias figure per metric, ``B_i`` (CEV, SDE, a group's accuracy drop, the worst group's drop).
:func:`relate` answers, per layer, with the dense seed as the unit of replication:

* does ``D_l`` track ``B`` *within a configuration* (``controlled``, the headline; the
  ``pooled`` correlation across configurations is kept but labelled confounded by sparsity);
* how far does compression move representations and bias beyond what the recovery alone does
  (the *recovery-only control*), what random pruning at the same sparsity does, and what
  retraining with another seed does (the *dense-vs-dense floor*) (``effects``,
  ``bias_effects``);
* where does that drift start (``controlled_onset``: tested against the recovery-only
  control, corrected across layers);
* do minority samples drift further than majority ones (``group_gaps``, size-matched).

Input schema
------------
Both inputs are *tidy tables*: a sequence of dicts (``list[dict]``, a
:class:`repsim.similarity.SimilarityTable`, or anything with ``.rows`` / ``to_records()``).

Similarity table (one row per layer, measure, pair of models and, optionally, group):

``kind``
    ``"compressed"``: the dense model of ``seed`` against its compressed version
    ``(method, sparsity)``; ``"dense"``: dense ``seed`` against dense ``seed_b`` (same
    architecture, data and training; the noise floor).
``method``, ``sparsity``, ``seed``
    Identify the family member (for ``"dense"`` rows ``method`` is ignored; ``seed_b`` is the
    second seed). Methods are labelled ``<prune>+<recovery>`` (``"magnitude+ft"``); the
    controls are members too: the *recovery-only control* ``"none+<recovery>"`` at sparsity
    ``0.0`` (the dense seed put through the same recovery without pruning) and the
    *random-pruning control* ``"random+<recovery>"`` at each sparsity.
``layer``
    Layer name (or ``layer_a``/``layer_b`` as :func:`repsim.similarity.compare` writes them,
    which must then be equal). The network order is the order of first appearance unless
    ``layers=`` is given.
``measure``, ``value``
    The similarity measure and its value.
``group``, ``n`` (optional)
    ``None`` (or missing) for all samples; a group name for group-conditional rows, with the
    group's size ``n`` (and ``n_used``, ``size_matching`` from
    :func:`repsim.similarity.groups.group_similarity`).

Shift table (one row per family member): ``method``, ``sparsity``, ``seed`` and one numeric
column per bias metric, e.g. ``cev``, ``sde``, ``worst_group_drop`` and ``acc_drop:<group>``
(the group's accuracy, dense minus compressed, so positive is worse), and optionally
``accuracy``, ``dense_accuracy`` (``accuracy_drop`` is their difference when not given) and
``kind``: ``"compressed"`` (default) or ``"dense"`` for the floor (dense seed ``seed_b`` scored
as if compressed against dense seed ``seed``; needs ``seed`` and ``seed_b``).

Statistics
----------
The new tables are documented in :mod:`repsim.explain.strata` (``controlled``, ``pooled``,
``within``), :mod:`repsim.explain.controls` (``effects``, ``bias_effects``,
``controlled_onset``) and :mod:`repsim.explain.groups` (``group_gaps``); docs/explain.md has
the formulas, choices and sources. The 0.2 tables are kept for the current report:

* ``correlations`` (:func:`correlations`): Spearman and Pearson correlation and OLS slope across
  every member, percentile bootstrap over *members* and member-level permutation p-values. It
  is the pooled, confounded analysis with member-level intervals; each row says so in
  ``confounded_by`` and ``label``. Use ``controlled`` (and ``pooled``) instead.
* ``onset`` / ``onset_layer`` (:func:`onset`): the 0.2 rule, excess divergence over the
  dense-vs-dense floor with a one-sided percentile bootstrap lower bound (members and dense
  pairs resampled independently). Kept and documented; the default onset is now
  ``controlled_onset`` (tested against the recovery-only control, Holm across layers).
* ``noise_floor`` (:func:`noise_floor`): dense-vs-dense divergence per layer.

Undefined values (too few members, constant inputs) are NaN with a
:class:`RelationWarning`, never 0, and a NaN estimate never has a finite interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from repsim._core.stats import (
    FEW_SEEDS,
    MIN_SEEDS_BOOTSTRAP,
    alpha_renamed_to_ci,
    bootstrap_mean_difference,
    correlate,
)
from repsim.errors import InsufficientDataError
from repsim.explain._tables import (
    BIAS_METRICS,
    KINDS,
    RANDOM_PRUNING,
    RECOVERY_ONLY,
    _bias_columns,
    _config_key,
    _divergences,
    _layer_order,
    _member_key,
    _sorted_configs,
    _warn,
    as_rows,
    parse_divergence,
    shift_tables,
)
from repsim.explain.controls import bias_effects, drift_effects, onset_tests
from repsim.explain.groups import group_gaps
from repsim.explain.strata import (
    CONFOUNDERS,
    DEFAULT_STRATA,
    controlled_correlations,
    pooled_correlations,
    stratum_correlations,
)

#: Label of the 0.2 ``correlations`` table.
LEGACY_LABEL = (
    "pooled across configurations with member-level bootstrap and permutation: confounded by "
    "sparsity (and method); kept for 0.2 reports, see 'controlled'"
)

# --------------------------------------------------------------------------------------------
# noise floor, legacy onset, legacy correlations


def noise_floor(
    similarity: Any, *, divergence: str = "1-cka", layers: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Dense-vs-dense divergence per layer: the spread retraining with another seed causes.

    Rows (network order): ``layer``, ``n_pairs``, ``mean``, ``sd`` (``ddof=1``; NaN for one
    pair), ``min``, ``max``, on all samples (rows whose ``group`` is ``None``).

    Raises
    ------
    InsufficientDataError
        When the table holds no dense-vs-dense rows (a noise floor needs two dense seeds).
    """
    divs, found = _divergences(similarity, divergence)
    order = _layer_order(found, layers)
    dense = [d for d in divs if d.kind == "dense" and d.group is None]
    if not dense:
        raise InsufficientDataError(
            "the similarity table holds no dense-vs-dense rows (kind='dense'); the noise floor "
            "needs at least two dense seeds of the same architecture: add seeds to the study."
        )
    out = []
    for layer in order:
        v = np.array([d.value for d in dense if d.layer == layer], dtype=float)
        v = v[np.isfinite(v)]
        if v.size == 0:
            _warn(f"no dense-vs-dense value for layer {layer!r}; its noise floor is NaN.")
        out.append(
            {
                "layer": layer,
                "n_pairs": int(v.size),
                "mean": float(v.mean()) if v.size else math.nan,
                "sd": float(v.std(ddof=1)) if v.size > 1 else math.nan,
                "min": float(v.min()) if v.size else math.nan,
                "max": float(v.max()) if v.size else math.nan,
            }
        )
    return out


@alpha_renamed_to_ci
def onset(
    similarity: Any,
    *,
    divergence: str = "1-cka",
    layers: Sequence[str] | None = None,
    ci: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], dict[str, str | None]]:
    """Per configuration and layer, compressed divergence against the dense-vs-dense floor.

    For each ``(method, sparsity)`` (and ``"all"``: every compressed member pooled) and each
    layer, the excess ``E = mean D(compressed) - mean D(dense vs dense)`` with the lower bound
    of its one-sided ``ci`` bootstrap interval (members and dense pairs resampled
    independently, ``numpy.random.default_rng(seed)``;
    :func:`repsim._core.stats.bootstrap_mean_difference`). ``exceeds`` is ``low > 0``.

    Returns
    -------
    (rows, onset_layer)
        ``rows``: ``method``, ``sparsity``, ``layer``, ``n``, ``divergence``, ``noise_mean``,
        ``noise_max``, ``excess``, ``excess_low``, ``exceeds``. ``onset_layer`` maps
        ``"method@sparsity"`` (and ``"all"``) to the first exceeding layer in network order, or
        ``None``.
    """
    divs, found = _divergences(similarity, divergence)
    order = _layer_order(found, layers)
    whole = [d for d in divs if d.group is None]
    dense = [d for d in whole if d.kind == "dense"]
    comp = [d for d in whole if d.kind == "compressed"]
    if not dense:
        raise InsufficientDataError(
            "the similarity table holds no dense-vs-dense rows; the onset layer is defined "
            "against the noise floor, which needs at least two dense seeds."
        )
    configs: list[tuple[Any, Any]] = _sorted_configs(_config_key(d) for d in comp)
    rows: list[dict[str, Any]] = []
    first: dict[str, str | None] = {}
    for cfg in [*configs, ("all", None)]:
        label = "all" if cfg[0] == "all" else f"{cfg[0]}@{cfg[1]}"
        first[label] = None
        for layer in order:
            c = np.array(
                [
                    d.value
                    for d in comp
                    if d.layer == layer and (cfg[0] == "all" or _config_key(d) == cfg)
                ],
                dtype=float,
            )
            f = np.array([d.value for d in dense if d.layer == layer], dtype=float)
            c, f = c[np.isfinite(c)], f[np.isfinite(f)]
            excess = float(c.mean() - f.mean()) if c.size and f.size else math.nan
            low, _ = bootstrap_mean_difference(c, f, n_boot=n_boot, ci=ci, seed=seed, sides=1)
            exceeds = bool(np.isfinite(low) and low > 0)
            if exceeds and first[label] is None:
                first[label] = layer
            rows.append(
                {
                    "method": cfg[0],
                    "sparsity": cfg[1],
                    "layer": layer,
                    "n": int(c.size),
                    "divergence": float(c.mean()) if c.size else math.nan,
                    "noise_mean": float(f.mean()) if f.size else math.nan,
                    "noise_max": float(f.max()) if f.size else math.nan,
                    "excess": excess,
                    "excess_low": low,
                    "exceeds": exceeds,
                }
            )
    return rows, first


@alpha_renamed_to_ci
def correlations(
    similarity: Any,
    shifts: Any,
    *,
    divergence: str = "1-cka",
    bias: str | Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    n_boot: int = 2000,
    n_permutations: int = 10000,
    ci: float = 0.95,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Per layer and bias metric: correlation of member divergence with member bias (0.2).

    The pooled analysis of 0.2: every compressed member in one cloud, percentile bootstrap
    over members and member-level permutation p-values (:func:`correlate`). Confounded by
    sparsity and blind to members sharing a dense seed; kept for the 0.2 report. Use
    :func:`repsim.explain.strata.controlled_correlations` (``Relations.controlled``).

    Members are matched on ``(method, sparsity, seed)``; members missing from either table are
    left out; shift rows of kind ``"dense"`` are ignored. Each row: ``layer``, ``bias``, the
    output of :func:`correlate`, the mean member divergence ``divergence_mean``, the layer's
    noise floor ``noise_floor`` (mean dense-vs-dense divergence, NaN without dense pairs),
    ``n_seeds``, ``confounded_by`` and ``label``.
    """
    divs, found = _divergences(similarity, divergence)
    order = _layer_order(found, layers)
    by_member, _ = shift_tables(shifts)
    metrics = _bias_columns(list(by_member.values()), bias)
    comp = [d for d in divs if d.kind == "compressed" and d.group is None]
    dense = [d for d in divs if d.kind == "dense" and d.group is None]
    out = []
    for layer in order:
        members = [d for d in comp if d.layer == layer]
        keys = [_member_key(d.method, d.sparsity, d.seed) for d in members]
        x = np.array([d.value for d in members], dtype=float)
        floor = [d.value for d in dense if d.layer == layer]
        for metric in metrics:
            y = np.array(
                [
                    by_member[k].get(metric)
                    if k in by_member and by_member[k].get(metric) is not None
                    else math.nan
                    for k in keys
                ],
                dtype=float,
            )
            stats = correlate(x, y, n_boot=n_boot, n_permutations=n_permutations, ci=ci, seed=seed)
            used = np.isfinite(x) & np.isfinite(y)
            out.append(
                {
                    "layer": layer,
                    "bias": metric,
                    "divergence": divergence,
                    **stats,
                    "divergence_mean": float(np.nanmean(x)) if np.isfinite(x).any() else math.nan,
                    "noise_floor": float(np.mean(floor)) if floor else math.nan,
                    "n_seeds": len({k[2] for k, u in zip(keys, used, strict=True) if u}),
                    "confounded_by": list(CONFOUNDERS),
                    "label": LEGACY_LABEL,
                }
            )
    return out


@dataclass
class Relations:
    """What :func:`relate` returns: every table of the divergence-bias analysis.

    The headline tables are ``controlled``, ``effects``, ``bias_effects``,
    ``controlled_onset`` and ``group_gaps``; every row of them carries ``n_seeds`` and
    ``few_seeds``, intervals and (where a test is made) ``p`` and ``p_adjusted``.

    Attributes
    ----------
    correlations : list of dict
        0.2 pooled correlations with member-level intervals, labelled confounded (see
        :func:`correlations`).
    noise_floor : list of dict
        Per layer dense-vs-dense divergence (see :func:`noise_floor`); empty without dense pairs.
    onset : list of dict
        0.2 onset rule: per configuration and layer, excess over the floor (see :func:`onset`).
    onset_layer : dict
        ``"method@sparsity"`` / ``"all"`` -> first layer exceeding the floor (0.2 rule), or
        ``None``.
    group_gaps : list of dict
        Per layer, group and configuration, gap CIs over seeds (see
        :func:`repsim.explain.groups.group_gaps`); empty without group rows.
    divergence : str
        The divergence used, e.g. ``"1-cka"``.
    layers : list of str
        Layers in network order.
    controlled : list of dict
        The default analysis: rank correlation within strata / given covariates, per layer and
        bias metric (:func:`repsim.explain.strata.controlled_correlations`).
    pooled : list of dict
        The pooled Spearman correlation, labelled confounded by sparsity
        (:func:`repsim.explain.strata.pooled_correlations`).
    within : list of dict
        Spearman correlation inside each stratum
        (:func:`repsim.explain.strata.stratum_correlations`).
    effects : list of dict
        Per configuration, comparison (recovery / random / dense_floor) and layer: drift beyond
        the control (:func:`repsim.explain.controls.drift_effects`).
    bias_effects : list of dict
        The same for the bias metrics (:func:`repsim.explain.controls.bias_effects`).
    controlled_onset : list of dict
        Per configuration and layer, the one-sided test of drift beyond the recovery-only
        control (:func:`repsim.explain.controls.onset_tests`).
    controlled_onset_layer : dict
        ``"method@sparsity"`` -> first layer whose Holm-adjusted test is significant, or None.
    settings : dict
        The analysis settings (strata, covariates, correction, ci, seeds thresholds, ...).
    """

    correlations: list[dict[str, Any]]
    noise_floor: list[dict[str, Any]]
    onset: list[dict[str, Any]]
    onset_layer: dict[str, str | None]
    group_gaps: list[dict[str, Any]]
    divergence: str
    layers: list[str] = field(default_factory=list)
    controlled: list[dict[str, Any]] = field(default_factory=list)
    pooled: list[dict[str, Any]] = field(default_factory=list)
    within: list[dict[str, Any]] = field(default_factory=list)
    effects: list[dict[str, Any]] = field(default_factory=list)
    bias_effects: list[dict[str, Any]] = field(default_factory=list)
    controlled_onset: list[dict[str, Any]] = field(default_factory=list)
    controlled_onset_layer: dict[str, str | None] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every table."""
        return {
            "divergence": self.divergence,
            "layers": self.layers,
            "settings": self.settings,
            "controlled": self.controlled,
            "pooled": self.pooled,
            "within": self.within,
            "effects": self.effects,
            "bias_effects": self.bias_effects,
            "controlled_onset": self.controlled_onset,
            "controlled_onset_layer": self.controlled_onset_layer,
            "group_gaps": self.group_gaps,
            "correlations": self.correlations,
            "noise_floor": self.noise_floor,
            "onset": self.onset,
            "onset_layer": self.onset_layer,
        }

    def best(self, bias: str, statistic: str = "spearman") -> dict[str, Any] | None:
        """The layer whose divergence correlates most strongly with ``bias`` (0.2 table).

        By ``|statistic|`` in the pooled, confounded ``correlations`` table; ``None`` when
        every value is NaN. For the controlled analysis read ``controlled`` and its
        ``p_adjusted``.
        """
        rows = [r for r in self.correlations if r["bias"] == bias and np.isfinite(r[statistic])]
        return max(rows, key=lambda r: abs(r[statistic])) if rows else None


@alpha_renamed_to_ci
def relate(
    similarity_table: Any,
    shift_table: Any,
    *,
    divergence: str = "1-cka",
    bias: str | Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    reference_group: Any = None,
    strata: str | Sequence[str] | None = DEFAULT_STRATA,
    covariates: str | Sequence[str] | None = None,
    correction: str = "holm",
    n_boot: int = 2000,
    n_permutations: int = 10000,
    ci: float = 0.95,
    seed: int = 0,
    min_seeds_bootstrap: int = MIN_SEEDS_BOOTSTRAP,
    few_seeds: int = FEW_SEEDS,
    recovery_only: str = RECOVERY_ONLY,
    random_pruning: str = RANDOM_PRUNING,
) -> Relations:
    """Relate per-layer divergence to bias across a family of compressed models.

    Parameters
    ----------
    similarity_table, shift_table
        Tidy tables in the schema of the module docstring.
    divergence : str
        ``"1-<measure>"`` for a similarity (``"1-cka"``), or a distance measure's name.
    bias : str or list of str, optional
        Shift-table columns to relate to: ``"cev"``, ``"sde"``, ``"worst_group_drop"``,
        ``"acc_drop"`` (every ``acc_drop:<group>`` column) or any numeric column. Default:
        every known bias column present.
    layers : list of str, optional
        Layers (network order); default: order of first appearance.
    reference_group : optional
        Reference group of the group gaps (default: the largest).
    strata : list of str or None
        Strata of the controlled analysis, shift-table columns; default ``("method",
        "sparsity")``: within one configuration. Every shift row carries both (they are
        required), so the default analysis is always within configuration. None: no strata.
    covariates : list of str, optional
        Partialled out by rank in the controlled analysis, e.g. ``["accuracy_drop"]`` (does
        divergence predict bias beyond the accuracy lost?). ``accuracy_drop`` is
        ``dense_accuracy - accuracy`` when the rows do not carry it.
    correction : {"holm", "bh", "fdr_bh", "bonferroni", "none"}
        Multiple-testing correction; families: layers x bias metrics (``controlled``,
        ``pooled``), all rows (``within``), layers per configuration and comparison
        (``effects``, ``controlled_onset``), metrics per configuration and comparison
        (``bias_effects``), layers x groups per configuration (``group_gaps``).
    n_boot, n_permutations, ci, seed
        Bootstrap resamples, permutations, interval level (0.95: 95% intervals; the deprecated
        ``alpha=a`` means ``ci=1 - a``), seed of every draw.
    min_seeds_bootstrap : int
        From this many seeds on, intervals of correlations are BCa cluster bootstrap intervals;
        below, cluster jackknife t intervals (default 10).
    few_seeds : int
        Rows resting on fewer seeds are flagged ``few_seeds`` (default 5).
    recovery_only, random_pruning
        The prune part of the control members' method labels (``"none"``, ``"random"``).

    Returns
    -------
    Relations
        Every table (see :class:`Relations`). The noise floor and 0.2 onset are empty only when
        the family has a single dense seed, with a :class:`RelationWarning` saying so.
    """
    common = {"divergence": divergence, "bias": bias, "layers": layers}
    resampling = {"n_boot": n_boot, "n_permutations": n_permutations, "ci": ci, "seed": seed}
    corr = correlations(similarity_table, shift_table, **common, **resampling)
    _, found = _divergences(similarity_table, divergence)
    order = _layer_order(found, layers)
    try:
        floor = noise_floor(similarity_table, divergence=divergence, layers=order)
        on_rows, on_first = onset(
            similarity_table,
            divergence=divergence,
            layers=order,
            ci=ci,
            n_boot=n_boot,
            seed=seed,
        )
    except InsufficientDataError as exc:
        _warn(f"{exc} The noise floor and onset layer are left out.")
        floor, on_rows, on_first = [], [], {}
    thresholds = {"min_seeds_bootstrap": min_seeds_bootstrap, "few_seeds": few_seeds}
    controls = {"recovery_only": recovery_only, "random_pruning": random_pruning}
    gaps = group_gaps(
        similarity_table,
        divergence=divergence,
        reference=reference_group,
        layers=order,
        ci=ci,
        correction=correction,
        few_seeds=few_seeds,
    )
    controlled = controlled_correlations(
        similarity_table,
        shift_table,
        **{**common, "layers": order},
        strata=strata,
        covariates=covariates,
        correction=correction,
        **resampling,
        **thresholds,
    )
    pooled = pooled_correlations(
        similarity_table,
        shift_table,
        **{**common, "layers": order},
        correction=correction,
        **resampling,
        **thresholds,
    )
    within = (
        stratum_correlations(
            similarity_table,
            shift_table,
            **{**common, "layers": order},
            strata=strata,
            correction=correction,
            **resampling,
            **thresholds,
        )
        if strata
        else []
    )
    effects = drift_effects(
        similarity_table,
        divergence=divergence,
        layers=order,
        ci=ci,
        correction=correction,
        few_seeds=few_seeds,
        **controls,
    )
    b_effects = bias_effects(
        shift_table, bias=bias, ci=ci, correction=correction, few_seeds=few_seeds, **controls
    )
    c_rows, c_first = onset_tests(
        similarity_table,
        divergence=divergence,
        layers=order,
        ci=ci,
        correction=correction,
        few_seeds=few_seeds,
        **controls,
    )
    settings = {
        "headline": "controlled",
        "strata": [strata] if isinstance(strata, str) else list(strata or []),
        "covariates": [covariates] if isinstance(covariates, str) else list(covariates or []),
        "correction": correction,
        **resampling,
        **thresholds,
        **controls,
        "unit": "dense seed",
    }
    return Relations(
        corr,
        floor,
        on_rows,
        on_first,
        gaps,
        divergence,
        order,
        controlled=controlled,
        pooled=pooled,
        within=within,
        effects=effects,
        bias_effects=b_effects,
        controlled_onset=c_rows,
        controlled_onset_layer=c_first,
        settings=settings,
    )


__all__ = [
    "BIAS_METRICS",
    "KINDS",
    "LEGACY_LABEL",
    "Relations",
    "as_rows",
    "correlations",
    "group_gaps",
    "noise_floor",
    "onset",
    "parse_divergence",
    "relate",
]
