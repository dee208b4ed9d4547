"""Gradient weight saliency per group (SalUn) and saliency masks.

Weight saliency (Fan et al. 2024, "SalUn: Empowering machine unlearning via gradient-based weight
saliency", ICLR) scores each weight by the magnitude of the loss gradient on a set of samples::

    s_g = | sum_b  (1/|B_b|) sum_{i in B_b} grad_w loss(x_i, y_i) |        (reduce="sum_then_abs")

where ``B_b`` are consecutive batches of the samples of group ``g`` (sample order), the model is
in eval mode, and the absolute value is taken after summing over batches, as SalUn's mask
generation does. ``reduce="abs_then_sum"`` gives ``sum_b |(1/|B_b|) sum_i grad_w loss_i|``
instead (each batch's gradient magnitude counts, so opposite-signed batch gradients do not
cancel).

Maps are ``{parameter_name: tensor}`` over the model's parameters that require grad. A model
pruned with ``torch.nn.utils.prune`` holds ``<name>_orig`` parameters; they are reported under the
user-facing name ``<name>`` (e.g. ``fc.weight``), and their gradient is the gradient with respect
to ``<name>_orig``, i.e. the gradient with respect to the effective weight times the mask (zero on
pruned entries).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from repsim._core.deprecation import renamed_arguments
from repsim._core.fingerprints import unwrap_model
from repsim._core.hooks import evaluating
from repsim._core.validation import as_vector
from repsim.data.adapt import as_grouped
from repsim.data.base import GroupedData
from repsim.errors import (
    ConfigError,
    DataError,
    InsufficientDataError,
    ParameterNotFoundError,
    did_you_mean,
)
from repsim.models.adapters import Inputs, inputs_to, model_logits

#: A loss takes the model, an input batch (a tensor or a dict of tensors) and its labels and
#: returns the batch-mean loss.
LossFn = Callable[[nn.Module, Inputs, torch.Tensor], torch.Tensor]

#: One saliency (or importance) map: parameter name -> tensor shaped like the parameter.
SaliencyMap = dict[str, torch.Tensor]

OVERALL = "overall"


# ----------------------------------------------------------------------------- helpers


def user_name(name: str) -> str:
    """The user-facing parameter name: ``fc.weight_orig`` (a pruned weight) -> ``fc.weight``."""
    return name[: -len("_orig")] if name.endswith("_orig") else name


def named_parameters(
    model: nn.Module, names: Iterable[str] | None = None
) -> dict[str, nn.Parameter]:
    """The model's trainable parameters by user-facing name, optionally only ``names``.

    Raises
    ------
    ParameterNotFoundError
        When a name in ``names`` is not a trainable parameter of the model.
    """
    model = unwrap_model(model)
    params = {user_name(n): p for n, p in model.named_parameters() if p.requires_grad}
    if names is None:
        return params
    names = [names] if isinstance(names, str) else list(names)
    out = {}
    for name in names:
        if name not in params:
            raise ParameterNotFoundError(
                f"The model has no trainable parameter {name!r}.{did_you_mean(name, params)} "
                f"Its parameters are: {', '.join(params)}."
            )
        out[name] = params[name]
    return out


def resolve_loss(loss: str | LossFn) -> LossFn:
    """``"ce"`` (mean cross-entropy of the logits) or a callable ``loss(model, x, y)``.

    The logits are read by the model's output rule (:func:`repsim.models.model_logits`).
    """
    if callable(loss):
        return loss
    if loss in ("ce", "cross_entropy"):
        return lambda model, x, y: F.cross_entropy(model_logits(model, x), y)
    raise ConfigError(f"Unknown loss {loss!r}; use 'ce' or a callable loss(model, x, y).")


def as_samples(data: Any, groups: Any = None) -> GroupedData:
    """``data`` as a :class:`GroupedData` (:func:`repsim.data.as_grouped`).

    Group labels are required in ``data`` unless ``groups`` are given separately.
    """
    return as_grouped(data, require_groups=groups is None)


@renamed_arguments({"by": "groups"})
def resolve_groups(
    data: GroupedData | Any,
    groups: GroupedData | np.ndarray | Sequence[int] | str | None = None,
    *,
    include_overall: bool = True,
) -> dict[str, np.ndarray]:
    """Row indices of each group: ``{group_name: rows}`` plus ``"overall"`` (all rows).

    Parameters
    ----------
    data : GroupedData or a container
        The samples (anything :func:`repsim.data.as_grouped` takes).
    groups : GroupedData, array of int, str or None
        ``None`` or a GroupedData: that data's ``groups`` and ``group_names`` (every named group
        must have samples); a str: the attribute of ``data`` to group by (``with_groups``); an
        array: one integer group code per sample, groups named ``str(code)`` for each code
        present.
    include_overall : bool
        Add the ``"overall"`` entry holding every row.

    Raises
    ------
    ShapeError, DataError, InsufficientDataError
        Codes of the wrong length; a named group with no samples.
    """
    data = as_samples(data, groups)
    if len(data) == 0:
        raise InsufficientDataError(f"{data.name}/{data.split} has no samples.")
    if groups is None:
        groups = data
    if isinstance(groups, str):
        groups = data.with_groups(groups)
    if isinstance(groups, GroupedData):
        if len(groups) != len(data):
            raise DataError(
                f"The grouping data has {len(groups)} samples but the data has {len(data)}; "
                "pass the same split."
            )
        codes = np.asarray(groups.groups)
        names = list(groups.group_names)
        out = {}
        for code, name in enumerate(names):
            rows = np.flatnonzero(codes == code)
            if len(rows) == 0:
                raise InsufficientDataError(
                    f"Group {name!r} has no samples in {data.name}/{data.split}; drop it "
                    "(e.g. data.subset(...)) or pass explicit group codes as groups=."
                )
            out[str(name)] = rows
    else:
        codes = as_vector(groups, "groups", len(data), against="the data")
        if not np.issubdtype(codes.dtype, np.integer):
            raise DataError(f"Group codes must be integers, got dtype {codes.dtype}.")
        out = {str(int(c)): np.flatnonzero(codes == c) for c in np.unique(codes)}
    if include_overall:
        if OVERALL in out:
            raise DataError(f"A group is named {OVERALL!r}, which is reserved for all samples.")
        out[OVERALL] = np.arange(len(data))
    return out


def group_batches(
    data: GroupedData, rows: np.ndarray, batch_size: int, device: torch.device
) -> Iterable[tuple[Inputs, torch.Tensor]]:
    """Consecutive batches (in sample order) of the samples at ``rows``.

    Inputs keep their dtype (:meth:`GroupedData.inputs`: token ids stay integer; dict inputs
    give a dict of tensors).
    """
    for start in range(0, len(rows), batch_size):
        idx = rows[start : start + batch_size]
        x = inputs_to(data.inputs(idx), device)
        y = torch.from_numpy(np.ascontiguousarray(data.y[idx], dtype=np.int64)).to(device)
        yield x, y


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for a parameter-less model)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def refresh_pruned_weights(model: nn.Module) -> None:
    """Recompute pruned modules' ``weight = weight_orig * weight_mask`` without autograd.

    ``torch.nn.utils.prune`` stores the masked weight as a plain attribute on each forward; after
    a forward with gradients enabled it carries an autograd graph (which keeps memory alive and
    makes ``copy.deepcopy`` fail). The values are unchanged.
    """
    from torch.nn.utils.prune import BasePruningMethod, PruningContainer

    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, BasePruningMethod | PruningContainer):
                with torch.no_grad():
                    setattr(module, hook._tensor_name, hook.apply_mask(module))


class eval_mode:  # noqa: N801 - used as a context manager like torch.no_grad
    """Put a model in eval mode for a block and restore its mode (and pruned weights) after.

    Every module's own ``training`` flag is restored, however the block is left
    (:func:`repsim._core.hooks.evaluating`).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._ctx: Any = None

    def __enter__(self) -> nn.Module:
        self._ctx = evaluating(self.model)
        return self._ctx.__enter__()

    def __exit__(self, *exc: Any) -> None:
        try:
            self._ctx.__exit__(*exc)
        finally:
            refresh_pruned_weights(self.model)


