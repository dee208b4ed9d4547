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


class RunFiles:
    """A search's run directory: ``config.json``, the checkpoint of its trainable state, the log.

    Both searches checkpoint the same state (gates, bias head, both optimisers, the data
    generator, and a plain ``state`` dict with ``log`` and ``evals``), atomically, and refuse to
    resume from a checkpoint written with other settings.

    Parameters
    ----------
    run_dir : path or None
        The run directory (created, with ``config.json``); ``None``: nothing is written.
    config : dict
        The run's settings, written to ``config.json``.
    settings_hash : str
        :func:`config_hash` of the settings, model and data: what a checkpoint must match.
    gates, head, gate_opt, head_opt, gen
        The trainable state a checkpoint saves and a resume restores in place.
    """

    def __init__(
        self,
        run_dir: str | Path | None,
        config: dict[str, Any],
        settings_hash: str,
        *,
        gates: dict[str, torch.Tensor],
        head: torch.nn.Module,
        gate_opt: torch.optim.Optimizer,
        head_opt: torch.optim.Optimizer,
        gen: torch.Generator,
    ) -> None:
        self.path = Path(run_dir) if run_dir is not None else None
        self.settings_hash = settings_hash
        self.gates, self.head, self.gen = gates, head, gen
        self.gate_opt, self.head_opt = gate_opt, head_opt
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            write_json(config, self.path / "config.json", indent=1, allow_nan=True)

    def resume(self) -> dict[str, Any]:
        """Restore the checkpoint into the trainable state and return its ``state`` dict.

        Raises
        ------
        ConfigError
            No run directory, no checkpoint in it, or one written with other settings.
        OutputError
            A damaged checkpoint (:func:`load_checkpoint`).
        """
        from repsim.errors import ConfigError

        if self.path is None:
            raise ConfigError("resume=True needs the run_dir of the run to continue.")
        ckpt_file = self.path / CHECKPOINT
        if not ckpt_file.exists():
            raise ConfigError(
                f"Nothing to resume: {ckpt_file} does not exist. Run without --resume to start."
            )
        ckpt = load_checkpoint(ckpt_file)
        if ckpt["config_hash"] != self.settings_hash:
            raise ConfigError(
                f"{ckpt_file} was written with different settings, model or data "
                f"(hash {ckpt['config_hash']} vs {self.settings_hash}); start a new run_dir "
                "instead."
            )
        with torch.no_grad():
            for k, v in ckpt["gates"].items():
                self.gates[k].copy_(v)
        self.head.load_state_dict(ckpt["head"])
        self.gate_opt.load_state_dict(ckpt["gate_opt"])
        self.head_opt.load_state_dict(ckpt["head_opt"])
        self.gen.set_state(ckpt["gen"])
        return ckpt["state"]

    def save(self, state: dict[str, Any]) -> None:
        """Write the checkpoint and the log atomically (nothing without a run directory)."""
        if self.path is None:
            return
        atomic_torch_save(
            {
                "config_hash": self.settings_hash,
                "gates": {k: v.detach().clone() for k, v in self.gates.items()},
                "head": self.head.state_dict(),
                "gate_opt": self.gate_opt.state_dict(),
                "head_opt": self.head_opt.state_dict(),
                "gen": self.gen.get_state(),
                "state": state,
            },
            self.path / CHECKPOINT,
        )
        atomic_json({"log": state["log"], "evals": state["evals"]}, self.path / LOG)
