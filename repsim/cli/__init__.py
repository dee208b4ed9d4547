"""The ``repsim`` command line.

Every error repsim raises on bad input (:class:`repsim.errors.RepsimError`) is printed as one
line naming the problem, and the command exits with code 2 (as argparse does for bad usage).

One module per command group (``data``, ``study``, ``cache``, ``compress``, ``similarity``,
``compare``, ``saliency``, ``subnetwork``); each adds its parsers with ``add_parser`` and
imports the library only inside its handlers (see :mod:`repsim.cli._common`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from repsim._version import __version__
from repsim.cli import cache, compare, compress, data, saliency, similarity, study, subnetwork
from repsim.errors import RepsimError

#: Command-group modules, in the order ``repsim --help`` lists them.
COMMAND_GROUPS = (data, study, cache, compress, subnetwork, similarity, compare, saliency)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``repsim`` command."""
    parser = argparse.ArgumentParser(
        prog="repsim",
        description="Layer-wise representation similarity to explain why compressing a neural "
        "network makes it unfair.",
    )
    parser.add_argument("--version", action="version", version=f"repsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in COMMAND_GROUPS:
        group.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``repsim`` console script; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RepsimError as exc:
        print(f"repsim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("repsim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
