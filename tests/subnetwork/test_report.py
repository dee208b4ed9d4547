import numpy as np
import pytest
import torch

from repsim.subnetwork.report import compare_subnetwork, magnitude_mask


def test_magnitude_mask_is_global_threshold(tiny_model):
    names = ["fc1.weight", "classifier.weight"]
    mask = magnitude_mask(tiny_model, names, 0.5)
    w = torch.cat([tiny_model.fc1.weight.flatten(), tiny_model.classifier.weight.flatten()]).abs()
    keep = torch.cat([mask[n].flatten() for n in names])
    assert int(keep.sum()) == len(w) - round(0.5 * len(w))
    assert w[keep].min() >= w[~keep].max()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_compare_subnetwork_rows(tiny_model, toy):
    train, val = toy
    keep = torch.ones_like(tiny_model.fc1.weight, dtype=torch.bool)
    keep[:, 1] = False  # drop the input that carries the bias
    rep = compare_subnetwork(
        tiny_model,
        {"fc1.weight": keep},
        train=train,
        test=val,
        bias_labels="colour",
        biased_test=train,
        conflict_attribute="bias",
    )
    rows = {r["model"]: r for r in rep["rows"]}
    assert set(rows) == {"vanilla", "subnetwork", "magnitude"}
    assert rows["subnetwork"]["sparsity"] == pytest.approx(1 / 6)
    assert rows["vanilla"]["sparsity"] == 0.0
    # the subnetwork that cannot see the bias input carries less bias information
    assert rows["subnetwork"]["bias_probe_acc"] < rows["vanilla"]["bias_probe_acc"]
    g = np.asarray(val.attributes["bias"])
    assert 0 <= rows["vanilla"]["conflicting_acc"] <= 1 and g.sum() > 0
    assert set(rep["shift"]) == {"subnetwork", "magnitude"}
    # per-layer CKA to vanilla: 1 for an unchanged model, computed for every masked layer
    layers = {r["layer"] for r in rep["cka"]}
    assert layers == {"fc1", "bottleneck"}
    sub = [r["cka"] for r in rep["cka"] if r["model"] == "subnetwork"][0]
    assert 0.0 <= sub <= 1.0 + 1e-12


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_compare_subnetwork_full_mask_has_cka_one(tiny_model, toy):
    train, val = toy
    keep = torch.ones_like(tiny_model.fc1.weight, dtype=torch.bool)
    rep = compare_subnetwork(
        tiny_model, {"fc1.weight": keep}, train=train, test=val, bias_labels="colour"
    )
    for r in rep["cka"]:
        if r["model"] == "subnetwork":
            assert r["cka"] == pytest.approx(1.0, abs=1e-12)
