"""Pieces every ``repsim`` subcommand shares: option parsing and the dispatch convention.

Dispatch convention: each command module exposes ``add_parser(subparsers)``; every leaf parser
sets ``func`` to a handler ``handler(args: argparse.Namespace) -> int`` (the exit code). Command
modules import the library only inside their handlers, so ``repsim --help`` stays fast.
"""

from __future__ import annotations

import tomllib
from typing import Any

from repsim.errors import ConfigError


def parse_option(text: str) -> tuple[str, Any]:
    """Parse ``KEY=VALUE`` (the value read as a TOML value, else kept as a string).

    Raises
    ------
    ConfigError
        When ``text`` has no ``=``.
    """
    if "=" not in text:
        raise ConfigError(f"--option takes KEY=VALUE, got {text!r}.")
    key, value = text.split("=", 1)
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip(), parsed
