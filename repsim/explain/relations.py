"""Relate per-layer representation divergence to the bias compression causes.

Across a *family* of compressed models (methods x sparsities x seeds), every member ``i`` has,
per layer ``l``, a divergence from its dense parent, ``D_il`` (e.g. ``1 - CKA``), and one bias
figure per metric, ``B_i`` (CEV, SDE, a group's accuracy drop, the worst group's drop). This
module answers, per layer: how strongly does ``D_l`` track ``B`` (Spearman and Pearson
correlation, bootstrap CIs, permutation p-values, an OLS slope); where does compression first
move representations further than retraining with another seed does (the *onset layer*, against
the dense-vs-dense *noise floor*); and do minority samples drift further than majority ones
(group-conditional divergence gaps).

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
    second seed).
``layer``
    Layer name (or ``layer_a``/``layer_b`` as :func:`repsim.similarity.compare` writes them,
    which must then be equal). The network order is the order of first appearance unless
    ``layers=`` is given.
``measure``, ``value``
    The similarity measure and its value.
``group`` (optional)
    ``None`` (or missing) for all samples; a group name for group-conditional rows.

Shift table (one row per family member): ``method``, ``sparsity``, ``seed`` and one numeric
column per bias metric, e.g. ``cev``, ``sde``, ``worst_group_drop`` and ``acc_drop:<group>``
(the group's accuracy, dense minus compressed, so positive is worse).

Statistics
----------
* Pearson ``r = cov(x, y) / (sd(x) sd(y))``; Spearman ``rho`` = Pearson of the (average-tie)
  ranks (Spearman 1904). Both match :func:`scipy.stats.pearsonr` / :func:`scipy.stats.spearmanr`.
* Slope: ordinary least squares of bias on divergence, ``b = cov(x, y) / var(x)``
  (as :func:`scipy.stats.linregress`).
* Confidence intervals: percentile bootstrap (Efron & Tibshirani 1993, ch. 13) resampling
  family members with replacement, ``n_boot`` resamples from ``numpy.random.default_rng(seed)``;
  resamples where the statistic is undefined (constant x or y) are dropped and counted. The
  level is ``ci`` (default 0.95); the deprecated ``alpha=a`` still works and means
  ``ci=1 - a``. The statistics live in :mod:`repsim._core.stats`.
* p-values: two-sided permutation test of no association (Good 2005), permuting the bias values
  across members. With ``n! <= n_permutations`` every permutation is enumerated and the p-value
  is exact, ``#{pi : |r(x, y_pi)| >= |r(x, y)|} / n!``; otherwise ``n_permutations`` random
  permutations give ``(1 + #{|r_pi| >= |r|}) / (1 + n_permutations)`` (Phipson & Smyth 2010),
  never 0.
* Onset layer: per configuration ``(method, sparsity)`` and layer, the excess divergence
  ``E = mean_i D_i(compressed) - mean_j D_j(dense vs dense)``. A layer *exceeds the noise floor
  with confidence* when the lower bound of the one-sided ``ci`` percentile bootstrap
  interval of ``E`` (members and dense pairs resampled independently) is above 0. The onset
  layer is the first such layer in network order (``None`` when no layer exceeds it). This is
  the rule of "exceeds the seed-to-seed spread" used informally by Kornblith et al. (2019,
  Sec. 6) and Ding et al. (2021, "Grounding representation similarity") made into a test.
* Group gaps: per layer, member and group ``g`` the divergence ``D_ig`` computed on the group's
  samples only; the gap of ``g`` is ``mean_i (D_ig - D_i,ref)`` with ``ref`` the largest group
  (by ``n`` when rows carry it, else given as ``reference=``), with a bootstrap CI over members.
  The same gap on dense-vs-dense pairs is reported beside it as its noise floor.

Undefined values (too few members, constant inputs) are NaN with a
:class:`RelationWarning`, never 0.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from repsim._core.stats import (
    alpha_renamed_to_ci,
    bootstrap_mean,
    bootstrap_mean_difference,
    correlate,
)
from repsim.errors import (
    ConfigError,
    DataError,
    InsufficientDataError,
    RelationWarning,
    did_you_mean,
)

#: Bias metrics :func:`relate` knows by name (others are accepted if the shift table has them).
BIAS_METRICS = ("cev", "sde", "worst_group_drop", "acc_drop")
KINDS = ("compressed", "dense")


def _warn(message: str) -> None:
    warnings.warn(message, RelationWarning, stacklevel=3)


# --------------------------------------------------------------------------------------------
# tidy inputs


def as_rows(table: Any) -> list[dict[str, Any]]:
    """Rows of a tidy table: a sequence of dicts, or an object with ``to_records()``/``rows``."""
    if hasattr(table, "to_records") and callable(table.to_records):
        rows = table.to_records()
    elif hasattr(table, "rows"):
        rows = table.rows
    else:
        rows = table
    if isinstance(rows, Mapping) or not isinstance(rows, Iterable):
        raise DataError("a tidy table must be a sequence of dicts (one per row).")
    out = [dict(r) for r in rows]
    for r in out[:1]:
        if not isinstance(r, dict):
            raise DataError("a tidy table must be a sequence of dicts (one per row).")
    return out


def parse_divergence(divergence: str) -> tuple[str, bool]:
    """Parse a divergence name into its measure and whether it is one minus it.

    ``"1-cka"`` -> ``("cka", True)`` (one minus a similarity); ``"procrustes"`` ->
    ``("procrustes", False)`` (a distance used as is).
    """
    text = divergence.replace(" ", "")
    if text.startswith("1-"):
        return text[2:], True
    return text, False


def _layer_of(row: Mapping[str, Any]) -> str:
    if "layer" in row and row["layer"] is not None:
        return str(row["layer"])
    la, lb = row.get("layer_a"), row.get("layer_b")
    if la is None:
        raise DataError(f"similarity row without 'layer' (or 'layer_a'/'layer_b'): {dict(row)}")
    if lb is not None and lb != la:
        raise DataError(
            f"similarity row pairs different layers ({la!r} vs {lb!r}); relate() compares a "
            "layer with the same layer of the other model, pass same-layer rows only."
        )
    return str(la)


@dataclass(frozen=True)
class _Div:
    kind: str
    method: Any
    sparsity: Any
    seed: Any
    seed_b: Any
    layer: str
    group: Any
    value: float
    n: Any


def _divergences(sim: Any, divergence: str) -> tuple[list[_Div], list[str]]:
    measure, one_minus = parse_divergence(divergence)
    rows = as_rows(sim)
    if not rows:
        raise DataError("the similarity table is empty.")
    measures = sorted({str(r.get("measure")) for r in rows})
    if measure not in measures:
        raise ConfigError(
            f"divergence {divergence!r} needs measure {measure!r}, but the similarity table holds "
            f"{measures}.{did_you_mean(measure, measures)}"
        )
    out: list[_Div] = []
    order: list[str] = []
    for r in rows:
        if str(r.get("measure")) != measure:
            continue
        kind = r.get("kind")
        if kind not in KINDS:
            raise DataError(
                f"similarity row has kind={kind!r}; it must be 'compressed' (dense vs compressed) "
                f"or 'dense' (dense seed vs dense seed, the noise floor): {r}"
            )
        for key in ("seed",) + (("method", "sparsity") if kind == "compressed" else ()):
            if key not in r:
                raise DataError(f"similarity row of kind {kind!r} lacks column {key!r}: {r}")
        layer = _layer_of(r)
        if layer not in order:
            order.append(layer)
        v = float(r["value"]) if r.get("value") is not None else math.nan
        out.append(
            _Div(
                kind=kind,
                method=r.get("method") if kind == "compressed" else "dense",
                sparsity=r.get("sparsity") if kind == "compressed" else 0.0,
                seed=r.get("seed"),
                seed_b=r.get("seed_b"),
                layer=layer,
                group=r.get("group"),
                value=(1.0 - v) if one_minus else v,
                n=r.get("n"),
            )
        )
    return out, order


def _layer_order(found: list[str], layers: Sequence[str] | None) -> list[str]:
    if layers is None:
        return found
    for name in layers:
        if name not in found:
            raise ConfigError(
                f"layer {name!r} has no rows in the similarity table.{did_you_mean(name, found)}"
            )
    return list(layers)


# --------------------------------------------------------------------------------------------
# noise floor, onset, relations, gaps


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


def _config_key(d: _Div) -> tuple[Any, Any]:
    return (d.method, d.sparsity)


def _sorted_configs(keys: Iterable[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    return sorted(set(keys), key=lambda k: (str(k[0]), float(k[1]) if k[1] is not None else 0.0))


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


def _bias_columns(shift_rows: list[dict[str, Any]], bias: Any) -> list[str]:
    numeric = []
    for key in dict.fromkeys(k for r in shift_rows for k in r):
        if key in ("method", "sparsity", "seed"):
            continue
        vals = [r.get(key) for r in shift_rows]
        if all(
            isinstance(v, int | float | np.floating | np.integer)
            and not isinstance(v, bool)
            or v is None
            for v in vals
        ):
            numeric.append(key)
    if bias is None:
        chosen = [k for k in numeric if k in BIAS_METRICS or k.startswith("acc_drop:")]
        if not chosen:
            raise ConfigError(
                f"the shift table has no known bias column ({list(BIAS_METRICS)} or "
                f"'acc_drop:<group>'); its numeric columns are {numeric}. Pass bias=[...]."
            )
        return chosen
    names = [bias] if isinstance(bias, str) else list(bias)
    out: list[str] = []
    for name in names:
        if name == "acc_drop":
            per_group = [k for k in numeric if k.startswith("acc_drop:")]
            if not per_group:
                raise ConfigError(
                    "bias 'acc_drop' needs 'acc_drop:<group>' columns in the "
                    f"shift table; it has {numeric}."
                )
            out += per_group
        elif name in numeric:
            out.append(name)
        else:
            raise ConfigError(
                f"bias metric {name!r} is not a numeric column of the shift table; it has "
                f"{numeric}.{did_you_mean(name, numeric)}"
            )
    return out


def _member_key(method: Any, sparsity: Any, seed: Any) -> tuple[str, float, str]:
    return (str(method), float(sparsity), str(seed))


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
    """Per layer and bias metric: correlation of member divergence with member bias.

    Members are matched on ``(method, sparsity, seed)``; members missing from either table are
    left out. Each row: ``layer``, ``bias``, the output of :func:`correlate`, the mean member
    divergence ``divergence_mean`` and the layer's noise floor ``noise_floor`` (mean
    dense-vs-dense divergence, NaN without dense pairs).
    """
    divs, found = _divergences(similarity, divergence)
    order = _layer_order(found, layers)
    srows = as_rows(shifts)
    if not srows:
        raise DataError("the shift table is empty.")
    for r in srows:
        for key in ("method", "sparsity", "seed"):
            if key not in r:
                raise DataError(f"shift row lacks column {key!r}: {r}")
    metrics = _bias_columns(srows, bias)
    by_member = {_member_key(r["method"], r["sparsity"], r["seed"]): r for r in srows}
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
            out.append(
                {
                    "layer": layer,
                    "bias": metric,
                    "divergence": divergence,
                    **stats,
                    "divergence_mean": float(np.nanmean(x)) if np.isfinite(x).any() else math.nan,
                    "noise_floor": float(np.mean(floor)) if floor else math.nan,
                }
            )
    return out


@alpha_renamed_to_ci
def group_gaps(
    similarity: Any,
    *,
    divergence: str = "1-cka",
    reference: Any = None,
    layers: Sequence[str] | None = None,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Group-conditional divergence gaps per layer.

    Group-conditional divergence gaps per layer: does a group drift further than the
    reference (majority) group?

    For compressed members ``i`` and each group ``g``: ``gap_g = mean_i (D_ig - D_i,ref)``, with
    a percentile bootstrap CI over members (:func:`repsim._core.stats.bootstrap_mean`, level
    ``ci``); ``noise_gap`` is the same mean over dense-vs-dense
    pairs. The reference is ``reference`` or, by default, the group with the largest ``n``
    (rows must then carry ``n``).

    Returns
    -------
    list of dict
        ``layer``, ``group``, ``reference``, ``n_members``, ``divergence`` (mean ``D_ig``),
        ``reference_divergence``, ``gap``, ``gap_low``, ``gap_high``, ``noise_gap``. Empty when
        the table has no group-conditional rows.
    """
    divs, found = _divergences(similarity, divergence)
    order = _layer_order(found, layers)
    grouped = [d for d in divs if d.group is not None]
    if not grouped:
        return []
    groups = list(dict.fromkeys(d.group for d in grouped))
    if reference is None:
        sizes: dict[Any, float] = {}
        for d in grouped:
            if d.n is not None:
                sizes[d.group] = max(sizes.get(d.group, 0), float(d.n))
        if len(sizes) != len(groups):
            raise DataError(
                "group rows need an 'n' column to pick the majority group; "
                "pass reference=<group name>."
            )
        reference = max(groups, key=lambda g: sizes[g])
    elif reference not in groups:
        raise ConfigError(f"reference group {reference!r} is not among {groups}.")

    def pair_key(d: _Div) -> tuple[Any, ...]:
        return (d.kind, d.method, d.sparsity, d.seed, d.seed_b, d.layer)

    table = {(pair_key(d), d.group): d.value for d in grouped}
    out = []
    for layer in order:
        for g in groups:
            if g == reference:
                continue
            gaps: dict[str, list[float]] = {"compressed": [], "dense": []}
            dg: list[float] = []
            dr: list[float] = []
            for (pk, grp), v in table.items():
                if grp != g or pk[-1] != layer or (pk, reference) not in table:
                    continue
                ref = table[(pk, reference)]
                gaps[pk[0]].append(v - ref)
                if pk[0] == "compressed":
                    dg.append(v)
                    dr.append(ref)
            comp = np.array(gaps["compressed"], dtype=float)
            comp = comp[np.isfinite(comp)]
            lo, hi = bootstrap_mean(comp, n_boot=n_boot, ci=ci, seed=seed)
            noise = np.array(gaps["dense"], dtype=float)
            out.append(
                {
                    "layer": layer,
                    "group": g,
                    "reference": reference,
                    "n_members": int(comp.size),
                    "divergence": float(np.mean(dg)) if dg else math.nan,
                    "reference_divergence": float(np.mean(dr)) if dr else math.nan,
                    "gap": float(comp.mean()) if comp.size else math.nan,
                    "gap_low": lo,
                    "gap_high": hi,
                    "noise_gap": float(noise.mean()) if noise.size else math.nan,
                }
            )
    return out


