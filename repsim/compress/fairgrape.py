"""Group-aware importance and FairGRAPE pruning (Lin et al. 2022).

FairGRAPE (Lin, Kim, Joo 2022, "FairGRAPE: Fairness-aware GRAdient Pruning mEthod for face
attribute classification", ECCV) scores each weight ``w`` by a per-group importance, the squared
first-order Taylor estimate of the loss change when the weight is removed (Molchanov et al.
2019), averaged over batches::

    I_g(w) = (1/m_g) sum_{b=1}^{m_g} ( |w| * |dL_{g,b}/dw| )^2

``L_{g,b}`` is the mean loss over the ``b``-th batch of group ``g``'s samples (consecutive
batches in sample order, model in eval mode). Per layer ``l`` the target share of group ``g`` is
``t_{g,l} = sum_{w in l} I_g(w) / sum_h sum_{w in l} I_h(w)``. Selection is greedy: starting
from shares ``1/G``, repeatedly take the group whose share of the selected importance falls
furthest below its target (``argmin_g p_g - t_g``), add its most important not-yet-kept weight,
and update ``p_g = sum_{kept w} I_g(w) / sum_h sum_{kept w} I_h(w)``, until the layer keeps
``round((1 - s) n_l)`` weights. The kept weights thus preserve each group's share of the layer's
importance.

Definitions where the paper and its code leave a choice:

- Group batches are drawn from the group's own samples (the reference code splits mixed
  batches by group and divides by the total number of batches, which down-weights groups
  missing from some batches); the model is in eval mode, and estimation never calls an
  optimiser (the reference code steps Adam while estimating, which changes the weights):
  here weights, ``.grad`` and mode are left untouched.
- The greedy loop re-picks the most deficient group before every weight (the reference's
  ``para_batch`` grouping of picks is not reproduced).
- ``scope="global"`` (an extension) first splits the kept-weight budget across layers by a
  global ranking of ``sum_g I_g(w) / sum_{w'} I_g(w')`` (each group's importance normalised to
  sum 1 over the model, so groups weigh equally), then runs the per-layer greedy selection.
- ``iterations > 1`` prunes gradually (sparsity ``1 - (1 - s)^{t/T}`` after round ``t``),
  re-estimating importance on the masked model each round, as the paper's iterative schedule.
"""

from __future__ import annotations

import fnmatch
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from repsim._core.fingerprints import unwrap_model
from repsim.compress.mask import Mask
from repsim.compress.prunable import (
    PruneRecord,
    check_sparsity,
    clone_model,
    param_name,
    warn_collapsed,
)
from repsim.compress.prunable import prunable_parameters as compress_prunable
from repsim.data.base import GroupedData
from repsim.errors import ConfigError, MaskError
from repsim.models.adapters import Inputs
from repsim.saliency.gradient import (
    LossFn,
    ParameterNotFoundError,
    SaliencyMap,
    as_samples,
    check_batch_size,
    eval_mode,
    group_batches,
    model_device,
    named_parameters,
    refresh_pruned_weights,
    resolve_groups,
    resolve_loss,
)


def _scored_names(
    model: nn.Module,
    parameters: Iterable[str] | None,
    exclude: Sequence[str] | None,
    exclude_classifier: bool,
) -> list[str]:
    """Names of the weights FairGRAPE scores and prunes.

    By default the selection of :func:`repsim.compress.prunable_parameters` (every Linear/Conv
    ``weight`` except ``exclude`` and, with ``exclude_classifier``, the classifier);
    ``parameters`` names them explicitly instead (less those matching an ``exclude`` glob).

    Raises
    ------
    ParameterNotFoundError, LayerNotFoundError, ConfigError
        An unknown parameter name; an ``exclude`` entry matching no layer; nothing left.
    """
    model = unwrap_model(model)
    if parameters is not None:
        names = list(named_parameters(model, parameters))
        names = [n for n in names if not any(fnmatch.fnmatchcase(n, pat) for pat in exclude or ())]
        if not names:
            raise ConfigError("No parameters left to prune (check parameters= and exclude=).")
        return names
    return compress_prunable(model, exclude=exclude, exclude_classifier=exclude_classifier).names


