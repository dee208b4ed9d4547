"""Compare two captured models layer by layer: same pairs or all pairs, per group, with CIs.

A *capture* is duck-typed: a ``Mapping[str, array-like]`` from layer name to a 2-D
``[n_samples, n_features]`` array (numpy, torch, or a ``zarr.Array`` read by row slices),
optionally with attributes ``sample_id`` (int64 array), ``groups`` (array) and ``name`` (label).
Plain dicts work too; then pass ``sample_id_a``/``sample_id_b`` to have the order checked.

Memory: linear CKA (``"cka"``, ``"cka_debiased"``) streams layers that are not in memory
(``zarr.Array``) or when ``batch_size`` is given, through the exact accumulators, so memory stays
``O(batch d + d^2)``. Every other measure, and any bootstrap, loads the layer into memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from repsim._core.deprecation import renamed_arguments
from repsim._core.stats import bootstrap_replicates, percentile_interval
from repsim._core.validation import (
    as_array,
    as_matrix,
    check_consistent_length,
    is_torch,
    to_numpy,
)
from repsim.errors import (
    ConfigError,
    InsufficientDataError,
    LayerNotFoundError,
    SampleOrderError,
    did_you_mean,
)
from repsim.similarity._center import center, warn
from repsim.similarity.cka import _row_norms, _self_fro2
from repsim.similarity.registry import Measure, get_measure
from repsim.similarity.streaming import LinearCKAAccumulator, _hsic_u, iter_row_batches
from repsim.similarity.table import SimilarityTable

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

_LINEAR = ("cka", "cka_debiased")
_ALL = object()  # marker key for "all samples" (group None)


def check_sample_order(ids_a: Any, ids_b: Any, *, names: tuple[str, str] = ("a", "b")) -> None:
    """Raise :class:`SampleOrderError` unless ``ids_a`` and ``ids_b`` are equal, in order.

    The message says whether the sets differ or only the order, how many positions disagree,
    and the first few.
    """
    a = np.asarray(ids_a).ravel()
    b = np.asarray(ids_b).ravel()
    na, nb = names
    if a.shape != b.shape:
        raise SampleOrderError(
            f"capture {na!r} holds {a.size} samples and {nb!r} holds {b.size}; capture both "
            "models on the same dataset split."
        )
    diff = np.flatnonzero(a != b)
    if diff.size == 0:
        return
    first = ", ".join(f"{i} ({a[i]!r} vs {b[i]!r})" for i in diff[:5])
    same_set = np.array_equal(np.sort(a), np.sort(b))
    how = (
        "the same samples in a different order; reorder one capture by sample_id "
        "(e.g. rows = np.argsort(ids_b)[np.argsort(np.argsort(ids_a))])"
        if same_set
        else "different samples; capture both models on the same dataset split"
    )
    raise SampleOrderError(
        f"captures {na!r} and {nb!r} disagree at {diff.size} of {a.size} sample positions, first "
        f"at {first}: they hold {how}."
    )


def _in_memory(arr: Any) -> bool:
    return isinstance(arr, np.ndarray) or is_torch(arr)


def _load(arr: Any, name: str) -> Any:
    m = arr if _in_memory(arr) else np.asarray(arr[:])
    return as_matrix(m, name)


def _take(X: Any, idx: np.ndarray) -> Any:
    if is_torch(X):
        return X[torch.as_tensor(idx, device=X.device)]
    return X[idx]


def _resolve_layers(
    a: Mapping[str, Any], b: Mapping[str, Any], layers: Any, pairs: str
) -> list[tuple[str, str]]:
    names_a, names_b = list(a.keys()), list(b.keys())

    def check(name: str, names: list[str], side: str) -> str:
        if name not in names:
            raise LayerNotFoundError(
                f"layer {name!r} is not in capture {side} (it holds {len(names)} layers)."
                + did_you_mean(name, names)
            )
        return name

    if isinstance(layers, Mapping):
        if pairs == "all":
            raise ConfigError("pairs='all' takes a list of layer names, not a mapping.")
        return [(check(la, names_a, "a"), check(lb, names_b, "b")) for la, lb in layers.items()]
    if isinstance(layers, str):
        layers = [layers]
    if pairs == "same":
        if layers is None:
            common = [n for n in names_a if n in b]
            if not common:
                raise LayerNotFoundError(
                    "the two captures share no layer name; pass layers={layer_a: layer_b} to "
                    "pair them explicitly."
                )
            return [(n, n) for n in common]
        return [(check(n, names_a, "a"), check(n, names_b, "b")) for n in layers]
    if pairs == "all":
        la = names_a if layers is None else [check(n, names_a, "a") for n in layers]
        lb = names_b if layers is None else [check(n, names_b, "b") for n in layers]
        return [(x, y) for x in la for y in lb]
    raise ConfigError(f"pairs must be 'same' or 'all', got {pairs!r}.")


class _LinearStats:
    """Per-layer statistics of linear CKA, computed once and reused for every pair."""

    def __init__(self, X: Any) -> None:
        self.n, self.d = X.shape
        self.Xc = center(X)
        self.k = _row_norms(self.Xc)
        self.sk = float(self.k.sum())
        if self.n < self.d:
            self.G = self.Xc @ self.Xc.T
            self.c_self = float((self.G * self.G).sum())
        else:
            self.G = None
            self.c_self = _self_fro2(self.Xc)

    def cross(self, other: _LinearStats) -> float:
        if self.G is not None and other.G is not None:
            return float((self.G * other.G).sum())
        C = self.Xc.T @ other.Xc
        return float((C * C).sum())


def _linear_value(sa: _LinearStats, sb: _LinearStats, measure: str) -> float:
    n = sa.n
    c = sa.cross(sb)
    if sa.c_self == 0 or sb.c_self == 0:
        warn("CKA is undefined: a layer has zero variance (every unit constant); returning NaN.")
        return math.nan
    if measure == "cka":
        return c / math.sqrt(sa.c_self * sb.c_self)
    if n < 4:
        raise InsufficientDataError(f"debiased CKA needs at least 4 samples, got {n}.")
    hxy = _hsic_u(c, float((sa.k * sb.k).sum()), sa.sk, sb.sk, n)
    hxx = _hsic_u(sa.c_self, float((sa.k * sa.k).sum()), sa.sk, sa.sk, n)
    hyy = _hsic_u(sb.c_self, float((sb.k * sb.k).sum()), sb.sk, sb.sk, n)
    if hxx <= 0 or hyy <= 0:
        warn("debiased CKA is undefined: a non-positive self-HSIC (too few samples); NaN.")
        return math.nan
    return hxy / math.sqrt(hxx * hyy)


def _bootstrap(
    fn: Any, X: Any, Y: Any, n_boot: int, seed: int | None, ci: float, desc: str
) -> tuple[float, float]:
    """Percentile interval of ``fn`` over ``n_boot`` resamples of the rows of ``X`` and ``Y``."""

    def statistic(idx: np.ndarray) -> float:
        try:
            return float(fn(_take(X, idx), _take(Y, idx)))
        except InsufficientDataError:
            return math.nan

    vals = np.asarray(
        bootstrap_replicates(statistic, X.shape[0], n_boot=n_boot, seed=seed, desc=desc)
    )
    ok = vals[np.isfinite(vals)]
    if ok.size < n_boot:
        warn(f"{desc}: {n_boot - ok.size} of {n_boot} bootstrap resamples gave NaN; ignored.")
    if ok.size == 0:
        return math.nan, math.nan
    lo, hi = percentile_interval(ok, ci)
    return float(lo), float(hi)


@renamed_arguments({"by": "groups"})
def compare(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    *,
    layers: Sequence[str] | Mapping[str, str] | str | None = None,
    measures: Sequence[str | Measure] | str = ("cka",),
    pairs: Literal["same", "all"] = "same",
    groups: Any = None,
    n_boot: int = 0,
    ci: float = 0.95,
    seed: int | None = 0,
    batch_size: int | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    sample_id_a: Any = None,
    sample_id_b: Any = None,
    model_a: str | None = None,
    model_b: str | None = None,
    min_group_size: int = 4,
    progress: bool | None = None,
) -> SimilarityTable:
    """Layer similarity between two captured models, as a tidy :class:`SimilarityTable`.

    Parameters
    ----------
    a, b : Mapping[str, array-like]
        Captures: layer name -> ``[n_samples, n_features]`` activations, rows in the same sample
        order. Attributes ``sample_id``, ``groups``, ``name`` are used when present.
    layers : list of str, str, or dict, optional
        Which layers. Default: with ``pairs="same"``, every layer name both captures hold; with
        ``pairs="all"``, every layer of each. A dict ``{layer_a: layer_b}`` pairs differently
        named layers (e.g. a distilled student).
    measures : list of str
        Registry names (see :func:`repsim.similarity.measures`), e.g. ``["cka", "svcca"]``.
    pairs : {"same", "all"}
        Same-named layer pairs, or every ``(layer_a, layer_b)`` (the L x L matrix; see
        :meth:`SimilarityTable.matrix`). Linear CKA's per-layer statistics (centered data, row
        norms, self-HSIC or centered Gram) are computed once per layer, not once per pair.
    groups : array-like, container or True, optional
        Group labels (one per sample) for group-conditional similarity: each measure is computed
        on each group's samples alone, plus on all samples (``group=None``). ``True`` uses the
        capture's ``groups`` attribute; a ``GroupedData``, torch ``Dataset`` or ``DataLoader``
        of the captured samples gives its group names (:func:`repsim.data.group_labels`). (Formerly ``by=``, still accepted with a
        ``DeprecationWarning``.)
    n_boot : int
        Bootstrap resamples (over samples, with replacement) for a percentile confidence
        interval; 0 for none. The same resamples (from ``seed``) serve every cell.
    ci : float
        Confidence level of the interval.
    seed : int, optional
        Seed of the bootstrap (and of ``minibatch_cka``'s shuffling when not set in options).
    batch_size : int, optional
        Stream linear CKA in row batches of this size even for in-memory arrays.
    options : dict, optional
        Per-measure keyword options, e.g. ``{"svcca": {"keep": 0.95}}``.
    sample_id_a, sample_id_b : array-like, optional
        Sample ids when the captures do not carry ``sample_id``. When both sides have ids they
        must be identical and in the same order.
    model_a, model_b : str, optional
        Labels; default the captures' ``name`` attribute, else ``"a"`` and ``"b"``.
    min_group_size : int
        Groups with fewer samples get NaN with a warning.
    progress : bool, optional
        Show a tqdm bar (default: only on a terminal).

    Returns
    -------
    SimilarityTable
        One row per (layer pair, measure[, group]).

    Raises
    ------
    SampleOrderError
        The captures hold different samples or a different order.
    LayerNotFoundError
        A requested layer is missing (with close matches).
    ShapeError
        Layers with different numbers of rows, or ``groups`` of the wrong length.
    """
    if isinstance(measures, str | Measure):
        measures = [measures]
    ms = [get_measure(m) for m in measures]
    if not ms:
        raise ConfigError("measures is empty; pass at least one, e.g. measures=['cka'].")
    options = dict(options or {})
    unknown = set(options) - {m.name for m in ms}
    if unknown:
        raise ConfigError(f"options given for measures not requested: {sorted(unknown)}.")
    if n_boot < 0 or not 0 < ci < 1:
        raise ConfigError(f"need n_boot >= 0 and 0 < ci < 1, got n_boot={n_boot}, ci={ci}.")
    label_a = model_a or getattr(a, "name", None) or "a"
    label_b = model_b or getattr(b, "name", None) or "b"
    ids_a = sample_id_a if sample_id_a is not None else getattr(a, "sample_id", None)
    ids_b = sample_id_b if sample_id_b is not None else getattr(b, "sample_id", None)
    if ids_a is not None and ids_b is not None:
        check_sample_order(ids_a, ids_b, names=(label_a, label_b))

    layer_pairs = _resolve_layers(a, b, layers, pairs)
    used = list(
        dict.fromkeys([("a", la) for la, _ in layer_pairs] + [("b", lb) for _, lb in layer_pairs])
    )
    n = check_consistent_length(
        *((a if side == "a" else b)[name] for side, name in used),
        names=[f"layer {name!r} of capture {side}" for side, name in used],
    )
    if ids_a is not None:
        as_array(ids_a, "sample_id", n=n, against="the layers")

    group_rows: dict[Any, np.ndarray | None] = {_ALL: None}
    if groups is not None:
        labels = groups
        from repsim.data.adapt import group_labels

        container = group_labels(groups)  # a GroupedData, Dataset or DataLoader: its groups
        if container is not None:
            labels = np.asarray(container[1])[container[0]]
        if groups is True:
            labels = getattr(a, "groups", None)
            if labels is None:
                labels = getattr(b, "groups", None)
            if labels is None:
                raise ConfigError(
                    "groups=True but neither capture has a 'groups' attribute; pass "
                    "groups=labels (one per sample)."
                )
        labels = as_array(to_numpy(labels, "groups").ravel(), "groups", n=n, against="the layers")
        for g in np.unique(labels):
            key = g.item() if hasattr(g, "item") else g
            group_rows[key] = np.flatnonzero(labels == g)

    stream_needed = batch_size is not None or not all(
        _in_memory(a[la]) and _in_memory(b[lb]) for la, lb in layer_pairs
    )
    rows: list[dict[str, Any]] = []
    cache: dict[tuple[str, str, Any], Any] = {}

    def layer(side: str, name: str, gkey: Any) -> Any:
        key = (side, name, gkey)
        if key not in cache:
            full_key = (side, name, _ALL)
            if full_key not in cache:
                cache[full_key] = _load((a if side == "a" else b)[name], f"{side}:{name}")
            if gkey is not _ALL:
                cache[key] = _take(cache[full_key], group_rows[gkey])
        return cache[key]

    stats: dict[tuple[str, str, Any], _LinearStats] = {}

    def linear_stats(side: str, name: str, gkey: Any) -> _LinearStats:
        key = (side, name, gkey)
        if key not in stats:
            stats[key] = _LinearStats(layer(side, name, gkey))
        return stats[key]

    streamed: dict[tuple[str, str], dict[Any, LinearCKAAccumulator]] = {}

    def stream(la: str, lb: str) -> dict[Any, LinearCKAAccumulator]:
        if (la, lb) not in streamed:
            accs = {g: LinearCKAAccumulator() for g in group_rows}
            bs = batch_size or 4096
            for i, (xa, xb) in enumerate(
                iter_row_batches(a[la], b[lb], bs, progress=progress, desc=f"{la} vs {lb}")
            ):
                accs[_ALL].update(xa, xb)
                for g, idx in group_rows.items():
                    if g is _ALL:
                        continue
                    sel = idx[(idx >= i * bs) & (idx < (i + 1) * bs)] - i * bs
                    if sel.size:
                        accs[g].update(_take(as_matrix(xa), sel), _take(as_matrix(xb), sel))
            streamed[(la, lb)] = accs
        return streamed[(la, lb)]

    cells = [(la, lb, m, g) for la, lb in layer_pairs for m in ms for g in group_rows]
    for la, lb, m, g in tqdm(
        cells, desc="compare", disable=None if progress is None else not progress
    ):
        n_g = n if g is _ALL else int(group_rows[g].size)
        row: dict[str, Any] = {
            "model_a": label_a,
            "layer_a": la,
            "model_b": label_b,
            "layer_b": lb,
            "measure": m.name,
            "value": math.nan,
        }
        if groups is not None:
            row["group"] = None if g is _ALL else g
        row["n"] = n_g
        opts = dict(options.get(m.name, {}))
        if m.name == "minibatch_cka":
            opts.setdefault("seed", seed)
        try:
            if g is not _ALL and n_g < min_group_size:
                warn(f"group {g!r} has {n_g} < {min_group_size} samples; {m.name} set to NaN.")
            elif m.name in _LINEAR and not opts and stream_needed:
                acc = stream(la, lb)[g]
                row["value"] = acc.result(debiased=m.name == "cka_debiased")
            elif m.name in _LINEAR and not opts:
                row["value"] = _linear_value(
                    linear_stats("a", la, g), linear_stats("b", lb, g), m.name
                )
            else:
                row["value"] = float(m.function(layer("a", la, g), layer("b", lb, g), **opts))
        except InsufficientDataError as exc:
            where = "all samples" if g is _ALL else f"group {g!r}"
            warn(f"{m.name} of {la} vs {lb} on {where} is undefined ({exc}); set to NaN.")
        if n_boot:
            if g is not _ALL and n_g < min_group_size:
                lo = hi = math.nan
            else:
                lo, hi = _bootstrap(
                    lambda X, Y, m=m, opts=opts: m.function(X, Y, **opts),
                    layer("a", la, g),
                    layer("b", lb, g),
                    n_boot,
                    seed,
                    ci,
                    f"bootstrap {m.name} {la}",
                )
            row.update(ci_low=lo, ci_high=hi, n_boot=n_boot)
        rows.append(row)
    return SimilarityTable(rows)
