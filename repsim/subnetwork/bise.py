"""BISE: structured gates on a frozen vanilla model, trained as the BISE code trains them.

De Moura Matos, Sad Saoud, Iakovleva, Pastore, Tartaglione, "Bias In, Bias Out? Finding
Unbiased Subnetworks in Vanilla Models", CVPR 2026 (arXiv:2603.05582); official code
github.com/ivanluizmatos/BISE (commit 689a34d), whose Biased-MNIST defaults are repsim's.

One gate ``m_c`` per output channel (conv) or neuron (linear) of every prunable layer except
the classifier (:mod:`repsim.subnetwork.channels`); the model's parameters and BatchNorm
statistics stay frozen. For a batch with labels ``y``, bias labels ``b`` and loss weights ``w``
(:mod:`repsim.subnetwork.bias`), with ``g_c = 1[m_c >= 0]`` (:func:`~repsim.subnetwork.gates.
step_gate`: binary forward, sigmoid(m / tau) gradient):

    L = mean_s w_s CE(f_g(x_s), y_s)  +  gamma * I(b; softmax(h(z_g(x))))[conflicting] / log K

where ``z_g`` is the bottleneck feature (the classifier's input), ``h`` a linear auxiliary
classifier ("privacy head", IRENE) trained alongside on ``CE(h(z_g.detach()), b)`` over every
sample of the batch, and the mutual information (:func:`~repsim.subnetwork.mi.
mutual_information`) is computed on the **bias-conflicting samples of the batch only** (BISE's
``modif_MI = 1``; 0 when the batch has none). Gates and head are updated from the same forward
pass (the head's share of the MI gradient is discarded), by SGD with momentum and weight
decay. Schedule: the head is first trained ``head_epochs`` epochs on the vanilla model; each
epoch is one pass over the training split; after each epoch the binary subnetwork is scored
on the validation split; every ``tau_period`` epochs ``tau *= tau_decay`` and the head is
retrained ``head_epochs`` epochs on the current subnetwork; the search stops once
``tau <= tau_min``. Selection: the epoch whose subnetwork has the highest validation accuracy
(the latest on ties), or the final one.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from repsim._core.fingerprints import model_fingerprint, unwrap_model
from repsim._core.hooks import attach_hooks, evaluating, frozen
from repsim.data.base import GroupedData
from repsim.errors import ConfigError, DataError
from repsim.subnetwork._runs import (
    RunFiles,
    atomic_json,
    config_hash,
)
from repsim.subnetwork.bias import (
    REWEIGHTS,
    aligned_cells,
    bias_array,
    conflicting_from,
    loss_weights,
)
from repsim.subnetwork.channels import (
    ChannelUnit,
    channel_units,
    check_export,
    gating,
    param_mask,
)
from repsim.subnetwork.gates import classifier_name, step_gate
from repsim.subnetwork.mi import mutual_information
from repsim.subnetwork.search import SearchResult, apply_mask, as_mask

SELECTIONS = ("val-acc", "final")
MI_SAMPLES = ("conflicting", "all")


def conflicting_mi(
    bias: torch.Tensor, probs: torch.Tensor, conflicting: torch.Tensor
) -> torch.Tensor:
    """BISE's bias term: normalised MI between ``bias`` and ``probs`` on the conflicting rows.

    ``I(b; b_hat) / log K`` (:func:`~repsim.subnetwork.mi.mutual_information`, ``K`` = the
    number of columns of ``probs``) over the rows where ``conflicting`` is True, unweighted; 0
    (without gradient) when there is none. A single conflicting row gives 0 as well (its joint
    is its own outer product).
    """
    conflicting = conflicting.to(torch.bool)
    if not bool(conflicting.any()):
        return torch.zeros((), dtype=probs.dtype, device=probs.device)
    return mutual_information(bias[conflicting], probs[conflicting])


def _forward(
    model: nn.Module,
    x: torch.Tensor,
    units: list[ChannelUnit],
    values: dict[str, torch.Tensor],
    bottleneck: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    store: list[torch.Tensor] = []

    def grab(_m: nn.Module, args: tuple) -> None:
        store.append(args[0])

    with gating(model, units, values), attach_hooks(model, pre=[(bottleneck, grab)], noun="module"):
        logits = model(x)
    feats = store[-1]
    return logits, feats.reshape(len(feats), -1)


def _hard(gates: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (m.detach() >= 0).to(m.dtype) for k, m in gates.items()}


@torch.no_grad()
def _features(model, x, units, values, bottleneck, batch_size=1024) -> torch.Tensor:
    out = []
    for start in range(0, len(x), batch_size):
        _, f = _forward(model, x[start : start + batch_size], units, values, bottleneck)
        out.append(f)
    return torch.cat(out)


@torch.no_grad()
def _score(model, x, y, b, units, values, head, bottleneck, batch_size=1024):
    """Accuracy and bias-head accuracy of the binary subnetwork on ``x``."""
    correct = bias_correct = 0
    for start in range(0, len(x), batch_size):
        logits, f = _forward(model, x[start : start + batch_size], units, values, bottleneck)
        correct += int((logits.argmax(1) == y[start : start + batch_size]).sum())
        bias_correct += int((head(f).argmax(1) == b[start : start + batch_size]).sum())
    return correct / len(x), bias_correct / len(x)


def _train_head(head, opt, feats, b, epochs, batch_size, gen) -> float:
    """``epochs`` passes of SGD on ``CE(head(feats), b)`` in shuffled batches; last epoch's loss."""
    n = len(feats)
    loss_sum = 0.0
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        loss_sum = 0.0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size].to(feats.device)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(head(feats[idx]), b[idx])
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
    return loss_sum / max(n, 1)


