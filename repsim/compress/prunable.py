"""What can be pruned, and what a pruning did: the helpers every pruning method shares.

- :func:`prunable_parameters`: the weights a pruning call may zero (every ``Linear`` and
  ``Conv`` ``weight`` except the excluded ones and, by default, the classifier), as a
  :class:`PrunableParameters` (``targets``, ``excluded``, with the ``names`` and ``weights``
  views). It is the one selection: :func:`repsim.compress.prune`, FairGRAPE, quantisation and
  the subnetwork gates all use it.
- :func:`check_sparsity`, :func:`sparsity_report`, :class:`PruneRecord`: the requested and the
  achieved sparsity.
- :func:`clone_model`, :func:`classifier_name`, :func:`pruned_parameters`: copying and naming.

This module imports no pruning method, so :mod:`repsim.compress.prune` and
:mod:`repsim.compress.fairgrape` both build on it without an import cycle.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from repsim._core.fingerprints import unwrap_model
from repsim.errors import ConfigError, LayerNotFoundError, did_you_mean

__all__ = [
    "PrunableParameters",
    "PruneRecord",
    "check_sparsity",
    "classifier_name",
    "clone_model",
    "param_name",
    "prunable_parameters",
    "pruned_parameters",
    "sparsity_report",
]


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


def param_name(module_name: str, tensor: str = "weight") -> str:
    """The parameter name ``"<module>.<tensor>"`` (just ``tensor`` for the root module)."""
    return f"{module_name}.{tensor}" if module_name else tensor


class PrunableParameters(NamedTuple):
    """The weights a pruning call may zero, as :func:`prunable_parameters` returns them.

    A named tuple, so ``targets, excluded = prunable_parameters(model)`` unpacks it.

    Attributes
    ----------
    targets : list of (str, torch.nn.Module)
        ``(module_name, module)`` of every prunable module left, in ``named_modules()``
        order; each one's ``weight`` is the prunable parameter.
    excluded : list of str
        Parameter names (``"fc.weight"``) of the prunable modules left dense.
    """

    targets: list[tuple[str, nn.Module]]
    excluded: list[str]

    @property
    def names(self) -> list[str]:
        """Parameter names of the targets (``["features.conv1.weight", ...]``)."""
        return [param_name(n) for n, _ in self.targets]

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        """``{parameter name: the module's current weight}`` of the targets, in order."""
        return {param_name(n): m.weight for n, m in self.targets}


def prunable_parameters(
    model: nn.Module,
    *,
    exclude: Sequence[str] | None = None,
    exclude_classifier: bool = True,
) -> PrunableParameters:
    """The prunable modules (each one's ``weight``) left after exclusions, and the excluded names.

    Parameters
    ----------
    model : torch.nn.Module
        The model.
    exclude : sequence of str, optional
        Module names (``"features.conv1"``), parameter names (``"features.conv1.weight"``) or
        glob patterns (``"features.*"``) of prunable layers to leave dense.
    exclude_classifier : bool
        Leave the last ``Linear`` (the classifier) dense.

    Returns
    -------
    PrunableParameters
        ``(targets, excluded)``: the ``(module_name, module)`` pairs whose ``weight`` is
        pruned and the excluded parameter names; ``.names`` and ``.weights`` give the targets
        by parameter name.

    Raises
    ------
    LayerNotFoundError
        If an ``exclude`` entry matches no prunable layer.
    ConfigError
        If every prunable layer is excluded.
    """
    model = unwrap_model(model)
    candidates = [(n, m) for n, m in model.named_modules() if _is_prunable(m)]
    names = [n for n, _ in candidates]
    params = [param_name(n) for n in names]
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
    return PrunableParameters(targets, [param_name(n) for n in names if n in excluded])


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
        layers[param_name(name)] = {"n_zero": z, "n_total": t, "sparsity": z / t}
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


def pruned_parameters(model: nn.Module) -> list[str]:
    """Names (``"module.weight"``) of the tensors currently carrying a pruning mask."""
    out = []
    for name, module in unwrap_model(model).named_modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, tprune.BasePruningMethod):
                out.append(param_name(name, hook._tensor_name))
    return out
