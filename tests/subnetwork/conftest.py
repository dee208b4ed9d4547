import numpy as np
import pytest
import torch
from torch import nn

from repsim.data.base import GroupedData


class Tiny(nn.Module):
    def __init__(self, d_in=6, hidden=8, n_classes=3):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.relu = nn.ReLU()
        self.bn = nn.BatchNorm1d(hidden)
        self.classifier = nn.Linear(hidden, n_classes)

    def forward(self, x):
        return self.classifier(self.bn(self.relu(self.fc1(x))))


def make_data(n=120, seed=0, split="train"):
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


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    m = Tiny()
    m.eval()
    return m


@pytest.fixture
def toy():
    return make_data(120, 0, "train"), make_data(60, 1, "val")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest (and most reproducibly) on one thread on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
