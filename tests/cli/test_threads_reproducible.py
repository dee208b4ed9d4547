"""Issue 14 acceptance: the study pins its threads, so the shell's OMP_NUM_THREADS changes nothing.

The quickstart runs twice on a tiny setting in fresh processes, with ``OMP_NUM_THREADS`` (and
the other BLAS variables) 1 and 2 and separate caches, so each run trains, prunes, fine-tunes,
distils and measures from scratch. Every number of ``results.json`` must be identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TINY = {
    "study.seeds": "[0, 1]",
    "train.epochs": "1",
    "compression.sparsities": "[0.5, 0.9]",
    "compression.epochs": "1",
    "report.n_boot": "30",
    "report.n_permutations": "30",
    "similarity.heatmaps": "false",
    "capture.layers": '["features.relu1", "relu", "classifier"]',
}

#: Keys that describe the run, not its numbers.
RUN_KEYS = ("timings", "versions", "work", "config", "config_file", "results")


def _run(tmp: Path, threads: str) -> dict:
    work = tmp / f"omp{threads}"
    work.mkdir()
    sets = {
        **TINY,
        "study.cache_dir": json.dumps(str(work / "cache")),
        "study.out_dir": json.dumps(str(work / "reports")),
    }
    cmd = [sys.executable, "-m", "repsim", "-q", "run", "quickstart"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = threads
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return json.loads((work / "reports" / "quickstart" / "results.json").read_text())


def test_omp_threads_1_and_2_give_identical_results(tmp_path):
    one, two = _run(tmp_path, "1"), _run(tmp_path, "2")
    assert one["threads"] == two["threads"] == 1  # the study's pinned count, recorded
    assert one["work"]["dense_trained"] == two["work"]["dense_trained"] == 2  # both from scratch
    numbers_one = {k: v for k, v in one.items() if k not in RUN_KEYS}
    numbers_two = {k: v for k, v in two.items() if k not in RUN_KEYS}
    assert numbers_one["relations"]["controlled"]  # the comparison covers the analysis
    assert json.dumps(numbers_one, sort_keys=True) == json.dumps(numbers_two, sort_keys=True)
