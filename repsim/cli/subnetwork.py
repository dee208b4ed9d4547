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
    from repsim.pipeline.run_search import run_report

    report = run_report(args.run_dir)
    for model, metrics in report["summary"].items():
        cells = ", ".join(
            f"{k} {v['mean']:.3f} [{v['lo']:.3f}, {v['hi']:.3f}]" for k, v in metrics.items()
        )
        print(f"{model:10s} {cells}")
    return 0


def add_parser(subparsers: Any) -> None:
    """Add ``subnetwork search CONFIG [--resume] [--seed S]`` and ``subnetwork report RUN_DIR``."""
    p = subparsers.add_parser("subnetwork", help="bias-free subnetwork search (BISE-style)")
    sub = p.add_subparsers(dest="subnetwork_command", metavar="ACTION")
    s = sub.add_parser("search", help="learn pruning masks on the frozen vanilla model(s)")
    s.add_argument("config", help="a shipped search's name, or a TOML with [subnetwork]")
    s.add_argument("--resume", action="store_true", help="continue from the checkpoints")
    s.add_argument("--seed", type=int, default=None, help="this seed only")
    s.set_defaults(func=_cmd_search)
    r = sub.add_parser("report", help="vanilla vs subnetwork vs magnitude pruning")
    r.add_argument("run_dir", help="<out_dir>/<study name> written by 'subnetwork search'")
    r.set_defaults(func=_cmd_report)
