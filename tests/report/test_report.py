"""Report writers on synthetic tables: files exist, PNGs are PNGs, the HTML is self-contained."""

from __future__ import annotations

import base64
import json
import math
import re

import numpy as np
import pytest

from repsim.errors import DataError
from repsim.explain import relate
from repsim.report import plots
from repsim.report.html import Section, render, summarize, write_index
from repsim.report.tables import read_csv, write_csv, write_json

PNG = b"\x89PNG\r\n\x1a\n"


def _sim_rows(seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = []
    for a in range(3):
        for b in range(a + 1, 3):
            for layer in ("c1", "c2", "fc"):
                rows.append(
                    {
                        "kind": "dense",
                        "seed": a,
                        "seed_b": b,
                        "layer": layer,
                        "measure": "cka",
                        "value": 0.97 + 0.01 * rng.random(),
                    }
                )
    shifts = []
    for m in ("magnitude", "random"):
        for sp in (0.5, 0.8):
            for s in range(3):
                d = sp * 0.2 + 0.02 * rng.standard_normal()
                for layer in ("c1", "c2", "fc"):
                    rows.append(
                        {
                            "kind": "compressed",
                            "method": m,
                            "sparsity": sp,
                            "seed": s,
                            "layer": layer,
                            "measure": "cka",
                            "value": 1 - d,
                        }
                    )
                shifts.append(
                    {
                        "method": m,
                        "sparsity": sp,
                        "seed": s,
                        "cev": 10 * d,
                        "sde": 5 * d + rng.random(),
                    }
                )
    return rows, shifts


def test_tables_roundtrip_exact_and_nan(tmp_path):
    rows = [{"a": 1, "b": 0.1 + 0.2, "c": math.nan}, {"a": 2, "d": None, "b": np.float64(1 / 3)}]
    path = write_csv(rows, tmp_path / "t.csv")
    back = read_csv(path)
    assert list(back[0]) == ["a", "b", "c", "d"]
    assert float(back[0]["b"]) == 0.1 + 0.2 and float(back[1]["b"]) == 1 / 3
    assert back[0]["c"] == "nan" and back[1]["d"] == ""
    jp = write_json(
        {"x": [np.float32(1.5), math.nan, math.inf], "n": np.int64(3)}, tmp_path / "r.json"
    )
    assert json.loads(jp.read_text()) == {"x": [1.5, None, None], "n": 3}


def test_plots_write_pngs(tmp_path):
    sim, shifts = _sim_rows()
    paths = [
        plots.similarity_heatmap(
            np.eye(3) * 0.5 + 0.4,
            ["a", "b", "c"],
            ["a", "b", "c"],
            tmp_path / "h.png",
            title="dense vs pruned",
        ),
        plots.similarity_vs_sparsity(sim, tmp_path / "s.png"),
        plots.group_error_shifts(
            [
                {
                    "method": "m",
                    "sparsity": 0.5,
                    "seed": s,
                    "group": g,
                    "accuracy_change": -0.01 * s,
                }
                for s in range(3)
                for g in ("maj", "min")
            ],
            tmp_path / "g.png",
        ),
        plots.fpr_fnr_scatter(
            [
                {
                    "method": "m",
                    "sparsity": 0.5,
                    "class": c,
                    "delta_fpr": c - 4.5,
                    "delta_fnr": 0.5 * c,
                }
                for c in range(10)
            ],
            tmp_path / "f.png",
        ),
        plots.divergence_bias_scatter(
            np.arange(6.0),
            np.arange(6.0) ** 2,
            tmp_path / "d.png",
            labels=["a"] * 3 + ["b"] * 3,
            noise_floor=(0.5, 1.0),
            stats={"spearman": 1.0, "spearman_low": 1.0, "spearman_high": 1.0, "spearman_p": 0.003},
        ),
    ]
    # identical values whose mean rounds away from them must not give negative error bars
    v = 0.1 + 0.2
    paths.append(
        plots.group_error_shifts(
            [
                {"method": "m", "sparsity": 0.5, "seed": s, "group": "g", "accuracy_change": v}
                for s in range(3)
            ],
            tmp_path / "g2.png",
        )
    )
    for p in paths:
        assert p.is_file() and p.read_bytes().startswith(PNG)
    with pytest.raises(DataError):
        plots.similarity_heatmap(np.eye(2), ["a"], ["a", "b"], tmp_path / "x.png")
    with pytest.raises(DataError, match="svcca"):
        plots.similarity_vs_sparsity(sim, tmp_path / "y.png", measure="svcca")


def test_fit_band_contains_ols_line_and_matches_polyfit():
    rng = np.random.default_rng(0)
    x = rng.random(30)
    y = 2 * x + 0.1 * rng.standard_normal(30)
    grid = np.linspace(0, 1, 5)
    fit, lo, hi = plots.fit_band(x, y, grid, n_boot=300, seed=1)
    slope, icpt = np.polyfit(x, y, 1)
    assert np.allclose(fit, icpt + slope * grid)
    assert np.all(lo <= fit + 1e-9) and np.all(fit <= hi + 1e-9)
    again = plots.fit_band(x, y, grid, n_boot=300, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip((fit, lo, hi), again))


def test_html_is_self_contained_and_embeds_every_image(tmp_path):
    sim, shifts = _sim_rows()
    figs = [
        plots.similarity_vs_sparsity(sim, tmp_path / "s.png"),
        plots.similarity_heatmap(np.eye(2), ["a", "b"], ["a", "b"], tmp_path / "h.png"),
    ]
    rel = relate(sim, shifts, n_boot=200, n_permutations=200)
    summary = summarize(
        {
            "relations": rel.to_dict(),
            "seeds": [0, 1, 2],
            "dense": [{"test_accuracy": 0.98}, {"test_accuracy": 0.97}],
        }
    )
    index = write_index(
        tmp_path / "rep",
        title="A <study>",
        summary=summary,
        sections=[
            Section(
                "Similarity",
                ["text & more"],
                [(figs[0], "vs sparsity"), (figs[1], "heatmap")],
                [("relations", rel.correlations)],
            )
        ],
    )
    page = index.read_text()
    srcs = re.findall(r"<img src='([^']*)'", page)
    assert len(srcs) == 2
    for src, fig in zip(srcs, figs):
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == fig.read_bytes()
    assert not re.search(r"(src|href)=['\"]?(https?:|//|file:)", page)
    assert "<script" not in page and "<link" not in page
    assert "A &lt;study&gt;" in page and "text &amp; more" in page
    assert "Onset layer" in page or "noise floor" in page


def test_summarize_reports_numbers_from_relations():
    sim, shifts = _sim_rows()
    rel = relate(sim, shifts, bias="cev", n_boot=200, n_permutations=200).to_dict()
    text = summarize({"relations": rel})
    best = max(rel["correlations"], key=lambda r: abs(r["spearman"]))
    assert any(f"{best['spearman']:.2f}" in s and best["layer"] in s for s in text)
    on = rel["onset_layer"]["all"]
    assert any((on or "No layer") in s for s in text)
    with pytest.raises(DataError):
        summarize({})


def test_missing_figure_is_an_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        render(
            title="t", summary=["s"], sections=[Section("x", figures=[(tmp_path / "no.png", "c")])]
        )


def test_fit_band_old_alpha_spelling_warns_and_gives_the_same_band():
    rng = np.random.default_rng(3)
    x, y = rng.random(20), rng.random(20)
    grid = np.linspace(0, 1, 4)
    new = plots.fit_band(x, y, grid, n_boot=100, ci=0.9, seed=2)
    with pytest.warns(DeprecationWarning, match=r"fit_band\(alpha=\.\.\.\)"):
        old = plots.fit_band(x, y, grid, n_boot=100, alpha=0.1, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(old, new, strict=True))
