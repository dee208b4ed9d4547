"""What `repsim run` writes on stderr: stage lines with times (no TTY needed), -q, -v, threads."""

from __future__ import annotations

import json
import re

import pytest

from repsim.cli import main
from repsim.pipeline.study import STAGES

# One seed and one compressed model: cheap, and the relation stage warns (fewer than 3
# members), so a quiet run has a warning to hold back.
TINY = """
[study]
name = "t"
seed = 0
out_dir = "{out}"
cache_dir = "{cache}"

[data]
name = "digits"

[model]
name = "mlp"
hidden = [16]

[train]
epochs = 1

[compression]
sparsities = [0.5]
recovery = ["none"]
controls = []

[capture]
layers = ["features.relu1", "classifier"]

[similarity]
heatmaps = false

[report]
n_boot = 20
n_permutations = 20
"""

STAGE_LINE = r"^\[repsim\] {stage}\s+\d+\.\d s  \S"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A cold run, a warm quiet run and a warm verbose run with 2 threads, captured."""
    import contextlib
    import io
    import logging
    import warnings

    import torch

    def state():
        logger = logging.getLogger("repsim")
        handlers = list(logger.handlers)
        return (
            logger.level,
            logger.propagate,
            handlers,
            warnings.showwarning,
            torch.get_num_threads(),
        )

    before = state()
    tmp = tmp_path_factory.mktemp("run")
    config = tmp / "t.toml"
    config.write_text(TINY.format(out=tmp / "reports", cache=tmp / "cache"))
    results = []
    for extra in ([], ["-q"], ["-v", "--threads", "2"]):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["run", str(config), *extra])
        report = json.loads((tmp / "reports" / "t" / "results.json").read_text())
        results.append((code, out.getvalue(), err.getvalue(), report))
    results.append((before, state()))
    return results


def test_layers_of_the_tiny_model_exist():
    from repsim.layers import available_layers
    from repsim.models import build_model

    model = build_model("mlp", input_shape=(1, 8, 8), n_classes=10, hidden=[16])
    assert {"features.relu1", "classifier"} <= set(available_layers(model))


def test_stage_lines_with_times_without_a_terminal(runs):
    code, out, err, report = runs[0]
    assert code == 0
    for stage in STAGES:
        assert re.search(STAGE_LINE.format(stage=stage), err, re.M), (stage, err)
    done = re.search(r"^\[repsim\] done in \d+\.\d s \((.*)\) -> (\S+)$", err, re.M)
    assert done and done.group(2).endswith("index.html")
    assert [part.split()[0] for part in done.group(1).split(", ")] == list(STAGES)
    assert re.search(r"^\[repsim\] warning: RelationWarning: ", err, re.M)
    assert "\r" not in err  # no progress bars when stderr is not a terminal
    assert "report written to" in out and "dense seed 0: test accuracy" in out
    assert "what holds (controlled for sparsity" in out  # the controlled headline, not pooled
    assert report["threads"] == 1 and report["versions"]["threads"] == "1"
    assert set(report["timings"]) == {*STAGES, "total"}
    assert report["work"]["similarity_computed"] == 1 and report["work"]["report_written"] == 1


def test_quiet_writes_nothing_and_the_warm_run_reuses_everything(runs):
    code, out, err, report = runs[1]
    assert code == 0 and out == "" and err == ""
    assert report["work"] == {
        "dense_trained": 0,
        "compressed_built": 0,
        "captures": 0,
        "similarity_computed": 0,
        "report_written": 0,
    }
    first = runs[0][3]
    for key in ("dense", "configs", "relations", "kd_vs_ft"):
        assert report[key] == first[key], key


def test_verbose_adds_debug_lines_and_threads_apply(runs):
    code, _, err, report = runs[2]
    assert code == 0
    assert re.search(r"^\[repsim\] debug: ", err, re.M)
    assert re.search(STAGE_LINE.format(stage="similarity") + r".*1 from cache", err, re.M)
    assert "figures and index.html kept" in err
    assert report["threads"] == 2 and report["versions"]["threads"] == "2"


def test_cli_leaves_logging_warnings_and_threads_as_it_found_them(runs):
    before, after = runs[3]
    assert after == before
