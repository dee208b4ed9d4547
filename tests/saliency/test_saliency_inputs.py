"""Saliency, curvature, attributions and FairGRAPE on containers, token ids and dict inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from repsim.compress import fairgrape_prune
from repsim.data import as_grouped
from repsim.errors import ConfigError, DataError
from repsim.saliency import group_gradient_norm, group_layer_attributions, weight_saliency
from tests.models import tiny_hf


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    g = (np.arange(40) % 3 == 0).astype(np.int64)
    return x, y, g


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def test_weight_saliency_accepts_tensor_dataset_loader_and_arrays(arrays):
    x, y, g = arrays
    model = _mlp()
    ref = weight_saliency(model, as_grouped(x, y, g), batch_size=8)
    tds = TensorDataset(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(g))
    for data in (tds, DataLoader(tds, batch_size=16), (x, y, g)):
        got = weight_saliency(model, data, batch_size=8)
        assert list(got) == ["0", "1", "overall"]
        for group in got:
            for name in got[group]:
                assert torch.equal(got[group][name], ref[group][name])
    # groups given separately: the dataset needs none
    sep = weight_saliency(
        model, TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), groups=g, batch_size=8
    )
    assert torch.equal(sep["1"]["0.weight"], ref["1"]["0.weight"])
    # direct: |sum over batches of the batch-mean CE gradient| for group "1"
    rows = np.flatnonzero(g == 1)
    acc = torch.zeros_like(model[0].weight, dtype=torch.float64)
    for start in range(0, len(rows), 8):
        idx = rows[start : start + 8]
        model.zero_grad()
        F.cross_entropy(model(torch.from_numpy(x[idx])), torch.from_numpy(y[idx])).backward()
        acc += model[0].weight.grad.double()
    torch.testing.assert_close(ref["1"]["0.weight"], acc.abs().float())


def test_bad_container_names_what_is_expected():
    with pytest.raises(DataError, match="expected a GroupedData, a torch Dataset"):
        weight_saliency(_mlp(), {"a", "b"})


def test_weight_saliency_on_bert_dict_inputs_matches_manual_gradient():
    bert = tiny_hf.tiny_bert(num_labels=2)
    task = as_grouped(tiny_hf.token_task(n=24))
    sal = weight_saliency(bert, task, batch_size=12, parameters=["classifier.weight"])
    rows = np.flatnonzero(task.groups == 0)
    acc = torch.zeros_like(bert.classifier.weight, dtype=torch.float64)
    for start in range(0, len(rows), 12):
        idx = rows[start : start + 12]
        x = task.inputs(idx)
        bert.zero_grad()
        loss = F.cross_entropy(bert(**x).logits, torch.from_numpy(task.y[idx]))
        loss.backward()
        acc += bert.classifier.weight.grad.double()
    torch.testing.assert_close(
        sal["0"]["classifier.weight"], acc.abs().float(), rtol=1e-4, atol=1e-7
    )
    assert (
        bert.classifier.weight.grad is not None
    )  # our manual pass; repsim left no grads of its own


def test_gradient_norm_on_token_ids():
    task = tiny_hf.token_task(n=30)
    net = tiny_hf.TokenNet()
    tds = TensorDataset(
        torch.from_numpy(task["input_ids"]),
        torch.from_numpy(task["label"]),
        torch.from_numpy(task["group"]),
    )
    norms = group_gradient_norm(net, tds, batch_size=7)
    net.zero_grad()
    F.cross_entropy(
        net(torch.from_numpy(task["input_ids"])), torch.from_numpy(task["label"])
    ).backward()
    direct = float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in net.parameters())))
    assert norms["overall"] == pytest.approx(direct, rel=1e-5)


def test_attributions_with_dict_inputs_sum_over_real_tokens():
    net = tiny_hf.dict_net()
    task = as_grouped(tiny_hf.token_task(n=16))
    out = group_layer_attributions(net, task, "hidden", n_steps=8, batch_size=8)
    assert set(out) == {"0", "1", "overall"}
    assert out["overall"].shape == (12,) and np.all(np.isfinite(out["overall"]))
    emb = group_layer_attributions(net, task, "emb", n_steps=8, batch_size=8)
    assert emb["overall"].shape == (12,)  # [B, T, d] summed over non-pad tokens -> d units
    with pytest.raises(ConfigError, match="conductance interpolates the inputs"):
        group_layer_attributions(net, task, "hidden", method="conductance", n_steps=4)


def test_fairgrape_on_dict_inputs():
    net = tiny_hf.dict_net()
    task = as_grouped(tiny_hf.token_task(n=24))
    pruned, rec = fairgrape_prune(net, task, 0.5, batch_size=12)
    assert rec.method == "fairgrape" and rec.sparsity == pytest.approx(0.5, abs=0.02)
    assert rec.options["groups"] == ["0", "1"]
