"""``repsim subnetwork search CONFIG [--resume]`` and ``repsim subnetwork report RUN_DIR``.

The runs themselves are :func:`repsim.pipeline.run_search.run_search` and
:func:`repsim.pipeline.run_search.run_report`.
"""

from __future__ import annotations

import argparse
from typing import Any


def _cmd_search(args: argparse.Namespace) -> int:
    from repsim.pipeline.run_search import run_search
    from repsim.studies import study_path

    run_search(study_path(args.config), resume=args.resume, seed=args.seed)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from repsim.pipeline.run_search import run_report

    report = run_report(args.run_dir, html=not args.no_html)
    keys = ("test_acc", "conflicting_acc", "bias_probe_acc", "sparsity")
    for model, metrics in report["summary"].items():
        cells = ", ".join(
            f"{k} {metrics[k]['mean']:.3f} [{metrics[k]['lo']:.3f}, {metrics[k]['hi']:.3f}]"
            for k in keys
            if k in metrics
        )
        print(f"{model:10s} {cells}")
    for line in report["verdict_text"]:
        print(line)
    if not args.no_html:
        print(f"report: {Path(args.run_dir) / 'index.html'}")
    return 0


def add_parser(subparsers: Any) -> None:
    """Add ``subnetwork search CONFIG [--resume] [--seed S]`` and ``subnetwork report RUN_DIR``."""
    p = subparsers.add_parser("subnetwork", help="bias-free subnetwork search (BISE)")
    sub = p.add_subparsers(dest="subnetwork_command", metavar="ACTION")
    s = sub.add_parser(
        "search",
        help="learn pruning masks on the frozen vanilla model(s), and their random and "
        "magnitude controls",
    )
    s.add_argument("config", help="a shipped search's name, or a TOML with [subnetwork]")
    s.add_argument("--resume", action="store_true", help="continue from the checkpoints")
    s.add_argument("--seed", type=int, default=None, help="this seed only")
    s.set_defaults(func=_cmd_search)
    r = sub.add_parser(
        "report", help="vanilla vs subnetwork vs random and magnitude controls, with intervals"
    )
    r.add_argument("run_dir", help="<out_dir>/<study name> written by 'subnetwork search'")
    r.add_argument("--no-html", action="store_true", help="skip index.html and its figures")
    r.set_defaults(func=_cmd_report)
