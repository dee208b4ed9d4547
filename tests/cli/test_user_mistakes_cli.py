"""User mistakes and damaged files on the command line: one line, exit code 2, nothing run."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from repsim.cli import main

STUDY = """
[study]
name = "{name}"
seed = 0
out_dir = "{out}"
cache_dir = "{cache}"

[data]
name = "digits"

[model]
name = "mlp"
hidden = [8]

[train]
epochs = 1
{extra}
"""

BISE = """
[study]
name = "tiny_bise"
seeds = [0]
out_dir = "{out}"
cache_dir = "{cache}"

[data]
name = "digits-colour"
rho = 0.95
val_rho = 0.1

[model]
name = "cnn"
width = 4
hidden = 8

[train]
epochs = 1

[subnetwork]
method = "surgeon"
bias = "colour"
steps = 6
batch_size = 64
eval_every = 3
checkpoint_every = 3
max_acc_drop = 1.0
"""


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


def _one_line_error(capsys, *parts):
    err = capsys.readouterr().err
    assert err.startswith("repsim: error:"), err
    assert len(err.strip().splitlines()) == 1, err
    for part in parts:
        assert part in err, err
    return err


def _study(tmp_path, name="t", extra="", out=None):
    p = tmp_path / "study.toml"
    p.write_text(
        STUDY.format(
            name=name,
            out=out or tmp_path / "reports",
            cache=tmp_path / "cache",
            extra=extra,
        )
    )
    return p


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("[capture]\nbatch_size = 0", "capture.batch_size"),
        ("[fairness]\neps = -0.5", "fairness.eps"),
        ("[fairness]\nmin_group_size = 0", "fairness.min_group_size"),
        ("[train2]\nx = 1", "[train2]"),
    ],
)
def test_config_errors_come_before_any_training(tmp_path, capsys, extra, key):
    cfg = _study(tmp_path, extra=extra)
    assert main(["run", str(cfg)]) == 2
    _one_line_error(capsys, key)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "reports").exists()


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "..", ".hidden", "a\\b", ""])
def test_names_cannot_escape_the_output_directory(tmp_path, capsys, name):
    cfg = _study(tmp_path, name=name)
    assert main(["run", str(cfg)]) == 2
    _one_line_error(capsys, "study.name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.toml"]


def test_out_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    cfg = _study(tmp_path, out=tmp_path / "afile")
    assert main(["run", str(cfg)]) == 2
    _one_line_error(capsys, "study.out_dir", "is a file")
    cfg = _study(tmp_path, out=tmp_path / "afile" / "reports")
    assert main(["run", str(cfg)]) == 2
    _one_line_error(capsys, "lies under the file")
    assert not (tmp_path / "cache").exists()


def test_output_dir_helper_refuses_escapes_and_files(tmp_path):
    from repsim.errors import ConfigError, OutputError
    from repsim.pipeline.config import output_dir

    assert output_dir(tmp_path, "ok") == tmp_path / "ok" and (tmp_path / "ok").is_dir()
    for bad in ("../x", "x/../../y", "/abs"):
        with pytest.raises(ConfigError):
            output_dir(tmp_path, bad)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        output_dir(tmp_path / "f", "ok")
    (tmp_path / "ok2").write_text("x")  # a file where the report directory should go
    with pytest.raises(OutputError, match="cannot create the output directory"):
        output_dir(tmp_path, "ok2")


def test_subnetwork_without_an_action_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["subnetwork"])
    assert info.value.code == 2
    assert "needs an action" in capsys.readouterr().err


def test_malformed_subnetwork_report_directories(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    assert main(["subnetwork", "report", str(run)]) == 2
    _one_line_error(capsys, "no study.json")
    for content in ("[]", "{}", '{"study": {"name": "x"}}', '{"study": '):
        (run / "study.json").write_text(content)
        assert main(["subnetwork", "report", str(run)]) == 2
        _one_line_error(capsys, str(run))


def test_npz_with_a_pickled_object_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "npz.marker"
    np.savez(tmp_path / "a.npz", fc=np.ones((6, 3)), evil=np.array([Payload(marker)]))
    np.savez(tmp_path / "b.npz", fc=np.ones((6, 3)))
    assert main(["similarity", str(tmp_path / "a.npz"), str(tmp_path / "b.npz")]) == 2
    _one_line_error(capsys, "a.npz", "never loads")
    assert not marker.exists()


def test_crafted_search_checkpoint_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "ckpt.marker"
    payload = pickle.dumps(Payload(marker))
    pickle.loads(payload)  # live payload
    assert marker.exists()
    marker.unlink()
    cfg = tmp_path / "bise.toml"
    cfg.write_text(BISE.format(out=tmp_path / "reports", cache=tmp_path / "cache"))
    ckpt = tmp_path / "reports" / "tiny_bise" / "seed0" / "checkpoint.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"config_hash": Payload(marker)}, ckpt)
    assert main(["subnetwork", "search", str(cfg), "--resume"]) == 2
    _one_line_error(capsys, "checkpoint", "never unpickles")
    assert not marker.exists()
