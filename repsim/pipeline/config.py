"""Every config of repsim: TOML files validated on load, with errors that name the key.

A config is a TOML file read with :mod:`tomllib`. Every section and key is declared in a schema
of :class:`Section` and :class:`Field` objects; an unknown or mistyped key raises
:class:`~repsim.errors.ConfigError` naming it (``train.epocs``, ``family.compression[0].bits``)
with the closest valid names, before any long work starts. This one machinery validates

- study configs (:data:`SCHEMA`, extended by the study stages with :func:`register_section`,
  and by subnetwork runs with :func:`extend_schema`);
- model families (``[family]``, :data:`repsim.pipeline.family.FAMILY_SECTION`), whose nested
  tables (``[family.train]``) and lists of tables (``[[family.compression]]``) are declared with
  :func:`table` and :func:`tables`.

The ``[data]`` and ``[model]`` sections take ``name`` plus the options of that dataset or
architecture, which are checked against the loader's or model's signature
(:func:`check_dataset`, :func:`check_model`). Besides the built-in names they take your own
data and models:

- ``[data] name = "mypkg.data:load_task"``: an import path of a function returning a
  :class:`~repsim.data.GroupedDataset`, a mapping ``{"train": ..., "test": ...[, "val": ...]}``
  of :class:`~repsim.data.GroupedData` (or anything :func:`repsim.data.as_grouped` takes), or
  one ``GroupedData`` (split by :func:`repsim.data.split_grouped` with the options
  ``test_fraction``, default 0.25, and ``split_seed``, default 0); the other keys are its
  keyword arguments;
- ``[data] path = "task.npz"``: arrays ``x`` (or ``x.<key>``), ``y``, ``groups`` and optional
  ``split`` (:func:`repsim.data.load_npz`; never unpickled); options ``test_fraction``,
  ``split_seed``. Its SHA-256 is added as ``sha256`` (given, it must match), so the model
  cache follows the file's content;
- ``[model] name = "mypkg.nets:make_resnet"``: an import path of a function (or class)
  returning an ``nn.Module``, called as :func:`repsim.models.from_builder` with the other keys
  as keyword arguments, plus ``n_classes`` and ``input_shape`` of the data when it takes
  parameters of those names that the config leaves out. The model can be saved and rebuilt
  by that path. ``weights = "init.safetensors"`` (a safetensors state dict, or a directory
  holding ``model.safetensors`` as ``save_pretrained`` writes it) is loaded into the model it
  builds, for any ``name``; its SHA-256 is added as ``weights_sha256``. ``.bin``/``.pt``
  checkpoints are refused: repsim never unpickles.

Relative paths are relative to the directory the command runs in. The model cache is keyed by
the import path and options, not by the code behind them: after editing a builder, clear
``<cache_dir>/models`` (or change an option).
"""

from __future__ import annotations

import copy
import inspect
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repsim._core.threads import DEFAULT_THREADS, check_threads
from repsim.errors import ConfigError, RepsimError, did_you_mean

_REQUIRED = object()

Check = Callable[[Any, str], Any]
"""``check(value, key) -> value``: validate (and normalise) one value; ``key`` is its dotted
name (``"family.seeds"``) for the message of the :class:`~repsim.errors.ConfigError` it raises."""


@dataclass(frozen=True)
class Field:
    """One config key: accepted types, default (or required), allowed values, help text.

    Attributes
    ----------
    types : tuple of type
        Accepted Python types (``bool`` is accepted only where listed, never as an ``int``).
    default : Any
        Value when the key is absent; without one the key is required.
    choices : tuple, optional
        The allowed values.
    help : str
        What the key means (shown in the message of a missing key).
    check : callable, optional
        ``check(value, key) -> value`` run after the type and choice checks, on given values
        and defaults alike: it raises :class:`~repsim.errors.ConfigError` naming ``key``, and
        returns the (normalised) value that goes into the validated config.
    section : Section, optional
        For a nested table (see :func:`table`) or a list of tables (:func:`tables`): the
        schema of each table.
    many : bool
        With ``section``: the value is a list of tables (a single table counts as a list of
        one).
    """

    types: tuple[type, ...]
    default: Any = _REQUIRED
    choices: tuple[Any, ...] | None = None
    help: str = ""
    check: Check | None = None
    section: Section | None = None
    many: bool = False

    @property
    def required(self) -> bool:
        """Whether the key has no default and must be given."""
        return self.default is _REQUIRED


