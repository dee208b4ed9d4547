"""Tidy inputs of :mod:`repsim.explain`: rows, divergences, members, bias columns.

Shared by :mod:`repsim.explain.relations`, :mod:`repsim.explain.strata`,
:mod:`repsim.explain.controls` and :mod:`repsim.explain.groups`; the schema is in the
docstring of :mod:`repsim.explain.relations`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from repsim.errors import ConfigError, DataError, RelationWarning, did_you_mean

#: Bias metrics :func:`relate` knows by name (others are accepted if the shift table has them).
BIAS_METRICS = ("cev", "sde", "worst_group_drop", "acc_drop")
KINDS = ("compressed", "dense")


def _warn(message: str) -> None:
    warnings.warn(message, RelationWarning, stacklevel=3)


# --------------------------------------------------------------------------------------------
# tidy inputs


def as_rows(table: Any) -> list[dict[str, Any]]:
    """Rows of a tidy table: a sequence of dicts, or an object with ``to_records()``/``rows``."""
    if hasattr(table, "to_records") and callable(table.to_records):
        rows = table.to_records()
    elif hasattr(table, "rows"):
        rows = table.rows
    else:
        rows = table
    if isinstance(rows, Mapping) or not isinstance(rows, Iterable):
        raise DataError("a tidy table must be a sequence of dicts (one per row).")
    out = [dict(r) for r in rows]
    for r in out[:1]:
        if not isinstance(r, dict):
            raise DataError("a tidy table must be a sequence of dicts (one per row).")
    return out


def parse_divergence(divergence: str) -> tuple[str, bool]:
    """Parse a divergence name into its measure and whether it is one minus it.

    ``"1-cka"`` -> ``("cka", True)`` (one minus a similarity); ``"procrustes"`` ->
    ``("procrustes", False)`` (a distance used as is).
    """
    text = divergence.replace(" ", "")
    if text.startswith("1-"):
        return text[2:], True
    return text, False


def _layer_of(row: Mapping[str, Any]) -> str:
    if "layer" in row and row["layer"] is not None:
        return str(row["layer"])
    la, lb = row.get("layer_a"), row.get("layer_b")
    if la is None:
        raise DataError(f"similarity row without 'layer' (or 'layer_a'/'layer_b'): {dict(row)}")
    if lb is not None and lb != la:
        raise DataError(
            f"similarity row pairs different layers ({la!r} vs {lb!r}); relate() compares a "
            "layer with the same layer of the other model, pass same-layer rows only."
        )
    return str(la)


@dataclass(frozen=True)
class _Div:
    kind: str
    method: Any
    sparsity: Any
    seed: Any
    seed_b: Any
    layer: str
    group: Any
    value: float
    n: Any
    n_used: Any = None
    size_matching: Any = None


def _divergences(sim: Any, divergence: str) -> tuple[list[_Div], list[str]]:
    measure, one_minus = parse_divergence(divergence)
    rows = as_rows(sim)
    if not rows:
        raise DataError("the similarity table is empty.")
    measures = sorted({str(r.get("measure")) for r in rows})
    if measure not in measures:
        raise ConfigError(
            f"divergence {divergence!r} needs measure {measure!r}, but the similarity table holds "
            f"{measures}.{did_you_mean(measure, measures)}"
        )
    out: list[_Div] = []
    order: list[str] = []
    for r in rows:
        if str(r.get("measure")) != measure:
            continue
        kind = r.get("kind")
        if kind not in KINDS:
            raise DataError(
                f"similarity row has kind={kind!r}; it must be 'compressed' (dense vs compressed) "
                f"or 'dense' (dense seed vs dense seed, the noise floor): {r}"
            )
        for key in ("seed",) + (("method", "sparsity") if kind == "compressed" else ()):
            if key not in r:
                raise DataError(f"similarity row of kind {kind!r} lacks column {key!r}: {r}")
        layer = _layer_of(r)
        if layer not in order:
            order.append(layer)
        v = float(r["value"]) if r.get("value") is not None else math.nan
        out.append(
            _Div(
                kind=kind,
                method=r.get("method") if kind == "compressed" else "dense",
                sparsity=r.get("sparsity") if kind == "compressed" else 0.0,
                seed=r.get("seed"),
                seed_b=r.get("seed_b"),
                layer=layer,
                group=r.get("group"),
                value=(1.0 - v) if one_minus else v,
                n=r.get("n"),
                n_used=r.get("n_used"),
                size_matching=r.get("size_matching"),
            )
        )
    return out, order


def _layer_order(found: list[str], layers: Sequence[str] | None) -> list[str]:
    if layers is None:
        return found
    for name in layers:
        if name not in found:
            raise ConfigError(
                f"layer {name!r} has no rows in the similarity table.{did_you_mean(name, found)}"
            )
    return list(layers)


def _config_key(d: _Div) -> tuple[Any, Any]:
    return (d.method, d.sparsity)


def _sorted_configs(keys: Iterable[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    return sorted(set(keys), key=lambda k: (str(k[0]), float(k[1]) if k[1] is not None else 0.0))


def _bias_columns(shift_rows: list[dict[str, Any]], bias: Any) -> list[str]:
    numeric = []
    for key in dict.fromkeys(k for r in shift_rows for k in r):
        if key in ("method", "sparsity", "seed", "seed_b", "kind"):
            continue
        vals = [r.get(key) for r in shift_rows]
        if all(
            isinstance(v, int | float | np.floating | np.integer)
            and not isinstance(v, bool)
            or v is None
            for v in vals
        ):
            numeric.append(key)
    if bias is None:
        chosen = [k for k in numeric if k in BIAS_METRICS or k.startswith("acc_drop:")]
        if not chosen:
            raise ConfigError(
                f"the shift table has no known bias column ({list(BIAS_METRICS)} or "
                f"'acc_drop:<group>'); its numeric columns are {numeric}. Pass bias=[...]."
            )
        return chosen
    names = [bias] if isinstance(bias, str) else list(bias)
    out: list[str] = []
    for name in names:
        if name == "acc_drop":
            per_group = [k for k in numeric if k.startswith("acc_drop:")]
            if not per_group:
                raise ConfigError(
                    "bias 'acc_drop' needs 'acc_drop:<group>' columns in the "
                    f"shift table; it has {numeric}."
                )
            out += per_group
        elif name in numeric:
            out.append(name)
        else:
            raise ConfigError(
                f"bias metric {name!r} is not a numeric column of the shift table; it has "
                f"{numeric}.{did_you_mean(name, numeric)}"
            )
    return out


def _member_key(method: Any, sparsity: Any, seed: Any) -> tuple[str, float, str]:
    return (str(method), float(sparsity), str(seed))


# --------------------------------------------------------------------------------------------
# members, controls, covariates

#: The prune part of a recovery-only control's method label (``"none+ft"``: the dense seed
#: fine-tuned at sparsity 0 with the study's recovery, no weight removed).
RECOVERY_ONLY = "none"
#: The prune part of a random-pruning control's method label (``"random+ft"`` at each sparsity).
RANDOM_PRUNING = "random"


def split_method(method: Any) -> tuple[str, str | None]:
    """``"magnitude+ft"`` -> ``("magnitude", "ft")``; ``"magnitude"`` -> ``("magnitude", None)``.

    Method labels are ``<prune>+<recovery>`` as the study family writes them; the recovery-only
    control is ``"none+<recovery>"`` (sparsity 0) and the random-pruning control
    ``"random+<recovery>"``.
    """
    text = str(method)
    if "+" in text:
        prune, recovery = text.rsplit("+", 1)
        return prune, recovery
    return text, None


def control_role(
    method: Any, *, recovery_only: str = RECOVERY_ONLY, random_pruning: str = RANDOM_PRUNING
) -> str:
    """What a member's method label says it is.

    ``"recovery-only control"`` (``"none+ft"``), ``"random-pruning control"`` (``"random+ft"``,
    ``"random"``) or ``"compressed"``. The one place that reads the control conventions of the study family's labels; a study
    that asks for random pruning as a method of its own marks those rows ``"compressed"``
    itself (``configs[i]["role"]``).
    """
    prune, _ = split_method(method)
    if prune == recovery_only:
        return "recovery-only control"
    if prune == random_pruning:
        return "random-pruning control"
    return "compressed"


def config_label(method: Any, sparsity: Any) -> str:
    """``"method@sparsity"``, the key of per-configuration results (as :func:`onset` writes)."""
    return f"{method}@{sparsity}"


def shift_tables(
    shifts: Any,
) -> tuple[dict[tuple[str, float, str], dict[str, Any]], list[dict[str, Any]]]:
    """Split a shift table into compressed members (by member key) and dense-vs-dense rows.

    A row's ``kind`` is ``"compressed"`` when absent. ``"dense"`` rows (dense seed ``seed_b``
    scored as if compressed against dense seed ``seed``: the floor of CEV, SDE and every group
    metric) need ``seed`` and ``seed_b``; compressed rows need ``method``, ``sparsity``,
    ``seed``.

    Raises
    ------
    DataError
        An empty table, a missing column or an unknown kind.
    """
    srows = as_rows(shifts)
    if not srows:
        raise DataError("the shift table is empty.")
    members: dict[tuple[str, float, str], dict[str, Any]] = {}
    dense: list[dict[str, Any]] = []
    for r in srows:
        kind = r.get("kind", "compressed") or "compressed"
        if kind not in KINDS:
            raise DataError(
                f"shift row has kind={kind!r}; it must be 'compressed' or 'dense' (dense seed "
                f"seed_b scored against dense seed seed: the floor): {r}"
            )
        need = ("seed", "seed_b") if kind == "dense" else ("method", "sparsity", "seed")
        for key in need:
            if key not in r:
                raise DataError(f"shift row of kind {kind!r} lacks column {key!r}: {r}")
        if kind == "dense":
            dense.append(r)
        else:
            members[_member_key(r["method"], r["sparsity"], r["seed"])] = r
    return members, dense


def _number(v: Any) -> float:
    if v is None or isinstance(v, bool):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def covariate_value(row: Mapping[str, Any] | None, name: str, key: tuple[str, float, str]) -> float:
    """A member's covariate value.

    ``"sparsity"`` from its key; ``"accuracy_drop"`` from the row or, when absent, the row's
    ``dense_accuracy - accuracy``; any other numeric shift column by name.
    """
    if name == "sparsity":
        return float(key[1])
    if row is None:
        return math.nan
    if name == "accuracy_drop" and row.get("accuracy_drop") is None:
        return _number(row.get("dense_accuracy")) - _number(row.get("accuracy"))
    return _number(row.get(name))


def check_covariates(members: Mapping[Any, Mapping[str, Any]], names: Sequence[str]) -> None:
    """Raise a :class:`ConfigError` for a covariate no member row can give."""
    cols = {k for r in members.values() for k in r}
    for name in names:
        if name == "sparsity":
            continue
        if name == "accuracy_drop" and (
            "accuracy_drop" in cols or {"accuracy", "dense_accuracy"} <= cols
        ):
            continue
        if name not in cols:
            raise ConfigError(
                f"covariate {name!r} is not a column of the shift table (it has "
                f"{sorted(cols)}); 'accuracy_drop' needs 'accuracy_drop' or 'accuracy' and "
                f"'dense_accuracy'.{did_you_mean(name, sorted(cols))}"
            )


def stratum_value(row: Mapping[str, Any] | None, name: str, key: tuple[str, float, str]) -> Any:
    """A member's value of a stratum column: ``method``/``sparsity``/``seed`` from its key."""
    if name == "method":
        return key[0]
    if name == "sparsity":
        return key[1]
    if name == "seed":
        return key[2]
    return None if row is None else row.get(name)
