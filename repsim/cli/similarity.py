"""``repsim similarity A.npz B.npz`` and ``repsim measures``: compare two saved captures.

``repsim similarity A.npz B.npz --measure cka --measure svcca --pairs all --out table.csv``
compares two captures saved as ``.npz`` files (one array per layer; the reserved keys
``sample_id`` and ``groups`` hold the sample ids and group labels), and ``repsim measures``
lists the registered measures.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from repsim.cli._common import add_alias, add_list_option
from repsim.errors import DataError

RESERVED = ("sample_id", "groups")

_DESCRIPTION = """\
Compare two captures layer by layer and print a tidy table (or write it as CSV).

A capture is an .npz file holding one [n_samples, n_features] array per layer, with
rows in the same sample order in both files; two optional arrays carry the sample
ids ('sample_id', checked to match) and the group labels ('groups', for --by-group).

examples:
  repsim similarity dense.npz pruned.npz
  repsim similarity dense.npz pruned.npz --measures cka svcca --pairs all --out table.csv
  repsim measures                      # the measures and what they are invariant to
"""


class _NpzCapture(dict):
    """Layers of an ``.npz`` capture, with ``sample_id``, ``groups`` and ``name`` attributes."""

    def __init__(self, path: Path) -> None:
        from repsim._core.io import read_npz

        data = read_npz(path, what="capture file", error=DataError)
        super().__init__({k: v for k, v in data.items() if k not in RESERVED})
        self.sample_id = data.get("sample_id")
        self.groups = data.get("groups")
        self.name = path.stem


def add_parser(subparsers: Any) -> None:
    """Add the ``similarity`` and ``measures`` subcommands to an argparse subparsers object."""
    p = subparsers.add_parser(
        "similarity",
        help="compare two captures layer by layer (CKA, SVCCA, PWCCA, Procrustes)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("a", type=Path, help="first capture (.npz: one [n, d] array per layer)")
    p.add_argument("b", type=Path, help="second capture (.npz)")
    add_list_option(
        p,
        "--measures",
        dest="measures",
        default=None,
        aliases=["--measure"],
        help="measures from 'repsim measures' (default cka)",
    )
    add_list_option(
        p,
        "--layers",
        dest="layers",
        default=None,
        aliases=["--layer"],
        help="layers to compare (default: every layer both captures hold)",
    )
    p.add_argument("--pairs", choices=["same", "all"], default="same")
    p.add_argument(
        "--by-group",
        dest="by_groups",
        action="store_true",
        help="also compute each measure per group (needs 'groups' in the capture)",
    )
    add_alias(p, "--by-groups", dest="by_groups", action="store_true")
    p.add_argument("--n-boot", type=int, default=0, help="bootstrap resamples for a CI")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the table as CSV here (default: print)")
    p.set_defaults(func=run_similarity)

    q = subparsers.add_parser("measures", help="list the similarity measures and their properties")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=run_measures)


def run_similarity(args: argparse.Namespace) -> int:
    """Handler of ``repsim similarity``; returns the exit code."""
    from repsim.similarity.compare import compare

    a, b = _NpzCapture(args.a), _NpzCapture(args.b)
    table = compare(
        a,
        b,
        layers=args.layers,
        measures=args.measures or ["cka"],
        pairs=args.pairs,
        groups=True if args.by_groups else None,
        n_boot=args.n_boot,
        seed=args.seed,
    )
    if args.out:
        print(f"wrote {table.to_csv(args.out)}")
    else:
        _print_rows(table.to_records(), table.columns)
    return 0


def run_measures(args: argparse.Namespace) -> int:
    """Handler of ``repsim measures``; returns the exit code."""
    from repsim.similarity.registry import measures

    rows = [
        {
            "name": m.name,
            "larger_is_similar": m.larger_is_similar,
            "invariances": list(m.invariances),
            "supports_streaming": m.supports_streaming,
            "source": m.source,
        }
        for m in measures()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            direction = "similarity" if r["larger_is_similar"] else "distance"
            print(f"{r['name']:<14} {direction:<10} invariant to: {', '.join(r['invariances'])}")
            print(f"{'':<14} source: {r['source']}")
    return 0


def _print_rows(rows: list[Mapping[str, Any]], columns: list[str]) -> None:
    out = sys.stdout
    out.write("\t".join(columns) + "\n")
    for r in rows:
        cells = [
            f"{v:.6g}" if isinstance(v, float) else ("" if v is None else str(v))
            for v in (r[c] for c in columns)
        ]
        out.write("\t".join(cells) + "\n")
