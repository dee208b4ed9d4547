"""Shared test helpers: toy models and toy grouped data (importable from every test package).

Models live in an importable module (not a conftest) so that subprocess workers of the kill and
resume tests build bit-identical models and fingerprints.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from torch import nn

from repsim.data.base import GroupedData


class ResidualBlock(nn.Module):
    """conv -> bn -> in-place ReLU -> conv, then ``out += identity`` and an in-place ReLU."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        out += x
        return self.relu2(out)


class TinyResNet(nn.Module):
    """Stem conv, two residual blocks, global pool, linear head; 1x8x8 inputs."""

    def __init__(self, c: int = 4, n_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1)
        self.block1 = ResidualBlock(c)
        self.block2 = ResidualBlock(c)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, 1, 8, 8)
        out = self.block2(self.block1(self.stem(x)))
        return self.fc(self.flatten(self.pool(out)))


class SlowTinyResNet(TinyResNet):
    """TinyResNet that sleeps ``$REPSIM_TEST_SLEEP`` seconds per batch (same weights/state)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delay = float(os.environ.get("REPSIM_TEST_SLEEP", "0"))
        if delay:
            time.sleep(delay)
        return super().forward(x)


def tiny_resnet(seed: int = 0, slow: bool = False) -> TinyResNet:
    """A TinyResNet with seeded weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = (SlowTinyResNet if slow else TinyResNet)()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


class Tiny(nn.Module):
    """Linear -> ReLU -> BatchNorm -> Linear classifier on 6 features."""

    def __init__(self, d_in=6, hidden=8, n_classes=3):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.relu = nn.ReLU()
        self.bn = nn.BatchNorm1d(hidden)
        self.classifier = nn.Linear(hidden, n_classes)

    def forward(self, x):
        return self.classifier(self.bn(self.relu(self.fc1(x))))


def make_data(n=120, seed=0, split="train"):
    """Toy 3-class data whose ``colour`` attribute agrees with the label 90% of the time."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    bias = np.where(rng.random(n) < 0.9, y, rng.integers(0, 3, n))
    x = rng.normal(size=(n, 6)).astype(np.float32)
    x[:, 0] += y
    x[:, 1] += 2 * bias
    return GroupedData(
        x=x,
        y=y,
        groups=(bias != y).astype(np.int64),
        sample_id=np.arange(n) + 1000 * seed,
        group_names=("aligned", "conflicting"),
        class_names=("a", "b", "c"),
        group_attribute="bias",
        attributes={"colour": bias},
        attribute_names={"colour": ("r", "g", "b")},
        name="toy",
        split=split,
    )
