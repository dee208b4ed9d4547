"""The one config machinery: fields, nested tables, lists of tables, checks, schemas."""

from __future__ import annotations

import pytest

import repsim.pipeline.study  # noqa: F401  (registers the study sections)
from repsim.errors import ConfigError
from repsim.pipeline.config import (
    SCHEMA,
    Field,
    Section,
    extend_schema,
    load_config,
    read_toml,
    study_seeds,
    table,
    tables,
    validate,
    validate_section,
)
from repsim.pipeline.family import FAMILY_SECTION, family_config

INNER = Section({"a": Field((int,), 1), "b": Field((str,), "x", ("x", "y"))})
OUTER = Section(
    {
        "name": Field((str,), help="what it is called"),
        "size": Field((int,), 2, check=lambda v, key: v * 10),
        "inner": table(INNER),
        "items": tables(INNER),
    }
)


def test_nested_tables_get_their_defaults_and_checks():
    out = validate_section({"name": "n", "items": [{"a": 5}, {}]}, OUTER, "top")
    assert out == {
        "name": "n",
        "items": [{"a": 5, "b": "x"}, {"a": 1, "b": "x"}],
        "size": 20,  # a default goes through the field's check too
        "inner": {"a": 1, "b": "x"},
    }
    assert list(out) == ["name", "items", "size", "inner"]  # given keys first
    single = validate_section({"name": "n", "items": {"b": "y"}}, OUTER, "top")
    assert single["items"] == [{"a": 1, "b": "y"}]


def test_defaults_are_not_shared_between_configs():
    a = validate_section({"name": "n"}, OUTER, "top")
    a["inner"]["a"] = 99
    a["items"].append({})
    b = validate_section({"name": "n"}, OUTER, "top")
    assert b["inner"] == {"a": 1, "b": "x"} and b["items"] == []


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"name": "n", "inner": {"c": 1}}, r"unknown key 'top\.inner\.c'.*\['a', 'b'\]"),
        ({"name": "n", "items": [{}, {"a": "1"}]}, r"'top\.items\[1\]\.a' must be int"),
        ({"name": "n", "items": [{}, 3]}, r"'top\.items\[1\]' must be a table"),
        ({"name": "n", "inner": 3}, r"'top\.inner' must be a table"),
        ({"name": "n", "inner": {"b": "z"}}, r"'top\.inner\.b' = 'z' is not one of"),
        ({"name": "n", "size": True}, r"'top\.size' must be int, got True"),
        ({}, r"missing key 'top\.name' \(what it is called\)"),
    ],
)
def test_errors_name_the_nested_key(values, match):
    with pytest.raises(ConfigError, match=match):
        validate_section(values, OUTER, "top")


def test_family_section_is_validated_by_the_same_machinery():
    cfg = family_config({"dataset": "digits", "model": "mlp"})
    assert cfg == validate_section({"dataset": "digits", "model": "mlp"}, FAMILY_SECTION, "family")
    assert cfg["train"]["lr"] == 3e-3 and cfg["seeds"] == [0] and cfg["compression"] == []
    with pytest.raises(ConfigError, match=r"unknown key 'family\.train\.lrr'.*Did you mean 'lr'"):
        family_config({"dataset": "digits", "model": "mlp", "train": {"lrr": 1}})


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"dataset": "digts"}, r"family\.dataset = 'digts' is not a dataset.*'digits'"),
        ({"dataset_options": {"rho": 0.5}}, r"'family\.dataset_options\.rho' for dataset"),
        ({"model": "mlpp"}, r"family\.model = 'mlpp' is not a model"),
        ({"model_options": {"hiden": [8]}}, r"'family\.model_options\.hiden'.*'hidden'"),
        (
            {"compression": {"method": "magnitude", "sparsities": 0.5, "finetune": {"lr": "x"}}},
            r"'family\.compression\[0\]\.finetune\.lr' must be",
        ),
        (
            {"compression": [{"method": "magnitud", "sparsities": [0.5]}]},
            r"'family\.compression\[0\]\.method' = 'magnitud'.*Did you mean 'magnitude'",
        ),
    ],
)
def test_family_errors_come_before_any_training(patch, match):
    # family_config only validates: every one of these fails before a model is built
    with pytest.raises(ConfigError, match=match):
        family_config({"dataset": "digits", "model": "mlp", **patch})


