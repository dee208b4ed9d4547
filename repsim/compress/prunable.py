"""What can be pruned, and what a pruning did: the helpers every pruning method shares.

- :func:`prunable_parameters`: the weights a pruning call may zero (every ``Linear``,
  ``Conv`` and HuggingFace ``Conv1D`` ``weight`` except the excluded ones and, by default, the
  classifier), as a
  :class:`PrunableParameters` (``targets``, ``excluded``, with the ``names`` and ``weights``
  views). It is the one selection: :func:`repsim.compress.prune`, FairGRAPE, quantisation and
  the subnetwork gates all use it.
- :func:`check_sparsity`, :func:`sparsity_report`, :class:`PruneRecord`: the requested and the
  achieved sparsity.
- :func:`clone_model`, :func:`classifier_name`, :func:`pruned_parameters`: copying and naming.
- :func:`weight_rows`, :func:`from_rows`, :func:`out_dim`: a weight as ``[out, in]`` rows
  whatever its layout (HF ``Conv1D`` stores ``[in, out]``: GPT-2's attention and MLP).
- :func:`warn_collapsed`: the :class:`~repsim.errors.PruningWarning` for a layer pruned to
  100 % or left with dead outputs (output units whose weights are all zero).

This module imports no pruning method, so :mod:`repsim.compress.prune` and
:mod:`repsim.compress.fairgrape` both build on it without an import cycle.
"""

from __future__ import annotations

import copy
import fnmatch
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from repsim._core.fingerprints import unwrap_model
from repsim.errors import ConfigError, LayerNotFoundError, PruningWarning, did_you_mean

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
    "from_rows",
    "is_hf_conv1d",
    "out_dim",
    "warn_collapsed",
    "weight_rows",
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


def is_hf_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is HuggingFace's ``Conv1D`` (a linear layer with a ``[in, out]`` weight).

    Recognised by class name and origin, so ``transformers`` is never imported here.
    """
    cls = type(module)
    return (
        cls.__name__ == "Conv1D"
        and cls.__module__.startswith("transformers")
        and isinstance(getattr(module, "weight", None), torch.Tensor)
        and module.weight.ndim == 2
    )


def _is_prunable(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear | nn.modules.conv._ConvNd) or is_hf_conv1d(module)


def out_dim(module: nn.Module) -> int:
    """The dimension of ``module.weight`` that indexes output units (1 for HF ``Conv1D``, else 0)."""
    return 1 if is_hf_conv1d(module) else 0


def weight_rows(weight: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """``weight`` (or a tensor shaped like it) as ``[out, in·k...]`` rows, one per output unit.

    ``Linear`` ``[out, in]`` as is, ``Conv`` ``[out, in, k...]`` flattened to
    ``[out, in·prod(k)]`` (channel-major, the column order of ``torch.nn.functional.unfold``),
    HF ``Conv1D`` ``[in, out]`` transposed. Undo with :func:`from_rows`.
    """
    if is_hf_conv1d(module):
        return weight.t()
    return weight.reshape(weight.shape[0], -1)


def from_rows(rows: torch.Tensor, module: nn.Module, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`weight_rows`: ``[out, in·k...]`` rows back to the weight's ``shape``."""
    if is_hf_conv1d(module):
        return rows.t().contiguous()
    return rows.reshape(tuple(shape))


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
    if not candidates:
        raise ConfigError(
            f"{type(model).__name__} has no Linear, Conv or transformers Conv1D layer, so nothing "
            "can be pruned or quantised."
        )
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
            f"Nothing left to prune: every Linear/Conv/Conv1D layer ({names}) is excluded. "
            "Shorten `exclude` or pass exclude_classifier=False."
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


def warn_collapsed(
    targets: Sequence[tuple[str, nn.Module]], *, dead_outputs: bool = True, stacklevel: int = 3
) -> list[str]:
    """Warn (:class:`~repsim.errors.PruningWarning`) about layers that pruning made useless.

    A layer whose mask removes every weight is *collapsed* (its output is only its bias, the
    same for every input); with ``dead_outputs``, a layer where some output units (rows of
    :func:`weight_rows`: neurons, filters, GPT-2 ``Conv1D`` columns) lost every incoming
    weight is reported too, with their count. Structured pruning along outputs removes whole
    units on purpose and passes ``dead_outputs=False``.

    Returns
    -------
    list of str
        The messages warned (empty when every layer is fine).
    """
    messages = []
    for name, module in targets:
        mask = getattr(module, "weight_mask", None)
        if mask is None:
            continue
        rows = weight_rows(mask.to(torch.bool), module)
        if not bool(rows.any()):
            messages.append(
                f"{param_name(name)} is pruned to 100% ({rows.numel()} of {rows.numel()} weights): "
                "the layer's output no longer depends on its input. Lower the sparsity, prune "
                "layer-wise (scope='layerwise'), or exclude the layer."
            )
            continue
        dead = int((~rows.any(dim=1)).sum())
        if dead_outputs and dead:
            messages.append(
                f"{param_name(name)} has {dead} of {rows.shape[0]} output units with every "
                "incoming weight pruned (dead outputs: constant, equal to their bias)."
            )
    for message in messages:
        warnings.warn(message, PruningWarning, stacklevel=stacklevel)
    return messages
