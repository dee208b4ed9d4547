"""captum layer attributions per group, pruned units and attribution shares."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from repsim.data.base import GroupedData
from repsim.errors import ConfigError, LayerNotFoundError, MaskError
from repsim.saliency import attribution_share, group_layer_attributions, pruned_units


def linear_pair() -> tuple[nn.Module, GroupedData]:
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("hidden", nn.Linear(4, 3))
    model.add_module("out", nn.Linear(3, 2))
    rng = np.random.default_rng(0)
    data = GroupedData(
        x=rng.normal(size=(12, 4)).astype(np.float32),
        y=rng.integers(0, 2, size=12),
        groups=np.arange(12) % 2,
        sample_id=np.arange(12),
        group_names=("even", "odd"),
        class_names=("0", "1"),
    )
    return model, data


@pytest.mark.parametrize("method", ["integrated_gradients", "conductance"])
def test_linear_network_attribution_is_exact(method: str) -> None:
    # F_t = out_w[t] . h + b with h = hidden(x): the attribution of h_j with a zero input
    # baseline is (h_j(x) - h_j(0)) * out_w[t, j] for both methods.
    model, data = linear_pair()
    attr = group_layer_attributions(
        model,
        data,
        "hidden",
        method=method,
        n_steps=8,
        batch_size=5,
        integration="riemann_trapezoid" if method == "conductance" else "gausslegendre",
    )
    x = torch.from_numpy(data.x)
    with torch.no_grad():
        h = model.hidden(x) - model.hidden(torch.zeros_like(x))
        w = model.out.weight[torch.from_numpy(data.y)]
    per = (h * w).abs().double().numpy()
    for group, rows in (
        ("even", np.arange(0, 12, 2)),
        ("odd", np.arange(1, 12, 2)),
        ("overall", np.arange(12)),
    ):
        np.testing.assert_allclose(attr[group], per[rows].mean(0), rtol=1e-4, atol=1e-6)


def test_conv_units_are_channels_and_targets() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 2))
    rng = np.random.default_rng(0)
    data = GroupedData(
        x=rng.random((6, 1, 6, 6)).astype(np.float32),
        y=rng.integers(0, 2, size=6),
        groups=np.zeros(6, dtype=np.int64),
        sample_id=np.arange(6),
        group_names=("all",),
        class_names=("0", "1"),
    )
    attr = group_layer_attributions(model, data, "0", target="prediction", n_steps=4)
    assert attr["all"].shape == (3,)
    assert np.all(attr["all"] >= 0)
    with pytest.raises(LayerNotFoundError, match="no layer"):
        group_layer_attributions(model, data, "conv1")
    with pytest.raises(ConfigError):
        group_layer_attributions(model, data, "0", method="saliency")


def test_pruned_units_and_share() -> None:
    mask = torch.ones(4, 2, 3, 3, dtype=torch.bool)
    mask[1] = False
    mask[2, :, :2] = False  # 12 of 18 removed
    assert pruned_units(mask).tolist() == [False, True, False, False]
    assert pruned_units(mask, threshold=0.6).tolist() == [False, True, True, False]
    with pytest.raises(ConfigError):
        pruned_units(mask, threshold=0)
    with pytest.raises(MaskError):
        pruned_units(torch.ones(3, dtype=torch.bool))
    shares = attribution_share(
        {"a": np.array([1.0, 3.0, 0.0, 4.0]), "z": np.zeros(4)}, pruned_units(mask)
    )
    assert shares["a"] == pytest.approx(3 / 8)
    assert math.isnan(shares["z"])
    with pytest.raises(MaskError):
        attribution_share({"a": np.ones(3)}, pruned_units(mask))


def test_old_by_spelling_warns_and_gives_the_same_attributions() -> None:
    model, data = linear_pair()
    codes = np.arange(12) % 3
    new = group_layer_attributions(model, data, "hidden", groups=codes, n_steps=4)
    with pytest.warns(DeprecationWarning, match=r"group_layer_attributions\(by=\.\.\.\)"):
        old = group_layer_attributions(model, data, "hidden", by=codes, n_steps=4)
    assert list(old) == list(new) == ["0", "1", "2", "overall"]
    for group in new:
        np.testing.assert_array_equal(old[group], new[group])
