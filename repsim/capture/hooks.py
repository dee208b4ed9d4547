"""Forward hooks that copy what chosen layers compute, and the reductions to ``[n, features]``.

Each hook detaches the layer's output, reduces it to ``[batch, n_features]`` and copies it to
CPU ``float32`` *inside the hook*, before the next module runs, so an in-place ReLU or an
``out += identity`` after the layer cannot change what was captured.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from repsim.errors import ShapeError
from repsim.layers import split_layer_name


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, list | tuple):
        for v in value:
            t = _first_tensor(v)
            if t is not None:
                return t
    if isinstance(value, Mapping):
        for v in value.values():
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


def reduce_activation(t: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce a batch-first activation to ``[batch, n_features]``.

    ``flatten`` keeps every value (row-major, ``C*H*W`` features for a conv map); ``mean`` and
    ``max`` pool over every dimension after the second (the spatial dims of ``[N, C, H, W]``
    or ``[N, C, L]``), giving ``C`` features. 2-D outputs are returned as they are; 1-D outputs
    become one feature.
    """
    if t.ndim == 1:
        return t.reshape(-1, 1)
    if t.ndim == 2 or reduction == "flatten":
        return t.reshape(t.shape[0], -1)
    dims = tuple(range(2, t.ndim))
    if reduction == "mean":
        return t.mean(dim=dims)
    return t.amax(dim=dims)


class _Hooks:
    """Forward (pre-)hooks on chosen layers, storing a CPU float32 copy of each activation."""

    def __init__(self, model: nn.Module, pairs: Sequence[tuple[str, str]]) -> None:
        self.reductions: dict[str, list[str]] = {}
        for layer, reduction in pairs:
            self.reductions.setdefault(layer, []).append(reduction)
        self.out: dict[tuple[str, str], torch.Tensor] = {}
        self.calls: dict[str, int] = {}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.warned: set[str] = set()
        modules = dict(model.named_modules())
        try:
            for layer in self.reductions:
                base, is_input = split_layer_name(layer)
                module = modules[base]
                if is_input:
                    h = module.register_forward_pre_hook(self._pre_hook(layer), with_kwargs=True)
                else:
                    h = module.register_forward_hook(self._hook(layer))
                self.handles.append(h)
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _store(self, layer: str, value: Any) -> None:
        t = _first_tensor(value)
        if t is None:
            raise ShapeError(f"Layer {layer!r} produced no tensor (got {type(value).__name__}).")
        if t.ndim == 0:
            raise ShapeError(
                f"Layer {layer!r} produced a scalar; capture needs batch-first tensors."
            )
        # copy inside the hook: later in-place ops must not change what was captured
        for reduction in self.reductions[layer]:
            self.out[layer, reduction] = reduce_activation(t.detach(), reduction).to(
                device="cpu", dtype=torch.float32, copy=True
            )
        self.calls[layer] = self.calls.get(layer, 0) + 1
        if self.calls[layer] == 2 and layer not in self.warned:
            self.warned.add(layer)
            warnings.warn(
                f"Layer {layer!r} runs more than once per forward pass (a shared module); "
                "repsim keeps its last call.",
                stacklevel=2,
            )

    def _hook(self, layer: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self._store(layer, output)

        return hook

    def _pre_hook(self, layer: str) -> Any:
        def hook(module: nn.Module, args: Any, kwargs: Any) -> None:
            self._store(layer, (args, kwargs))

        return hook

    def reset(self) -> None:
        self.out = {}
        self.calls = {}