def _int_field(default: Any = _REQUIRED, help: str = "") -> Field:
    return Field((int,), default, help=help)


def positive_int(value: Any, key: str) -> Any:
    """A :class:`Field` check: ``value`` is an integer of at least 1 (``None`` passes)."""
    if value is not None and value < 1:
        raise ConfigError(f"'{key}' must be a positive integer, got {value!r}.")
    return value


def non_negative_int(value: Any, key: str) -> Any:
    """A :class:`Field` check: ``value`` is an integer of at least 0 (``None`` passes)."""
    if value is not None and value < 0:
        raise ConfigError(f"'{key}' must be 0 or more, got {value!r}.")
    return value


def positive_number(value: Any, key: str) -> Any:
    """A :class:`Field` check: ``value`` is a finite number above 0 (``None`` passes)."""
    if value is not None and not 0 < value < float("inf"):
        raise ConfigError(f"'{key}' must be a positive number, got {value!r}.")
    return value


def non_negative_number(value: Any, key: str) -> Any:
    """A :class:`Field` check: ``value`` is a finite number of at least 0 (``None`` passes)."""
    if value is not None and not 0 <= value < float("inf"):
        raise ConfigError(f"'{key}' must be 0 or more, got {value!r}.")
    return value


_NAME_MAX = 100


def check_name(value: Any, key: str) -> str:
    """A :class:`Field` check for a name that becomes a file or directory name.

    It must be non-empty, at most 100 characters, and hold no path separator (a slash or a
    backslash), no ``..``, no control character, and not start with ``.``, so that every path
    built from it stays inside its root.

    Raises
    ------
    ConfigError
        Naming the key and what is wrong.
    """
    name = str(value)
    problem = None
    if not name.strip():
        problem = "is empty"
    elif len(name) > _NAME_MAX:
        problem = f"is longer than {_NAME_MAX} characters"
    elif any(sep in name for sep in ("/", "\\", os.sep, os.altsep or "/")):
        problem = "holds a path separator"
    elif ".." in name or name.startswith("."):
        problem = "holds '..' or starts with '.'"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "holds a control character"
    if problem is not None:
        raise ConfigError(
            f"'{key}' = {value!r} {problem}; it names a directory, so use letters, digits, "
            "'-', '_' and '.' (e.g. 'digits_study')."
        )
    return name


def check_dir(value: Any, key: str) -> Any:
    """A :class:`Field` check for an output directory: no existing part of it is a file.

    The directory itself need not exist (it is created when written), but if it, or the
    nearest of its parents that exists, is a file, nothing could ever be written there.
    """
    if value is None:
        return value
    p = Path(value)
    for part in (p, *p.parents):
        if part.exists():
            if not part.is_dir():
                what = "is a file" if part == p else f"lies under the file {part}"
                raise ConfigError(
                    f"'{key}' = {str(value)!r} {what}, not a directory; choose a directory path."
                )
            break
    return value


def output_dir(root: str | os.PathLike, name: str, *, key: str = "study.name") -> Path:
    """``root / name``, created, after checking it stays inside ``root`` and can be made.

    Raises
    ------
    ConfigError
        If ``name`` is not a plain directory name (:func:`check_name`) or ``root`` is a file.
    OutputError
        If the directory cannot be created (read-only or full disk).
    """
    from repsim.errors import OutputError

    check_name(name, key)
    check_dir(root, "study.out_dir")
    base = Path(root)
    out = base / name
    if os.path.dirname(os.path.normpath(out)) != os.path.normpath(base):
        raise ConfigError(f"'{key}' = {name!r} would write outside {base}; use a plain name.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create the output directory {out}: {exc.strerror or exc}. Choose a "
            "writable out_dir."
        ) from None
    return out


