"""The ``repsim`` command line.

Every error repsim raises on bad input (:class:`repsim.errors.RepsimError`) is printed as one
line naming the problem, and the command exits with code 2 (as argparse does for bad usage).

One module per command group (``data``, ``studies``, ``study``, ``cache``, ``compress``,
``similarity``, ``compare``, ``saliency``, ``subnetwork``); each adds its parsers with
``add_parser`` and imports the library only inside its handlers (see :mod:`repsim.cli._common`).

Every command also takes ``-v`` (more detail), ``-q`` (errors only, no progress bars) and
``--threads N`` (CPU threads for torch and numpy; default 1, ``0``: all cores), before or
after the command name. Messages go to stderr through :mod:`logging`
(:func:`repsim._core.log.cli_logging`); results go to stdout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence

from repsim._version import __version__
from repsim.cli import (
    cache,
    compare,
    compress,
    data,
    saliency,
    similarity,
    studies,
    study,
    subnetwork,
)
from repsim.cli._common import add_common_options
from repsim.errors import RepsimError

#: Command-group modules, in the order ``repsim --help`` lists them.
COMMAND_GROUPS = (data, studies, study, cache, compress, subnetwork, similarity, compare, saliency)


def _leaf_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser under ``parser`` that runs a handler (has no subcommands of its own)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
        return
    for action in subs:
        for child in dict.fromkeys(action.choices.values()):
            yield from _leaf_parsers(child)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``repsim`` command."""
    parser = argparse.ArgumentParser(
        prog="repsim",
        description="Layer-wise representation similarity to explain why compressing a neural "
        "network makes it unfair.",
        epilog="Start with 'repsim run quickstart'; 'repsim studies list' lists the shipped "
        "studies. Every command takes -q, -v and --threads N. Documentation: the docs/ "
        "folder of the source ('mkdocs serve'), starting with docs/guide.md.",
    )
    parser.add_argument("--version", action="version", version=f"repsim {__version__}")
    add_common_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in COMMAND_GROUPS:
        group.add_parser(sub)
    for leaf in _leaf_parsers(parser):
        if leaf is not parser:
            add_common_options(leaf)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``repsim`` console script; return the exit code."""
    from repsim._core.log import cli_logging
    from repsim._core.threads import DEFAULT_THREADS, check_threads, limit_threads

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:  # a command group without its action
        parser.error(f"'repsim {args.command}' needs an action; see 'repsim {args.command} -h'.")
    verbosity = -1 if args.quiet else args.verbose
    with cli_logging(verbosity):
        try:
            if args.threads is not None:
                check_threads(args.threads, "--threads")
            threads = DEFAULT_THREADS if args.threads is None else args.threads
            with limit_threads(threads):
                return int(args.func(args) or 0)
        except RepsimError as exc:
            print(f"repsim: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("repsim: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