def prunable_parameters(
    model: nn.Module,
    parameters: Iterable[str] | None = None,
    exclude: Sequence[str] | None = None,
    exclude_classifier: bool = True,
) -> list[str]:
    """Deprecated: the names of the weights FairGRAPE prunes.

    Use ``repsim.compress.prunable_parameters(model, exclude=..., exclude_classifier=...)
    .names`` (the one selection of prunable weights); FairGRAPE's functions take
    ``parameters=`` to name the weights explicitly.

    Raises
    ------
    ParameterNotFoundError, LayerNotFoundError, ConfigError
        An unknown parameter name; an ``exclude`` entry matching no layer; nothing left.
    """
    warnings.warn(
        "repsim.compress.fairgrape.prunable_parameters is deprecated and will be removed in "
        "repsim 0.3; use repsim.compress.prunable_parameters(model, exclude=..., "
        "exclude_classifier=...).names instead.",
        DeprecationWarning,
        stacklevel=2,
    )
    return _scored_names(model, parameters, exclude, exclude_classifier)


def _actual_names(model: nn.Module, names: Iterable[str]) -> dict[str, str]:
    """User-facing name -> the state's parameter name (``weight_orig`` for pruned weights)."""
    real = dict(model.named_parameters())
    out = {}
    for name in names:
        if name + "_orig" in real:
            out[name] = name + "_orig"
        elif name in real:
            out[name] = name
        else:
            raise ParameterNotFoundError(f"The model has no parameter {name!r}.")
    return out


def existing_keep_mask(model: nn.Module, name: str) -> torch.Tensor | None:
    """The ``torch.nn.utils.prune`` keep mask of parameter ``name``, if it is pruned."""
    buffers = dict(model.named_buffers())
    mask = buffers.get(name + "_mask")
    return None if mask is None else mask.detach().to(torch.bool).cpu()


