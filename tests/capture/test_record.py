import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from repsim.capture import Capture, data_fingerprint, record, record_reductions
from repsim.capture.hooks import hooks
from repsim.data import load_dataset
from repsim.errors import (
    ConfigError,
    DataError,
    LayerNotFoundError,
    NonFiniteError,
    SampleOrderError,
    ShapeError,
)
from tests.helpers import tiny_resnet


@pytest.fixture(scope="module")
def data():
    return load_dataset("digits").test.subset(slice(0, 120))


def manual(model, x):
    """Independent forward pass (no hooks, no in-place ops) returning named activations."""
    x = torch.as_tensor(x).reshape(-1, 1, 8, 8)
    out = {}
    with torch.no_grad():
        s = model.stem(x)
        out["stem"] = s
        h = s
        for name in ("block1", "block2"):
            b = getattr(model, name)
            c1 = b.conv1(h)
            bn = b.bn1(c1)
            out[f"{name}.bn1"] = bn
            r = F.relu(bn)
            c2 = b.conv2(r)
            out[f"{name}.conv2"] = c2
            h = F.relu(c2 + h)
            out[name] = h
        pooled = h.mean(dim=(2, 3))
        out["fc:input"] = pooled
        out["fc"] = model.fc(pooled)
    return out


@pytest.mark.parametrize("reduction", ["flatten", "mean", "max"])
def test_capture_equals_manual_forward(data, reduction):
    model = tiny_resnet()
    layers = ["stem", "block1.bn1", "block1.conv2", "block1", "block2", "fc:input"]
    cap = record(model, data, layers, reduction=reduction, batch_size=32, progress=False)
    ref = manual(model, data.x)
    for layer in layers:
        t = ref[layer]
        if t.ndim == 4:
            t = {
                "flatten": t.reshape(len(t), -1),
                "mean": t.mean(dim=(2, 3)),
                "max": t.amax(dim=(2, 3)),
            }[reduction]
        np.testing.assert_allclose(cap[layer], t.numpy(), rtol=1e-5, atol=1e-5, err_msg=layer)
        assert cap[layer].dtype == np.float32 and cap[layer].shape[0] == len(data)
    np.testing.assert_allclose(cap.logits, ref["fc"].numpy(), rtol=1e-5, atol=1e-5)
    assert np.array_equal(cap.predictions, ref["fc"].numpy().argmax(1))
    assert np.array_equal(cap.labels, data.y) and np.array_equal(cap.groups, data.groups)
    assert np.array_equal(cap.sample_id, data.sample_id)
    assert cap.reduction == reduction and cap.name == "TinyResNet"
    assert cap.data_fingerprint == data.fingerprint()


def test_inplace_ops_do_not_corrupt_capture(data):
    model = tiny_resnet()
    cap = record(model, data, ["block1.bn1", "block1.conv2"], batch_size=40, progress=False)
    ref = manual(model, data.x)
    # bn1 is followed by an in-place ReLU, conv2 by ``out += x``: captured values are pre-op
    assert (cap["block1.bn1"] < 0).any()
    np.testing.assert_allclose(
        cap["block1.conv2"], ref["block1.conv2"].reshape(len(data), -1), rtol=1e-5, atol=1e-5
    )


def test_input_suffix_captures_module_input(data):
    model = tiny_resnet()
    cap = record(
        model,
        data,
        ["flatten", "fc:input", "block1.relu1:input", "block1.bn1"],
        batch_size=50,
        progress=False,
    )
    np.testing.assert_array_equal(cap["fc:input"], cap["flatten"])
    # the in-place ReLU's input is bn1's output, captured before the ReLU overwrote it
    np.testing.assert_array_equal(cap["block1.relu1:input"], cap["block1.bn1"])


def test_dataset_and_dataloader_inputs_agree(data):
    model = tiny_resnet()
    gd = dataclasses.replace(data, sample_id=np.arange(len(data), dtype=np.int64))
    ref = record(model, gd, ["block1"], batch_size=32, progress=False)
    ds2 = TensorDataset(torch.from_numpy(data.x), torch.from_numpy(data.y))
    ds3 = gd.to_torch()
    # the fingerprint covers the groups: items without a group count as group 0
    no_groups = dataclasses.replace(gd, groups=np.zeros(len(gd), np.int64), attributes={})
    for src, same_as in ((ds2, no_groups), (ds3, gd), (DataLoader(ds3, batch_size=17), gd)):
        cap = record(model, src, ["block1"], batch_size=32, progress=False)
        np.testing.assert_allclose(cap["block1"], ref["block1"], rtol=1e-6, atol=1e-6)
        assert np.array_equal(cap.sample_id, np.arange(len(data)))
        assert np.array_equal(cap.labels, data.y)
        assert cap.data_fingerprint == same_as.fingerprint()
    assert np.array_equal(record(model, ds3, ["fc"], progress=False).groups, data.groups)
    assert not record(model, ds2, ["fc"], progress=False).groups.any()
    assert data_fingerprint(ds2) == no_groups.fingerprint() != gd.fingerprint()
    assert data_fingerprint(DataLoader(ds3, batch_size=5)) == gd.fingerprint()


