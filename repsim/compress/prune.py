"""Pruning built on ``torch.nn.utils.prune``: magnitude (global, layer-wise), random, L_n structured.

Sparsity is the share of zeroed weights among the *prunable* weights: the ``weight`` tensors of
``Linear`` and ``Conv`` modules (biases and normalisation layers are never pruned), less the
excluded ones. The last ``Linear`` module in ``named_modules()`` order (the classifier) is
excluded by default, as in Blakeney et al. 2021 ("Simon Says: Evaluating and Mitigating Bias in
Pruned Neural Networks with Knowledge Distillation").

The selection of prunable weights, the sparsity report and :class:`PruneRecord` live in
:mod:`repsim.compress.prunable` (shared with FairGRAPE); they are re-exported here.

Pruning an already pruned model composes (torch's ``PruningContainer``): the request is always
the *total* sparsity, so pruning to 0.5 and then to 0.9 gives the same share of zeros as pruning
to 0.9 at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from repsim._core.fingerprints import unwrap_model
from repsim.compress.fairgrape import fairgrape_prune
from repsim.compress.prunable import (
    PrunableParameters,
    PruneRecord,
    _mask_of,
    check_sparsity,
    classifier_name,
    clone_model,
    prunable_parameters,
    pruned_parameters,
    sparsity_report,
)
from repsim.errors import ConfigError, did_you_mean

__all__ = [
    "METHODS",
    "SCOPES",
    "PrunableParameters",
    "PruneRecord",
    "check_sparsity",
    "classifier_name",
    "clone_model",
    "prunable_parameters",
    "prune",
    "pruned_parameters",
    "sparsity_report",
]

METHODS = ("magnitude", "random", "ln_structured", "fairgrape")
SCOPES = ("global", "layerwise")


def _to_prune(target_zero: int, current_zero: int, what: str) -> int:
    if target_zero < current_zero:
        raise ConfigError(
            f"{what} already has {current_zero} pruned weights, more than the {target_zero} the "
            "requested sparsity allows; pruning cannot be undone (start from the dense model)."
        )
    return target_zero - current_zero


def prune(
    model: nn.Module,
    sparsity: float,
    *,
    method: str = "magnitude",
    scope: str | None = None,
    n: int | float = 1,
    dim: int = 0,
    exclude: Sequence[str] | None = None,
    exclude_classifier: bool = True,
    seed: int | None = 0,
    inplace: bool = False,
    data: Any = None,
    groups: Any = None,
) -> tuple[nn.Module, PruneRecord]:
    """Prune a model's Linear and Conv weights to a total sparsity.

    Methods (Han et al. 2015 "Learning both Weights and Connections"; Li et al. 2017 "Pruning
    Filters for Efficient ConvNets"; the random control of Blalock et al. 2020):

    - ``"magnitude"``: zero the weights of smallest ``|w|``. ``scope="global"`` ranks ``|w|``
      across all pruned tensors at once (``torch.nn.utils.prune.global_unstructured`` with
      ``L1Unstructured``), so layers end up with different sparsities; ``"layerwise"`` prunes
      each tensor to ``round(s * size)`` zeros.
    - ``"random"``: zero weights chosen uniformly at random (``seed``), globally or per tensor.
    - ``"ln_structured"``: zero whole slices along ``dim`` (``dim=0``: output filters/neurons)
      of smallest L_n norm ``||w_c||_n``; per layer ``round(s * n_channels)`` slices (so the
      sparsity is met to one slice per layer). Only ``scope="layerwise"``.
    - ``"fairgrape"``: the group-aware criterion of Lin et al. 2022 (FairGRAPE), estimated on
      ``data`` with ``groups``; see :func:`repsim.saliency.fairgrape_prune` (default scope
      ``"layerwise"``, as in the paper).

    The target is a count: ``k = round(s * N)`` zeros over the ``N`` pruned weights (global) or
    per tensor (layer-wise), including zeros an earlier pruning left, so repeated calls compose
    to the requested total.

    Parameters
    ----------
    model : torch.nn.Module
        The model (copied unless ``inplace``).
    sparsity : float
        Requested total share of zeroed weights, in [0, 1).
    method : {"magnitude", "random", "ln_structured", "fairgrape"}
        How weights are chosen.
    scope : {"global", "layerwise"}, optional
        Default ``"global"`` for unstructured methods, ``"layerwise"`` for ``ln_structured``.
    n : int or float
        Norm order of ``ln_structured`` (1, 2, ``inf``...).
    dim : int
        Dimension along which ``ln_structured`` removes slices.
    exclude : sequence of str, optional
        Names or glob patterns of layers to leave dense (see :func:`prunable_parameters`).
    exclude_classifier : bool
        Leave the last Linear layer dense (default, as in Simon Says).
    seed : int, optional
        Seed of ``"random"`` (the global RNG is left untouched).
    inplace : bool
        Prune ``model`` itself instead of a deep copy.
    data : GroupedData, optional
        Samples the ``"fairgrape"`` importance is estimated on (required by that method only).
    groups : optional
        Groups for ``"fairgrape"`` (default: ``data.groups``).

    Returns
    -------
    (torch.nn.Module, PruneRecord)
        The pruned model (``weight_orig`` + ``weight_mask`` reparametrisation, so pruned
        weights stay zero while it is fine-tuned) and what was achieved.

    Raises
    ------
    ConfigError
        Sparsity outside [0, 1), an unknown method/scope, ``ln_structured`` with global scope,
        or a target below the sparsity the model already has.
    LayerNotFoundError
        An ``exclude`` entry that matches no prunable layer.
    """
    s = check_sparsity(sparsity)
    if method not in METHODS:
        raise ConfigError(
            f"Unknown pruning method {method!r}; use one of {list(METHODS)}."
            + did_you_mean(str(method), METHODS)
        )
    if method == "fairgrape":
        if data is None:
            raise ConfigError("method='fairgrape' estimates group importance on data: pass data=.")
        return fairgrape_prune(
            model,
            data,
            s,
            groups=groups,
            scope=scope or "layerwise",
            exclude=exclude,
            exclude_classifier=exclude_classifier,
            inplace=inplace,
        )
    if scope is None:
        scope = "layerwise" if method == "ln_structured" else "global"
    if scope not in SCOPES:
        raise ConfigError(f"Unknown scope {scope!r}; use 'global' or 'layerwise'.")
    if method == "ln_structured" and scope == "global":
        raise ConfigError(
            "ln_structured pruning is layer-wise only (filter norms are not comparable across "
            "layers); use scope='layerwise'."
        )
    model = unwrap_model(model)
    if not inplace:
        model = clone_model(model)
    targets, excluded = prunable_parameters(
        model, exclude=exclude, exclude_classifier=exclude_classifier
    )
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        if scope == "global":
            _, current, total = sparsity_report(model, targets)
            k = _to_prune(round(s * total), current, "The model")
            pm = tprune.L1Unstructured if method == "magnitude" else tprune.RandomUnstructured
            tprune.global_unstructured(
                [(m, "weight") for _, m in targets], pruning_method=pm, amount=k
            )
        else:
            for name, module in targets:
                mask = _mask_of(module)
                if method == "ln_structured":
                    _prune_structured(module, name, mask, s, n, dim)
                    continue
                k = _to_prune(round(s * mask.numel()), int((~mask).sum()), f"Layer {name!r}")
                if method == "magnitude":
                    tprune.l1_unstructured(module, "weight", amount=k)
                else:
                    tprune.random_unstructured(module, "weight", amount=k)
    layers, n_zero, n_total = sparsity_report(model, targets)
    options: dict[str, object] = {
        "exclude": list(exclude or []),
        "exclude_classifier": exclude_classifier,
    }
    if method == "ln_structured":
        options.update(n=n, dim=dim)
    if method == "random":
        options["seed"] = seed
    record = PruneRecord(
        method=method,
        scope=scope,
        requested=s,
        sparsity=n_zero / n_total,
        n_zero=n_zero,
        n_total=n_total,
        layers=layers,
        excluded=excluded,
        options=options,
    )
    return model, record


def _prune_structured(
    module: nn.Module, name: str, mask: torch.Tensor, s: float, n: int | float, dim: int
) -> None:
    weight = module.weight
    if not -weight.ndim <= dim < weight.ndim:
        raise ConfigError(
            f"dim={dim} is out of range for {name}.weight of shape {tuple(weight.shape)}."
        )
    other = [d for d in range(weight.ndim) if d != dim % weight.ndim]
    n_slices = weight.shape[dim]
    gone = int((mask.sum(dim=other) == 0).sum())
    k = _to_prune(round(s * n_slices), gone, f"Layer {name!r}")
    tprune.ln_structured(module, "weight", amount=k, n=n, dim=dim)
