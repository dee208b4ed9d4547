"""One self-contained ``index.html`` per study.

One self-contained ``index.html`` per study: every image embedded as a base64 ``data:`` URI,
inline CSS, no scripts and no external references, so the page can be opened offline or sent
as a single file. The written summary is generated from the numbers by :func:`summarize`.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repsim._core.io import write_text
from repsim.errors import DataError

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #ddd;
padding-bottom:.2em;margin-top:1.8em}
.meta{color:#666;font-size:.9em}.summary li{margin:.3em 0}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
table{border-collapse:collapse;font-size:.8em;margin:.8em 0}
th,td{border:1px solid #ddd;padding:.2em .5em;text-align:right}th{background:#f5f5f5}
td:first-child,th:first-child{text-align:left}
"""


@dataclass
class Section:
    """One part of the page.

    One part of the page: a heading, paragraphs, figures ``(path, caption)`` and tables
    ``(caption, rows)``.
    """

    heading: str
    text: Sequence[str] = ()
    figures: Sequence[tuple[str | Path, str]] = ()
    tables: Sequence[tuple[str, Sequence[Mapping[str, Any]]]] = field(default_factory=list)


def image_data_uri(path: str | Path) -> str:
    """A PNG file as a ``data:image/png;base64,...`` URI.

    Raises
    ------
    DataError
        If the file is missing or is not a PNG.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"figure {p} does not exist; cannot embed it in the report.")
    blob = p.read_bytes()
    if not blob.startswith(b"\x89PNG\r\n\x1a\n"):
        raise DataError(f"figure {p} is not a PNG file.")
    return "data:image/png;base64," + base64.b64encode(blob).decode("ascii")


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        return f"{v:.4g}"
    return str(v)


def _table(caption: str, rows: Sequence[Mapping[str, Any]], max_rows: int = 60) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>"
        for r in rows[:max_rows]
    )
    more = (
        f"<p class='meta'>{len(rows) - max_rows} more rows in the CSV files.</p>"
        if len(rows) > max_rows
        else ""
    )
    return (
        f"<table><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>{more}"
    )


def render(
    *, title: str, summary: Sequence[str], sections: Sequence[Section], meta: str = ""
) -> str:
    """The page as a string (see :func:`write_index`)."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if meta:
        parts.append(f"<p class='meta'>{html.escape(meta)}</p>")
    parts.append("<h2>Summary</h2><ul class='summary'>")
    parts += [f"<li>{html.escape(s)}</li>" for s in summary]
    parts.append("</ul>")
    for sec in sections:
        parts.append(f"<h2>{html.escape(sec.heading)}</h2>")
        parts += [f"<p>{html.escape(t)}</p>" for t in sec.text]
        for path, caption in sec.figures:
            parts.append(
                f"<figure><img src='{image_data_uri(path)}' alt='{html.escape(caption)}'>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        for caption, rows in sec.tables:
            parts.append(_table(caption, rows))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_index(
    out_dir: str | Path,
    *,
    title: str,
    summary: Sequence[str],
    sections: Sequence[Section],
    meta: str = "",
) -> Path:
    """Write ``out_dir/index.html`` and return its path.

    Write ``out_dir/index.html``: summary bullets, then each section's text, figures (PNG,
    embedded as base64 ``data:`` URIs) and tables. Returns the path.
    """
    path = Path(out_dir) / "index.html"
    return write_text(render(title=title, summary=summary, sections=sections, meta=meta), path)


def _ci(row: Mapping[str, Any], key: str) -> str:
    return (
        f"{row[key]:.2f} [{row[f'{key}_low']:.2f}, {row[f'{key}_high']:.2f}]"
        if row.get(key) is not None and not math.isnan(row[key])
        else "undefined"
    )


def summarize(results: Mapping[str, Any]) -> list[str]:
    """Headline sentences generated from a study's numbers.

    ``results`` may hold ``dense`` (rows with ``test_accuracy``), ``relations`` (a
    :meth:`repsim.explain.Relations.to_dict`), ``configs`` (rows with ``method``, ``sparsity``,
    ``accuracy``, ``cev``, ``sde`` and ``mean_similarity``, means over seeds), ``seeds`` and
    ``alpha``. Sentences for missing parts are left out.
    """
    out: list[str] = []
    dense = results.get("dense") or []
    seeds = results.get("seeds") or []
    if dense:
        accs = [float(r["test_accuracy"]) for r in dense]
        out.append(
            f"Dense models ({len(accs)} seeds: {', '.join(map(str, seeds))}) reach "
            f"{min(accs):.4f} to {max(accs):.4f} test accuracy."
        )
    for c in results.get("configs") or []:
        text = (
            f"{c['method']} at sparsity {c['sparsity']}: accuracy {c['accuracy']:.4f}, "
            f"CEV {c['cev']:.4g}, SDE {c['sde']:.4g}"
        )
        if c.get("mean_similarity") is not None:
            text += f", mean layer CKA to dense {c['mean_similarity']:.3f}"
        out.append(text + " (means over seeds).")
    for k in results.get("kd_vs_ft") or []:
        out.append(
            f"{k['prune_method']} at sparsity {k['sparsity']}: distillation vs fine-tuning "
            f"(kd - ft, {k['n_seeds']} seeds paired) changes CEV by {k['cev_diff']:+.4g} "
            f"[{k['cev_diff_low']:+.4g}, {k['cev_diff_high']:+.4g}], SDE by "
            f"{k['sde_diff']:+.4g} [{k['sde_diff_low']:+.4g}, {k['sde_diff_high']:+.4g}] and "
            f"mean similarity to the dense model by {k['similarity_diff']:+.4f} "
            f"[{k['similarity_diff_low']:+.4f}, {k['similarity_diff_high']:+.4f}]."
        )
    rel = results.get("relations") or {}
    alpha = float(results.get("alpha", 0.05))
    floor = {r["layer"]: r for r in rel.get("noise_floor", [])}
    corrs = rel.get("correlations", [])
    for bias in dict.fromkeys(r["bias"] for r in corrs):
        rows = [
            r
            for r in corrs
            if r["bias"] == bias and r.get("spearman") is not None and not math.isnan(r["spearman"])
        ]
        if not rows:
            out.append(
                f"The correlation of divergence with {bias} is undefined at every layer "
                "(too few members or constant values)."
            )
            continue
        best = max(rows, key=lambda r: abs(r["spearman"]))
        signif = "significant" if best["spearman_p"] < alpha else "not significant"
        out.append(
            f"Divergence ({rel.get('divergence', '1-cka')}) tracks {bias} most strongly at "
            f"{best['layer']}: Spearman rho {_ci(best, 'spearman')} ({100 * (1 - alpha):.0f}% "
            f"bootstrap CI), permutation p = {best['spearman_p']:.3g} ({signif} at "
            f"{alpha:g}), n = {best['n']} models."
        )
    onset = rel.get("onset_layer") or {}
    if "all" in onset:
        layer = onset["all"]
        if layer is None:
            out.append(
                "No layer's dense-vs-compressed divergence exceeds the dense-vs-dense "
                "noise floor with confidence: the drift is within seed noise."
            )
        else:
            fl = floor.get(layer, {})
            out.append(
                f"Onset layer: {layer} is the first layer whose divergence from the dense "
                f"model exceeds the seed-to-seed noise floor (mean dense-vs-dense divergence "
                f"{fl.get('mean', math.nan):.4f}) with {100 * (1 - alpha):.0f}% confidence."
            )
        per = {k: v for k, v in onset.items() if k != "all"}
        if per:
            out.append(
                "Onset per configuration: "
                + "; ".join(f"{k}: {v or 'none'}" for k, v in per.items())
                + "."
            )
    gaps = [
        g
        for g in rel.get("group_gaps", [])
        if g.get("gap") is not None and not math.isnan(g["gap"])
    ]
    if gaps:
        g = max(gaps, key=lambda r: r["gap"])
        out.append(
            f"Largest group gap: group {g['group']} drifts {g['gap']:+.4f} more than "
            f"{g['reference']} at {g['layer']} (CI [{g['gap_low']:.4f}, {g['gap_high']:.4f}]; "
            f"the same gap between dense seeds is {g['noise_gap']:+.4f})."
        )
    if not out:
        raise DataError("nothing to summarise: results hold no dense, configs or relations.")
    return out
