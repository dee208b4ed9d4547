"""The statistics behind docs/findings.md, recomputed from the shipped studies' report folders.

Run after the studies (``repsim run imbalanced_digits`` etc.)::

    python analyses/scripts/findings_tables.py reports/imbalanced_digits reports/adult_mlp ...

For every study it prints Markdown tables, all over dense seeds (the unit of replication):

* the group gap of each configuration: per seed, the accuracy drop of the smallest group minus
  that of the largest (``acc_drop:<small> - acc_drop:<large>``, from ``shifts.csv``), its mean
  with a Student t interval and two-sided p, Holm-adjusted across the study's compressed
  configurations; beside it the same gap of the configuration's recovery-only and
  random-pruning controls and of the dense-vs-dense floor (dense seed pairs), and whether the
  configuration is accuracy-matched (mean accuracy within 1 point of the dense models');
* the share of compression-identified exemplars (CIEs) in the small group against its share of
  the test set (Hooker et al. 2019);
* the controlled association of per-layer drift with bias (``controlled.csv``): how many of the
  layer x metric tests survive Holm, the smallest adjusted p, beside the pooled (confounded)
  figure;
* distillation against fine-tuning (``kd_vs_ft.csv``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from repsim._core.stats import adjust_pvalues, t_test


def _rows(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _fmt(v: float, digits: int = 3) -> str:
    if v is None or not np.isfinite(v):
        return "n/a"
    return f"{v:+.{digits}f}"


def _ci(res: dict[str, Any], digits: int = 3) -> str:
    return f"{_fmt(res['mean'], digits)} [{_fmt(res['low'], digits)}, {_fmt(res['high'], digits)}]"


def _groups(report: Path) -> tuple[str, str]:
    """The smallest and the largest group of the test split (by ``n`` of dense seed rows)."""
    sizes: dict[str, float] = {}
    for r in _rows(report / "group_metrics.csv"):
        if r["model"] == "dense":
            sizes[r["group"]] = _num(r["n"])
    ordered = sorted(sizes, key=lambda g: sizes[g])
    return ordered[0], ordered[-1]


def _gap_by_seed(rows: list[dict[str, Any]], small: str, large: str) -> dict[str, float]:
    return {
        r["seed"]: _num(r[f"acc_drop:{small}"]) - _num(r[f"acc_drop:{large}"])
        for r in rows
        if np.isfinite(_num(r[f"acc_drop:{small}"])) and np.isfinite(_num(r[f"acc_drop:{large}"]))
    }


def _scaled(res: dict[str, Any], factor: float) -> dict[str, Any]:
    lo, hi = sorted((factor * res["low"], factor * res["high"]))
    return {"mean": factor * res["mean"], "low": lo, "high": hi}


def group_gap_table(report: Path) -> str:
    """Markdown: per configuration, the small-minus-large group accuracy-drop gap over seeds."""
    results = json.loads((report / "results.json").read_text())
    small, large = _groups(report)
    shifts = [r for r in _rows(report / "shifts.csv") if r.get("kind", "compressed") != "dense"]
    floor_path = report / "fairness_floor.csv"
    floor = _rows(floor_path) if floor_path.is_file() else []
    by_config: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in shifts:
        by_config[(r["method"], r["sparsity"])].append(r)
    roles = {(c["method"], str(c["sparsity"])): c.get("role", "") for c in results["configs"]}
    dense_acc = float(np.mean([d["test_accuracy"] for d in results["dense"]]))
    group_acc: dict[str, list[float]] = defaultdict(list)
    for r in _rows(report / "group_metrics.csv"):
        if r["model"] == "dense":
            group_acc[r["group"]].append(_num(r["accuracy"]))
    dense_gap = float(np.mean(group_acc[small]) - np.mean(group_acc[large]))
    sign = -1.0 if dense_gap >= 0 else 1.0  # widening = sign * (drop_small - drop_large)
    floor_gap = [_num(r[f"acc_drop:{small}"]) - _num(r[f"acc_drop:{large}"]) for r in floor]
    compressed = [k for k in by_config if roles.get((k[0], str(float(k[1])))) == "compressed"]
    tests = {k: t_test(list(_gap_by_seed(by_config[k], small, large).values())) for k in by_config}
    adjusted = dict(
        zip(compressed, adjust_pvalues([tests[k]["p"] for k in compressed], "holm"), strict=True)
    )
    lines = [
        f"Gap = accuracy drop of `{small}` (smallest group) minus that of `{large}` (largest), "
        f"per dense seed; mean [95% t interval]. Dense accuracy {dense_acc:.4f}. Dense-vs-dense "
        f"floor of the gap: mean {_fmt(float(np.mean(floor_gap)) if floor_gap else math.nan)}, "
        f"SD {float(np.std(floor_gap, ddof=1)) if len(floor_gap) > 1 else math.nan:.3f} over "
        f"{len(floor_gap)} seed pairs. Dense accuracy of `{small}` minus `{large}`: "
        f"{dense_gap:+.4f}; *widening* is the change of the absolute between-group accuracy gap "
        "(positive: the gap grows), i.e. the gap times "
        f"{sign:+.0f}.",
        "",
        "| configuration | role | seeds | accuracy | matched | gap | widening | p (Holm) "
        "| recovery-only gap | random-pruning gap |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(
        by_config, key=lambda k: (roles.get((k[0], str(float(k[1])))) != "compressed", k)
    ):
        method, sp = key
        rows = by_config[key]
        acc = float(np.mean([_num(r["accuracy"]) for r in rows]))
        role = roles.get((method, str(float(sp))), "")
        prune, _, rec = method.partition("+")
        ctl_rec = tests.get((f"none+{rec}", "0.0")) if rec else None
        ctl_rand = tests.get((f"random+{rec}" if rec else "random", sp))
        p = adjusted.get(key, math.nan)
        lines.append(
            f"| {method}@{sp} | {role} | {len(rows)} | {acc:.4f} | "
            f"{'yes' if dense_acc - acc <= 0.01 else 'no'} | {_ci(tests[key])} | "
            f"{_ci(_scaled(tests[key], sign))} | "
            f"{'' if not np.isfinite(p) else f'{p:.3g}'} | "
            f"{_ci(ctl_rec) if ctl_rec and prune not in ('none', 'random') else ''} | "
            f"{_ci(ctl_rand) if ctl_rand and prune not in ('none', 'random') else ''} |"
        )
    return "\n".join(lines)


def exemplar_table(report: Path) -> str:
    """Markdown: the small group's share of the CIEs against its share of the test set."""
    small, _ = _groups(report)
    sizes = {}
    for r in _rows(report / "group_metrics.csv"):
        if r["model"] == "dense" and r["seed"] == "0":
            sizes[r["group"]] = _num(r["n"])
    base = sizes[small] / sum(sizes.values())
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for r in _rows(report / "exemplars.csv"):
        c = counts[(r["method"], r["sparsity"])]
        c[0] += r["group"] == small
        c[1] += 1
    lines = [
        f"Share of `{small}` among the CIEs (top exemplars by taxicab score); its share of the "
        f"test set is {base:.3f}.",
        "",
        "| configuration | CIEs | share of small group | ratio to base rate |",
        "|---|---|---|---|",
    ]
    for (method, sp), (k, n) in counts.items():
        share = k / n if n else math.nan
        lines.append(f"| {method}@{sp} | {n} | {share:.3f} | {share / base:.2f} |")
    return "\n".join(lines)


