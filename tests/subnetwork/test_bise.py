import hashlib
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from repsim.errors import ConfigError, DataError
from repsim.subnetwork import (
    apply_mask,
    channel_units,
    conflicting_mi,
    search,
    step_gate,
)
from tests.helpers import Tiny, make_data
from tests.subnetwork.fixtures import digits, fixture_cnn

TINY_BISE = dict(
    method="bise",
    batch_size=32,
    head_epochs=2,
    tau_period=2,
    tau_decay=0.5,
    tau=1.0,
    tau_min=0.1,
    progress=False,
)


def _mask_hash(mask):
    h = hashlib.sha256()
    for k, v in mask.items():
        h.update(k.encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()


# Masks of the weight-gate search as repsim 6b3f4b6 (before BISE became the default) computed
# them on a fixed vanilla CNN (tests/subnetwork/data, trained once and stored) with these
# settings; method="surgeon" must give them bit for bit.
GOLDEN = {
    ("weight", "bias-head"): (
        "9c573e3eb463b4aba13897069c15995e9b62d10a13de6f727cb216da16cbf453",
        40,
        0.4353099730458221,
    ),
    ("weight", "val-acc"): (
        "1f82f33b45965fed97c7554b4c05ed6df3d3f5acc88030862eef8e0f1cdd0859",
        60,
        0.4353099730458221,
    ),
    ("channel", "bias-head"): (
        "416a75d6d2ef5168bcbde0b9df170cd851a5324d25252a35e97348ce48c05473",
        10,
        0.7338274932614555,
    ),
}


@pytest.mark.parametrize(("granularity", "selection"), list(GOLDEN))
def test_surgeon_reproduces_the_masks_of_the_weight_gate_search(granularity, selection):
    ds = digits()
    res = search(
        fixture_cnn(),
        ds.train,
        bias_labels="colour",
        method="surgeon",
        val=ds.val,
        granularity=granularity,
        selection=selection,
        steps=60,
        batch_size=128,
        lr=0.05,
        head_lr=0.01,
        tau=0.1,
        gate_init=0.1,
        eval_every=10,
        max_acc_drop=0.3,
        reweight=1.0,
        gamma=1.0,
        progress=False,
        seed=3,
    )
    digest, step, sparsity = GOLDEN[(granularity, selection)]
    assert _mask_hash(res.mask) == digest
    assert res.record["chosen_step"] == step
    assert res.record["sparsity"]["overall"] == pytest.approx(sparsity, abs=1e-15)


def test_step_gate_is_binary_with_a_sigmoid_gradient():
    m = torch.tensor([-2.0, -1e-3, 0.0, 1e-3, 0.7], dtype=torch.float64, requires_grad=True)
    for tau in (1.0, 0.1):
        g = step_gate(m, tau)
        assert torch.equal(g, torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0], dtype=torch.float64))
        m.grad = None
        g.sum().backward()
        ref = m.detach().clone().requires_grad_(True)
        torch.sigmoid(ref / tau).sum().backward()
        torch.testing.assert_close(m.grad, ref.grad, rtol=1e-12, atol=0)
    with pytest.raises(ConfigError, match="tau"):
        step_gate(m, 0.0)


def test_units_gate_after_the_activation_through_the_batchnorm():
    ds = digits()
    model = fixture_cnn()
    units = channel_units(model, torch.from_numpy(ds.train.x[:2]))
    got = {u.layer: (u.gate_at, u.params, u.n, u.dim) for u in units}
    assert got == {
        "features.conv1": (
            "features.relu1",
            ("features.conv1.weight", "features.bn1.weight", "features.bn1.bias"),
            4,
            1,
        ),
        "features.conv2": (
            "features.relu2",
            ("features.conv2.weight", "features.bn2.weight", "features.bn2.bias"),
            8,
            1,
        ),
        "features.conv3": (
            "features.relu3",
            ("features.conv3.weight", "features.bn3.weight", "features.bn3.bias"),
            8,
            1,
        ),
        "fc": ("relu", ("fc.weight", "fc.bias"), 16, -1),
    }
    # Tiny: fc1 -> relu -> bn; the BatchNorm comes after the activation, so it is not the unit's
    tiny = Tiny().eval()
    (unit,) = channel_units(tiny, torch.randn(2, 6))
    assert (unit.gate_at, unit.params) == ("relu", ("fc1.weight", "fc1.bias"))
    assert not any(m._forward_hooks for m in tiny.modules())


