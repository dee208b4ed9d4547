"""Figures build and save."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure

from repsim.saliency import (
    plot_saliency_histograms,
    plot_salient_removed,
    saliency_mask,
    salient_removed,
)


def test_plots_save(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    sal = {
        g: {
            "a.weight": torch.rand(20, 10, generator=gen),
            "b.weight": torch.rand(5, 20, generator=gen),
        }
        for g in ("minority", "majority")
    }
    keep = saliency_mask(sal["majority"], 0.3)
    rows = salient_removed(sal, keep, fraction=0.2)
    fig = plot_salient_removed(rows, path=tmp_path / "removed.png")
    assert isinstance(fig, Figure) and (tmp_path / "removed.png").stat().st_size > 0
    fig2 = plot_saliency_histograms(sal, path=tmp_path / "hist.png")
    assert isinstance(fig2, Figure) and (tmp_path / "hist.png").stat().st_size > 0
