"""Study and training configs: TOML files validated on load, with errors that name the key.

A config is a TOML file read with :mod:`tomllib`. Every section and key is declared in a schema
(:data:`SCHEMA`); an unknown or mistyped key raises :class:`~repsim.errors.ConfigError` naming it
(``train.epocs``) with the closest valid names, before any long work starts. The ``[data]`` and
``[model]`` sections take ``name`` plus the options of that dataset or architecture, which are
checked against the loader's or model's signature. Later stages register their own sections with
:func:`register_section`.
"""

from __future__ import annotations

import inspect
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repsim.errors import ConfigError, RepsimError, did_you_mean

_REQUIRED = object()


@dataclass(frozen=True)
class Field:
    """One config key: accepted types, default (or required), allowed values, help text."""

    types: tuple[type, ...]
    default: Any = _REQUIRED
    choices: tuple[Any, ...] | None = None
    help: str = ""

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


def _int_field(default: Any = _REQUIRED, help: str = "") -> Field:
    return Field((int,), default, help=help)


def _float_field(default: Any = _REQUIRED, help: str = "") -> Field:
    return Field((int, float), default, help=help)


@dataclass(frozen=True)
class Section:
    """A config section: its fields, and for open sections a validator of the extra keys."""

    fields: Mapping[str, Field]
    required: bool = False
    extra: Callable[[dict[str, Any], str], None] | None = None
    help: str = ""


def _check_dataset_options(section: dict[str, Any], where: str) -> None:
    from repsim.data import DATASETS

    name = section.get("name")
    if name not in DATASETS:
        raise ConfigError(
            f"{where}.name = {name!r} is not a dataset; built-in datasets are "
            f"{sorted(DATASETS)}.{did_you_mean(str(name), DATASETS)}"
        )
    params = inspect.signature(DATASETS[name]).parameters
    for key in section:
        if key not in ("name", "groups") and key not in params:
            raise ConfigError(
                f"unknown key '{where}.{key}' for dataset {name!r}; its options are "
                f"{sorted(params)}.{did_you_mean(key, params)}"
            )


def _check_model_options(section: dict[str, Any], where: str) -> None:
    from repsim.models import MODELS, model_options

    name = section.get("name")
    if name not in MODELS:
        raise ConfigError(
            f"{where}.name = {name!r} is not a model; models are {sorted(MODELS)}."
            + did_you_mean(str(name), MODELS)
        )
    allowed = model_options(name)
    for key in section:
        if key != "name" and key not in allowed:
            raise ConfigError(
                f"unknown key '{where}.{key}' for model {name!r}; its options are "
                f"{allowed}.{did_you_mean(key, allowed)}"
            )


SCHEMA: dict[str, Section] = {
    "study": Section(
        {
            "name": Field((str,), help="study name; the report goes to <out_dir>/<name>/"),
            "description": Field((str,), ""),
            "seed": _int_field(0, "seed of everything random"),
            "seeds": Field((list,), None, help="seeds of the dense population (default [seed])"),
            "out_dir": Field((str,), "reports", help="where reports are written"),
            "cache_dir": Field((str,), "cache", help="activation/model cache"),
        },
        required=True,
    ),
    "data": Section(
        {
            "name": Field((str,), help="built-in dataset name"),
            "groups": Field((str,), None, help="group attribute to use (default: dataset's)"),
        },
        required=True,
        extra=_check_dataset_options,
    ),
    "model": Section(
        {"name": Field((str,), help="architecture name")},
        required=True,
        extra=_check_model_options,
    ),
    "train": Section(
        {
            "epochs": _int_field(10),
            "batch_size": _int_field(64),
            "lr": _float_field(1e-3),
            "optimizer": Field((str,), "adam", ("adam", "adamw", "sgd")),
            "weight_decay": _float_field(0.0),
            "momentum": _float_field(0.9),
            "scheduler": Field((str,), "cosine", ("cosine", "none")),
            "patience": Field((int,), None),
        }
    ),
}


