"""``repsim cache ls|info|verify|rm``: inspect and maintain the activation cache.

Wire into the main parser with :func:`add_parser`; each subcommand's handler takes the parsed
arguments and returns an exit code (0 ok, 1 verify found problems).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from repsim.cli._common import activation_dir, add_alias


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def cmd_ls(args: argparse.Namespace) -> int:
    """List entries: key, model name, samples, layers, size, status."""
    from repsim.capture.store import ActivationStore

    store = ActivationStore(args.path)
    entries = store.entries()
    if not entries:
        print(f"No cache entries in {store.path}.")
        return 0
    print(f"{'key':<34} {'model':<16} {'n':>7} {'layers':>6} {'size':>10}  status")
    for e in entries:
        print(
            f"{e.key:<34} {e.name[:16]:<16} {e.n_samples:>7} {len(e.layers):>6} "
            f"{_mb(e.nbytes):>10}  {'ok' if e.ok else 'CORRUPT (see verify)'}"
        )
        if args.layers:
            for layer, reduction, f in e.layers:
                print(f"    {layer} [{reduction}] {f} features")
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

    p = sub.add_parser("ls", help="list entries with model, samples, layers, sizes")
    common(p)
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
