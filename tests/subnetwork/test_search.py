import json

import numpy as np
import pytest
import torch
from torch import nn

from repsim.compress import Mask
from repsim.errors import ConfigError, DataError, ModelError, ShapeError
from repsim.subnetwork import apply_mask, cell_weights, search

FAST = dict(
    method="surgeon",
    steps=40,
    batch_size=32,
    eval_every=10,
    lr=0.05,
    head_lr=0.05,
    gamma=1.0,
    progress=False,
)


def _run(model, toy, **kw):
    train, val = toy
    opts = {**FAST, **kw}
    return search(model, train, bias_labels="colour", val=val, **opts)


def test_weights_frozen_and_mask_shapes(tiny_model, toy):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    res = _run(tiny_model, toy, max_acc_drop=1.0)
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in tiny_model.parameters())
    assert set(res.mask) == {"fc1.weight"}
    assert res.mask["fc1.weight"].dtype == torch.bool
    assert res.mask["fc1.weight"].shape == tiny_model.fc1.weight.shape
    sp = res.record["sparsity"]
    assert sp["overall"] == pytest.approx(1 - res.mask["fc1.weight"].float().mean().item())
    assert len(res.log) == 40 and {"ce", "mi", "tau", "head_loss"} <= set(res.log[0])


def test_mask_applies_to_model(tiny_model, toy):
    res = _run(tiny_model, toy, max_acc_drop=1.0, target_sparsity=0.5, sparsity_weight=5.0)
    pruned = apply_mask(tiny_model, res.mask)
    keep = res.mask["fc1.weight"]
    assert torch.equal(pruned.fc1.weight[~keep], torch.zeros(int((~keep).sum())))
    assert torch.equal(pruned.fc1.weight[keep], tiny_model.fc1.weight[keep])
    assert res.record["sparsity"]["overall"] > 0


def test_deterministic(tiny_model, toy):
    a = _run(tiny_model, toy)
    b = _run(tiny_model, toy)
    assert a.log == b.log
    assert all(torch.equal(a.mask[k], b.mask[k]) for k in a.mask)


def test_annealing_reaches_binary_gates(tiny_model, toy):
    res = _run(
        tiny_model,
        toy,
        steps=400,
        eval_every=5,
        plateau_patience=1,
        plateau_delta=10.0,
        tau_decay=0.3,
        tau_min=1e-3,
        target_sparsity=0.4,
        sparsity_weight=5.0,
    )
    assert res.record["final_tau"] < 1e-3
    assert res.record["final_step"] < 400  # stopped by the temperature, not the step budget
    assert res.record["max_off_gate"] < 1e-3  # every pruned gate is (numerically) off


class _Stop(Exception):
    pass


@pytest.mark.parametrize("granularity", ["weight", "channel"])
def test_resume_is_bit_exact(tiny_model, toy, tmp_path, granularity):
    kw = dict(granularity=granularity, checkpoint_every=7, reweight=1.0)
    full = _run(tiny_model, toy, run_dir=tmp_path / "full", **kw)

    def stop(step, terms):
        if step == 23:
            raise _Stop

    with pytest.raises(_Stop):
        _run(tiny_model, toy, run_dir=tmp_path / "cut", on_step=stop, **kw)
    saved = json.loads((tmp_path / "cut" / "log.json").read_text())
    assert len(saved["log"]) == 21  # last checkpoint before the crash
    resumed = _run(tiny_model, toy, run_dir=tmp_path / "cut", resume=True, **kw)
    assert resumed.log == full.log
    assert resumed.evals == full.evals
    assert all(torch.equal(resumed.mask[k], full.mask[k]) for k in full.mask)
    assert resumed.record["chosen_step"] == full.record["chosen_step"]
    saved_mask = Mask.load(tmp_path / "full" / "mask")
    assert isinstance(full.mask, Mask)
    assert all(torch.equal(saved_mask[k], full.mask[k]) for k in full.mask)
    with pytest.raises(ConfigError, match="different settings"):
        _run(tiny_model, toy, run_dir=tmp_path / "cut", resume=True, gamma=2.0, **kw)
    with pytest.raises(ConfigError, match="Nothing to resume"):
        _run(tiny_model, toy, run_dir=tmp_path / "none", resume=True, **kw)