def search_bise(
    model: nn.Module,
    data: GroupedData,
    *,
    bias_labels: str | np.ndarray,
    val: GroupedData | None = None,
    val_bias_labels: str | np.ndarray | None = None,
    conflicting: str | np.ndarray | None = None,
    gamma: float = 1.0,
    reweight: str = "bise",
    mi_samples: str = "conflicting",
    batch_size: int = 100,
    lr: float = 1e-2,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    head_lr: float = 0.1,
    head_epochs: int = 50,
    tau: float = 1.0,
    tau_decay: float = 0.5,
    tau_period: int = 10,
    tau_min: float = 1e-3,
    max_epochs: int = 200,
    gate_init: float = 0.0,
    selection: str = "val-acc",
    exclude: list[str] | None = None,
    bottleneck: str | None = None,
    run_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    seed: int = 0,
    progress: bool | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> SearchResult:
    """BISE: learn one binary gate per output channel / neuron of a frozen model.

    Every default is the BISE code's for Biased-MNIST (``bise.py``; ``docs/subnetwork.md``
    lists each with its source).

    Parameters
    ----------
    model : torch.nn.Module
        The vanilla model. Its parameters, buffers, train/eval flags and ``requires_grad``
        flags are as before afterwards, and no hook is left on it.
    data : GroupedData
        The (biased) training split the gates are learnt on; every sample needs a bias label.
    bias_labels : str or array of int
        Attribute of ``data`` holding the bias label, or codes in data order.
    val : GroupedData, optional
        Split of the selection rule ``"val-acc"`` (class labels only are used to select; BISE
        uses an unbiased validation split). Default: ``data`` itself, with a warning.
    val_bias_labels : str or array, optional
        Bias labels of ``val``, for the logged bias-head accuracy (default: ``bias_labels``
        when it is an attribute name).
    conflicting : str or array of bool, optional
        Which training samples are bias-conflicting: an attribute of ``data`` (1 =
        conflicting) or a boolean array. Default: the samples whose (class, bias) cell is not
        over-represented (:func:`repsim.subnetwork.bias.conflicting_samples`).
    gamma : float
        Weight of the MI term (BISE ``--gamma``, default 1).
    reweight : {"bise", "cells", "independent", "none"}
        Task-loss weights (:mod:`repsim.subnetwork.bias`).
    mi_samples : {"conflicting", "all"}
        Compute the MI on the batch's conflicting samples (BISE) or on all of them (IRENE,
        Debiasing Surgeon).
    batch_size : int
        Samples per gate update (BISE: 100).
    lr, momentum, weight_decay : float
        SGD of the gates (BISE: 1e-2, 0.9, 1e-4).
    head_lr : float
        SGD learning rate of the auxiliary head (BISE: 0.1; same momentum and weight decay).
    head_epochs : int
        Epochs of head training before the search and after each temperature step (BISE: 50).
    tau, tau_decay, tau_period, tau_min : float, float, int, float
        Initial temperature (1), its factor (0.5) every ``tau_period`` epochs (10), and the
        stop once ``tau <= tau_min`` (1e-3): 100 epochs with the defaults.
    max_epochs : int
        Hard cap on the number of epochs.
    gate_init : float
        Initial gate parameter (BISE: 0, a kept gate; ``m >= 0`` keeps).
    selection : {"val-acc", "final"}
        The epoch with the highest validation accuracy (latest on ties; BISE), or the final
        mask (no validation data used).
    exclude : list of str, optional
        Modules left whole (default: the classifier).
    bottleneck : str, optional
        Module whose input feeds the head (default: the classifier).
    run_dir : path, optional
        Where ``checkpoint.pt``, ``log.json``, ``config.json``, ``record.json`` and the mask
        go.
    checkpoint_every : int
        Epochs between checkpoints (needs ``run_dir``); the last epoch is always saved.
    resume : bool
        Continue from ``run_dir/checkpoint.pt`` (bit-exact on CPU); settings must match.
    seed : int
        Seeds the head's initialisation and every batch order.
    progress : bool, optional
        tqdm bar; ``None`` shows it only on a terminal.
    on_step : callable, optional
        ``on_step(step, terms)`` after each gate update.

    Returns
    -------
    SearchResult
        ``mask``: ``{parameter name: bool tensor}`` zeroing whole filters (plus their bias and
        BatchNorm entries); ``record``: settings, chosen epoch, sparsity, the data budget;
        ``log``: per gate update; ``evals``: per epoch.

    Raises
    ------
    ConfigError
        Bad settings, or ``resume`` with other settings or nothing to resume.
    DataError, ShapeError
        Bias labels missing, of the wrong length, with a single value, or no conflicting
        training sample.
    ModelError
        A model without prunable layer.
    """
    if reweight not in REWEIGHTS:
        raise ConfigError(f"Unknown reweight {reweight!r}; use one of {REWEIGHTS}.")
    if mi_samples not in MI_SAMPLES:
        raise ConfigError(f"Unknown mi_samples {mi_samples!r}; use one of {MI_SAMPLES}.")
    if selection not in SELECTIONS:
        raise ConfigError(
            f"Unknown selection {selection!r} for method='bise'; use one of {SELECTIONS}."
        )
    if batch_size < 2 or head_epochs < 0 or tau_period < 1 or max_epochs < 1:
        raise ConfigError(
            "Need batch_size >= 2, head_epochs >= 0, tau_period >= 1 and max_epochs >= 1."
        )
    if checkpoint_every < 1:
        raise ConfigError("checkpoint_every must be >= 1 (epochs).")
    if not (0 < tau_decay < 1 and tau > 0 and tau_min > 0 and lr > 0 and head_lr > 0):
        raise ConfigError("Need tau > 0, tau_min > 0, 0 < tau_decay < 1 and positive rates.")
    if momentum < 0 or weight_decay < 0 or gamma < 0:
        raise ConfigError("momentum, weight_decay and gamma must be >= 0.")
    if resume and run_dir is None:
        raise ConfigError("resume=True needs the run_dir of the run to continue.")
    model = unwrap_model(model)
    what = f"{data.name}/{data.split}"
    b_np = bias_array(data, bias_labels, what)
    if len(np.unique(b_np)) < 2:
        raise DataError(
            f"The bias label takes a single value in {what}; there is no bias to remove. Check "
            "the attribute (it needs at least 2 distinct values)."
        )
    y_np = np.asarray(data.y, dtype=np.int64)
    n_classes = int(max(y_np.max() + 1, len(data.class_names or ())))
    if val is None:
        warnings.warn(
            "No validation split given; the selection rule scores the training data.",
            stacklevel=2,
        )
        val = data
    vb_spec = bias_labels if val_bias_labels is None else val_bias_labels
    bv_np = bias_array(val, vb_spec, f"{val.name}/{val.split}")
    n_bias = int(max(b_np.max(), bv_np.max())) + 1
    cells = aligned_cells(y_np, b_np, n_classes, n_bias)
    conf_np = conflicting_from(data, conflicting, b_np, cells, what)
    if not conf_np.any() and mi_samples == "conflicting":
        raise DataError(
            f"{what} has no bias-conflicting sample, so BISE's MI term (computed on them) is "
            "always 0. Use mi_samples='all', or check the bias attribute."
        )
    w_np = loss_weights(reweight, y_np, b_np, conf_np, n_classes)
    bn = bottleneck or classifier_name(model)
    dev = next(model.parameters()).device
    x_all = torch.from_numpy(np.ascontiguousarray(data.x)).to(dev)
    units = channel_units(model, x_all[:2], exclude=exclude)

    config = {
        "method": "bise",
        "gamma": gamma,
        "reweight": reweight,
        "mi_samples": mi_samples,
        "batch_size": batch_size,
        "lr": lr,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "head_lr": head_lr,
        "head_epochs": head_epochs,
        "tau": tau,
        "tau_decay": tau_decay,
        "tau_period": tau_period,
        "tau_min": tau_min,
        "max_epochs": max_epochs,
        "gate_init": gate_init,
        "selection": selection,
        "exclude": exclude,
        "bottleneck": bn,
        "seed": seed,
        "n_bias": n_bias,
        "units": [[u.layer, u.n, u.gate_at] for u in units],
        "model": model_fingerprint(model),
        "data": data.fingerprint(),
        "val": val.fingerprint(),
        "bias": hashlib.sha256(b_np.tobytes()).hexdigest()[:16],
        "conflicting": hashlib.sha256(conf_np.tobytes()).hexdigest()[:16],
    }
    chash = config_hash(config)

    y_all = torch.from_numpy(y_np).to(dev)
    b_all = torch.from_numpy(b_np).to(dev)
    c_all = torch.from_numpy(conf_np).to(dev)
    w_all = torch.from_numpy(w_np).to(dev, x_all.dtype)
    xv = torch.from_numpy(np.ascontiguousarray(val.x)).to(dev)
    yv = torch.from_numpy(np.asarray(val.y, dtype=np.int64)).to(dev)
    bv = torch.from_numpy(bv_np).to(dev)

    ones = {u.layer: torch.ones(u.n, dtype=x_all.dtype, device=dev) for u in units}
    with torch.no_grad(), evaluating(model):
        f0 = _features(model, x_all[:2], units, ones, bn)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(f0.shape[1], n_bias).to(dev, f0.dtype)
    gates = {
        u.layer: torch.full((u.n,), float(gate_init), dtype=x_all.dtype, device=dev).requires_grad_(
            True
        )
        for u in units
    }
    gate_opt = torch.optim.SGD(
        list(gates.values()), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    head_opt = torch.optim.SGD(
        head.parameters(), lr=head_lr, momentum=momentum, weight_decay=weight_decay
    )
    gen = torch.Generator().manual_seed(seed)
    n = len(data)
    st: dict[str, Any] = {
        "epoch": 0,
        "step": 0,
        "tau": float(tau),
        "log": [],
        "evals": [],
        "best": None,
        "done": False,
        "pretrained": False,
    }

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

    n_epochs_planned = min(
        max_epochs, tau_period * max(1, math.ceil(math.log(tau_min / tau) / math.log(tau_decay)))
    )
    steps_per_epoch = math.ceil(n / batch_size)
    bar = tqdm(
        total=n_epochs_planned * steps_per_epoch,
        initial=st["step"],
        desc="BISE",
        disable=None if progress is None else not progress,
        leave=False,
    )
    try:
        with frozen(model), evaluating(model):
            if not st["pretrained"]:
                feats = _features(model, x_all, units, ones, bn)
                st["head_pretrain_loss"] = _train_head(
                    head, head_opt, feats, b_all, head_epochs, batch_size, gen
                )
                st["pretrained"] = True
                st["vanilla_val_acc"] = _score(model, xv, yv, bv, units, ones, head, bn)[0]
                checkpoint()
            while not st["done"]:
                st["epoch"] += 1
                t = st["tau"]
                order = torch.randperm(n, generator=gen)
                for start in range(0, n, batch_size):
                    idx = order[start : start + batch_size].to(dev)
                    xb, yb, bb, cb, wb = x_all[idx], y_all[idx], b_all[idx], c_all[idx], w_all[idx]
                    values = {k: step_gate(m, t) for k, m in gates.items()}
                    logits, feats = _forward(model, xb, units, values, bn)
                    ce = (F.cross_entropy(logits, yb, reduction="none") * wb).mean()
                    probs = F.softmax(head(feats), dim=1)
                    if mi_samples == "conflicting":
                        mi = conflicting_mi(bb, probs, cb)
                    else:
                        mi = mutual_information(bb, probs)
                    loss = ce + gamma * mi
                    head_loss = F.cross_entropy(head(feats.detach()), bb)
                    gate_opt.zero_grad(set_to_none=True)
                    head_opt.zero_grad(set_to_none=True)
                    loss.backward()
                    head_opt.zero_grad(set_to_none=True)  # the head learns its own loss only
                    head_loss.backward()
                    gate_opt.step()
                    head_opt.step()
                    st["step"] += 1
                    terms = {
                        "step": st["step"],
                        "epoch": st["epoch"],
                        "tau": t,
                        "loss": float(loss.detach()),
                        "ce": float(ce.detach()),
                        "mi": float(mi.detach()),
                        "n_conflicting": int(cb.sum()),
                        "head_loss": float(head_loss.detach()),
                        "head_acc": float((probs.argmax(1) == bb).float().mean()),
                    }
                    st["log"].append(terms)
                    bar.update(1)
                    if on_step is not None:
                        on_step(st["step"], terms)
                _end_epoch(
                    st,
                    model,
                    units,
                    gates,
                    head,
                    head_opt,
                    bn,
                    gen,
                    xv,
                    yv,
                    bv,
                    x_all,
                    b_all,
                    selection,
                    tau_period,
                    tau_decay,
                    tau_min,
                    max_epochs,
                    head_epochs,
                    batch_size,
                )
                bar.set_postfix(tau=st["tau"], val_acc=round(st["evals"][-1]["val_acc"], 3))
                if st["epoch"] % checkpoint_every == 0 or st["done"]:
                    checkpoint()
    finally:
        bar.close()

    final_keep = {k: (m.detach() >= 0).cpu() for k, m in gates.items()}
    if selection == "final" or st["best"] is None:
        chosen_epoch, keep = st["epoch"], final_keep
    else:
        chosen_epoch = st["best"]["epoch"]
        keep = {k: v.to(torch.bool) for k, v in st["best"]["keep"].items()}
    mask = param_mask(model, units, keep)
    out_mask = as_mask(mask, fingerprint=config["model"])
    pruned = apply_mask(model, out_mask)
    with evaluating(model):
        export_diff = check_export(model, units, keep, pruned.eval(), xv[: min(len(xv), 64)])
    record = _record(
        config,
        st,
        units,
        keep,
        final_keep,
        mask,
        chosen_epoch,
        export_diff,
        data,
        val,
        conf_np,
        b_np,
        bv_np,
        cells,
        selection,
    )
    if run_path is not None:
        atomic_json(record, run_path / "record.json")
        out_mask.save(run_path / "mask", chosen_step=chosen_epoch, method="bise")
    return SearchResult(mask=out_mask, record=record, log=list(st["log"]), evals=list(st["evals"]))


def _end_epoch(
    st,
    model,
    units,
    gates,
    head,
    head_opt,
    bn,
    gen,
    xv,
    yv,
    bv,
    x_all,
    b_all,
    selection,
    tau_period,
    tau_decay,
    tau_min,
    max_epochs,
    head_epochs,
    batch_size,
) -> None:
    """Score the epoch's subnetwork, keep the best, step the temperature, retrain the head."""
    hard = _hard(gates)
    acc, bias_acc = _score(model, xv, yv, bv, units, hard, head, bn)
    kept = sum(int(v.sum()) for v in hard.values())
    total = sum(v.numel() for v in hard.values())
    entry = {
        "epoch": st["epoch"],
        "step": st["step"],
        "tau": st["tau"],
        "val_acc": acc,
        "val_bias_head_acc": bias_acc,
        "channels_kept": kept,
        "channel_sparsity": 1.0 - kept / total,
    }
    st["evals"].append(entry)
    if selection == "val-acc" and (st["best"] is None or acc >= st["best"]["val_acc"]):
        st["best"] = {**entry, "keep": {k: v.detach().cpu().clone() for k, v in hard.items()}}
    if st["epoch"] % tau_period == 0:
        st["tau"] *= tau_decay
        feats = _features(model, x_all, units, hard, bn)
        _train_head(head, head_opt, feats, b_all, head_epochs, batch_size, gen)
    if st["tau"] <= tau_min or st["epoch"] >= max_epochs:
        st["done"] = True


def _budget(data, val, conf_np, b_np, bv_np, cells, selection, n_candidates) -> dict[str, Any]:
    """How many labelled samples the search and the selection used, and how biased they are."""
    from repsim.subnetwork.bias import conflicting_samples

    val_conf = conflicting_samples(np.asarray(val.y), bv_np, cells)
    uses_val = selection == "val-acc"
    return {
        "search": {
            "split": f"{data.name}/{data.split}",
            "n_samples": len(data),
            "labels_used": ["class", "bias"],
            "n_bias_labelled": len(data),
            "n_conflicting": int(conf_np.sum()),
            "conflicting_share": float(conf_np.mean()),
        },
        "selection": {
            "rule": selection,
            "split": f"{val.name}/{val.split}" if uses_val else None,
            "n_samples": len(val) if uses_val else 0,
            "labels_used": ["class"] if uses_val else [],
            "n_conflicting": int(val_conf.sum()) if uses_val else 0,
            "conflicting_share": float(val_conf.mean()) if uses_val else math.nan,
            "n_candidates_scored": n_candidates if uses_val else 0,
        },
    }


def _record(
    config,
    st,
    units,
    keep,
    final_keep,
    mask,
    chosen_epoch,
    export_diff,
    data,
    val,
    conf_np,
    b_np,
    bv_np,
    cells,
    selection,
) -> dict[str, Any]:
    """The search's record: settings, choice, sparsity, the export check and the data budget.

    ``sparsity`` counts the gated layers' own weights (filters and neuron rows) only; the
    BatchNorm and bias entries of the mask follow their channels.
    """
    from repsim.subnetwork.search import sparsity_report

    weights = {f"{u.layer}.weight" for u in units}
    layers = {}
    for u in units:
        k = keep[u.layer]
        layers[u.layer] = {
            "channels": u.n,
            "channels_kept": int(k.sum()),
            "channel_sparsity": 1.0 - float(k.float().mean()),
            "gate_at": u.gate_at,
        }
    chosen = None
    if st["best"] is not None and selection == "val-acc":
        chosen = {k: v for k, v in st["best"].items() if k != "keep"}
    total_ch = sum(u.n for u in units)
    kept_ch = sum(int(keep[u.layer].sum()) for u in units)
    return {
        "method": "bise",
        "method_description": "BISE structured gates (channels / neurons), frozen weights",
        "settings": {k: v for k, v in config.items() if k not in ("model", "data", "val")},
        "model_fingerprint": config["model"],
        "data_fingerprint": config["data"],
        "chosen_step": chosen_epoch,
        "chosen_unit": "epoch",
        "chosen": chosen,
        "vanilla_val_acc": st.get("vanilla_val_acc"),
        "final_epoch": st["epoch"],
        "final_step": st["step"],
        "final_tau": st["tau"],
        "final_channel_sparsity": 1.0
        - sum(int(v.sum()) for v in final_keep.values()) / max(total_ch, 1),
        "channel_sparsity": 1.0 - kept_ch / max(total_ch, 1),
        "layers": layers,
        "probe_layers": [u.gate_at for u in units],
        "export_max_abs_diff": export_diff,
        "data_budget": _budget(data, val, conf_np, b_np, bv_np, cells, selection, len(st["evals"])),
        "sparsity": sparsity_report({k: v for k, v in mask.items() if k in weights}),
        "objective_terms_last": st["log"][-1] if st["log"] else None,
    }
