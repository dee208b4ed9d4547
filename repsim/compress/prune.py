"""Pruning: magnitude, random, L_n structured, N:M, and the activation-aware Wanda and SparseGPT.

All are built on ``torch.nn.utils.prune`` masks. Sparsity is the share of zeroed weights among
the *prunable* weights: the ``weight`` tensors of ``Linear``, ``Conv`` and HuggingFace
``Conv1D`` modules (biases, embeddings and normalisation layers are never pruned), less the
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

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from repsim._core.fingerprints import unwrap_model
from repsim.compress.calibrate import LayerStats, calibrate_layers, calibration_inputs
from repsim.compress.fairgrape import fairgrape_prune
from repsim.compress.obs import sparsegpt_matrix
from repsim.compress.prunable import (
    PrunableParameters,
    PruneRecord,
    _mask_of,
    check_sparsity,
    classifier_name,
    clone_model,
    from_rows,
    is_hf_conv1d,
    prunable_parameters,
    pruned_parameters,
    sparsity_report,
    warn_collapsed,
    weight_rows,
)
from repsim.errors import ConfigError, did_you_mean
from repsim.models.adapters import batch_len

__all__ = [
    "METHODS",
    "SCOPES",
    "nm_keep_mask",
    "parse_nm",
    "row_keep_mask",
    "wanda_scores",
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

METHODS = ("magnitude", "random", "ln_structured", "fairgrape", "wanda", "sparsegpt")
SCOPES = ("global", "layerwise")
#: Methods that calibrate on data (``data=``).
CALIBRATED = ("wanda", "sparsegpt")


def parse_nm(pattern: str) -> tuple[int, int]:
    """``"2:4"`` -> ``(2, 4)``: keep ``n`` of every ``m`` consecutive weights (``0 < n < m``)."""
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(pattern))
    if not match:
        raise ConfigError(f"An N:M pattern reads 'n:m' (e.g. '2:4', '4:8'), got {pattern!r}.")
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise ConfigError(f"N:M pattern {pattern!r} needs 0 < n < m (n weights kept of every m).")
    return n, m


def wanda_scores(weight_rows_: torch.Tensor, column_norm: torch.Tensor) -> torch.Tensor:
    """Wanda's importance ``S_ij = |W_ij| · ||X_j||_2`` (Sun et al. 2023), float64.

    ``weight_rows_`` is ``[out, in]`` (:func:`repsim.compress.prunable.weight_rows`),
    ``column_norm`` the ``[in]`` norms of the layer's input features over every calibration
    token (:attr:`repsim.compress.calibrate.LayerStats.norm`).
    """
    return weight_rows_.detach().abs().to(torch.float64) * column_norm.to(torch.float64)[None, :]


def row_keep_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep mask pruning the ``round(s · in)`` lowest scores of every row (ties: first position)."""
    k = round(sparsity * scores.shape[1])
    order = torch.argsort(scores, dim=1, stable=True)[:, :k]
    return torch.ones_like(scores, dtype=torch.bool).scatter_(1, order, False)


def _layer_keep_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    k = round(sparsity * scores.numel())
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    keep[torch.argsort(scores.reshape(-1), stable=True)[:k]] = False
    return keep.reshape(scores.shape)


