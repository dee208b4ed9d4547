"""Post-training weight quantisation, simulated in float (fake quantisation).

Symmetric uniform quantisation with ``b`` bits (Jacob et al. 2018, "Quantization and Training of
Neural Networks for Efficient Integer-Arithmetic-Only Inference"; Krishnamoorthi 2018,
"Quantizing deep convolutional networks for efficient inference: A whitepaper"), per output
channel (dim 0) or per tensor:

    q_max   = 2^(b-1) - 1
    scale_c = max_i |w_{c,i}| / q_max          (1 for an all-zero channel)
    q       = clamp(round(w / scale_c), -q_max, q_max)      (round half to even)
    w'      = q * scale_c

so each channel takes at most ``2 q_max + 1 = 2^b - 1`` distinct values. The quantised weights
are written back in float, so the model keeps its modules and names and every layer stays
hookable; activations are left in float unless ``activations=True``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from repsim._core.hooks import attach_hooks, evaluating
from repsim.compress.prunable import clone_model, prunable_parameters
from repsim.errors import ConfigError, DataError


def check_bits(bits: int) -> int:
    """Return ``bits`` as an int, or raise :class:`ConfigError` unless it is an integer in 2..8."""
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not 2 <= bits <= 8:
        raise ConfigError(f"bits must be an integer from 2 to 8, got {bits!r}.")
    return int(bits)


def quantize_tensor(
    w: torch.Tensor, bits: int, *, per_channel: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Symmetric fake quantisation of one tensor (formula in the module docstring).

    Parameters
    ----------
    w : torch.Tensor
        Weight, output channels along dim 0.
    bits : int
        2..8.
    per_channel : bool
        One scale per slice along dim 0, else one for the whole tensor.

    Returns
    -------
    (w_q, q, scale)
        The dequantised float tensor ``q * scale``, the integer codes (int8 tensor, in
        ``[-q_max, q_max]``) and the scales (shape ``[C]``, or ``[]`` per tensor).
    """
    bits = check_bits(bits)
    q_max = 2 ** (bits - 1) - 1
    w = w.detach()
    if per_channel and w.ndim >= 1:
        absmax = w.abs().reshape(w.shape[0], -1).amax(dim=1)
        shape = (-1,) + (1,) * (w.ndim - 1)
    else:
        absmax = w.abs().amax()
        shape = ()
    scale = torch.where(absmax > 0, absmax / q_max, torch.ones_like(absmax))
    q = torch.clamp(torch.round(w / scale.reshape(shape)), -q_max, q_max)
    return (q * scale.reshape(shape)).to(w.dtype), q.to(torch.int8), scale


@dataclass
class QuantRecord:
    """What :func:`quantize` did.

    Attributes
    ----------
    bits : int
        Weight bit width.
    per_channel : bool
        Per output channel (dim 0) scales, else per tensor.
    layers : dict
        Per parameter name: ``max_levels`` (most distinct values in a channel), ``mse``
        (mean squared quantisation error of the weights), ``rel_error``
        (``||w' - w|| / ||w||``).
    activations : dict
        Per hooked module: the calibrated ``absmax`` of its output (when ``activations=True``).
    """

    bits: int
    per_channel: bool
    layers: dict[str, dict[str, float]] = field(default_factory=dict)
    activations: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """A JSON-serialisable copy."""
        return asdict(self)


