"""``repsim studies list|show``: the study configs that ship with repsim (:mod:`repsim.studies`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _cmd_list(args: argparse.Namespace) -> int:
    from repsim.studies import list_studies

    studies = list_studies()
    width = max(len(name) for name in studies)
    for info in studies.values():
        print(f"{info.name:<{width}}  {info.command}")
        print(f"{'':<{width}}  {info.description}")
    print(
        "\nRun one by name; 'repsim studies show NAME > my.toml' copies a config to edit, "
        "and 'repsim run my.toml' runs the copy."
    )
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from repsim.studies import study_path

    path = study_path(args.name)
    if args.where:
        print(path)
    else:
        sys.stdout.write(path.read_text(encoding="utf-8"))
    return 0


def add_parser(subparsers: Any) -> None:
    """Add ``studies list`` and ``studies show NAME``."""
    p = subparsers.add_parser("studies", help="list and print the studies that ship with repsim")
    sub = p.add_subparsers(dest="studies_command", metavar="ACTION")
    sub.required = True
    q = sub.add_parser("list", help="the shipped studies, what each does and how to run it")
    q.set_defaults(func=_cmd_list)
    q = sub.add_parser("show", help="print a study's TOML config (to copy and edit)")
    q.add_argument("name", help="a shipped study's name (see 'repsim studies list')")
    q.add_argument("--where", action="store_true", help="print where the file is instead")
    q.set_defaults(func=_cmd_show)
