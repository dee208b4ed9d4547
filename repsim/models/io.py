"""Save and load models as safetensors state dicts plus a JSON spec (never pickled modules)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune

from repsim._core.fingerprints import model_fingerprint, unwrap_model
from repsim._core.io import read_tensor_pair, tensor_pair_paths, write_tensor_pair
from repsim.errors import ModelError
from repsim.models.registry import build_model


def save_model(model: nn.Module, path: str | os.PathLike, **extra: object) -> Path:
    """Save ``model`` as ``PATH.safetensors`` (state dict) and ``PATH.json`` (spec, fingerprint).

    Pruned models keep their ``weight_orig``/``weight_mask`` entries, so the mask is saved too.
    Both files are written under unique temporary names and renamed
    (:func:`repsim._core.io.write_tensor_pair`), so a killed save leaves no half-written model
    and two processes saving the same path do not collide. Returns the ``.safetensors`` path.

    Raises
    ------
    ModelError
        If the model was not built by :func:`repsim.models.build_model`.
    OutputError
        If the files cannot be written.
    """
    model = unwrap_model(model)
    spec = getattr(model, "repsim_spec", None)
    if spec is None:
        raise ModelError(
            "save_model needs a model built by repsim.models.build_model (it records the spec "
            "needed to rebuild it); for other models save model.state_dict() yourself."
        )
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    info = {"spec": spec, "fingerprint": model_fingerprint(model), **extra}
    return write_tensor_pair(state, info, path)


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save_model`, with any pruning masks re-applied.

    Raises
    ------
    ModelError
        If either file is missing or damaged, or the weights do not fit the recorded
        architecture.
    """
    state, info = read_tensor_pair(
        path, what="saved model", hint="save one with save_model", error=ModelError
    )
    spec = (info or {}).get("spec")
    if not isinstance(spec, dict) or not {"name", "input_shape", "n_classes"} <= set(spec):
        _, meta = tensor_pair_paths(path)
        raise ModelError(
            f"{meta} has no model spec (name, input_shape, n_classes); it was not written by "
            "save_model. Save the model again with save_model."
        )
    model = build_model(
        spec["name"],
        input_shape=spec["input_shape"],
        n_classes=spec["n_classes"],
        **spec.get("options", {}),
    )
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