def register_section(name: str, section: Section) -> None:
    """Declare a config section (stages beyond the foundation add theirs)."""
    SCHEMA[name] = section


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types)


def validate(
    raw: Mapping[str, Any], *, source: str = "config", schema: Mapping[str, Section] | None = None
) -> dict[str, Any]:
    """Check ``raw`` against the schema and return a copy with defaults filled in.

    Raises
    ------
    ConfigError
        Naming the first unknown section or key, missing required key, wrong type or value.
    """
    schema = SCHEMA if schema is None else schema
    out: dict[str, Any] = {}
    for sec_name in raw:
        if sec_name not in schema:
            raise ConfigError(
                f"{source}: unknown section [{sec_name}]; sections are {sorted(schema)}."
                + did_you_mean(sec_name, schema)
            )
        if not isinstance(raw[sec_name], Mapping):
            raise ConfigError(f"{source}: '{sec_name}' must be a table ([{sec_name}]).")
    for sec_name, section in schema.items():
        if sec_name not in raw:
            if section.required:
                raise ConfigError(f"{source}: missing section [{sec_name}].")
            values: dict[str, Any] = {}
        else:
            values = dict(raw[sec_name])
        for key in values:
            if key not in section.fields and section.extra is None:
                raise ConfigError(
                    f"{source}: unknown key '{sec_name}.{key}'; valid keys are "
                    f"{sorted(section.fields)}.{did_you_mean(key, section.fields)}"
                )
        for key, field in section.fields.items():
            if key not in values:
                if field.required and (sec_name in raw or section.required):
                    raise ConfigError(f"{source}: missing key '{sec_name}.{key}'.")
                if not field.required:
                    values[key] = field.default
                continue
            value = values[key]
            if value is None and field.default is None:
                continue
            ok = isinstance(value, field.types) and not (
                isinstance(value, bool) and bool not in field.types
            )
            if not ok:
                raise ConfigError(
                    f"{source}: '{sec_name}.{key}' must be {_type_name(field.types)}, "
                    f"got {value!r}."
                )
            if field.choices is not None and value not in field.choices:
                raise ConfigError(
                    f"{source}: '{sec_name}.{key}' = {value!r} is not one of {list(field.choices)}."
                )
        if section.extra is not None and sec_name in raw:
            try:
                section.extra(dict(values), sec_name)
            except ConfigError as exc:
                raise ConfigError(f"{source}: {exc}") from None
        out[sec_name] = values
    return out


def load_config(path: str | Path, *, schema: Mapping[str, Section] | None = None) -> dict[str, Any]:
    """Read and validate a TOML config.

    Raises
    ------
    ConfigError
        If the file is missing, is not valid TOML (with the parser's line and column), or does
        not fit the schema.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Config file {p} does not exist.")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    config = validate(raw, source=str(p), schema=schema)
    config["_source"] = str(p)
    return config


def dataset_from_config(config: Mapping[str, Any]) -> Any:
    """Load the dataset that ``config['data']`` names, with its options and group attribute."""
    from repsim.data import load_dataset

    options = {k: v for k, v in config["data"].items() if k not in ("name", "groups")}
    try:
        data = load_dataset(config["data"]["name"], **options)
        if config["data"].get("groups"):
            data = data.with_groups(config["data"]["groups"])
    except RepsimError as exc:
        raise ConfigError(f"[data]: {exc}") from None
    return data


def model_from_config(config: Mapping[str, Any], data: Any, seed: int) -> Any:
    """Build the architecture ``config['model']`` names for ``data`` with init ``seed``."""
    from repsim.models import build_model

    options = {k: v for k, v in config["model"].items() if k != "name"}
    return build_model(
        config["model"]["name"],
        input_shape=data.train.input_shape,
        n_classes=data.train.n_classes,
        seed=seed,
        **options,
    )


def train_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config['train']`` as keyword arguments of :func:`repsim.train.fit`."""
    opts = dict(config.get("train", {}))
    if opts.get("scheduler") == "none":
        opts["scheduler"] = None
    return opts
