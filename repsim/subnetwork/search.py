"""The subnetwork search loop: learn pruning gates on a frozen vanilla model (BISE-style).

Given a vanilla model trained on biased data, :func:`search` learns a gate per weight (or per
output channel) of the encoder, with the weights frozen, minimising

    L = CE_w(f_g(x), y) + gamma * I(b; h(z_g(x))) / log K  [+ lambda * max(0, d_g - (1 - s))]

where ``f_g`` is the gated model, ``z_g`` its bottleneck feature (the classifier's input),
``h`` a linear bias head trained alongside with its own optimiser to predict the bias label
``b`` from ``z_g`` (IRENE, Nahon et al. 2022), ``I`` the mutual-information estimate of
:mod:`repsim.subnetwork.mi`, ``CE_w`` cross-entropy optionally reweighted towards rare
(class, bias) cells, ``d_g`` the soft density and ``s`` an optional sparsity target. The
temperature ``tau`` of the gates is multiplied by ``tau_decay`` whenever the bias term has not
improved for ``plateau_patience`` evaluation windows, until it falls below ``tau_min`` (the gates
are then binary to within ``2 sigmoid(m / tau)``). Every ``eval_every`` steps the binary mask is
scored on a validation split; the chosen mask is the one whose bias head is closest to chance
while validation accuracy stays within ``max_acc_drop`` of the vanilla model's (the model
selection of Debiasing Surgeon, Nahon et al., ECCV 2024).

Runs are checkpointed atomically every ``checkpoint_every`` steps and ``resume=True`` continues
bit-exactly from the last checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from repsim._core.fingerprints import model_fingerprint, unwrap_model
from repsim.compress import Mask, bake
from repsim.data.base import GroupedData
from repsim.errors import ConfigError, DataError
from repsim.subnetwork._runs import (
    RunFiles,
    atomic_json,
    atomic_torch_save,
    config_hash,
    load_checkpoint,
)
from repsim.subnetwork.bias import bias_array, cell_weights
from repsim.subnetwork.gates import (
    GRANULARITIES,
    classifier_name,
    gate,
    gate_weights,
    gated_forward,
    hard_mask,
    init_gates,
)
from repsim.subnetwork.mi import mutual_information

OBJECTIVES = ("ce+mi", "ce")
SELECTIONS = ("bias-head", "val-acc")
METHODS = ("bise", "surgeon")


@dataclass
class SearchResult:
    """What :func:`search` returns.

    Attributes
    ----------
    mask : repsim.compress.Mask
        ``{parameter name: bool tensor}``, True where the weight is kept (the chosen step's),
        with the vanilla model's fingerprint.
    record : dict
        Settings, chosen step, its validation scores, sparsity per layer and overall, the
        vanilla model's validation scores, the final temperature and the model fingerprint.
    log : list of dict
        Per step: ``step, tau, loss, ce, mi, head_loss, density``.
    evals : list of dict
        Per evaluation: ``step, tau, val_acc, val_bias_acc, bias_chance, sparsity, eligible``.
    """

    mask: Mask
    record: dict[str, Any]
    log: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)


def as_mask(mask: Mapping[str, torch.Tensor], *, fingerprint: str | None = None) -> Mask:
    """``{name: bool tensor}`` as a :class:`repsim.compress.Mask` (the one conversion point)."""
    return Mask({k: v.detach().clone() for k, v in mask.items()}, fingerprint=fingerprint)


def apply_mask(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` with the mask applied and baked in (the original is left untouched).

    Uses :meth:`repsim.compress.Mask.apply` (``torch.nn.utils.prune.custom_from_mask``) then
    :func:`repsim.compress.bake`, so the copy is a plain model with the original parameter
    names whose masked weights are zero.

    Raises
    ------
    MaskError
        When a mask entry names no parameter of the model or has the wrong shape.
    """
    out = copy.deepcopy(unwrap_model(model))
    m = mask if isinstance(mask, Mask) else as_mask(mask)
    return bake(m.apply(out))


def sparsity_report(mask: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Share of pruned weights per masked parameter and overall (over masked parameters)."""
    per = {k: float(1.0 - v.float().mean()) for k, v in mask.items()}
    total = sum(v.numel() for v in mask.values())
    kept = sum(int(v.sum()) for v in mask.values())
    return {"per_layer": per, "overall": float(1.0 - kept / total) if total else math.nan}


_bias_array = bias_array  # the old private name, used by earlier callers
_config_hash = config_hash
_atomic_torch_save = atomic_torch_save
_atomic_json = atomic_json
_load_checkpoint = load_checkpoint


@torch.no_grad()
def _score(model, gates, head, bottleneck, x, y, b, batch_size=1024):
    """Validation task accuracy and bias-head accuracy of the hard-masked model."""
    correct = bias_correct = 0
    for start in range(0, len(x), batch_size):
        logits, feats = gated_forward(
            model, x[start : start + batch_size], gates, 1.0, bottleneck=bottleneck, hard=True
        )
        correct += int((logits.argmax(1) == y[start : start + batch_size]).sum())
        bias_correct += int((head(feats).argmax(1) == b[start : start + batch_size]).sum())
    return correct / len(x), bias_correct / len(x)


def search_surgeon(
    model: nn.Module,
    data: GroupedData,
    *,
    bias_labels: str | np.ndarray,
    granularity: str = "weight",
    objective: str = "ce+mi",
    gamma: float = 1.0,
    reweight: float = 0.0,
    target_sparsity: float | None = None,
    sparsity_weight: float = 1.0,
    val: GroupedData | None = None,
    val_bias_labels: str | np.ndarray | None = None,
    steps: int = 1000,
    batch_size: int = 128,
    lr: float = 1e-2,
    head_lr: float = 1e-2,
    tau: float = 1.0,
    tau_decay: float = 0.5,
    tau_min: float = 1e-3,
    plateau_patience: int = 2,
    plateau_delta: float = 1e-3,
    eval_every: int = 50,
    max_acc_drop: float = 0.02,
    selection: str = "bias-head",
    gate_init: float = 1.0,
    exclude: list[str] | None = None,
    bottleneck: str | None = None,
    run_dir: str | Path | None = None,
    checkpoint_every: int = 100,
    resume: bool = False,
    seed: int = 0,
    progress: bool | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> SearchResult:
    """Learn weight (or weight-row) gates on a frozen model: ``method="surgeon"`` of :func:`search`.

    The variant of Nahon et al. 2024 (Debiasing Surgeon) that repsim shipped before BISE became
    the default; with the same settings and seed it gives the same masks as then (tested). Where
    it departs from the Debiasing Surgeon code is listed in ``docs/subnetwork.md``.

    Parameters
    ----------
    model : torch.nn.Module
        The vanilla model; its parameters and buffers are never modified (it runs in eval mode,
        so normalisation statistics stay frozen too).
    data : GroupedData
        Training split the gates are learnt on.
    bias_labels : str or array of int
        Attribute name of ``data`` (e.g. ``"colour"``, ``"sex"``) or codes ``[n]`` in data order.
    granularity : {"weight", "channel"}
        One gate per weight, or per output channel (structured pruning, as BISE).
    objective : {"ce+mi", "ce"}
        Task cross-entropy plus ``gamma`` times the normalised MI penalty, or CE alone (a
        control; the bias head is still trained and scored).
    gamma : float
        Weight of the MI penalty.
    reweight : float
        Exponent of the (class, bias)-cell weights of :func:`cell_weights` applied to the task
        CE, the bias head's loss and the MI joint (0: none, 1: cells balanced).
    target_sparsity : float, optional
        Adds ``sparsity_weight * max(0, density - (1 - target_sparsity))`` with the soft density.
    val : GroupedData, optional
        Validation split for model selection (default: ``data`` itself, with a warning).
    val_bias_labels : str or array, optional
        Bias labels of ``val`` (default: the same attribute name as ``bias_labels``).
    steps, batch_size, lr, head_lr
        Number of gate updates, batch size, Adam learning rates of the gates and the head.
    tau, tau_decay, tau_min, plateau_patience, plateau_delta
        Initial temperature; on a plateau of the mean MI over an evaluation window (no decrease
        larger than ``plateau_delta`` for ``plateau_patience`` windows) ``tau *= tau_decay``;
        the search stops once ``tau < tau_min`` or after ``steps``.
    eval_every : int
        Steps between validation evaluations (model selection and plateau checks).
    max_acc_drop : float
        A mask is eligible when its validation accuracy is at least the vanilla model's minus
        this; among eligible masks the one whose bias-head accuracy is closest to chance (the
        frequency of the most common bias value in ``val``) is chosen (earliest on ties).
    selection : {"bias-head", "val-acc"}
        ``"bias-head"``: the Debiasing Surgeon rule above. ``"val-acc"``: the eligible mask with
        the highest validation accuracy (meaningful when ``val`` is unbiased, as in the
        Biased-MNIST protocol; earliest on ties).
    gate_init : float
        Initial gate parameter (``> 0``: every weight starts kept).
    exclude : list of str, optional
        Modules not pruned (default: the classifier).
    bottleneck : str, optional
        Module whose input is the bottleneck feature (default: the last linear layer).
    run_dir : path, optional
        Where to write ``checkpoint.pt``, ``log.json`` and the result.
    checkpoint_every : int
        Steps between checkpoints (needs ``run_dir``).
    resume : bool
        Continue from ``run_dir/checkpoint.pt`` (bit-exact on CPU); settings must match.
    seed : int
        Seeds the bias head's initialisation and the batch order.
    progress : bool, optional
        tqdm bar; ``None`` shows it only on a terminal.
    on_step : callable, optional
        ``on_step(step, terms)`` after each step (e.g. to stop a run).

    Returns
    -------
    SearchResult

    Raises
    ------
    ShapeError, DataError
        Bias labels of the wrong length, or with a single value.
    ModelError
        A model with no prunable layer.
    ConfigError
        Bad settings, or ``resume`` with different settings or nothing to resume.
    """
    if granularity not in GRANULARITIES:
        raise ConfigError(f"Unknown granularity {granularity!r}; use one of {GRANULARITIES}.")
    if selection not in SELECTIONS:
        raise ConfigError(f"Unknown selection {selection!r}; use one of {SELECTIONS}.")
    if objective not in OBJECTIVES:
        raise ConfigError(f"Unknown objective {objective!r}; use one of {OBJECTIVES}.")
    if target_sparsity is not None and not 0 <= target_sparsity < 1:
        raise ConfigError(f"target_sparsity must lie in [0, 1), got {target_sparsity}.")
    if steps < 1 or batch_size < 2 or eval_every < 1 or checkpoint_every < 1:
        raise ConfigError("steps, eval_every and checkpoint_every must be >= 1, batch_size >= 2.")
    if not (0 < tau_decay < 1 and tau > 0 and tau_min > 0 and lr > 0 and head_lr > 0):
        raise ConfigError("Need tau > 0, tau_min > 0, 0 < tau_decay < 1 and positive rates.")
    if resume and run_dir is None:
        raise ConfigError("resume=True needs the run_dir of the run to continue.")
    model = unwrap_model(model)
    b_train = _bias_array(data, bias_labels, f"{data.name}/{data.split}")
    n_bias = int(b_train.max()) + 1 if len(b_train) else 0
    if len(np.unique(b_train)) < 2:
        raise DataError(
            f"The bias label takes a single value in {data.name}/{data.split}; there is no bias "
            "to remove. Check the attribute (it needs at least 2 distinct values)."
        )
    if val is None:
        warnings.warn(
            "No validation split given; model selection uses the training data.", stacklevel=2
        )
        val = data
    vb_spec = bias_labels if val_bias_labels is None else val_bias_labels
    b_val = _bias_array(val, vb_spec, f"{val.name}/{val.split}")
    n_bias = max(n_bias, int(b_val.max()) + 1)
    weights = gate_weights(model, exclude=exclude)
    bn = bottleneck or classifier_name(model)
    dev = next(model.parameters()).device

    config = {
        "granularity": granularity,
        "objective": objective,
        "gamma": gamma,
        "reweight": reweight,
        "target_sparsity": target_sparsity,
        "sparsity_weight": sparsity_weight,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "head_lr": head_lr,
        "tau": tau,
        "tau_decay": tau_decay,
        "tau_min": tau_min,
        "plateau_patience": plateau_patience,
        "plateau_delta": plateau_delta,
        "eval_every": eval_every,
        "max_acc_drop": max_acc_drop,
        "selection": selection,
        "gate_init": gate_init,
        "exclude": exclude,
        "bottleneck": bn,
        "seed": seed,
        "n_bias": n_bias,
        "model": model_fingerprint(model),
        "data": data.fingerprint(),
        "val": val.fingerprint(),
        "bias": hashlib.sha256(b_train.tobytes()).hexdigest()[:16],
    }
    chash = _config_hash(config)

    was_training = model.training
    model.eval()
    x_all = torch.from_numpy(np.ascontiguousarray(data.x)).to(dev)
    y_all = torch.from_numpy(np.asarray(data.y, dtype=np.int64)).to(dev)
    b_all = torch.from_numpy(b_train).to(dev)
    w_all = torch.from_numpy(cell_weights(np.asarray(data.y), b_train, reweight)).to(
        dev, x_all.dtype
    )
    xv = torch.from_numpy(np.ascontiguousarray(val.x)).to(dev)
    yv = torch.from_numpy(np.asarray(val.y, dtype=np.int64)).to(dev)
    bv = torch.from_numpy(b_val).to(dev)
    bias_chance = float(np.bincount(b_val).max() / len(b_val))

    with torch.no_grad():
        _, feats0 = gated_forward(model, x_all[:2], None, 1.0, bottleneck=bn)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(feats0.shape[1], n_bias).to(dev, feats0.dtype)
    gates = init_gates(weights, granularity, gate_init)
    sizes = {k: weights[k].numel() / gates[k].numel() for k in gates}
    total_w = sum(w.numel() for w in weights.values())
    gate_opt = torch.optim.Adam(list(gates.values()), lr=lr)
    head_opt = torch.optim.Adam(head.parameters(), lr=head_lr)
    gen = torch.Generator().manual_seed(seed)
    n = len(data)
    st: dict[str, Any] = {
        "step": 0,
        "tau": float(tau),
        "order": torch.randperm(n, generator=gen),
        "pos": 0,
        "log": [],
        "evals": [],
        "best_mi": math.inf,
        "bad_windows": 0,
        "best": None,
        "done": False,
    }
    vanilla_acc, _ = _score(model, None, head, bn, xv, yv, bv)
    rules = _Selection(
        xv,
        yv,
        bv,
        vanilla_acc=vanilla_acc,
        bias_chance=bias_chance,
        max_acc_drop=max_acc_drop,
        selection=selection,
        eval_every=eval_every,
        plateau_delta=plateau_delta,
        plateau_patience=plateau_patience,
        tau_decay=tau_decay,
        tau_min=tau_min,
    )

    files = RunFiles(
        run_dir,
        config,
        chash,
        gates=gates,
        head=head,
        gate_opt=gate_opt,
        head_opt=head_opt,
        gen=gen,
    )
    run_path = files.path
    if resume:
        st = files.resume()

    def checkpoint() -> None:
        files.save(st)

    bar = tqdm(
        total=steps,
        initial=st["step"],
        desc="subnetwork",
        disable=None if progress is None else not progress,
        leave=False,
    )
    try:
        while st["step"] < steps and not st["done"]:
            if st["pos"] >= n:
                st["order"], st["pos"] = torch.randperm(n, generator=gen), 0
            idx = st["order"][st["pos"] : st["pos"] + batch_size].to(dev)
            st["pos"] += batch_size
            xb, yb, bb, wb = x_all[idx], y_all[idx], b_all[idx], w_all[idx]
            t = st["tau"]
            logits, feats = gated_forward(model, xb, gates, t, bottleneck=bn)
            head_opt.zero_grad(set_to_none=True)
            head_loss = (
                F.cross_entropy(head(feats.detach()), bb, reduction="none") * wb
            ).sum() / wb.sum()
            head_loss.backward()
            head_opt.step()
            ce = (F.cross_entropy(logits, yb, reduction="none") * wb).sum() / wb.sum()
            mi = mutual_information(bb, F.softmax(head(feats), dim=1), weights=wb)
            density = sum(gate(m, t).sum() * sizes[k] for k, m in gates.items()) / total_w
            loss = ce + gamma * mi if objective == "ce+mi" else ce
            if target_sparsity is not None:
                loss = loss + sparsity_weight * F.relu(density - (1.0 - target_sparsity))
            gate_opt.zero_grad(set_to_none=True)
            loss.backward()
            gate_opt.step()
            st["step"] += 1
            terms = {
                "step": st["step"],
                "tau": t,
                "loss": float(loss.detach()),
                "ce": float(ce.detach()),
                "mi": float(mi.detach()),
                "head_loss": float(head_loss.detach()),
                "density": float(density.detach()),
            }
            st["log"].append(terms)
            bar.update(1)
            if st["step"] % eval_every == 0 or st["step"] == steps:
                _evaluate(st, model, gates, head, bn, rules)
                bar.set_postfix(tau=st["tau"], mi=round(terms["mi"], 4))
            if on_step is not None:
                on_step(st["step"], terms)
            if st["step"] % checkpoint_every == 0:
                checkpoint()
        checkpoint()
    finally:
        bar.close()
        model.train(was_training)

    final = hard_mask(gates, weights)
    if st["best"] is None:
        warnings.warn(
            "No evaluated mask kept validation accuracy within max_acc_drop of the vanilla "
            "model; returning the final mask. Raise max_acc_drop or lower gamma.",
            stacklevel=2,
        )
        chosen_step, mask, chosen = st["step"], final, None
    else:
        chosen_step, mask, chosen = st["best"]["step"], st["best"]["mask"], st["best"]
    sp = sparsity_report(mask)
    negs = [
        m.detach()[m.detach() < 0].max() for m in gates.values() if bool((m.detach() < 0).any())
    ]
    max_off = float(2 * torch.sigmoid(max(negs) / st["tau"])) if negs else 0.0
    record = {
        "method": "surgeon",
        "method_description": "Debiasing Surgeon-style weight gates (frozen weights)",
        "settings": {k: v for k, v in config.items() if k not in ("model", "data", "val")},
        "model_fingerprint": config["model"],
        "data_fingerprint": config["data"],
        "chosen_step": chosen_step,
        "chosen": None if chosen is None else {k: v for k, v in chosen.items() if k != "mask"},
        "vanilla_val_acc": vanilla_acc,
        "bias_chance": bias_chance,
        "final_step": st["step"],
        "final_tau": st["tau"],
        "max_off_gate": max_off,
        "final_sparsity": sparsity_report(final)["overall"],
        "sparsity": sp,
        "objective_terms_last": st["log"][-1] if st["log"] else None,
        "data_budget": _surgeon_budget(data, val, b_train, b_val, selection, len(st["evals"])),
    }
    out_mask = as_mask(mask, fingerprint=config["model"])
    if run_path is not None:
        _atomic_json(record, run_path / "record.json")
        out_mask.save(run_path / "mask", chosen_step=chosen_step)
    return SearchResult(mask=out_mask, record=record, log=list(st["log"]), evals=list(st["evals"]))


def _surgeon_budget(data, val, b_train, b_val, selection, n_candidates) -> dict[str, Any]:
    """Samples and labels the search and its selection used (as BISE's record states them)."""
    from repsim.subnetwork.bias import aligned_cells, conflicting_samples

    y = np.asarray(data.y, dtype=np.int64)
    yv = np.asarray(val.y, dtype=np.int64)
    c = int(max(y.max(), yv.max())) + 1
    k = int(max(b_train.max(), b_val.max())) + 1
    cells = aligned_cells(y, b_train, c, k)
    conf, vconf = conflicting_samples(y, b_train, cells), conflicting_samples(yv, b_val, cells)
    return {
        "search": {
            "split": f"{data.name}/{data.split}",
            "n_samples": len(data),
            "labels_used": ["class", "bias"],
            "n_bias_labelled": len(data),
            "n_conflicting": int(conf.sum()),
            "conflicting_share": float(conf.mean()),
        },
        "selection": {
            "rule": selection,
            "split": f"{val.name}/{val.split}",
            "n_samples": len(val),
            "labels_used": ["class", "bias"] if selection == "bias-head" else ["class"],
            "n_conflicting": int(vconf.sum()),
            "conflicting_share": float(vconf.mean()),
            "n_candidates_scored": n_candidates,
        },
    }


@dataclass(frozen=True)
class _Selection:
    """The validation split and the rules of model selection and temperature annealing."""

    x: torch.Tensor
    y: torch.Tensor
    b: torch.Tensor
    vanilla_acc: float
    bias_chance: float
    max_acc_drop: float
    selection: str
    eval_every: int
    plateau_delta: float
    plateau_patience: int
    tau_decay: float
    tau_min: float


def _evaluate(
    st: dict[str, Any],
    model: nn.Module,
    gates: dict[str, torch.Tensor],
    head: nn.Module,
    bn: str,
    rules: _Selection,
) -> None:
    """Score the hard mask on validation, update the selection and anneal on a plateau."""
    acc, bias_acc = _score(model, gates, head, bn, rules.x, rules.y, rules.b)
    mask = hard_mask(gates, dict(model.named_parameters()))
    kept = sum(int(v.sum()) for v in mask.values())
    total = sum(v.numel() for v in mask.values())
    eligible = acc >= rules.vanilla_acc - rules.max_acc_drop
    entry = {
        "step": st["step"],
        "tau": st["tau"],
        "val_acc": acc,
        "val_bias_acc": bias_acc,
        "bias_chance": rules.bias_chance,
        "sparsity": 1.0 - kept / total,
        "eligible": bool(eligible),
    }
    st["evals"].append(entry)
    if eligible:
        score = abs(bias_acc - rules.bias_chance) if rules.selection == "bias-head" else -acc
        if st["best"] is None or score < st["best"]["score"]:
            st["best"] = {**entry, "score": score, "mask": mask}
    window = st["log"][-rules.eval_every :]
    mean_mi = float(np.mean([r["mi"] for r in window]))
    if mean_mi < st["best_mi"] - rules.plateau_delta:
        st["best_mi"], st["bad_windows"] = mean_mi, 0
    else:
        st["bad_windows"] += 1
        if st["bad_windows"] >= rules.plateau_patience:
            st["tau"] *= rules.tau_decay
            st["bad_windows"] = 0
            st["best_mi"] = mean_mi
            if st["tau"] < rules.tau_min:
                st["done"] = True


def search(
    model: nn.Module,
    data: GroupedData,
    *,
    bias_labels: str | np.ndarray,
    method: str = "bise",
    **settings: Any,
) -> SearchResult:
    """Find a bias-free subnetwork of a frozen vanilla model: BISE (default) or Debiasing Surgeon.

    Parameters
    ----------
    model : torch.nn.Module
        The vanilla model; its parameters, buffers and hooks are left as they were.
    data : GroupedData
        The split the gates are learnt on (its bias labels are used).
    bias_labels : str or array of int
        Attribute name of ``data`` holding the bias label, or codes in data order.
    method : {"bise", "surgeon"}
        ``"bise"``: structured gates on output channels / neurons, trained as the BISE code does
        (:func:`repsim.subnetwork.bise.search_bise`, De Moura Matos et al., CVPR 2026).
        ``"surgeon"``: the weight-gate search repsim shipped before
        (:func:`search_surgeon`, after Nahon et al., ECCV 2024).
    **settings
        The keyword arguments of the chosen method (``val=``, ``run_dir=``, ``seed=``, ...).

    Returns
    -------
    SearchResult

    Raises
    ------
    ConfigError
        An unknown method, or a setting the chosen method does not take (the message says which
        method takes it).
    """
    from repsim.subnetwork.bise import search_bise

    funcs = {"bise": search_bise, "surgeon": search_surgeon}
    if method not in funcs:
        raise ConfigError(f"Unknown method {method!r}; use one of {METHODS}.")
    own = set(inspect.signature(funcs[method]).parameters) - {"model", "data"}
    for key in settings:
        if key not in own:
            others = [m for m, f in funcs.items() if key in inspect.signature(f).parameters]
            where = f" It is a setting of method={others[0]!r}." if others else ""
            raise ConfigError(
                f"{key!r} is not a setting of method={method!r}.{where} Settings of "
                f"{method!r}: {', '.join(sorted(own - {'bias_labels'}))}."
            )
    return funcs[method](model, data, bias_labels=bias_labels, **settings)
