"""The first screen of a study report: what holds once sparsity is controlled for.

:func:`what_holds` turns the controlled tables of :meth:`repsim.explain.Relations.to_dict`
(``controlled``, ``effects``, ``bias_effects``, ``controlled_onset_layer``) into a few plain
sentences and two small tables, negative results stated as plainly as positive ones, every
number with the seeds it rests on. :func:`fairness_floor_summary` and :func:`bias_beside_floor`
put CEV, SDE and the group-gap metrics beside their dense-vs-dense floor.

Results keys read (all optional): ``relations``, ``alpha``, ``n_classes``, ``fairness_floor``,
``configs``, ``dense``, ``seeds``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from repsim.report import fmt

FEW_SEEDS = 5


def _alpha(results: Mapping[str, Any]) -> float:
    return float(results.get("alpha", 0.05))


def _few(results: Mapping[str, Any]) -> int:
    rel = results.get("relations") or {}
    return int((rel.get("settings") or {}).get("few_seeds", FEW_SEEDS))


def is_binary(results: Mapping[str, Any]) -> bool:
    """True when ``results["n_classes"] == 2``."""
    n = results.get("n_classes")
    return fmt.finite(n) and int(n) == 2


def metric_order(metrics: Sequence[str], binary: bool) -> list[str]:
    """Bias metrics in reading order: CEV, SDE, worst group, per group; group gaps first if binary."""
    metrics = list(dict.fromkeys(metrics))
    gaps = [m for m in metrics if m == "worst_group_drop"] + sorted(
        m for m in metrics if m.startswith("acc_drop:")
    )
    rates = [m for m in ("cev", "sde") if m in metrics]
    rest = [m for m in metrics if m not in gaps and m not in rates]
    return gaps + rates + rest if binary else rates + gaps + rest


def binary_note() -> str:
    """The sentence every binary-task report carries."""
    return (
        "Binary task (2 classes): one class's false positives are the other's false negatives, "
        "so CEV = SDE²/2 and the two carry one number. The report leads with the group-gap "
        "metrics (worst-group accuracy drop, per-group accuracy drop) instead."
    )


def _analysis_name(rows: Sequence[Mapping[str, Any]]) -> str:
    r = rows[0]
    strata = list(r.get("strata") or [])
    cov = list(r.get("covariates") or [])
    if set(strata) == {"method", "sparsity"}:
        name = "within-configuration Spearman"
    elif strata:
        name = "Spearman within " + " x ".join(strata)
    else:
        name = "Spearman"
    if cov:
        name += " given " + ", ".join(cov)
    return name


def association_sentences(results: Mapping[str, Any]) -> list[str]:
    """Does a layer's drift predict bias beyond sparsity? (the ``controlled`` table)."""
    rel = results.get("relations") or {}
    rows = list(rel.get("controlled") or [])
    alpha = _alpha(results)
    few = _few(results)
    if not rows:
        return [
            "These results hold no controlled (within-configuration) analysis (older "
            "results); the pooled correlations further down are confounded by sparsity and "
            "are not evidence that drift predicts bias."
        ]
    corr = fmt.correction_name(rows[0].get("correction", "holm"))
    name = _analysis_name(rows)
    seeds = fmt.seeds_text([r.get("n_seeds") for r in rows], few)
    done = [r for r in rows if fmt.finite(r.get("p_adjusted"))]
    if not done:
        return [
            f"Whether a layer's drift predicts bias beyond sparsity is undefined ({name}: too few "
            f"seeds per configuration or constant values; {seeds})."
        ]
    hits = sorted(
        (r for r in done if float(r["p_adjusted"]) < alpha), key=lambda r: float(r["p_adjusted"])
    )
    if not hits:
        low = min(done, key=lambda r: float(r["p_adjusted"]))
        op = ">" if float(low["p_adjusted"]) > alpha else "≥"
        return [
            f"No layer's drift predicts bias beyond sparsity ({name}, {corr}-corrected "
            f"p {op} {alpha:g} at every layer, {seeds}). Smallest corrected p: "
            f"{fmt.pvalue(low['p_adjusted'])} ({low['layer']}, {fmt.metric_short(low['bias'])}, "
            f"rho = {fmt.interval(low.get('estimate'), low.get('low'), low.get('high'), 2)})."
        ]
    out = []
    for r in hits[:6]:
        flag = "; few seeds" if r.get("few_seeds") else ""
        out.append(
            f"Drift at layer {r['layer']} predicts {fmt.metric_short(r['bias'])} beyond "
            f"sparsity ({name}): rho = "
            f"{fmt.interval(r.get('estimate'), r.get('low'), r.get('high'), 2)} "
            f"({100 * float(r.get('ci', 0.95)):.0f}% CI), {corr}-corrected p = "
            f"{fmt.pvalue(r['p_adjusted'])} ({r.get('n_seeds')} seeds{flag})."
        )
    if len(hits) > 6:
        out.append(f"{len(hits) - 6} more layer x metric pairs survive; see controlled.csv.")
    rest = len(done) - len(hits)
    layers_hit = sorted({r["layer"] for r in hits})
    out.append(
        f"Nothing survives {corr} correction at the other {rest} layer x metric pairs"
        + (
            f" (layers without any surviving metric: "
            f"{', '.join(sorted({r['layer'] for r in done} - set(layers_hit)))})."
            if {r["layer"] for r in done} - set(layers_hit)
            else "."
        )
    )
    return out


