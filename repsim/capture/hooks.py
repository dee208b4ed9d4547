"""Forward hooks that copy what chosen layers compute, and the reductions to ``[n, features]``.

Each hook detaches the layer's output, reduces it to ``[batch, n_features]`` (``[tokens,
n_features]`` for the ``tokens`` reduction) and copies it to CPU ``float32`` *inside the
hook*, before the next module runs, so an in-place ReLU or an ``out += identity`` after the
layer cannot change what was captured.

**Reductions** (:func:`reduce_activation`). Of a channel-first map ``x`` ``[N, C, d1, ...]``:

- ``flatten``: ``x.reshape(N, -1)``, every value (row-major);
- ``mean``: ``x.mean(dim=(2, 3, ...))``, global average pooling, ``C`` features;
- ``max``: ``x.amax(dim=(2, 3, ...))``, global max pooling, ``C`` features.

Of a token sequence ``h`` ``[N, T, D]`` with attention mask ``m`` ``[N, T]`` (1 on real tokens,
0 on padding; all ones when the batch has no ``attention_mask``):

- ``cls``: ``h[i, f_i]`` with ``f_i = min{t : m_it = 1}``, the first real token (BERT's
  ``[CLS]``; position 0 with right padding);
- ``last``: ``h[i, l_i]`` with ``l_i = max{t : m_it = 1}``, the last real token (what a causal
  LM predicts the next token from);
- ``mean_tokens``: ``sum_t m_it h[i, t] / sum_t m_it``, the mean over real tokens;
- ``tokens``: one row ``h[i, t]`` per real token ``(i, t)`` with ``m_it = 1``, in sample then
  position order: ``[sum(m), D]`` rows instead of ``[N, D]``.

``cls``, ``last`` and ``mean_tokens`` keep a 2-D output ``[N, D]`` as it is (it has no token
axis; a classifier head); ``tokens`` needs a 3-D output. ``flatten`` of ``[N, T, D]`` keeps
padding positions too.

**3-D outputs and mean/max.** A 3-D output is either channel-first ``[N, C, L]`` (a
``Conv1d``) or token-first ``[N, T, D]`` (a transformer), and the shape cannot tell which:
``mean`` of ``[N, T, D]`` would silently average the hidden features. So ``mean`` and ``max``
pool a 3-D output only when the module is known to be channel-first: convolutions, batch,
instance and group norms, 1-d pools and ``LocalResponseNorm`` (for ``":input"`` names, the
module that receives it), or a module you mark with ``module.repsim_layout = "channels"``.
Any other 3-D output gets ``mean``/``max`` refused with a :class:`~repsim.errors.ShapeError`
naming the token reductions.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from repsim._core.hooks import HookSet, attach_hooks
from repsim.capture.reductions import (
    CONV_REDUCTIONS,
    PER_SAMPLE_REDUCTIONS,
    REDUCTIONS,
    TOKEN_REDUCTIONS,
)
from repsim.errors import DataError, ShapeError
from repsim.layers import head_count, parse_layer_name

__all__ = [
    "CHANNEL_FIRST",
    "CONV_REDUCTIONS",
    "PER_SAMPLE_REDUCTIONS",
    "REDUCTIONS",
    "TOKEN_REDUCTIONS",
    "channels_first",
    "hooks",
    "reduce_activation",
    "token_index",
]

#: Module types whose 3-D outputs (and inputs) are channel-first ``[N, C, L]``.
CHANNEL_FIRST: tuple[type, ...] = (
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._LPPoolNd,
)


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


def channels_first(module: nn.Module) -> bool | None:
    """Whether a module's 3-D outputs are channel-first: ``True``, ``False`` or ``None`` (unknown).

    ``module.repsim_layout`` (``"channels"`` or ``"tokens"``) decides when set; otherwise a
    module of a :data:`CHANNEL_FIRST` type is channel-first and any other is unknown.
    """
    layout = getattr(module, "repsim_layout", None)
    if layout == "channels":
        return True
    if layout == "tokens":
        return False
    return True if isinstance(module, CHANNEL_FIRST) else None


def _real(mask: torch.Tensor | None, t: torch.Tensor, layer: str) -> torch.Tensor:
    """The ``[N, T]`` boolean mask of real tokens of ``t`` ``[N, T, D]`` (all true without one)."""
    if mask is None:
        return torch.ones(t.shape[:2], dtype=torch.bool, device=t.device)
    if tuple(mask.shape) != tuple(t.shape[:2]):
        raise ShapeError(
            f"Layer {layer!r} gives {tuple(t.shape)} ([batch, tokens, features]) but the "
            f"batch's attention_mask is {tuple(mask.shape)}; token reductions need the layer's "
            "token axis to match the mask. Choose layers that keep the input's tokens."
        )
    return mask.to(device=t.device) != 0


def _check_rows(real: torch.Tensor, layer: str, reduction: str) -> None:
    empty = (~real.any(1)).nonzero().flatten()
    if empty.numel():
        rows = [int(i) for i in empty[:5]]
        raise DataError(
            f"Batch rows {rows} have no token with attention_mask == 1, so {reduction!r} of "
            f"layer {layer!r} is undefined; give every sample at least one real token."
        )


def reduce_activation(
    t: torch.Tensor,
    reduction: str,
    *,
    attention_mask: torch.Tensor | None = None,
    channels: bool | None = None,
    layer: str = "layer",
) -> torch.Tensor:
    """Reduce a batch-first activation to ``[batch, n_features]`` (see the module docstring).

    Parameters
    ----------
    t : torch.Tensor
        The activation, batch first.
    reduction : str
        One of :data:`REDUCTIONS`.
    attention_mask : torch.Tensor, optional
        ``[batch, tokens]``, nonzero on real tokens, for the token reductions (default: every
        position is real).
    channels : bool or None
        Whether a 3-D ``t`` is channel-first (``[N, C, L]``): ``mean``/``max`` of a 3-D
        ``t`` are refused unless it is (:func:`channels_first` tells for a module).
    layer : str
        The layer's name, for messages.

    Returns
    -------
    torch.Tensor
        ``[batch, n_features]``; for ``tokens``, ``[n_real_tokens, n_features]``, rows in
        sample then position order (:func:`token_index` gives which).

    Raises
    ------
    ShapeError
        ``mean``/``max`` of a 3-D output not known to be channel-first; a token reduction of
        an output that is not ``[N, T, D]`` (2-D outputs pass unchanged, except for
        ``tokens``); a mask that does not match the token axis.
    DataError
        A sample without any real token (``cls``, ``last``, ``mean_tokens``).
    """
    if reduction in CONV_REDUCTIONS:
        if t.ndim == 1:
            return t.reshape(-1, 1)
        if t.ndim == 2 or reduction == "flatten":
            return t.reshape(t.shape[0], -1)
        if t.ndim == 3 and not channels:
            raise ShapeError(
                f"Layer {layer!r} gives a 3-D output {tuple(t.shape)}; {reduction!r} pools "
                "every dimension after the second, which for a transformer's [batch, tokens, "
                "hidden] output would pool the hidden features, so repsim does not guess. Use "
                "a token reduction ('cls', 'last', 'mean_tokens' or 'tokens') or 'flatten'; "
                "for a channel-first [N, C, L] output of a module repsim does not know, set "
                "module.repsim_layout = 'channels'."
            )
        dims = tuple(range(2, t.ndim))
        return t.mean(dim=dims) if reduction == "mean" else t.amax(dim=dims)
    if reduction not in TOKEN_REDUCTIONS:
        raise ShapeError(f"Unknown reduction {reduction!r}; choose one of {list(REDUCTIONS)}.")
    if t.ndim in (1, 2) and reduction != "tokens":
        return t.reshape(t.shape[0], -1)
    if t.ndim != 3:
        raise ShapeError(
            f"Layer {layer!r} gives shape {tuple(t.shape)}; the token reduction "
            f"{reduction!r} needs a [batch, tokens, features] output."
        )
    real = _real(attention_mask, t, layer)
    if reduction == "tokens":
        return t[real]
    _check_rows(real, layer, reduction)
    rows = torch.arange(t.shape[0], device=t.device)
    if reduction == "cls":
        return t[rows, real.int().argmax(1)]
    if reduction == "last":
        last = t.shape[1] - 1 - real.flip(1).int().argmax(1)
        return t[rows, last]
    m = real.to(torch.float32).unsqueeze(-1)
    return (t.to(torch.float32) * m).sum(1) / m.sum(1)


def token_index(t_shape: Sequence[int], attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``[n_real_tokens, 2]`` int64 ``(batch row, position)`` of each row of ``tokens``.

    In the order :func:`reduce_activation` gives the rows: by sample, then by position.
    """
    n, length = int(t_shape[0]), int(t_shape[1])
    if attention_mask is None:
        real = torch.ones((n, length), dtype=torch.bool)
    else:
        real = attention_mask.detach().cpu() != 0
    return real.nonzero().to(torch.int64)


