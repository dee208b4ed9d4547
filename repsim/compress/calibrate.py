"""Layer input statistics on calibration data, for activation-aware compression.

Wanda, SparseGPT and GPTQ score or reconstruct a layer ``y = W x`` from the inputs ``X`` it
sees on calibration samples: ``X`` is ``[N, d_in]``, one row per *input vector* of the
layer (per token for a transformer layer, per output position for a convolution):

- ``Linear`` and HF ``Conv1D`` (``[..., d_in]`` inputs): every leading position is a row.
  When the calibration batch is a dict with an ``attention_mask`` ``[batch, tokens]`` and the
  layer input is ``[batch, tokens, d_in]``, rows at padding positions are dropped (the papers
  calibrate on unpadded 2048-token sequences; padding is not data).
- ``Conv2d`` (``groups=1``, zero padding): the ``torch.nn.functional.unfold`` patches,
  ``[batch·positions, C_in·k_h·k_w]``, whose columns match ``weight.reshape(out, -1)``.

From ``X`` (accumulated in float64 over batches) come the squared column norms
``||X_j||_2^2 = sum_n X_nj^2`` (Wanda) and the Hessian of the layer-wise squared error
``H = (2 / N) X^T X`` (SparseGPT, GPTQ).

**Order.** With ``sequential=True`` (the papers' choice) each layer is calibrated on inputs
produced by the model in which every *earlier* layer (in forward-call order) is already
compressed: the model runs once over the calibration data per layer. ``sequential=False``
collects every layer's statistics from the model as it is, in one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from repsim._core.hooks import attach_hooks, evaluating
from repsim.compress.prunable import is_hf_conv1d
from repsim.data.adapt import as_grouped, is_container
from repsim.data.base import input_tensors
from repsim.errors import ConfigError, DataError
from repsim.models.adapters import Inputs, batch_len, call_model, inputs_to, select_inputs

__all__ = ["LayerStats", "calibrate_layers", "calibration_inputs", "input_rows"]


@dataclass
class LayerStats:
    """Running statistics of one layer's input rows ``X`` (float64).

    Attributes
    ----------
    sq_norm : torch.Tensor
        ``[d_in]``: ``sum_n X_nj^2``.
    xtx : torch.Tensor or None
        ``[d_in, d_in]``: ``X^T X`` (when a Hessian is needed).
    n_rows : int
        ``N``, the number of input rows seen.
    """

    sq_norm: torch.Tensor
    xtx: torch.Tensor | None = None
    n_rows: int = 0
    calls: int = field(default=0, repr=False)

    def update(self, rows: torch.Tensor) -> None:
        """Add input rows ``[n, d_in]``."""
        r = rows.detach().to(torch.float64)
        self.sq_norm += (r * r).sum(0).to(self.sq_norm.device)
        if self.xtx is not None:
            self.xtx += (r.T @ r).to(self.xtx.device)
        self.n_rows += r.shape[0]
        self.calls += 1

    @property
    def norm(self) -> torch.Tensor:
        """``||X_j||_2`` per input column."""
        return self.sq_norm.sqrt()

    def hessian(self) -> torch.Tensor:
        """``H = (2 / N) X^T X``."""
        if self.xtx is None:
            raise ConfigError("These statistics were collected without a Hessian.")
        return self.xtx * (2.0 / max(self.n_rows, 1))


def calibration_inputs(data: Any) -> Inputs:
    """Calibration inputs as CPU tensors from any container or from the inputs alone.

    ``data`` may be anything :func:`repsim.data.as_grouped` takes (labels and groups unused),
    or the inputs themselves: an array or tensor (token ids, images) or a dict of them.
    """
    if data is None:
        raise DataError(
            "This method calibrates on data: pass data= (a GroupedData, a Dataset, or the "
            "inputs, e.g. token ids [n, T] or {'input_ids': ..., 'attention_mask': ...})."
        )
    if is_container(data) or (isinstance(data, tuple | list) and len(data) in (2, 3)):
        return as_grouped(data, require_groups=False, what="data").inputs()
    if isinstance(data, torch.Tensor):
        return data
    if isinstance(data, Mapping):
        return {
            k: v if isinstance(v, torch.Tensor) else input_tensors(np.asarray(v))
            for k, v in data.items()
        }
    if isinstance(data, np.ndarray):
        return input_tensors(data)
    raise DataError(
        f"Calibration data of type {type(data).__name__} is not understood; pass a GroupedData, "
        "a torch Dataset/DataLoader, or the inputs as an array, tensor or dict of them."
    )


def _check_supported(name: str, module: nn.Module) -> None:
    if isinstance(module, nn.Linear) or is_hf_conv1d(module):
        return
    if isinstance(module, nn.Conv2d):
        if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise ConfigError(
                f"Activation-aware compression of {name} needs a Conv2d with groups=1, zero "
                "padding given as numbers; exclude it (exclude=[...]) or use magnitude pruning."
            )
        return
    raise ConfigError(
        f"Activation-aware compression supports Linear, transformers Conv1D and Conv2d layers; "
        f"{name} is a {type(module).__name__}. Exclude it (exclude=[...])."
    )


def input_rows(module: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The layer's input rows ``X`` ``[N, d_in]`` for one call (see the module docstring)."""
    if isinstance(module, nn.Conv2d):
        patches = F.unfold(
            x,
            kernel_size=module.kernel_size,
            dilation=module.dilation,
            padding=module.padding,
            stride=module.stride,
        )
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])
    if mask is not None and x.ndim == 3 and tuple(mask.shape) == tuple(x.shape[:2]):
        return x[mask.to(torch.bool)]
    return x.reshape(-1, x.shape[-1])


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _collect(
    model: nn.Module,
    inputs: Inputs,
    layers: Sequence[tuple[str, nn.Module]],
    *,
    hessian: bool,
    batch_size: int,
) -> dict[str, LayerStats]:
    stats: dict[str, LayerStats] = {}
    state: dict[str, torch.Tensor | None] = {"mask": None}

    def hook(name: str, module: nn.Module) -> Callable[..., None]:
        def pre(_m: nn.Module, args: tuple[Any, ...]) -> None:
            rows = input_rows(module, args[0], state["mask"])
            if name not in stats:
                d = rows.shape[1]
                stats[name] = LayerStats(
                    torch.zeros(d, dtype=torch.float64),
                    torch.zeros(d, d, dtype=torch.float64) if hessian else None,
                )
            stats[name].update(rows)

        return pre

    device = _device(model)
    with (
        torch.no_grad(),
        evaluating(model),
        attach_hooks(model, pre=[(n, hook(n, m)) for n, m in layers]),
    ):
        for start in range(0, batch_len(inputs), batch_size):
            batch = inputs_to(select_inputs(inputs, slice(start, start + batch_size)), device)
            state["mask"] = batch.get("attention_mask") if isinstance(batch, Mapping) else None
            call_model(model, batch)
    missing = [n for n, _ in layers if n not in stats]
    if missing:
        raise ConfigError(
            f"Layers {missing} never ran on the calibration data, so they have no input "
            "statistics; exclude them (exclude=[...])."
        )
    return stats


