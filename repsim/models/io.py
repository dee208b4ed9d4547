"""Save and load models as safetensors state dicts plus a JSON spec (never pickled modules).

A saved model is ``PATH.safetensors`` (the state dict) and ``PATH.json`` whose ``spec`` says
how to rebuild the architecture before the weights are loaded. Three kinds of spec:

- ``{"name", "input_shape", "n_classes", "options"}``: a repsim architecture
  (:func:`repsim.models.build_model`), the format of repsim 0.1 and 0.2;
- ``{"builder": "package.module:function", "kwargs": {...}}``: any model an importable
  function (or class) builds from JSON keyword arguments (:func:`repsim.models.from_builder`,
  or ``save_model(..., builder=...)``);
- ``{"hf_class": "module:Class", "hf_config": {...}}``: a HuggingFace ``transformers``
  ``PreTrainedModel``, rebuilt offline as ``Class(Class.config_class.from_dict(config))``.

Loading imports the builder's module (as a study config naming it would) but never unpickles.
The model's output rule (:func:`repsim.models.set_output_rule`) is saved as ``output_rule``
and restored. Tensors that share memory (tied weights such as GPT-2's ``lm_head.weight`` and
``transformer.wte.weight``) are stored once, the other names listed under ``aliases``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from repsim._core.fingerprints import model_fingerprint, unwrap_model
from repsim._core.io import read_tensor_pair, tensor_pair_paths, write_tensor_pair
from repsim.errors import ConfigError, ModelError
from repsim.models.adapters import OutputRule, check_jsonable, import_object
from repsim.models.registry import build_model

__all__ = ["hf_spec", "load_model", "load_state_dict_pruned", "model_spec", "save_model"]


def _is_hf(model: nn.Module) -> bool:
    mu = sys.modules.get("transformers.modeling_utils")
    base = getattr(mu, "PreTrainedModel", None)
    return base is not None and isinstance(model, base)


def hf_spec(model: nn.Module) -> dict[str, Any]:
    """The spec of a ``transformers`` ``PreTrainedModel``: its class path and JSON config."""
    import json

    cls = type(model)
    return {
        "hf_class": f"{cls.__module__}:{cls.__qualname__}",
        "hf_config": json.loads(model.config.to_json_string(use_diff=False)),
    }


def model_spec(
    model: nn.Module,
    builder: str | None = None,
    builder_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """How :func:`load_model` will rebuild ``model`` (see the module docstring).

    ``builder`` (with ``builder_kwargs``) wins, then the ``repsim_spec`` recorded by
    :func:`repsim.models.build_model` / :func:`repsim.models.from_builder`, then the class and
    config of a ``transformers`` model.

    Raises
    ------
    ModelError
        When none applies.
    """
    if builder is not None:
        kwargs = dict(builder_kwargs or {})
        check_jsonable(kwargs, "builder_kwargs")
        fn = import_object(builder)
        if not callable(fn):
            raise ModelError(f"builder {builder!r} is not callable.")
        return {"builder": builder, "kwargs": kwargs}
    if builder_kwargs is not None:
        raise ConfigError("builder_kwargs needs builder='package.module:function'.")
    spec = getattr(model, "repsim_spec", None)
    if isinstance(spec, dict):
        return spec
    if _is_hf(model):
        return hf_spec(model)
    raise ModelError(
        f"save_model does not know how to rebuild a {type(model).__name__}. Build it with "
        "repsim.models.build_model or repsim.models.from_builder('package.module:function', "
        "**kwargs), or pass save_model(model, path, builder='package.module:function', "
        "builder_kwargs={...}) naming an importable function that returns it; transformers "
        "models are recognised by themselves."
    )


def _dedupe(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Store each shared tensor once; partial overlaps are copied (safetensors needs it)."""
    out: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, int, tuple[int, ...], tuple[int, ...], torch.dtype], str] = {}
    storages: set[int] = set()
    for key, t in state.items():
        t = t.detach().cpu()
        if t.numel() == 0:
            out[key] = t.contiguous()
            continue
        ptr = t.untyped_storage().data_ptr()
        ident = (ptr, t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if ident in seen:
            aliases[key] = seen[ident]
            continue
        if ptr in storages or not t.is_contiguous():
            t = t.clone(memory_format=torch.contiguous_format)
        else:
            seen[ident] = key
            storages.add(ptr)
        out[key] = t
    return out, aliases


def save_model(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    builder: str | None = None,
    builder_kwargs: Mapping[str, Any] | None = None,
    **extra: object,
) -> Path:
    """Save ``model`` as ``PATH.safetensors`` (state dict) and ``PATH.json`` (spec, fingerprint).

    Any ``nn.Module`` can be saved when repsim knows how to rebuild it (see
    :func:`model_spec`): a repsim architecture, a model made by
    :func:`repsim.models.from_builder`, any model with ``builder=`` naming an importable
    function that returns it, or a ``transformers`` model. Pruned models keep their
    ``weight_orig``/``weight_mask`` entries, so the mask is saved too. Both files are written
    under unique temporary names and renamed (:func:`repsim._core.io.write_tensor_pair`), so a
    killed save leaves no half-written model. Returns the ``.safetensors`` path.

    Parameters
    ----------
    model : torch.nn.Module
        The model.
    path : path-like
        ``PATH`` (or ``PATH.safetensors`` / ``PATH.json``).
    builder : str, optional
        ``"package.module:function"`` that rebuilds the architecture from ``builder_kwargs``.
    builder_kwargs : mapping, optional
        JSON-serialisable keyword arguments of ``builder``.
    **extra
        Further JSON entries (e.g. a test accuracy).

    Raises
    ------
    ModelError
        If repsim cannot tell how to rebuild the model.
    OutputError
        If the files cannot be written.
    """
    model = unwrap_model(model)
    spec = model_spec(model, builder, builder_kwargs)
    state, aliases = _dedupe(model.state_dict())
    info: dict[str, Any] = {"spec": spec, "fingerprint": model_fingerprint(model)}
    rule = getattr(model, "repsim_output", None)
    if rule is not None:
        info["output_rule"] = OutputRule.from_dict(rule).to_dict()
    if aliases:
        info["aliases"] = aliases
    info.update(extra)
    return write_tensor_pair(state, info, path)


def _build(spec: Any, meta: Path) -> nn.Module:
    if isinstance(spec, dict) and {"name", "input_shape", "n_classes"} <= set(spec):
        return build_model(
            spec["name"],
            input_shape=spec["input_shape"],
            n_classes=spec["n_classes"],
            **spec.get("options", {}),
        )
    if isinstance(spec, dict) and "builder" in spec:
        fn = import_object(spec["builder"])
        kwargs = spec.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise ModelError(f"{meta}: spec.kwargs must be an object, got {kwargs!r}.")
        model = fn(**kwargs)
        if not isinstance(model, nn.Module):
            raise ModelError(
                f"{spec['builder']} returned {type(model).__name__}, not a torch.nn.Module."
            )
        model.repsim_spec = {"builder": spec["builder"], "kwargs": kwargs}  # type: ignore[attr-defined]
        return model
    if isinstance(spec, dict) and "hf_class" in spec:
        cls = import_object(spec["hf_class"])
        config_cls = getattr(cls, "config_class", None)
        if config_cls is None:
            raise ModelError(
                f"{spec['hf_class']} has no config_class; it is not a transformers model."
            )
        return cls(config_cls.from_dict(dict(spec.get("hf_config") or {})))
    raise ModelError(
        f"{meta} has no model spec (a repsim architecture name, a 'builder' import path, or a "
        "transformers class); it was not written by save_model. Save the model again with "
        "save_model."
    )


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save_model`, with any pruning masks re-applied.

    The architecture is rebuilt from the spec (see the module docstring; a builder's module is
    imported), the state dict loaded from safetensors (never unpickled), tied tensors restored
    from ``aliases`` and the output rule re-declared.

    Raises
    ------
    ModelError
        If either file is missing or damaged, the builder cannot be imported, or the weights do
        not fit the recorded architecture.
    """
    state, info = read_tensor_pair(
        path, what="saved model", hint="save one with save_model", error=ModelError
    )
    info = info or {}
    _, meta = tensor_pair_paths(path)
    model = _build(info.get("spec"), meta)
    for alias, key in (info.get("aliases") or {}).items():
        if key not in state:
            raise ModelError(f"{meta}: alias {alias!r} points at {key!r}, which is not saved.")
        state[alias] = state[key]
    load_state_dict_pruned(model, state)
    if info.get("output_rule") is not None:
        model.repsim_output = OutputRule.from_dict(info["output_rule"]).to_dict()  # type: ignore[attr-defined]
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
