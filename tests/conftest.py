"""Shared test fixtures: the shared data folder, a quiet single-thread torch, seeded RNGs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from repsim.data import load_dataset
from repsim.models import build_model

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Two cores, and pytest-xdist may run two workers: keep torch to one thread per process.
torch.set_num_threads(1)
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ``../shared/data`` folder beside the repository (tests and CI data)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def fashion_dir(shared_data: Path) -> Path:
    """Folder with the Fashion-MNIST IDX files."""
    return shared_data / "fashion-mnist"


@pytest.fixture(scope="session")
def digits():
    """The digits-imbalanced dataset (minority classes 3, 5, 8)."""
    return load_dataset("digits-imbalanced")


@pytest.fixture
def cnn():
    """A seeded SmallCNN for 1x8x8 inputs."""
    return build_model("cnn", input_shape=(1, 8, 8), n_classes=10, seed=0)


@pytest.fixture
def mlp():
    """A seeded two-hidden-layer MLP for 1x8x8 inputs."""
    return build_model("mlp", input_shape=(1, 8, 8), n_classes=10, seed=1, hidden=(32, 16))