def _forward_order(
    model: nn.Module, inputs: Inputs, layers: Sequence[tuple[str, nn.Module]]
) -> list[tuple[str, nn.Module]]:
    """``layers`` in the order of their first call in a forward pass on one batch."""
    order: list[str] = []

    def hook(name: str) -> Callable[..., None]:
        def pre(_m: nn.Module, _args: tuple[Any, ...]) -> None:
            if name not in order:
                order.append(name)

        return pre

    device = _device(model)
    with (
        torch.no_grad(),
        evaluating(model),
        attach_hooks(model, pre=[(n, hook(n)) for n, _ in layers]),
    ):
        call_model(model, inputs_to(select_inputs(inputs, slice(0, 2)), device))
    by_name = dict(layers)
    never = [n for n in by_name if n not in order]
    if never:
        raise ConfigError(
            f"Layers {never} are not called in the model's forward pass, so they cannot be "
            "calibrated; exclude them (exclude=[...])."
        )
    return [(n, by_name[n]) for n in order]


def calibrate_layers(
    model: nn.Module,
    data: Any,
    layers: Sequence[tuple[str, nn.Module]],
    process: Callable[[str, nn.Module, LayerStats], None],
    *,
    hessian: bool = False,
    sequential: bool = True,
    batch_size: int = 32,
) -> None:
    """Calibrate ``layers`` of ``model`` on ``data`` and hand each its statistics.

    For each layer in forward-call order, ``process(name, module, stats)`` is called; it
    compresses the layer in place. With ``sequential`` the statistics of a layer are collected
    after every earlier layer was processed (one pass over the data per layer); otherwise all
    are collected in one pass first.

    Raises
    ------
    ConfigError
        A layer type that cannot be calibrated (not Linear, Conv1D or plain Conv2d), or a layer
        the forward pass never calls.
    DataError
        Calibration data that cannot be read, or that is empty.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
    for name, module in layers:
        _check_supported(name, module)
    inputs = calibration_inputs(data)
    if batch_len(inputs) == 0:
        raise DataError("The calibration data is empty.")
    ordered = _forward_order(model, inputs, layers)
    if sequential:
        for name, module in ordered:
            stats = _collect(
                model, inputs, [(name, module)], hessian=hessian, batch_size=batch_size
            )
            process(name, module, stats[name])
    else:
        all_stats = _collect(model, inputs, ordered, hessian=hessian, batch_size=batch_size)
        for name, module in ordered:
            process(name, module, all_stats[name])
