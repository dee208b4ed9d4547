"""Report figures (matplotlib, Agg canvas, no global pyplot state).

Report figures (matplotlib, Agg canvas, no global pyplot state). Each function takes tidy
rows or arrays, saves one PNG and returns its path.

* :func:`similarity_heatmap`: layer x layer similarity of one model pair (Kornblith et al. 2019,
  Fig. 2 style).
* :func:`similarity_vs_sparsity`: per layer, dense-vs-compressed similarity against sparsity per
  method, with the dense-vs-dense noise floor as a band, so seed noise is never read as damage.
* :func:`group_error_shifts`: per group, the accuracy change compression caused.
* :func:`fpr_fnr_scatter`: per class ``dFPR`` against ``dFNR`` with the ``y = x`` line: CEV is the
  spread of the cloud, SDE the mean distance from the line (Blakeney et al. 2021).
* :func:`divergence_bias_scatter`: member divergence against bias with the OLS fit and a
  percentile bootstrap band of the fitted line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from repsim._core.stats import alpha_renamed_to_ci, bootstrap_indices, percentile_interval
from repsim.errors import DataError

_COLORS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def _save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def similarity_heatmap(
    values: Any,
    rows: Sequence[str],
    cols: Sequence[str],
    path: str | Path,
    *,
    title: str = "",
    measure: str = "CKA",
    row_label: str = "model A layer",
    col_label: str = "model B layer",
) -> Path:
    """Heatmap of a layer x layer similarity matrix.

    Heatmap of a layer x layer similarity matrix (NaN cells left blank), values annotated
    when the matrix is small.
    """
    m = np.asarray(values, dtype=float)
    if m.shape != (len(rows), len(cols)):
        raise DataError(f"matrix shape {m.shape} does not match {len(rows)} x {len(cols)} labels.")
    size = max(3.5, 0.55 * max(len(rows), len(cols)) + 2)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(m), vmin=0.0, vmax=1.0, cmap="magma", origin="lower")
    ax.set_xticks(range(len(cols)), labels=list(cols), rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), labels=list(rows), fontsize=8)
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    if m.size <= 144:
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if np.isfinite(m[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{m[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if m[i, j] < 0.6 else "black",
                    )
    fig.colorbar(im, ax=ax, label=measure)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _grid(n: int) -> tuple[int, int]:
    ncols = min(4, max(1, n))
    return math.ceil(n / ncols), ncols


_RECOVERY_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")
_PRUNE_MARKERS = ("o", "s", "D", "v", "P")


def _human_axis(ax: Any, which: str = "y") -> None:
    """Tick labels without ``1e6`` offsets: 8.4×10⁶ style via :func:`repsim.report.fmt.number`."""
    from matplotlib.ticker import FuncFormatter

    from repsim.report import fmt

    f = FuncFormatter(lambda v, _pos: fmt.number(v, 2))
    (ax.yaxis if which == "y" else ax.xaxis).set_major_formatter(f)


def _style(method: str, recs: Sequence[str], prunes: Sequence[str]) -> dict[str, Any]:
    """Colour per recovery recipe, marker/linestyle per prune; controls dashed / starred."""
    from repsim.report import fmt

    prune, rec = fmt.split_method(method)
    color = _RECOVERY_COLORS[recs.index(rec or "") % len(_RECOVERY_COLORS)]
    if fmt.role(method) == "recovery-only control":
        return {"color": color, "marker": "*", "ms": 10, "ls": "none"}
    if fmt.role(method) == "random-pruning control":
        return {"color": color, "marker": "^", "ms": 5, "ls": "--", "mfc": "white"}
    k = prunes.index(prune) if prune in prunes else 0
    return {
        "color": color,
        "marker": _PRUNE_MARKERS[k % len(_PRUNE_MARKERS)],
        "ms": 5,
        "ls": ("-", "-.", ":")[k % 3],
    }


def similarity_vs_sparsity(
    similarity: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    measure: str = "cka",
    layers: Sequence[str] | None = None,
    title: str = "",
    collapsed: Any = (),
) -> Path:
    """Similarity to the dense model against sparsity, per layer (shared y axis).

    Per layer: mean dense-vs-compressed ``measure`` (over seeds, min-max bars) against
    sparsity. Colour: recovery recipe (fine-tuning, distillation, ...), each drawn a little
    to the side so no line hides another; solid: the pruning method; dashed with open
    triangles: the random-pruning control (``random+<recovery>``); star at sparsity 0: the
    recovery-only control (``none+<recovery>``). The dense-vs-dense values are a grey band
    (min to max) with their mean dashed: the noise floor. ``collapsed`` configurations
    ``(method, sparsity)`` are circled in red.

    ``similarity`` rows follow :mod:`repsim.explain`'s schema (``kind``, ``method``,
    ``sparsity``, ``seed``, ``layer``, ``measure``, ``value``); group rows are ignored.
    """
    from repsim.report import fmt

    rows = [r for r in similarity if r.get("measure") == measure and r.get("group") is None]
    if not rows:
        raise DataError(f"no rows of measure {measure!r} to plot.")
    broken = {(str(m), float(s)) for m, s in collapsed}
    order = list(layers) if layers is not None else list(dict.fromkeys(r["layer"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows if r["kind"] == "compressed"))
    recs = list(dict.fromkeys(fmt.split_method(m)[1] or "" for m in methods))
    prunes = list(dict.fromkeys(fmt.split_method(m)[0] for m in methods if not fmt.is_control(m)))
    sps_all = sorted({float(r["sparsity"]) for r in rows if r["kind"] == "compressed"})
    span = (max(sps_all) - min(sps_all)) if len(sps_all) > 1 else 1.0
    dodge = 0.012 * span
    nr, nc = _grid(len(order))
    fig = Figure(figsize=(3.3 * nc, 2.6 * nr + 1.0))
    axes = fig.subplots(nr, nc, squeeze=False, sharey=True)
    any_broken = False
    for k, layer in enumerate(order):
        ax = axes[k // nc][k % nc]
        dense = np.array(
            [r["value"] for r in rows if r["kind"] == "dense" and r["layer"] == layer], dtype=float
        )
        dense = dense[np.isfinite(dense)]
        if dense.size:
            ax.axhspan(
                dense.min(),
                dense.max(),
                color="0.8",
                alpha=0.7,
                lw=0,
                label="dense vs dense (seed noise)",
            )
            ax.axhline(dense.mean(), color="0.4", ls="--", lw=1)
        for method in methods:
            pts = [
                r
                for r in rows
                if r["kind"] == "compressed" and r["method"] == method and r["layer"] == layer
            ]
            if not pts:
                continue
            sps = sorted({float(r["sparsity"]) for r in pts})
            mean, lo, hi = [], [], []
            for s in sps:
                v = np.array([r["value"] for r in pts if float(r["sparsity"]) == s], dtype=float)
                mean.append(np.nanmean(v))
                lo.append(np.nanmin(v))
                hi.append(np.nanmax(v))
            mean_a = np.array(mean)
            yerr = np.maximum(0.0, [mean_a - lo, np.array(hi) - mean_a])
            st = _style(method, recs, prunes)
            shift = (recs.index(fmt.split_method(method)[1] or "") - (len(recs) - 1) / 2) * dodge
            xs = np.array(sps) + shift
            ax.errorbar(
                xs,
                mean_a,
                yerr=yerr,
                capsize=2,
                lw=1.3,
                elinewidth=0.8,
                label=str(method),
                **st,
            )
            for x, y, s in zip(xs, mean_a, sps, strict=True):
                if (str(method), s) in broken:
                    any_broken = True
                    ax.plot(x, y, "o", ms=11, mfc="none", mec="red", mew=1.5)
        ax.set_title(layer, fontsize=10)
        ax.set_xlabel("sparsity (fraction of weights removed)", fontsize=8)
        if k % nc == 0:
            ax.set_ylabel(f"{measure.upper()} to dense parent (0-1)", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3, lw=0.5)
    for k in range(len(order), nr * nc):
        axes[k // nc][k % nc].set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if any_broken:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], ls="none", marker="o", ms=9, mfc="none", mec="red"))
        labels.append("collapsed (accuracy near chance)")
    height = fig.get_figheight()
    fig.legend(
        handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False
    )
    if title:
        fig.suptitle(title, fontsize=10, y=0.995, x=0.01, ha="left")
    nrow_leg = math.ceil(len(labels) / 4)
    fig.tight_layout(rect=(0, (0.15 + 0.2 * nrow_leg) / height, 1, 1 - 0.35 / height))
    return _save(fig, path)


def group_error_shifts(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    value: str = "accuracy_change",
    title: str = "",
    collapsed: Any = (),
) -> Path:
    """Heatmap of each group's accuracy change per configuration (percentage points).

    Rows: configurations ``method@sparsity`` (controls beside what they control, collapsed
    ones marked), columns: groups; cell: mean ``value`` over seeds (default: compressed minus
    dense accuracy) in percentage points, annotated, with the seed range when seeds differ.
    A diverging colour scale centred on 0 (red: the group lost accuracy).

    ``rows``: ``method``, ``sparsity``, ``seed``, ``group``, ``value``.
    """
    from repsim.report import fmt

    if not rows:
        raise DataError("no group rows to plot.")
    broken = {(str(m), float(s)) for m, s in collapsed}
    configs = [
        (c["method"], c["sparsity"])
        for c in fmt.grouped_configs(
            [
                {"method": m, "sparsity": s}
                for m, s in dict.fromkeys((r["method"], r["sparsity"]) for r in rows)
            ]
        )
    ]
    groups = list(dict.fromkeys(str(r["group"]) for r in rows))
    mean = np.full((len(configs), len(groups)), np.nan)
    lo = np.full_like(mean, np.nan)
    hi = np.full_like(mean, np.nan)
    for i, cfg in enumerate(configs):
        for j, g in enumerate(groups):
            v = np.array(
                [
                    r[value]
                    for r in rows
                    if (r["method"], r["sparsity"]) == cfg
                    and str(r["group"]) == g
                    and r.get(value) is not None
                ],
                dtype=float,
            )
            v = v[np.isfinite(v)] * 100
            if v.size:
                mean[i, j], lo[i, j], hi[i, j] = v.mean(), v.min(), v.max()
    width = min(13.5, max(7.0, 0.75 * len(groups) + 4.5))
    fig = Figure(figsize=(width, max(2.6, 0.36 * len(configs) + 1.6)))
    ax = fig.add_subplot()
    lim = float(np.nanmax(np.abs(mean))) if np.isfinite(mean).any() else 1.0
    lim = lim or 1.0
    im = ax.imshow(np.ma.masked_invalid(mean), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    if mean.size <= 400:
        for i in range(len(configs)):
            for j in range(len(groups)):
                if np.isfinite(mean[i, j]):
                    txt = f"{mean[i, j]:+.1f}"
                    ax.text(
                        j,
                        i,
                        txt,
                        ha="center",
                        va="center",
                        fontsize=7 if len(groups) > 8 else 8,
                        color="white" if abs(mean[i, j]) > 0.6 * lim else "black",
                    )
    labels = [
        f"{m}@{s}" + ("  (collapsed)" if (str(m), float(s)) in broken else "") for m, s in configs
    ]
    ax.set_yticks(range(len(configs)), labels=labels, fontsize=8)
    for t, (m, s) in zip(ax.get_yticklabels(), configs, strict=True):
        if (str(m), float(s)) in broken:
            t.set_color("red")
    ax.set_xticks(range(len(groups)), labels=groups, fontsize=8)
    ax.set_xlabel("group")
    fig.colorbar(
        im, ax=ax, label=f"{value.replace('_', ' ')} (percentage points)", fraction=0.04, pad=0.02
    )
    if title:
        fig.suptitle(title, fontsize=9, x=0.01, ha="left")
    fig.tight_layout()
    return _save(fig, path)


def _symlog_threshold(values: np.ndarray) -> float:
    a = np.abs(values[np.isfinite(values) & (values != 0)])
    if a.size == 0:
        return 1.0
    return float(max(np.percentile(a, 25), 1e-3))


def fpr_fnr_scatter(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    x: str = "delta_fpr",
    y: str = "delta_fnr",
    title: str = "",
    collapsed: Any = (),
) -> Path:
    """Per class ``dFPR`` against ``dFNR`` with the ``y = x`` line, one panel per configuration.

    CEV (Blakeney et al. 2021) is the variance of the cloud around its centre; SDE is the mean
    distance of the points from ``y = x``. Panels share symmetric-log axes (linear near 0,
    logarithmic beyond the threshold written on the axis), so a configuration whose changes
    are tiny is not a dot at the origin beside one whose changes are huge. ``rows``:
    ``method``, ``sparsity``, ``x``, ``y`` (optionally ``class``).
    """
    from matplotlib.ticker import FuncFormatter

    from repsim.report import fmt

    pts = [
        r
        for r in rows
        if r.get(x) is not None
        and r.get(y) is not None
        and np.isfinite(float(r[x]))
        and np.isfinite(float(r[y]))
    ]
    if not pts:
        raise DataError(f"no finite ({x}, {y}) pairs to plot.")
    broken = {(str(m), float(s)) for m, s in collapsed}
    configs = [
        (c["method"], c["sparsity"])
        for c in fmt.grouped_configs(
            [
                {"method": m, "sparsity": s}
                for m, s in dict.fromkeys((r["method"], r["sparsity"]) for r in pts)
            ]
        )
    ]
    allv = np.array([[float(r[x]), float(r[y])] for r in pts])
    lim = float(np.abs(allv).max()) * 1.3 or 1.0
    thr = _symlog_threshold(allv.ravel())
    use_log = lim / thr > 20
    lo_dec = math.ceil(math.log10(thr * 3))
    hi_dec = math.floor(math.log10(lim))
    decs = list(range(lo_dec, hi_dec + 1))
    step = max(1, math.ceil(len(decs) / 3))
    decs = decs[::-1][::step][::-1]
    ticks = [-(10.0**d) for d in decs[::-1]] + [0.0] + [10.0**d for d in decs]
    nr, nc = _grid(len(configs))
    fig = Figure(figsize=(3.2 * nc, 3.1 * nr + 0.7))
    axes = fig.subplots(nr, nc, squeeze=False, sharex=True, sharey=True)
    human = FuncFormatter(lambda v, _p: fmt.number(v, 1))
    for k, cfg in enumerate(configs):
        ax = axes[k // nc][k % nc]
        sel = np.array(
            [[float(r[x]), float(r[y])] for r in pts if (r["method"], r["sparsity"]) == cfg]
        )
        if use_log:
            ax.set_xscale("symlog", linthresh=thr)
            ax.set_yscale("symlog", linthresh=thr)
            ax.set_xticks(ticks)
            ax.set_yticks(ticks)
        ax.plot([-lim, lim], [-lim, lim], color="black", lw=0.8, ls="--")
        ax.axhline(0, color="0.7", lw=0.5)
        ax.axvline(0, color="0.7", lw=0.5)
        ax.scatter(sel[:, 0], sel[:, 1], s=16, alpha=0.8, color=_COLORS[0])
        bad = (str(cfg[0]), float(cfg[1])) in broken
        ax.set_title(
            f"{cfg[0]}@{cfg[1]}" + (" (collapsed)" if bad else ""),
            fontsize=9,
            color="red" if bad else "black",
        )
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.xaxis.set_major_formatter(human)
        ax.yaxis.set_major_formatter(human)
        ax.tick_params(labelsize=7)
        ax.tick_params(axis="x", labelrotation=45)
        if k // nc == nr - 1 or k + nc >= len(configs):
            ax.set_xlabel("relative FPR change", fontsize=8)
        if k % nc == 0:
            ax.set_ylabel("relative FNR change", fontsize=8)
    for k in range(len(configs), nr * nc):
        axes[k // nc][k % nc].set_visible(False)
    sub = title or "Per-class relative change of FPR and FNR (compressed vs dense)"
    if use_log:
        sub += f"; symmetric-log axes, linear within ±{fmt.number(thr, 2)}"
    fig.suptitle(sub + "; dashed: y = x", fontsize=9, x=0.01, ha="left")
    fig.tight_layout()
    return _save(fig, path)


def bias_beside_floor(
    shifts: Sequence[Mapping[str, Any]],
    floor: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    metrics: Sequence[str] = ("cev", "sde", "worst_group_drop"),
    collapsed: Any = (),
    title: str = "",
) -> Path:
    """Per bias metric, each configuration's seeds beside the dense-vs-dense floor.

    One panel per metric (units on the y axis), one column of points per configuration
    (each point one seed, the bar its mean; controls beside what they control); the floor,
    dense seed pairs scored as if one were compressed from the other, is a grey band (min to
    max) with its mean dashed. A metric spanning more than three decades gets a symmetric
    log axis. ``shifts``: per member ``method``, ``sparsity``, ``seed`` and the metrics;
    ``floor``: rows with the metrics (empty: no band, said in the title).
    """
    from repsim.report import fmt

    members = [r for r in shifts if r.get("kind", "compressed") != "dense"]
    metrics = [m for m in metrics if any(fmt.finite(r.get(m)) for r in members)]
    if not metrics:
        raise DataError("no bias metric with finite values to plot.")
    broken = {(str(m), float(s)) for m, s in collapsed}
    configs = [
        (c["method"], c["sparsity"])
        for c in fmt.grouped_configs(
            [
                {"method": m, "sparsity": s}
                for m, s in dict.fromkeys((r["method"], r["sparsity"]) for r in members)
            ]
        )
    ]
    recs = list(dict.fromkeys(fmt.split_method(m)[1] or "" for m, _ in configs))
    prunes = list(
        dict.fromkeys(fmt.split_method(m)[0] for m, _ in configs if not fmt.is_control(m))
    )
    fig = Figure(figsize=(min(13.5, 4.4 * len(metrics)), 3.9))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    rng = np.random.default_rng(0)
    for ax, m in zip(axes, metrics, strict=True):
        fl = np.array([float(r[m]) for r in floor if fmt.finite(r.get(m))], dtype=float)
        if fl.size:
            ax.axhspan(fl.min(), fl.max(), color="0.8", lw=0, label="dense-vs-dense floor")
            ax.axhline(fl.mean(), color="0.4", ls="--", lw=1)
        allv = []
        for i, (meth, sp) in enumerate(configs):
            v = np.array(
                [
                    float(r[m])
                    for r in members
                    if (r["method"], r["sparsity"]) == (meth, sp) and fmt.finite(r.get(m))
                ],
                dtype=float,
            )
            if not v.size:
                continue
            allv.append(v)
            st = _style(meth, recs, prunes)
            ax.scatter(
                i + rng.uniform(-0.12, 0.12, v.size),
                v,
                s=14,
                color=st["color"],
                marker=st["marker"] if st["marker"] != "*" else "*",
                alpha=0.8,
            )
            ax.hlines(v.mean(), i - 0.3, i + 0.3, color=st["color"], lw=2)
        vals = np.concatenate(allv + [fl]) if allv else fl
        a = np.abs(vals[np.isfinite(vals) & (vals != 0)])
        if a.size and a.max() / max(a.min(), 1e-12) > 1e3:
            ax.set_yscale("symlog", linthresh=float(max(np.percentile(a, 10), 1e-6)))
        _human_axis(ax)
        labels = [
            f"{mm}@{ss}" + (" (collapsed)" if (str(mm), float(ss)) in broken else "")
            for mm, ss in configs
        ]
        ax.set_xticks(range(len(configs)), labels=labels, rotation=40, ha="right", fontsize=7)
        for t, (mm, ss) in zip(ax.get_xticklabels(), configs, strict=True):
            if (str(mm), float(ss)) in broken:
                t.set_color("red")
        ax.set_ylabel(fmt.metric_label(m).replace(" (", "\n("), fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3, lw=0.5)
        ax.set_title(fmt.metric_short(m), fontsize=9)
    head = title or "Bias per configuration (points: seeds, bar: mean)"
    head += "; grey: dense-vs-dense floor" if floor else "; no dense-vs-dense floor (one seed)"
    fig.suptitle(head, fontsize=9, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return _save(fig, path)


def controlled_association(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    metrics: Sequence[str] | None = None,
    alpha: float = 0.05,
    title: str = "",
) -> Path:
    """Per bias metric, the within-configuration rank correlation of drift with bias per layer.

    One panel per metric (rows of up to four), shared y axis from -1 to 1: Spearman rho with
    its interval per layer
    (network order); filled markers where the corrected p is below ``alpha``, open otherwise;
    the number of seeds under each layer. ``rows``: the ``controlled`` table of
    :meth:`repsim.explain.Relations.to_dict`.
    """
    from repsim.report import fmt

    if not rows:
        raise DataError("no controlled rows to plot.")
    metrics = list(metrics) if metrics else list(dict.fromkeys(r["bias"] for r in rows))
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    cell = {(r["layer"], r["bias"]): r for r in rows}
    nc = min(4, len(metrics))
    nr = -(-len(metrics) // nc)
    fig = Figure(figsize=(min(13.5, max(4.5, 0.45 * len(layers) + 2.0) * nc), 3.4 * nr))
    grid = fig.subplots(nr, nc, squeeze=False, sharey=True)
    axes = [ax for row in grid for ax in row]
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    for ax, m in zip(axes, metrics, strict=False):
        ax.axhline(0, color="black", lw=0.8)
        for i, layer in enumerate(layers):
            r = cell.get((layer, m))
            if r is None or not fmt.finite(r.get("estimate")):
                continue
            est, lo, hi = float(r["estimate"]), r.get("low"), r.get("high")
            sig = fmt.finite(r.get("p_adjusted")) and float(r["p_adjusted"]) < alpha
            if fmt.finite(lo) and fmt.finite(hi):
                ax.vlines(i, float(lo), float(hi), color=_COLORS[0], lw=1.2)
            ax.plot(i, est, "o", ms=6, color=_COLORS[0], mfc=_COLORS[0] if sig else "white")
        ax.set_xticks(range(len(layers)), labels=layers, rotation=40, ha="right", fontsize=7)
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(fmt.metric_short(m), fontsize=9)
        ax.grid(axis="y", alpha=0.3, lw=0.5)
    for row in grid:
        row[0].set_ylabel("within-configuration Spearman rho\n(drift vs bias, -1 to 1)", fontsize=8)
    fig.suptitle(
        title or f"Does drift predict bias within a configuration? filled: corrected p < {alpha:g}",
        fontsize=9,
        x=0.01,
        ha="left",
    )
    fig.tight_layout()
    return _save(fig, path)


@alpha_renamed_to_ci
def fit_band(
    x: Any, y: Any, grid: Any, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OLS line with its pointwise percentile bootstrap band.

    OLS line of ``y`` on ``x`` evaluated on ``grid`` and its pointwise percentile bootstrap
    band at level ``ci`` (pairs resampled with replacement, ``numpy.random.default_rng(seed)``;
    :func:`repsim._core.stats.bootstrap_indices` and
    :func:`~repsim._core.stats.percentile_interval`). The deprecated ``alpha=a`` means
    ``ci=1 - a``.

    Returns ``(fit, low, high)``; NaN arrays when fewer than 3 pairs or ``x`` is constant.
    """
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    g = np.asarray(grid, dtype=float)
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep], ya[keep]
    nan = np.full(g.shape, np.nan)
    if xa.size < 3 or np.ptp(xa) == 0:
        return nan, nan.copy(), nan.copy()
    slope, icpt = np.polyfit(xa, ya, 1)
    idx = bootstrap_indices(xa.size, n_boot, seed)
    bx, by = xa[idx], ya[idx]
    bxc = bx - bx.mean(1, keepdims=True)
    sxx = (bxc * bxc).sum(1)
    ok = sxx > 0
    b = (bxc * (by - by.mean(1, keepdims=True))).sum(1)[ok] / sxx[ok]
    a = by.mean(1)[ok] - b * bx.mean(1)[ok]
    lines = a[:, None] + b[:, None] * g[None, :]
    lo, hi = percentile_interval(lines, ci, axis=0)
    return icpt + slope * g, lo, hi


