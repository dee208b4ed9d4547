"""Overlap of salient weights with a pruning mask, and between groups.

Answers "did pruning remove the weights a group needed?": for each group's salient set ``S_g``
(its top ``fraction`` of weights by saliency, :func:`repsim.saliency.saliency_mask`) and a
pruning mask that keeps ``K`` and removes ``R`` (``torch.nn.utils.prune`` convention: ``True``
= kept), the removed share is::

    removed_share_g = |S_g ∩ R| / |S_g|

If pruning were blind to the group's saliency, the expected removed share in parameter ``p`` is
its sparsity ``|R_p| / n_p`` (the chance level). Overall, two chance levels are reported: the
overall sparsity ``|R| / n`` (``chance``) and the layer-matched level
``sum_p |S_g,p| * sparsity_p / |S_g|`` (``chance_layer_matched``), which is what a pruning that
is random *within* each layer would remove given where the salient weights lie.

Jaccard similarity between two groups' salient sets is ``|S_a ∩ S_b| / |S_a ∪ S_b|``
(Jaccard 1912).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping

import torch
from torch import nn

from repsim._core.fingerprints import unwrap_model
from repsim._core.table import Table as MetricTable
from repsim.errors import ConfigError, MaskError, did_you_mean
from repsim.saliency.gradient import SaliencyMap, saliency_mask, user_name

ALL_PARAMETERS = "(all)"


def pruning_mask(model: nn.Module) -> dict[str, torch.Tensor]:
    """The keep masks of a model pruned with ``torch.nn.utils.prune``, by parameter name.

    Returns
    -------
    dict
        ``{"fc.weight": bool tensor (True = kept), ...}`` for each ``<name>_mask`` buffer.

    Raises
    ------
    MaskError
        If the model holds no pruning masks.
    """
    model = unwrap_model(model)
    masks = {
        user_name(n[: -len("_mask")] + "_orig"): b.detach().to(torch.bool).cpu()
        for n, b in model.named_buffers()
        if n.endswith("_mask")
    }
    if not masks:
        raise MaskError(
            "The model holds no pruning masks (no '<name>_mask' buffers); prune it with "
            "torch.nn.utils.prune / repsim.compress.prune, or pass the mask itself."
        )
    return masks


def _as_keep_mask(mask: Mapping[str, torch.Tensor] | nn.Module) -> dict[str, torch.Tensor]:
    if isinstance(mask, nn.Module):
        return pruning_mask(mask)
    if not isinstance(mask, Mapping) or not mask:
        raise MaskError("Expected a non-empty mask {parameter_name: bool tensor} or a model.")
    return {n: torch.as_tensor(m).detach().to(torch.bool).cpu() for n, m in mask.items()}


def _check_same_keys(salient: Mapping[str, torch.Tensor], keep: Mapping[str, torch.Tensor]) -> None:
    for name, s in salient.items():
        if name not in keep:
            raise MaskError(
                f"Parameter {name!r} of the salient set is not in the pruning mask."
                f"{did_you_mean(name, keep)} Rank only the masked parameters "
                "(saliency_mask(..., parameters=list(mask)))."
            )
        if tuple(s.shape) != tuple(keep[name].shape):
            raise MaskError(
                f"Shapes differ for {name!r}: salient {tuple(s.shape)}, mask "
                f"{tuple(keep[name].shape)}."
            )


def removed_share(
    salient: Mapping[str, torch.Tensor],
    keep: Mapping[str, torch.Tensor] | nn.Module,
    *,
    group: str = "",
) -> MetricTable:
    """Share of a salient set that a pruning mask removed, per parameter and overall.

    Parameters
    ----------
    salient : mapping
        ``{parameter_name: bool tensor}``, ``True`` = salient (from :func:`saliency_mask`).
    keep : mapping or torch.nn.Module
        The pruning mask (``True`` = kept), or a pruned model to read it from.
    group : str
        Label written into each row.

    Returns
    -------
    MetricTable
        One row per parameter of ``salient`` and a last row with ``parameter="(all)"``; columns
        ``group, parameter, n_weights, n_salient, n_removed, n_salient_removed, removed_share,
        chance, chance_layer_matched, ratio`` (``ratio = removed_share / chance``). A share is
        NaN (with a warning) where a parameter holds no salient weight.
    """
    keep = _as_keep_mask(keep)
    salient = {n: torch.as_tensor(s).to(torch.bool).cpu() for n, s in salient.items()}
    _check_same_keys(salient, keep)
    rows = []
    empty = []
    tot = dict(n=0, s=0, r=0, sr=0, matched=0.0)
    for name, s in salient.items():
        removed = ~keep[name]
        n, n_s, n_r = s.numel(), int(s.sum()), int(removed.sum())
        n_sr = int((s & removed).sum())
        sparsity = n_r / n
        share = n_sr / n_s if n_s else math.nan
        if not n_s:
            empty.append(name)
        rows.append(_row(group, name, n, n_s, n_r, n_sr, share, sparsity, sparsity))
        tot["n"] += n
        tot["s"] += n_s
        tot["r"] += n_r
        tot["sr"] += n_sr
        tot["matched"] += n_s * sparsity
    if empty:
        warnings.warn(
            f"No salient weights in {empty}{' for ' + group if group else ''}: their removed "
            "share is undefined (NaN).",
            RuntimeWarning,
            stacklevel=2,
        )
    share = tot["sr"] / tot["s"] if tot["s"] else math.nan
    matched = tot["matched"] / tot["s"] if tot["s"] else math.nan
    rows.append(
        _row(
            group,
            ALL_PARAMETERS,
            tot["n"],
            tot["s"],
            tot["r"],
            tot["sr"],
            share,
            tot["r"] / tot["n"],
            matched,
        )
    )
    return MetricTable(rows)


def _row(
    group: str,
    name: str,
    n: int,
    n_s: int,
    n_r: int,
    n_sr: int,
    share: float,
    chance: float,
    matched: float,
) -> dict[str, object]:
    return {
        "group": group,
        "parameter": name,
        "n_weights": n,
        "n_salient": n_s,
        "n_removed": n_r,
        "n_salient_removed": n_sr,
        "removed_share": share,
        "chance": chance,
        "chance_layer_matched": matched,
        "ratio": share / chance if chance > 0 else math.nan,
    }


def salient_removed(
    saliency: Mapping[str, SaliencyMap],
    keep: Mapping[str, torch.Tensor] | nn.Module,
    *,
    fraction: float = 0.1,
    scope: str = "global",
) -> MetricTable:
    """Per group: the share of its top-``fraction`` salient weights that pruning removed.

    The salient sets are ranked over the *masked* parameters only (the ones pruning could
    remove), with :func:`saliency_mask` (``scope`` global or layerwise).

    Parameters
    ----------
    saliency : mapping
        ``{group: {parameter_name: scores}}`` as :func:`weight_saliency` returns.
    keep : mapping or torch.nn.Module
        Pruning mask (``True`` = kept) or a pruned model.
    fraction : float
        Share of the masked weights counted as each group's salient set, in (0, 1].
    scope : {"global", "layerwise"}
        Ranking scope of the salient set.

    Returns
    -------
    MetricTable
        The rows of :func:`removed_share` for every group, groups in the order given.
    """
    keep = _as_keep_mask(keep)
    if not isinstance(saliency, Mapping) or not saliency:
        raise ConfigError("Expected saliency maps {group: {parameter_name: scores}}.")
    rows: list[dict[str, object]] = []
    for group, smap in saliency.items():
        if not isinstance(smap, Mapping):
            raise ConfigError(
                "Expected saliency maps per group {group: {parameter_name: scores}}; for one "
                "map call removed_share(saliency_mask(map, fraction), mask)."
            )
        for name in keep:
            if name not in smap:
                raise MaskError(
                    f"Masked parameter {name!r} has no saliency scores for group {group!r}."
                    f"{did_you_mean(name, smap)}"
                )
        salient = saliency_mask(smap, fraction, scope=scope, parameters=list(keep))
        rows.extend(removed_share(salient, keep, group=str(group)).rows)
    return MetricTable(rows)


def jaccard(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Jaccard similarity ``|A ∩ B| / |A ∪ B|`` of two boolean masks over the same parameters.

    Returns NaN (with a warning) when both sets are empty.
    """
    if set(a) != set(b):
        raise MaskError(
            f"The masks cover different parameters: only in the first {sorted(set(a) - set(b))}, "
            f"only in the second {sorted(set(b) - set(a))}."
        )
    inter = union = 0
    for name in a:
        x = torch.as_tensor(a[name]).to(torch.bool)
        y = torch.as_tensor(b[name]).to(torch.bool)
        if x.shape != y.shape:
            raise MaskError(f"Shapes differ for {name!r}: {tuple(x.shape)} vs {tuple(y.shape)}.")
        inter += int((x & y).sum())
        union += int((x | y).sum())
    if union == 0:
        warnings.warn(
            "Both sets are empty: Jaccard similarity is undefined (NaN).",
            RuntimeWarning,
            stacklevel=2,
        )
        return math.nan
    return inter / union


def salient_jaccard(
    saliency: Mapping[str, SaliencyMap],
    *,
    fraction: float = 0.1,
    scope: str = "global",
    parameters: list[str] | None = None,
) -> MetricTable:
    """Jaccard similarity between every pair of groups' top-``fraction`` salient sets.

    Returns
    -------
    MetricTable
        Rows ``group_a, group_b, jaccard, chance`` for each unordered pair; ``chance`` is the
        expected Jaccard of two independent random sets of the same share ``f``:
        ``f / (2 - f)``.
    """
    masks = {
        g: saliency_mask(m, fraction, scope=scope, parameters=parameters)
        for g, m in saliency.items()
    }
    f = float(fraction)
    return MetricTable(
        [
            {
                "group_a": a,
                "group_b": b,
                "jaccard": jaccard(masks[a], masks[b]),
                "chance": f / (2 - f),
            }
            for a, b in itertools.combinations(masks, 2)
        ],
        columns=["group_a", "group_b", "jaccard", "chance"],
    )
