import json
import subprocess
import sys
from pathlib import Path

import pytest

from repsim.cli import main
from repsim.errors import ConfigError
from repsim.pipeline.config import load_config

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
[study]
name = "t"
seed = 0
out_dir = "{out}"
cache_dir = "{cache}"

[data]
name = "digits"

[model]
name = "mlp"
hidden = [32]

[train]
epochs = 2
"""


def _write(tmp_path, text):
    p = tmp_path / "study.toml"
    p.write_text(text.format(out=tmp_path / "reports", cache=tmp_path / "cache"))
    return p


def test_config_defaults_filled(tmp_path):
    cfg = load_config(_write(tmp_path, GOOD))
    assert cfg["train"]["batch_size"] == 64 and cfg["train"]["epochs"] == 2
    assert cfg["study"]["seeds"] is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("epochs = 2", "epocs = 2"), "unknown key 'train.epocs'.*'epochs'"),
        (("[train]", "[trian]"), r"unknown section \[trian\].*'train'"),
        (('name = "digits"', 'name = "digts"'), "data.name = 'digts'.*'digits'"),
        (("hidden = [32]", "hiden = [32]"), "unknown key 'model.hiden'.*'hidden'"),
        (('name = "mlp"', 'name = "mlpp"'), "model.name = 'mlpp' is not a model.*'mlp'"),
        (("epochs = 2", 'epochs = "two"'), "'train.epochs' must be int"),
        (('name = "t"', ""), "missing key 'study.name'"),
        (("[data]", "[data\n"), "not valid TOML"),
    ],
)
def test_config_errors_name_the_key(tmp_path, edit, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, GOOD.replace(*edit)))


def test_cli_run_writes_report_and_reuses_cache(tmp_path, capsys):
    path = _write(tmp_path, GOOD)
    assert main(["run", str(path)]) == 0
    first = json.loads((tmp_path / "reports" / "t" / "results.json").read_text())
    assert first["work"]["dense_trained"] == 1
    assert main(["run", str(path)]) == 0
    second = json.loads((tmp_path / "reports" / "t" / "results.json").read_text())
    assert second["work"]["dense_trained"] == 0 and second["work"]["captures"] == 0
    assert (
        second["results"]["dense"][0]["test_accuracy"]
        == first["results"]["dense"][0]["test_accuracy"]
    )
    assert (tmp_path / "reports" / "t" / "index.html").is_file()
    capsys.readouterr()
    assert main(["train", str(path)]) == 0  # one model cache: run's dense model is reused
    assert "loaded from cache" in capsys.readouterr().out


def test_cli_data_show_adult_prints_sex_and_race(capsys):
    assert main(["data", "show", "adult"]) == 0
    out = capsys.readouterr().out
    assert "groups by sex (active groups): Female: 9782, Male: 20380" in out
    assert "groups by race: Amer-Indian-Eskimo: 286" in out


def test_cli_data_list(capsys):
    assert main(["data", "list"]) == 0
    assert "digits-colour" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "show", "nope"], "Unknown dataset 'nope'"),
        (["data", "show", "fashion-mnist", "--root", "/nonexistent"], "looked in: /nonexistent"),
        (["run", "/nonexistent.toml"], "does not exist"),
    ],
)
def test_cli_bad_input_exit_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_bad_config_key_exit_2(tmp_path, capsys):
    path = _write(tmp_path, GOOD.replace("epochs = 2", "epocs = 2"))
    assert main(["train", str(path)]) == 2
    assert "train.epocs" in capsys.readouterr().err


def test_cli_corrupt_idx_exit_2(tmp_path, fashion_dir, capsys):
    for f in fashion_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes() if "t10k-labels" not in f.name else b"xx")
    assert main(["data", "show", "fashion-mnist", "--root", str(tmp_path)]) == 2
    assert "t10k-labels" in capsys.readouterr().err


def test_module_entry_point_help():
    out = subprocess.run(
        [sys.executable, "-m", "repsim", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert "run" in out.stdout and "data" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "repsim", "frobnicate"], capture_output=True, text=True, cwd=ROOT
    )
    assert bad.returncode == 2


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line.strip() for line in readme.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2, "README must carry exactly two set-up commands"
    assert commands[1] in ci.splitlines(), "CI must run the README's test command verbatim"
    assert commands[0].endswith("repsim run quickstart")
    assert commands[1].endswith("python -m pytest -q -n 2")
    cpu_index = "--index-url https://download.pytorch.org/whl/cpu"
    assert all(cpu_index in c for c in commands), "both commands install the CPU build of torch"
    assert "pip install torch==2.13.0`" in readme  # the plain instruction for GPU machines
    for step in ("ruff check", "ruff format --check", "lint-imports", "mkdocs build --strict"):
        assert step in ci, step


def test_ci_runs_docs_and_lint_on_what_the_readme_installs():
    readme = (ROOT / "README.md").read_text()
    test_command = [ln for ln in readme.splitlines() if ln.startswith("python3 -m venv")][1]
    assert ".[test,dask,docs,hf]" in test_command  # mkdocs and transformers come with it
