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
    relations.csv            per layer and bias metric: rho/r with CIs and p, slope
    noise_floor.csv, onset.csv, group_gaps.csv, kd_vs_ft.csv, exemplars.csv
    heatmap_*.png, similarity_vs_sparsity.png, group_error_shifts.png, fpr_fnr.png,
    divergence_vs_*.png, cie_*.png
    index.html
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from repsim.report import plots
from repsim.report.html import Section, summarize, write_index
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
    }
    for name, rows in tables.items():
        write_csv(list(rows), out / f"{name}.csv")

    sections: list[Section] = []
    div_label = f"1 - {measure}" if one_minus else measure
    alpha = float(results.get("alpha", 0.05))

    # similarity
    figs = []
    if any(r.get("kind") == "compressed" for r in similarity):
        p = plots.similarity_vs_sparsity(
            similarity,
            out / "similarity_vs_sparsity.png",
            measure=measure,
            layers=results.get("layers"),
            title=f"Dense vs compressed {measure} per layer; grey band: dense seed vs dense seed",
        )
        figs.append(
            (
                p,
                f"Per-layer {measure} of each compressed model to its dense parent "
                "(mean over seeds, min-max bars) against sparsity. The grey band is "
                "the range of dense-vs-dense similarity between seeds (noise floor), "
                "dashed its mean.",
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
    floor_rows = rel.get("noise_floor", [])
    sections.append(
        Section(
            "Where representations drift",
            [
                f"Divergence is {div_label}. Every dense-vs-compressed figure is shown beside the "
                "dense-vs-dense noise floor: the similarity between two dense models trained with "
                "different seeds. Drift inside that band is seed noise, not compression damage."
            ],
            figs,
            [
                ("Noise floor: dense-vs-dense divergence per layer", floor_rows),
                (
                    "Onset: excess divergence over the noise floor (one-sided "
                    f"{100 * (1 - alpha):.0f}% bootstrap lower bound)",
                    [r for r in rel.get("onset", []) if r["method"] == "all"],
                ),
            ],
        )
    )

    # fairness
    figs = []
    if group_shifts:
        figs.append(
            (
                plots.group_error_shifts(
                    group_shifts,
                    out / "group_error_shifts.png",
                    title="Accuracy change per group (compressed - dense)",
                ),
                "Per-group accuracy change caused by compression, mean over seeds with "
                "min-max whiskers.",
            )
        )
    if class_shifts:
        try:
            figs.append(
                (
                    plots.fpr_fnr_scatter(
                        class_shifts, out / "fpr_fnr.png", title="Per-class dFPR vs dFNR"
                    ),
                    "Relative change of each class's false positive and false negative "
                    "rate. CEV is the spread of this cloud, SDE the mean distance from "
                    "the y = x line (Blakeney et al. 2021).",
                )
            )
        except Exception:  # noqa: BLE001 - an all-NaN scatter must not sink the report
            pass
    sections.append(
        Section(
            "Who pays for compression",
            [],
            figs,
            [
                ("Configurations (means over seeds)", results.get("configs", [])),
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
    floor = {r["layer"]: r for r in floor_rows}
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
            xlabel=f"divergence ({div_label}) at {best['layer']}",
            ylabel=bias,
            title=f"{bias} vs divergence at {best['layer']} (strongest layer)",
            seed=seed,
        )
        figs.append(
            (
                p,
                f"Each point is one compressed model. Line: OLS fit with its "
                f"{100 * (1 - alpha):.0f}% bootstrap band; grey: dense-vs-dense "
                "divergence range at this layer.",
            )
        )
    sections.append(
        Section(
            "How drift tracks bias",
            [
                "Per layer, Spearman and Pearson correlation across all compressed models between "
                "their divergence from the dense model and each bias metric, with percentile "
                "bootstrap CIs, permutation p-values and the OLS slope. The noise_floor column is "
                "the mean dense-vs-dense divergence at that layer."
            ],
            figs,
            [
                (
                    "Relations",
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
                (
                    "Group-conditional divergence gaps (vs the largest group)",
                    rel.get("group_gaps", []),
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
    return write_index(
        out,
        title=f"repsim study: {results.get('study', out.name)}",
        summary=summarize(results),
        sections=sections,
        meta=meta,
    )
