import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from repsim._core.fingerprints import model_fingerprint
from repsim.compress import Mask, bake, prune, pruned_parameters
from repsim.errors import MaskError
from repsim.models import build_model, load_model, load_state_dict_pruned, save_model

X = torch.from_numpy(np.random.default_rng(0).random((7, 1, 8, 8), dtype=np.float32))


def _logits(model):
    model.eval()
    with torch.no_grad():
        return model(X)


def test_from_model_and_report(cnn):
    pruned, rec = prune(cnn, 0.8)
    mask = Mask.from_model(pruned)
    assert set(mask) == set(rec.layers)
    assert all(t.dtype == torch.bool for t in mask.values())
    report = mask.sparsity()
    assert report["n_zero"] == rec.n_zero and report["n_total"] == rec.n_total
    assert mask.fingerprint == model_fingerprint(pruned)
    with pytest.raises(MaskError, match="no pruning mask"):
        Mask.from_model(cnn)


def test_round_trip_files(tmp_path, cnn):
    pruned, _ = prune(cnn, 0.9, method="random", seed=1)
    mask = Mask.from_model(pruned)
    path = mask.save(tmp_path / "m")
    info = json.loads((tmp_path / "m.json").read_text())
    assert info["fingerprint"] == mask.fingerprint
    assert info["report"]["n_zero"] == mask.sparsity()["n_zero"]
    back = Mask.load(path)
    assert list(back) == list(mask)
    assert all(torch.equal(back[k], mask[k]) for k in mask)
    assert back.fingerprint == mask.fingerprint


def test_apply_reproduces_pruned_model(cnn):
    pruned, _ = prune(cnn, 0.7)
    mask = Mask.from_model(pruned)
    fresh = build_model("cnn", input_shape=(1, 8, 8), n_classes=10, seed=0)
    mask.apply(fresh)
    assert torch.equal(_logits(fresh), _logits(pruned))
    assert sorted(pruned_parameters(fresh)) == sorted(mask)


def test_apply_to_pruned_model_intersects(cnn):
    a = Mask({"fc.weight": torch.rand(64, 128, generator=torch.Generator().manual_seed(0)) > 0.5})
    b = Mask({"fc.weight": torch.rand(64, 128, generator=torch.Generator().manual_seed(1)) > 0.5})
    a.apply(cnn)
    b.apply(cnn)
    assert torch.equal(cnn.fc.weight_mask.bool(), a["fc.weight"] & b["fc.weight"])


def test_bake_and_load_into_plain_model(cnn):
    pruned, rec = prune(cnn, 0.8)
    expected = _logits(pruned)
    baked = bake(pruned)
    assert not pruned_parameters(baked)
    assert not any(k.endswith(("_orig", "_mask")) for k in baked.state_dict())
    plain = build_model("cnn", input_shape=(1, 8, 8), n_classes=10, seed=5)
    plain.load_state_dict(baked.state_dict())
    assert torch.equal(_logits(plain), expected)
    assert int((plain.fc.weight == 0).sum()) == rec.layers["fc.weight"]["n_zero"]


def test_pruned_state_dict_into_plain_model(cnn):
    pruned, _ = prune(cnn, 0.5, method="ln_structured")
    plain = build_model("cnn", input_shape=(1, 8, 8), n_classes=10, seed=9)
    load_state_dict_pruned(plain, pruned.state_dict())
    assert torch.equal(_logits(plain), _logits(pruned))


def test_wrong_names_and_shapes(cnn, mlp):
    pruned, _ = prune(cnn, 0.5)
    mask = Mask.from_model(pruned)
    with pytest.raises(MaskError, match="names no parameter"):
        mask.apply(mlp)
    bad = Mask({"fc.weigth": torch.ones(64, 128, dtype=torch.bool)})
    with pytest.raises(MaskError, match="fc.weight"):
        bad.apply(cnn)
    with pytest.raises(MaskError, match="shape"):
        Mask({"fc.weight": torch.ones(3, 3, dtype=torch.bool)}).apply(cnn)
    with pytest.raises(MaskError, match="0/1"):
        Mask({"fc.weight": torch.full((64, 128), 0.5)})
    assert not pruned_parameters(cnn)  # nothing applied on failure


def test_load_missing(tmp_path):
    with pytest.raises(MaskError, match="No mask"):
        Mask.load(tmp_path / "nope")


def test_reload_in_fresh_process(tmp_path, cnn):
    pruned, _ = prune(cnn, 0.9)
    save_model(pruned, tmp_path / "model")
    expected = _logits(pruned).numpy()
    np.save(tmp_path / "x.npy", X.numpy())
    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys, numpy as np, torch\n"
        f"sys.path.insert(0, {str(root)!r})\n"
        "from repsim.models import load_model\n"
        f"m = load_model({str(tmp_path / 'model')!r}).eval()\n"
        f"x = torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r}))\n"
        "with torch.no_grad():\n"
        f"    np.save({str(tmp_path / 'out.npy')!r}, m(x).numpy())\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=env)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)
    again = load_model(tmp_path / "model")
    assert model_fingerprint(again) == model_fingerprint(pruned)
