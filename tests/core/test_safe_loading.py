"""Loading never runs code, and a damaged file is one clear repsim error.

Every load path gets a crafted pickle whose ``__reduce__`` writes a marker file: the load must
fail with a repsim error and the marker must not exist. The payload is checked to be live
(plain ``pickle.loads`` does write the marker), so each test can fail.
"""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from repsim._core.io import read_npz, write_tensor_pair
from repsim.compress import Mask
from repsim.errors import DataError, MaskError, ModelError, OutputError, RepsimError
from repsim.models import build_model, load_model, save_model

ROOT = Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this writes ``marker`` (as an attacker's file would run code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


def _crafted(tmp_path, name="payload"):
    marker = tmp_path / f"{name}.marker"
    data = pickle.dumps({"weights": Payload(marker)})
    pickle.loads(data)  # the payload is live: unpickling runs it
    assert marker.exists()
    marker.unlink()
    return data, marker


def _mlp():
    return build_model("mlp", input_shape=(1, 8, 8), n_classes=10, seed=0)


def test_model_files_never_unpickle(tmp_path):
    data, marker = _crafted(tmp_path)
    path = tmp_path / "m"
    save_model(_mlp(), path)
    (tmp_path / "m.safetensors").write_bytes(data)  # a pickle where the weights should be
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        load_model(path)
    torch.save({"w": Payload(marker)}, tmp_path / "m.pt")  # a .pt next to it is never read
    with pytest.raises(ModelError):
        load_model(tmp_path / "m.pt")
    assert not marker.exists()


def test_mask_files_never_unpickle(tmp_path):
    data, marker = _crafted(tmp_path)
    (tmp_path / "mask.safetensors").write_bytes(data)
    with pytest.raises(MaskError, match="not a readable safetensors file"):
        Mask.load(tmp_path / "mask")
    assert not marker.exists()


def test_npz_with_objects_never_unpickles(tmp_path):
    _, marker = _crafted(tmp_path)
    np.savez(tmp_path / "a.npz", layer=np.ones((4, 2)), evil=np.array([Payload(marker)]))
    with pytest.raises(OutputError, match="pickled Python objects"):
        read_npz(tmp_path / "a.npz")
    np.save(tmp_path / "b.npy", np.array([Payload(marker)], dtype=object))
    with pytest.raises(DataError, match="never loads"):
        read_npz(tmp_path / "b.npy", error=DataError)
    (tmp_path / "c.npz").write_bytes(pickle.dumps(Payload(marker)))  # a bare pickle
    with pytest.raises(OutputError):
        read_npz(tmp_path / "c.npz")
    assert not marker.exists()
    np.savez(tmp_path / "ok.npz", x=np.arange(3))
    assert read_npz(tmp_path / "ok.npz")["x"].tolist() == [0, 1, 2]


def test_family_member_files_never_unpickle(tmp_path):
    from repsim.pipeline.family import build, plan

    data, marker = _crafted(tmp_path)
    cfg = {
        "family": {
            "dataset": "digits",
            "model": "mlp",
            "model_options": {"hidden": [8]},
            "seeds": [0],
            "cache_dir": str(tmp_path / "cache"),
            "train": {"epochs": 1},
        }
    }
    fam = build(cfg, progress=False)
    member = fam.members[0]
    member.path.write_bytes(data)
    # the damaged member counts as missing (it is rebuilt), and loading it directly refuses
    assert plan(cfg).members[0].fingerprint == ""
    with pytest.raises(ModelError, match=r"family member .* is unusable.*build the family again"):
        member.load()
    assert not marker.exists()
    rebuilt = build(cfg, progress=False)
    assert rebuilt.n_built == 1 and rebuilt.members[0].load() is not None


def test_family_member_with_damaged_weights_or_json(tmp_path):
    from repsim.pipeline.family import build, plan

    cfg = {
        "family": {
            "dataset": "digits",
            "model": "mlp",
            "model_options": {"hidden": [8]},
            "seeds": [0],
            "cache_dir": str(tmp_path / "cache"),
            "train": {"epochs": 1},
        }
    }
    member = build(cfg, progress=False).members[0]
    raw = bytearray(member.path.read_bytes())
    raw[-3] ^= 0x40  # a flipped bit inside the weights: the header still parses
    member.path.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="damaged: its weights differ"):
        member.load()
    meta = member.path.with_suffix(".json")
    meta.write_text(meta.read_text()[: len(meta.read_text()) // 2])  # truncated JSON
    assert plan(cfg).members[0].fingerprint == ""  # counted as not built
    assert build(cfg, progress=False).n_built == 1
    assert json.loads(meta.read_text())["state_sha256"]


def test_corrupt_and_incomplete_model_files_are_one_clear_error(tmp_path):
    path = tmp_path / "m"
    save_model(_mlp(), path)
    (tmp_path / "m.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(ModelError, match="not a readable safetensors"):
        load_model(path)
    save_model(_mlp(), path)
    (tmp_path / "m.json").write_text(json.dumps({"fingerprint": "x"}))  # no spec
    with pytest.raises(ModelError, match="has no model spec"):
        load_model(path)
    (tmp_path / "m.json").write_text('{"spec": {"name": "mlp"')  # truncated
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(path)
    write_tensor_pair({"x": torch.zeros(2)}, ["not", "an", "object"], tmp_path / "p")
    with pytest.raises(ModelError, match="not a saved model description"):
        load_model(tmp_path / "p")


def test_all_repsim_errors_are_one_line(tmp_path):
    (tmp_path / "m.safetensors").write_bytes(b"junk")
    (tmp_path / "m.json").write_text("{}")
    for call in (
        lambda: load_model(tmp_path / "m"),
        lambda: Mask.load(tmp_path / "m"),
        lambda: read_npz(tmp_path / "m.safetensors"),
    ):
        with pytest.raises(RepsimError) as info:
            call()
        assert "\n" not in str(info.value)


SAVER = """
import sys
from repsim.models import build_model, save_model
model = build_model("mlp", input_shape=(1, 8, 8), n_classes=10, seed=int(sys.argv[2]))
for _ in range(int(sys.argv[3])):
    save_model(model, sys.argv[1])
"""


def test_two_processes_saving_the_same_path(tmp_path):
    path = tmp_path / "shared" / "model"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SAVER, str(path), str(seed), "25"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for seed in (0, 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    model = load_model(path)  # a complete pair from one of the writers
    assert sum(p.numel() for p in model.parameters()) > 0
    assert sorted(f.name for f in path.parent.iterdir()) == ["model.json", "model.safetensors"]
