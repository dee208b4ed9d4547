"""``repsim cache ls|info|verify|rm``: inspect and maintain the activation cache.

Wire into the main parser with :func:`add_parser`; each subcommand's handler takes the parsed
arguments and returns an exit code (0 ok, 1 verify found problems).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from repsim.cli._common import activation_dir, add_alias


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


_ENTRY = re.compile(r"^[0-9a-f]{4,64}-[0-9a-f]{4,64}$")


def find_stores(root: str | os.PathLike, max_depth: int = 4) -> list[Path]:
    """Activation stores at or under ``root``: directories holding cache entries.

    A study writes its store to ``<cache_dir>/activations/``, ``repsim compare --cache`` to
    the directory given; ``repsim cache ls`` lists every one of them under the cache root.
    Entry directories are not searched further.
    """
    root = Path(root)
    found: list[Path] = []

    def walk(d: Path, depth: int) -> None:
        try:
            children = sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))
        except OSError:
            return
        if any(_ENTRY.match(c.name) and (c / "zarr.json").exists() for c in children):
            found.append(d)
        if depth >= max_depth:
            return
        for c in children:
            if not _ENTRY.match(c.name):
                walk(c, depth + 1)

    if root.is_dir():
        walk(root, 0)
    return found


def cmd_ls(args: argparse.Namespace) -> int:
    """List entries of every store under the path: key, model name, samples, layers, size."""
    from repsim.capture.store import ActivationStore

    stores = find_stores(args.path)
    if not stores:
        print(f"No cache entries in {args.path} (nor in any store under it).")
        return 0
    for path in stores:
        entries = ActivationStore(path).entries()
        width = max([5] + [len(e.name) for e in entries])
        print(f"{path}  ({len(entries)} entr{'y' if len(entries) == 1 else 'ies'})")
        print(f"  {'key':<34} {'model':<{width}} {'n':>7} {'layers':>6} {'size':>10}  status")
        for e in entries:
            print(
                f"  {e.key:<34} {e.name:<{width}} {e.n_samples:>7} {len(e.layers):>6} "
                f"{_mb(e.nbytes):>10}  {'ok' if e.ok else 'CORRUPT (see verify)'}"
            )
            if args.layers:
                for layer, reduction, f in e.layers:
                    print(f"      {layer} [{reduction}] {f} features")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Print everything recorded about one entry (JSON with --json)."""
    from repsim.capture.store import ActivationStore

    info = ActivationStore(args.path).info(args.key)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    attrs = info["attrs"] or {}
    print(f"entry    {info['key']}\npath     {info['path']}")
    for k in (
        "name",
        "model_class",
        "model_fingerprint",
        "data_fingerprint",
        "n_samples",
        "seed",
        "versions",
    ):
        if k in attrs:
            print(f"{k:<8} {attrs[k]}")
    for name, a in info["arrays"].items():
        status = "ok" if a["problem"] is None else a["problem"]
        print(f"  {name:<40} shape={a['shape']} chunks={a['chunks']} {_mb(a['nbytes'])} {status}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Check entries; report problems; exit 1 when any is found."""
    from repsim.capture.store import ActivationStore

    store = ActivationStore(args.path)
    problems = store.verify(args.keys or None, deep=not args.quick, mark=not args.no_mark)
    for p in problems:
        print(p)
    n = len(args.keys) if args.keys else len(store.keys())
    if problems:
        print(
            f"{len(problems)} problem(s) in {n} entr{'y' if n == 1 else 'ies'}; "
            "the next capture of an affected entry rebuilds it.",
            file=sys.stderr,
        )
        return 1
    print(f"{n} entr{'y' if n == 1 else 'ies'} verified, no problems.")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    """Remove entries (or one layer of an entry with --layer NAME --reduction R).

    Only entries carrying repsim's marker are removed; foreign Zarr groups and other files in
    the directory are never touched.
    """
    from repsim.capture.store import ActivationStore
    from repsim.errors import ConfigError

    store = ActivationStore(args.path)
    if not args.all and not args.keys:
        raise ConfigError("name the entries to remove (see `repsim cache ls`), or pass --all.")
    keys = store.keys() if args.all else args.keys
    for key in keys:
        if args.layer:
            store.rm(key, layers=[(args.layer, args.reduction)])
        else:
            store.rm(key)
        print(f"removed {key}" + (f" {args.layer} [{args.reduction}]" if args.layer else ""))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``cache`` with its ``ls``, ``info``, ``verify`` and ``rm`` subcommands.

    Each leaf parser sets ``func`` to its handler (``handler(args) -> int``).
    """
    cache = subparsers.add_parser("cache", help="inspect and maintain the activation cache")
    sub = cache.add_subparsers(dest="cache_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--cache-dir",
            dest="path",
            metavar="DIR",
            type=activation_dir,
            default="cache",
            help="cache directory; activations are under CACHE_DIR/activations (default: cache)",
        )
        add_alias(p, "--path", dest="path", type=Path)  # 0.1: the store itself

    p = sub.add_parser(
        "ls",
        help="list entries with model, samples, layers, sizes (every store under the path)",
    )
    p.add_argument(
        "--cache-dir",
        dest="path",
        metavar="DIR",
        default="cache",
        help="cache root or store (default: cache); every activation store under it is "
        "listed, e.g. the <cache_dir>/activations/ of a study",
    )
    add_alias(p, "--path", dest="path")
    p.add_argument("--layers", action="store_true", help="also list each entry's layers")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("info", help="show one entry's provenance and arrays")
    common(p)
    p.add_argument("key", help="entry key or a unique prefix")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "verify", help="check completeness, shapes and every chunk's checksum; report damage"
    )
    common(p)
    p.add_argument("keys", nargs="*", help="entries to check (default: all)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="metadata and chunk sizes only, do not read the chunks' checksums",
    )
    p.add_argument(
        "--no-mark", action="store_true", help="do not flag corrupt arrays for rebuilding"
    )
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("rm", help="remove entries (only those repsim wrote)")
    common(p)
    p.add_argument("keys", nargs="*", help="entry keys or unique prefixes")
    p.add_argument(
        "--all",
        action="store_true",
        help="remove every repsim entry (other files and foreign Zarr groups stay)",
    )
    p.add_argument("--layer", help="remove only this layer's array")
    p.add_argument("--reduction", default="flatten", help="reduction of --layer")
    p.set_defaults(func=cmd_rm)
    return cache
