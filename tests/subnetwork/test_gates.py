import numpy as np
import pytest
import torch
from torch import nn

from repsim.errors import ConfigError, ModelError
from repsim.subnetwork.gates import (
    gate,
    gate_weights,
    gated_forward,
    hard_mask,
    init_gates,
    prunable_parameters,
)


def test_gate_values_match_formula():
    m = torch.linspace(-5, 5, 41, dtype=torch.float64)
    for tau in (2.0, 1.0, 0.1):
        expected = np.minimum(1.0, 2.0 / (1.0 + np.exp(-m.numpy() / tau)))
        np.testing.assert_allclose(gate(m, tau).numpy(), expected, rtol=1e-12)
    # m >= 0 keeps the weight whole
    assert torch.all(gate(m[m >= 0], 0.3) == 1.0)


def test_gate_gradient_is_straight_through():
    m = torch.tensor([-2.0, -0.5, 0.0, 0.7, 3.0], dtype=torch.float64, requires_grad=True)
    tau = 0.5
    gate(m, tau).sum().backward()
    # derivative of the unclamped 2 sigmoid(m / tau), computed independently by autograd
    m2 = m.detach().clone().requires_grad_(True)
    (2 * torch.sigmoid(m2 / tau)).sum().backward()
    np.testing.assert_allclose(m.grad.numpy(), m2.grad.numpy(), rtol=1e-12)
    assert torch.all(m.grad > 0)  # non-zero even where the clamp is active (m >= 0)
    # finite difference below zero (no clamp there), so STE agrees with the true derivative
    h = 1e-6
    x = torch.tensor([-1.3], dtype=torch.float64)
    fd = (gate(x + h, tau) - gate(x - h, tau)) / (2 * h)
    x.requires_grad_(True)
    gate(x, tau).backward()
    np.testing.assert_allclose(x.grad.numpy(), fd.numpy(), rtol=1e-6)


def test_gate_anneals_to_binary():
    m = torch.tensor([-1e-2, -0.5, 0.0, 1e-3, 2.0], dtype=torch.float64)
    g = gate(m, 1e-4)
    np.testing.assert_allclose(g.numpy(), (m >= 0).double().numpy(), atol=1e-20)
    with pytest.raises(ConfigError, match="tau"):
        gate(m, 0.0)


def test_gate_weights_skip_bias_norm_and_classifier(tiny_model):
    names = list(gate_weights(tiny_model))
    assert names == ["fc1.weight"]
    assert set(gate_weights(tiny_model, exclude=[])) == {"fc1.weight", "classifier.weight"}


def test_no_prunable_layer_is_a_clear_error():
    with pytest.raises(ModelError, match="no prunable layer"):
        gate_weights(nn.Sequential(nn.Linear(4, 2)))
    with pytest.raises(ModelError, match="no nn.Linear"):
        gate_weights(nn.Sequential(nn.ReLU()))


@pytest.mark.parametrize("granularity", ["weight", "channel"])
def test_gated_forward_matches_manually_masked_model(tiny_model, granularity):
    torch.manual_seed(1)
    weights = gate_weights(tiny_model)
    gates = init_gates(weights, granularity)
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    with torch.no_grad():
        for m in gates.values():
            m.copy_(torch.randn_like(m))
    x = torch.randn(5, 6)
    out, feats = gated_forward(tiny_model, x, gates, 0.3, bottleneck="classifier")
    manual = Tiny_copy = type(tiny_model)()
    manual.load_state_dict(before)
    manual.eval()
    g = gate(gates["fc1.weight"].detach(), 0.3)
    with torch.no_grad():
        manual.fc1.weight.mul_(g)
        ref = manual(x)
        ref_feats = manual.bn(manual.relu(manual.fc1(x)))
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(feats, ref_feats)
    # the model itself is untouched and hooks are gone
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, before[k])
    assert not tiny_model.classifier._forward_pre_hooks
    assert Tiny_copy is manual
    mask = hard_mask(gates, weights)
    assert mask["fc1.weight"].shape == weights["fc1.weight"].shape
    assert mask["fc1.weight"].dtype == torch.bool


def test_hook_removed_when_forward_raises(tiny_model):
    gates = init_gates(gate_weights(tiny_model))
    with pytest.raises(RuntimeError):
        gated_forward(tiny_model, torch.randn(3, 5), gates, 1.0, bottleneck="classifier")
    assert not tiny_model.classifier._forward_pre_hooks


def test_init_gates_keep_full_network(tiny_model):
    weights = gate_weights(tiny_model)
    gates = init_gates(weights, "channel")
    assert gates["fc1.weight"].shape == (8, 1)
    x = torch.randn(4, 6)
    out, _ = gated_forward(tiny_model, x, gates, 1.0)
    with torch.no_grad():
        torch.testing.assert_close(out, tiny_model(x))
    with pytest.raises(ConfigError):
        init_gates(weights, "channel", init=0.0)
    with pytest.raises(ConfigError, match="granularity"):
        init_gates(weights, "block")


def test_gate_weights_are_the_compress_selection(tiny_model):
    from repsim.compress import prunable_parameters as compress_prunable

    for exclude in (None, [], ["fc1"]):
        view = compress_prunable(tiny_model, exclude=exclude, exclude_classifier=exclude is None)
        got = gate_weights(tiny_model, exclude=exclude)
        assert list(got) == view.names
        assert all(got[k] is v for k, v in view.weights.items())


def test_old_prunable_parameters_name_warns_and_still_works(tiny_model):
    import repsim.subnetwork

    with pytest.warns(DeprecationWarning, match="gate_weights"):
        old = prunable_parameters(tiny_model)
    assert list(old) == ["fc1.weight"]
    with pytest.warns(DeprecationWarning), pytest.raises(ModelError, match="no prunable layer"):
        repsim.subnetwork.prunable_parameters(nn.Sequential(nn.Linear(4, 2)))
