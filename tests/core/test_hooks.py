"""Temporary hooks, frozen parameters and eval mode are undone however a block is left."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from repsim._core.hooks import attach_hooks, evaluating, frozen
from repsim.errors import LayerNotFoundError


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    layers = [("fc1", nn.Linear(3, 4)), ("relu", nn.ReLU()), ("drop", nn.Dropout(0.5))]
    return nn.Sequential(OrderedDict([*layers, ("fc2", nn.Linear(4, 2))]))


def _n_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_run_and_are_removed_on_exit():
    model = _model()
    seen: list[str] = []
    with attach_hooks(
        model,
        forward={"fc1": lambda m, a, o: seen.append("out1")},
        pre=[("fc2", lambda m, a: seen.append("in2"))],
    ) as hooks:
        assert len(hooks) == 2 and _n_hooks(model) == 2
        model(torch.zeros(1, 3))
    assert seen == ["out1", "in2"]
    assert _n_hooks(model) == 0
    hooks.remove()  # a second removal is harmless


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_only_own_hooks_are_removed_on_an_exception(error):
    model = _model()
    theirs = model.fc1.register_forward_hook(lambda *a: None)

    def boom(*args):
        raise error("stop")

    with pytest.raises(error, match="stop"):
        with attach_hooks(model, {"fc1": lambda *a: None, "relu": boom}):
            model(torch.zeros(1, 3))
    assert _n_hooks(model) == 1  # someone else's hook stays
    theirs.remove()


def test_unknown_module_registers_nothing():
    model = _model()
    with pytest.raises(LayerNotFoundError, match=r"The teacher has no layer 'fc3'\. Did you"):
        attach_hooks(model, {"fc1": lambda *a: None, "fc3": lambda *a: None}, what="teacher")
    assert _n_hooks(model) == 0


def test_pre_hooks_with_kwargs():
    model = _model()
    got = []
    with attach_hooks(model, pre={"fc1": lambda m, a, k: got.append(k)}, with_kwargs=True):
        model(torch.zeros(1, 3))
    assert got == [{}]


def test_frozen_restores_each_flag_on_an_exception():
    model = _model()
    model.fc2.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    with pytest.raises(ValueError, match="inside"):
        with frozen(model):
            assert not any(p.requires_grad for p in model.parameters())
            raise ValueError("inside")
    assert [p.requires_grad for p in model.parameters()] == flags
    with frozen([model.fc1.weight]):
        assert not model.fc1.weight.requires_grad and model.fc1.bias.requires_grad
    assert model.fc1.weight.requires_grad


def test_evaluating_restores_every_module_mode_on_an_exception():
    model = _model().train()
    model.drop.eval()  # a submodule whose mode differs from the root's
    with pytest.raises(KeyboardInterrupt):
        with evaluating(model, torch.device("cpu")):
            assert not any(m.training for m in model.modules())
            raise KeyboardInterrupt
    assert [m.training for m in model.modules()] == [True, True, True, False, True]
