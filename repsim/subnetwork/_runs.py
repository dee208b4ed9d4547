"""Run-directory helpers shared by both searches: settings hash, atomic files, safe checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from repsim._core.io import atomic_write, write_json
from repsim.errors import OutputError

CHECKPOINT = "checkpoint.pt"
LOG = "log.json"


def config_hash(config: dict[str, Any]) -> str:
    """Short SHA-256 of the JSON of ``config`` (sorted keys): what a checkpoint must match."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through :func:`repsim._core.io.atomic_write`.

    torch names the archive inside the file after the file it writes, so the checkpoint is
    saved as ``<name>.tmp`` in a private directory and moved to the unique temporary name: the
    bytes are the same whichever process writes them.
    """

    def write(tmp: Path) -> None:
        staging = tmp.with_name(tmp.name + ".d")
        staging.mkdir()
        try:
            torch.save(obj, staging / (path.name + ".tmp"))
            os.replace(staging / (path.name + ".tmp"), tmp)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    atomic_write(path, write)


def atomic_json(obj: Any, path: Path) -> None:
    """Write ``obj`` as JSON atomically (NaN allowed)."""
    write_json(obj, path, indent=1, allow_nan=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a search checkpoint (tensors and plain values only; never unpickles objects).

    Raises
    ------
    OutputError
        For a damaged file, one holding more than tensors and plain values, or one that is not
        a repsim search checkpoint.
    """
    try:
        ckpt = torch.load(path, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        raise OutputError(
            f"The checkpoint {path} is unreadable ({type(exc).__name__}); it is damaged or holds "
            "more than tensors and plain values (repsim never unpickles objects), so it was not "
            "written by repsim. Delete it to start the run over, or use a new run_dir."
        ) from None
    if not isinstance(ckpt, dict) or "config_hash" not in ckpt:
        raise OutputError(
            f"{path} is not a repsim search checkpoint. Delete it or use a new run_dir."
        )
    return ckpt