@dataclass(frozen=True)
class Section:
    """A config table: its fields, and the checks that span several of them.

    Attributes
    ----------
    fields : mapping of str to Field
        The declared keys, in the order they are checked.
    required : bool
        Whether a top-level section must be present.
    extra : callable, optional
        For an open section (one that takes keys beyond ``fields``, e.g. a dataset's options):
        ``extra(values, where)`` validates the whole table, raising ``ConfigError``.
    help : str
        What the section describes.
    check : callable, optional
        ``check(values, where) -> values`` run after every field: checks that involve several
        keys (e.g. ``bits`` only for ``method = "quantize"``) and normalisation.
    """

    fields: Mapping[str, Field]
    required: bool = False
    extra: Callable[[dict[str, Any], str], None] | None = None
    help: str = ""
    check: Callable[[dict[str, Any], str], dict[str, Any]] | None = None


def table(section: Section, help: str = "") -> Field:
    """A key holding a nested table (``[family.train]``), validated by ``section``.

    Absent, it is the table of ``section``'s defaults.
    """
    return Field((Mapping,), {}, help=help, section=section)


def tables(section: Section, help: str = "") -> Field:
    """A key holding a list of tables (``[[family.compression]]``), each validated by ``section``.

    Absent, it is an empty list; a single table is accepted as a list of one.
    """
    return Field((list, tuple, Mapping), [], help=help, section=section, many=True)


#: The ``[data] name`` of a dataset read from an ``.npz`` file (``[data] path``).
NPZ = "npz"
_NPZ_OPTIONS = ("path", "sha256", "test_fraction", "split_seed")
_SPLIT_OPTIONS = ("test_fraction", "split_seed")
_WEIGHTS_OPTIONS = ("weights", "weights_sha256")
_DATA_ARGS = ("n_classes", "input_shape")
_PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def is_import_path(name: Any) -> bool:
    """Whether a ``name`` is an import path ``"package.module:attribute"`` (it holds a colon)."""
    return isinstance(name, str) and ":" in name


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _imported(path: str, key: str) -> Any:
    from repsim.errors import ModelError
    from repsim.models.adapters import import_object

    try:
        obj = import_object(path)
    except ModelError as exc:
        raise ConfigError(f"{key} = {path!r}: {exc}") from None
    if not callable(obj):
        raise ConfigError(f"{key} = {path!r} is not callable; name a function or a class.")
    return obj