def association_table(report: Path) -> str:
    """Markdown: the controlled association beside the pooled one."""
    controlled = _rows(report / "controlled.csv")
    pooled = _rows(report / "pooled.csv")

    def summary(rows: list[dict[str, Any]]) -> tuple[int, int, dict[str, Any] | None]:
        finite = [r for r in rows if np.isfinite(_num(r.get("p_adjusted")))]
        sig = [r for r in finite if _num(r["p_adjusted"]) < 0.05]
        best = min(finite, key=lambda r: _num(r["p_adjusted"])) if finite else None
        return len(sig), len(finite), best

    out = ["| analysis | tests surviving Holm | smallest adjusted p | at | rho [CI] | seeds |"]
    out.append("|---|---|---|---|---|---|")
    for name, rows in (
        ("within configuration (headline)", controlled),
        ("pooled (confounded by sparsity)", pooled),
    ):
        k, n, best = summary(rows)
        if best is None:
            out.append(f"| {name} | 0/0 | n/a | | | |")
            continue
        out.append(
            f"| {name} | {k}/{n} | {_num(best['p_adjusted']):.3g} | {best['layer']}, "
            f"{best['bias']} | {_num(best['estimate']):+.2f} [{_num(best['low']):+.2f}, "
            f"{_num(best['high']):+.2f}] | {best['n_seeds']} |"
        )
    return "\n".join(out)


def kd_table(report: Path) -> str:
    """Markdown: distillation minus fine-tuning, paired by seed."""
    path = report / "kd_vs_ft.csv"
    rows = _rows(path) if path.is_file() else []
    if not rows:
        return "(no configuration has both fine-tuning and distillation)"
    out = [
        "| prune@sparsity | seeds | CEV kd - ft [CI] | p (Holm) | SDE kd - ft [CI] | p (Holm) "
        "| accuracy kd - ft [CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['prune_method']}@{r['sparsity']} | {r['n_seeds']} | "
            f"{_num(r['cev_diff']):+.4g} [{_num(r['cev_diff_low']):+.4g}, "
            f"{_num(r['cev_diff_high']):+.4g}] | {_num(r.get('cev_p_adjusted')):.3g} | "
            f"{_num(r['sde_diff']):+.4g} [{_num(r['sde_diff_low']):+.4g}, "
            f"{_num(r['sde_diff_high']):+.4g}] | {_num(r.get('sde_p_adjusted')):.3g} | "
            f"{_num(r['accuracy_diff']):+.4f} [{_num(r['accuracy_diff_low']):+.4f}, "
            f"{_num(r['accuracy_diff_high']):+.4f}] |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    """Print every table for each report folder given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="report folders (reports/<study>)")
    args = parser.parse_args(argv)
    for report in args.reports:
        results = json.loads((report / "results.json").read_text())
        print(f"## {results['study']}\n")
        print(
            f"{len(results['seeds'])} dense seeds, {results.get('threads')} thread(s), "
            f"{results.get('n_classes')} classes, {results.get('timings', {}).get('total', 0):.0f} s."
            "\n"
        )
        for title, table in (
            ("Group gap", group_gap_table(report)),
            ("CIEs", exemplar_table(report)),
            ("Drift vs bias", association_table(report)),
            ("KD vs FT", kd_table(report)),
        ):
            print(f"### {title}\n\n{table}\n")


if __name__ == "__main__":
    main()
