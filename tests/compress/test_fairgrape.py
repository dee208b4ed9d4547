"""FairGRAPE importance and greedy selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from repsim.compress import Mask
from repsim.compress.fairgrape import (
    fairgrape_masks,
    fairgrape_prune,
    greedy_select,
    group_importance,
    prunable_parameters,
)
from repsim.data.base import GroupedData
from repsim.errors import (
    ConfigError,
    InsufficientDataError,
    LayerNotFoundError,
    ParameterNotFoundError,
)


def make_data(n: int = 24, seed: int = 0) -> GroupedData:
    rng = np.random.default_rng(seed)
    return GroupedData(
        x=rng.normal(size=(n, 1, 6, 6)).astype(np.float32),
        y=rng.integers(0, 3, size=n),
        groups=(np.arange(n) % 3 == 0).astype(np.int64),
        sample_id=np.arange(n, dtype=np.int64),
        group_names=("majority", "minority"),
        class_names=("a", "b", "c"),
    )


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(4 * 4 * 4, 8),
        nn.ReLU(),
        nn.Linear(8, 3),
    )


def test_estimation_leaves_weights_bit_identical_and_no_grads_or_hooks() -> None:
    model = small_cnn()
    model.train()
    data = make_data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = [
        (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
        for m in model.modules()
    ]
    group_importance(model, data, batch_size=5)
    masks = fairgrape_masks(model, data, 0.7, batch_size=5, iterations=2)
    assert model.training
    after = model.state_dict()
    assert set(after) == set(before)
    for k in before:
        assert torch.equal(after[k], before[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert hooks == [
        (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
        for m in model.modules()
    ]
    # as repsim.compress.prune: every Linear/Conv weight but the classifier's by default
    assert set(masks) == {"0.weight", "5.weight"}
    full = fairgrape_masks(model, data, 0.5, exclude_classifier=False)
    assert set(full) == {"0.weight", "5.weight", "7.weight"}


def test_importance_equals_hand_computation() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3))
    rng = np.random.default_rng(1)
    data = GroupedData(
        x=rng.normal(size=(10, 6)).astype(np.float32),
        y=rng.integers(0, 3, size=10),
        groups=np.array([0] * 7 + [1] * 3),
        sample_id=np.arange(10),
        group_names=("a", "b"),
        class_names=("0", "1", "2"),
    )
    imp = group_importance(model, data, batch_size=3, exclude_classifier=False)
    w = model[0].weight.detach().double()
    for g, rows in (("a", np.arange(7)), ("b", np.arange(7, 10))):
        acc = torch.zeros_like(w)
        batches = [rows[i : i + 3] for i in range(0, len(rows), 3)]
        for idx in batches:
            x = torch.from_numpy(data.x[idx]).double()
            y = torch.from_numpy(data.y[idx])
            wv = w.clone().requires_grad_(True)
            loss = nn.functional.cross_entropy(x @ wv.T + model[0].bias.detach().double(), y)
            (gw,) = torch.autograd.grad(loss, wv)
            acc += (w.abs() * gw.abs()) ** 2
        np.testing.assert_allclose(
            imp[g]["0.weight"].numpy(), (acc / len(batches)).numpy(), rtol=1e-4, atol=1e-10
        )


def test_importance_is_zero_on_pruned_weights_and_masks_are_functional() -> None:
    model = small_cnn()
    data = make_data()
    mask = torch.rand(8, 64, generator=torch.Generator().manual_seed(0)) > 0.5
    imp_masked = group_importance(model, data, masks={"5.weight": mask})
    assert torch.all(imp_masked["minority"]["5.weight"][~mask] == 0)
    pruned = small_cnn()
    prune.custom_from_mask(pruned[5], "weight", mask)
    imp_pruned = group_importance(pruned, data)
    torch.testing.assert_close(
        imp_pruned["minority"]["5.weight"], imp_masked["minority"]["5.weight"]
    )
    torch.testing.assert_close(
        imp_pruned["majority"]["0.weight"], imp_masked["majority"]["0.weight"]
    )


def test_greedy_select_single_group_is_top_k() -> None:
    rng = np.random.default_rng(0)
    imp = rng.random((1, 50))
    keep = greedy_select(imp, 12)
    assert keep.sum() == 12
    assert set(np.flatnonzero(keep)) == set(np.argsort(-imp[0])[:12])


def test_greedy_select_keeps_group_shares() -> None:
    # group 0 values weights 0..9, group 1 values weights 10..19 (equal totals)
    imp = np.zeros((2, 40))
    imp[0, :10] = np.linspace(1, 2, 10)
    imp[1, 10:20] = np.linspace(1, 2, 10)
    imp[0, 20:] = 0.01  # many slightly useful weights for group 0 only
    keep = greedy_select(imp, 10)
    assert keep.sum() == 10
    assert keep[:10].sum() == 5 and keep[10:20].sum() == 5
    share = imp[:, keep].sum(1) / imp[:, keep].sum()
    target = imp.sum(1) / imp.sum()
    assert np.abs(share - target).max() < 0.1


def test_greedy_select_respects_candidates() -> None:
    imp = np.random.default_rng(2).random((3, 30))
    cand = np.zeros(30, dtype=bool)
    cand[::2] = True
    keep = greedy_select(imp, 7, cand)
    assert keep.sum() == 7 and not keep[~cand].any()
    with pytest.raises(ConfigError):
        greedy_select(imp, 16, cand)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9])
def test_layerwise_masks_hold_requested_sparsity(sparsity: float) -> None:
    model = small_cnn()
    masks = fairgrape_masks(model, make_data(), sparsity)
    for m in masks.values():
        assert int(m.sum()) == round((1 - sparsity) * m.numel())


def test_global_scope_total_and_exclude() -> None:
    model = small_cnn()
    masks = fairgrape_masks(
        model, make_data(), 0.8, scope="global", exclude=["0"], exclude_classifier=False
    )
    assert set(masks) == {"5.weight", "7.weight"}
    n = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(0.2 * n)


def test_prune_applies_masks_on_a_copy() -> None:
    model = small_cnn()
    data = make_data()
    pruned, record = fairgrape_prune(model, data, 0.75, iterations=2)
    assert not prune.is_pruned(model)
    assert pruned is not model
    masks = Mask.from_model(pruned)
    assert set(masks) == {"0.weight", "5.weight"}
    for name, mask in masks.items():
        mod = dict(pruned.named_modules())[name.rsplit(".", 1)[0]]
        assert torch.all(mod.weight[~mask] == 0)
        assert record.layers[name]["n_zero"] == int((~mask).sum())
    assert record.method == "fairgrape"
    assert record.sparsity == pytest.approx(0.75, abs=0.01)
    assert record.excluded == ["7.weight"]
    assert record.options["groups"] == ["majority", "minority"]
    # pruning an already pruned model further keeps the earlier zeros
    again, _ = fairgrape_prune(pruned, data, 0.9)
    for name, mask in Mask.from_model(again).items():
        assert not (mask & ~masks[name]).any()
        assert int((~mask).sum()) == round(0.9 * mask.numel())


def test_bad_inputs() -> None:
    model = small_cnn()
    data = make_data()
    with pytest.raises(ConfigError, match="sparsity"):
        fairgrape_masks(model, data, 1.0)
    with pytest.raises(ConfigError, match="scope"):
        fairgrape_masks(model, data, 0.5, scope="network")
    with pytest.warns(DeprecationWarning), pytest.raises(ParameterNotFoundError):
        prunable_parameters(model, ["5.wieght"])
    with pytest.raises(ParameterNotFoundError, match="5.wieght"):
        group_importance(model, data, parameters=["5.wieght"])
    with pytest.raises(LayerNotFoundError):
        fairgrape_masks(model, data, 0.5, exclude=["conv9"])
    empty = GroupedData(
        x=data.x,
        y=data.y,
        groups=data.groups,
        sample_id=data.sample_id,
        group_names=("majority", "minority", "nobody"),
        class_names=data.class_names,
    )
    with pytest.raises(InsufficientDataError, match="nobody"):
        group_importance(model, empty)
    with pytest.raises(InsufficientDataError, match="nobody"):
        fairgrape_masks(model, empty, 0.5)


def test_prune_method_fairgrape_plugs_into_compress_prune():
    from repsim.compress import fairgrape_prune
    from repsim.compress import prune as compress_prune
    from repsim.errors import ConfigError

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    rng = np.random.default_rng(0)
    n = 60
    data = GroupedData(
        x=rng.normal(size=(n, 6)).astype(np.float32),
        y=rng.integers(0, 3, n),
        groups=rng.integers(0, 2, n),
        sample_id=np.arange(n),
        group_names=("a", "b"),
        class_names=("0", "1", "2"),
    )
    via_prune, rec = compress_prune(model, 0.5, method="fairgrape", data=data)
    direct, rec2 = fairgrape_prune(model, data, 0.5)
    a, b = Mask.from_model(via_prune), Mask.from_model(direct)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert rec.method == "fairgrape" and rec.sparsity == pytest.approx(rec2.sparsity)
    with pytest.raises(ConfigError, match="data="):
        compress_prune(model, 0.5, method="fairgrape")