def divergence_bias_scatter(
    x: Any,
    y: Any,
    path: str | Path,
    *,
    labels: Sequence[str] | None = None,
    stats: Mapping[str, Any] | None = None,
    noise_floor: tuple[float, float] | None = None,
    xlabel: str = "divergence (1 - CKA)",
    ylabel: str = "bias",
    title: str = "",
    seed: int = 0,
) -> Path:
    """Member divergence against bias, with the OLS fit and noise floor.

    Member divergence against bias, coloured by ``labels`` (configuration), with the OLS fit
    and its 95% bootstrap band; ``noise_floor = (mean, max)`` of dense-vs-dense divergence is
    drawn as a grey band from 0 to ``max`` with the mean dashed. ``stats`` (a
    :func:`repsim.explain.correlate` row) is written in the legend.
    """
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if xa.shape != ya.shape:
        raise DataError("x and y must have the same length.")
    fig = Figure(figsize=(8.0, 4.4))
    ax = fig.add_subplot()
    if noise_floor is not None and np.isfinite(noise_floor[1]):
        ax.axvspan(0, noise_floor[1], color="0.85", lw=0, label="dense-vs-dense range")
        ax.axvline(noise_floor[0], color="0.4", ls="--", lw=1)
    labs = list(labels) if labels is not None else [""] * len(xa)
    for ci, lab in enumerate(dict.fromkeys(labs)):
        sel = np.array([v == lab for v in labs])
        ax.scatter(
            xa[sel], ya[sel], s=18, alpha=0.8, color=_COLORS[ci % len(_COLORS)], label=lab or None
        )
    finite = np.isfinite(xa) & np.isfinite(ya)
    if finite.sum() >= 3 and np.ptp(xa[finite]) > 0:
        grid = np.linspace(xa[finite].min(), xa[finite].max(), 50)
        fit, lo, hi = fit_band(xa, ya, grid, seed=seed)
        text = "OLS fit"
        if stats:
            text += (
                f": rho = {stats.get('spearman', math.nan):.2f} "
                f"[{stats.get('spearman_low', math.nan):.2f}, "
                f"{stats.get('spearman_high', math.nan):.2f}], "
                f"p = {stats.get('spearman_p', math.nan):.3g}"
            )
        ax.plot(grid, fit, color="black", lw=1.2, label=text)
        ax.fill_between(grid, lo, hi, color="black", alpha=0.12, lw=0)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel.replace(" (", "\n("), fontsize=9)
    pos = ya[np.isfinite(ya)]
    if pos.size and (pos > 0).all() and pos.max() / pos.min() > 1e3:  # many decades: log axis
        ax.set_yscale("log")
        ax.set_ylim(pos.min() / 2, pos.max() * 2)  # the linear fit is clipped to the data
    _human_axis(ax)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
