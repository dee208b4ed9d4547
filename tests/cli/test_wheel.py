"""From a wheel: build it, install it into a fresh venv, run the quickstart outside the tree.

The fresh venv gets repsim only from the wheel; its other dependencies (torch, numpy, ...)
come from the environment running the tests through a ``.pth`` path line written after the
install (so installing never touches that environment, and nothing is downloaded). A
``.pth`` line adds a folder to ``sys.path`` without running the ``.pth`` files inside it, so
an editable repsim in the outer environment stays invisible: the test checks that the
``repsim`` it runs is the wheel's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

TINY = [
    "--set",
    "study.seeds=[0, 1]",
    "--set",
    "train.epochs=1",
    "--set",
    "compression.sparsities=[0.5, 0.8]",
    "--set",
    'compression.recovery=["ft"]',
    "--set",
    "compression.epochs=1",
    "--set",
    "report.n_boot=20",
    "--set",
    "report.n_permutations=20",
    "--set",
    "similarity.heatmaps=false",
]


def _setuptools_is_recent() -> bool:
    """Whether this environment's setuptools builds the project (PEP 639 licence: >= 77)."""
    import importlib.metadata

    try:
        major = int(importlib.metadata.version("setuptools").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False
    return major >= 77


def _run(cmd, cwd, env, **kw):
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, **kw
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A venv with the wheel installed, and the wheel's path."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "repsim", src / "repsim", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    pip = [sys.executable, "-m", "pip"]
    # Build with this environment's setuptools when it is recent enough (no download), else
    # in pip's isolated build environment.
    isolation = ["--no-build-isolation", "--no-index"] if _setuptools_is_recent() else []
    built = _run([*pip, "wheel", "--no-deps", *isolation, "-w", tmp / "dist", "./src"], tmp, env)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp / "dist").glob("repsim_bias-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    done = _run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel], tmp, env)
    assert done.returncode == 0, done.stdout + done.stderr
    site = _run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env
    )
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site.stdout.strip()) / "_outer_dependencies.pth").write_text("\n".join(sorted(outer)))
    work = tmp / "work"  # outside the source tree: no analyses/, no repsim/ beside it
    work.mkdir()
    return venv, wheel, work, env


def test_the_wheel_carries_studies_data_types_and_licence(installed):
    _, wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"repsim/studies/{p.name}" for p in (ROOT / "repsim" / "studies").glob("*.toml")}
    assert shipped and shipped <= names
    assert "repsim/py.typed" in names and "repsim/data/files/adult.data.gz" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "repsim = repsim.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_repsim_comes_from_the_wheel(installed):
    venv, _, work, env = installed
    where = _run(
        [venv / "bin" / "python", "-c", "import repsim; print(repsim.__file__)"], work, env
    )
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr
    listed = _run([venv / "bin" / "repsim", "studies", "list"], work, env)
    assert listed.returncode == 0 and "repsim run quickstart" in listed.stdout


@pytest.mark.slow
def test_quickstart_runs_from_the_installed_wheel(installed):
    venv, _, work, env = installed
    repsim = venv / "bin" / "repsim"
    cold = _run([repsim, "run", "quickstart", *TINY], work, env, timeout=900)
    assert cold.returncode == 0, cold.stderr
    for stage in ("validate", "family", "capture", "similarity", "fairness", "explain", "report"):
        assert re.search(rf"^\[repsim\] {stage}\s+\d+\.\d s ", cold.stderr, re.M), cold.stderr
    assert re.search(r"^\[repsim\] done in \d+\.\d s ", cold.stderr, re.M)
    report = work / "reports" / "quickstart"
    assert (report / "index.html").is_file() and (work / "cache" / "activations").is_dir()
    first = json.loads((report / "results.json").read_text())
    # magnitude+ft at 0.5, 0.8 and the controls none+ft, random+ft at 0.5, 0.8; two seeds
    assert first["work"]["dense_trained"] == 2 and first["work"]["compressed_built"] == 10
    assert Path(first["config_file"]).is_relative_to(venv)  # the packaged config

    warm = _run([repsim, "-q", "run", "quickstart", *TINY], work, env, timeout=900)
    assert warm.returncode == 0 and warm.stdout == "" and warm.stderr == "", warm.stderr
    second = json.loads((report / "results.json").read_text())
    assert set(second["work"].values()) == {0}
    assert second["relations"] == first["relations"]
