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

import hashlib
import json
import os
import time
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from repsim.compress.distill import DistillationLoss, distill
from repsim.compress.mask import Mask
from repsim.compress.prune import METHODS as PRUNE_METHODS
from repsim.compress.prune import check_sparsity, clone_model, prune
from repsim.compress.quantize import check_bits, quantize
from repsim.compress.schedule import gradual_prune
from repsim.data import load_dataset
from repsim.errors import ConfigError, ModelError, did_you_mean
from repsim.models import build_model, load_model, save_model
from repsim.train import evaluate, fit

COMPRESSION_METHODS = (*PRUNE_METHODS, "quantize")

_TOP_KEYS = {
    "name": "family",
    "dataset": None,
    "dataset_options": {},
    "model": None,
    "model_options": {},
    "seeds": [0],
    "cache_dir": "cache",
    "train": {},
    "compression": [],
}
_TRAIN_DEFAULTS = {
    "epochs": 10,
    "batch_size": 64,
    "lr": 3e-3,
    "optimizer": "adam",
    "weight_decay": 0.0,
    "momentum": 0.9,
    "scheduler": "cosine",
    "patience": None,
}
_COMP_DEFAULTS: dict[str, Any] = {
    "method": None,
    "sparsities": None,
    "bits": None,
    "kd": [False],
    "scope": None,
    "exclude": [],
    "n": 1,
    "dim": 0,
    "schedule": "oneshot",
    "finetune_epochs": 5,
    "finetune": {},
    "kd_options": {},
    "agp": {},
    "per_channel": True,
}
_KD_DEFAULTS = {"T": 4.0, "alpha": 0.9, "gamma": 0.1}
_AGP_DEFAULTS = {"initial": 0.0, "start_fraction": 0.0, "end_fraction": 0.5, "n_prunes": 10}
_FINETUNE_KEYS = ("batch_size", "lr", "optimizer", "weight_decay", "momentum", "scheduler")


def _check_keys(given: Mapping[str, Any], allowed: Mapping[str, Any], where: str) -> None:
    if not isinstance(given, Mapping):
        raise ConfigError(f"{where} must be a table, got {type(given).__name__}.")
    for key in given:
        if key not in allowed:
            raise ConfigError(
                f"Unknown key {where}.{key}; allowed keys are {sorted(allowed)}."
                + did_you_mean(key, allowed)
            )


def _merge(given: Mapping[str, Any], defaults: Mapping[str, Any], where: str) -> dict[str, Any]:
    _check_keys(given, defaults, where)
    return {**defaults, **given}


def _as_list(value: Any, where: str) -> list[Any]:
    out = list(value) if isinstance(value, list | tuple) else [value]
    if not out:
        raise ConfigError(f"{where} is empty; give at least one value.")
    return out


def family_config(config: Mapping[str, Any] | str | os.PathLike) -> dict[str, Any]:
    """Validate a family config and fill in defaults.

    Parameters
    ----------
    config : mapping or path
        A TOML file holding a ``[family]`` section, a dict with a ``"family"`` key, or the
        section itself as a dict.

    Returns
    -------
    dict
        The normalised section (every key present; ``compression`` a list of normalised
        settings tables).

    Raises
    ------
    ConfigError
        Naming the offending key: unknown keys, missing ``dataset``/``model``, bad sparsities or
        bit widths, distillation requested for quantisation.
    """
    if isinstance(config, str | os.PathLike):
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"No config file at {path}.")
        try:
            config = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
        if "family" not in config:
            raise ConfigError(f"{path} has no [family] section.")
    if isinstance(config, Mapping) and "family" in config and isinstance(config["family"], Mapping):
        config = config["family"]
    cfg = _merge(config, _TOP_KEYS, "family")
    for key in ("dataset", "model"):
        if not isinstance(cfg[key], str):
            raise ConfigError(
                f"family.{key} is required (a name, e.g. 'digits-imbalanced', 'cnn')."
            )
    seeds = cfg["seeds"]
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(seeds))
    seeds = _as_list(seeds, "family.seeds")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) or len(
        set(seeds)
    ) != len(seeds):
        raise ConfigError(f"family.seeds must be distinct integers (or a count), got {seeds}.")
    cfg["seeds"] = seeds
    cfg["train"] = _merge(cfg["train"], _TRAIN_DEFAULTS, "family.train")
    comps = cfg["compression"]
    if isinstance(comps, Mapping):
        comps = [comps]
    cfg["compression"] = [_compression(c, f"family.compression[{i}]") for i, c in enumerate(comps)]
    cfg["name"] = str(cfg["name"])
    return cfg


