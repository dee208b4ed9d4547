import numpy as np
import pytest
import torch

from repsim.errors import ConfigError
from repsim.subnetwork import apply_mask, channel_units, param_mask
from repsim.subnetwork.controls import magnitude_control, random_control
from repsim.subnetwork.report import probe_accuracy
from tests.subnetwork.fixtures import digits, fixture_cnn


def _found_mask(model, units):
    """A channel selection with a different count per layer."""
    keep = {}
    for i, u in enumerate(units):
        k = torch.ones(u.n, dtype=torch.bool)
        k[: i + 1] = False
        keep[u.layer] = k
    return keep, param_mask(model, units, keep)


def _counts(mask, units):
    return {u.layer: int(mask[f"{u.layer}.weight"].reshape(u.n, -1).all(1).sum()) for u in units}


def _acc(model, data):
    with torch.no_grad():
        return float((model(torch.from_numpy(data.x)).argmax(1).numpy() == data.y).mean())


def test_random_control_keeps_per_layer_counts_and_picks_the_best_on_val():
    ds = digits()
    model = fixture_cnn()
    units = channel_units(model, torch.from_numpy(ds.val.x[:2]))
    keep, mask = _found_mask(model, units)
    chosen, rec = random_control(
        model, mask, structure="channel", units=units, k=6, rule="val-acc", val=ds.val, seed=1
    )
    assert _counts(chosen, units) == {u.layer: int(keep[u.layer].sum()) for u in units}
    assert set(chosen) == set(mask)
    assert rec["k"] == 6 and len(rec["val_accs"]) == 6
    assert rec["chosen_val_acc"] == max(rec["val_accs"])
    assert _acc(apply_mask(model, chosen).eval(), ds.val) == pytest.approx(rec["chosen_val_acc"])
    # the draws differ and are seeded
    again, rec2 = random_control(
        model, mask, structure="channel", units=units, k=6, rule="val-acc", val=ds.val, seed=1
    )
    assert rec2["val_accs"] == rec["val_accs"]
    assert all(torch.equal(again[k], chosen[k]) for k in chosen)
    assert len(set(rec["val_accs"])) > 1
    # "final": no data, a single draw
    one, rec3 = random_control(model, mask, structure="channel", units=units, k=6, rule="final")
    assert rec3["k"] == 1 and rec3["data_budget"]["n_samples"] == 0
    with pytest.raises(ConfigError, match="validation split"):
        random_control(model, mask, structure="channel", units=units, k=2, rule="val-acc")


def test_magnitude_control_keeps_the_largest_filters():
    ds = digits()
    model = fixture_cnn()
    units = channel_units(model, torch.from_numpy(ds.val.x[:2]))
    keep, mask = _found_mask(model, units)
    mag = magnitude_control(model, mask, structure="channel", units=units)
    assert _counts(mag, units) == {u.layer: int(keep[u.layer].sum()) for u in units}
    for u in units:
        norms = model.get_parameter(f"{u.layer}.weight").detach().abs().reshape(u.n, -1).sum(1)
        kept = mag[f"{u.layer}.weight"].reshape(u.n, -1).all(1)
        if (~kept).any():
            assert norms[kept].min() >= norms[~kept].max()


@pytest.mark.parametrize("structure", ["weight", "row"])
def test_controls_of_weight_masks(tiny_model, structure):
    w = tiny_model.fc1.weight
    keep = torch.ones_like(w, dtype=torch.bool)
    if structure == "weight":
        keep.view(-1)[::3] = False
    else:
        keep[:3] = False
    mask = {"fc1.weight": keep}
    mag = magnitude_control(tiny_model, mask, structure=structure)
    assert int(mag["fc1.weight"].sum()) == int(keep.sum())
    if structure == "weight":
        a = w.detach().abs()
        assert a[mag["fc1.weight"]].min() >= a[~mag["fc1.weight"]].max()
    else:
        rows = mag["fc1.weight"]
        assert torch.equal(rows.all(1), rows.any(1))
    rnd, rec = random_control(tiny_model, mask, structure=structure, k=3, rule="final", seed=0)
    assert int(rnd["fc1.weight"].sum()) == int(keep.sum())


def test_probe_reads_bias_not_class():
    rng = np.random.default_rng(0)
    n = 2000
    y = rng.integers(0, 2, n)
    b = np.where(rng.random(n) < 0.9, y, 1 - y)  # bias agrees with the class 90% of the time
    # features that carry the class only: a naive probe would read the bias at ~0.9
    class_only = np.c_[y + 0.1 * rng.normal(size=n), rng.normal(size=n)]
    res = probe_accuracy(class_only, b, y)
    assert res["chance"] == pytest.approx(0.5, abs=0.01)
    assert abs(res["acc"] - 0.5) < 0.05
    # features that carry the bias: the probe reads it
    bias_feat = np.c_[b + 0.1 * rng.normal(size=n), rng.normal(size=n)]
    assert probe_accuracy(bias_feat, b, y)["acc"] > 0.95
    # pure noise: chance
    assert abs(probe_accuracy(rng.normal(size=(n, 3)), b, y)["acc"] - 0.5) < 0.05
