"""Hooks, train/eval flags and frozen parameters are restored when a stage fails midway."""

import pytest
import torch
from torch import nn

from repsim.data import load_dataset


class Boom(RuntimeError):
    pass


class Flaky(nn.Module):
    """A small CNN whose forward raises on call ``fail_at`` (after some batches succeeded)."""

    def __init__(self, fail_at=2):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 64, 10)
        self.calls, self.fail_at = 0, fail_at

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise Boom("fails midway")
        h = torch.relu(self.bn(self.conv(x.reshape(-1, 1, 8, 8))))
        return self.fc(h.reshape(len(h), -1))


def _state(model):
    return (
        {n: m.training for n, m in model.named_modules()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
    )


@pytest.fixture
def data():
    return load_dataset("digits").test.subset(slice(0, 96))


@pytest.fixture
def model():
    m = Flaky()
    m.train()
    m.bn.eval()  # mixed modes: each module's own flag must come back
    m.fc.bias.requires_grad_(False)
    return m


def test_weight_saliency_restores_the_model_when_it_fails(model, data):
    from repsim.saliency import weight_saliency

    before = _state(model)
    with pytest.raises(Boom):
        weight_saliency(model, data, batch_size=32, progress=False)
    assert model.calls >= 2 and _state(model) == before


def test_attributions_restore_the_model_when_they_fail(model, data):
    pytest.importorskip("captum")
    from repsim.saliency import group_layer_attributions

    before = _state(model)
    with pytest.raises(Boom):
        group_layer_attributions(model, data, "conv", n_steps=4, batch_size=32, progress=False)
    assert _state(model) == before


def test_capture_restores_the_model_when_it_fails(model, data):
    from repsim.capture import record

    before = _state(model)
    with pytest.raises(Boom):
        record(model, data, ["conv", "bn"], batch_size=32, progress=False)
    assert _state(model) == before