def test_family_config_from_toml_ignores_other_sections(tmp_path):
    path = tmp_path / "f.toml"
    path.write_text(
        '[study]\nname = "x"\n[family]\ndataset = "digits"\nmodel = "cnn"\nseeds = 2\n'
        '[[family.compression]]\nmethod = "quantize"\nbits = 8\n'
    )
    cfg = family_config(path)
    assert cfg["seeds"] == [0, 1] and cfg["compression"][0]["bits"] == [8]
    assert cfg["compression"][0]["kd"] == [False]
    (tmp_path / "g.toml").write_text("[study]\n")
    with pytest.raises(ConfigError, match=r"no \[family\] section"):
        family_config(tmp_path / "g.toml")


def test_read_toml_errors(tmp_path):
    with pytest.raises(ConfigError, match="No config file at .* does not exist"):
        read_toml(tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("[a\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_toml(tmp_path / "bad.toml")


STUDY = """
[study]
name = "s"
{seeds}
[data]
name = "digits"
[model]
name = "mlp"
{extra}
"""


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ('[compression]\nmethods = ["magnitud"]', r"'compression\.methods' names unknown"),
        ('[compression]\nrecovery = ["distil"]', r"'compression\.recovery' names unknown"),
        ("[compression]\nsparsities = [0.5, 1.0]", r"'compression\.sparsities' must be"),
        ('[similarity]\nmeasures = ["ckaa"]', r"'similarity\.measures': unknown .*'ckaa'"),
        ("[similarity]\nmeasures = []", r"'similarity\.measures' must be a non-empty list"),
        ('[fairness]\nmetrics = ["sdee"]', r"'fairness\.metrics' names unknown 'sdee'"),
        ("[report]\nn_boot = 0", r"'report\.n_boot' must be at least 1"),
        ("[report]\nalpha = 1.5", r"'report\.alpha' must lie in \(0, 1\)"),
    ],
)
def test_study_keys_are_checked_on_load(tmp_path, extra, match):
    path = tmp_path / "s.toml"
    path.write_text(STUDY.format(seeds="", extra=extra))
    with pytest.raises(ConfigError, match=match):
        load_config(path)


@pytest.mark.parametrize(
    ("seeds", "expected"),
    [("", [0]), ("seed = 3", [3]), ("seeds = [2, 1]", [2, 1])],
)
def test_study_seeds(tmp_path, seeds, expected):
    path = tmp_path / "s.toml"
    path.write_text(STUDY.format(seeds=seeds, extra=""))
    assert study_seeds(load_config(path)) == expected


@pytest.mark.parametrize(
    ("seeds", "match"), [("seeds = []", "non-empty"), ("seeds = [1, 1]", "repeats a seed")]
)
def test_bad_study_seeds(tmp_path, seeds, match):
    path = tmp_path / "s.toml"
    path.write_text(STUDY.format(seeds=seeds, extra=""))
    with pytest.raises(ConfigError, match=rf"'study\.seeds'.*{match}"):
        load_config(path)


def test_extend_schema_leaves_the_shared_schema_alone():
    extra = Section({"k": Field((int,))}, required=True)
    before = dict(SCHEMA)
    schema = extend_schema({"extra": extra})
    assert SCHEMA == before and "extra" not in SCHEMA and schema["extra"] is extra
    raw = {"study": {"name": "s"}, "data": {"name": "digits"}, "model": {"name": "mlp"}}
    validate(raw)
    with pytest.raises(ConfigError, match=r"missing section \[extra\]"):
        validate(raw, schema=schema)
    assert validate({**raw, "extra": {"k": 1}}, schema=schema)["extra"] == {"k": 1}