def check_batch_size(batch_size: int) -> None:
    """Raise ``ConfigError`` unless ``batch_size`` is a positive integer."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")


# ----------------------------------------------------------------------------- saliency


@renamed_arguments({"by": "groups"})
def weight_saliency(
    model: nn.Module,
    data: GroupedData | Any,
    *,
    loss: str | LossFn = "ce",
    groups: GroupedData | np.ndarray | Sequence[int] | str | None = None,
    reduce: str = "sum_then_abs",
    batch_size: int = 128,
    parameters: Iterable[str] | None = None,
    include_overall: bool = True,
    progress: bool | None = None,
) -> dict[str, SaliencyMap]:
    """Gradient weight saliency per group, as in SalUn (Fan et al. 2024).

    For group ``g`` with samples split into consecutive batches ``B_1..B_m`` (sample order) and
    batch-mean loss ``L_b = (1/|B_b|) sum_{i in B_b} loss(f(x_i), y_i)``::

        sum_then_abs:  s_g = | sum_b grad_w L_b |      (SalUn, Fan et al. 2024)
        abs_then_sum:  s_g = sum_b | grad_w L_b |

    computed with the model in eval mode (BatchNorm uses running statistics, dropout is off).
    The model's weights, ``.grad`` fields and train/eval mode are left as they were.

    Parameters
    ----------
    model : torch.nn.Module
        The model (dense, or pruned with ``torch.nn.utils.prune``).
    data : GroupedData or a container
        Samples to differentiate the loss on: anything :func:`repsim.data.as_grouped` takes (a
        torch ``Dataset`` such as ``TensorDataset(x, y, g)``, a ``DataLoader``, arrays); inputs
        may be token ids or dicts of tensors.
    loss : "ce" or callable
        ``"ce"``: mean cross-entropy; or ``loss(model, x, y) -> scalar`` returning the batch
        mean (as :func:`repsim.train.fit` takes).
    groups : GroupedData, array of int, str, optional
        The groups (see :func:`resolve_groups`); default ``data``'s groups. (Formerly ``by=``,
        still accepted with a ``DeprecationWarning``.)
    reduce : {"sum_then_abs", "abs_then_sum"}
        Where the absolute value is taken (see above).
    batch_size : int
        Batch size ``|B_b|``; saliency depends on it (through the batch partition) only for
        ``abs_then_sum`` and in scale.
    parameters : iterable of str, optional
        User-facing parameter names to score (default: all trainable parameters).
    include_overall : bool
        Also compute the map over all samples (key ``"overall"``).
    progress : bool, optional
        tqdm bar over groups; ``None`` shows it only on a terminal.

    Returns
    -------
    dict
        ``{group_name: {parameter_name: tensor}}`` (float32, on CPU, shaped like the parameter),
        groups in code order, then ``"overall"``.

    Raises
    ------
    ParameterNotFoundError, InsufficientDataError, ConfigError
        Unknown parameter names; a group with no samples; bad ``reduce`` or ``batch_size``.
    """
    if reduce not in ("sum_then_abs", "abs_then_sum"):
        raise ConfigError(f"reduce must be 'sum_then_abs' or 'abs_then_sum', got {reduce!r}.")
    check_batch_size(batch_size)
    model = unwrap_model(model)
    data = as_samples(data, groups)
    params = named_parameters(model, parameters)
    if not params:
        raise ConfigError("The model has no trainable parameters to score.")
    rows_by_group = resolve_groups(data, groups, include_overall=include_overall)
    loss_fn = resolve_loss(loss)
    device = model_device(model)
    names, tensors = list(params), list(params.values())
    out: dict[str, SaliencyMap] = {}
    with eval_mode(model):
        for group, rows in tqdm(
            rows_by_group.items(),
            desc="saliency",
            disable=None if progress is None else not progress,
            leave=False,
        ):
            acc = [torch.zeros_like(t, dtype=torch.float64) for t in tensors]
            for x, y in group_batches(data, rows, batch_size, device):
                value = loss_fn(model, x, y)
                if not torch.isfinite(value):
                    raise FloatingPointError(f"The loss is {value.item()} on group {group!r}.")
                grads = torch.autograd.grad(value, tensors, allow_unused=True)
                for a, g in zip(acc, grads, strict=True):
                    if g is None:
                        continue
                    a += (
                        g.detach().to(torch.float64)
                        if reduce == "sum_then_abs"
                        else g.detach().abs().to(torch.float64)
                    )
            out[group] = {
                n: a.abs().to(torch.float32).cpu() for n, a in zip(names, acc, strict=True)
            }
    return out


def _flatten(scores: Mapping[str, torch.Tensor]) -> tuple[list[str], torch.Tensor]:
    if not isinstance(scores, Mapping) or not scores:
        raise ConfigError("Expected a non-empty map {parameter_name: tensor}.")
    for name, value in scores.items():
        if isinstance(value, Mapping):
            raise ConfigError(
                f"Got a map of maps (key {name!r}); pass one group's map, e.g. saliency['{name}']."
            )
    names = list(scores)
    flat = torch.cat(
        [torch.as_tensor(scores[n]).detach().reshape(-1).double().cpu() for n in names]
    )
    if not torch.isfinite(flat).all():
        raise DataError("The saliency map holds NaN or infinite values.")
    return names, flat


def _top_k_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` largest entries (ties broken by position, first wins)."""
    order = torch.argsort(-values, stable=True)
    mask = torch.zeros(values.numel(), dtype=torch.bool)
    mask[order[:k]] = True
    return mask