def group_importance(
    model: nn.Module,
    data: GroupedData | Any,
    *,
    groups: GroupedData | np.ndarray | Sequence[int] | str | None = None,
    loss: str | LossFn = "ce",
    batch_size: int = 128,
    parameters: Iterable[str] | None = None,
    exclude: Sequence[str] | None = None,
    exclude_classifier: bool = True,
    masks: Mapping[str, torch.Tensor] | None = None,
    include_overall: bool = False,
    progress: bool | None = None,
) -> dict[str, SaliencyMap]:
    """Per-group FairGRAPE importance ``I_g(w) = mean_b (|w| |dL_{g,b}/dw|)^2``.

    ``w`` is the effective weight (``weight_orig * weight_mask`` for a pruned module, and times
    ``masks[name]`` when given), so removed weights have importance 0. The model's weights,
    ``.grad`` fields, hooks and train/eval mode are left as they were.

    Parameters
    ----------
    model : torch.nn.Module
        The model.
    data : GroupedData or a container (see :func:`repsim.data.as_grouped`)
        Samples to estimate on.
    groups : GroupedData, array of int, str, optional
        The groups (see :func:`repsim.saliency.gradient.resolve_groups`).
    loss : "ce" or callable
        Batch-mean loss.
    batch_size : int
        Batch size of each group's batches.
    parameters, exclude, exclude_classifier
        Which weights to score: explicit names, or the selection of
        :func:`repsim.compress.prunable_parameters`.
    masks : mapping, optional
        Extra keep masks ``{name: bool tensor}`` applied (functionally, without touching the
        model) before estimating.
    include_overall : bool
        Also estimate on all samples (key ``"overall"``).

    Returns
    -------
    dict
        ``{group: {parameter_name: float32 tensor}}``.
    """
    check_batch_size(batch_size)
    model = unwrap_model(model)
    data = as_samples(data, groups)
    names = _scored_names(model, parameters, exclude, exclude_classifier)
    actual = _actual_names(model, names)
    real = dict(model.named_parameters())
    rows_by_group = resolve_groups(data, groups, include_overall=include_overall)
    loss_fn = resolve_loss(loss)
    device = model_device(model)
    masks = dict(masks or {})
    for name in masks:
        if name not in actual:
            raise MaskError(f"Mask parameter {name!r} is not among the scored weights {names}.")
    leaves = [real[actual[n]] for n in names]
    weights = []  # |effective weight|: times the existing pruning mask and the extra masks
    for n, leaf in zip(names, leaves, strict=True):
        w = leaf.detach().abs()
        existing = existing_keep_mask(model, n)
        if existing is not None:
            w = w * existing.to(w.device, w.dtype)
        if n in masks:
            w = w * masks[n].to(w.device, w.dtype)
        weights.append(w)
    out: dict[str, SaliencyMap] = {}
    with eval_mode(model):
        for group, rows in tqdm(
            rows_by_group.items(),
            desc="importance",
            disable=None if progress is None else not progress,
            leave=False,
        ):
            acc = [torch.zeros(p.shape, dtype=torch.float64) for p in leaves]
            n_batches = 0
            for x, y in group_batches(data, rows, batch_size, device):
                override = {}
                for n, leaf in zip(names, leaves, strict=True):
                    if n in masks:
                        override[actual[n]] = leaf * masks[n].to(leaf.device, leaf.dtype)
                loss_value = loss_fn(_Functional(model, override), x, y)
                grads = torch.autograd.grad(loss_value, leaves, allow_unused=True)
                for i, g in enumerate(grads):
                    if g is None:
                        continue
                    acc[i] += ((weights[i] * g.detach().abs()) ** 2).to(torch.float64).cpu()
                n_batches += 1
            out[group] = {
                n: (a / n_batches).to(torch.float32) for n, a in zip(names, acc, strict=True)
            }
    return out