def _control_choice(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Per configuration label, the comparison shown: recovery when present, else the floor."""
    have: dict[str, set[str]] = {}
    for r in rows:
        have.setdefault(fmt.config_label(r["method"], r["sparsity"]), set()).add(r["comparison"])
    out = {}
    for label, comps in have.items():
        for c in ("recovery", "dense_floor", "random"):
            if c in comps:
                out[label] = c
                break
    return out


_CONTROL_NAME = {
    "recovery": "the recovery-only control",
    "dense_floor": "the dense-vs-dense floor",
    "random": "random pruning",
}


def drift_table(results: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """Per layer x configuration: drift beyond the chosen control, with CI; and sentences."""
    rel = results.get("relations") or {}
    rows = [r for r in (rel.get("effects") or []) if not fmt.is_control(r["method"])]
    alpha = _alpha(results)
    few = _few(results)
    if not rows:
        return (
            [
                "No drift-beyond-control table in these results (older results, or the study "
                "has neither controls nor a second dense seed)."
            ],
            [],
        )
    choice = _control_choice(rows)
    chosen = [
        r
        for r in rows
        if choice.get(fmt.config_label(r["method"], r["sparsity"])) == r["comparison"]
    ]
    configs = fmt.grouped_configs(list({(r["method"], r["sparsity"]): r for r in chosen}.values()))
    layers = list(dict.fromkeys(r["layer"] for r in chosen))
    cell = {(fmt.config_label(r["method"], r["sparsity"]), r["layer"]): r for r in chosen}
    table = []
    for layer in layers:
        row: dict[str, Any] = {"layer": layer}
        ns = []
        for c in configs:
            label = fmt.config_label(c["method"], c["sparsity"])
            r = cell.get((label, layer))
            ctrl = "dense floor" if r is None or r["control"] == "dense" else r["control"]
            head = f"{label} − {ctrl}"
            if r is None:
                row[head] = ""
                continue
            ns.append(r.get("n_seeds"))
            mark = " *" if fmt.finite(r.get("p_adjusted")) and r["p_adjusted"] < alpha else ""
            row[head] = (
                fmt.interval(r.get("effect"), r.get("low"), r.get("high"), 2, sign=True) + mark
            )
        row["seeds"] = fmt.seeds_text(ns, few)
        table.append(row)
    corr = fmt.correction_name(chosen[0].get("correction", "holm"))
    onset = rel.get("controlled_onset_layer") or {}
    by_control: dict[str, list[str]] = {}
    for c in configs:
        label = fmt.config_label(c["method"], c["sparsity"])
        mine = [r for r in chosen if fmt.config_label(r["method"], r["sparsity"]) == label]
        sig = [
            r for r in mine if fmt.finite(r.get("p_adjusted")) and float(r["p_adjusted"]) < alpha
        ]
        # two-sided tests: a significant negative difference is drift *below* the control
        above = [r["layer"] for r in sig if float(r["effect"]) > 0]
        below = [r["layer"] for r in sig if float(r["effect"]) < 0]
        what = (
            f"{label} at {len(above)} of {len(mine)} layers, from {above[0]}"
            if above
            else (f"{label} at no layer")
        )
        if below:
            what += (
                f" (below its control at {len(below)} layer{'s' if len(below) > 1 else ''}: "
                "closer to the dense parent than the control is)"
            )
        if onset.get(label) is not None and onset[label] != (above[0] if above else None):
            what += f" (one-sided onset: {onset[label]})"
        by_control.setdefault(choice[label], []).append(what)
    seeds = fmt.seeds_text([r.get("n_seeds") for r in chosen], few)
    ci = 100 * float(chosen[0].get("ci", 0.95))
    parts = [f"beyond {_CONTROL_NAME[k]}: " + "; ".join(v) for k, v in by_control.items()]
    text = [
        f"Drift (divergence from the dense parent) exceeds its control ({corr}-corrected across "
        f"layers at {alpha:g}, {seeds}) " + "; ".join(parts) + ". "
        "The control is the recovery-only control (the dense model put through the same "
        "recovery without pruning) where the study has one, else the dense-vs-dense floor "
        f"(two dense seeds compared). Table: mean difference [{ci:.0f}% CI], * = corrected p "
        "below the level."
    ]
    return text, table


def association_table(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per layer: rho [CI] and corrected p of drift with each bias metric (controlled)."""
    rel = results.get("relations") or {}
    rows = list(rel.get("controlled") or [])
    if not rows:
        return []
    alpha = _alpha(results)
    metrics = metric_order([r["bias"] for r in rows], is_binary(results))
    if is_binary(results):
        metrics = [m for m in metrics if m != "cev"]  # CEV = SDE^2/2: one number
    cell = {(r["layer"], r["bias"]): r for r in rows}
    out = []
    for layer in dict.fromkeys(r["layer"] for r in rows):
        row: dict[str, Any] = {"layer": layer}
        ns = []
        for m in metrics:
            r = cell.get((layer, m))
            if r is None:
                continue
            ns.append(r.get("n_seeds"))
            mark = " *" if fmt.finite(r.get("p_adjusted")) and r["p_adjusted"] < alpha else ""
            row[fmt.metric_short(m)] = (
                f"{fmt.interval(r.get('estimate'), r.get('low'), r.get('high'), 2)}, "
                f"p_adj {fmt.pvalue(r.get('p_adjusted'))}{mark}"
            )
        row["seeds"] = fmt.seeds_text(ns, _few(results))
        out.append(row)
    return out


def floor_means(results: Mapping[str, Any]) -> dict[str, float]:
    """Mean of each metric over the ``fairness_floor`` rows (dense seed pairs); {} when absent."""
    rows = [r for r in (results.get("fairness_floor") or []) if r.get("kind", "dense") == "dense"]
    keys = list(dict.fromkeys(k for r in rows for k in r if k not in ("kind", "seed", "seed_b")))
    out = {}
    for k in keys:
        v = np.array([float(r[k]) for r in rows if fmt.finite(r.get(k))], dtype=float)
        if v.size:
            out[k] = float(v.mean())
    if rows:
        out["n_pairs"] = float(len(rows))
    return out


def no_floor_text(results: Mapping[str, Any]) -> str:
    """Why there is no dense-vs-dense floor for the bias metrics."""
    seeds = results.get("seeds") or []
    if len(seeds) <= 1:
        return "no dense-vs-dense floor: the study has one seed."
    return (
        "no dense-vs-dense floor for the bias metrics in these results (older results: "
        "'fairness_floor' is missing)."
    )


def bias_beside_floor(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per configuration: each bias metric beside its dense-vs-dense floor and the excess CI."""
    configs = fmt.grouped_configs(results.get("configs") or [])
    floor = floor_means(results)
    rel = results.get("relations") or {}
    eff = {
        (fmt.config_label(r["method"], r["sparsity"]), r["metric"]): r
        for r in (rel.get("bias_effects") or [])
        if r.get("comparison") == "dense_floor"
    }
    alpha = _alpha(results)
    metrics = metric_order(
        [m for m in ("cev", "sde", "worst_group_drop") if any(m in c for c in configs)],
        is_binary(results),
    )
    out = []
    for c in configs:
        label = fmt.config_label(c["method"], c["sparsity"])
        row: dict[str, Any] = {"configuration": label, "role": fmt.role(c["method"], c)}
        for m in metrics:
            short = fmt.metric_short(m)
            row[short] = fmt.number(c.get(m))
            row[f"{short} floor"] = fmt.number(floor.get(m)) if m in floor else "none"
            e = eff.get((label, m))
            if e is not None:
                mark = " *" if fmt.finite(e.get("p_adjusted")) and e["p_adjusted"] < alpha else ""
                row[f"{short} − floor"] = (
                    fmt.interval(e.get("effect"), e.get("low"), e.get("high"), 2, sign=True) + mark
                )
        row["seeds"] = c.get("n_seeds", "")
        out.append(row)
    return out


def bias_floor_sentence(results: Mapping[str, Any]) -> str:
    """One sentence: which configurations' bias exceeds the dense-vs-dense floor."""
    floor = floor_means(results)
    if not floor:
        return "Bias beside its floor: " + no_floor_text(results)
    rel = results.get("relations") or {}
    alpha = _alpha(results)
    rows = [
        r
        for r in (rel.get("bias_effects") or [])
        if r.get("comparison") == "dense_floor" and not fmt.is_control(r["method"])
    ]
    binary = is_binary(results)
    keep = metric_order(list(dict.fromkeys(r["metric"] for r in rows)), binary)
    if binary:
        keep = [m for m in keep if m != "cev"]
    head = ", ".join(
        f"{fmt.metric_short(m)} {fmt.number(floor[m])}"
        for m in metric_order([m for m in ("cev", "sde", "worst_group_drop") if m in floor], binary)
        if not (binary and m == "cev")
    )
    text = (
        f"Bias beside its dense-vs-dense floor (dense seed pairs scored as if one were a "
        f"compressed version of the other, {int(floor['n_pairs'])} pairs: {head}). "
    )
    if not rows:
        return text + "No per-configuration test against the floor in these results."
    sig = [
        r
        for r in rows
        if r["metric"] in keep and fmt.finite(r.get("p_adjusted")) and r["p_adjusted"] < alpha
    ]
    corr = fmt.correction_name(rows[0].get("correction", "holm"))
    seeds = fmt.seeds_text([r.get("n_seeds") for r in rows], _few(results))
    # two-sided tests: only a positive difference is bias beyond the floor
    above = [r for r in sig if float(r["effect"]) > 0]
    below = [r for r in sig if float(r["effect"]) < 0]

    def listing(found: list[Mapping[str, Any]]) -> str:
        by: dict[str, list[str]] = {}
        for r in found:
            by.setdefault(fmt.config_label(r["method"], r["sparsity"]), []).append(
                f"{fmt.metric_short(r['metric'])} "
                f"{fmt.interval(r.get('effect'), r.get('low'), r.get('high'), 2, sign=True)}"
            )
        return "; ".join(f"{k}: {', '.join(v)}" for k, v in by.items())

    if not above:
        text += (
            f"No configuration's bias exceeds the floor ({corr}-corrected p ≥ {alpha:g} for "
            f"every metric or a difference below it, {seeds})."
        )
    else:
        text += f"Exceeding it ({corr}-corrected p < {alpha:g}, {seeds}): {listing(above)}."
    if below:
        text += (
            f" Significantly below it (less bias than between two dense seeds): {listing(below)}."
        )
    return text


def what_holds(
    results: Mapping[str, Any],
) -> tuple[list[str], list[tuple[str, list[dict[str, Any]]]]]:
    """The lead block: sentences and ``(caption, rows)`` tables, controlled results only.

    Order: the association of drift with bias within configurations (the headline, a plain
    negative sentence when nothing survives correction), drift beyond its control per layer,
    bias beside its dense-vs-dense floor, and the binary-task note when ``n_classes == 2``.
    """
    text = association_sentences(results)
    drift_text, drift_rows = drift_table(results)
    text += drift_text
    text.append(bias_floor_sentence(results))
    if is_binary(results):
        text.append(binary_note())
    alpha = _alpha(results)
    tables: list[tuple[str, list[dict[str, Any]]]] = []
    assoc = association_table(results)
    if assoc:
        tables.append(
            (
                "Within-configuration association of drift with bias, per layer: Spearman rho "
                f"[CI] and multiple-testing-corrected p (* below {alpha:g})",
                assoc,
            )
        )
    if drift_rows:
        tables.append(("Drift beyond its control, per layer (1 - similarity units)", drift_rows))
    return text, tables


def _mean(values: Sequence[Any]) -> float:
    v = [float(x) for x in values if fmt.finite(x)]
    return float(np.mean(v)) if v else math.nan


def dense_accuracy(results: Mapping[str, Any]) -> float:
    """Mean dense test accuracy over seeds (NaN when absent)."""
    return _mean([r.get("test_accuracy") for r in (results.get("dense") or [])])
