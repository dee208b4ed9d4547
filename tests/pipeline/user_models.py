"""A user's own model builder and dataset function, named by import path in study configs."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from repsim.data import GroupedData, as_grouped


class UserMLP(nn.Module):
    """A two-layer MLP on flat features, as a user would write it."""

    def __init__(self, n_features: int, n_classes: int, hidden: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_features, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x.flatten(1))))


def make_mlp(input_shape: list[int], n_classes: int, hidden: int = 16) -> nn.Module:
    """Builder: takes the data's ``input_shape`` and ``n_classes`` (filled in by repsim)."""
    return UserMLP(int(np.prod(input_shape)), n_classes, hidden)


def arrays(n: int = 240, seed: int = 0) -> dict[str, np.ndarray]:
    """A grouped task: label = sign of a feature sum; group 'b' (25%) has noisier features."""
    rng = np.random.default_rng(seed)
    g = np.where(rng.random(n) < 0.25, "b", "a")
    x = rng.normal(size=(n, 6)).astype(np.float32)
    x[g == "b"] += rng.normal(scale=1.5, size=((g == "b").sum(), 6)).astype(np.float32)
    y = (x[:, :3].sum(1) > 0).astype(np.int64)
    return {"x": x, "y": y, "groups": g}


def load_task(n: int = 240, seed: int = 0) -> GroupedData:
    """Dataset function: one GroupedData (repsim splits it)."""
    a = arrays(n, seed)
    return as_grouped(a["x"], a["y"], a["groups"], name="user-task")


def load_splits(n: int = 240) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Dataset function: a mapping of splits, each anything as_grouped takes."""
    a = arrays(n)
    half = n // 2
    return {
        "train": (a["x"][:half], a["y"][:half], a["groups"][:half]),
        "test": (a["x"][half:], a["y"][half:], a["groups"][half:]),
    }