def _head_slice(t: torch.Tensor, head: int, heads: int, layer: str) -> torch.Tensor:
    width = t.shape[-1]
    if t.ndim < 2 or width % heads:
        raise ShapeError(
            f"Layer {layer!r}: its last dimension ({width}) does not split into {heads} heads."
        )
    d = width // heads
    return t[..., head * d : (head + 1) * d]


class _Layer:
    """What the hook of one layer name needs: module path, input or output, head, layout."""

    def __init__(self, model: nn.Module, layer: str, modules: Mapping[str, nn.Module]) -> None:
        self.name = layer
        self.base, self.is_input, self.head = parse_layer_name(layer)
        self.heads = None if self.head is None else head_count(model, layer)
        module = modules.get(self.base)
        # head slices are token features, never channel maps
        self.channels = None if module is None or self.head is not None else channels_first(module)


class _Hooks:
    """Forward (pre-)hooks on chosen layers, storing a CPU float32 copy of each activation.

    Registered all or none at construction (:func:`repsim._core.hooks.attach_hooks`);
    :meth:`remove` (or leaving a ``with`` block) takes off exactly these hooks.

    Attributes
    ----------
    out : dict of (layer, reduction) to torch.Tensor
        The reduced copies of the last forward pass.
    token_index : dict of str to torch.Tensor
        For layers recorded with ``tokens``: ``[rows, 2]`` int64 ``(batch row, position)`` of
        each row of ``out[layer, "tokens"]``.
    token_len : dict of str to int
        For layers recorded with ``tokens``: the length ``T`` of their token axis.
    attention_mask : torch.Tensor or None
        The mask of the current batch (set by :meth:`reset`).
    """

    def __init__(self, model: nn.Module, pairs: Sequence[tuple[str, str]]) -> None:
        self.reductions: dict[str, list[str]] = {}
        for layer, reduction in pairs:
            if reduction not in REDUCTIONS:
                raise ShapeError(
                    f"Unknown reduction {reduction!r}; choose one of {list(REDUCTIONS)}."
                )
            self.reductions.setdefault(layer, []).append(reduction)
        modules = dict(model.named_modules())
        self.layers = {layer: _Layer(model, layer, modules) for layer in self.reductions}
        self.out: dict[tuple[str, str], torch.Tensor] = {}
        self.token_index: dict[str, torch.Tensor] = {}
        self.token_len: dict[str, int] = {}
        self.attention_mask: torch.Tensor | None = None
        self.calls: dict[str, int] = {}
        self.warned: set[str] = set()
        forward, pre = [], []
        for layer, info in self.layers.items():
            if info.is_input:
                pre.append((info.base, self._pre_hook(layer)))
            else:
                forward.append((info.base, self._hook(layer)))
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
        info = self.layers[layer]
        t = t.detach()
        if info.head is not None:
            assert info.heads is not None
            t = _head_slice(t, info.head, info.heads, layer)
        # copy inside the hook: later in-place ops must not change what was captured
        for reduction in self.reductions[layer]:
            reduced = reduce_activation(
                t,
                reduction,
                attention_mask=self.attention_mask,
                channels=info.channels,
                layer=layer,
            )
            self.out[layer, reduction] = reduced.to(device="cpu", dtype=torch.float32, copy=True)
            if reduction == "tokens":
                self.token_index[layer] = token_index(t.shape, self.attention_mask)
                self.token_len[layer] = int(t.shape[1])
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

    def reset(self, attention_mask: torch.Tensor | None = None) -> None:
        """Forget the last batch; ``attention_mask`` (``[batch, tokens]``) serves the next one."""
        self.out = {}
        self.token_index = {}
        self.token_len = {}
        self.calls = {}
        self.attention_mask = attention_mask