def test_channel_gates_zero_whole_filters_in_the_exported_mask(tmp_path):
    ds = digits()
    model = fixture_cnn()
    res = search(
        model,
        ds.train,
        bias_labels="colour",
        val=ds.val,
        selection="final",
        max_epochs=1,
        run_dir=tmp_path,
        **{k: v for k, v in TINY_BISE.items() if k != "method"},
    )
    mask = res.mask
    pruned_any = False
    for layer, bn in (
        ("features.conv1", "bn1"),
        ("features.conv2", "bn2"),
        ("features.conv3", "bn3"),
    ):
        w = mask[f"{layer}.weight"]
        rows = w.reshape(w.shape[0], -1)
        # every filter is kept whole or pruned whole, with its BatchNorm scale and shift
        assert torch.equal(rows.all(1), rows.any(1))
        assert torch.equal(mask[f"features.{bn}.weight"], rows.all(1))
        assert torch.equal(mask[f"features.{bn}.bias"], rows.all(1))
        pruned_any |= bool((~rows.all(1)).any())
    fc = mask["fc.weight"]
    assert torch.equal(fc.all(1), fc.any(1)) and torch.equal(mask["fc.bias"], fc.all(1))
    assert pruned_any, "the check needs at least one pruned filter"
    assert "classifier.weight" not in mask
    # the pruned model's pruned channels output exactly 0 after their activation ...
    pruned = apply_mask(model, mask).eval()
    acts = {}
    hooks = [
        pruned.features.relu1.register_forward_hook(lambda m, a, o: acts.__setitem__("c1", o)),
    ]
    with torch.no_grad():
        out = pruned(torch.from_numpy(ds.val.x))
    for h in hooks:
        h.remove()
    off = ~mask["features.conv1.weight"].reshape(4, -1).all(1)
    assert torch.all(acts["c1"][:, off] == 0)
    # ... and the pruned model is exactly the network the search scored
    assert res.record["export_max_abs_diff"] == 0.0
    assert res.record["layers"]["features.conv1"]["channels_kept"] == int((~off).sum())
    acc = float((out.argmax(1).numpy() == ds.val.y).mean())
    assert acc == pytest.approx(res.evals[-1]["val_acc"], abs=1e-12)
    saved = json.loads((tmp_path / "mask.json").read_text())
    assert saved["method"] == "bise"


def _reference_mi(b, p):
    """Plain-loop normalised MI of the empirical joint (unweighted)."""
    n, k = p.shape
    joint = np.zeros((k, k))
    for s in range(n):
        joint[b[s]] += p[s] / n
    pb, pp = joint.sum(1), joint.sum(0)
    total = 0.0
    for i in range(k):
        for j in range(k):
            if joint[i, j] > 0:
                total += joint[i, j] * math.log(joint[i, j] / (pb[i] * pp[j]))
    return total / math.log(k)