def nm_keep_mask(scores: torch.Tensor, n: int, m: int, *, layer: str = "layer") -> torch.Tensor:
    """Keep mask keeping the ``n`` highest scores of every ``m`` consecutive entries of each row.

    ``scores`` is ``[out, in]`` with ``in`` a multiple of ``m``; groups are columns
    ``[j·m, (j+1)·m)`` of one row (Mishra et al. 2021; NVIDIA's 2:4).

    Raises
    ------
    ConfigError
        When the row length is not a multiple of ``m``.
    """
    rows, cols = scores.shape
    if cols % m:
        raise ConfigError(
            f"{layer} has rows of {cols} weights, not a multiple of {m}, so {n}:{m} sparsity "
            "cannot hold; exclude it (exclude=[...])."
        )
    grouped = scores.reshape(rows, cols // m, m)
    order = torch.argsort(grouped, dim=2, stable=True)[:, :, : m - n]
    keep = torch.ones_like(grouped, dtype=torch.bool).scatter_(2, order, False)
    return keep.reshape(rows, cols)


def _effective(module: nn.Module) -> torch.Tensor:
    """The weight the module computes with (``weight_orig * weight_mask`` when pruned)."""
    if hasattr(module, "weight_orig"):
        return (module.weight_orig * module.weight_mask).detach()
    return module.weight.detach()


def _set_mask(
    module: nn.Module, keep_rows: torch.Tensor, new_rows: torch.Tensor | None = None
) -> None:
    """Apply a keep mask given as rows (and, for SparseGPT, the reconstructed weights)."""
    shape = tuple(module.weight.shape)
    keep = from_rows(keep_rows, module, shape).to(module.weight.device)
    if new_rows is not None:
        param = module.weight_orig if hasattr(module, "weight_orig") else module.weight
        with torch.no_grad():
            param.copy_(from_rows(new_rows, module, shape).to(param.dtype))
    tprune.custom_from_mask(module, "weight", keep)


def _to_prune(target_zero: int, current_zero: int, what: str) -> int:
    if target_zero < current_zero:
        raise ConfigError(
            f"{what} already has {current_zero} pruned weights, more than the {target_zero} the "
            "requested sparsity allows; pruning cannot be undone (start from the dense model)."
        )
    return target_zero - current_zero


def prune(
    model: nn.Module,
    sparsity: float | None,
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
    pattern: str | None = None,
    batch_size: int = 32,
    sequential: bool = True,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> tuple[nn.Module, PruneRecord]:
    """Prune a model's Linear, Conv and transformers Conv1D weights to a total sparsity.

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
    - ``"N:M"`` (e.g. ``"2:4"``, ``"4:8"``): semi-structured sparsity (Mishra et al. 2021,
      "Accelerating Sparse Deep Neural Networks"; NVIDIA Ampere 2:4): in every group of ``M``
      consecutive input weights of each output row the ``M - N`` of smallest ``|w|`` are
      zeroed, so the sparsity is ``1 - N/M`` (``sparsity`` may be ``None``). Scope ``"n:m"``.
    - ``"wanda"``: Sun, Liu, Bair & Kolter 2023, "A Simple and Effective Pruning Approach for
      Large Language Models". Score ``S_ij = |W_ij| · ||X_j||_2``, ``X_j`` the j-th input
      feature of the layer over every calibration token (``data``); each output row keeps its
      ``in - round(s · in)`` highest scores (``scope="row"``, the paper's comparison group;
      ``"layerwise"`` compares the whole layer). With ``pattern="2:4"``: the N:M groups.
    - ``"sparsegpt"``: Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be
      Accurately Pruned in One-Shot". Layer-wise OBS reconstruction on calibration data: the
      mask is chosen per block of ``blocksize`` columns by ``w^2 / [H^-1]_cc^2`` and the
      remaining weights are *updated* to keep the layer's output
      (:mod:`repsim.compress.obs`; Hessian damping ``percdamp``). ``scope="layerwise"``; with
      ``pattern``, N:M.

    Activation-aware methods calibrate each layer on the inputs it receives from the model in
    which every earlier layer is already pruned (``sequential=True``, as both papers do; see
    :mod:`repsim.compress.calibrate`); rows at padding positions (``attention_mask == 0``) are
    left out. They support Linear, Conv1D and plain Conv2d layers. The layout of the weight
    does not matter: rows are output units (GPT-2's ``Conv1D`` stores ``[in, out]`` and is
    transposed).

    A layer left with no weight, or with output units that lost every weight (dead outputs),
    raises a :class:`repsim.errors.PruningWarning` naming it (not for ``ln_structured`` along
    outputs, which removes whole units on purpose).

    The target is a count: ``k = round(s * N)`` zeros over the ``N`` pruned weights (global) or
    per tensor (layer-wise), including zeros an earlier pruning left, so repeated calls compose
    to the requested total.

    Parameters
    ----------
    model : torch.nn.Module
        The model (copied unless ``inplace``).
    sparsity : float or None
        Requested total share of zeroed weights, in [0, 1). With an N:M pattern ``None`` or
        ``1 - N/M``.
    method : {"magnitude", "random", "ln_structured", "fairgrape", "wanda", "sparsegpt", "N:M"}
        How weights are chosen.
    scope : {"global", "layerwise", "row"}, optional
        Default ``"global"`` for magnitude and random, ``"layerwise"`` for ``ln_structured``
        and ``sparsegpt``, ``"row"`` for ``wanda``.
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
    data : optional
        Samples ``"fairgrape"`` estimates group importance on, or the calibration samples of
        ``"wanda"`` / ``"sparsegpt"``: anything :func:`repsim.data.as_grouped` takes, or the
        inputs alone (token ids ``[n, T]``, a dict with ``input_ids`` and ``attention_mask``).
    groups : optional
        Groups for ``"fairgrape"`` (default: ``data.groups``).
    pattern : str, optional
        ``"N:M"`` for ``"magnitude"``, ``"wanda"`` or ``"sparsegpt"`` (``method="2:4"`` is
        short for magnitude with ``pattern="2:4"``).
    batch_size : int
        Calibration batch size.
    sequential : bool
        Calibrate each layer after the earlier ones are pruned (else all from the input model).
    blocksize, percdamp
        SparseGPT's lazy-update block size and Hessian damping (``λ = percdamp·mean diag H``).

    Returns
    -------
    (torch.nn.Module, PruneRecord)
        The pruned model (``weight_orig`` + ``weight_mask`` reparametrisation, so pruned
        weights stay zero while it is fine-tuned) and what was achieved.

    Raises
    ------
    ConfigError
        Sparsity outside [0, 1), an unknown method/scope, ``ln_structured`` with global scope,
        a target below the sparsity the model already has, an N:M pattern that does not fit a
        layer's rows, or a layer an activation-aware method cannot calibrate.
    DataError
        An activation-aware method without calibration ``data``.
    LayerNotFoundError
        An ``exclude`` entry that matches no prunable layer.
    """
    requested_method = method
    nm = None
    if isinstance(method, str) and ":" in method:
        nm = parse_nm(method)
        if pattern is not None:
            raise ConfigError(f"method={method!r} is already an N:M pattern; drop pattern=.")
        method = "magnitude"
    elif pattern is not None:
        if method not in ("magnitude", "wanda", "sparsegpt"):
            raise ConfigError(
                f"pattern= (N:M) works with 'magnitude', 'wanda' and 'sparsegpt', not {method!r}."
            )
        nm = parse_nm(pattern)
    if nm is not None:
        implied = 1.0 - nm[0] / nm[1]
        if sparsity is not None and abs(check_sparsity(sparsity) - implied) > 1e-9:
            raise ConfigError(
                f"{nm[0]}:{nm[1]} sparsity zeroes {nm[1] - nm[0]} of every {nm[1]} weights, a "
                f"sparsity of {implied:g}; pass sparsity={implied:g} or None (got {sparsity})."
            )
        if scope not in (None, "n:m"):
            raise ConfigError(f"N:M pruning has its own scope ('n:m'); drop scope={scope!r}.")
        sparsity, scope = implied, "n:m"
    s = check_sparsity(sparsity)
    if method not in METHODS:
        raise ConfigError(
            f"Unknown pruning method {method!r}; use one of {list(METHODS)} or an N:M pattern "
            "such as '2:4'." + did_you_mean(str(method), METHODS)
        )
    if nm is not None or method in CALIBRATED:
        return _prune_rowwise(
            model,
            s,
            method=method,
            requested_method=requested_method,
            nm=nm,
            scope=scope,
            exclude=exclude,
            exclude_classifier=exclude_classifier,
            inplace=inplace,
            data=data,
            batch_size=batch_size,
            sequential=sequential,
            blocksize=blocksize,
            percdamp=percdamp,
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
    warn_collapsed(targets, dead_outputs=not (method == "ln_structured" and dim == 0))
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
    if is_hf_conv1d(module):  # [in, out] storage: dim 0 (outputs) is its dim 1
        dim = 1 - dim % 2
    other = [d for d in range(weight.ndim) if d != dim % weight.ndim]
    n_slices = weight.shape[dim]
    gone = int((mask.sum(dim=other) == 0).sum())
    k = _to_prune(round(s * n_slices), gone, f"Layer {name!r}")
    tprune.ln_structured(module, "weight", amount=k, n=n, dim=dim)


def _prune_rowwise(
    model: nn.Module,
    s: float,
    *,
    method: str,
    requested_method: str,
    nm: tuple[int, int] | None,
    scope: str | None,
    exclude: Sequence[str] | None,
    exclude_classifier: bool,
    inplace: bool,
    data: Any,
    batch_size: int,
    sequential: bool,
    blocksize: int,
    percdamp: float,
) -> tuple[nn.Module, PruneRecord]:
    """N:M, Wanda and SparseGPT: masks chosen per output row (or per layer), layer by layer."""
    if nm is None:
        default = "row" if method == "wanda" else "layerwise"
        scope = scope or default
        allowed = ("row", "layerwise") if method == "wanda" else ("layerwise",)
        if scope not in allowed:
            raise ConfigError(f"{method} pruning takes scope in {list(allowed)}, got {scope!r}.")
    elif method == "random":
        raise ConfigError("N:M patterns work with magnitude, wanda and sparsegpt.")
    model = unwrap_model(model)
    if not inplace:
        model = clone_model(model)
    targets, excluded = prunable_parameters(
        model, exclude=exclude, exclude_classifier=exclude_classifier
    )
    assert scope is not None

    def keep_from_scores(name: str, scores: torch.Tensor, existing: torch.Tensor) -> torch.Tensor:
        scores = scores.masked_fill(~existing, float("-inf"))
        if nm is not None:
            keep = nm_keep_mask(scores, *nm, layer=name)
        elif scope == "row":
            keep = row_keep_mask(scores, s)
        else:
            keep = _layer_keep_mask(scores, s)
        return keep & existing

    def process(name: str, module: nn.Module, stats: LayerStats | None) -> None:
        w = weight_rows(_effective(module), module)
        existing = weight_rows(_mask_of(module), module).cpu()
        if method == "magnitude":
            _set_mask(module, keep_from_scores(name, w.abs().double().cpu(), existing))
        elif method == "wanda":
            assert stats is not None
            _set_mask(module, keep_from_scores(name, wanda_scores(w.cpu(), stats.norm), existing))
        else:
            assert stats is not None
            if nm is not None and w.shape[1] % nm[1]:
                nm_keep_mask(torch.zeros(1, w.shape[1]), *nm, layer=name)  # raises
            new, keep = sparsegpt_matrix(
                w.cpu(),
                stats.hessian(),
                sparsity=s,
                nm=nm,
                keep=existing,
                blocksize=blocksize,
                percdamp=percdamp,
            )
            _set_mask(module, keep, new)

    options: dict[str, object] = {
        "exclude": list(exclude or []),
        "exclude_classifier": exclude_classifier,
    }
    if nm is not None:
        options["pattern"] = f"{nm[0]}:{nm[1]}"
    if method in CALIBRATED:
        inputs = calibration_inputs(data)
        calibrate_layers(
            model,
            inputs,
            targets,
            process,
            hessian=method == "sparsegpt",
            sequential=sequential,
            batch_size=batch_size,
        )
        options.update(
            n_calibration=batch_len(inputs), sequential=sequential, batch_size=batch_size
        )
        if method == "sparsegpt":
            options.update(blocksize=blocksize, percdamp=percdamp)
    else:
        for name, module in targets:
            process(name, module, None)
    warn_collapsed(targets)
    layers, n_zero, n_total = sparsity_report(model, targets)
    record = PruneRecord(
        method=requested_method,
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
