"""Model families: populations of dense models and of their compressed versions.

One TOML section (``[family]``) or a plain dict describes a dataset, an architecture, the seeds,
and a list of compression settings. :func:`build` trains one dense model per seed and, for each
setting (method x sparsity or bit width, with or without distillation), derives one compressed
model per seed from the dense model of the same seed. Everything is saved under
``<cache_dir>/models/<family>-<hash>/`` with fingerprints, and a second build skips every member
that already exists. Populations matter: exemplar sets (PIE/CIE, Hooker et al. 2019) and the
significance tests compare several models per setting.

Example
-------
.. code-block:: toml

    [family]
    name = "digits-cnn"
    dataset = "digits-imbalanced"
    model = "cnn"
    seeds = [0, 1, 2, 3, 4]
    [family.train]
    epochs = 10
    lr = 3e-3
    [[family.compression]]
    method = "magnitude"
    sparsities = [0.5, 0.8, 0.9, 0.95]
    kd = [false, true]
    finetune_epochs = 5
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from repsim._core.fingerprints import state_digest
from repsim._core.io import read_json
from repsim.compress.distill import DistillationLoss, distill
from repsim.compress.mask import Mask
from repsim.compress.prune import METHODS as PRUNE_METHODS
from repsim.compress.prune import check_sparsity, clone_model, parse_nm, prune
from repsim.compress.quantize import check_bits, quantize
from repsim.compress.schedule import gradual_prune
from repsim.data import load_dataset as load_dataset  # re-exported (older callers read it here)
from repsim.errors import ConfigError, ModelError, OutputError, did_you_mean
from repsim.models import load_model, save_model
from repsim.pipeline.config import (
    SCHEMA,
    Field,
    Section,
    build_model_source,
    check_dataset,
    check_dir,
    check_model,
    check_name,
    load_data_source,
    read_toml,
    table,
    tables,
    validate_section,
)
from repsim.train import evaluate, fit

COMPRESSION_METHODS = (*PRUNE_METHODS, "quantize", "none")
"""Family methods: the pruning methods, ``"quantize"`` and ``"none"`` (no weight removed: the
recovery-only control, sparsity 0, fine-tuned or distilled with the setting's recipe)."""

CONTROLS = ("recovery", "random")
"""Controls a compression setting can add to the family (``controls = [...]``):

``"recovery"``
    The *recovery-only control*: every dense seed put through the setting's recovery recipe
    (fine-tuning, or distillation when ``kd``; the same epochs and optimiser options) without
    pruning: method ``"none"``, sparsity 0. The null for drift and for CEV/SDE: what recovery
    alone does.
``"random"``
    The *random-pruning control*: unstructured random pruning (same scope and exclusions) at each
    of the setting's sparsities with the same recovery, so that "this method damages layer l"
    can be told from "removing any weights does".

Control members are ordinary members (method ``"none"`` or ``"random"``) and are shared: two
settings with the same recipe get one recovery-only population."""


def check_method(value: Any, key: str) -> str:
    """A compression method: one of :data:`COMPRESSION_METHODS` or an N:M pattern (``"2:4"``)."""
    if value in COMPRESSION_METHODS:
        return value
    try:
        parse_nm(value)
    except ConfigError:
        raise ConfigError(
            f"'{key}' = {value!r} is not one of {list(COMPRESSION_METHODS)} or an N:M pattern "
            f"such as '2:4'.{did_you_mean(str(value), COMPRESSION_METHODS)}"
        ) from None
    return value


_NONE = type(None)


def _as_list(value: Any, key: str) -> list[Any]:
    out = list(value) if isinstance(value, list | tuple) else [value]
    if not out:
        raise ConfigError(f"'{key}' is empty; give at least one value.")
    return out


def _check_seeds(seeds: Any, key: str) -> list[int]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(seeds))
    seeds = _as_list(seeds, key)
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) or len(
        set(seeds)
    ) != len(seeds):
        raise ConfigError(f"'{key}' must be distinct integers (or a count), got {seeds}.")
    return seeds


def _check_epochs(value: int, key: str) -> int:
    if value < 0:
        raise ConfigError(f"'{key}' must be an integer >= 0, got {value!r}.")
    return value