def test_mi_term_is_computed_on_the_conflicting_samples_only():
    rng = np.random.default_rng(0)
    k = 3
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    b = np.array([0, 1, 2, 1, 2, 0, 0, 2])  # conflicting where b != y: samples 3, 4, 5, 7
    conflicting = b != y
    logits = rng.normal(size=(8, k)) + 2.0 * np.eye(k)[b]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    got = float(
        conflicting_mi(torch.from_numpy(b), torch.from_numpy(p), torch.from_numpy(conflicting))
    )
    direct = _reference_mi(b[conflicting], p[conflicting])
    assert got == pytest.approx(direct, rel=1e-10)
    assert got != pytest.approx(_reference_mi(b, p), rel=1e-3)  # not the all-samples value
    none = torch.zeros(8, dtype=torch.bool)
    assert float(conflicting_mi(torch.from_numpy(b), torch.from_numpy(p), none)) == 0.0
    one = torch.zeros(8, dtype=torch.bool)
    one[3] = True
    assert float(conflicting_mi(torch.from_numpy(b), torch.from_numpy(p), one)) == pytest.approx(
        0.0, abs=1e-12
    )


def test_first_step_mi_matches_a_direct_computation_on_the_conflicting_training_samples():
    """Full-batch step 1: MI(b; head(z)) over the conflicting samples, head at its init."""
    train, val = make_data(120, 0, "train"), make_data(60, 1, "val")
    torch.manual_seed(0)
    model = Tiny().eval()
    res = search(
        model,
        train,
        bias_labels="colour",
        val=val,
        method="bise",
        batch_size=len(train),
        head_epochs=0,
        max_epochs=1,
        seed=7,
        progress=False,
    )
    with torch.no_grad():
        feats = torch.relu(model.fc1(torch.from_numpy(train.x)))
        feats = model.bn(feats)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        head = nn.Linear(feats.shape[1], 3)
    b = np.asarray(train.attributes["colour"])
    conflicting = b != train.y
    assert 0 < conflicting.sum() < len(b)
    with torch.no_grad():
        p = torch.softmax(head(feats), 1).double().numpy()
    direct = _reference_mi(b[conflicting], p[conflicting])
    assert res.log[0]["mi"] == pytest.approx(direct, rel=1e-5)
    assert res.log[0]["n_conflicting"] == int(conflicting.sum())


def test_model_is_left_exactly_as_it_was(tiny_model, toy):
    train, val = toy
    tiny_model.train()
    tiny_model.fc1.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    search(tiny_model, train, bias_labels="colour", val=val, **TINY_BISE)
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in tiny_model.parameters())
    assert tiny_model.training and tiny_model.bn.training
    assert not tiny_model.fc1.weight.requires_grad and tiny_model.classifier.weight.requires_grad
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in tiny_model.modules())


def test_record_states_the_data_budget(tiny_model, toy):
    train, val = toy
    res = search(tiny_model, train, bias_labels="colour", val=val, **TINY_BISE)
    budget = res.record["data_budget"]
    b = np.asarray(train.attributes["colour"])
    assert budget["search"]["n_samples"] == len(train) == budget["search"]["n_bias_labelled"]
    assert budget["search"]["n_conflicting"] == int((b != train.y).sum())
    assert budget["selection"]["n_samples"] == len(val)
    assert budget["selection"]["labels_used"] == ["class"]
    assert budget["selection"]["n_candidates_scored"] == len(res.evals)
    final = search(tiny_model, train, bias_labels="colour", val=val, selection="final", **TINY_BISE)
    assert final.record["data_budget"]["selection"]["n_samples"] == 0
    # val-acc: the chosen epoch has the highest validation accuracy, the latest on ties
    accs = [e["val_acc"] for e in res.evals]
    best = max(i for i, a in enumerate(accs) if a == max(accs))
    assert res.record["chosen_step"] == res.evals[best]["epoch"]
    assert final.record["chosen_step"] == final.evals[-1]["epoch"]


def test_schedule_and_stop(tiny_model, toy):
    train, val = toy
    res = search(tiny_model, train, bias_labels="colour", val=val, **TINY_BISE)
    # tau halves every 2 epochs from 1 and the search stops once tau <= 0.1: 4 halvings
    assert [e["tau"] for e in res.evals] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125]
    assert res.record["final_tau"] == 0.0625
    assert len(res.log) == 8 * math.ceil(len(train) / 32)