def test_bad_inputs(tiny_model, toy):
    train, val = toy
    with pytest.raises(ShapeError, match="one entry per sample"):
        search(tiny_model, train, bias_labels=np.zeros(5, int), val=val, **FAST)
    with pytest.raises(DataError, match="single value"):
        search(tiny_model, train, bias_labels=np.zeros(len(train), int), val=val, **FAST)
    with pytest.raises(DataError, match="no attribute 'color'.*colour"):
        search(tiny_model, train, bias_labels="color", val=val, **FAST)
    with pytest.raises(ModelError, match="no prunable layer"):
        search(nn.Linear(6, 3), train, bias_labels="colour", val=val, **FAST)
    with pytest.raises(ConfigError, match="granularity"):
        _run(tiny_model, toy, granularity="block")
    with pytest.raises(ConfigError, match="objective"):
        _run(tiny_model, toy, objective="mi")


def test_cell_weights_balance_cells():
    y = np.array([0, 0, 0, 1, 1, 0])
    b = np.array([0, 0, 0, 1, 0, 1])
    w = cell_weights(y, b, 1.0)
    assert w.mean() == pytest.approx(1.0)
    # each (class, bias) cell carries the same total weight
    cells = {}
    for yi, bi, wi in zip(y, b, w):
        cells[(yi, bi)] = cells.get((yi, bi), 0) + wi
    assert np.allclose(list(cells.values()), list(cells.values())[0])
    assert np.array_equal(cell_weights(y, b, 0.0), np.ones(6))


@pytest.mark.parametrize("selection", ["bias-head", "val-acc"])
def test_model_selection_rule(tiny_model, toy, selection):
    res = _run(
        tiny_model,
        toy,
        selection=selection,
        max_acc_drop=0.05,
        target_sparsity=0.5,
        sparsity_weight=2.0,
    )
    vanilla = res.record["vanilla_val_acc"]
    eligible = [e for e in res.evals if e["val_acc"] >= vanilla - 0.05]
    assert [e["eligible"] for e in res.evals] == [e in eligible for e in res.evals]
    if selection == "bias-head":
        scores = [abs(e["val_bias_acc"] - e["bias_chance"]) for e in eligible]
    else:
        scores = [-e["val_acc"] for e in eligible]
    best = eligible[int(np.argmin(scores))]  # argmin: earliest on ties
    assert res.record["chosen_step"] == best["step"]


@pytest.mark.parametrize("method", ["surgeon", "bise"])
def test_sigkilled_run_resumes_to_the_same_mask(tmp_path, method):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tests.helpers import make_data
    from tests.subnetwork.kill_worker import SETTINGS, model

    root = Path(__file__).resolve().parents[2]
    run_dir, beacon = tmp_path / "run", tmp_path / "beacon"
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.subnetwork.kill_worker", str(run_dir), str(beacon), method],
        cwd=root,
        env=env,
    )
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if (
            beacon.exists()
            and beacon.read_text().strip().isdigit()
            and int(beacon.read_text()) >= 27
        ):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the worker finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "mask.safetensors").exists()
    train, val = make_data(120, 0, "train"), make_data(60, 1, "val")
    kw = SETTINGS[method]
    resumed = search(
        model(), train, bias_labels="colour", val=val, run_dir=run_dir, resume=True, **kw
    )
    full = search(model(), train, bias_labels="colour", val=val, run_dir=tmp_path / "full", **kw)
    assert resumed.log == full.log
    assert resumed.evals == full.evals
    assert all(torch.equal(resumed.mask[k], full.mask[k]) for k in full.mask)
    assert resumed.record["chosen_step"] == full.record["chosen_step"]


def test_run_files_are_written_atomically_and_checkpoints_never_unpickle(tiny_model, toy, tmp_path):
    import zipfile

    from repsim.errors import OutputError

    run = tmp_path / "run"
    _run(tiny_model, toy, run_dir=run, checkpoint_every=10)
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint.pt",
        "config.json",
        "log.json",
        "mask.json",
        "mask.safetensors",
        "record.json",
    ]
    # the archive inside is named as a direct save of checkpoint.pt.tmp names it, whichever
    # process and temporary name wrote it
    names = zipfile.ZipFile(run / "checkpoint.pt").namelist()
    assert all(n.startswith("checkpoint.pt/") for n in names)

    class Trap:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    torch.save({"config_hash": Trap()}, run / "checkpoint.pt")
    with pytest.raises(OutputError, match="checkpoint .* is unreadable.*new run_dir"):
        _run(tiny_model, toy, run_dir=run, checkpoint_every=10, resume=True)
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(OutputError, match="unreadable"):
        _run(tiny_model, toy, run_dir=run, checkpoint_every=10, resume=True)