def _compression(c: Mapping[str, Any], where: str) -> dict[str, Any]:
    c = _merge(c, _COMP_DEFAULTS, where)
    method = c["method"]
    if method not in COMPRESSION_METHODS:
        raise ConfigError(
            f"{where}.method must be one of {list(COMPRESSION_METHODS)}, got {method!r}."
            + did_you_mean(str(method), COMPRESSION_METHODS)
        )
    c["kd"] = [bool(k) for k in _as_list(c["kd"], f"{where}.kd")]
    if method == "quantize":
        if c["bits"] is None:
            raise ConfigError(f"{where}.bits is required for method 'quantize' (e.g. [8, 4]).")
        if c["sparsities"] is not None:
            raise ConfigError(f"{where}.sparsities does not apply to 'quantize'; use bits.")
        try:
            c["bits"] = [check_bits(b) for b in _as_list(c["bits"], f"{where}.bits")]
        except ConfigError as exc:
            raise ConfigError(f"{where}.bits: {exc}") from exc
        if any(c["kd"]):
            raise ConfigError(f"{where}.kd: quantisation is post-training here; set kd = false.")
    else:
        if c["sparsities"] is None:
            raise ConfigError(f"{where}.sparsities is required for method {method!r}.")
        if c["bits"] is not None:
            raise ConfigError(f"{where}.bits only applies to method 'quantize'.")
        try:
            c["sparsities"] = [
                check_sparsity(s) for s in _as_list(c["sparsities"], f"{where}.sparsities")
            ]
        except ConfigError as exc:
            raise ConfigError(f"{where}.sparsities: {exc}") from exc
    if c["schedule"] not in ("oneshot", "agp"):
        raise ConfigError(f"{where}.schedule must be 'oneshot' or 'agp', got {c['schedule']!r}.")
    ft = c["finetune_epochs"]
    if not isinstance(ft, int) or isinstance(ft, bool) or ft < 0:
        raise ConfigError(f"{where}.finetune_epochs must be an integer >= 0, got {ft!r}.")
    if c["schedule"] == "agp" and ft < 1:
        raise ConfigError(f"{where}: schedule 'agp' needs finetune_epochs >= 1.")
    if any(c["kd"]) and ft < 1:
        raise ConfigError(f"{where}: kd = true needs finetune_epochs >= 1 (KD trains the student).")
    c["finetune"] = {
        k: v
        for k, v in _merge(
            c["finetune"], dict.fromkeys(_FINETUNE_KEYS), f"{where}.finetune"
        ).items()
        if v is not None
    }
    c["kd_options"] = _merge(c["kd_options"], _KD_DEFAULTS, f"{where}.kd_options")
    c["agp"] = _merge(c["agp"], _AGP_DEFAULTS, f"{where}.agp")
    c["exclude"] = list(c["exclude"])
    return c


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
        slug = f"{self.method}-{level}{'-kd' if self.kd else ''}"
        opts = {k: v for k, v in self.options.items() if k not in ("sparsities", "bits", "kd")}
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
        return self.setting.method

    def load(self, device: str = "cpu") -> nn.Module:
        """Rebuild the model (masks re-applied for pruned members)."""
        return load_model(self.path, device=device)

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
    for comp in cfg["compression"]:
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
                for s in cfg["seeds"]:
                    d = root / setting.key
                    members.append(
                        Member(
                            setting,
                            s,
                            d / f"seed{s}.safetensors",
                            mask_path=None
                            if setting.method == "quantize"
                            else d / f"seed{s}-mask.safetensors",
                        )
                    )
    for m in members:
        _read_existing(m)
    return Family(cfg["name"], root, cfg, members)


def _read_existing(member: Member) -> dict[str, Any] | None:
    meta = member.path.with_suffix(".json")
    if not (member.path.is_file() and meta.is_file()):
        return None
    if member.mask_path is not None and not member.mask_path.with_suffix(".safetensors").is_file():
        return None
    info = json.loads(meta.read_text())
    member.fingerprint = info.get("fingerprint", "")
    member.test_accuracy = float(info.get("test_accuracy", float("nan")))
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
            data = load_dataset(cfg["dataset"], **cfg["dataset_options"])
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
                model = build_model(
                    cfg["model"],
                    input_shape=ds.train.input_shape,
                    n_classes=ds.train.n_classes,
                    seed=member.seed,
                    **cfg["model_options"],
                )
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
    if setting.method == "fairgrape":
        prune_opts.update(data=ds.train)  # group importance is estimated on the training split
    epochs = opts["finetune_epochs"]
    if opts["schedule"] == "agp":
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
