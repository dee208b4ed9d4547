"""Controls for a found subnetwork: random masks and magnitude pruning at equal sparsity.

A subnetwork's gain over the vanilla model only means something beside what any pruning of the
same size and shape would do. Both controls keep, **in every masked layer, exactly as many
units as the found mask** (units: channels/neurons for a BISE mask, rows for a Surgeon
``granularity="channel"`` mask, single weights for a Surgeon ``granularity="weight"`` mask):

- **random** (:func:`random_control`): ``k`` masks drawn uniformly at random under that
  constraint, the best of them chosen by the *same selection rule on the same validation
  split* as the search (``"val-acc"``: highest validation accuracy, latest on ties;
  ``"bias-head"``: among masks whose validation accuracy is within ``max_acc_drop`` of the
  vanilla model's, the one whose fresh bias probe on the validation split is closest to chance;
  ``"final"``: no data, the first draw). With ``k`` equal to the number of candidates the
  search scored, the control gets the same data budget: the same samples, the same number of
  looks;
- **magnitude** (:func:`magnitude_control`): in each layer the units of largest L1 norm
  (Han et al. 2015 for weights; Li et al. 2017, "Pruning Filters for Efficient ConvNets", for
  filters and neurons). It uses no data.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from repsim.compress import Mask
from repsim.data.base import GroupedData
from repsim.errors import ConfigError
from repsim.subnetwork.channels import ChannelUnit, keep_from_mask, param_mask
from repsim.subnetwork.search import apply_mask, as_mask

RULES = ("val-acc", "bias-head", "final")
STRUCTURES = ("channel", "row", "weight")


class _Structure:
    """How a mask decomposes into per-layer unit selections, and back."""

    def __init__(
        self,
        model: nn.Module,
        mask: Mapping[str, torch.Tensor],
        structure: str,
        units: Sequence[ChannelUnit] | None,
    ) -> None:
        if structure not in STRUCTURES:
            raise ConfigError(f"Unknown structure {structure!r}; use one of {STRUCTURES}.")
        if structure == "channel" and not units:
            raise ConfigError("structure='channel' needs the search's channel units.")
        self.model, self.structure, self.units = model, structure, list(units or [])
        self.params = dict(model.named_parameters())
        if structure == "channel":
            self.keep = {k: v.clone() for k, v in keep_from_mask(self.units, mask).items()}
        elif structure == "row":
            self.keep = {
                k: torch.as_tensor(v).reshape(v.shape[0], -1).all(1) for k, v in mask.items()
            }
        else:
            self.keep = {k: torch.as_tensor(v).reshape(-1).clone() for k, v in mask.items()}
        self.names = list(mask)

    def decode(self, keep: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.structure == "channel":
            return param_mask(self.model, self.units, keep)
        out = {}
        for name in self.names:
            shape = self.params[name].shape
            k = keep[name]
            if self.structure == "row":
                out[name] = k.reshape((-1,) + (1,) * (len(shape) - 1)).expand(shape).clone()
            else:
                out[name] = k.reshape(shape).clone()
        return out

    def magnitudes(self) -> dict[str, torch.Tensor]:
        """L1 norm of each unit (filter/neuron row, or single weight)."""
        if self.structure == "channel":
            return {
                u.layer: self.params[f"{u.layer}.weight"].detach().abs().reshape(u.n, -1).sum(1)
                for u in self.units
            }
        out = {}
        for name in self.keep:
            w = self.params[name].detach().abs()
            out[name] = w.reshape(w.shape[0], -1).sum(1) if self.structure == "row" else w.flatten()
        return out


def _draw(keep: Mapping[str, torch.Tensor], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Same number of kept units per layer, positions uniformly at random."""
    out = {}
    for name, k in keep.items():
        n, kept = k.numel(), int(k.sum())
        new = torch.zeros(n, dtype=torch.bool)
        new[torch.randperm(n, generator=gen)[:kept]] = True
        out[name] = new
    return out


@torch.no_grad()
def _accuracy(model: nn.Module, data: GroupedData, batch_size: int = 1024) -> float:
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(data.x))
    y = torch.from_numpy(np.asarray(data.y, dtype=np.int64))
    correct = 0
    for start in range(0, len(x), batch_size):
        correct += int(
            (model(x[start : start + batch_size]).argmax(1) == y[start : start + batch_size]).sum()
        )
    return correct / max(len(x), 1)


