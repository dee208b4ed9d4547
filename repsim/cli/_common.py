"""Pieces every ``repsim`` subcommand shares: option parsing, spellings and the dispatch convention.

Dispatch convention: each command module exposes ``add_parser(subparsers)``; every leaf parser
sets ``func`` to a handler ``handler(args: argparse.Namespace) -> int`` (the exit code). Command
modules import the library only inside their handlers, so ``repsim --help`` stays fast.

Spellings: one option name per concept across commands (:data:`SPELLINGS`); a name an older
release used stays accepted as a hidden alias (:func:`add_alias`), so old scripts keep working
while ``--help`` shows one name. Every leaf command also takes the common options ``-v``,
``-q`` and ``--threads`` (added by :func:`add_common_options`; see :mod:`repsim.cli`).
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from repsim.errors import ConfigError

#: The one spelling of each concept shared by several commands -> the old spellings it replaces
#: (still accepted, hidden from ``--help``).
SPELLINGS: dict[str, tuple[str, ...]] = {
    "--data": ("--dataset",),  # a dataset: built-in name, package.module:function or .npz
    "--groups": ("--by",),  # a group attribute of the dataset
    "--by-group": ("--by-groups",),  # also compute per-group results
    "--measures": ("--measure",),  # similarity measures
    "--layers": ("--layer",),  # layer names or globs
    "--cache-dir": ("--cache", "--path"),  # the cache root (activations under activations/)
}


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


def parse_set(texts: Sequence[str]) -> dict[str, Any]:
    """Parse ``--set SECTION.KEY=VALUE`` options into ``{"section.key": value}``.

    The value is read as a TOML value (``1``, ``0.5``, ``[0, 1]``, ``"text"``), else kept as
    a string, as :func:`parse_option` reads it.

    Raises
    ------
    ConfigError
        When an option has no ``=`` or no section part.
    """
    out: dict[str, Any] = {}
    for text in texts:
        if "=" not in text:
            raise ConfigError(f"--set takes SECTION.KEY=VALUE (e.g. train.epochs=1), got {text!r}.")
        key, value = parse_option(text)
        if "." not in key:
            raise ConfigError(f"--set {text!r}: name the section and the key, e.g. train.epochs=1.")
        out[key] = value
    return out


class ListOption(argparse.Action):
    """A list option given as ``--opt A B`` or repeated (``--opt A --opt B``).

    The first use replaces the default; later uses extend the list.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        items = list(values) if isinstance(values, list) else [values]
        given = vars(namespace).setdefault("_given_lists", set())
        if self.dest in given:
            items = [*getattr(namespace, self.dest), *items]
        given.add(self.dest)
        setattr(namespace, self.dest, items)


def add_alias(parser: argparse.ArgumentParser, *flags: str, dest: str, **kwargs: Any) -> None:
    """Accept ``flags`` as a hidden spelling of the option stored in ``dest``.

    The alias is left out of ``--help`` and sets ``dest`` only when given (its default is
    :data:`argparse.SUPPRESS`, so it never overrides the main option's default).
    """
    parser.add_argument(
        *flags, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs
    )


def add_renamed(
    parser: argparse.ArgumentParser,
    flag: str,
    *aliases: str,
    dest: str,
    required: bool = False,
    **kwargs: Any,
) -> None:
    """Add ``flag`` storing to ``dest``, with hidden ``aliases`` (the old spellings).

    With ``required``, one of the spellings must be given (a required mutually exclusive
    group, so ``--help`` and the error name only ``flag``).
    """
    target: Any = parser.add_mutually_exclusive_group(required=True) if required else parser
    if kwargs.get("action") is None:
        kwargs.setdefault("metavar", flag.lstrip("-").upper().replace("-", "_"))
    target.add_argument(flag, dest=dest, **kwargs)
    extra = {k: v for k, v in kwargs.items() if k in ("type", "action", "nargs", "choices")}
    for alias in aliases:
        target.add_argument(
            alias, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **extra
        )


def add_list_option(
    parser: argparse.ArgumentParser,
    flag: str,
    *,
    dest: str,
    default: list[str] | None,
    help: str,
    metavar: str = "NAME",
    aliases: Sequence[str] = (),
) -> None:
    """Add a :class:`ListOption` ``flag`` and its hidden single-value ``aliases``."""
    parser.add_argument(
        flag, nargs="+", action=ListOption, dest=dest, default=default, metavar=metavar, help=help
    )
    if aliases:
        add_alias(parser, *aliases, dest=dest, action=ListOption, metavar=metavar)


def activation_dir(cache_dir: str | Path) -> Path:
    """The activation store under a cache root: ``CACHE_DIR/activations``.

    A directory that is itself an activation store (named ``activations``, or holding store
    entries) is used as it is, so the store paths older releases took keep working.
    """
    path = Path(cache_dir)
    if path.name == "activations" or _is_store(path):
        return path
    return path / "activations"


def _is_store(path: Path) -> bool:
    """Whether ``path`` looks like an activation store: store metadata or entry folders."""
    if any((path / marker).is_file() for marker in ("zarr.json", ".zgroup", ".zarray")):
        return True  # a Zarr store (repsim's or foreign: the store then refuses it clearly)
    if (path / ".tmp").is_dir():
        return True
    return path.is_dir() and any((c / "zarr.json").is_file() for c in path.glob("*-*"))


def add_common_options(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """Add ``-v/--verbose``, ``-q/--quiet`` and ``--threads N`` to a command's parser.

    On the top-level parser (``top=True``) they carry their defaults; on each subcommand they
    set a value only when given, so ``repsim -q run X`` and ``repsim run X -q`` mean the same.
    """
    default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    g = parser.add_argument_group("output and threads")
    g.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default(0),
        help="more detail on stderr (debug messages)",
    )
    g.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default(False),
        help="print nothing but errors; no progress bars",
    )
    g.add_argument(
        "--threads",
        type=int,
        default=default(None),
        metavar="N",
        help="CPU threads for torch and numpy (default 1, or a study's [study] threads; "
        "0: all cores)",
    )