def _drop_unset(values: dict[str, Any], where: str) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


_NUMBER = (int, float)

_STUDY_TRAIN = SCHEMA["train"].fields
_FINETUNE_KEYS = ("batch_size", "lr", "optimizer", "weight_decay", "momentum", "scheduler")

TRAIN_SECTION = Section(
    {
        **_STUDY_TRAIN,
        "lr": Field(_NUMBER, 3e-3),
        "scheduler": Field((str, _NONE), "cosine", ("cosine", "none", None)),
    },
    help="dense training (repsim.train.fit options)",
)
"""``[family.train]``: the study's ``[train]`` keys (:func:`repsim.train.fit` options), with
``lr = 3e-3`` by default and ``scheduler`` also accepting ``None``."""

FINETUNE_SECTION = Section(
    {key: dataclasses.replace(_STUDY_TRAIN[key], default=None) for key in _FINETUNE_KEYS},
    help="overrides of [family.train] for fine-tuning; unset keys are dropped",
    check=_drop_unset,
)
"""``finetune`` of a compression setting: overrides of ``[family.train]`` for fine-tuning."""

KD_SECTION = Section(
    {
        "T": Field(_NUMBER, 4.0, help="distillation temperature"),
        "alpha": Field(_NUMBER, 0.9, help="weight of the soft (teacher) term"),
        "gamma": Field(_NUMBER, 0.1, help="weight of the hard (label) term"),
    }
)
"""``kd_options`` of a compression setting (:class:`repsim.compress.DistillationLoss`)."""

AGP_SECTION = Section(
    {
        "initial": Field(_NUMBER, 0.0),
        "start_fraction": Field(_NUMBER, 0.0),
        "end_fraction": Field(_NUMBER, 0.5),
        "n_prunes": Field((int,), 10),
    }
)
"""``agp`` of a compression setting (:func:`repsim.compress.gradual_prune`)."""


def _check_controls(value: Any, key: str) -> list[str]:
    out = [value] if isinstance(value, str) else list(value)
    for v in out:
        if v not in CONTROLS:
            raise ConfigError(
                f"'{key}' has {v!r}; controls are {list(CONTROLS)}.{did_you_mean(str(v), CONTROLS)}"
            )
    return list(dict.fromkeys(out))


def _check_setting(c: dict[str, Any], where: str) -> dict[str, Any]:
    """The checks of a compression setting that involve several keys."""
    method = c["method"]
    if method == "none":
        if c["sparsities"] is None:
            c["sparsities"] = [0.0]
        given = _as_list(c["sparsities"], f"{where}.sparsities")
        if len(given) != 1 or not isinstance(given[0], int | float) or float(given[0]) != 0.0:
            raise ConfigError(
                f"'{where}.sparsities' must be [0] for method 'none' (no weight is removed)."
            )
        if c["finetune_epochs"] < 1:
            raise ConfigError(
                f"'{where}': method 'none' (the recovery-only control) needs finetune_epochs >= 1."
            )
        if c["controls"]:
            raise ConfigError(f"'{where}.controls' does not apply to method 'none'.")
    if c["controls"]:
        if method == "quantize":
            raise ConfigError(
                f"'{where}.controls' does not apply to 'quantize' (post-training, no recovery); "
                "its null is the dense-vs-dense floor."
            )
        if "recovery" in c["controls"] and c["finetune_epochs"] < 1:
            raise ConfigError(
                f"'{where}.controls' has 'recovery' but finetune_epochs is 0: there is no "
                "recovery to control for; drop 'recovery' or fine-tune."
            )
    if method == "quantize":
        if c["bits"] is None:
            raise ConfigError(f"'{where}.bits' is required for method 'quantize' (e.g. [8, 4]).")
        if c["sparsities"] is not None:
            raise ConfigError(f"'{where}.sparsities' does not apply to 'quantize'; use bits.")
        try:
            c["bits"] = [check_bits(b) for b in _as_list(c["bits"], f"{where}.bits")]
        except ConfigError as exc:
            raise ConfigError(f"'{where}.bits': {exc}") from exc
        if any(c["kd"]):
            raise ConfigError(f"'{where}.kd': quantisation is post-training here; set kd = false.")
    else:
        if c["sparsities"] is None:
            raise ConfigError(f"'{where}.sparsities' is required for method {method!r}.")
        if c["bits"] is not None:
            raise ConfigError(f"'{where}.bits' only applies to method 'quantize'.")
        try:
            c["sparsities"] = [
                check_sparsity(s) for s in _as_list(c["sparsities"], f"{where}.sparsities")
            ]
        except ConfigError as exc:
            raise ConfigError(f"'{where}.sparsities': {exc}") from exc
    ft = c["finetune_epochs"]
    if c["schedule"] == "agp" and ft < 1:
        raise ConfigError(f"'{where}': schedule 'agp' needs finetune_epochs >= 1.")
    if any(c["kd"]) and ft < 1:
        raise ConfigError(
            f"'{where}': kd = true needs finetune_epochs >= 1 (KD trains the student)."
        )
    return c