def test_shuffled_loader_and_bad_items_are_rejected(data):
    ds = data.to_torch()
    with pytest.raises(SampleOrderError):
        record(tiny_resnet(), DataLoader(ds, shuffle=True), ["fc"], progress=False)
    with pytest.raises(DataError, match=r"Each batch must be a tuple \(x, y\) or \(x, y, group\)"):
        record(tiny_resnet(), TensorDataset(torch.from_numpy(data.x)), ["fc"], progress=False)
    with pytest.raises(ConfigError):
        record(tiny_resnet(), data, ["fc"], reduction="median")
    with pytest.raises(ConfigError):
        record(tiny_resnet(), data, ["fc"], batch_size=0)


def test_record_reductions_matches_separate_records(data):
    model = tiny_resnet()
    both = record_reductions(
        model,
        data,
        {"mean": "block?", "flatten": ["block2", "stem"]},
        batch_size=64,
        progress=False,
    )
    assert set(both) == {"mean", "flatten"}
    for red, cap in both.items():
        single = record(model, data, list(cap), reduction=red, batch_size=64, progress=False)
        assert isinstance(cap, Capture) and list(cap) == list(single)
        for layer in cap:
            np.testing.assert_array_equal(cap[layer], single[layer])


def test_wrapped_model_and_modes_restored(data):
    model = tiny_resnet()
    model.train()
    model.block1.eval()
    cap = record(nn.DataParallel(model), data, ["block1"], progress=False)
    assert model.training and not model.block1.training and model.block2.training
    model.eval()
    ref = record(model, data, ["block1"], progress=False)
    np.testing.assert_array_equal(cap["block1"], ref["block1"])


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_hooks_removed_after_exception_user_hooks_kept(data, exc):
    model = tiny_resnet()
    seen = []
    user = model.block2.register_forward_hook(lambda m, i, o: seen.append(1))
    calls = {"n": 0}

    def explode(module, args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise exc("boom")

    model.block2.conv1.register_forward_pre_hook(explode)
    counts = {
        n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()
    }
    with pytest.raises(exc):
        record(
            model,
            data,
            ["block1", "block2", "block2.conv1:input", "fc"],
            batch_size=30,
            progress=False,
        )
    after = {
        n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()
    }
    assert after == counts
    assert user.id in model.block2._forward_hooks


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_hooks_context_manager_records_and_always_removes_its_own(data, exc):
    model = tiny_resnet()
    user = model.fc.register_forward_pre_hook(lambda m, a: None)
    x = torch.from_numpy(data.x[:5])
    with hooks(model, [("block1", "mean"), ("block1", "flatten"), ("fc:input", "flatten")]) as rec:
        with torch.no_grad():
            model(x)
        assert set(rec.out) == {("block1", "mean"), ("block1", "flatten"), ("fc:input", "flatten")}
        assert rec.out["block1", "mean"].shape == (5, 4)
        assert rec.out["block1", "flatten"].shape == (5, 4 * 8 * 8)
    assert not model.block1._forward_hooks
    assert list(model.fc._forward_pre_hooks) == [user.id]
    with pytest.raises(exc):
        with hooks(model, [("block2", "mean")]):
            raise exc("boom")
    assert not model.block2._forward_hooks
    with pytest.raises(LayerNotFoundError, match="block9"):
        with hooks(model, [("block1", "mean"), ("block9", "mean")]):
            pass
    assert not model.block1._forward_hooks


class NaNAt(nn.Module):
    def forward(self, x):
        return x / (x.sum() * 0)  # inf/NaN everywhere


def test_nonfinite_names_layer(data):
    model = tiny_resnet()
    model.block2.conv2 = nn.Sequential(model.block2.conv2, NaNAt())
    with pytest.raises(NonFiniteError, match=r"'block2.conv2.1'.*batch 0"):
        record(model, data, ["block1", "block2.conv2.1"], progress=False)


class GrowsPerBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        self.calls += 1
        x = x.reshape(len(x), -1)
        return self.fc(x)[:, : 10 - (self.calls > 1)]


def test_output_shape_change_between_batches(data):
    with pytest.raises(ShapeError, match="batch 1"):
        record(GrowsPerBatch(), data, ["fc"], batch_size=60, progress=False)


def test_same_seed_same_numbers(data):
    torch.manual_seed(123)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Dropout(0.5), nn.Linear(16, 3))
    model.train()
    for m in model.modules():  # keep dropout active: a stochastic "eval" model
        m.eval = lambda m=m: m
    a = record(model, data, ["2"], seed=5, progress=False)
    b = record(model, data, ["2"], seed=5, progress=False)
    c = record(model, data, ["2"], seed=6, progress=False)
    np.testing.assert_array_equal(a["2"], b["2"])
    assert not np.array_equal(a["2"], c["2"])
