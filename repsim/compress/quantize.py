"""Post-training weight quantisation, simulated in float (fake quantisation).

Symmetric uniform quantisation with ``b`` bits (Jacob et al. 2018, "Quantization and Training of
Neural Networks for Efficient Integer-Arithmetic-Only Inference"; Krishnamoorthi 2018,
"Quantizing deep convolutional networks for efficient inference: A whitepaper"), per output
channel (dim 0) or per tensor:

    q_max   = 2^(b-1) - 1
    scale_c = max_i |w_{c,i}| / q_max          (1 for an all-zero channel)
    q       = clamp(round(w / scale_c), -q_max, q_max)      (round half to even)
    w'      = q * scale_c

so each channel takes at most ``2 q_max + 1 = 2^b - 1`` distinct values.

**Group-wise round-to-nearest** (``group_size=g``; the RTN baseline of the LLM quantisation
literature, e.g. Dettmers & Zettlemoyer 2023 "The case for 4-bit precision", Frantar et al.
2022 GPTQ): each output row is cut into groups of ``g`` consecutive input weights (the last
group of a row may be shorter) and each group gets its own scale (and zero point), by the same
formulas applied to the group instead of the channel. Rows are output units whatever the
weight layout (HF ``Conv1D`` stores ``[in, out]`` and is transposed; conv weights are
flattened to ``[out, in·k·k]``).

**Asymmetric** grids (``symmetric=False``, GPTQ's default min-max quantiser) use all ``2^b``
codes:

    lo = min(min_i w_i, 0),  hi = max(max_i w_i, 0)
    scale = (hi - lo) / (2^b - 1)  (1 when hi = lo),   z = round(-lo / scale)
    q = clamp(round(w / scale) + z, 0, 2^b - 1),        w' = (q - z) · scale

(the range always contains 0, so ``w = 0`` maps to ``w' = 0`` exactly and pruned weights stay
zero).

**GPTQ** (``method="gptq"``, calibration ``data``): Frantar, Ashkboos, Hoefler & Alistarh 2022,
each layer quantised column by column with optimal-brain-surgeon error compensation on its
calibration Hessian (:mod:`repsim.compress.obs`), layers in forward order, each calibrated on
the outputs of the already quantised earlier layers.

The quantised weights are written back in float, so the model keeps its modules and names and
every layer stays hookable; activations are left in float unless ``activations=True``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from repsim._core.hooks import attach_hooks, evaluating
from repsim.compress.calibrate import LayerStats, calibrate_layers, calibration_inputs
from repsim.compress.obs import gptq_matrix
from repsim.compress.prunable import (
    clone_model,
    from_rows,
    param_name,
    prunable_parameters,
    weight_rows,
)
from repsim.errors import ConfigError, DataError
from repsim.models.adapters import batch_len, call_model, inputs_to, select_inputs

METHODS = ("rtn", "gptq")


def check_bits(bits: int) -> int:
    """Return ``bits`` as an int, or raise :class:`ConfigError` unless it is an integer in 2..8."""
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not 2 <= bits <= 8:
        raise ConfigError(f"bits must be an integer from 2 to 8, got {bits!r}.")
    return int(bits)


def check_group_size(group_size: int | None) -> int | None:
    """``group_size`` as an int >= 1 (or ``None``), else :class:`ConfigError`."""
    if group_size is None:
        return None
    if (
        isinstance(group_size, bool)
        or not isinstance(group_size, int | np.integer)
        or group_size < 1
    ):
        raise ConfigError(
            f"group_size must be a positive integer (e.g. 64 or 128) or None, got {group_size!r}."
        )
    return int(group_size)


def grid(
    w: torch.Tensor, bits: int, *, symmetric: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of each row of ``w`` ``[rows, g]`` (see the module docstring).

    Returns ``(scale, zero)``, both ``[rows, 1]`` (``zero`` is 0 for symmetric grids).
    """
    if symmetric:
        q_max = 2 ** (bits - 1) - 1
        absmax = w.abs().amax(dim=1, keepdim=True)
        scale = torch.where(absmax > 0, absmax / q_max, torch.ones_like(absmax))
        return scale, torch.zeros_like(scale)
    levels = 2**bits - 1
    lo = torch.clamp(w.amin(dim=1, keepdim=True), max=0)
    hi = torch.clamp(w.amax(dim=1, keepdim=True), min=0)
    scale = torch.where(hi > lo, (hi - lo) / levels, torch.ones_like(hi))
    zero = torch.round(-lo / scale)
    return scale, zero


