"""Save and load models as safetensors state dicts plus a JSON spec (never pickled modules)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import prune

from repsim._core.fingerprints import model_fingerprint, unwrap_model
from repsim.errors import ModelError
from repsim.models.registry import build_model


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def save_model(model: nn.Module, path: str | os.PathLike, **extra: object) -> Path:
    """Save ``model`` as ``PATH.safetensors`` (state dict) and ``PATH.json`` (spec, fingerprint).

    Pruned models keep their ``weight_orig``/``weight_mask`` entries, so the mask is saved too.
    Both files are written under temporary names and renamed, so a killed save leaves no
    half-written model. Returns the ``.safetensors`` path.
    """
    model = unwrap_model(model)
    spec = getattr(model, "repsim_spec", None)
    if spec is None:
        raise ModelError(
            "save_model needs a model built by repsim.models.build_model (it records the spec "
            "needed to rebuild it); for other models save model.state_dict() yourself."
        )
    weights, meta = _paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp_w, tmp_m = weights.with_name(weights.name + ".tmp"), meta.with_name(meta.name + ".tmp")
    save_file(state, str(tmp_w))
    info = {"spec": spec, "fingerprint": model_fingerprint(model), **extra}
    tmp_m.write_text(json.dumps(info, indent=2, default=str))
    os.replace(tmp_w, weights)
    os.replace(tmp_m, meta)
    return weights


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save_model`, with any pruning masks re-applied.

    Raises
    ------
    ModelError
        If either file is missing or the weights do not fit the recorded architecture.
    """
    weights, meta = _paths(path)
    if not weights.is_file() or not meta.is_file():
        raise ModelError(f"No saved model at {weights} (+ {meta.name}); save one with save_model.")
    info = json.loads(meta.read_text())
    spec = info["spec"]
    model = build_model(
        spec["name"],
        input_shape=spec["input_shape"],
        n_classes=spec["n_classes"],
        **spec.get("options", {}),
    )
    state = load_file(str(weights))
    load_state_dict_pruned(model, state)
    return model.to(device)


def load_state_dict_pruned(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Load a state dict that may hold ``<name>_orig``/``<name>_mask`` pairs of pruned tensors.

    Each such pair is re-applied with ``torch.nn.utils.prune.custom_from_mask`` so the model
    computes exactly what the pruned model computed; plain entries load as usual.
    """
    modules = dict(model.named_modules())
    for key in list(state):
        if not key.endswith("_mask"):
            continue
        base = key[: -len("_mask")]
        mod_name, _, param = base.rpartition(".")
        if base + "_orig" not in state or mod_name not in modules:
            continue
        module = modules[mod_name]
        if not prune.is_pruned(module) or not hasattr(module, param + "_mask"):
            prune.custom_from_mask(module, param, state[key].to(torch.bool))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"Saved weights do not fit the model: {exc}") from exc
    return model
