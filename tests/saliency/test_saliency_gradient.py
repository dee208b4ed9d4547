"""SalUn weight saliency and saliency masks against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from repsim.data.base import GroupedData
from repsim.errors import ConfigError, InsufficientDataError, LayerNotFoundError
from repsim.saliency import ParameterNotFoundError, saliency_mask, weight_saliency


def make_data(n: int = 11, d: int = 3, k: int = 2, seed: int = 0, n_groups: int = 2) -> GroupedData:
    rng = np.random.default_rng(seed)
    return GroupedData(
        x=rng.normal(size=(n, d)).astype(np.float32),
        y=rng.integers(0, k, size=n),
        groups=np.arange(n) % n_groups,
        sample_id=np.arange(n, dtype=np.int64),
        group_names=tuple(f"g{i}" for i in range(n_groups)),
        class_names=tuple(str(i) for i in range(k)),
    )


def linear_model(d: int = 3, k: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, k))


def hand_saliency(
    model: nn.Module, data: GroupedData, rows: np.ndarray, batch_size: int, reduce: str
) -> tuple[np.ndarray, np.ndarray]:
    """Batch-mean CE gradient of a linear softmax model, in numpy float64."""
    w = model[0].weight.detach().double().numpy()
    b = model[0].bias.detach().double().numpy()
    gw_acc, gb_acc = np.zeros_like(w), np.zeros_like(b)
    for start in range(0, len(rows), batch_size):
        idx = rows[start : start + batch_size]
        x = data.x[idx].astype(np.float64)
        z = x @ w.T + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        onehot = np.eye(w.shape[0])[data.y[idx]]
        err = (p - onehot) / len(idx)
        gw, gb = err.T @ x, err.sum(0)
        if reduce == "sum_then_abs":
            gw_acc, gb_acc = gw_acc + gw, gb_acc + gb
        else:
            gw_acc, gb_acc = gw_acc + np.abs(gw), gb_acc + np.abs(gb)
    return np.abs(gw_acc), np.abs(gb_acc)


@pytest.mark.parametrize("reduce", ["sum_then_abs", "abs_then_sum"])
def test_saliency_equals_hand_computation(reduce: str) -> None:
    data = make_data()
    model = linear_model()
    sal = weight_saliency(model, data, reduce=reduce, batch_size=2)
    assert list(sal) == ["g0", "g1", "overall"]
    for group, rows in (
        ("g0", np.arange(0, 11, 2)),
        ("g1", np.arange(1, 11, 2)),
        ("overall", np.arange(11)),
    ):
        gw, gb = hand_saliency(model, data, rows, 2, reduce)
        np.testing.assert_allclose(sal[group]["0.weight"].numpy(), gw, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(sal[group]["0.bias"].numpy(), gb, rtol=1e-5, atol=1e-7)


def test_sum_then_abs_is_at_most_abs_then_sum() -> None:
    data = make_data(n=40, seed=3)
    model = linear_model(seed=3)
    a = weight_saliency(model, data, reduce="sum_then_abs", batch_size=4)
    b = weight_saliency(model, data, reduce="abs_then_sum", batch_size=4)
    for g in a:
        for n in a[g]:
            assert torch.all(a[g][n] <= b[g][n] + 1e-6)


def test_explicit_codes_and_attribute_grouping() -> None:
    data = make_data(n=12)
    model = linear_model()
    codes = np.array([5, 7] * 6)
    by_codes = weight_saliency(model, data, groups=codes, batch_size=3)
    by_data = weight_saliency(model, data, batch_size=3)
    assert list(by_codes) == ["5", "7", "overall"]
    torch.testing.assert_close(by_codes["5"]["0.weight"], by_data["g0"]["0.weight"])
    by_attr = weight_saliency(model, data, groups="group", batch_size=3)
    torch.testing.assert_close(by_attr["g1"]["0.bias"], by_data["g1"]["0.bias"])


def test_model_state_untouched_and_eval_mode_used() -> None:
    data = make_data(n=20, d=4, k=3)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, 3))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    s1 = weight_saliency(model, data, batch_size=5)
    s2 = weight_saliency(model, data, batch_size=5)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    # dropout off (eval mode): deterministic, and equal to an explicit eval-mode run
    torch.testing.assert_close(s1["overall"]["0.weight"], s2["overall"]["0.weight"])
    model.eval()
    s3 = weight_saliency(model, data, batch_size=5)
    torch.testing.assert_close(s1["g0"]["3.weight"], s3["g0"]["3.weight"])


def test_pruned_model_reports_user_facing_names() -> None:
    data = make_data(n=10)
    model = linear_model()
    dense = weight_saliency(model, data, batch_size=4)
    mask = torch.tensor([[1, 0, 1], [0, 1, 1]], dtype=torch.bool)
    prune.custom_from_mask(model[0], "weight", mask)
    sal = weight_saliency(model, data, batch_size=4)
    assert set(sal["overall"]) == {"0.weight", "0.bias"}
    w = sal["overall"]["0.weight"]
    assert torch.all(w[~mask] == 0)
    # gradient of weight_orig = mask * gradient of the effective weight; the effective weight
    # differs from the dense one, so compare with a hand computation on the masked model
    dense_masked = linear_model()
    with torch.no_grad():
        dense_masked[0].weight.mul_(mask)
    ref = weight_saliency(dense_masked, data, batch_size=4)["overall"]["0.weight"] * mask
    torch.testing.assert_close(w, ref)
    assert dense["overall"]["0.weight"].shape == w.shape


def test_restrict_parameters_and_unknown_name() -> None:
    data = make_data()
    model = linear_model()
    sal = weight_saliency(model, data, parameters=["0.weight"])
    assert set(sal["g0"]) == {"0.weight"}
    with pytest.raises(ParameterNotFoundError, match="0.wieght"):
        weight_saliency(model, data, parameters=["0.wieght"])
    with pytest.raises(LayerNotFoundError, match="Did you mean"):
        weight_saliency(model, data, parameters=["0.wieght"])


def test_group_with_no_samples_is_an_error() -> None:
    data = make_data(n=10)
    empty = GroupedData(
        x=data.x,
        y=data.y,
        groups=data.groups,
        sample_id=data.sample_id,
        group_names=("g0", "g1", "nobody"),
        class_names=data.class_names,
    )
    with pytest.raises(InsufficientDataError, match="'nobody' has no samples"):
        weight_saliency(linear_model(), empty)


def test_bad_reduce_and_batch_size() -> None:
    with pytest.raises(ConfigError, match="reduce"):
        weight_saliency(linear_model(), make_data(), reduce="mean")
    with pytest.raises(ConfigError, match="batch_size"):
        weight_saliency(linear_model(), make_data(), batch_size=0)


@pytest.mark.parametrize("fraction", [0.5, 0.1, 0.37, 1.0, 1e-3])
@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_mask_holds_requested_fraction(fraction: float, scope: str) -> None:
    gen = torch.Generator().manual_seed(0)
    sal = {
        "a": torch.rand(10, 20, generator=gen),
        "b": torch.rand(7, generator=gen),
        "c": torch.rand(3, 3, 3, generator=gen) * 10,
    }
    mask = saliency_mask(sal, fraction, scope=scope)
    assert {k: v.shape for k, v in mask.items()} == {k: v.shape for k, v in sal.items()}
    assert all(v.dtype == torch.bool for v in mask.values())
    if scope == "global":
        n = sum(v.numel() for v in sal.values())
        assert sum(int(v.sum()) for v in mask.values()) == round(fraction * n)
        # every selected score is >= every unselected score
        sel = torch.cat([sal[k][mask[k]] for k in sal])
        rest = torch.cat([sal[k][~mask[k]] for k in sal])
        if len(rest) and len(sel):
            assert sel.min() >= rest.max()
    else:
        for k, v in sal.items():
            assert int(mask[k].sum()) == round(fraction * v.numel())
            if 0 < mask[k].sum() < v.numel():
                assert v[mask[k]].min() >= v[~mask[k]].max()


def test_global_mask_favours_large_parameters() -> None:
    sal = {"small": torch.full((10,), 0.1), "big": torch.full((10,), 5.0)}
    mask = saliency_mask(sal, 0.5)
    assert mask["big"].all() and not mask["small"].any()
    lw = saliency_mask(sal, 0.5, scope="layerwise")
    assert int(lw["small"].sum()) == 5


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, math.nan, "half"])
def test_mask_fraction_outside_unit_interval(fraction: object) -> None:
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        saliency_mask({"a": torch.rand(4)}, fraction)  # type: ignore[arg-type]


def test_mask_rejects_map_of_maps_and_unknown_parameter() -> None:
    with pytest.raises(ConfigError, match="one group's map"):
        saliency_mask({"g0": {"a": torch.rand(3)}}, 0.5)  # type: ignore[dict-item]
    with pytest.raises(ParameterNotFoundError):
        saliency_mask({"a": torch.rand(3)}, 0.5, parameters=["b"])


def test_custom_loss_callable() -> None:
    data = make_data()
    model = linear_model()
    base = weight_saliency(model, data, batch_size=4)

    def double_ce(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 2 * nn.functional.cross_entropy(m(x), y)

    doubled = weight_saliency(model, data, loss=double_ce, batch_size=4)
    torch.testing.assert_close(doubled["g1"]["0.weight"], 2 * base["g1"]["0.weight"])
    with pytest.raises(ConfigError, match="loss"):
        weight_saliency(model, data, loss="mse")


def test_old_by_spelling_warns_and_gives_the_same_maps() -> None:
    from repsim.saliency.gradient import resolve_groups

    data = make_data(n=12)
    model = linear_model()
    codes = np.array([5, 7] * 6)
    new = weight_saliency(model, data, groups=codes, batch_size=3)
    with pytest.warns(DeprecationWarning, match=r"weight_saliency\(by=\.\.\.\)"):
        old = weight_saliency(model, data, by=codes, batch_size=3)
    for group in new:
        for name in new[group]:
            torch.testing.assert_close(old[group][name], new[group][name], rtol=0, atol=0)
    with pytest.warns(DeprecationWarning, match=r"resolve_groups\(by=\.\.\.\)"):
        rows = resolve_groups(data, by=codes)
    assert {k: v.tolist() for k, v in rows.items()} == {
        k: v.tolist() for k, v in resolve_groups(data, codes).items()
    }
