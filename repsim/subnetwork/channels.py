"""Structured units for BISE: one gate per output channel of a conv, per neuron of a linear layer.

BISE puts its mask layer after each block's normalisation and activation (``conv -> BN ->
ReLU -> mask``; ``linear -> ReLU -> mask``; BISE code, ``src/masked_models.py``), so a pruned
channel outputs exactly zero. repsim finds the same place on any model without rewriting it:

- a **unit** is a prunable layer (``nn.Conv{1,2,3}d`` or ``nn.Linear``, the classifier left
  whole by default) and its output channels (dim 0 of its weight);
- the gate multiplies the output of the activation that follows the layer (through an affine
  BatchNorm when one directly consumes the layer's output), found by running one batch and
  following tensor identity, so it works whatever the module order or names. Without such an
  activation module (a functional ``F.relu``, or one module reused at several places) the gate
  multiplies the BatchNorm's or the layer's own output;
- the exported mask zeroes, for each pruned channel, the layer's whole filter (``weight[c]``),
  its bias entry and the BatchNorm's ``weight[c]`` and ``bias[c]``: the BatchNorm then outputs
  ``0 * (x - mu) / sigma + 0 = 0`` for that channel, so the pruned model computes exactly what
  the search evaluated (checked on a batch at export, see :func:`check_export`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from repsim._core.hooks import attach_hooks
from repsim.errors import ModelError
from repsim.subnetwork.gates import gate_weights

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class ChannelUnit:
    """One gated layer.

    Attributes
    ----------
    layer : str
        Module name of the conv or linear layer (``"features.conv1"``).
    n : int
        Number of output channels / neurons (one gate each).
    gate_at : str
        Module whose output the gate multiplies: the activation after the layer (and its
        BatchNorm), else the BatchNorm, else the layer itself.
    dim : int
        Channel dimension of that output (1 for convolutions, -1 for linear layers).
    params : tuple of str
        Parameter names zeroed with a pruned channel (the layer's weight and bias, the
        BatchNorm's weight and bias), each indexed by channel along dim 0.
    """

    layer: str
    n: int
    gate_at: str
    dim: int
    params: tuple[str, ...]


def _activation_types() -> tuple[type, ...]:
    """Activation modules with ``f(0) = 0``: gating after them equals zeroing the channel."""
    return (
        nn.ReLU,
        nn.ReLU6,
        nn.LeakyReLU,
        nn.PReLU,
        nn.ELU,
        nn.SELU,
        nn.CELU,
        nn.GELU,
        nn.SiLU,
        nn.Mish,
        nn.Tanh,
        nn.Hardtanh,
        nn.Hardswish,
        nn.Softsign,
    )


def channel_units(
    model: nn.Module, example: torch.Tensor, *, exclude: Sequence[str] | None = None
) -> list[ChannelUnit]:
    """The units of ``model`` gated by BISE, in ``named_modules`` order.

    One forward pass on ``example`` (without gradient, in eval mode) follows each prunable
    layer's output by tensor identity: through an affine BatchNorm that directly consumes it,
    then through an activation module (``f(0) = 0``, called once per forward) that directly
    consumes that. The gate multiplies the last module of this chain, so it sits after the
    activation as in BISE's code. A pruned channel must sit after the activation: a gate before
    a ReLU would get no gradient once it is off (``ReLU'(0) = 0``) and could never come back.

    Parameters
    ----------
    model : torch.nn.Module
    example : torch.Tensor
        A small input batch.
    exclude : sequence of str, optional
        Modules left whole (default: the classifier), as for
        :func:`repsim.subnetwork.gates.gate_weights`.

    Raises
    ------
    ModelError
        No prunable layer (see :func:`~repsim.subnetwork.gates.gate_weights`).
    """
    weights = gate_weights(model, exclude=exclude)
    modules = dict(model.named_modules())
    layers = [name.rsplit(".", 1)[0] for name in weights]
    leaves = [n for n, m in modules.items() if n and not list(m.children())]
    calls: dict[str, list[tuple[object, torch.Tensor]]] = {n: [] for n in leaves}

    def remember(name: str) -> Callable:
        def hook(_m: nn.Module, args: tuple, out: torch.Tensor) -> None:
            calls[name].append((args[0] if args else None, out))

        return hook

    was = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with attach_hooks(model, forward=[(n, remember(n)) for n in leaves], noun="module"):
            with torch.no_grad():
                model(example)
    finally:
        for m, mode in was.items():
            m.training = mode

    def consumer(out: torch.Tensor, kinds: tuple[type, ...]) -> str | None:
        for name in leaves:
            module = modules[name]
            if not isinstance(module, kinds) or len(calls[name]) != 1:
                continue
            if calls[name][0][0] is out:
                return name
        return None

    units = []
    for layer in layers:
        module = modules[layer]
        params = [f"{layer}.weight"]
        if getattr(module, "bias", None) is not None:
            params.append(f"{layer}.bias")
        gate_at = layer
        if len(calls.get(layer, [])) == 1:
            out = calls[layer][0][1]
            norm = consumer(out, _NORMS)
            if norm is not None and modules[norm].affine:
                params += [f"{norm}.weight", f"{norm}.bias"]
                gate_at, out = norm, calls[norm][0][1]
            act = consumer(out, _activation_types())
            if act is not None:
                gate_at = act
        n = int(weights[f"{layer}.weight"].shape[0])
        dim = 1 if isinstance(module, _CONVS) else -1
        units.append(ChannelUnit(layer, n, gate_at, dim, tuple(params)))
    if not units:
        raise ModelError("The model has no layer with output channels to gate.")
    return units


def _shape(out: torch.Tensor, dim: int, n: int) -> tuple[int, ...]:
    shape = [1] * out.ndim
    shape[dim] = n
    return tuple(shape)


@contextlib.contextmanager
def gating(
    model: nn.Module, units: Sequence[ChannelUnit], values: Mapping[str, torch.Tensor]
) -> Iterator[None]:
    """Multiply each unit's gated output by ``values[unit.layer]`` (``[n]``) inside the block.

    The hooks are removed on leaving the block, however it is left.
    """

    def hook(unit: ChannelUnit) -> Callable:
        g = values[unit.layer]

        def fn(_m: nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor:
            if out.shape[unit.dim] != unit.n:
                raise ModelError(
                    f"The output of {unit.gate_at!r} has {out.shape[unit.dim]} channels along "
                    f"dim {unit.dim}, expected {unit.n} (the outputs of {unit.layer!r})."
                )
            return out * g.reshape(_shape(out, unit.dim, unit.n))

        return fn

    with attach_hooks(model, forward=[(u.gate_at, hook(u)) for u in units], noun="module"):
        yield


def param_mask(
    model: nn.Module, units: Sequence[ChannelUnit], keep: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The parameter mask of a channel selection: ``{param name: bool tensor}``.

    Each parameter of a unit is kept along dim 0 where ``keep[unit.layer]`` is True, so a pruned
    channel loses its whole filter, bias entry and BatchNorm scale and shift.
    """
    params = dict(model.named_parameters())
    out: dict[str, torch.Tensor] = {}
    for unit in units:
        k = torch.as_tensor(keep[unit.layer]).to(torch.bool).cpu()
        for name in unit.params:
            p = params[name]
            out[name] = k.reshape((-1,) + (1,) * (p.ndim - 1)).expand(p.shape).clone()
    return out


def keep_from_mask(
    units: Sequence[ChannelUnit], mask: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The channel selection of a parameter mask made by :func:`param_mask` (its weight rows)."""
    out = {}
    for unit in units:
        w = torch.as_tensor(mask[f"{unit.layer}.weight"])
        out[unit.layer] = w.reshape(unit.n, -1).all(1)
    return out


def check_export(
    model: nn.Module,
    units: Sequence[ChannelUnit],
    keep: Mapping[str, torch.Tensor],
    pruned: nn.Module,
    x: torch.Tensor,
    *,
    atol: float = 1e-5,
) -> float:
    """Largest difference between the gated model and the pruned copy on ``x``; warn above ``atol``.

    A difference means a gated output also feeds another path than the BatchNorm (e.g. a
    residual add), so zeroing parameters is not the same as gating; the mask then still zeroes
    the channels' filters, but the numbers of the pruned model are not the search's.
    """
    values = {u.layer: torch.as_tensor(keep[u.layer]).to(x.dtype) for u in units}
    with torch.no_grad():
        with gating(model, units, values):
            a = model(x)
        b = pruned(x)
    diff = float((a - b).abs().max()) if a.numel() else 0.0
    if diff > atol:
        warnings.warn(
            f"The pruned model differs from the gated model by up to {diff:.3g} on a check "
            "batch: some gated output also feeds another path than its BatchNorm. The exported "
            "mask prunes whole filters, but its numbers are not exactly the search's.",
            stacklevel=2,
        )
    return diff
