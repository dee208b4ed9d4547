"""Pruning built on ``torch.nn.utils.prune``: magnitude (global, layer-wise), random, L_n structured.

Sparsity is the share of zeroed weights among the *prunable* weights: the ``weight`` tensors of
``Linear`` and ``Conv`` modules (biases and normalisation layers are never pruned), less the
excluded ones. The last ``Linear`` module in ``named_modules()`` order (the classifier) is
excluded by default, as in Blakeney et al. 2021 ("Simon Says: Evaluating and Mitigating Bias in
Pruned Neural Networks with Knowledge Distillation").

Pruning an already pruned model composes (torch's ``PruningContainer``): the request is always
the *total* sparsity, so pruning to 0.5 and then to 0.9 gives the same share of zeros as pruning
to 0.9 at once.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from repsim._core.fingerprints import unwrap_model
from repsim.errors import ConfigError, LayerNotFoundError, did_you_mean

METHODS = ("magnitude", "random", "ln_structured", "fairgrape")
SCOPES = ("global", "layerwise")


@dataclass
class PruneRecord:
    """What a pruning call did.

    Attributes
    ----------
    method, scope : str
        The pruning method and scope used.
    requested : float
        The requested total sparsity.
    sparsity : float
        Achieved sparsity over the pruned tensors: ``n_zero / n_total``.
    n_zero, n_total : int
        Masked-out weights and all weights of the pruned tensors.
    layers : dict
        Per parameter name (``"features.conv1.weight"``): ``{"n_zero", "n_total", "sparsity"}``.
    excluded : list of str
        Prunable parameters left dense (the classifier by default, and ``exclude``).
    options : dict
        ``n``, ``dim`` (structured) and ``seed`` (random).
    """

    method: str
    scope: str
    requested: float
    sparsity: float
    n_zero: int
    n_total: int
    layers: dict[str, dict[str, float]] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    options: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """A JSON-serialisable copy."""
        return asdict(self)


def _is_prunable(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear | nn.modules.conv._ConvNd)


def clone_model(model: nn.Module) -> nn.Module:
    """Deep copy of ``model`` that also works on pruned models.

    A pruned module's ``weight`` is a derived (non-leaf) tensor that ``copy.deepcopy`` refuses;
    the copy gets a detached clone of it (recomputed by the pruning hook at the next forward).
    """
    model = unwrap_model(model)
    memo: dict[int, object] = {}
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, tprune.BasePruningMethod):
                derived = getattr(module, hook._tensor_name, None)
                if isinstance(derived, torch.Tensor) and not derived.is_leaf:
                    memo[id(derived)] = derived.detach().clone()
    return copy.deepcopy(model, memo)


def classifier_name(model: nn.Module) -> str | None:
    """Dotted name of the last ``nn.Linear`` in ``named_modules()`` order (the output layer)."""
    last = None
    for name, module in unwrap_model(model).named_modules():
        if isinstance(module, nn.Linear):
            last = name
    return last


def _param_name(module_name: str, tensor: str = "weight") -> str:
    return f"{module_name}.{tensor}" if module_name else tensor


def prunable_parameters(
    model: nn.Module,
    *,
    exclude: Sequence[str] | None = None,
    exclude_classifier: bool = True,
) -> tuple[list[tuple[str, nn.Module]], list[str]]:
    """The ``(module_name, module)`` pairs whose ``weight`` is pruned, and the excluded names.

    Parameters
    ----------
    model : torch.nn.Module
        The model.
    exclude : sequence of str, optional
        Module names (``"features.conv1"``), parameter names (``"features.conv1.weight"``) or
        glob patterns (``"features.*"``) of prunable layers to leave dense.
    exclude_classifier : bool
        Leave the last ``Linear`` (the classifier) dense.

    Raises
    ------
    LayerNotFoundError
        If an ``exclude`` entry matches no prunable layer.
    """
    model = unwrap_model(model)
    candidates = [(n, m) for n, m in model.named_modules() if _is_prunable(m)]
    names = [n for n, _ in candidates]
    params = [_param_name(n) for n in names]
    excluded: set[str] = set()
    for pattern in exclude or ():
        hits = {
            n
            for n, p in zip(names, params)
            if fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(p, pattern)
        }
        if not hits:
            raise LayerNotFoundError(
                f"exclude entry {pattern!r} matches no prunable layer; prunable layers are "
                f"{names}." + did_you_mean(pattern, names + params)
            )
        excluded |= hits
    if exclude_classifier:
        last = classifier_name(model)
        if last is not None:
            excluded.add(last)
    targets = [(n, m) for n, m in candidates if n not in excluded]
    if not targets:
        raise ConfigError(
            "Nothing left to prune: every Linear/Conv layer is excluded. Shorten `exclude` or "
            "pass exclude_classifier=False."
        )
    return targets, [_param_name(n) for n in names if n in excluded]


def _mask_of(module: nn.Module, tensor: str = "weight") -> torch.Tensor:
    mask = getattr(module, tensor + "_mask", None)
    if mask is None:
        return torch.ones_like(getattr(module, tensor), dtype=torch.bool)
    return mask.to(torch.bool)


def sparsity_report(
    model: nn.Module, targets: Sequence[tuple[str, nn.Module]]
) -> tuple[dict[str, dict[str, float]], int, int]:
    """Per-tensor zero counts of ``targets`` (masked-out entries) and the totals."""
    layers: dict[str, dict[str, float]] = {}
    n_zero = n_total = 0
    for name, module in targets:
        mask = _mask_of(module)
        z, t = int((~mask).sum()), int(mask.numel())
        layers[_param_name(name)] = {"n_zero": z, "n_total": t, "sparsity": z / t}
        n_zero += z
        n_total += t
    return layers, n_zero, n_total


def check_sparsity(sparsity: float) -> float:
    """Return ``sparsity`` as a float, or raise :class:`ConfigError` if it is outside [0, 1)."""
    try:
        value = float(sparsity)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"sparsity must be a number in [0, 1), got {sparsity!r}.") from exc
    if not 0.0 <= value < 1.0:
        raise ConfigError(
            f"sparsity must lie in [0, 1) (the share of weights set to zero), got {sparsity}."
        )
    return value


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
        from repsim.compress.fairgrape import fairgrape_prune

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


def pruned_parameters(model: nn.Module) -> list[str]:
    """Names (``"module.weight"``) of the tensors currently carrying a pruning mask."""
    out = []
    for name, module in unwrap_model(model).named_modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, tprune.BasePruningMethod):
                out.append(_param_name(name, hook._tensor_name))
    return out
