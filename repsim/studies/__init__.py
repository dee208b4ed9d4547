"""The studies that ship with repsim, and how a study is named on the command line.

Every study config repsim ships is a TOML file in this package (package data, so it is there
in an installed wheel as in a source checkout). A study is addressed by its name
(``repsim run quickstart``) or by the path of any TOML file (``repsim run my_study.toml``);
``repsim studies list`` lists the shipped ones and ``repsim studies show NAME`` prints one, to
copy and edit. A config whose study is a bias-free subnetwork search (it has a
``[subnetwork]`` section) runs with ``repsim subnetwork search NAME``.

Relative paths inside a config (``out_dir``, ``cache_dir``) are relative to the directory
the command runs in, for shipped and user configs alike.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from repsim.errors import ConfigError, did_you_mean

__all__ = ["StudyInfo", "apply_overrides", "list_studies", "study_path"]

#: The folder that held the shipped configs before 0.2; ``analyses/NAME.toml`` still resolves.
OLD_FOLDER = "analyses"


@dataclass(frozen=True)
class StudyInfo:
    """One shipped study.

    Attributes
    ----------
    name : str
        What ``repsim run NAME`` (or ``repsim subnetwork search NAME``) takes.
    kind : str
        ``"study"`` (``repsim run``) or ``"subnetwork"`` (``repsim subnetwork search``).
    description : str
        ``[study] description``, else the config's first comment line.
    path : pathlib.Path
        The TOML file.
    """

    name: str
    kind: str
    description: str
    path: Path

    @property
    def command(self) -> str:
        """The command that runs it."""
        verb = "subnetwork search" if self.kind == "subnetwork" else "run"
        return f"repsim {verb} {self.name}"


def _folder() -> Path:
    return Path(str(resources.files(__name__)))


def _describe(path: Path) -> StudyInfo:
    text = path.read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    description = str(raw.get("study", {}).get("description", "")).strip()
    if not description:
        comments = [ln.lstrip("# ").strip() for ln in text.splitlines() if ln.startswith("#")]
        description = comments[0] if comments else ""
    kind = "subnetwork" if "subnetwork" in raw else "study"
    return StudyInfo(path.stem, kind, description, path)


def list_studies() -> dict[str, StudyInfo]:
    """The shipped studies by name, in alphabetical order."""
    return {p.stem: _describe(p) for p in sorted(_folder().glob("*.toml"))}


def study_path(study: str | Path) -> Path:
    """The config file a study argument names: an existing file, or a shipped study's name.

    Parameters
    ----------
    study : str or path-like
        A path to a TOML file (used as it is when it exists), or the name of a shipped study
        (``"quickstart"``; ``"quickstart.toml"`` too). The 0.1 paths ``analyses/NAME.toml``
        of the shipped studies resolve to the shipped file when no such file exists.

    Returns
    -------
    pathlib.Path
        The config file.

    Raises
    ------
    ConfigError
        When ``study`` is neither an existing file nor a shipped study, naming the shipped
        studies and the closest name.
    """
    path = Path(study)
    if path.is_file():
        return path
    shipped = {p.stem: p for p in _folder().glob("*.toml")}
    text = str(study)
    name = path.stem if path.suffix == ".toml" else path.name
    bare = path.parent == Path(".") and not text.startswith(".")
    if name in shipped and (bare or path.parent.name == OLD_FOLDER):
        return shipped[name]
    names = sorted(shipped)
    if bare and path.suffix != ".toml":
        raise ConfigError(
            f"Unknown study {text!r}: neither a shipped study nor a file. Shipped studies are "
            f"{names} ('repsim studies list'); or give the path of a TOML config."
            + did_you_mean(name, names)
        )
    raise ConfigError(
        f"No config file at {text}: it does not exist; check the path, or name a shipped study "
        f"({', '.join(names)})." + did_you_mean(name, names)
    )


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a config as read (before validation) with dotted keys set.

    Parameters
    ----------
    raw : mapping
        Section name -> table, as :mod:`tomllib` reads a config.
    overrides : mapping of str to Any
        ``"section.key"`` (or ``"section.table.key"``) -> value, e.g.
        ``{"train.epochs": 1, "study.seeds": [0, 1]}``. Validation afterwards checks each
        key and value as if the file had said it.

    Raises
    ------
    ConfigError
        When a key has no section part, or a part of its path is a value, not a table.
    """
    out = copy.deepcopy(dict(raw))
    for dotted, value in overrides.items():
        parts = [p.strip() for p in str(dotted).split(".")]
        if len(parts) < 2 or not all(parts):
            raise ConfigError(
                f"cannot set {dotted!r}: name the section and the key, e.g. train.epochs=1."
            )
        table = out
        for i, part in enumerate(parts[:-1]):
            nxt = table.setdefault(part, {})
            if not isinstance(nxt, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"cannot set {dotted!r}: '{where}' is a value, not a table.")
            table = nxt
        table[parts[-1]] = value
    return out