COMPRESSION_SECTION = Section(
    {
        "method": Field(
            (str,), help="pruning method, an N:M pattern ('2:4') or 'quantize'", check=check_method
        ),
        "sparsities": Field((int, float, list, tuple), None, help="pruning sparsities in [0, 1)"),
        "bits": Field((int, list, tuple), None, help="quantisation bit widths (2 to 8)"),
        "kd": Field(
            (bool, int, list, tuple),
            [False],
            help="fine-tune with cross-entropy (false) and/or KD from the dense model (true)",
            check=lambda v, key: [bool(k) for k in _as_list(v, key)],
        ),
        "scope": Field((str,), None, help="pruning scope; default per method"),
        "exclude": Field((list, tuple), [], help="layers kept dense", check=lambda v, key: list(v)),
        "n": Field((int, float, str), 1, help="norm order of ln_structured"),
        "dim": Field((int,), 0, help="pruned dimension of ln_structured"),
        "schedule": Field((str,), "oneshot", ("oneshot", "agp")),
        "finetune_epochs": Field((int,), 5, help="0: no fine-tuning", check=_check_epochs),
        "finetune": table(FINETUNE_SECTION),
        "kd_options": table(KD_SECTION),
        "agp": table(AGP_SECTION),
        "per_channel": Field((bool,), True, help="per-channel quantisation scales"),
        "controls": Field(
            (list, tuple, str),
            [],
            help="control populations: 'recovery' (same recovery at sparsity 0) and/or 'random' "
            "(random pruning at each sparsity, same recovery)",
            check=_check_controls,
        ),
    },
    help="one compression setting: a method at several sparsities or bit widths",
    check=_check_setting,
)
"""One ``[[family.compression]]`` table."""


