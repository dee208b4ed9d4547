"""Content fingerprints for models and datasets.

A fingerprint is a hex SHA-256 digest of the bytes that determine what a model computes or what a
dataset holds. The activation cache keys entries on them, so changed weights, changed pruning
masks or changed inputs can never be served a stale entry.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn


def _update_array(h: hashlib._Hash, name: str, arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr)
    h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
    h.update(arr.tobytes())


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the module inside ``DataParallel``/``DistributedDataParallel`` wrappers."""
    while isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
        model = model.module
    return model


def model_fingerprint(model: nn.Module, length: int = 16) -> str:
    """Fingerprint a model by its architecture and its full state dict.

    The digest covers every module's dotted name and type, and every state-dict tensor's name,
    dtype, shape and bytes. Pruned models (``torch.nn.utils.prune``) keep ``weight_orig`` and
    ``weight_mask`` in their state dict, so the mask is part of the fingerprint.

    Parameters
    ----------
    model : torch.nn.Module
        The model; ``DataParallel``/DDP wrappers are unwrapped first.
    length : int
        Number of hex characters to return (at most 64).

    Returns
    -------
    str
        Hex digest prefix.
    """
    model = unwrap_model(model)
    h = hashlib.sha256()
    for name, module in model.named_modules():
        h.update(f"m|{name}|{type(module).__module__}.{type(module).__qualname__}\n".encode())
    for name, tensor in model.state_dict().items():
        if not isinstance(tensor, torch.Tensor):
            continue
        t = tensor.detach().to("cpu")
        if t.dtype == torch.bfloat16:
            t = t.to(torch.float32)
        if t.is_quantized:
            t = t.dequantize()
        _update_array(h, "p|" + name, t.contiguous().numpy())
    return h.hexdigest()[:length]


def array_fingerprint(*arrays: np.ndarray, length: int = 16) -> str:
    """Fingerprint a sequence of arrays by dtype, shape and bytes (order matters)."""
    h = hashlib.sha256()
    for i, arr in enumerate(arrays):
        _update_array(h, str(i), np.asarray(arr))
    return h.hexdigest()[:length]
