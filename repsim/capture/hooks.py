"""Forward hooks that copy what chosen layers compute, and the reductions to ``[n, features]``.

Each hook detaches the layer's output, reduces it to ``[batch, n_features]`` and copies it to
CPU ``float32`` *inside the hook*, before the next module runs, so an in-place ReLU or an
``out += identity`` after the layer cannot change what was captured.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from repsim._core.hooks import HookSet, attach_hooks
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
    """Forward (pre-)hooks on chosen layers, storing a CPU float32 copy of each activation.

    Registered all or none at construction (:func:`repsim._core.hooks.attach_hooks`);
    :meth:`remove` (or leaving a ``with`` block) takes off exactly these hooks.
    """

    def __init__(self, model: nn.Module, pairs: Sequence[tuple[str, str]]) -> None:
        self.reductions: dict[str, list[str]] = {}
        for layer, reduction in pairs:
            self.reductions.setdefault(layer, []).append(reduction)
        self.out: dict[tuple[str, str], torch.Tensor] = {}
        self.calls: dict[str, int] = {}
        self.warned: set[str] = set()
        forward, pre = [], []
        for layer in self.reductions:
            base, is_input = split_layer_name(layer)
            if is_input:
                pre.append((base, self._pre_hook(layer)))
            else:
                forward.append((base, self._hook(layer)))
        self.handles: HookSet = attach_hooks(model, forward, pre, with_kwargs=True)

    def remove(self) -> None:
        """Remove this recorder's hooks (and only those)."""
        self.handles.remove()

    def __enter__(self) -> _Hooks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

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


@contextlib.contextmanager
def hooks(model: nn.Module, pairs: Sequence[tuple[str, str]]) -> Iterator[_Hooks]:
    """Record what chosen layers compute while the block runs; the hooks go on leaving it.

    ``with hooks(model, [("block1", "mean"), ("fc:input", "flatten")]) as rec:`` registers a
    forward hook on each layer (a forward-pre hook for ``":input"`` names); after each forward
    pass ``rec.out[layer, reduction]`` holds the ``[batch, n_features]`` CPU float32 copy
    (see :func:`reduce_activation`). Leaving the block, by return, exception or
    ``KeyboardInterrupt``, removes exactly these hooks; hooks others registered stay.

    Parameters
    ----------
    model : torch.nn.Module
        The model; names are its ``named_modules()`` paths, optionally suffixed ``":input"``.
    pairs : sequence of (layer, reduction)
        What to record; a layer may appear with several reductions.

    Raises
    ------
    LayerNotFoundError
        When a layer is not a module of ``model``; nothing is left registered.
    """
    recorder = _Hooks(model, pairs)
    try:
        yield recorder
    finally:
        recorder.remove()