class _Functional(nn.Module):
    """Calls ``model`` with some parameters replaced (``torch.func.functional_call``)."""

    def __init__(self, model: nn.Module, override: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self._model = [model]  # not registered: no parameters of its own
        self._override = override
        rule = getattr(model, "repsim_output", None)
        if rule is not None:  # the wrapped model's output rule reads this wrapper's output
            self.repsim_output = rule

    def forward(self, x: Inputs | None = None, **kwargs: torch.Tensor) -> object:
        if x is not None:
            args: tuple[object, ...] = (x,)
        else:
            args = ()
        if not self._override:
            return self._model[0](*args, **kwargs)
        return functional_call(self._model[0], self._override, args, kwargs, strict=False)


def greedy_select(
    importance: np.ndarray, k: int, candidates: np.ndarray | None = None
) -> np.ndarray:
    """FairGRAPE's greedy selection of ``k`` weights of one layer.

    Parameters
    ----------
    importance : numpy.ndarray
        ``[G, n]`` non-negative importance of each of ``n`` weights for each of ``G`` groups.
    k : int
        Number of weights to keep.
    candidates : numpy.ndarray, optional
        ``[n]`` bool, the weights that may be kept (default all).

    Returns
    -------
    numpy.ndarray
        ``[n]`` bool keep mask with exactly ``k`` entries set.
    """
    imp = np.asarray(importance, dtype=np.float64)
    n_groups, n = imp.shape
    cand = np.ones(n, dtype=bool) if candidates is None else np.asarray(candidates, dtype=bool)
    if not 0 <= k <= int(cand.sum()):
        raise ConfigError(f"Cannot keep {k} of {int(cand.sum())} candidate weights.")
    idx = np.flatnonzero(cand)
    sub = imp[:, idx]
    total = sub.sum(axis=1)
    target = total / total.sum() if total.sum() > 0 else np.full(n_groups, 1 / n_groups)
    orders = [idx[np.argsort(-sub[g], kind="stable")] for g in range(n_groups)]
    selected = np.zeros(n, dtype=bool)
    pointer = np.zeros(n_groups, dtype=np.int64)
    kept = np.zeros(n_groups)
    share = np.full(n_groups, 1 / n_groups)
    for _ in range(k):
        g = int(np.argmin(share - target))
        order = orders[g]
        p = pointer[g]
        while selected[order[p]]:
            p += 1
        j = order[p]
        pointer[g] = p + 1
        selected[j] = True
        kept += imp[:, j]
        s = kept.sum()
        if s > 0:
            share = kept / s
    return selected


def _layer_budgets(
    importance: dict[str, dict[str, torch.Tensor]],
    names: list[str],
    candidates: dict[str, np.ndarray],
    keep_total: int,
) -> dict[str, int]:
    """Global scope: kept weights per layer from a ranking of group-normalised importance."""
    score = []
    for name in names:
        s = np.zeros(candidates[name].size)
        for maps in importance.values():
            total = sum(float(m.double().sum()) for m in maps.values())
            if total > 0:
                s += maps[name].double().numpy().reshape(-1) / total
        s[~candidates[name]] = -np.inf
        score.append(s)
    flat = np.concatenate(score)
    order = np.argsort(-flat, kind="stable")[:keep_total]
    sizes = np.cumsum([0] + [s.size for s in score])
    layer = np.searchsorted(sizes, order, side="right") - 1
    counts = np.bincount(layer, minlength=len(names))
    return {n: int(c) for n, c in zip(names, counts, strict=True)}


def fairgrape_masks(
    model: nn.Module,
    data: GroupedData | Any,
    sparsity: float,
    *,
    groups: GroupedData | np.ndarray | Sequence[int] | str | None = None,
    scope: str = "layerwise",
    parameters: Iterable[str] | None = None,
    exclude: Sequence[str] | None = None,
    exclude_classifier: bool = True,
    loss: str | LossFn = "ce",
    batch_size: int = 128,
    iterations: int = 1,
    progress: bool | None = None,
) -> Mask:
    """FairGRAPE keep masks: prune to ``sparsity`` keeping each group's importance share.

    Parameters
    ----------
    model : torch.nn.Module
        The (dense or already pruned) model; it is not modified.
    data : GroupedData or a container (see :func:`repsim.data.as_grouped`)
        Samples to estimate importance on (a training or validation split).
    sparsity : float
        Share of the scored weights to remove, in [0, 1).
    groups : GroupedData, array of int, str, optional
        The protected groups (default: ``data``'s groups).
    scope : {"layerwise", "global"}
        ``"layerwise"``: each layer keeps ``round((1 - s) n_l)`` weights (FairGRAPE's setting);
        ``"global"``: layer budgets from a global importance ranking (see module notes).
    parameters, exclude, exclude_classifier
        Which weights to prune (default: as :func:`repsim.compress.prune`, every Linear/Conv
        weight but the classifier's).
    loss, batch_size
        As for :func:`group_importance`.
    iterations : int
        Number of prune-and-re-estimate rounds.

    Returns
    -------
    repsim.compress.Mask
        ``{parameter_name: bool tensor}`` (True = kept).
    """
    s = check_sparsity(sparsity)
    if scope not in ("layerwise", "global"):
        raise ConfigError(f"scope must be 'layerwise' or 'global', got {scope!r}.")
    if not isinstance(iterations, int) or iterations < 1:
        raise ConfigError(f"iterations must be a positive integer, got {iterations!r}.")
    model = unwrap_model(model)
    data = as_samples(data, groups)
    names = _scored_names(model, parameters, exclude, exclude_classifier)
    real = dict(model.named_parameters())
    actual = _actual_names(model, names)
    shapes = {n: tuple(real[actual[n]].shape) for n in names}
    keep: dict[str, np.ndarray] = {}
    for n in names:
        existing = existing_keep_mask(model, n)
        keep[n] = (
            np.ones(math.prod(shapes[n]), dtype=bool)
            if existing is None
            else existing.numpy().reshape(-1)
        )
    n_total = sum(v.size for v in keep.values())
    for t in range(1, iterations + 1):
        s_t = 1.0 - (1.0 - s) ** (t / iterations)
        masks = {n: torch.from_numpy(keep[n].reshape(shapes[n]).copy()) for n in names}
        imp = group_importance(
            model,
            data,
            groups=groups,
            loss=loss,
            batch_size=batch_size,
            parameters=names,
            masks=masks,
            progress=progress,
        )
        if scope == "layerwise":
            budgets = {
                n: min(int(round((1 - s_t) * keep[n].size)), int(keep[n].sum())) for n in names
            }
        else:
            keep_total = min(
                int(round((1 - s_t) * n_total)), sum(int(v.sum()) for v in keep.values())
            )
            budgets = _layer_budgets(imp, names, keep, keep_total)
        for n in names:
            stacked = np.stack([imp[g][n].double().numpy().reshape(-1) for g in imp])
            keep[n] = greedy_select(stacked, budgets[n], keep[n])
    return Mask({n: torch.from_numpy(keep[n].reshape(shapes[n]).copy()) for n in names})


def fairgrape_prune(
    model: nn.Module,
    data: GroupedData | Any,
    sparsity: float,
    *,
    groups: GroupedData | np.ndarray | Sequence[int] | str | None = None,
    scope: str = "layerwise",
    parameters: Iterable[str] | None = None,
    exclude: Sequence[str] | None = None,
    exclude_classifier: bool = True,
    loss: str | LossFn = "ce",
    batch_size: int = 128,
    iterations: int = 1,
    inplace: bool = False,
    progress: bool | None = None,
) -> tuple[nn.Module, PruneRecord]:
    """Prune with FairGRAPE masks (:func:`fairgrape_masks`), as :func:`repsim.compress.prune`.

    The masks are applied with ``torch.nn.utils.prune.custom_from_mask``
    (:meth:`repsim.compress.Mask.apply`), so pruned weights stay zero while fine-tuning.

    Returns
    -------
    (torch.nn.Module, repsim.compress.PruneRecord)
        The pruned model (a copy unless ``inplace``) and the record: ``method="fairgrape"``,
        ``scope``, ``requested``, achieved ``sparsity``, ``n_zero``, ``n_total``, per-parameter
        ``layers``, ``excluded`` and ``options`` (``groups``, ``iterations``, ``batch_size``,
        ``exclude``, ``exclude_classifier``). ``repsim.compress.Mask.from_model`` recovers the
        masks.
    """
    data = as_samples(data, groups)
    masks = fairgrape_masks(
        model,
        data,
        sparsity,
        groups=groups,
        scope=scope,
        parameters=parameters,
        exclude=exclude,
        exclude_classifier=exclude_classifier,
        loss=loss,
        batch_size=batch_size,
        iterations=iterations,
        progress=progress,
    )
    model = unwrap_model(model)
    refresh_pruned_weights(model)
    target = model if inplace else clone_model(model)
    masks.apply(target)
    warn_collapsed([(n, m) for n, m in target.named_modules() if param_name(n) in masks])
    report = masks.sparsity()
    all_prunable = compress_prunable(target, exclude_classifier=False).names
    record = PruneRecord(
        method="fairgrape",
        scope=scope,
        requested=float(sparsity),
        sparsity=float(report["sparsity"]),
        n_zero=int(report["n_zero"]),
        n_total=int(report["n_total"]),
        layers=dict(report["layers"]),
        excluded=[n for n in all_prunable if n not in set(masks)],
        options={
            "groups": list(resolve_groups(data, groups, include_overall=False)),
            "iterations": iterations,
            "batch_size": batch_size,
            "exclude": list(exclude or []),
            "exclude_classifier": exclude_classifier,
        },
    )
    return target, record
