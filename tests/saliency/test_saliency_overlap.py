"""Removed share of salient weights vs chance, and Jaccard between groups."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from repsim.errors import MaskError
from repsim.saliency import (
    jaccard,
    pruning_mask,
    removed_share,
    saliency_mask,
    salient_jaccard,
    salient_removed,
)


def scores(seed: int, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.rand(s, generator=gen) for n, s in shapes.items()}


SHAPES = {"a.weight": (60, 50), "b.weight": (40, 30), "c.weight": (10, 40)}


def overall(rows: list[dict]) -> dict:
    return next(r for r in rows if r["parameter"] == "(all)")


def test_overlap_is_one_when_pruning_removes_the_salient_set() -> None:
    sal = scores(0, SHAPES)
    salient = saliency_mask(sal, 0.2)
    keep = {n: ~m for n, m in salient.items()}
    rows = removed_share(salient, keep, group="g")
    for r in rows:
        if r["n_salient"]:
            assert r["removed_share"] == 1.0
    o = overall(rows)
    assert o["removed_share"] == 1.0
    n = sum(math.prod(s) for s in SHAPES.values())
    assert o["chance"] == pytest.approx(round(0.2 * n) / n)
    assert o["ratio"] == pytest.approx(1 / o["chance"])


def test_overlap_is_zero_when_pruning_keeps_the_salient_set() -> None:
    salient = saliency_mask(scores(1, SHAPES), 0.3)
    assert overall(removed_share(salient, salient))["removed_share"] == 0.0


def test_random_mask_removes_about_the_sparsity() -> None:
    shapes = {"a.weight": (300, 200), "b.weight": (200, 100)}
    salient = saliency_mask(scores(2, shapes), 0.1)
    rng = np.random.default_rng(3)
    sparsity = 0.9
    keep = {n: torch.from_numpy(rng.random(s) >= sparsity) for n, s in shapes.items()}
    rows = removed_share(salient, keep)
    for r in rows:
        se = math.sqrt(r["chance"] * (1 - r["chance"]) / r["n_salient"])
        assert abs(r["removed_share"] - r["chance"]) < 4 * se
        assert abs(r["chance"] - sparsity) < 0.01
    o = overall(rows)
    assert o["chance_layer_matched"] == pytest.approx(
        sum(r["n_salient"] * r["chance"] for r in rows[:-1]) / o["n_salient"]
    )


def test_counts_are_consistent_with_a_direct_count() -> None:
    sal = scores(4, SHAPES)
    rng = np.random.default_rng(5)
    keep = {n: torch.from_numpy(rng.random(s) < 0.5) for n, s in SHAPES.items()}
    salient = saliency_mask(sal, 0.25, scope="layerwise")
    rows = removed_share(salient, keep)
    for r in rows[:-1]:
        s, k = salient[r["parameter"]].numpy(), keep[r["parameter"]].numpy()
        assert r["n_salient_removed"] == int((s & ~k).sum())
        assert r["removed_share"] == pytest.approx((s & ~k).sum() / s.sum())
        assert r["chance"] == pytest.approx((~k).mean())


@pytest.mark.filterwarnings("ignore:No salient weights")
def test_salient_removed_per_group_from_pruned_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
    prune.global_unstructured(
        [(model[0], "weight"), (model[2], "weight")],
        pruning_method=prune.L1Unstructured,
        amount=0.8,
    )
    keep = pruning_mask(model)
    assert set(keep) == {"0.weight", "2.weight"}
    magnitude = {
        "0.weight": model[0].weight_orig.detach().abs(),
        "2.weight": model[2].weight_orig.detach().abs(),
        "0.bias": torch.rand(30),
    }
    sal = {
        "big": magnitude,
        "random": scores(7, {"0.weight": (30, 20), "2.weight": (5, 30), "0.bias": (30,)}),
    }
    rows = salient_removed(sal, model, fraction=0.1)
    assert {r["group"] for r in rows} == {"big", "random"}
    # the largest-magnitude weights are never removed by magnitude pruning
    big = next(r for r in rows if r["group"] == "big" and r["parameter"] == "(all)")
    assert big["removed_share"] == 0.0
    assert big["chance"] == pytest.approx(0.8, abs=1e-3)


def test_mask_mismatch_errors() -> None:
    salient = saliency_mask(scores(0, SHAPES), 0.2)
    with pytest.raises(MaskError, match="not in the pruning mask"):
        removed_share(salient, {"a.weight": salient["a.weight"]})
    bad = dict(salient)
    bad["a.weight"] = torch.ones(3, 3, dtype=torch.bool)
    with pytest.raises(MaskError, match="Shapes differ"):
        removed_share(salient, bad)
    with pytest.raises(MaskError, match="no pruning masks"):
        pruning_mask(nn.Linear(2, 2))


def test_nan_share_with_warning_for_empty_salient_layer() -> None:
    salient = {"a": torch.zeros(4, dtype=torch.bool), "b": torch.ones(4, dtype=torch.bool)}
    keep = {"a": torch.ones(4, dtype=torch.bool), "b": torch.tensor([1, 0, 1, 0]).bool()}
    with pytest.warns(RuntimeWarning, match="undefined"):
        rows = removed_share(salient, keep)
    assert math.isnan(rows[0]["removed_share"])
    assert rows[-1]["removed_share"] == 0.5


def test_jaccard_identities() -> None:
    a = saliency_mask(scores(0, SHAPES), 0.3)
    assert jaccard(a, a) == 1.0
    not_a = {n: ~m for n, m in a.items()}
    assert jaccard(a, not_a) == 0.0
    with pytest.warns(RuntimeWarning):
        assert math.isnan(
            jaccard(
                {"x": torch.zeros(3, dtype=torch.bool)}, {"x": torch.zeros(3, dtype=torch.bool)}
            )
        )
    with pytest.raises(MaskError):
        jaccard(a, {"a.weight": a["a.weight"]})


def test_salient_jaccard_of_independent_maps_is_near_chance() -> None:
    shapes = {"w": (400, 250)}
    sal = {"g0": scores(10, shapes), "g1": scores(11, shapes), "same": scores(10, shapes)}
    rows = salient_jaccard(sal, fraction=0.2)
    by_pair = {(r["group_a"], r["group_b"]): r for r in rows}
    assert by_pair[("g0", "same")]["jaccard"] == 1.0
    r = by_pair[("g0", "g1")]
    assert r["chance"] == pytest.approx(0.2 / 1.8)
    assert abs(r["jaccard"] - r["chance"]) < 0.01