def on_grid(
    w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, *, symmetric: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Round ``w`` to a grid: ``(w', q)``, the dequantised values and the integer codes."""
    if symmetric:
        q_max = 2 ** (bits - 1) - 1
        q = torch.clamp(torch.round(w / scale), -q_max, q_max)
        return q * scale, q
    q = torch.clamp(torch.round(w / scale) + zero, 0, 2**bits - 1)
    return (q - zero) * scale, q


def quantize_rows(
    rows: torch.Tensor, bits: int, *, group_size: int | None = None, symmetric: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Round-to-nearest of ``rows`` ``[out, in]`` per row or per group of ``group_size`` columns.

    Returns ``(w', q)``: the dequantised tensor (dtype of ``rows``) and the integer codes
    (float tensor of whole numbers).
    """
    bits = check_bits(bits)
    w = rows.detach()
    g = w.shape[1] if group_size is None else min(group_size, w.shape[1])
    out, codes = torch.empty_like(w), torch.empty_like(w)
    for start in range(0, w.shape[1], g):
        block = w[:, start : start + g]
        scale, zero = grid(block, bits, symmetric=symmetric)
        out[:, start : start + g], codes[:, start : start + g] = on_grid(
            block, scale, zero, bits, symmetric=symmetric
        )
    return out, codes


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
        Per parameter name: ``max_levels`` (most distinct values in a channel, or in a group),
        ``mse`` (mean squared quantisation error of the weights), ``rel_error``
        (``||w' - w|| / ||w||``); with GPTQ also ``output_rel_error``
        ``sqrt(tr(ΔW H ΔW^T) / tr(W H W^T))``, the relative error of the layer's output on the
        calibration inputs.
    activations : dict
        Per hooked module: the calibrated ``absmax`` of its output (when ``activations=True``).
    group_size : int or None
        Columns per scale within each output row (``None``: one scale per channel or tensor).
    symmetric : bool
        Symmetric grid ``[-q_max, q_max]``, else asymmetric min-max with a zero point.
    method : str
        ``"rtn"`` (round to nearest) or ``"gptq"``.
    options : dict
        Calibration settings of GPTQ, and the names of tied weights.
    """

    bits: int
    per_channel: bool
    layers: dict[str, dict[str, float]] = field(default_factory=dict)
    activations: dict[str, float] = field(default_factory=dict)
    group_size: int | None = None
    symmetric: bool = True
    method: str = "rtn"
    options: dict[str, object] = field(default_factory=dict)

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


def _levels(w_rows: torch.Tensor, group: int) -> int:
    """Most distinct values in one quantisation group (``group`` columns of a row)."""
    best = 0
    for start in range(0, w_rows.shape[1], group):
        block = w_rows[:, start : start + group]
        best = max(best, max(int(torch.unique(r).numel()) for r in block))
    return best


def _tied(model: nn.Module, names: Sequence[str]) -> dict[str, list[str]]:
    """Target weights shared with other parameters (tied embeddings): name -> other names."""
    by_id: dict[int, list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(n)
    params = dict(model.named_parameters(remove_duplicate=False))
    out = {}
    for name in names:
        key = name + "_orig" if name + "_orig" in params else name
        if key in params:
            others = [n for n in by_id[id(params[key])] if n != key]
            if others:
                out[name] = others
    return out


def quantize(
    model: nn.Module,
    bits: int = 8,
    *,
    per_channel: bool = True,
    group_size: int | None = None,
    symmetric: bool = True,
    method: str = "rtn",
    data: Any = None,
    exclude: Sequence[str] | None = None,
    activations: bool = False,
    calibration: torch.Tensor | np.ndarray | None = None,
    activation_bits: int | None = None,
    batch_size: int = 32,
    sequential: bool = True,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> tuple[nn.Module, QuantRecord]:
    """Post-training weight quantisation of every Linear, Conv and transformers Conv1D weight.

    Weights are fake-quantised (see the module docstring for the formulas) and stored in float,
    so module names, hooks and the state-dict layout do not change. A pruned model is quantised
    on its effective weights ``w * mask`` (written back into ``weight_orig``), so pruned weights
    stay zero (``q(0) = 0``) and the scale ignores them. Biases, embeddings and normalisation
    layers stay in float. A weight tied to another parameter (GPT-2's ``lm_head`` and token
    embedding) is quantised once, for both, with a warning naming them.

    Parameters
    ----------
    model : torch.nn.Module
        The model (copied).
    bits : int
        Weight bit width, 2..8 (3, 4 and 8 are the usual LLM settings).
    per_channel : bool
        One scale per output channel, else one per tensor (not with ``group_size``).
    group_size : int, optional
        One scale (and zero point) per group of this many consecutive input weights of each
        output row (64 and 128 are usual).
    symmetric : bool
        Symmetric grid (default), or asymmetric min-max with a zero point.
    method : {"rtn", "gptq"}
        Round to nearest, or GPTQ on calibration ``data``.
    data : optional
        GPTQ's calibration samples: anything :func:`repsim.data.as_grouped` takes, or the
        inputs alone (token ids, a dict with ``input_ids`` and ``attention_mask``).
    exclude : sequence of str, optional
        Layer names or globs to leave in float (unlike pruning, the classifier is quantised).
    activations : bool
        Also fake-quantise each quantised layer's output with a forward hook whose range is
        calibrated on ``calibration`` inputs (per tensor, symmetric).
    calibration : array, tensor or dict, optional
        Inputs for activation calibration (required when ``activations=True``).
    activation_bits : int, optional
        Bit width of activations (default: ``bits``).
    batch_size, sequential, blocksize, percdamp
        GPTQ calibration batch size, layer order (see :mod:`repsim.compress.calibrate`), lazy
        block size and Hessian damping.

    Returns
    -------
    (torch.nn.Module, QuantRecord)

    Raises
    ------
    ConfigError
        ``bits`` outside 2..8, a bad ``group_size``, ``group_size`` with
        ``per_channel=False``, an unknown method.
    DataError
        ``activations=True`` without calibration data; GPTQ without ``data``.
    """
    bits = check_bits(bits)
    group_size = check_group_size(group_size)
    if method not in METHODS:
        raise ConfigError(f"Unknown quantisation method {method!r}; use one of {list(METHODS)}.")
    if group_size is not None and not per_channel:
        raise ConfigError("group_size gives scales within each output row; drop per_channel=False.")
    if method == "gptq" and not per_channel:
        raise ConfigError("GPTQ quantises per output row (or per group); drop per_channel=False.")
    if method == "gptq" and data is None:
        raise DataError("method='gptq' calibrates on data: pass data= (samples or inputs).")
    model = clone_model(model)
    targets, _ = prunable_parameters(model, exclude=exclude, exclude_classifier=False)
    record = QuantRecord(
        bits=bits,
        per_channel=per_channel,
        group_size=group_size,
        symmetric=symmetric,
        method=method,
    )
    tied = _tied(model, [param_name(n) for n, _ in targets])
    if tied:
        record.options["tied"] = tied
        for name, others in tied.items():
            warnings.warn(
                f"{name} is tied to {others}; quantising it quantises them too (they are one "
                "tensor). Exclude it to keep both in float.",
                UserWarning,
                stacklevel=2,
            )

    def write(name: str, module: nn.Module, w: torch.Tensor, w_q: torch.Tensor) -> dict[str, float]:
        mask = getattr(module, "weight_mask", None)
        param = module.weight_orig if mask is not None else module.weight
        param.copy_(w_q.to(param.dtype))
        if mask is not None:  # refresh the derived attribute torch recomputes in forward
            module.weight = param * mask
        rows_q = weight_rows(w_q, module)
        if not per_channel:
            levels = int(torch.unique(w_q).numel())
        else:
            levels = _levels(rows_q, group_size or rows_q.shape[1])
        err = (w_q - w).float()
        norm = float(w.float().norm())
        if norm == 0:
            warnings.warn(
                f"{name}.weight is all zero; its relative quantisation error is undefined (NaN).",
                RuntimeWarning,
                stacklevel=3,
            )
        entry = {
            "max_levels": levels,
            "mse": float(err.pow(2).mean()),
            "rel_error": float(err.norm()) / norm if norm > 0 else float("nan"),
        }
        record.layers[f"{name}.weight"] = entry
        return entry

    def effective(module: nn.Module) -> torch.Tensor:
        mask = getattr(module, "weight_mask", None)
        if mask is not None:
            return (module.weight_orig * mask).detach().clone()
        return module.weight.detach().clone()

    if method == "rtn":
        with torch.no_grad():
            for name, module in targets:
                w = effective(module)
                if per_channel:
                    rows_q, _ = quantize_rows(
                        weight_rows(w, module), bits, group_size=group_size, symmetric=symmetric
                    )
                    w_q = from_rows(rows_q, module, w.shape)
                else:
                    w_q, _ = quantize_rows(w.reshape(1, -1), bits, symmetric=symmetric)
                    w_q = w_q.reshape(w.shape)
                write(name, module, w, w_q)
    else:

        def fit(block: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
            scale, zero = grid(block, bits, symmetric=symmetric)

            def q(col: torch.Tensor) -> torch.Tensor:
                out, _ = on_grid(col.unsqueeze(1), scale, zero, bits, symmetric=symmetric)
                return out.squeeze(1)

            return q

        def process(name: str, module: nn.Module, stats: LayerStats) -> None:
            w = effective(module)
            rows = weight_rows(w, module).to(torch.float64).cpu()
            mask = getattr(module, "weight_mask", None)
            keep = None if mask is None else weight_rows(mask.to(torch.bool), module).cpu()
            h = stats.hessian()
            rows_q = gptq_matrix(
                rows,
                h,
                fit,
                group_size=group_size,
                keep=keep,
                blocksize=blocksize,
                percdamp=percdamp,
            )
            with torch.no_grad():
                entry = write(name, module, w, from_rows(rows_q, module, w.shape).to(w.device))
            delta = rows_q - rows
            num = float(torch.einsum("ij,jk,ik->", delta, h, delta))
            den = float(torch.einsum("ij,jk,ik->", rows, h, rows))
            entry["output_rel_error"] = math.sqrt(num / den) if den > 0 else float("nan")

        inputs = calibration_inputs(data)
        calibrate_layers(
            model,
            inputs,
            targets,
            process,
            hessian=True,
            sequential=sequential,
            batch_size=batch_size,
        )
        record.options.update(
            n_calibration=batch_len(inputs),
            sequential=sequential,
            batch_size=batch_size,
            blocksize=blocksize,
            percdamp=percdamp,
        )
    if activations:
        if calibration is None:
            raise DataError("activations=True needs calibration inputs (calibration=...).")
        a_bits = check_bits(activation_bits if activation_bits is not None else bits)
        ranges = _calibrate(model, [n for n, _ in targets], calibration_inputs(calibration))
        modules = dict(model.named_modules())
        for name, absmax in ranges.items():
            modules[name].register_forward_hook(ActivationFakeQuant(a_bits, absmax))
            record.activations[name] = absmax
    return model, record


@torch.no_grad()
def _calibrate(model: nn.Module, names: list[str], x: Any) -> dict[str, float]:
    ranges = dict.fromkeys(names, 0.0)

    def recorder(name: str) -> Any:
        def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
            ranges[name] = max(ranges[name], float(out.detach().abs().max()))

        return hook

    with attach_hooks(model, [(n, recorder(n)) for n in names]), evaluating(model):
        device = next(model.parameters()).device
        for start in range(0, batch_len(x), 512):
            call_model(model, inputs_to(select_inputs(x, slice(start, start + 512)), device))
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
