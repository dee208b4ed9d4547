"""Write a study's report directory: tidy CSVs, PNG figures and the self-contained index.html.

:func:`write_report` takes the plain tables :func:`repsim.pipeline.study.run_study` computed (or any
caller's tables in the same schema) and writes::

    results.json             (written by the caller, after timings are known)
    similarity.csv           kind, method, sparsity, seed, seed_b, layer, measure, value, group, n
    shifts.csv               per member: cev, sde, worst_group_drop, acc_drop:<group>, accuracy
    group_shifts.csv         per member and group: dense/compressed accuracy and change
    class_shifts.csv         per member and class: FPR/FNR and their relative changes
    group_metrics.csv        per model and group: accuracy, error rate, ...
    configs.csv              per configuration: means over seeds
    relations.csv            per layer and bias metric: pooled rho/r (0.2, confounded)
    controlled.csv           per layer and bias metric: within-configuration rho, Holm p
    pooled.csv               the same pooled across configurations (confounded by sparsity)
    within.csv               per layer, bias metric and configuration
    effects.csv              per configuration, control and layer: drift beyond the control
    bias_effects.csv         per configuration, control and metric: bias beyond the control
    controlled_onset.csv     per configuration and layer: drift beyond the recovery-only control
    fairness_floor.csv       per dense seed pair: bias of one dense seed scored against another
    noise_floor.csv, onset.csv, group_gaps.csv, kd_vs_ft.csv, exemplars.csv
    heatmap_*.png, similarity_vs_sparsity.png, bias_vs_floor.png, group_error_shifts.png,
    fpr_fnr.png, controlled_association.png, divergence_vs_*.png, cie_*.png
    index.html

``index.html`` opens with what holds once sparsity is controlled for (the
:mod:`repsim.report.lead` block, before any figure); the pooled correlations are in their own
section, labelled confounded by sparsity. Collapsed configurations (accuracy below chance +
10% of the dense margin over chance, :func:`repsim.report.fmt.collapse_threshold`) are marked
in tables and figures.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from repsim.report import fmt, lead, plots
from repsim.report.html import POOLED_PREFIX, Section, summarize, write_index
from repsim.report.tables import write_csv


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def write_report(
    out: str | Path,
    *,
    results: Mapping[str, Any],
    similarity: Sequence[Mapping[str, Any]],
    shifts: Sequence[Mapping[str, Any]],
    group_shifts: Sequence[Mapping[str, Any]] = (),
    class_shifts: Sequence[Mapping[str, Any]] = (),
    group_metrics: Sequence[Mapping[str, Any]] = (),
    exemplars: Sequence[Mapping[str, Any]] = (),
    exemplar_sets: Mapping[str, Any] | None = None,
    heatmaps: Sequence[tuple[str, Any]] = (),
    data: Any = None,
    measure: str = "cka",
    one_minus: bool = True,
    seed: int = 0,
) -> Path:
    """Write CSVs, figures and ``index.html`` into ``out``; returns the index path.

    ``results`` holds the headline numbers (``relations``: a
    :meth:`repsim.explain.Relations.to_dict`, ``configs``, ``kd_vs_ft``, ``dense``, ``seeds``,
    ``alpha``, ``study``, ``description``); ``heatmaps`` are ``(title, LabelledMatrix)``;
    ``exemplar_sets`` maps ``"method@sparsity"`` to :class:`repsim.fairness.Exemplars` and
    ``data`` is the test split they index (for the CIE image grids).

    Optional ``results`` keys: ``n_classes`` (chance level for flagging collapsed models; 2
    switches the fairness lead to group gaps, CEV = SDE²/2 there) and ``fairness_floor``
    (rows ``kind="dense"``, ``seed``, ``seed_b``, ``cev``, ``sde``, ``worst_group_drop``,
    ``acc_drop:<group>``: a dense seed scored as if compressed from another). Control
    configurations (``none+<recovery>``, ``random+<recovery>``) in ``configs`` and
    ``similarity`` are drawn beside what they control.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rel = results.get("relations", {})
    tables = {
        "similarity": similarity,
        "shifts": shifts,
        "group_shifts": group_shifts,
        "class_shifts": class_shifts,
        "group_metrics": group_metrics,
        "configs": results.get("configs", []),
        "relations": rel.get("correlations", []),
        "noise_floor": rel.get("noise_floor", []),
        "onset": rel.get("onset", []),
        "group_gaps": rel.get("group_gaps", []),
        "kd_vs_ft": results.get("kd_vs_ft", []),
        "exemplars": exemplars,
        "controlled": rel.get("controlled", []),
        "pooled": rel.get("pooled", []),
        "within": rel.get("within", []),
        "effects": rel.get("effects", []),
        "bias_effects": rel.get("bias_effects", []),
        "controlled_onset": rel.get("controlled_onset", []),
        "fairness_floor": results.get("fairness_floor") or [],
    }
    for name, rows in tables.items():
        write_csv(list(rows), out / f"{name}.csv")

    sections: list[Section] = []
    div_label = f"1 - {measure}" if one_minus else measure
    alpha = float(results.get("alpha", 0.05))
    configs = list(results.get("configs") or [])
    n_classes = results.get("n_classes")
    if n_classes is None and class_shifts:
        n_classes = len({r.get("class") for r in class_shifts})
    dense_acc = lead.dense_accuracy(results)
    broken = fmt.collapsed(configs, dense_acc, n_classes)
    binary = lead.is_binary(results)
    floor_rows = list(results.get("fairness_floor") or [])

    # similarity
    figs = []
    if any(r.get("kind") == "compressed" for r in similarity):
        p = plots.similarity_vs_sparsity(
            similarity,
            out / "similarity_vs_sparsity.png",
            measure=measure,
            layers=results.get("layers"),
            title=f"Dense vs compressed {measure.upper()} per layer; grey band: dense seed vs "
            "dense seed",
            collapsed=broken,
        )
        figs.append(
            (
                p,
                f"Per-layer {measure.upper()} of each compressed model to its dense parent "
                "(mean over seeds, min-max bars) against sparsity; all panels share the y axis. "
                "Colour: recovery (fine-tuning / distillation, drawn slightly apart so neither "
                "hides the other); dashed with open triangles: random pruning at the same "
                "sparsity (control); star at sparsity 0: the recovery-only control (no "
                "pruning). The grey band is the range of dense-vs-dense similarity between "
                "seeds (noise floor), dashed its mean. Red circles: collapsed models.",
            )
        )
    for i, (title, matrix) in enumerate(heatmaps):
        p = plots.similarity_heatmap(
            matrix.values,
            matrix.rows,
            matrix.cols,
            out / f"heatmap_{i:02d}_{_slug(title)}.png",
            title=title,
            measure=matrix.measure.upper(),
        )
        figs.append((p, f"Layer x layer {matrix.measure.upper()}: {title}."))
    noise_rows = rel.get("noise_floor", [])
    onset_rows: list[dict[str, Any]] = []
    for r in rel.get("controlled_onset", []):
        label = fmt.config_label(r["method"], r["sparsity"])
        if not onset_rows or onset_rows[-1]["configuration"] != label:
            onset_rows.append(
                {"configuration": label, "control": r.get("control"), "seeds": r.get("n_seeds")}
            )
        mark = " *" if r.get("significant") else ""
        onset_rows[-1][str(r["layer"])] = (
            f"{fmt.signed(r.get('excess'), 2)} (p_adj {fmt.pvalue(r.get('p_adjusted'))}){mark}"
        )
    sections.append(
        Section(
            "Where representations drift",
            [
                f"Divergence is {div_label}. Every dense-vs-compressed figure is shown beside the "
                "dense-vs-dense noise floor: the similarity between two dense models trained with "
                "different seeds. Drift inside that band is seed noise, not compression damage. "
                "The tables test drift against the recovery-only control (the same recovery "
                "without pruning); full tables: effects.csv, controlled_onset.csv."
            ],
            figs,
            [
                (
                    "Drift beyond the recovery-only control per configuration and layer: mean "
                    "excess divergence (one-sided paired t over seeds, corrected across layers; "
                    "* significant)",
                    onset_rows,
                ),
                ("Noise floor: dense-vs-dense divergence per layer", noise_rows),
                (
                    "Group-conditional divergence gaps (vs the largest group)",
                    rel.get("group_gaps", []),
                ),
                (
                    "0.2 onset rule, pooled over configurations: excess divergence over the "
                    f"noise floor (one-sided {100 * (1 - alpha):.0f}% bootstrap lower bound)",
                    [r for r in rel.get("onset", []) if r["method"] == "all"],
                ),
            ],
        )
    )

    # controlled association
    controlled = rel.get("controlled", [])
    if controlled:
        metrics = lead.metric_order([r["bias"] for r in controlled], binary)
        metrics = [m for m in metrics if not (binary and m == "cev")][:8]
        p = plots.controlled_association(
            controlled, out / "controlled_association.png", metrics=metrics, alpha=alpha
        )
        cols = ("layer", "bias", "estimate", "low", "high", "p", "p_adjusted", "n_members")
        sections.append(
            Section(
                "Does drift predict bias within a configuration?",
                [
                    "Spearman correlation of a member's drift with its bias inside each "
                    "configuration (method x sparsity), so sparsity cannot drive it; seeds are "
                    "permuted together within configurations; p corrected across layers x "
                    "metrics (column p_adjusted). Intervals are over seeds."
                ],
                [
                    (
                        p,
                        "Within-configuration Spearman rho per layer with its interval; filled "
                        f"markers: corrected p < {alpha:g}. At most four metrics drawn; every "
                        "metric is in controlled.csv.",
                    )
                ],
                [
                    (
                        "Within-configuration association (controlled.csv)",
                        [
                            {
                                **{k: r.get(k) for k in cols},
                                "n_seeds": r.get("n_seeds"),
                                "few_seeds": r.get("few_seeds"),
                            }
                            for r in controlled
                        ],
                    )
                ],
            )
        )

    # fairness
    figs = []
    f_metrics = ["cev", "sde", "worst_group_drop"]
    if binary:
        groups = sorted({k for r in shifts for k in r if str(k).startswith("acc_drop:")})
        f_metrics = ["worst_group_drop", *groups[:2], "sde"]
    try:
        figs.append(
            (
                plots.bias_beside_floor(
                    shifts,
                    floor_rows,
                    out / "bias_vs_floor.png",
                    metrics=f_metrics,
                    collapsed=broken,
                ),
                "Bias of each configuration beside the dense-vs-dense floor (grey band: two "
                "dense seeds scored as if one were compressed from the other; dashed: its "
                "mean). Points are seeds, bars their mean; controls beside what they control. "
                + ("" if floor_rows else lead.no_floor_text(results)),
            )
        )
    except Exception:  # noqa: BLE001 - a figure without finite values must not sink the report
        pass
    if group_shifts:
        figs.append(
            (
                plots.group_error_shifts(
                    group_shifts,
                    out / "group_error_shifts.png",
                    title="Accuracy change per group (compressed − dense, percentage points)",
                    collapsed=broken,
                ),
                "Per-group accuracy change caused by compression, mean over seeds, in "
                "percentage points (red: the group lost accuracy).",
            )
        )
    if class_shifts:
        try:
            figs.append(
                (
                    plots.fpr_fnr_scatter(class_shifts, out / "fpr_fnr.png", collapsed=broken),
                    "Relative change of each class's false positive and false negative "
                    "rate, one panel per configuration, shared axes. CEV is the spread of "
                    "this cloud, SDE the mean distance from the y = x line (Blakeney et al. "
                    "2021).",
                )
            )
        except Exception:  # noqa: BLE001 - an all-NaN scatter must not sink the report
            pass
    t = fmt.collapse_threshold(dense_acc, n_classes)
    f_text = [
        "CEV: variance of the per-class relative changes of FPR and FNR (unitless); SDE: their "
        "mean distance from y = x (unitless); worst-group drop: the largest per-group accuracy "
        "loss, dense minus compressed (fraction). Each is shown beside the dense-vs-dense "
        "floor: "
        + ("its value for two dense seeds." if floor_rows else lead.no_floor_text(results))
    ]
    if binary:
        f_text.insert(0, lead.binary_note())
    if fmt.finite(t):
        f_text.append(
            f"A configuration is flagged collapsed when its mean accuracy is below chance "
            f"(1/{n_classes}) + 10% of the dense model's margin over chance: {t:.3f}. "
            + (
                f"Collapsed here: {', '.join(fmt.config_label(*k) for k in sorted(broken, key=str))}."
                if broken
                else "None is."
            )
        )
    cfg_rows = []
    fl_mean = lead.floor_means(results)
    for c in fmt.grouped_configs(configs):
        row = {
            "configuration": fmt.config_label(c["method"], c["sparsity"]),
            "role": fmt.role(c["method"], c),
            "n_seeds": c.get("n_seeds"),
            "accuracy": c.get("accuracy"),
            "collapsed": "COLLAPSED" if (c["method"], c["sparsity"]) in broken else "",
        }
        for m in lead.metric_order(
            [m for m in ("cev", "sde", "worst_group_drop") if m in c], binary
        ):
            row[m] = c.get(m)
            row[f"{m} floor"] = fl_mean.get(m, math.nan) if fl_mean else "none"
        row["mean_similarity"] = c.get("mean_similarity")
        cfg_rows.append(row)
    sections.append(
        Section(
            "Who pays for compression",
            f_text,
            figs,
            [
                ("Configurations (means over seeds; controls beside what they control)", cfg_rows),
                (
                    "Bias beside its dense-vs-dense floor (excess: mean over seeds minus the "
                    "floor, seed-jackknife CI; * corrected p below the level)",
                    lead.bias_beside_floor(results) if fl_mean else [],
                ),
                (
                    "Distillation vs fine-tuning (kd - ft, paired by seed)",
                    results.get("kd_vs_ft", []),
                ),
            ],
        )
    )

    # relations
    figs = []
    corr = rel.get("correlations", [])
    floor = {r["layer"]: r for r in noise_rows}
    biases = [b for b in dict.fromkeys(r["bias"] for r in corr) if not b.startswith("acc_drop:")]
    comp_rows = [
        r
        for r in similarity
        if r.get("kind") == "compressed" and r.get("group") is None and r.get("measure") == measure
    ]
    by_member = {(r["method"], r["sparsity"], r["seed"]): r for r in shifts}
    for bias in biases:
        rows = [
            r
            for r in corr
            if r["bias"] == bias and r.get("spearman") is not None and np.isfinite(r["spearman"])
        ]
        if not rows:
            continue
        best = max(rows, key=lambda r: abs(r["spearman"]))
        pts = [
            r
            for r in comp_rows
            if r["layer"] == best["layer"] and (r["method"], r["sparsity"], r["seed"]) in by_member
        ]
        x = [(1 - r["value"]) if one_minus else r["value"] for r in pts]
        y = [by_member[(r["method"], r["sparsity"], r["seed"])].get(bias, math.nan) for r in pts]
        fl = floor.get(best["layer"])
        p = plots.divergence_bias_scatter(
            x,
            [math.nan if v is None else v for v in y],
            out / f"divergence_vs_{_slug(bias)}.png",
            labels=[f"{r['method']}@{r['sparsity']:g}" for r in pts],
            stats=best,
            noise_floor=(fl["mean"], fl["max"]) if fl else None,
            xlabel=f"divergence ({div_label}, 0-1) at {best['layer']}",
            ylabel=fmt.metric_label(bias),
            title=f"Pooled (confounded by sparsity): {fmt.metric_short(bias)} vs divergence at "
            f"{best['layer']}",
            seed=seed,
        )
        figs.append(
            (
                p,
                f"Pooled across sparsities (confounded by sparsity). Each point is one "
                f"compressed model. Line: OLS fit with its "
                f"{100 * (1 - alpha):.0f}% bootstrap band; grey: dense-vs-dense "
                "divergence range at this layer.",
            )
        )
    pooled_cols = ("layer", "bias", "estimate", "low", "high", "p", "p_adjusted", "n_seeds")
    sections.append(
        Section(
            POOLED_PREFIX,
            [
                "Everything in this section pools compressed models of every sparsity and method "
                "into one cloud. Divergence and bias both grow with sparsity, so a correlation "
                "here can come from sparsity alone: it is not evidence that drift predicts bias. "
                "The controlled answer is at the top of the page.",
                "Per layer, Spearman and Pearson correlation across all compressed models between "
                "their divergence from the dense model and each bias metric, with percentile "
                "bootstrap CIs, permutation p-values and the OLS slope. The noise_floor column is "
                "the mean dense-vs-dense divergence at that layer.",
            ],
            figs,
            [
                (
                    "Pooled Spearman, intervals over seeds (pooled.csv; confounded by sparsity)",
                    [{k: r.get(k) for k in pooled_cols} for r in rel.get("pooled", [])],
                ),
                (
                    "Relations (relations.csv; pooled, confounded by sparsity)",
                    [
                        {
                            k: r[k]
                            for k in (
                                "layer",
                                "bias",
                                "n",
                                "spearman",
                                "spearman_low",
                                "spearman_high",
                                "spearman_p",
                                "pearson",
                                "pearson_p",
                                "slope",
                                "divergence_mean",
                                "noise_floor",
                            )
                        }
                        for r in corr
                    ],
                ),
            ],
        )
    )

    # exemplars
    figs = []
    notes = [
        "Samples ranked by the taxicab distance between the dense and compressed populations' "
        "label histograms; the full list is in exemplars.csv."
    ]
    images = data is not None and np.ndim(data.x) in (3, 4)  # [n, H, W] or [n, C, H, W]
    if exemplar_sets and data is not None and not images:
        notes.append(
            "The inputs are not images (shape "
            f"{tuple(np.shape(data.x)[1:])}), so no exemplar image grid is drawn."
        )
    if exemplar_sets and images:
        from repsim.report.exemplar_grid import exemplar_grid

        last: dict[str, str] = {}
        for key in exemplar_sets:
            last[key.rsplit("@", 1)[0]] = key  # the highest sparsity per method
        for key in last.values():
            ex = exemplar_sets[key]
            if len(ex.indices) == 0:
                continue
            p = exemplar_grid(
                images=data.x,
                exemplars=ex,
                y_true=data.y,
                path=out / f"cie_{_slug(key)}.png",
                class_names=list(data.class_names),
                title=f"Compression-identified exemplars: {key}",
            )
            figs.append(
                (
                    p,
                    f"Top compression-identified exemplars of {key}: the test "
                    "samples on which the dense and compressed populations disagree "
                    "most (Hooker et al. 2019).",
                )
            )
    sections.append(Section("Compression-identified exemplars", notes, figs))

    meta = (
        f"{results.get('description', '')} Seeds: {results.get('seeds')}. "
        f"Generated by repsim {results.get('versions', {}).get('repsim', '')}."
    ).strip()
    # the pooled section goes last but before the exemplars
    pooled_sec = [x for x in sections if x.heading == POOLED_PREFIX]
    rest = [x for x in sections if x.heading != POOLED_PREFIX]
    sections = rest[:-1] + pooled_sec + rest[-1:]
    summary = summarize(results, lead=False)
    pooled_lines = [t for t in summary if t.startswith(POOLED_PREFIX)]
    summary = [t for t in summary if not t.startswith(POOLED_PREFIX)]
    for sec in pooled_sec:
        sec.text = [*sec.text, *(t[len(POOLED_PREFIX) + 2 :] for t in pooled_lines)]
    holds_text, holds_tables = lead.what_holds(results) if rel else ([], [])
    lead_sec = (
        Section("What holds (controlled for sparsity)", holds_text, [], holds_tables)
        if holds_text
        else None
    )
    return write_index(
        out,
        title=f"repsim study: {results.get('study', out.name)}",
        summary=summary,
        sections=sections,
        meta=meta,
        lead=lead_sec,
    )