@dataclass
class Relations:
    """What :func:`relate` returns: every table of the divergence-bias analysis.

    Attributes
    ----------
    correlations : list of dict
        Per layer and bias metric (see :func:`correlations`).
    noise_floor : list of dict
        Per layer dense-vs-dense divergence (see :func:`noise_floor`); empty without dense pairs.
    onset : list of dict
        Per configuration and layer, excess over the floor (see :func:`onset`).
    onset_layer : dict
        ``"method@sparsity"`` / ``"all"`` -> first layer exceeding the floor, or ``None``.
    group_gaps : list of dict
        Per layer and group (see :func:`group_gaps`); empty without group rows.
    divergence : str
        The divergence used, e.g. ``"1-cka"``.
    layers : list of str
        Layers in network order.
    """

    correlations: list[dict[str, Any]]
    noise_floor: list[dict[str, Any]]
    onset: list[dict[str, Any]]
    onset_layer: dict[str, str | None]
    group_gaps: list[dict[str, Any]]
    divergence: str
    layers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every table."""
        return {
            "divergence": self.divergence,
            "layers": self.layers,
            "correlations": self.correlations,
            "noise_floor": self.noise_floor,
            "onset": self.onset,
            "onset_layer": self.onset_layer,
            "group_gaps": self.group_gaps,
        }

    def best(self, bias: str, statistic: str = "spearman") -> dict[str, Any] | None:
        """The layer whose divergence correlates most strongly with ``bias``.

        The layer whose divergence correlates most strongly (by ``|statistic|``) with
        ``bias``; ``None`` when every value is NaN.
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
    n_boot: int = 2000,
    n_permutations: int = 10000,
    ci: float = 0.95,
    seed: int = 0,
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
    n_boot, n_permutations, ci, seed
        Bootstrap resamples, permutations, interval level (0.95: 95% intervals; the deprecated
        ``alpha=a`` means ``ci=1 - a``), seed of every draw.

    Returns
    -------
    Relations
        Correlations, noise floor, onset rows and layers, group gaps. The noise floor is
        empty (and the onset undefined) only when the family has a single dense seed, with a
        :class:`RelationWarning` saying so.
    """
    corr = correlations(
        similarity_table,
        shift_table,
        divergence=divergence,
        bias=bias,
        layers=layers,
        n_boot=n_boot,
        n_permutations=n_permutations,
        ci=ci,
        seed=seed,
    )
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
    gaps = group_gaps(
        similarity_table,
        divergence=divergence,
        reference=reference_group,
        layers=order,
        n_boot=n_boot,
        ci=ci,
        seed=seed,
    )
    return Relations(corr, floor, on_rows, on_first, gaps, divergence, order)


__all__ = [
    "BIAS_METRICS",
    "Relations",
    "as_rows",
    "correlations",
    "group_gaps",
    "noise_floor",
    "onset",
    "parse_divergence",
    "relate",
]
