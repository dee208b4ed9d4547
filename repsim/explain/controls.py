"""Effects beside their controls: drift and bias beyond recovery, random pruning, seed noise.

A compressed configuration ``c = (method, sparsity)`` changes a dense seed's representations
and errors, but so do the steps around pruning. Each effect here is a per-layer (drift) or
per-metric (bias) difference from a control, over the dense seeds:

``"recovery"``
    The *recovery-only control*: the same dense seed put through the same recovery recipe at
    sparsity 0 (method label ``"none+<recovery>"``, e.g. ``"none+ft"`` for ``"magnitude+ft"``,
    ``"none+kd"`` for ``"magnitude+kd"``; sparsity ``0.0``). Paired per seed:
    ``d_s = D(c, s) - D(none+<recovery>, s)``; mean, Student t interval and test over seeds.
``"random"``
    The *random-pruning control* at the same sparsity and recovery (``"random+<recovery>"``):
    ``d_s = D(c, s) - D(random+<recovery>@sparsity, s)``, paired per seed as above.
``"dense_floor"``
    The dense-vs-dense floor: similarity rows (and shift rows) of ``kind="dense"``, dense seed
    ``seed_b`` against dense seed ``seed``. Not paired (a pair involves two seeds):
    ``mean_s D(c, s) - mean_pairs D(dense pair)``, with the delete-one-seed jackknife standard
    error (a seed left out takes its member and every pair it is in) and ``G - 1`` df.

p-values are two-sided; ``p_adjusted`` is Holm (default) or BH across the layers of one
configuration and comparison (drift) or across the bias metrics of one configuration and
comparison (bias). Every row has ``n_seeds`` and ``few_seeds`` (fewer than 5).

:func:`onset_tests` is the onset layer against the recovery-only control: per configuration,
the one-sided paired t test of ``d_s > 0`` at each layer, Holm-adjusted across layers; the
onset is the first layer (network order) whose adjusted p is below ``1 - ci``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from repsim._core.stats import (
    CORRECTIONS,
    FEW_SEEDS,
    adjust_pvalues,
    jackknife_interval,
    t_test,
    tail_probability,
)
from repsim.errors import ConfigError
from repsim.explain._tables import (
    RANDOM_PRUNING,
    RECOVERY_ONLY,
    _bias_columns,
    _divergences,
    _layer_order,
    _warn,
    config_label,
    shift_tables,
    split_method,
)

COMPARISONS = ("recovery", "random", "dense_floor")


def _check(correction: str) -> None:
    if correction not in CORRECTIONS:
        raise ConfigError(f"correction must be one of {CORRECTIONS}, got {correction!r}.")


def _sorted_configs(keys: Any) -> list[tuple[Any, Any]]:
    return sorted(set(keys), key=lambda k: (str(k[0]), float(k[1]) if k[1] is not None else 0.0))


def controls_of(
    config: tuple[Any, Any],
    configs: Sequence[tuple[Any, Any]],
    *,
    recovery_only: str = RECOVERY_ONLY,
    random_pruning: str = RANDOM_PRUNING,
) -> dict[str, tuple[Any, Any] | None]:
    """The recovery-only and random-pruning control configurations of ``config``.

    ``{"recovery": (method, sparsity) or None, "random": ... or None}``: the recovery-only
    control ``"<recovery_only>+<recovery>"`` (any sparsity, 0 by convention) for a method
    ``"<prune>+<recovery>"`` whose prune is not itself a control; the random control
    ``"<random_pruning>+<recovery>"`` at the same sparsity for a prune that is neither.
    """
    method, sparsity = config
    prune, recovery = split_method(method)
    out: dict[str, tuple[Any, Any] | None] = {"recovery": None, "random": None}
    if recovery is not None and prune != recovery_only:
        want = f"{recovery_only}+{recovery}"
        match = [c for c in configs if str(c[0]) == want]
        out["recovery"] = match[0] if match else None
    if prune not in (recovery_only, random_pruning):
        want = f"{random_pruning}+{recovery}" if recovery is not None else random_pruning
        match = [
            c for c in configs if str(c[0]) == want and math.isclose(float(c[1]), float(sparsity))
        ]
        out["random"] = match[0] if match else None
    return out


def floor_effect(
    values: Mapping[Any, float],
    pairs: Sequence[tuple[Any, Any, float]],
    *,
    ci: float = 0.95,
) -> dict[str, Any]:
    """``mean_s values[s] - mean_pairs floor``, with a delete-one-seed jackknife interval.

    ``values``: seed -> a configuration's value; ``pairs``: ``(seed, seed_b, value)`` of
    dense-vs-dense rows. The jackknife leaves out each seed of either table in turn (its
    value and every pair containing it); interval and two-sided p from
    :func:`repsim._core.stats.jackknife_interval` with ``G - 1`` df.

    Returns
    -------
    dict
        ``value`` (mean of ``values``), ``control_value`` (mean floor), ``effect``, ``low``,
        ``high``, ``se``, ``df``, ``p``, ``n_seeds`` (seeds of ``values``), ``n_pairs``.
    """
    v = {s: float(x) for s, x in values.items() if np.isfinite(x)}
    f = [(a, b, float(x)) for a, b, x in pairs if np.isfinite(x)]
    mv = float(np.mean(list(v.values()))) if v else math.nan
    mf = float(np.mean([x for _, _, x in f])) if f else math.nan
    est = mv - mf
    seeds = list(dict.fromkeys([*v, *(a for a, _, _ in f), *(b for _, b, _ in f)]))
    reps = []
    for g in seeds:
        vv = [x for s, x in v.items() if s != g]
        ff = [x for a, b, x in f if g not in (a, b)]
        reps.append(float(np.mean(vv)) - float(np.mean(ff)) if vv and ff else math.nan)
    res = (
        jackknife_interval(est, reps, ci=ci)
        if np.isfinite(est)
        else {"low": math.nan, "high": math.nan, "se": math.nan, "df": 0, "p": math.nan}
    )
    return {
        "value": mv,
        "control_value": mf,
        "effect": est,
        "low": res["low"],
        "high": res["high"],
        "se": res["se"],
        "df": res["df"],
        "p": res["p"],
        "n_seeds": len(v),
        "n_pairs": len(f),
        "interval": "seed_jackknife_t",
    }


def paired_effect(
    values: Mapping[Any, float],
    control: Mapping[Any, float],
    *,
    ci: float = 0.95,
    alternative: str = "two-sided",
) -> dict[str, Any]:
    """Mean over shared seeds of ``values[s] - control[s]``, with a Student t interval and test.

    Returns
    -------
    dict
        ``value``, ``control_value`` (means over the shared seeds), ``effect``, ``low``,
        ``high``, ``se``, ``df``, ``p``, ``n_seeds``, ``interval`` (``"t"``).
    """
    seeds = [
        s for s in values if s in control and np.isfinite(values[s]) and np.isfinite(control[s])
    ]
    a = np.array([values[s] for s in seeds], dtype=float)
    b = np.array([control[s] for s in seeds], dtype=float)
    res = t_test(a - b, ci=ci, alternative=alternative)
    return {
        "value": float(a.mean()) if a.size else math.nan,
        "control_value": float(b.mean()) if b.size else math.nan,
        "effect": res["mean"],
        "low": res["low"],
        "high": res["high"],
        "se": res["se"],
        "df": res["df"],
        "p": res["p"],
        "n_seeds": len(seeds),
        "interval": "t",
    }


def _comparisons(
    cfg: tuple[Any, Any],
    configs: Sequence[tuple[Any, Any]],
    has_floor: bool,
    recovery_only: str,
    random_pruning: str,
) -> list[tuple[str, tuple[Any, Any] | None]]:
    ctrl = controls_of(cfg, configs, recovery_only=recovery_only, random_pruning=random_pruning)
    out: list[tuple[str, tuple[Any, Any] | None]] = []
    for name in ("recovery", "random"):
        if ctrl[name] is not None:
            out.append((name, ctrl[name]))
    if has_floor:
        out.append(("dense_floor", None))
    return out


def _adjust(rows: list[dict[str, Any]], correction: str) -> None:
    adj = adjust_pvalues([r["p"] for r in rows], correction) if rows else []
    for r, a in zip(rows, adj, strict=True):
        r["p_adjusted"] = float(a)
        r["correction"] = correction


def drift_effects(
    similarity: Any,
    *,
    divergence: str = "1-cka",
    layers: Sequence[str] | None = None,
    ci: float = 0.95,
    correction: str = "holm",
    recovery_only: str = RECOVERY_ONLY,
    random_pruning: str = RANDOM_PRUNING,
    few_seeds: int = FEW_SEEDS,
) -> list[dict[str, Any]]:
    """Per configuration, comparison and layer: drift beyond a control (module docstring).

    Parameters
    ----------
    similarity
        Tidy similarity table with ``kind="compressed"`` members (the controls are members
        whose method is ``"none+<recovery>"`` or ``"random+<recovery>"``) and ``kind="dense"``
        pairs. Rows with a ``group`` are ignored.
    divergence, layers
        As :func:`repsim.explain.relate`.
    ci, correction
        Interval level; correction across the layers of one configuration and comparison.
    recovery_only, random_pruning
        The prune labels of the two controls.
    few_seeds
        Rows resting on fewer seeds are flagged ``few_seeds``.

    Returns
    -------
    list of dict
        ``method``, ``sparsity``, ``layer``, ``comparison`` (``"recovery"``, ``"random"``,
        ``"dense_floor"``), ``control`` (``"method@sparsity"`` or ``"dense"``),
        ``divergence`` (the measure), ``value`` (mean divergence of the configuration),
        ``control_value``, ``effect`` (mean difference), ``low``, ``high``, ``se``, ``df``,
        ``ci``, ``interval``, ``p``, ``p_adjusted``, ``correction``, ``n_seeds``,
        ``few_seeds`` (and ``n_pairs`` for the floor).
    """
    _check(correction)
    divs, found = _divergences(similarity, divergence)
    order = _layer_order(found, layers)
    member: dict[tuple[Any, Any, str], dict[Any, float]] = {}
    floor: dict[str, list[tuple[Any, Any, float]]] = {}
    for d in divs:
        if d.group is not None:
            continue
        if d.kind == "compressed":
            member.setdefault((d.method, d.sparsity, d.layer), {})[d.seed] = d.value
        else:
            floor.setdefault(d.layer, []).append((d.seed, d.seed_b, d.value))
    configs = _sorted_configs((m, s) for m, s, _ in member)
    rows: list[dict[str, Any]] = []
    for cfg in configs:
        for name, ctrl in _comparisons(cfg, configs, bool(floor), recovery_only, random_pruning):
            family = []
            for layer in order:
                values = member.get((cfg[0], cfg[1], layer), {})
                if name == "dense_floor":
                    res = floor_effect(values, floor.get(layer, []), ci=ci)
                else:
                    assert ctrl is not None
                    res = paired_effect(values, member.get((ctrl[0], ctrl[1], layer), {}), ci=ci)
                family.append(
                    {
                        "method": cfg[0],
                        "sparsity": cfg[1],
                        "layer": layer,
                        "comparison": name,
                        "control": "dense" if ctrl is None else config_label(*ctrl),
                        "divergence": divergence,
                        **res,
                        "ci": ci,
                        "few_seeds": res["n_seeds"] < few_seeds,
                    }
                )
            _adjust(family, correction)
            rows += family
    return rows


def bias_effects(
    shifts: Any,
    *,
    bias: str | Sequence[str] | None = None,
    ci: float = 0.95,
    correction: str = "holm",
    recovery_only: str = RECOVERY_ONLY,
    random_pruning: str = RANDOM_PRUNING,
    few_seeds: int = FEW_SEEDS,
) -> list[dict[str, Any]]:
    """Per configuration, comparison and bias metric: bias beyond a control.

    The same comparisons as :func:`drift_effects` on the shift table: CEV, SDE, the worst
    group's drop and every ``acc_drop:<group>`` (or the columns in ``bias``) of a
    configuration against the recovery-only control (paired per seed), the random-pruning
    control (paired) and the dense-vs-dense floor (shift rows of ``kind="dense"``: dense seed
    ``seed_b`` scored as if compressed against dense seed ``seed``; jackknife over seeds).
    ``p_adjusted`` across the metrics of one configuration and comparison.

    Returns
    -------
    list of dict
        ``method``, ``sparsity``, ``metric``, ``comparison``, ``control``, ``value``,
        ``control_value``, ``effect``, ``low``, ``high``, ``se``, ``df``, ``ci``,
        ``interval``, ``p``, ``p_adjusted``, ``correction``, ``n_seeds``, ``few_seeds``.
    """
    _check(correction)
    members, dense = shift_tables(shifts)
    metrics = _bias_columns(list(members.values()), bias)
    configs = _sorted_configs((k[0], k[1]) for k in members)
    by_cfg: dict[tuple[Any, Any], dict[str, dict[str, Any]]] = {}
    for (m, s, seed), row in members.items():
        by_cfg.setdefault((m, s), {})[seed] = row
    rows: list[dict[str, Any]] = []

    def num(v: Any) -> float:
        return math.nan if v is None else float(v)

    for cfg in configs:
        mine = by_cfg[cfg]
        for name, ctrl in _comparisons(cfg, configs, bool(dense), recovery_only, random_pruning):
            family = []
            for metric in metrics:
                values = {s: num(r.get(metric)) for s, r in mine.items()}
                if name == "dense_floor":
                    pairs = [
                        (str(r["seed"]), str(r["seed_b"]), num(r.get(metric)))
                        for r in dense
                        if r.get(metric) is not None
                    ]
                    if not pairs:
                        continue
                    res = floor_effect(values, pairs, ci=ci)
                else:
                    assert ctrl is not None
                    other = {s: num(r.get(metric)) for s, r in by_cfg[ctrl].items()}
                    res = paired_effect(values, other, ci=ci)
                family.append(
                    {
                        "method": cfg[0],
                        "sparsity": cfg[1],
                        "metric": metric,
                        "comparison": name,
                        "control": "dense" if ctrl is None else config_label(*ctrl),
                        **res,
                        "ci": ci,
                        "few_seeds": res["n_seeds"] < few_seeds,
                    }
                )
            _adjust(family, correction)
            rows += family
    return rows


def onset_tests(
    similarity: Any,
    *,
    divergence: str = "1-cka",
    layers: Sequence[str] | None = None,
    ci: float = 0.95,
    correction: str = "holm",
    recovery_only: str = RECOVERY_ONLY,
    random_pruning: str = RANDOM_PRUNING,
    few_seeds: int = FEW_SEEDS,
) -> tuple[list[dict[str, Any]], dict[str, str | None]]:
    """The onset layer of each configuration, tested against its recovery-only control.

    Per configuration with a recovery-only control (the controls themselves excluded) and per
    layer, the one-sided paired t test over seeds of ``d_s = D(c, s) - D(none+<recovery>, s)
    > 0``; p-values adjusted across the configuration's layers (``correction``, Holm by
    default); a layer is ``significant`` when its adjusted p is below ``1 - ci``; the onset is
    the first significant layer in network order, ``None`` when none is.

    Returns
    -------
    (rows, onset_layer)
        ``rows``: ``method``, ``sparsity``, ``layer``, ``control``, ``value``,
        ``control_value``, ``excess`` (mean ``d``), ``low``, ``high`` (two-sided t interval),
        ``se``, ``df``, ``p`` (one-sided), ``p_adjusted``, ``correction``, ``significant``,
        ``n_seeds``, ``few_seeds``. ``onset_layer``: ``"method@sparsity"`` -> layer or None.
        Both empty when no configuration has a recovery-only control.
    """
    _check(correction)
    divs, found = _divergences(similarity, divergence)
    order = _layer_order(found, layers)
    member: dict[tuple[Any, Any, str], dict[Any, float]] = {}
    for d in divs:
        if d.group is None and d.kind == "compressed":
            member.setdefault((d.method, d.sparsity, d.layer), {})[d.seed] = d.value
    configs = _sorted_configs((m, s) for m, s, _ in member)
    level = tail_probability(ci)
    rows: list[dict[str, Any]] = []
    first: dict[str, str | None] = {}
    for cfg in configs:
        ctrl = controls_of(cfg, configs, recovery_only=recovery_only, random_pruning=random_pruning)
        control = ctrl["recovery"]
        if control is None:
            continue
        family = []
        for layer in order:
            res = paired_effect(
                member.get((cfg[0], cfg[1], layer), {}),
                member.get((control[0], control[1], layer), {}),
                ci=ci,
                alternative="greater",
            )
            family.append(
                {
                    "method": cfg[0],
                    "sparsity": cfg[1],
                    "layer": layer,
                    "control": config_label(*control),
                    "value": res["value"],
                    "control_value": res["control_value"],
                    "excess": res["effect"],
                    "low": res["low"],
                    "high": res["high"],
                    "se": res["se"],
                    "df": res["df"],
                    "p": res["p"],
                    "ci": ci,
                    "n_seeds": res["n_seeds"],
                    "few_seeds": res["n_seeds"] < few_seeds,
                }
            )
        _adjust(family, correction)
        label = config_label(*cfg)
        first[label] = None
        for r in family:
            r["significant"] = bool(np.isfinite(r["p_adjusted"]) and r["p_adjusted"] < level)
            if r["significant"] and first[label] is None:
                first[label] = r["layer"]
        rows += family
    if not rows and configs:
        _warn(
            "no configuration has a recovery-only control (method 'none+<recovery>' at "
            "sparsity 0): the onset layer cannot be told from what the recovery alone does."
        )
    return rows, first


__all__ = [
    "COMPARISONS",
    "RANDOM_PRUNING",
    "RECOVERY_ONLY",
    "bias_effects",
    "controls_of",
    "drift_effects",
    "floor_effect",
    "onset_tests",
    "paired_effect",
]
