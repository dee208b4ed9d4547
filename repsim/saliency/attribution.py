"""Per-group layer attributions with captum, summarised per unit, and their mass on pruned units.

For a layer with output ``z(x)`` (``[C, H, W]`` for a conv, ``[d]`` for a linear layer) and the
logit ``F_t`` of the target class ``t``, captum gives per-element attributions ``A(x)`` shaped
like ``z``:

- ``method="integrated_gradients"``: layer integrated gradients (Sundararajan et al. 2017,
  "Axiomatic attribution for deep networks", ICML), ``A_j = (z_j(x) - z_j(x')) *
  int_0^1 dF_t/dz_j (z(x') + a (z(x) - z(x')))  da`` with baseline input ``x'``
  (``captum.attr.LayerIntegratedGradients``);
- ``method="conductance"``: layer conductance (Dhamdhere et al. 2019, "How important is a
  neuron?", ICLR), the flow of input integrated gradients through each hidden element
  (``captum.attr.LayerConductance``).

Unit summary (definition chosen here): the attribution of unit ``u`` (a conv channel or a linear
feature) for sample ``i`` is the sum over its spatial positions ``a_{i,u} = sum_{h,w}
A_{u,h,w}(x_i)``. For a transformer layer (dict inputs with an ``attention_mask`` ``[B, T]``
and a layer output ``[B, T, d]``) the units are the ``d`` hidden features and the sum runs over
the non-pad tokens, ``a_{i,u} = sum_t m_{i,t} A_{t,u}(x_i)``. The group summary is the mean absolute value ``m_{g,u} = (1/n_g) sum_{i in g}
|a_{i,u}|``. The share of a group's attribution on a set of units ``P`` is
``sum_{u in P} m_{g,u} / sum_u m_{g,u}``.

A unit counts as *pruned* by a mask on its layer's weight when at least ``threshold`` (default
1: all) of its incoming weights (``weight[u, ...]``) are removed. With ``threshold=1`` the unit's
output no longer depends on its input (only on its bias, if any); for unstructured masks few
units are fully pruned, so a lower threshold (e.g. 0.9) shows units that lost most inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from repsim._core.deprecation import renamed_arguments
from repsim._core.fingerprints import unwrap_model
from repsim.data.base import GroupedData
from repsim.errors import ConfigError, LayerNotFoundError, MaskError, did_you_mean
from repsim.models.adapters import Inputs, model_logits
from repsim.saliency.gradient import (
    as_samples,
    check_batch_size,
    eval_mode,
    group_batches,
    model_device,
    resolve_groups,
)

METHODS = ("integrated_gradients", "conductance")


def _explainer_inputs(
    model: nn.Module, x: Inputs
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], Any]:
    """``(main input, extra inputs, forward function)`` for captum.

    A tensor input is the main input; for dict inputs ``input_ids`` (else the first key) is,
    and the other tensors travel as captum's ``additional_forward_args``.
    """
    if not isinstance(x, Mapping):
        return x, (), lambda inp: model_logits(model, inp)
    keys = list(x)
    main = "input_ids" if "input_ids" in x else keys[0]
    rest = [k for k in keys if k != main]

    def forward(inp: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return model_logits(model, {main: inp, **dict(zip(rest, extra, strict=True))})

    return x[main], tuple(x[k] for k in rest), forward


def _layer(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    if isinstance(layer, nn.Module):
        return layer
    modules = dict(model.named_modules())
    if layer not in modules or layer == "":
        names = [n for n in modules if n]
        raise LayerNotFoundError(
            f"The model has no layer {layer!r}.{did_you_mean(str(layer), names)} Layers: "
            f"{', '.join(names)}."
        )
    return modules[layer]


@renamed_arguments({"by": "groups"})
def group_layer_attributions(
    model: nn.Module,
    data: GroupedData | Any,
    layer: str | nn.Module,
    *,
    method: str = "integrated_gradients",
    groups: GroupedData | np.ndarray | Sequence[int] | str | None = None,
    target: str = "label",
    baseline: float = 0.0,
    n_steps: int = 32,
    integration: str = "gausslegendre",
    batch_size: int = 64,
    include_overall: bool = True,
    progress: bool | None = None,
) -> dict[str, np.ndarray]:
    """Mean absolute per-unit attribution of a layer's output, per group.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier (logits output).
    data : GroupedData or a container (see :func:`repsim.data.as_grouped`)
        Samples to explain.
    layer : str or torch.nn.Module
        The layer (dotted ``named_modules`` name) whose output units are attributed.
    method : {"integrated_gradients", "conductance"}
        captum's ``LayerIntegratedGradients`` or ``LayerConductance``.
    groups : GroupedData, array of int, str, optional
        The groups (default ``data``'s groups; formerly ``by=``, still accepted with a
        ``DeprecationWarning``).
    target : {"label", "prediction"}
        Explain the logit of the true label or of the model's prediction.
    baseline : float
        Constant baseline input ``x'``.
    n_steps : int
        Steps of the path integral.
    integration : str
        captum's approximation method (``"gausslegendre"``, ``"riemann_trapezoid"``, ...).
        Conductance sums layer differences between consecutive path points, so
        ``"riemann_trapezoid"`` (whose points include both ends) makes its per-unit totals
        telescope exactly.
    batch_size : int
        Samples per captum call.

    Returns
    -------
    dict
        ``{group: [n_units] float64}`` of ``m_{g,u}`` (and ``"overall"``).
    """
    from captum.attr import LayerConductance, LayerIntegratedGradients

    if method not in METHODS:
        raise ConfigError(f"method must be one of {METHODS}, got {method!r}.")
    if target not in ("label", "prediction"):
        raise ConfigError(f"target must be 'label' or 'prediction', got {target!r}.")
    check_batch_size(batch_size)
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ConfigError(f"n_steps must be a positive integer, got {n_steps!r}.")
    model = unwrap_model(model)
    data = as_samples(data, groups)
    module = _layer(model, layer)
    cls = LayerIntegratedGradients if method == "integrated_gradients" else LayerConductance
    device = model_device(model)
    out = {}
    with eval_mode(model):
        for group, rows in tqdm(
            resolve_groups(data, groups, include_overall=include_overall).items(),
            desc="attribution",
            disable=None if progress is None else not progress,
            leave=False,
        ):
            total = None
            for x, y in group_batches(data, rows, batch_size, device):
                if target == "prediction":
                    with torch.no_grad():
                        y = model_logits(model, x).argmax(1)
                main, extra, forward = _explainer_inputs(model, x)
                if method == "conductance" and not main.is_floating_point():
                    raise ConfigError(
                        "Layer conductance interpolates the inputs, which integer token ids "
                        "cannot be; use method='integrated_gradients' (layer integrated "
                        "gradients interpolate at the layer)."
                    )
                base = baseline if main.is_floating_point() else int(baseline)
                attr = cls(forward, module).attribute(
                    main,
                    baselines=torch.full_like(main, base),
                    target=y,
                    additional_forward_args=extra or None,
                    n_steps=n_steps,
                    method=integration,
                )
                if isinstance(attr, tuple | list):
                    attr = attr[0]
                per_unit = attr.detach().double()
                mask = x.get("attention_mask") if isinstance(x, Mapping) else None
                if (
                    mask is not None
                    and per_unit.ndim == 3
                    and tuple(per_unit.shape[:2]) == tuple(mask.shape)
                ):
                    per_unit = (per_unit * mask.to(per_unit.dtype).unsqueeze(-1)).sum(1)
                elif per_unit.ndim > 2:
                    per_unit = per_unit.flatten(2).sum(2)
                s = per_unit.abs().sum(0).cpu().numpy()
                total = s if total is None else total + s
            out[group] = total / len(rows)
    return out


def pruned_units(mask: torch.Tensor, threshold: float = 1.0) -> np.ndarray:
    """Output units whose incoming weights are (at least ``threshold`` of them) removed.

    Parameters
    ----------
    mask : torch.Tensor
        Keep mask (True = kept) of a layer weight shaped ``[out, ...]``.
    threshold : float
        Share of removed incoming weights, in (0, 1], at which a unit counts as pruned.

    Returns
    -------
    numpy.ndarray
        ``[out]`` bool.
    """
    if not 0 < float(threshold) <= 1:
        raise ConfigError(f"threshold must lie in (0, 1], got {threshold!r}.")
    m = torch.as_tensor(mask).to(torch.bool)
    if m.ndim < 2:
        raise MaskError(f"Expected a weight mask shaped [out, in, ...], got {tuple(m.shape)}.")
    removed = (~m).reshape(m.shape[0], -1).double().mean(1).numpy()
    return removed >= float(threshold) - 1e-12


def attribution_share(attributions: dict[str, np.ndarray], units: np.ndarray) -> dict[str, float]:
    """Share of each group's unit attribution mass carried by ``units`` (bool ``[n_units]``).

    Returns NaN for a group whose total attribution is 0.
    """
    units = np.asarray(units, dtype=bool)
    out = {}
    for group, m in attributions.items():
        m = np.asarray(m, dtype=np.float64)
        if m.shape != units.shape:
            raise MaskError(
                f"{len(units)} unit flags for a layer with {m.shape[0]} units (group {group!r})."
            )
        total = m.sum()
        out[group] = float(m[units].sum() / total) if total > 0 else float("nan")
    return out
