"""Shipped studies: listed, printed, addressed by name or path; --set overrides; --threads."""

from __future__ import annotations

from pathlib import Path

import pytest

from repsim.cli import main
from repsim.errors import ConfigError
from repsim.studies import apply_overrides, list_studies, study_path

STUDIES = Path(__file__).resolve().parents[2] / "repsim" / "studies"
SHIPPED = sorted(p.stem for p in STUDIES.glob("*.toml"))


def test_every_shipped_config_is_listed_with_its_command(capsys):
    assert "quickstart" in SHIPPED and len(SHIPPED) >= 7
    assert list(list_studies()) == SHIPPED
    assert main(["studies", "list"]) == 0
    out = capsys.readouterr().out
    for name, info in list_studies().items():
        assert info.command in out and info.description in out, name
    assert "repsim run quickstart" in out
    assert "repsim subnetwork search colour_digits_bise" in out


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_validates(name):
    from repsim.pipeline.config import load_config
    from repsim.pipeline.run_search import _schema
    from repsim.pipeline.study import load_study

    info = list_studies()[name]
    if info.kind == "subnetwork":
        config = load_config(study_path(name), schema=_schema())
    else:
        config = load_study(name)
    assert config["study"]["name"] == name
    assert Path(config["_source"]) == STUDIES / f"{name}.toml"


def test_show_prints_the_config_and_where_it_is(capsys):
    assert main(["studies", "show", "quickstart"]) == 0
    assert capsys.readouterr().out == (STUDIES / "quickstart.toml").read_text()
    assert main(["studies", "show", "quickstart", "--where"]) == 0
    assert Path(capsys.readouterr().out.strip()) == STUDIES / "quickstart.toml"


def test_study_path_resolution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = STUDIES / "quickstart.toml"
    assert study_path("quickstart") == shipped
    assert study_path("quickstart.toml") == shipped
    assert study_path("analyses/quickstart.toml") == shipped  # the 0.1 path still works
    (tmp_path / "quickstart.toml").write_text("[study]\nname = 'mine'\n")
    assert study_path("quickstart.toml") == Path("quickstart.toml")  # a file wins
    assert study_path("quickstart") == shipped  # a bare name is the shipped study
    own = tmp_path / "my.toml"
    own.write_text("")
    assert study_path(own) == own


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "quickstrat"], "Unknown study 'quickstrat'.*Did you mean.*'quickstart'"),
        (["run", "nowhere/quickstart.toml"], "No config file at nowhere/quickstart.toml"),
        (["run", "./quickstart.toml"], "No config file at ./quickstart.toml"),
        (["studies", "show", "imbalanced"], "Unknown study 'imbalanced'.*imbalanced_digits"),
        (["train", "quickstart", "--set", "train.epocs=1"], "unknown key 'train.epocs'"),
        (["run", "quickstart", "--set", "epochs=1"], "name the section and the key"),
        (["run", "quickstart", "--set", "train.epochs"], "--set takes SECTION.KEY=VALUE"),
        (["run", "quickstart", "--set", "study.threads=-1"], "'study.threads' must be"),
        (["run", "quickstart", "--set", "study.name.x=1"], "'study.name' is a value"),
        (["run", "quickstart", "--threads", "-2"], "'--threads' must be"),
        (["-q", "run", "quickstart", "--set", "train.epochs='x'"], "'train.epochs' must be"),
    ],
)
def test_bad_study_arguments_exit_2_with_one_line(tmp_path, monkeypatch, argv, message, capsys):
    import re

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert re.search(message, captured.err), captured.err
    assert not (tmp_path / "cache").exists()  # nothing ran


def test_apply_overrides_sets_nested_keys_on_a_copy():
    raw = {"train": {"epochs": 10}, "study": {"name": "x"}}
    out = apply_overrides(
        raw, {"train.epochs": 1, "study.seeds": [0, 1], "family.train.lr": 0.1, "report.n": 2}
    )
    assert out == {
        "train": {"epochs": 1},
        "study": {"name": "x", "seeds": [0, 1]},
        "family": {"train": {"lr": 0.1}},
        "report": {"n": 2},
    }
    assert raw == {"train": {"epochs": 10}, "study": {"name": "x"}}
    with pytest.raises(ConfigError, match="name the section"):
        apply_overrides(raw, {"epochs": 1})


def test_set_values_are_read_as_toml():
    from repsim.cli._common import parse_set

    assert parse_set(["study.seeds=[0, 1]", "train.lr=0.5", "study.name=x", 'data.groups="a"']) == {
        "study.seeds": [0, 1],
        "train.lr": 0.5,
        "study.name": "x",
        "data.groups": "a",
    }