def random_control(
    vanilla: nn.Module,
    mask: Mapping[str, torch.Tensor],
    *,
    structure: str,
    units: Sequence[ChannelUnit] | None = None,
    k: int,
    rule: str = "val-acc",
    val: GroupedData | None = None,
    train: GroupedData | None = None,
    bias_labels: str | None = None,
    val_bias_labels: str | None = None,
    vanilla_val_acc: float | None = None,
    max_acc_drop: float = 0.02,
    bottleneck: str | None = None,
    seed: int = 0,
) -> tuple[Mask, dict[str, Any]]:
    """The best of ``k`` random masks at the found mask's per-layer sparsity.

    Parameters
    ----------
    vanilla : torch.nn.Module
    mask : mapping
        The found mask (``{parameter name: bool tensor}``).
    structure : {"channel", "row", "weight"}
        Unit of the mask: BISE channels/neurons (needs ``units``), weight rows, single weights.
    units : sequence of ChannelUnit, optional
        The search's units (``structure="channel"``).
    k : int
        Number of random masks drawn (``rule="final"`` uses the first only).
    rule : {"val-acc", "bias-head", "final"}
        The search's selection rule (see the module docstring).
    val : GroupedData
        The search's validation split (rules ``"val-acc"`` and ``"bias-head"``).
    train, bias_labels, val_bias_labels, vanilla_val_acc, max_acc_drop, bottleneck
        For ``rule="bias-head"``: the probe's training split and bias attributes, the vanilla
        model's validation accuracy and the eligibility margin, the bottleneck module.
    seed : int
        Seeds the draws.

    Returns
    -------
    (Mask, dict)
        The chosen random mask and a record: ``k``, ``rule``, the chosen draw, its score and
        every draw's validation accuracy.

    Raises
    ------
    ConfigError
        Unknown rule or structure, ``k < 1``, or a rule whose data is missing.
    """
    if rule not in RULES:
        raise ConfigError(f"Unknown selection rule {rule!r}; use one of {RULES}.")
    if k < 1:
        raise ConfigError(f"The random control needs k >= 1 masks, got {k}.")
    if rule != "final" and val is None:
        raise ConfigError(f"rule={rule!r} needs the validation split (val=).")
    if rule == "bias-head" and (train is None or bias_labels is None or vanilla_val_acc is None):
        raise ConfigError("rule='bias-head' needs train=, bias_labels= and vanilla_val_acc=.")
    st = _Structure(vanilla, mask, structure, units)
    gen = torch.Generator().manual_seed(int(seed))
    n_draws = 1 if rule == "final" else int(k)
    draws, accs, scores = [], [], []
    for _ in range(n_draws):
        keep = _draw(st.keep, gen)
        draws.append(keep)
        if rule == "final":
            accs.append(math.nan)
            scores.append(0.0)
            continue
        model = apply_mask(vanilla, st.decode(keep))
        acc = _accuracy(model, val)  # type: ignore[arg-type]
        accs.append(acc)
        if rule == "val-acc":
            scores.append(-acc)
        else:
            scores.append(
                _bias_head_score(model, train, val, bias_labels, val_bias_labels, bottleneck, seed)
                if acc >= vanilla_val_acc - max_acc_drop  # type: ignore[operator]
                else math.inf
            )
    if rule == "val-acc":
        best = max(i for i, s in enumerate(scores) if s == min(scores))  # latest on ties
    else:
        finite = [s for s in scores if math.isfinite(s)]
        if not finite:
            warnings.warn(
                "No random mask kept validation accuracy within max_acc_drop of the vanilla "
                "model; the random control falls back to the highest validation accuracy.",
                stacklevel=2,
            )
            best = int(np.argmax(accs))
        else:
            best = scores.index(min(finite))  # earliest on ties, as the search
    chosen = as_mask(st.decode(draws[best]))
    record = {
        "k": n_draws,
        "rule": rule,
        "structure": structure,
        "chosen_draw": best,
        "chosen_val_acc": accs[best],
        "chosen_score": scores[best],
        "val_accs": accs,
        "seed": seed,
        "data_budget": {
            "split": None if rule == "final" else f"{val.name}/{val.split}",  # type: ignore[union-attr]
            "n_samples": 0 if rule == "final" else len(val),  # type: ignore[arg-type]
            "n_candidates_scored": 0 if rule == "final" else n_draws,
        },
    }
    return chosen, record


def _bias_head_score(model, train, val, bias_labels, val_bias_labels, bottleneck, seed) -> float:
    """``|accuracy of a fresh bias probe on val - chance|`` (probe fitted on train features)."""
    from repsim.subnetwork.bias import bias_array
    from repsim.subnetwork.report import bottleneck_features, fit_probe

    b_tr = bias_array(train, bias_labels, "train")
    b_va = bias_array(val, val_bias_labels or bias_labels, "val")
    probe = fit_probe(bottleneck_features(model, train, bottleneck), b_tr, np.asarray(train.y))
    pred = probe(bottleneck_features(model, val, bottleneck))
    chance = float(np.bincount(b_va).max() / len(b_va))
    return abs(float(np.mean(pred == b_va)) - chance)


def magnitude_control(
    vanilla: nn.Module,
    mask: Mapping[str, torch.Tensor],
    *,
    structure: str,
    units: Sequence[ChannelUnit] | None = None,
) -> Mask:
    """In each layer, keep as many units as ``mask`` does: those of largest L1 norm.

    Ties go to the lower index (stable sort). Uses no data.
    """
    st = _Structure(vanilla, mask, structure, units)
    mags = st.magnitudes()
    keep = {}
    for name, k in st.keep.items():
        kept = int(k.sum())
        order = torch.argsort(-mags[name].double(), stable=True)
        new = torch.zeros(k.numel(), dtype=torch.bool)
        new[order[:kept]] = True
        keep[name] = new
    return as_mask(st.decode(keep))
