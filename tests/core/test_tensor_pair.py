"""Safetensors + JSON pairs: one writer and one reader for saved models and masks."""

from __future__ import annotations

import json
import pickle
import threading

import pytest
import torch
from safetensors.torch import save as safetensors_bytes

from repsim._core.io import read_tensor_pair, tensor_pair_paths, write_tensor_pair
from repsim.compress import Mask, prune
from repsim.errors import MaskError, ModelError, OutputError
from repsim.models import build_model, load_model, save_model


def _model():
    return build_model("mlp", input_shape=(1, 4, 4), n_classes=3, seed=0, hidden=(8,))


def test_paths_accept_either_suffix(tmp_path):
    pair = (tmp_path / "m.safetensors", tmp_path / "m.json")
    for p in ("m", "m.safetensors", "m.json"):
        assert tensor_pair_paths(tmp_path / p) == pair


def test_round_trip_and_the_bytes_written(tmp_path):
    tensors = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([True, False])}
    info = {"format": "x", "value": float("nan"), "path": tmp_path}
    assert write_tensor_pair(tensors, info, tmp_path / "p") == tmp_path / "p.safetensors"
    assert (tmp_path / "p.safetensors").read_bytes() == safetensors_bytes(tensors)
    assert (tmp_path / "p.json").read_text() == json.dumps(info, indent=2, default=str)
    got, meta = read_tensor_pair(tmp_path / "p", what="thing", hint="write one")
    assert set(got) == {"a", "b"} and all(torch.equal(got[k], tensors[k]) for k in tensors)
    assert meta["format"] == "x" and meta["path"] == str(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "p.safetensors"]


def test_saved_model_files_are_the_safetensors_and_json_of_before(tmp_path):
    model = _model()
    save_model(model, tmp_path / "m", note="x")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    assert (tmp_path / "m.safetensors").read_bytes() == safetensors_bytes(state)
    info = json.loads((tmp_path / "m.json").read_text())
    assert list(info) == ["spec", "fingerprint", "note"]


def test_concurrent_saves_of_one_path_do_not_collide(tmp_path):
    models = [_model() for _ in range(4)]
    errors = []

    def save(m):
        try:
            for _ in range(5):
                save_model(m, tmp_path / "same")
                Mask.from_model(prune(m, 0.5)[0]).save(tmp_path / "mask")
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    load_model(tmp_path / "same")
    Mask.load(tmp_path / "mask")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mask.json",
        "mask.safetensors",
        "same.json",
        "same.safetensors",
    ]


def test_missing_files_name_what_to_do(tmp_path):
    with pytest.raises(ModelError, match=r"No saved model at .*m\.safetensors \(\+ m\.json\)"):
        load_model(tmp_path / "m")
    save_model(_model(), tmp_path / "m")
    (tmp_path / "m.json").unlink()
    with pytest.raises(ModelError, match="save one with save_model"):
        load_model(tmp_path / "m")
    with pytest.raises(MaskError, match="No mask at .*k.safetensors; save one with Mask.save"):
        Mask.load(tmp_path / "k")


def test_damaged_files_are_repsim_errors_never_unpickled(tmp_path):
    save_model(_model(), tmp_path / "m")
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON.*Save the saved model again"):
        load_model(tmp_path / "m")
    (tmp_path / "m.json").write_text("[1, 2]")
    with pytest.raises(ModelError, match="holds a JSON list"):
        load_model(tmp_path / "m")
    (tmp_path / "m.json").write_text('{"fingerprint": "x"}')
    with pytest.raises(ModelError, match="no model spec"):
        load_model(tmp_path / "m")

    class Trap:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    mask = Mask({"w": torch.ones(2, dtype=torch.bool)})
    mask.save(tmp_path / "k")
    (tmp_path / "k.safetensors").write_bytes(pickle.dumps(Trap()))
    with pytest.raises(MaskError, match="not a readable safetensors file"):
        Mask.load(tmp_path / "k")
    (tmp_path / "k.safetensors").write_bytes(b"")
    with pytest.raises(MaskError, match="damaged"):
        Mask.load(tmp_path / "k")
    with pytest.raises(OutputError, match="not a readable safetensors file"):
        read_tensor_pair(tmp_path / "k", what="pair", hint="write one")