@contextlib.contextmanager
def hooks(model: nn.Module, pairs: Sequence[tuple[str, str]]) -> Iterator[_Hooks]:
    """Record what chosen layers compute while the block runs; the hooks go on leaving it.

    ``with hooks(model, [("block1", "mean"), ("fc:input", "flatten")]) as rec:`` registers a
    forward hook on each layer (a forward-pre hook for ``":input"`` names); after each forward
    pass ``rec.out[layer, reduction]`` holds the ``[batch, n_features]`` CPU float32 copy
    (see :func:`reduce_activation`). For token models call ``rec.reset(attention_mask=mask)``
    before each forward pass so the token reductions leave out padding. Leaving the block, by
    return, exception or ``KeyboardInterrupt``, removes exactly these hooks; hooks others
    registered stay.

    Parameters
    ----------
    model : torch.nn.Module
        The model; names are its ``named_modules()`` paths, optionally suffixed ``":input"``
        and ``":head=h"`` (:mod:`repsim.layers`).
    pairs : sequence of (layer, reduction)
        What to record; a layer may appear with several reductions.

    Raises
    ------
    LayerNotFoundError
        When a layer is not a module of ``model``; nothing is left registered.
    ConfigError
        A ``":head=h"`` layer whose module has no per-head outputs.
    """
    recorder = _Hooks(model, pairs)
    try:
        yield recorder
    finally:
        recorder.remove()