def _check_family(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    check_dataset(
        cfg["dataset"], cfg["dataset_options"], f"{where}.dataset", f"{where}.dataset_options"
    )
    check_model(cfg["model"], cfg["model_options"], f"{where}.model", f"{where}.model_options")
    return cfg


FAMILY_SECTION = Section(
    {
        "name": Field(
            (str, int), "family", help="part of the cache path", check=lambda v, k: check_name(v, k)
        ),
        "dataset": Field((str,), help="a dataset name, e.g. 'digits-imbalanced'"),
        "dataset_options": Field((Mapping,), {}, help="keyword options of the dataset"),
        "model": Field((str,), help="an architecture name, e.g. 'cnn'"),
        "model_options": Field((Mapping,), {}, help="keyword options of the architecture"),
        "seeds": Field((int, list, tuple), [0], help="dense seeds, or a count", check=_check_seeds),
        "cache_dir": Field((str, os.PathLike), "cache", help="model cache root", check=check_dir),
        "train": table(TRAIN_SECTION),
        "compression": tables(COMPRESSION_SECTION),
    },
    required=True,
    help="a population of dense models and their compressed versions",
    check=_check_family,
)
"""The ``[family]`` section: validated with the one config machinery of
:mod:`repsim.pipeline.config`."""


def family_config(config: Mapping[str, Any] | str | os.PathLike) -> dict[str, Any]:
    """Validate a family config and fill in defaults.

    Parameters
    ----------
    config : mapping or path
        A TOML file holding a ``[family]`` section (other sections are ignored), a dict with a
        ``"family"`` key, or the section itself as a dict.

    Returns
    -------
    dict
        The normalised section (every key present; ``seeds`` a list; ``compression`` a list of
        normalised settings tables).

    Raises
    ------
    ConfigError
        Naming the offending key (:data:`FAMILY_SECTION`): unknown keys, missing
        ``dataset``/``model``, an unknown dataset, model or option, bad sparsities or bit
        widths, distillation requested for quantisation.
    """
    if isinstance(config, str | os.PathLike):
        path = Path(config)
        config = read_toml(path)
        if "family" not in config:
            raise ConfigError(f"{path} has no [family] section.")
    if isinstance(config, Mapping) and "family" in config and isinstance(config["family"], Mapping):
        config = config["family"]
    return validate_section(config, FAMILY_SECTION, "family")


def _digest(obj: Any, n: int = 8) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


@dataclass(frozen=True)
class Setting:
    """One compression setting of a family (or ``method="dense"``).

    Attributes
    ----------
    method : str
        ``"dense"``, ``"magnitude"``, ``"random"``, ``"ln_structured"`` or ``"quantize"``.
    sparsity : float or None
        Pruning sparsity.
    bits : int or None
        Quantisation bit width.
    kd : bool
        Fine-tuned by distillation from the dense model.
    options : dict
        The full normalised settings table (schedule, fine-tuning, KD and AGP options).
    """

    method: str
    sparsity: float | None = None
    bits: int | None = None
    kd: bool = False
    options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        """Directory name: a readable slug plus a hash of every option."""
        if self.method == "dense":
            return "dense"
        level = f"s{self.sparsity:g}" if self.bits is None else f"{self.bits}bit"
        slug = f"{self.method.replace(':', 'of')}-{level}{'-kd' if self.kd else ''}"
        opts = {
            k: v
            for k, v in self.options.items()
            if k not in ("sparsities", "bits", "kd", "controls")
        }
        return f"{slug}-{_digest([self.method, self.sparsity, self.bits, self.kd, opts], 6)}"


@dataclass
class Member:
    """One model of a family.

    Attributes
    ----------
    setting : Setting
        How it was made.
    seed : int
        Seed of the dense model it derives from (and of its own fine-tuning).
    path : pathlib.Path
        Its ``.safetensors`` file (with a ``.json`` spec next to it).
    mask_path : pathlib.Path or None
        Its pruning mask (``.safetensors`` + ``.json``), for pruned members.
    fingerprint : str
        :func:`repsim._core.fingerprints.model_fingerprint` of the saved model.
    test_accuracy : float
        Accuracy on the dataset's test split.
    built : bool
        Whether this call of :func:`build` made it (``False``: found in the cache).
    """

    setting: Setting
    seed: int
    path: Path
    mask_path: Path | None = None
    fingerprint: str = ""
    test_accuracy: float = float("nan")
    built: bool = False

    @property
    def method(self) -> str:
        """The compression method of the member's setting."""
        return self.setting.method

    def load(self, device: str = "cpu") -> nn.Module:
        """Rebuild the model (masks re-applied for pruned members).

        Raises
        ------
        ModelError
            If the saved files are missing or damaged, including weights whose bytes no longer
            match the digest recorded when they were saved.
        """
        fix = (
            f"Delete {self.path} and {self.path.with_suffix('.json').name} and build the "
            "family again to rebuild this member."
        )
        try:
            model = load_model(self.path, device=device)
        except ModelError as exc:
            raise ModelError(f"family member {self.path} is unusable: {exc} {fix}") from None
        info = _read_info(self.path.with_suffix(".json")) or {}
        want = info.get("state_sha256")
        if want is not None and state_digest(model) != want:
            raise ModelError(
                f"family member {self.path} is damaged: its weights differ from those saved "
                f"(digest mismatch). {fix}"
            )
        return model

    def mask(self) -> Mask | None:
        """The pruning mask, or ``None`` for dense and quantised members."""
        return None if self.mask_path is None else Mask.load(self.mask_path)

    def row(self) -> dict[str, Any]:
        """A flat record for tables."""
        return {
            "method": self.method,
            "sparsity": self.setting.sparsity,
            "bits": self.setting.bits,
            "kd": self.setting.kd,
            "seed": self.seed,
            "setting": self.setting.key,
            "path": str(self.path),
            "mask_path": None if self.mask_path is None else str(self.mask_path),
            "fingerprint": self.fingerprint,
            "test_accuracy": self.test_accuracy,
            "built": self.built,
        }


@dataclass
class Family:
    """A built family: its members, where they live, and how long the build took.

    Attributes
    ----------
    name : str
    root : pathlib.Path
        ``<cache_dir>/models/<name>-<hash>``.
    config : dict
        The normalised config.
    members : list of Member
        Dense members first, then each setting's population in config order.
    seconds : float
        Wall time of the build call.
    """

    name: str
    root: Path
    config: dict[str, Any]
    members: list[Member]
    seconds: float = 0.0

    def __iter__(self) -> Iterator[Member]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    @property
    def n_built(self) -> int:
        """How many members this build made (0 when everything was cached)."""
        return sum(m.built for m in self.members)

    @property
    def settings(self) -> list[Setting]:
        """Distinct settings, dense first."""
        out: list[Setting] = []
        for m in self.members:
            if m.setting not in out:
                out.append(m.setting)
        return out

    def select(self, **where: Any) -> list[Member]:
        """Members whose ``method``, ``sparsity``, ``bits``, ``kd`` or ``seed`` match."""
        allowed = ("method", "sparsity", "bits", "kd", "seed")
        for key in where:
            if key not in allowed:
                raise ConfigError(f"Cannot select on {key!r}; use {list(allowed)}.")
        out = []
        for m in self.members:
            values = {
                "method": m.method,
                "sparsity": m.setting.sparsity,
                "bits": m.setting.bits,
                "kd": m.setting.kd,
                "seed": m.seed,
            }
            if all(values[k] == v for k, v in where.items()):
                out.append(m)
        return out

    def dense(self, seed: int) -> Member:
        """The dense member of ``seed``."""
        hits = self.select(method="dense", seed=seed)
        if not hits:
            raise ModelError(
                f"Family {self.name!r} has no dense model of seed {seed}; "
                f"seeds are {self.config['seeds']}."
            )
        return hits[0]

    def table(self) -> list[dict[str, Any]]:
        """One flat record per member."""
        return [m.row() for m in self.members]


def family_root(cfg: Mapping[str, Any]) -> Path:
    """Where a (normalised) family config saves its models."""
    base = {k: cfg[k] for k in ("dataset", "dataset_options", "model", "model_options", "train")}
    return Path(cfg["cache_dir"]) / "models" / f"{cfg['name']}-{_digest(base)}"


def plan(config: Mapping[str, Any] | str | os.PathLike) -> Family:
    """The family ``config`` describes, without building anything (``built`` all ``False``)."""
    cfg = family_config(config)
    root = family_root(cfg)
    members = [
        Member(Setting("dense"), s, root / "dense" / f"seed{s}.safetensors") for s in cfg["seeds"]
    ]
    keys: set[str] = set()
    for comp in _with_controls(cfg["compression"]):
        levels = comp["bits"] if comp["method"] == "quantize" else comp["sparsities"]
        for level in levels:
            for kd in comp["kd"]:
                setting = Setting(
                    comp["method"],
                    sparsity=None if comp["method"] == "quantize" else level,
                    bits=level if comp["method"] == "quantize" else None,
                    kd=kd,
                    options=comp,
                )
                if setting.key in keys:  # a control shared by several settings
                    continue
                keys.add(setting.key)
                for s in cfg["seeds"]:
                    d = root / setting.key
                    members.append(
                        Member(
                            setting,
                            s,
                            d / f"seed{s}.safetensors",
                            mask_path=None
                            if setting.method in ("quantize", "none")
                            else d / f"seed{s}-mask.safetensors",
                        )
                    )
    for m in members:
        _read_existing(m)
    return Family(cfg["name"], root, cfg, members)


def control_settings(comp: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The control settings tables a normalised compression setting asks for (``controls``).

    The recovery-only control keeps only the recovery recipe (``kd``, ``finetune_epochs``,
    ``finetune``, ``kd_options``; one-shot, no pruning options), so settings that share a
    recipe share it. The random control keeps the setting's scope, exclusions, schedule and
    recovery, with unstructured ``"random"`` pruning at the same sparsities; none is added
    when the setting is random pruning already.
    """
    out: list[dict[str, Any]] = []
    blank = validate_section(
        {"method": "none", "finetune_epochs": max(1, comp["finetune_epochs"])},
        COMPRESSION_SECTION,
        "control",
    )
    recipe = ("kd", "finetune_epochs", "finetune", "kd_options")
    if "recovery" in comp["controls"]:
        out.append({**blank, **{k: comp[k] for k in recipe}})
    if "random" in comp["controls"] and comp["method"] != "random":
        out.append(
            {
                **comp,
                "method": "random",
                "n": 1,
                "dim": 0,
                "per_channel": True,
                "controls": [],
            }
        )
    return out


def _with_controls(settings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for comp in settings:
        out.append(comp)
        out += control_settings(comp)
    return out


def _read_info(meta: Path) -> dict[str, Any] | None:
    """A member's JSON description, or ``None`` when it is missing or damaged."""
    try:
        info = read_json(meta, what="family member description")
    except OutputError:
        return None
    return info if isinstance(info, dict) else None


def _readable_safetensors(path: Path) -> bool:
    """Whether ``path`` opens as a safetensors file (its header; the data is checked on load)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception:  # noqa: BLE001 - any failure means the file is damaged
        return False
    return True


def _read_existing(member: Member) -> dict[str, Any] | None:
    """The saved member's description, or ``None`` when it is missing or damaged.

    A member whose JSON is unreadable or whose weights (or mask) file does not open counts as
    not built, so the next build rebuilds it (the files are replaced atomically).
    """
    meta = member.path.with_suffix(".json")
    if not (member.path.is_file() and meta.is_file()):
        return None
    mask_file = None if member.mask_path is None else member.mask_path.with_suffix(".safetensors")
    if mask_file is not None and not mask_file.is_file():
        return None
    info = _read_info(meta)
    if info is None or not _readable_safetensors(member.path):
        return None
    if mask_file is not None and not _readable_safetensors(mask_file):
        return None
    member.fingerprint = str(info.get("fingerprint", ""))
    try:
        member.test_accuracy = float(info.get("test_accuracy", float("nan")))
    except (TypeError, ValueError):
        member.test_accuracy = float("nan")
    return info


def build(
    config: Mapping[str, Any] | str | os.PathLike,
    *,
    device: str | None = "cpu",
    progress: bool | None = None,
) -> Family:
    """Build (or complete) a model family, skipping members already in the cache.

    Dense members: ``build_model(model, seed=s)`` trained with :func:`repsim.train.fit`
    (``family.train`` options, ``seed=s``). Compressed members of seed ``s`` start from the
    dense model of seed ``s``:

    - pruning, ``schedule="oneshot"``: :func:`repsim.compress.prune` to the sparsity, then
      ``finetune_epochs`` of fine-tuning (cross-entropy, or KD from the dense model when
      ``kd``); masks stay fixed;
    - pruning, ``schedule="agp"``: :func:`repsim.compress.gradual_prune` over the fine-tuning
      epochs (with the KD loss when ``kd``);
    - ``quantize``: post-training :func:`repsim.compress.quantize` (no fine-tuning).

    Fine-tuning uses ``family.train`` options overridden by the setting's ``finetune`` table.
    A compressed member is rebuilt when the dense model it was derived from has changed
    (its recorded parent fingerprint differs).

    Parameters
    ----------
    config : mapping or path
        See :func:`family_config`.
    device : str, optional
        Training device.
    progress : bool, optional
        tqdm bar over members; ``None``: only on a terminal.

    Returns
    -------
    Family
    """
    t_start = time.perf_counter()
    fam = plan(config)
    cfg = fam.config
    data = None
    dense_models: dict[int, nn.Module] = {}
    train_opts = {k: v for k, v in cfg["train"].items() if k != "epochs"}

    def dataset() -> Any:
        nonlocal data
        if data is None:
            data = load_data_source(cfg["dataset"], cfg["dataset_options"])
        return data

    def dense_of(seed: int) -> nn.Module:
        if seed not in dense_models:
            dense_models[seed] = fam.dense(seed).load(device or "cpu")
        return dense_models[seed]

    dense_fp = {}
    bar = tqdm(
        fam.members, desc=f"family {fam.name}", disable=None if progress is None else not progress
    )
    for member in bar:
        info = _read_existing(member)
        if member.method == "dense":
            if info is None:
                ds = dataset()
                model = build_model_source(cfg["model"], cfg["model_options"], ds, member.seed)
                val = ds.val if train_opts["patience"] is not None else None
                res = fit(
                    model,
                    ds.train,
                    test=ds.test,
                    val=val,
                    epochs=cfg["train"]["epochs"],
                    seed=member.seed,
                    device=device,
                    progress=False,
                    **train_opts,
                )
                _save(member, model, res.test.accuracy, parent=None)
                dense_models[member.seed] = model
            dense_fp[member.seed] = member.fingerprint
            continue
        if info is not None and info.get("parent") == dense_fp[member.seed]:
            continue
        bar.set_postfix_str(f"{member.setting.key} seed {member.seed}")
        model, acc = _compress(member, dense_of(member.seed), dataset(), cfg, device)
        _save(member, model, acc, parent=dense_fp[member.seed])
    bar.close()
    fam.seconds = time.perf_counter() - t_start
    return fam


def _compress(
    member: Member, dense: nn.Module, ds: Any, cfg: Mapping[str, Any], device: str | None
) -> tuple[nn.Module, float]:
    setting, seed, opts = member.setting, member.seed, member.setting.options
    if setting.method == "quantize":
        model, _ = quantize(
            dense, setting.bits, per_channel=opts["per_channel"], exclude=opts["exclude"] or None
        )
        return model, evaluate(model, ds.test, device=device).accuracy
    fit_opts = {
        **{k: v for k, v in cfg["train"].items() if k not in ("epochs", "patience")},
        **opts["finetune"],
    }
    fit_opts.update(device=device, progress=False, test=ds.test)
    prune_opts = dict(method=setting.method, scope=opts["scope"], exclude=opts["exclude"] or None)
    if setting.method == "ln_structured":
        prune_opts.update(n=opts["n"], dim=opts["dim"])
    if setting.method in ("fairgrape", "wanda", "sparsegpt"):
        prune_opts.update(data=ds.train)  # importance / calibration on the training split
    epochs = opts["finetune_epochs"]
    if setting.method == "none":  # recovery-only control: the recipe without pruning
        model = clone_model(dense)
    elif opts["schedule"] == "agp":
        model = clone_model(dense)
        loss = DistillationLoss(dense, **opts["kd_options"]) if setting.kd else None
        try:
            model, _, res = gradual_prune(
                model,
                ds.train,
                setting.sparsity,
                epochs=epochs,
                seed=seed,
                loss=loss,
                **opts["agp"],
                **prune_opts,
                **fit_opts,
            )
        finally:
            if loss is not None:
                loss.remove()
        return model, res.test.accuracy
    else:
        model, _ = prune(dense, setting.sparsity, seed=seed, **prune_opts)
    if epochs == 0:
        return model, evaluate(model, ds.test, device=device).accuracy
    if setting.kd:
        model, res = distill(
            dense,
            model,
            ds.train,
            epochs=epochs,
            seed=seed,
            inplace=True,
            **opts["kd_options"],
            **fit_opts,
        )
    else:
        res = fit(model, ds.train, epochs=epochs, seed=seed, **fit_opts)
    return model, res.test.accuracy


def _save(member: Member, model: nn.Module, accuracy: float, parent: str | None) -> None:
    setting = member.setting
    if member.mask_path is not None:
        Mask.from_model(model).save(member.mask_path, seed=member.seed, setting=setting.key)
    save_model(
        model,
        member.path,
        test_accuracy=accuracy,
        parent=parent,
        seed=member.seed,
        state_sha256=state_digest(model),
        setting={
            "method": setting.method,
            "sparsity": setting.sparsity,
            "bits": setting.bits,
            "kd": setting.kd,
            "key": setting.key,
            "options": setting.options,
        },
    )
    _read_existing(member)
    member.built = True