def _check_kwargs(fn: Any, options: Mapping[str, Any], what: str, options_key: str) -> None:
    """Raise unless ``fn`` takes every key of ``options`` (anything with ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return  # a builtin without a signature: let the call tell
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for key in options:
        if key not in params:
            raise ConfigError(
                f"unknown key '{options_key}.{key}' for {what}; it takes {sorted(params)}."
                f"{did_you_mean(key, params)}"
            )


def _check_file(value: Any, key: str, digest: Any, digest_key: str) -> None:
    if not isinstance(value, str | os.PathLike):
        raise ConfigError(f"'{key}' must be a path (a string), got {value!r}.")
    p = Path(value)
    if not p.exists():
        raise ConfigError(f"'{key}' = {str(value)!r} does not exist; check the path.")
    if digest is not None and p.is_file() and file_sha256(p) != digest:
        raise ConfigError(
            f"'{key}' = {str(value)!r} no longer has the SHA-256 '{digest_key}' = {digest!r}; "
            "the file changed. Remove the key (it is recomputed) or restore the file."
        )


def check_dataset(name: Any, options: Mapping[str, Any], name_key: str, options_key: str) -> None:
    """Check that ``name`` names a dataset and that it takes every key of ``options``.

    ``name`` is a built-in dataset, an import path (``"mypkg.data:load_task"``, importable
    and callable, taking the options other than ``test_fraction``/``split_seed``), or
    :data:`NPZ` with ``options["path"]`` an existing ``.npz`` file (see the module docstring).
    ``name_key`` and ``options_key`` are the dotted config names the message uses
    (``"data.name"``, ``"data"``; ``"family.dataset"``, ``"family.dataset_options"``).
    """
    from repsim.data import DATASETS

    if name == NPZ:
        for key in options:
            if key not in _NPZ_OPTIONS:
                raise ConfigError(
                    f"unknown key '{options_key}.{key}' for a dataset file; its options are "
                    f"{list(_NPZ_OPTIONS)}.{did_you_mean(key, _NPZ_OPTIONS)}"
                )
        if "path" not in options:
            raise ConfigError(f"'{options_key}.path' is required: the .npz file of the data.")
        _check_file(options["path"], f"{options_key}.path", options.get("sha256"), "sha256")
        if not Path(options["path"]).is_file():
            raise ConfigError(f"'{options_key}.path' = {options['path']!r} is not a file.")
        return
    if is_import_path(name):
        fn = _imported(name, name_key)
        rest = {k: v for k, v in options.items() if k not in _SPLIT_OPTIONS}
        _check_kwargs(fn, rest, f"dataset {name!r}", options_key)
        return
    if name not in DATASETS:
        raise ConfigError(
            f"{name_key} = {name!r} is not a dataset; built-in datasets are "
            f"{sorted(DATASETS)}.{did_you_mean(str(name), DATASETS)} Your own data: an "
            "import path 'package.module:function' or path = 'file.npz'."
        )
    params = inspect.signature(DATASETS[name]).parameters
    for key in options:
        if key not in params:
            raise ConfigError(
                f"unknown key '{options_key}.{key}' for dataset {name!r}; its options are "
                f"{sorted(params)}.{did_you_mean(key, params)}"
            )


def check_model(name: Any, options: Mapping[str, Any], name_key: str, options_key: str) -> None:
    """Check that ``name`` names a model and that it takes every key of ``options``.

    ``name`` is a built-in architecture or an import path (``"mypkg.nets:make_resnet"``,
    importable and callable, taking the options). ``options`` may also hold ``weights`` (an
    existing safetensors file, or a directory with ``model.safetensors``) and its
    ``weights_sha256``. See :func:`check_dataset` for ``name_key`` and ``options_key``.
    """
    from repsim.models import MODELS, model_options

    if options.get("weights") is not None:
        weights = options["weights"]
        _check_file(
            weights, f"{options_key}.weights", options.get("weights_sha256"), "weights_sha256"
        )
        weights_file(weights, f"{options_key}.weights")
    options = {k: v for k, v in options.items() if k not in _WEIGHTS_OPTIONS}
    if is_import_path(name):
        fn = _imported(name, name_key)
        _check_kwargs(fn, options, f"model {name!r}", options_key)
        return
    if name not in MODELS:
        raise ConfigError(
            f"{name_key} = {name!r} is not a model; models are {sorted(MODELS)}."
            + did_you_mean(str(name), MODELS)
            + " Your own model: an import path 'package.module:function'."
        )
    allowed = model_options(name)
    for key in options:
        if key not in allowed:
            raise ConfigError(
                f"unknown key '{options_key}.{key}' for model {name!r}; its options are "
                f"{allowed}.{did_you_mean(key, allowed)}"
            )


def weights_file(value: str | os.PathLike, key: str = "model.weights") -> Path:
    """The safetensors file a ``weights`` value names (a directory: its ``model.safetensors``).

    Raises
    ------
    ConfigError
        A pickle-based checkpoint (``.bin``, ``.pt``...), or a directory without
        ``model.safetensors``.
    """
    p = Path(value)
    if p.is_dir():
        inner = p / "model.safetensors"
        if not inner.is_file():
            raise ConfigError(
                f"'{key}' = {str(value)!r} is a directory without model.safetensors; name the "
                "safetensors file of the state dict."
            )
        return inner
    if p.suffix.lower() in _PICKLED:
        raise ConfigError(
            f"'{key}' = {str(value)!r} is a pickle-based checkpoint, which repsim never loads "
            "(unpickling can run code). Convert it once: safetensors.torch.save_file("
            "torch.load(path, weights_only=True), 'weights.safetensors')."
        )
    return p


def _open_section(values: dict[str, Any], where: str) -> None:
    """Open sections take keys beyond their fields; their ``check`` validates them all."""


def _data_section(values: dict[str, Any], where: str) -> dict[str, Any]:
    """``[data]``: ``name`` or ``path`` (then ``name = "npz"``), options checked, file hashed."""
    name, path = values.get("name"), values.get("path")
    if path is None:
        values.pop("path", None)
        if name is None:
            raise ConfigError(
                f"missing key '{where}.name' (a built-in dataset or 'package.module:function') "
                f"or '{where}.path' (an .npz file)."
            )
    else:
        if name not in (None, NPZ):
            raise ConfigError(
                f"'{where}' names both a dataset ({name!r}) and a file ({path!r}); keep one."
            )
        values["name"] = NPZ
    options = {k: v for k, v in values.items() if k not in ("name", "groups")}
    check_dataset(values["name"], options, f"{where}.name", where)
    if values["name"] == NPZ and values.get("sha256") is None:
        values["sha256"] = file_sha256(values["path"])
    return values


def _model_section(values: dict[str, Any], where: str) -> dict[str, Any]:
    """``[model]``: ``name`` and its options checked, ``weights`` hashed."""
    if values.get("weights") is None:
        values.pop("weights", None)
    options = {k: v for k, v in values.items() if k != "name"}
    check_model(values["name"], options, f"{where}.name", where)
    if "weights" in values and values.get("weights_sha256") is None:
        values["weights_sha256"] = file_sha256(weights_file(values["weights"], f"{where}.weights"))
    return values


def _check_seed_list(seeds: list[Any], key: str) -> list[Any]:
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"'{key}' must be a non-empty list of integers, got {seeds!r}.")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"'{key}' repeats a seed: {seeds}.")
    return seeds


def study_seeds(config: Mapping[str, Any]) -> list[int]:
    """The dense seeds of a study config: ``study.seeds``, else ``[study.seed]``.

    Raises
    ------
    ConfigError
        If the seeds are not distinct integers (a config :func:`validate` passed never
        raises).
    """
    study = config["study"]
    seeds = study["seeds"] if study["seeds"] is not None else [study["seed"]]
    return list(_check_seed_list(seeds, "study.seeds"))


SCHEMA: dict[str, Section] = {
    "study": Section(
        {
            "name": Field(
                (str,), help="study name; the report goes to <out_dir>/<name>/", check=check_name
            ),
            "description": Field((str,), ""),
            "seed": _int_field(0, "seed of everything random"),
            "seeds": Field(
                (list,),
                None,
                help="seeds of the dense population (default [seed])",
                check=_check_seed_list,
            ),
            "out_dir": Field((str,), "reports", help="where reports are written", check=check_dir),
            "cache_dir": Field((str,), "cache", help="activation/model cache", check=check_dir),
            "threads": Field(
                (int,), DEFAULT_THREADS, help="CPU threads (0: all cores)", check=check_threads
            ),
        },
        required=True,
    ),
    "data": Section(
        {
            "name": Field(
                (str,), None, help="built-in dataset, or 'package.module:function' of your own"
            ),
            "path": Field((str,), None, help="an .npz file of arrays x, y, groups [, split]"),
            "groups": Field((str,), None, help="group attribute to use (default: dataset's)"),
        },
        required=True,
        extra=_open_section,
        check=_data_section,
    ),
    "model": Section(
        {
            "name": Field(
                (str,), help="architecture name, or 'package.module:function' of your own"
            ),
            "weights": Field((str,), None, help="safetensors state dict loaded into the model"),
        },
        required=True,
        extra=_open_section,
        check=_model_section,
    ),
    "train": Section(
        {
            "epochs": Field((int,), 10, check=non_negative_int),
            "batch_size": Field((int,), 64, check=positive_int),
            "lr": Field((int, float), 1e-3, check=positive_number),
            "optimizer": Field((str,), "adam", ("adam", "adamw", "sgd")),
            "weight_decay": Field((int, float), 0.0, check=non_negative_number),
            "momentum": Field((int, float), 0.9, check=non_negative_number),
            "scheduler": Field((str,), "cosine", ("cosine", "none")),
            "patience": Field((int,), None, check=positive_int),
        }
    ),
}


def register_section(name: str, section: Section) -> None:
    """Declare a section of the study schema :data:`SCHEMA` (the study stages add theirs)."""
    SCHEMA[name] = section


def extend_schema(sections: Mapping[str, Section]) -> dict[str, Section]:
    """:data:`SCHEMA` as it stands plus ``sections``: a new schema, the shared one unchanged.

    Used for configs that need sections other studies do not have (``[subnetwork]``).
    """
    return {**SCHEMA, **sections}


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types)


def _check_type(value: Any, field: Field, key: str) -> None:
    ok = isinstance(value, field.types) and not (
        isinstance(value, bool) and bool not in field.types
    )
    if ok:
        return
    if field.section is not None:
        what = "a list of tables ([[{0}]])" if field.many else "a table ([{0}])"
        raise ConfigError(f"'{key}' must be {what.format(key)}, got {value!r}.")
    raise ConfigError(f"'{key}' must be {_type_name(field.types)}, got {value!r}.")


def _check_value(value: Any, field: Field, key: str) -> Any:
    """One present value: type, choices, nested tables, the field's own check."""
    if value is None and field.default is None:
        return None
    _check_type(value, field, key)
    if field.choices is not None and value not in field.choices:
        names = [c for c in field.choices if isinstance(c, str)]
        hint = did_you_mean(value, names) if isinstance(value, str) else ""
        raise ConfigError(f"'{key}' = {value!r} is not one of {list(field.choices)}.{hint}")
    if field.section is not None:
        if not field.many:
            value = validate_section(value, field.section, key)
        else:
            items = [value] if isinstance(value, Mapping) else list(value)
            value = [
                validate_section(item, field.section, f"{key}[{i}]") for i, item in enumerate(items)
            ]
    if field.check is not None:
        value = field.check(value, key)
    return value


