"""Per-group gradient norm and Hessian trace: the mechanism of Tran et al. (2022).

Tran, Fioretto, Kim, Naidu 2022 ("Pruning has a disparate impact on model accuracy", NeurIPS)
show that the groups whose accuracy drops most under pruning are those with (i) a large gradient
norm ``||grad_w L_g||`` and (ii) a large Hessian trace ``tr(H_g)`` of their loss on the dense
model, where ``L_g = (1/n_g) sum_{i in g} loss(f(x_i), y_i)`` and ``H_g = grad_w^2 L_g``.

The trace is estimated with Hutchinson's estimator (Hutchinson 1989)::

    tr(H) = E_v[v^T H v],  v with i.i.d. Rademacher (+/-1) entries,

averaging ``n_probes`` draws; each ``H v`` is a Hessian-vector product by double
backpropagation (Pearlmutter 1994), accumulated over the group's batches with weights
``|B_b| / n_g`` so it is the product with the Hessian of the full-group mean loss. The standard
error reported is the sample standard deviation of ``v^T H v`` over probes divided by
``sqrt(n_probes)``. The model is in eval mode; its weights, ``.grad`` and mode are untouched.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from repsim._core.deprecation import renamed_arguments
from repsim._core.fingerprints import unwrap_model
from repsim._core.table import Table as MetricTable
from repsim.data.base import GroupedData
from repsim.errors import ConfigError
from repsim.models.adapters import Inputs, batch_len, model_logits
from repsim.saliency.gradient import (
    LossFn,
    as_samples,
    check_batch_size,
    eval_mode,
    group_batches,
    model_device,
    named_parameters,
    resolve_groups,
    resolve_loss,
)


@dataclass(frozen=True)
class TraceEstimate:
    """A Hutchinson estimate of a Hessian trace.

    Attributes
    ----------
    trace : float
        Mean of ``v^T H v`` over probes.
    std_error : float
        Standard error of that mean (NaN for a single probe).
    n_probes : int
        Number of Rademacher probes.
    """

    trace: float
    std_error: float
    n_probes: int


def _setup(
    model: nn.Module, parameters: Iterable[str] | None, loss: str | LossFn
) -> tuple[nn.Module, list[torch.Tensor], LossFn, torch.device]:
    """The unwrapped model, the parameters to differentiate, the loss and the device."""
    model = unwrap_model(model)
    params = list(named_parameters(model, parameters).values())
    return model, params, resolve_loss(loss), model_device(model)


def _weighted_batches(
    data: GroupedData, rows: np.ndarray, batch_size: int, device: torch.device
) -> Iterator[tuple[Inputs, torch.Tensor, float]]:
    """A group's batches with weights ``|B_b| / n_g``.

    A group's batches with weights ``|B_b| / n_g``: weighted sums of batch means are means
    over the whole group.
    """
    for x, y in group_batches(data, rows, batch_size, device):
        yield x, y, batch_len(x) / len(rows)


@renamed_arguments({"by": "groups"})
def group_gradient_norm(
    model: nn.Module,
    data: GroupedData | Any,
    *,
    groups: GroupedData | np.ndarray | Sequence[int] | str | None = None,
    loss: str | LossFn = "ce",
    batch_size: int = 256,
    parameters: Iterable[str] | None = None,
    include_overall: bool = True,
) -> dict[str, float]:
    """Euclidean norm of the gradient of each group's mean loss, ``||grad_w L_g||_2``.

    ``grad_w L_g = sum_b (|B_b| / n_g) grad_w L_{g,b}``, exactly the gradient of the mean loss
    over all the group's samples (Tran et al. 2022). ``groups``: as in
    :func:`group_hessian_trace`.

    Returns
    -------
    dict
        ``{group: norm}`` (and ``"overall"``).
    """
    check_batch_size(batch_size)
    data = as_samples(data, groups)
    model, params, loss_fn, device = _setup(model, parameters, loss)
    out = {}
    with eval_mode(model):
        for group, rows in resolve_groups(data, groups, include_overall=include_overall).items():
            acc = [torch.zeros(p.shape, dtype=torch.float64) for p in params]
            for x, y, w in _weighted_batches(data, rows, batch_size, device):
                grads = torch.autograd.grad(loss_fn(model, x, y), params, allow_unused=True)
                for a, g in zip(acc, grads, strict=True):
                    if g is not None:
                        a += g.detach().double().cpu() * w
            out[group] = float(math.sqrt(sum(float((a**2).sum()) for a in acc)))
    return out


def _quadratic_forms(
    model: nn.Module,
    loss_fn: LossFn,
    params: list[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    probes: list[torch.Tensor],
) -> torch.Tensor:
    """``v_p^T H v_p`` for a stack of probes (``probes[k]``: ``[P, *params[k].shape]``).

    One double-backward pass, batched over probes (``is_grads_batched``), with a per-probe loop
    as fallback for models that ``vmap`` cannot batch.
    """
    value = loss_fn(model, x, y)
    grads = torch.autograd.grad(value, params, create_graph=True, allow_unused=True)
    keep = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    if not keep:
        return torch.zeros(probes[0].shape[0], dtype=torch.float64)
    gs = [grads[i] for i in keep]
    ps = [params[i] for i in keep]
    vs = [probes[i] for i in keep]
    try:
        hvs = torch.autograd.grad(
            gs, ps, grad_outputs=vs, is_grads_batched=True, allow_unused=True, retain_graph=True
        )
        hvs = [torch.zeros_like(v) if h is None else h for h, v in zip(hvs, vs, strict=True)]
    except RuntimeError:
        per_probe = []
        for p in range(vs[0].shape[0]):
            hv = torch.autograd.grad(
                gs, ps, grad_outputs=[v[p] for v in vs], allow_unused=True, retain_graph=True
            )
            per_probe.append(
                [torch.zeros_like(v[p]) if h is None else h for h, v in zip(hv, vs, strict=True)]
            )
        hvs = [torch.stack([pp[k] for pp in per_probe]) for k in range(len(vs))]
    return sum(
        (h.detach().double() * v.double()).flatten(1).sum(1) for h, v in zip(hvs, vs, strict=True)
    ).cpu()


@renamed_arguments({"by": "groups"})
def group_hessian_trace(
    model: nn.Module,
    data: GroupedData | Any,
    *,
    groups: GroupedData | np.ndarray | Sequence[int] | str | None = None,
    loss: str | LossFn = "ce",
    n_probes: int = 32,
    seed: int = 0,
    batch_size: int = 256,
    parameters: Iterable[str] | None = None,
    include_overall: bool = True,
    probe_batch: int = 64,
    progress: bool | None = None,
) -> dict[str, TraceEstimate]:
    """Hutchinson estimate of ``tr(H_g)``, the Hessian trace of each group's mean loss.

    Parameters
    ----------
    model : torch.nn.Module
        The (dense) model.
    data : GroupedData or a container (see :func:`repsim.data.as_grouped`)
        Samples.
    groups : GroupedData, array of int, str, optional
        The groups (default ``data``'s groups; see
        :func:`repsim.saliency.gradient.resolve_groups`). Formerly ``by=``, still accepted with
        a ``DeprecationWarning``.
    loss : "ce" or callable
        Batch-mean loss; must be twice differentiable.
    n_probes : int
        Rademacher probes per group; the same probes (from ``seed``) are used for every group.
    seed : int
        Seed of the probes.
    batch_size : int
        Batch size of the Hessian-vector products.
    parameters : iterable of str, optional
        Restrict the Hessian to these parameters (default: all trainable ones).
    probe_batch : int
        Probes per batched double-backward pass (memory grows with it).

    Returns
    -------
    dict
        ``{group: TraceEstimate}`` (and ``"overall"``).
    """
    check_batch_size(batch_size)
    if not isinstance(n_probes, int) or n_probes < 1:
        raise ConfigError(f"n_probes must be a positive integer, got {n_probes!r}.")
    check_batch_size(probe_batch)
    data = as_samples(data, groups)
    model, params, loss_fn, device = _setup(model, parameters, loss)
    gen = torch.Generator().manual_seed(seed)
    probes = [
        (torch.randint(0, 2, (n_probes, *p.shape), generator=gen) * 2 - 1).to(p.dtype)
        for p in params
    ]
    rows_by_group = resolve_groups(data, groups, include_overall=include_overall)
    out = {}
    with eval_mode(model):
        for group, rows in tqdm(
            rows_by_group.items(),
            desc="hessian trace",
            disable=None if progress is None else not progress,
            leave=False,
        ):
            quad = torch.zeros(n_probes, dtype=torch.float64)
            for x, y, w in _weighted_batches(data, rows, batch_size, device):
                for start in range(0, n_probes, probe_batch):
                    chunk = [v[start : start + probe_batch].to(device) for v in probes]
                    quad[start : start + probe_batch] += (
                        _quadratic_forms(model, loss_fn, params, x, y, chunk) * w
                    )
            values = quad.numpy()
            arr = np.asarray(values)
            se = float(arr.std(ddof=1) / np.sqrt(len(arr))) if len(arr) > 1 else math.nan
            out[group] = TraceEstimate(float(arr.mean()), se, n_probes)
    return out


@renamed_arguments({"by": "groups"})
def disparate_impact_predictors(
    model: nn.Module,
    data: GroupedData | Any,
    *,
    groups: GroupedData | np.ndarray | Sequence[int] | str | None = None,
    loss: str | LossFn = "ce",
    n_probes: int = 32,
    seed: int = 0,
    batch_size: int = 256,
) -> MetricTable:
    """Tran et al. (2022)'s predictors of each group's accuracy drop, one row per group.

    Returns
    -------
    MetricTable
        Rows ``group, n, loss, accuracy, grad_norm, hessian_trace, hessian_trace_se`` on the
        dense model (``loss``: the group's mean loss; ``accuracy``: share correct). ``groups``:
        as in :func:`group_hessian_trace`.
    """
    data = as_samples(data, groups)
    model, _, loss_fn, device = _setup(model, None, loss)
    norms = group_gradient_norm(model, data, groups=groups, loss=loss, batch_size=batch_size)
    traces = group_hessian_trace(
        model, data, groups=groups, loss=loss, n_probes=n_probes, seed=seed, batch_size=batch_size
    )
    rows = []
    with eval_mode(model), torch.no_grad():
        for group, idx in resolve_groups(data, groups).items():
            total, correct = 0.0, 0
            for x, y in group_batches(data, idx, batch_size, device):
                total += float(loss_fn(model, x, y)) * batch_len(x)
                correct += int((model_logits(model, x).argmax(1) == y).sum())
            rows.append(
                {
                    "group": group,
                    "n": len(idx),
                    "loss": total / len(idx),
                    "accuracy": correct / len(idx),
                    "grad_norm": norms[group],
                    "hessian_trace": traces[group].trace,
                    "hessian_trace_se": traces[group].std_error,
                }
            )
    return MetricTable(rows)