def check_fraction(fraction: float, what: str = "fraction") -> float:
    """``fraction`` as a float in (0, 1], or a ConfigError."""
    try:
        f = float(fraction)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number in (0, 1], got {fraction!r}.") from None
    if not (0.0 < f <= 1.0) or math.isnan(f):
        raise ConfigError(f"{what} must lie in (0, 1], got {fraction!r}.")
    return f


def saliency_mask(
    saliency: Mapping[str, torch.Tensor],
    fraction: float = 0.5,
    *,
    scope: str = "global",
    parameters: Iterable[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Hard-threshold a saliency map: ``True`` on the top ``fraction`` of weights.

    SalUn's mask (Fan et al. 2024) is ``m = 1[s >= gamma]`` with ``gamma`` the
    saliency value at the chosen quantile, ranked *globally* across all parameters; its default
    keeps the top half (``fraction=0.5``). Here exactly ``round(fraction * n)`` entries are
    selected (``n``: number of entries ranked), ties broken by parameter order then position,
    so the mask holds the requested fraction exactly (up to rounding).

    Parameters
    ----------
    saliency : mapping
        One map ``{parameter_name: scores}`` (e.g. ``weight_saliency(...)["minority"]``).
    fraction : float
        Share of entries marked salient, in (0, 1].
    scope : {"global", "layerwise"}
        ``"global"``: one ranking over all entries of all parameters; ``"layerwise"``: the top
        ``round(fraction * n_p)`` entries of each parameter ``p`` separately.
    parameters : iterable of str, optional
        Rank only these parameters (e.g. the prunable weights); the mask holds only them.

    Returns
    -------
    dict
        ``{parameter_name: bool tensor}`` shaped like each score tensor.

    Raises
    ------
    ConfigError, ParameterNotFoundError
        A fraction outside (0, 1], an unknown scope, a name not in the map.
    """
    fraction = check_fraction(fraction)
    if scope not in ("global", "layerwise"):
        raise ConfigError(f"scope must be 'global' or 'layerwise', got {scope!r}.")
    if parameters is not None:
        parameters = [parameters] if isinstance(parameters, str) else list(parameters)
        for name in parameters:
            if name not in saliency:
                raise ParameterNotFoundError(
                    f"The saliency map has no parameter {name!r}.{did_you_mean(name, saliency)}"
                )
        saliency = {n: saliency[n] for n in parameters}
    names, flat = _flatten(saliency)
    shapes = [tuple(torch.as_tensor(saliency[n]).shape) for n in names]
    sizes = [math.prod(s) for s in shapes]
    if scope == "global":
        mask_flat = _top_k_mask(flat, int(round(fraction * flat.numel())))
        pieces = torch.split(mask_flat, sizes)
    else:
        pieces = [
            _top_k_mask(chunk, int(round(fraction * chunk.numel())))
            for chunk in torch.split(flat, sizes)
        ]
    return {n: p.reshape(s) for n, p, s in zip(names, pieces, shapes, strict=True)}