def validate_section(
    values: Any, section: Section, where: str, *, present: bool = True
) -> dict[str, Any]:
    """Check one table against ``section`` and return a copy with defaults filled in.

    Parameters
    ----------
    values : mapping
        The table as read (a TOML table or a dict).
    section : Section
        Its schema.
    where : str
        Its dotted name, the prefix of every key in messages (``"train"``,
        ``"family.compression[0]"``).
    present : bool
        ``False`` for an optional top-level section the config leaves out: its required keys
        are then not demanded and its ``extra`` validator does not run.

    Returns
    -------
    dict
        The given keys first (in their order), then the defaults of the absent ones.

    Raises
    ------
    ConfigError
        Naming the first unknown, missing, mistyped or invalid key.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"'{where}' must be a table, got {values!r}.")
    out = dict(values)
    if section.extra is None:
        for key in out:
            if key not in section.fields:
                raise ConfigError(
                    f"unknown key '{where}.{key}'; valid keys are "
                    f"{sorted(section.fields)}.{did_you_mean(key, section.fields)}"
                )
    for key, field in section.fields.items():
        name = f"{where}.{key}"
        if key in out:
            out[key] = _check_value(out[key], field, name)
        elif not field.required:
            out[key] = _check_value(copy.deepcopy(field.default), field, name)
        elif present:
            hint = f" ({field.help})" if field.help else ""
            raise ConfigError(f"missing key '{name}'{hint}.")
    if section.extra is not None and present:
        section.extra(dict(out), where)
    if section.check is not None:
        out = section.check(out, where)
    return out


def validate(
    raw: Mapping[str, Any], *, source: str = "config", schema: Mapping[str, Section] | None = None
) -> dict[str, Any]:
    """Check ``raw`` against the schema and return a copy with defaults filled in.

    Parameters
    ----------
    raw : mapping
        Section name -> table, as :mod:`tomllib` reads a file.
    source : str
        Where the config came from (a path), the prefix of every message.
    schema : mapping of str to Section, optional
        Default :data:`SCHEMA`.

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
        present = sec_name in raw
        if not present and section.required:
            raise ConfigError(f"{source}: missing section [{sec_name}].")
        try:
            out[sec_name] = validate_section(
                raw[sec_name] if present else {}, section, sec_name, present=present
            )
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return out


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML file.

    Raises
    ------
    ConfigError
        If the file is missing or is not valid TOML (with the parser's line and column).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"No config file at {p}: it does not exist; check the path.")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None


def load_config(path: str | Path, *, schema: Mapping[str, Section] | None = None) -> dict[str, Any]:
    """Read and validate a TOML config.

    Raises
    ------
    ConfigError
        If the file is missing, is not valid TOML (with the parser's line and column), or does
        not fit the schema.
    """
    config = validate(read_toml(path), source=str(Path(path)), schema=schema)
    config["_source"] = str(Path(path))
    return config


def load_data_source(name: str, options: Mapping[str, Any] | None = None) -> Any:
    """The :class:`~repsim.data.GroupedDataset` a ``[data]`` name and its options give.

    ``name`` is a built-in dataset, an import path, or :data:`NPZ` (see the module
    docstring); ``options`` are the section's other keys (not ``groups``).

    Raises
    ------
    DataError, ConfigError
        As :func:`check_dataset`, or the data the function returns does not fit.
    """
    from repsim.data import GroupedDataset, as_grouped, load_dataset, load_npz, split_grouped
    from repsim.errors import DataError

    options = dict(options or {})
    if name == NPZ:
        check_dataset(name, options, "data.name", "data")
        kwargs = {k: options[k] for k in _SPLIT_OPTIONS if k in options}
        return load_npz(options["path"], **kwargs)
    if not is_import_path(name):
        return load_dataset(name, **options)
    fn = _imported(name, "data.name")
    split = {k: options.pop(k) for k in _SPLIT_OPTIONS if k in options}
    result = fn(**options)
    if isinstance(result, GroupedDataset):
        return result
    label = name.rpartition(":")[2]
    if isinstance(result, Mapping):
        if not {"train", "test"} <= set(result):
            raise DataError(
                f"{name} returned a mapping with keys {sorted(result)}; expected 'train' and "
                "'test' (and optionally 'val') splits."
            )
        parts = _shared_codes(
            {
                k: as_grouped(v, name=label, split=k, what=f"{name}()[{k!r}]")
                for k, v in result.items()
                if k in ("train", "test", "val")
            }
        )
        return GroupedDataset(
            label, parts["train"], parts["test"], parts.get("val"), source=name, options=options
        )
    data = as_grouped(result, name=label, what=f"{name}()")
    train, test = split_grouped(
        data,
        test_fraction=split.get("test_fraction", 0.25),
        seed=split.get("split_seed", 0),
    )
    return GroupedDataset(label, train, test, source=name, options={**options, **split})


def _name_key(name: str) -> tuple[int, float, str]:
    try:
        return 0, float(name), name
    except ValueError:
        return 1, 0.0, name


def _shared_codes(parts: dict[str, Any]) -> dict[str, Any]:
    """Splits made one by one, re-coded to share group names and class names.

    Group names become the union of every split's, in numeric-then-text order; class names
    ``"0".."K-1"`` with ``K`` the largest class count of any split.
    """
    from dataclasses import replace

    import numpy as np

    names = sorted({g for d in parts.values() for g in d.group_names}, key=_name_key)
    classes = max(parts.values(), key=lambda d: len(d.class_names)).class_names
    out = {}
    for key, d in parts.items():
        codes = np.asarray([names.index(g) for g in d.group_names], dtype=np.int64)
        groups = codes[d.groups] if len(d) else d.groups
        out[key] = replace(
            d,
            groups=groups,
            group_names=tuple(names),
            class_names=tuple(classes),
            attributes={d.group_attribute: groups},
            attribute_names={d.group_attribute: tuple(names)},
        )
    return out


def build_model_source(
    name: str, options: Mapping[str, Any] | None, data: Any, seed: int | None
) -> Any:
    """Build the model a ``[model]`` name and its options give, for ``data``, with init ``seed``.

    A built-in architecture gets ``input_shape`` and ``n_classes`` from ``data`` (a
    ``GroupedDataset``, whose train split is used, or a ``GroupedData``); an import path is
    called through :func:`repsim.models.from_builder` with the options, plus ``n_classes`` and
    ``input_shape`` when it takes parameters of those names the options leave out. A
    ``weights`` option is then loaded (:func:`load_weights`).

    Raises
    ------
    ConfigError, ModelError
        As :func:`check_model`, or weights that do not fit the model.
    """
    from repsim.models import build_model, from_builder

    options = dict(options or {})
    weights = options.pop("weights", None)
    options.pop("weights_sha256", None)
    split = getattr(data, "train", data)
    shape = [int(s) for s in split.input_shape]
    if is_import_path(name):
        fn = _imported(name, "model.name")
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        defaults = {"n_classes": int(split.n_classes), "input_shape": shape}
        for key in _DATA_ARGS:
            if key in params and key not in options:
                options[key] = defaults[key]
        model = from_builder(name, seed=seed, **options)
    else:
        model = build_model(
            name, input_shape=shape, n_classes=split.n_classes, seed=seed, **options
        )
    if weights is not None:
        load_weights(model, weights)
    return model


def load_weights(model: Any, weights: str | os.PathLike) -> Any:
    """Load a safetensors state dict into ``model`` (in place; returns it). Never unpickles.

    ``weights`` is a ``.safetensors`` file or a directory with ``model.safetensors``.
    Pruning masks (``*_orig``/``*_mask``) are re-applied; a parameter left out of the file
    is accepted only when it shares memory with one that is in it (tied weights).

    Raises
    ------
    ConfigError
        A pickle-based checkpoint or a missing file.
    ModelError
        Keys that do not fit the model.
    """
    from safetensors.torch import load_file

    from repsim.errors import ModelError
    from repsim.models.io import load_state_dict_pruned

    path = weights_file(weights)
    if not path.is_file():
        raise ConfigError(f"'model.weights' = {str(weights)!r} does not exist.")
    try:
        state = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure means the file is unusable
        raise ModelError(f"cannot read the weights {path}: {exc}") from None
    own = model.state_dict()
    first: dict[int, str] = {}  # storage -> the first key of the file that holds it
    for key, tensor in own.items():
        if key in state and tensor.numel():
            first.setdefault(tensor.data_ptr(), key)
    for key, tensor in own.items():  # tied weights saved once
        if key not in state and tensor.numel() and tensor.data_ptr() in first:
            state[key] = state[first[tensor.data_ptr()]]
    try:
        load_state_dict_pruned(model, dict(state))
    except ModelError as exc:
        raise ModelError(f"the weights {path} do not fit the model: {exc}") from None
    return model


def open_dataset(source: str, options: Mapping[str, Any] | None = None) -> Any:
    """A dataset named on the command line: a built-in name, an import path, or an ``.npz`` path.

    ``"digits"``, ``"mypkg.data:load_task"`` (with ``options`` as its keyword arguments) or
    ``"data/task.npz"`` (a path ending in ``.npz``; options ``test_fraction``, ``split_seed``).

    Raises
    ------
    ConfigError, DataError
        As :func:`check_dataset` and :func:`load_data_source`.
    """
    options = dict(options or {})
    if str(source).lower().endswith(".npz"):
        name, options = NPZ, {"path": str(source), **options}
    else:
        name = source
    check_dataset(name, options, "--data", "--option")
    return load_data_source(name, options)


def dataset_from_config(config: Mapping[str, Any]) -> Any:
    """Load the dataset that ``config['data']`` names, with its options and group attribute.

    Built-in, import path or ``.npz`` file (see the module docstring).
    """
    options = {k: v for k, v in config["data"].items() if k not in ("name", "groups")}
    try:
        data = load_data_source(config["data"]["name"], options)
        if config["data"].get("groups"):
            data = data.with_groups(config["data"]["groups"])
    except RepsimError as exc:
        raise ConfigError(f"[data]: {exc}") from None
    return data


def model_from_config(config: Mapping[str, Any], data: Any, seed: int) -> Any:
    """Build the model ``config['model']`` names for ``data`` with init ``seed``.

    A built-in architecture or an import path, with ``weights`` loaded (see the module
    docstring and :func:`build_model_source`).
    """
    options = {k: v for k, v in config["model"].items() if k != "name"}
    return build_model_source(config["model"]["name"], options, data, seed)


def train_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config['train']`` as keyword arguments of :func:`repsim.train.fit`."""
    opts = dict(config.get("train", {}))
    if opts.get("scheduler") == "none":
        opts["scheduler"] = None
    return opts