class ActivationFakeQuant:
    """Forward hook fake-quantising a module's output to ``bits`` with a fixed symmetric range.

    ``y' = clamp(round(y / s), -q_max, q_max) * s`` with ``s = absmax / q_max`` and ``absmax``
    the largest ``|y|`` seen on the calibration data.
    """

    def __init__(self, bits: int, absmax: float) -> None:
        self.bits = check_bits(bits)
        q_max = 2 ** (self.bits - 1) - 1
        self.q_max = q_max
        self.scale = absmax / q_max if absmax > 0 else 1.0

    def __call__(self, module: nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
        """Fake-quantise a module's output (a forward hook)."""
        return torch.clamp(torch.round(output / self.scale), -self.q_max, self.q_max) * self.scale


def quantize(
    model: nn.Module,
    bits: int = 8,
    *,
    per_channel: bool = True,
    exclude: Sequence[str] | None = None,
    activations: bool = False,
    calibration: torch.Tensor | np.ndarray | None = None,
    activation_bits: int | None = None,
) -> tuple[nn.Module, QuantRecord]:
    """Post-training symmetric weight quantisation of every Linear and Conv weight.

    Weights are fake-quantised (see the module docstring for the formula) and stored in float,
    so module names, hooks and the state-dict layout do not change. A pruned model is quantised
    on its effective weights ``w * mask`` (written back into ``weight_orig``), so pruned weights
    stay zero (``q(0) = 0``) and the scale ignores them. Biases stay in float.

    Parameters
    ----------
    model : torch.nn.Module
        The model (copied).
    bits : int
        Weight bit width, 2..8.
    per_channel : bool
        One scale per output channel (dim 0), else one per tensor.
    exclude : sequence of str, optional
        Layer names or globs to leave in float (unlike pruning, the classifier is quantised).
    activations : bool
        Also fake-quantise each Linear/Conv output with a forward hook whose range is
        calibrated on ``calibration`` inputs (per tensor, symmetric).
    calibration : array or tensor, optional
        Inputs for activation calibration (required when ``activations=True``).
    activation_bits : int, optional
        Bit width of activations (default: ``bits``).

    Returns
    -------
    (torch.nn.Module, QuantRecord)

    Raises
    ------
    ConfigError
        ``bits`` outside 2..8.
    DataError
        ``activations=True`` without calibration data.
    """
    bits = check_bits(bits)
    model = clone_model(model)
    targets, _ = prunable_parameters(model, exclude=exclude, exclude_classifier=False)
    record = QuantRecord(bits=bits, per_channel=per_channel)
    with torch.no_grad():
        for name, module in targets:
            mask = getattr(module, "weight_mask", None)
            param = module.weight_orig if mask is not None else module.weight
            w = param * mask if mask is not None else param.detach().clone()
            w_q, q, _ = quantize_tensor(w, bits, per_channel=per_channel)
            param.copy_(w_q)
            if mask is not None:  # refresh the derived attribute torch recomputes in forward
                module.weight = param * mask
            flat = q.reshape(q.shape[0], -1) if per_channel else q.reshape(1, -1)
            levels = max(int(torch.unique(row).numel()) for row in flat)
            err = (w_q - w).float()
            norm = float(w.float().norm())
            if norm == 0:
                warnings.warn(
                    f"{name}.weight is all zero; its relative quantisation error is "
                    "undefined (NaN).",
                    RuntimeWarning,
                    stacklevel=2,
                )
            record.layers[f"{name}.weight"] = {
                "max_levels": levels,
                "mse": float(err.pow(2).mean()),
                "rel_error": float(err.norm()) / norm if norm > 0 else float("nan"),
            }
    if activations:
        if calibration is None:
            raise DataError("activations=True needs calibration inputs (calibration=...).")
        a_bits = check_bits(activation_bits if activation_bits is not None else bits)
        ranges = _calibrate(model, [n for n, _ in targets], torch.as_tensor(calibration))
        modules = dict(model.named_modules())
        for name, absmax in ranges.items():
            modules[name].register_forward_hook(ActivationFakeQuant(a_bits, absmax))
            record.activations[name] = absmax
    return model, record


@torch.no_grad()
def _calibrate(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, float]:
    ranges = dict.fromkeys(names, 0.0)

    def recorder(name: str) -> Any:
        def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
            ranges[name] = max(ranges[name], float(out.detach().abs().max()))

        return hook

    with attach_hooks(model, [(n, recorder(n)) for n in names]), evaluating(model):
        device = next(model.parameters()).device
        for start in range(0, len(x), 512):
            model(x[start : start + 512].to(device))
    return ranges


def torch_int8_dynamic(model: nn.Module) -> nn.Module:
    """Int8 reference through ``torch.ao.quantization.quantize_dynamic`` (Linear layers only).

    Weights use a per-channel symmetric observer restricted to ``[-127, 127]``, which is the
    convention of :func:`quantize` with ``bits=8`` (``scale = max|w_c| / 127``), so the integer
    weights coincide; activations are quantised dynamically per batch (quint8, affine), so the
    outputs are close to, not equal to, the float simulation. Conv layers stay in float (torch's
    dynamic quantisation covers Linear only). CPU only; returns a new model.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torch.ao.quantization import PlaceholderObserver, QConfig, quantize_dynamic
        from torch.ao.quantization.observer import PerChannelMinMaxObserver

    from repsim.compress.mask import bake

    qconfig = QConfig(
        activation=PlaceholderObserver.with_args(
            dtype=torch.quint8, quant_min=0, quant_max=255, is_dynamic=True
        ),
        weight=PerChannelMinMaxObserver.with_args(
            dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-127, quant_max=127
        ),
    )
    plain = bake(clone_model(model)).to("cpu").eval()
    with warnings.catch_warnings():  # torch.ao is deprecated in favour of torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(plain, {nn.Linear: qconfig}, dtype=torch.qint8)
