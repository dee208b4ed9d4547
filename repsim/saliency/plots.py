"""Plots of saliency overlap and saliency distributions (matplotlib figures on the Agg canvas)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from repsim.errors import ConfigError
from repsim.saliency.overlap import ALL_PARAMETERS


def _figure(figsize: tuple[float, float]) -> tuple[Figure, object]:
    """A figure on the Agg canvas (no pyplot, so the caller's backend is left alone)."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def plot_salient_removed(
    rows: Iterable[Mapping[str, object]],
    *,
    path: str | Path | None = None,
    title: str = "Salient weights removed by pruning",
) -> Figure:
    """Per-layer bars of each group's removed share of salient weights, chance beside them.

    Parameters
    ----------
    rows : sequence of dict
        Rows of :func:`repsim.saliency.salient_removed` (a MetricTable or dicts).
    path : str or Path, optional
        Save the figure there (PNG/PDF by suffix).

    Returns
    -------
    matplotlib.figure.Figure
    """
    rows = list(rows)
    if not rows:
        raise ConfigError("No rows to plot.")
    groups = list(dict.fromkeys(str(r["group"]) for r in rows))
    layers = list(dict.fromkeys(str(r["parameter"]) for r in rows))
    value = {(str(r["group"]), str(r["parameter"])): r for r in rows}
    width = 0.8 / (len(groups) + 1)
    x = np.arange(len(layers))
    fig, ax = _figure((max(5.0, 1.2 * len(layers) + 2), 3.8))
    for i, g in enumerate(groups):
        share = [
            float(value[(g, p)]["removed_share"]) if (g, p) in value else np.nan for p in layers
        ]
        ax.bar(x + i * width, share, width, label=g)
    chance = [float(next(r["chance"] for r in rows if r["parameter"] == p)) for p in layers]
    ax.bar(
        x + len(groups) * width, chance, width, color="0.75", hatch="//", label="chance (sparsity)"
    )
    ax.set_xticks(x + width * len(groups) / 2)
    ax.set_xticklabels(
        [p if p != ALL_PARAMETERS else "all" for p in layers], rotation=30, ha="right"
    )
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of salient weights removed")
    ax.set_title(title)
    ax.legend(fontsize="small", frameon=False)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig


def plot_saliency_histograms(
    saliency: Mapping[str, Mapping[str, torch.Tensor]],
    *,
    bins: int = 60,
    log: bool = True,
    parameters: Sequence[str] | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Histogram of each group's saliency values (log10 of positive values by default).

    Parameters
    ----------
    saliency : mapping
        ``{group: {parameter_name: scores}}`` (``weight_saliency`` output).
    bins : int
        Number of bins, shared by all groups.
    log : bool
        Histogram ``log10(s)`` of the positive scores (saliency spans orders of magnitude).
    parameters : sequence of str, optional
        Only these parameters.
    path : str or Path, optional
        Save the figure there.
    """
    if not saliency:
        raise ConfigError("No saliency maps to plot.")
    values = {}
    for g, m in saliency.items():
        names = list(m) if parameters is None else list(parameters)
        v = torch.cat([torch.as_tensor(m[n]).reshape(-1).double() for n in names]).numpy()
        values[g] = np.log10(v[v > 0]) if log else v
    lo = min(float(v.min()) for v in values.values() if v.size)
    hi = max(float(v.max()) for v in values.values() if v.size)
    edges = np.linspace(lo, hi, bins + 1)
    fig, ax = _figure((6, 3.8))
    for g, v in values.items():
        ax.hist(v, bins=edges, histtype="step", density=True, label=g)
    ax.set_xlabel("log10 saliency" if log else "saliency")
    ax.set_ylabel("density")
    ax.set_title("Weight saliency per group")
    ax.legend(fontsize="small", frameon=False)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig
