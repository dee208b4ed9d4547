"""Issue 16 item 4: capture reads the data once (a cache hit: only what the fingerprint needs)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from repsim.capture import ActivationStore, record

record_module = importlib.import_module("repsim.capture.record")


class Counting(Dataset):
    """A map-style dataset without a cheap identity, counting every item it serves."""

    def __init__(self, n: int = 70) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 6, generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g)
        self.reads = 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        self.reads += 1
        return self.x[i], self.y[i]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(6, 8)
        self.out = nn.Linear(8, 3)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.out(torch.relu(self.fc(x)))


def test_a_miss_reads_the_data_once_and_a_hit_runs_no_forward(tmp_path):
    data, model = Counting(), Net()
    store = ActivationStore(tmp_path / "acts")
    cap = record(model, data, ["fc"], store=store, batch_size=16, progress=False)
    assert data.reads == len(data)  # hashed and captured from one read
    assert model.calls == 5  # ceil(70 / 16) batches, one forward each
    got = np.asarray(cap["fc"][...])
    np.testing.assert_allclose(got, model.fc(data.x).detach().numpy(), rtol=1e-5, atol=1e-6)
    data.reads = model.calls = 0
    again = record(model, data, ["fc"], store=store, batch_size=16, progress=False)
    assert data.reads == len(data) and model.calls == 0  # the fingerprint only
    assert again.data_fingerprint == cap.data_fingerprint


def test_past_the_replay_budget_the_forward_reads_again(tmp_path, monkeypatch):
    monkeypatch.setattr(record_module, "REPLAY_BYTES", 10)
    data, model = Counting(), Net()
    record(model, data, ["fc"], store=tmp_path / "acts", batch_size=16, progress=False)
    assert data.reads == 2 * len(data)


@pytest.mark.parametrize("batch_size", [7, 64])
def test_the_fingerprint_of_one_read_is_data_fingerprint(batch_size):
    data = Counting()
    src = record_module._source(data, batch_size)
    fp = record_module.fingerprint_source(src)
    assert fp == record_module.data_fingerprint(Counting(), batch_size)
    data.reads = 0
    replayed = [x for x, _, _ in src.batches()]
    assert data.reads == 0 and torch.equal(torch.cat(replayed), data.x)
