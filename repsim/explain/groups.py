"""Group-conditional divergence gaps: how much further a group drifts than the reference.

Per compressed member ``i`` (configuration ``c``, dense seed ``s``), layer and group ``g``,
``D_ig`` is the divergence computed on group ``g``'s samples only. The gap of ``g`` is
``D_ig - D_i,ref`` (``ref``: the largest group unless given). Per configuration, and for all
configurations together (``method="all"``: per seed, the mean gap over its members), the gap
is the mean over seeds with a Student t interval and two-sided test over seeds (the seed is the
unit of replication); ``p_adjusted`` corrects across layers x groups within a configuration.
Beside it, the same gap between dense seeds (``noise_gap``, from ``kind="dense"`` rows) and the
gap beyond it, ``gap - noise_gap``, with a delete-one-seed jackknife interval
(:func:`repsim.explain.controls.floor_effect`).

Group size. A biased estimator (linear CKA with the biased HSIC, SVCCA, ...) moves with the
number of samples, so a group of 50 and one of 500 differ even when drawn from one
distribution. Group rows should be computed on equal sample sizes:
:func:`repsim.similarity.groups.group_similarity` subsamples every group to the smallest
group's size (``size_matching="subsample"``, its default) and its rows say so. When group rows
of different sizes carry no ``size_matching="subsample"``, :func:`group_gaps` warns that the
gaps partly measure group size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from repsim._core.stats import (
    CORRECTIONS,
    FEW_SEEDS,
    adjust_pvalues,
    alpha_renamed_to_ci,
    t_test,
)
from repsim.errors import ConfigError, DataError
from repsim.explain._tables import _divergences, _layer_order, _warn
from repsim.explain.controls import _sorted_configs, floor_effect

#: ``size_matching`` values of group rows computed on equal sample sizes.
SIZE_MATCHED = ("subsample",)


def _sizes_fair(grouped: Sequence[Any]) -> bool:
    """Whether every group row was computed on the same number of samples."""
    if all(d.size_matching in SIZE_MATCHED for d in grouped):
        return True
    used = {float(d.n_used if d.n_used is not None else d.n) for d in grouped if d.n is not None}
    return len(used) <= 1


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
    correction: str = "holm",
    few_seeds: int = FEW_SEEDS,
) -> list[dict[str, Any]]:
    """Group-conditional divergence gaps per layer, group and configuration, over seeds.

    Parameters
    ----------
    similarity
        Tidy similarity table; rows with a ``group`` (and ``n``, the group's size; ``n_used``
        and ``size_matching`` when :func:`repsim.similarity.groups.group_similarity` made them).
    divergence, layers
        As :func:`repsim.explain.relate`.
    reference : optional
        Reference group; default the group with the largest ``n``.
    n_boot, seed
        Unused since 0.3 (gap intervals are t intervals over seeds); kept so old calls work.
    ci, correction
        Interval level; correction across layers x groups within a configuration.
    few_seeds
        Rows resting on fewer seeds are flagged ``few_seeds``.

    Returns
    -------
    list of dict
        Per layer, group (not the reference) and configuration (``"all"`` first):
        ``layer``, ``group``, ``reference``, ``method``, ``sparsity``, ``n_members``,
        ``n_seeds``, ``few_seeds``, ``divergence`` (mean ``D_ig``), ``reference_divergence``,
        ``gap``, ``gap_low``, ``gap_high``, ``se``, ``df``, ``ci``, ``interval``, ``p``,
        ``p_adjusted``, ``correction``, ``noise_gap``, ``n_noise_pairs``, ``gap_beyond_noise``,
        ``gap_beyond_noise_low``, ``gap_beyond_noise_high``, ``gap_beyond_noise_p``,
        ``size_matched``. Empty when the table has no group-conditional rows.
    """
    del n_boot, seed
    if correction not in CORRECTIONS:
        raise ConfigError(f"correction must be one of {CORRECTIONS}, got {correction!r}.")
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
    fair = _sizes_fair(grouped)
    if not fair:
        _warn(
            "group-conditional values were computed on groups of different sizes without size "
            "matching; a biased measure (CKA, SVCCA) moves with the number of samples, so these "
            "gaps partly measure group size. Compute group rows with "
            "repsim.similarity.groups.group_similarity (size-matched by default)."
        )
    comp: dict[tuple[Any, ...], float] = {}
    dense: dict[tuple[Any, ...], float] = {}
    for d in grouped:
        if d.kind == "compressed":
            comp[(d.method, d.sparsity, d.seed, d.layer, d.group)] = d.value
        else:
            dense[(d.seed, d.seed_b, d.layer, d.group)] = d.value
    comp_keys = list(dict.fromkeys(k[:3] for k in comp))
    configs = _sorted_configs((m, s) for m, s, _ in comp_keys)
    rows_by_cfg: dict[Any, list[dict[str, Any]]] = {"all": [], **{c: [] for c in configs}}
    for layer in order:
        for g in groups:
            if g == reference:
                continue
            per: dict[tuple[Any, Any], dict[Any, tuple[float, float]]] = {}
            for m, s, sd in comp_keys:
                a = comp.get((m, s, sd, layer, g))
                b = comp.get((m, s, sd, layer, reference))
                if a is None or b is None or not (np.isfinite(a) and np.isfinite(b)):
                    continue
                per.setdefault((m, s), {})[sd] = (a, b)
            noise = []
            for (sa, sb, lay, grp), v in dense.items():
                ref = dense.get((sa, sb, lay, reference))
                if lay == layer and grp == g and ref is not None and np.isfinite(v - ref):
                    noise.append((sa, sb, v - ref))
            # "all": per seed the mean gap over its members
            seeds_all: dict[Any, list[tuple[float, float]]] = {}
            for by_seed in per.values():
                for sd, ab in by_seed.items():
                    seeds_all.setdefault(sd, []).append(ab)
            cells: list[tuple[Any, dict[Any, tuple[float, float]], int]] = [
                (
                    "all",
                    {
                        sd: (float(np.mean([a for a, _ in v])), float(np.mean([b for _, b in v])))
                        for sd, v in seeds_all.items()
                    },
                    sum(len(v) for v in seeds_all.values()),
                )
            ]
            cells += [(c, per.get(c, {}), len(per.get(c, {}))) for c in configs]
            for cfg, by_seed, n_members in cells:
                gaps = {sd: a - b for sd, (a, b) in by_seed.items()}
                res = t_test(list(gaps.values()), ci=ci)
                beyond = floor_effect(gaps, noise, ci=ci) if noise else None
                n_seeds = len(gaps)
                rows_by_cfg[cfg].append(
                    {
                        "layer": layer,
                        "group": g,
                        "reference": reference,
                        "method": "all" if cfg == "all" else cfg[0],
                        "sparsity": None if cfg == "all" else cfg[1],
                        "n_members": n_members,
                        "n_seeds": n_seeds,
                        "few_seeds": n_seeds < few_seeds,
                        "divergence": float(np.mean([a for a, _ in by_seed.values()]))
                        if by_seed
                        else math.nan,
                        "reference_divergence": float(np.mean([b for _, b in by_seed.values()]))
                        if by_seed
                        else math.nan,
                        "gap": res["mean"],
                        "gap_low": res["low"],
                        "gap_high": res["high"],
                        "se": res["se"],
                        "df": res["df"],
                        "ci": ci,
                        "interval": "t",
                        "p": res["p"],
                        "noise_gap": float(np.mean([v for _, _, v in noise]))
                        if noise
                        else math.nan,
                        "n_noise_pairs": len(noise),
                        "gap_beyond_noise": beyond["effect"] if beyond else math.nan,
                        "gap_beyond_noise_low": beyond["low"] if beyond else math.nan,
                        "gap_beyond_noise_high": beyond["high"] if beyond else math.nan,
                        "gap_beyond_noise_p": beyond["p"] if beyond else math.nan,
                        "size_matched": fair,
                    }
                )
    out: list[dict[str, Any]] = []
    for family in rows_by_cfg.values():
        adj = adjust_pvalues([r["p"] for r in family], correction) if family else []
        for r, a in zip(family, adj, strict=True):
            r["p_adjusted"] = float(a)
            r["correction"] = correction
        out += family
    order_index = {layer: i for i, layer in enumerate(order)}
    out.sort(key=lambda r: order_index[r["layer"]])  # stable: per layer, "all" first
    return out


__all__ = ["SIZE_MATCHED", "group_gaps"]
