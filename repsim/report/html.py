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
from repsim.report import fmt

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1300px;margin:1.2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #ddd;
padding-bottom:.2em;margin-top:1.8em}
.meta{color:#666;font-size:.9em}.summary li{margin:.3em 0}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
table{border-collapse:collapse;font-size:.8em;margin:.8em 0}
th,td{border:1px solid #ddd;padding:.2em .5em;text-align:right}th{background:#f5f5f5}
td:first-child,th:first-child{text-align:left}
caption{text-align:left;font-weight:600;padding:.3em 0;caption-side:top}
.scroll{overflow-x:auto;max-width:100%}
.holds{background:#f6f9fc;border:1px solid #c9d8e8;border-left:5px solid #2a6ebb;padding:.2em 1em .6em;
margin:1em 0}.holds h2{margin-top:.4em;border:0}.holds p{margin:.45em 0}
.pooled h2{color:#8a4b00}.warn{color:#8a4b00}
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
        return fmt.number(v, 4)
    if isinstance(v, list | tuple):
        return ", ".join(map(str, v))
    if isinstance(v, dict):
        return ", ".join(f"{k}={x}" for k, x in v.items())
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
        f"<div class='scroll'><table><caption>{html.escape(caption)}</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{more}"
    )


def _section(sec: Section, css: str = "") -> list[str]:
    parts = [f"<section class='{css}'>" if css else "<section>"]
    parts.append(f"<h2>{html.escape(sec.heading)}</h2>")
    parts += [f"<p>{html.escape(t)}</p>" for t in sec.text]
    for path, caption in sec.figures:
        parts.append(
            f"<figure><img src='{image_data_uri(path)}' alt='{html.escape(caption)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    for caption, rows in sec.tables:
        parts.append(_table(caption, rows))
    parts.append("</section>")
    return parts


def render(
    *,
    title: str,
    summary: Sequence[str],
    sections: Sequence[Section],
    meta: str = "",
    lead: Section | None = None,
) -> str:
    """The page as a string (see :func:`write_index`).

    ``lead`` (the controlled results, "What holds") is drawn first, in a box, before the
    summary and every figure. A section whose heading starts with ``"Pooled"`` is styled as
    the confounded one. In a section: text, figures, then tables.
    """
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if meta:
        parts.append(f"<p class='meta'>{html.escape(meta)}</p>")
    if lead is not None:
        parts += _section(lead, "holds")
    if summary:
        parts.append("<h2>Summary</h2><ul class='summary'>")
        parts += [f"<li>{html.escape(s)}</li>" for s in summary]
        parts.append("</ul>")
    for sec in sections:
        parts += _section(sec, "pooled" if sec.heading.lower().startswith("pooled") else "")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_index(
    out_dir: str | Path,
    *,
    title: str,
    summary: Sequence[str],
    sections: Sequence[Section],
    meta: str = "",
    lead: Section | None = None,
) -> Path:
    """Write ``out_dir/index.html`` and return its path.

    Write ``out_dir/index.html``: the lead block (controlled results), summary bullets, then
    each section's text, figures (PNG, embedded as base64 ``data:`` URIs) and tables.
    Returns the path.
    """
    path = Path(out_dir) / "index.html"
    page = render(title=title, summary=summary, sections=sections, meta=meta, lead=lead)
    return write_text(page, path)


def _ci(row: Mapping[str, Any], key: str) -> str:
    return (
        f"{row[key]:.2f} [{row[f'{key}_low']:.2f}, {row[f'{key}_high']:.2f}]"
        if row.get(key) is not None and not math.isnan(row[key])
        else "undefined"
    )


def _config_sentence(
    c: Mapping[str, Any], floor: Mapping[str, float], binary: bool, collapsed: bool
) -> str:
    from repsim.report.lead import metric_order

    role = fmt.role(c["method"], c)
    seeds = f"{c['n_seeds']} seeds" if c.get("n_seeds") is not None else "mean over seeds"
    head = f"{c['method']} at sparsity {c['sparsity']} ({role}, {seeds}): accuracy " + fmt.number(
        c.get("accuracy"), 4
    )
    parts = []
    metrics = metric_order([m for m in ("cev", "sde", "worst_group_drop") if m in c], binary)
    for m in metrics:
        if binary and m == "cev":
            continue
        text = f"{fmt.metric_short(m)} {fmt.number(c.get(m))}"
        text += f" (floor {fmt.number(floor[m])})" if m in floor else ""
        parts.append(text)
    if c.get("mean_similarity") is not None:
        parts.append(f"mean layer similarity to dense {fmt.number(c['mean_similarity'])}")
    text = head + (", " + ", ".join(parts) if parts else "") + "."
    if collapsed:
        text += " COLLAPSED: accuracy near chance; its similarity and bias numbers describe a broken model."
    return text


def summarize(results: Mapping[str, Any], *, lead: bool = True) -> list[str]:
    """Headline sentences generated from a study's numbers, controlled results first.

    ``results`` may hold ``dense`` (rows with ``test_accuracy``), ``relations`` (a
    :meth:`repsim.explain.Relations.to_dict`), ``configs`` (rows with ``method``, ``sparsity``,
    ``accuracy``, ``cev``, ``sde``, ``worst_group_drop`` and ``mean_similarity``, means over
    seeds), ``fairness_floor`` (dense seed pairs scored as compressed), ``n_classes``,
    ``seeds`` and ``alpha``. Sentences for missing parts are left out.

    With ``lead`` (default) the list opens with :func:`repsim.report.lead.what_holds`'s
    sentences: whether drift predicts bias within configurations (a plain negative sentence
    when nothing survives correction), drift beyond its control, bias beside its floor. The
    pooled correlations come last, each labelled confounded by sparsity.
    """
    from repsim.report import lead as lead_mod

    out: list[str] = []
    rel = results.get("relations") or {}
    if lead and rel:
        out += lead_mod.what_holds(results)[0]
    dense = results.get("dense") or []
    seeds = results.get("seeds") or []
    binary = lead_mod.is_binary(results)
    dense_acc = lead_mod.dense_accuracy(results)
    configs = list(results.get("configs") or [])
    broken = fmt.collapsed(configs, dense_acc, results.get("n_classes"))
    if dense:
        accs = [float(r["test_accuracy"]) for r in dense]
        out.append(
            f"Dense models ({len(accs)} seeds: {', '.join(map(str, seeds))}) reach "
            f"{min(accs):.4f} to {max(accs):.4f} test accuracy."
        )
    if broken:
        t = fmt.collapse_threshold(dense_acc, results.get("n_classes"))
        out.append(
            f"{len(broken)} configuration(s) collapsed (mean accuracy below chance + 10% of the "
            f"dense margin over chance = {t:.3f}): "
            + ", ".join(fmt.config_label(*k) for k in sorted(broken, key=str))
            + "."
        )
    floor = lead_mod.floor_means(results)
    if configs and not floor:
        out.append("Bias metrics: " + lead_mod.no_floor_text(results))
    for c in fmt.grouped_configs(configs):
        out.append(_config_sentence(c, floor, binary, (c["method"], c["sparsity"]) in broken))
    for k in results.get("kd_vs_ft") or []:
        out.append(
            f"{k['prune_method']} at sparsity {k['sparsity']}: distillation vs fine-tuning "
            f"(kd - ft, {k['n_seeds']} seeds paired) changes CEV by {fmt.signed(k['cev_diff'])} "
            f"[{fmt.signed(k['cev_diff_low'])}, {fmt.signed(k['cev_diff_high'])}], SDE by "
            f"{fmt.signed(k['sde_diff'])} [{fmt.signed(k['sde_diff_low'])}, "
            f"{fmt.signed(k['sde_diff_high'])}] and mean similarity to the dense model by "
            f"{k['similarity_diff']:+.4f} "
            f"[{k['similarity_diff_low']:+.4f}, {k['similarity_diff_high']:+.4f}]."
        )
    alpha = float(results.get("alpha", 0.05))
    floor_rows = {r["layer"]: r for r in rel.get("noise_floor", [])}
    onset = rel.get("onset_layer") or {}
    if "all" in onset:
        layer = onset["all"]
        if layer is None:
            out.append(
                "No layer's dense-vs-compressed divergence, pooled over configurations, exceeds "
                "the dense-vs-dense noise floor with confidence: the drift is within seed noise."
            )
        else:
            fl = floor_rows.get(layer, {})
            out.append(
                f"Onset layer (pooled over configurations, against the dense-vs-dense floor): "
                f"{layer} is the first layer whose divergence from the dense model exceeds the "
                f"seed-to-seed noise floor (mean dense-vs-dense divergence "
                f"{fl.get('mean', math.nan):.4f}) with {100 * (1 - alpha):.0f}% confidence."
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
    corrs = rel.get("correlations", [])
    for bias in dict.fromkeys(r["bias"] for r in corrs):
        rows = [
            r
            for r in corrs
            if r["bias"] == bias and r.get("spearman") is not None and not math.isnan(r["spearman"])
        ]
        if not rows:
            out.append(
                f"{POOLED_PREFIX}: the correlation of divergence with {bias} is undefined at "
                "every layer (too few members or constant values)."
            )
            continue
        best = max(rows, key=lambda r: abs(r["spearman"]))
        signif = "significant" if best["spearman_p"] < alpha else "not significant"
        out.append(
            f"{POOLED_PREFIX}: divergence ({rel.get('divergence', '1-cka')}) tracks {bias} most "
            f"strongly at {best['layer']}: Spearman rho {_ci(best, 'spearman')} "
            f"({100 * (1 - alpha):.0f}% bootstrap CI), permutation p = "
            f"{best['spearman_p']:.3g} ({signif} at {alpha:g}, uncorrected), n = {best['n']} "
            "models. Both grow with sparsity, so this is not evidence that drift causes bias."
        )
    if not out:
        raise DataError("nothing to summarise: results hold no dense, configs or relations.")
    return out


#: How every pooled number is introduced: it is confounded by sparsity.
POOLED_PREFIX = "Pooled across sparsities (confounded by sparsity)"
