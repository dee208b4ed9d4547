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


def similarity_vs_sparsity(
    similarity: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    measure: str = "cka",
    layers: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Similarity to the dense model against sparsity, per layer.

    Per layer: mean dense-vs-compressed ``measure`` (over seeds, min-max bars) against
    sparsity, one line per method; the dense-vs-dense values as a grey band (min to max) with
    their mean dashed: the noise floor.

    ``similarity`` rows follow :mod:`repsim.explain`'s schema (``kind``, ``method``,
    ``sparsity``, ``seed``, ``layer``, ``measure``, ``value``); group rows are ignored.
    """
    rows = [r for r in similarity if r.get("measure") == measure and r.get("group") is None]
    if not rows:
        raise DataError(f"no rows of measure {measure!r} to plot.")
    order = list(layers) if layers is not None else list(dict.fromkeys(r["layer"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows if r["kind"] == "compressed"))
    nr, nc = _grid(len(order))
    fig = Figure(figsize=(3.2 * nc, 2.7 * nr + 0.6))
    axes = fig.subplots(nr, nc, squeeze=False)
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
                label="dense vs dense (seeds)",
            )
            ax.axhline(dense.mean(), color="0.4", ls="--", lw=1)
        for mi, method in enumerate(methods):
            pts = [
                r
                for r in rows
                if r["kind"] == "compressed" and r["method"] == method and r["layer"] == layer
            ]
            sps = sorted({float(r["sparsity"]) for r in pts})
            mean, lo, hi = [], [], []
            for s in sps:
                v = np.array([r["value"] for r in pts if float(r["sparsity"]) == s], dtype=float)
                mean.append(np.nanmean(v))
                lo.append(np.nanmin(v))
                hi.append(np.nanmax(v))
            mean_a = np.array(mean)
            yerr = np.maximum(0.0, [mean_a - lo, np.array(hi) - mean_a])
            ax.errorbar(
                sps,
                mean_a,
                yerr=yerr,
                marker="o",
                ms=3,
                capsize=2,
                color=_COLORS[mi % len(_COLORS)],
                label=str(method),
            )
        ax.set_title(layer, fontsize=9)
        ax.set_xlabel("sparsity", fontsize=8)
        ax.set_ylabel(measure, fontsize=8)
        ax.tick_params(labelsize=7)
    for k in range(len(order), nr * nc):
        axes[k // nc][k % nc].set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    height = fig.get_figheight()
    # title on the top line, legend on the bottom line: they never overlap
    fig.legend(
        handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=8, frameon=False
    )
    if title:
        fig.suptitle(title, fontsize=10, y=0.995, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0.35 / height, 1, 1 - 0.35 / height))
    return _save(fig, path)


def group_error_shifts(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    value: str = "accuracy_change",
    title: str = "",
) -> Path:
    """Bars of each group's accuracy change per configuration.

    Bars of each group's ``value`` (default: compressed minus dense accuracy) per
    configuration ``method@sparsity``, mean over seeds with min-max whiskers.

    ``rows``: ``method``, ``sparsity``, ``seed``, ``group``, ``value``.
    """
    if not rows:
        raise DataError("no group rows to plot.")
    configs = list(dict.fromkeys((r["method"], r["sparsity"]) for r in rows))
    groups = list(dict.fromkeys(str(r["group"]) for r in rows))
    width = 0.8 / max(1, len(groups))
    fig = Figure(figsize=(max(5.0, 0.9 * len(configs) * max(1, len(groups)) ** 0.5 + 2), 3.6))
    ax = fig.add_subplot()
    for gi, g in enumerate(groups):
        means, lo, hi = [], [], []
        for cfg in configs:
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
            v = v[np.isfinite(v)]
            m = v.mean() if v.size else np.nan
            means.append(m)
            lo.append(max(0.0, m - v.min()) if v.size else 0.0)  # rounding can go below 0
            hi.append(max(0.0, v.max() - m) if v.size else 0.0)
        x = np.arange(len(configs)) + (gi - (len(groups) - 1) / 2) * width
        ax.bar(x, means, width, yerr=[lo, hi], capsize=2, label=g, color=_COLORS[gi % len(_COLORS)])
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(
        range(len(configs)),
        labels=[f"{m}@{s}" for m, s in configs],
        rotation=30,
        ha="right",
        fontsize=8,
    )
    ax.set_ylabel(value.replace("_", " "))
    ax.legend(fontsize=7, ncol=min(5, len(groups)), title="group", title_fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def fpr_fnr_scatter(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    x: str = "delta_fpr",
    y: str = "delta_fnr",
    title: str = "",
) -> Path:
    """Per class (and configuration) ``dFPR`` against ``dFNR`` with the ``y = x`` line.

    CEV (Blakeney et al. 2021) is the variance of the cloud around its centre; SDE is the mean
    distance of the points from ``y = x``. ``rows``: ``method``, ``sparsity``, ``x``, ``y``
    (optionally ``class``).
    """
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
    configs = list(dict.fromkeys((r["method"], r["sparsity"]) for r in pts))
    fig = Figure(figsize=(5.2, 4.8))
    ax = fig.add_subplot()
    allv = np.array([[float(r[x]), float(r[y])] for r in pts])
    lim = float(np.abs(allv).max()) * 1.1 or 1.0
    ax.plot([-lim, lim], [-lim, lim], color="black", lw=0.8, ls="--", label="y = x")
    for ci, cfg in enumerate(configs):
        sel = np.array(
            [[float(r[x]), float(r[y])] for r in pts if (r["method"], r["sparsity"]) == cfg]
        )
        ax.scatter(
            sel[:, 0],
            sel[:, 1],
            s=14,
            alpha=0.75,
            color=_COLORS[ci % len(_COLORS)],
            label=f"{cfg[0]}@{cfg[1]}",
        )
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.axhline(0, color="0.7", lw=0.5)
    ax.axvline(0, color="0.7", lw=0.5)
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(y.replace("_", " "))
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title, fontsize=10)
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
    fig = Figure(figsize=(5.4, 4.2))
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
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