def test_deterministic_and_resume_is_bit_exact(tiny_model, toy, tmp_path):
    train, val = toy
    kw = dict(bias_labels="colour", val=val, **TINY_BISE)
    full = search(tiny_model, train, run_dir=tmp_path / "full", **kw)
    again = search(tiny_model, train, **kw)
    assert again.log == full.log and again.evals == full.evals

    class Stop(Exception):
        pass

    def stop(step, terms):
        if step == 14:
            raise Stop

    with pytest.raises(Stop):
        search(tiny_model, train, run_dir=tmp_path / "cut", on_step=stop, **kw)
    saved = json.loads((tmp_path / "cut" / "log.json").read_text())
    assert len(saved["log"]) == 12  # epochs of 4 steps: the last checkpoint is after epoch 3
    resumed = search(tiny_model, train, run_dir=tmp_path / "cut", resume=True, **kw)
    assert resumed.log == full.log
    assert resumed.evals == full.evals
    assert all(torch.equal(resumed.mask[k], full.mask[k]) for k in full.mask)
    assert resumed.record["chosen_step"] == full.record["chosen_step"]
    with pytest.raises(ConfigError, match="different settings"):
        search(tiny_model, train, run_dir=tmp_path / "cut", resume=True, **{**kw, "gamma": 2.0})


def test_settings_of_the_other_method_are_clear_errors(tiny_model, toy):
    train, val = toy
    with pytest.raises(ConfigError, match="'steps' is not a setting of method='bise'.*surgeon"):
        search(tiny_model, train, bias_labels="colour", val=val, steps=5)
    with pytest.raises(ConfigError, match="tau_period.*method='surgeon'.*bise"):
        search(tiny_model, train, bias_labels="colour", method="surgeon", tau_period=5)
    with pytest.raises(ConfigError, match="Unknown method"):
        search(tiny_model, train, bias_labels="colour", method="irene")
    with pytest.raises(ConfigError, match="selection"):
        search(tiny_model, train, bias_labels="colour", val=val, selection="bias-head")
    with pytest.raises(DataError, match="no bias-conflicting sample"):
        y = np.asarray(train.y)
        search(
            tiny_model,
            train,
            bias_labels=y,
            val=val,
            val_bias_labels="colour",
            conflicting=np.zeros(len(y), bool),
        )


def test_conflicting_cells_are_bise_b_ne_y_on_digits_and_weights_follow_its_code():
    from repsim.subnetwork import aligned_cells, bise_weights, conflicting_samples

    ds = digits()
    y, b = np.asarray(ds.train.y), np.asarray(ds.train.attributes["colour"])
    cells = aligned_cells(y, b, 10, 10)
    assert np.array_equal(cells, np.eye(10, dtype=bool))
    conf = conflicting_samples(y, b, cells)
    assert np.array_equal(conf, b != y)
    assert np.array_equal(conf, ds.train.attributes["bias"].astype(bool))
    # on the test split the training cells give the dataset's own marker too
    yt, bt = np.asarray(ds.test.y), np.asarray(ds.test.attributes["colour"])
    assert np.array_equal(conflicting_samples(yt, bt, cells), ds.test.attributes["bias"] == 1)
    w = bise_weights(conf, 10)
    rho = 1 - conf.mean()
    assert w[~conf][0] == pytest.approx(1 / (10 * rho))
    assert w[conf][0] == pytest.approx(9 / (10 * (1 - rho)))
    assert w.mean() == pytest.approx(1.0)
    # Adult-like codes: the over-represented (class, bias) cells are the aligned ones
    y2 = np.array([1] * 30 + [1] * 10 + [0] * 40 + [0] * 60)
    b2 = np.array([1] * 30 + [0] * 10 + [1] * 40 + [0] * 60)
    assert np.array_equal(aligned_cells(y2, b2, 2, 2), np.array([[True, False], [False, True]]))
