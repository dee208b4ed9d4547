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

import functools
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from repsim._core.deprecation import renamed_arguments
from repsim._core.rows import iter_rows
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
    SimilarityWarning,
    did_you_mean,
)
from repsim.similarity import _linear
from repsim.similarity._center import center, constant_columns, warn
from repsim.similarity._linear import check_precision
from repsim.similarity.bootstrap import (
    GramSide,
    _cross,
    bootstrap_counts,
    centered_gram,
    resampled_cka,
)
from repsim.similarity.cca import basis, cca_of_bases, n_kept, warn_dropped
from repsim.similarity.cka import _row_norms, _self_fro2
from repsim.similarity.multi import MultiLayerCKAAccumulator
from repsim.similarity.registry import Measure, get_measure
from repsim.similarity.streaming import (
    LinearCKAAccumulator,
    _hsic_u,
    default_memory_limit,
    iter_row_batches,
)
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
    """Per-layer statistics of linear CKA, computed once and reused for every pair.

    From the data (centered copy, row norms, and ``||X^T X||_F^2`` or the centered Gram when
    ``n < d``), or from a Gram matrix of any centering (double-centered here).
    """

    def __init__(
        self, X: Any = None, *, gram: np.ndarray | None = None, self_term: bool = True
    ) -> None:
        if gram is not None:
            self.n = self.d = gram.shape[0]
            G = np.array(gram, dtype=np.float64, order="F")
            m = G.mean(1)
            G -= m[:, None]
            G -= m[None, :]
            G += m.mean()
            self.Xc, self.G = None, G
            self.k = np.diagonal(G).copy()
            self.sk = float(self.k.sum())
            self.c_self = float(np.einsum("ij,ij->", G, G))
            return
        self.n, self.d = X.shape
        self.Xc = center(X)
        self.k = _row_norms(self.Xc)
        self.sk = float(self.k.sum())
        if self.n < self.d:
            self.G = self.Xc @ self.Xc.T
            self.c_self = float((self.G * self.G).sum())
        else:
            self.G = None
            self.c_self = _self_fro2(self.Xc) if self_term else math.nan

    def cross(self, other: _LinearStats) -> float:
        if self is other:
            return self.c_self
        if self.G is not None and other.G is not None:
            return float((self.G * other.G).sum())
        if self.Xc is None or other.Xc is None:
            A = self.G if self.G is not None else self.Xc @ self.Xc.T
            B = other.G if other.G is not None else other.Xc @ other.Xc.T
            return float((A * B).sum())
        C = self.Xc.T @ other.Xc
        return float((C * C).sum())


def _linear_value(
    sa: _LinearStats, sb: _LinearStats, measure: str, c: float | None = None
) -> float:
    n = sa.n
    c = sa.cross(sb) if c is None else c
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
    fn: Any,
    X: Any,
    Y: Any,
    n_boot: int,
    seed: int | None,
    ci: float,
    desc: str,
    progress: bool | None = None,
) -> tuple[float, float]:
    """Percentile interval of ``fn`` over ``n_boot`` resamples of the rows of ``X`` and ``Y``."""

    def statistic(idx: np.ndarray) -> float:
        try:
            return float(fn(_take(X, idx), _take(Y, idx)))
        except (InsufficientDataError, np.linalg.LinAlgError):
            return math.nan

    vals = np.asarray(
        bootstrap_replicates(
            statistic, X.shape[0], n_boot=n_boot, seed=seed, desc=desc, progress=progress
        )
    )
    return _interval(vals, n_boot, ci, desc)


def _interval(vals: np.ndarray, n_boot: int, ci: float, desc: str) -> tuple[float, float]:
    ok = vals[np.isfinite(vals)]
    if ok.size < n_boot:
        warn(f"{desc}: {n_boot - ok.size} of {n_boot} bootstrap resamples gave NaN; ignored.")
    if ok.size == 0:
        return math.nan, math.nan
    lo, hi = percentile_interval(ok, ci)
    return float(lo), float(hi)


class _WarningLog:
    """Collects the :class:`SimilarityWarning` s of each measure; one summary line per measure."""

    def __init__(self) -> None:
        self.messages: dict[str, dict[str, int]] = {}
        self.cells: dict[str, int] = {}

    def run(self, measure: str, fn: Any) -> Any:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return fn()
            finally:
                hit = False
                for w in caught:
                    if issubclass(w.category, SimilarityWarning):
                        per = self.messages.setdefault(measure, {})
                        text = str(w.message)
                        per[text] = per.get(text, 0) + 1
                        hit = True
                    else:
                        warnings.warn_explicit(
                            w.message, w.category, w.filename, w.lineno, source=w.source
                        )
                if hit:
                    self.cells[measure] = self.cells.get(measure, 0) + 1

    def emit(self) -> None:
        for measure, per in self.messages.items():
            total = sum(per.values())
            shown = sorted(per.items(), key=lambda kv: -kv[1])[:3]
            text = "; ".join(m if c == 1 else f"{m} (x{c})" for m, c in shown)
            more = len(per) - len(shown)
            tail = f"; and {more} other message(s)" if more else ""
            warn(
                f"{measure}: {total} warning(s) in {self.cells.get(measure, 0)} cell(s): "
                f"{text}{tail}",
                stacklevel=5,  # warn, emit, compare, its argument-renaming wrapper, the caller
            )


@renamed_arguments({"by": "groups"})
def compare(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    *,
    layers: Sequence[str] | Mapping[str, str] | str | None = None,
    measures: Sequence[str | Measure] | str = ("cka",),
    pairs: Literal["same", "all"] = "same",
    groups: Any = None,
    n_boot: int | Mapping[str, int] = 0,
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
    memory_limit: Any = None,
    collapse_warnings: bool = True,
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
    n_boot : int or dict
        Bootstrap resamples (over samples, with replacement) for a percentile confidence
        interval; 0 for none; or ``{measure: n_boot}`` (measures not named get none). The same
        resamples (from ``seed``) serve every cell. Linear CKA (``cka``, ``cka_debiased``) is
        resampled from per-sample statistics (``n x n`` Grams with weighted centering,
        :mod:`repsim.similarity.bootstrap`: ``O(n^2)`` per resample, shared by every layer
        pair and group); every other measure is recomputed on each resample.
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
        Show tqdm bars with an ETA, for the cells and for long bootstraps (default: only on a
        terminal).
    memory_limit : int or str, optional
        Working-memory bound for streamed linear CKA (bytes or e.g. ``"2GB"``): a layer pair
        read from Zarr goes by the Gram route (``n x n`` kernels from column blocks) when that
        is cheaper or the ``d x d`` accumulators would not fit (see
        :func:`repsim.similarity.plan_cka`). Default: half of this machine's memory.
    collapse_warnings : bool
        Collect the :class:`SimilarityWarning` s of every cell and issue one summary line per
        measure (distinct messages with counts) instead of one warning per cell and resample.

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
    boots_of = (
        {m.name: int(n_boot.get(m.name, 0)) for m in ms}
        if isinstance(n_boot, Mapping)
        else dict.fromkeys((m.name for m in ms), int(n_boot))
    )
    if isinstance(n_boot, Mapping) and set(n_boot) - {m.name for m in ms}:
        raise ConfigError(
            f"n_boot given for measures not requested: {sorted(set(n_boot) - {m.name for m in ms})}."
        )
    if min(boots_of.values()) < 0 or not 0 < ci < 1:
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
    limit = _linear.parse_bytes(memory_limit) or default_memory_limit()
    rows: list[dict[str, Any]] = []
    alive: dict[int, Any] = {}  # id -> array: the same array object on both sides shares work

    def ident(side: str, name: str) -> int:
        arr = (a if side == "a" else b)[name]
        alive[id(arr)] = arr
        return id(arr)

    cache: dict[tuple[int, Any], Any] = {}

    def layer(side: str, name: str, gkey: Any) -> Any:
        i = ident(side, name)
        key = (i, gkey)
        if key not in cache:
            full_key = (i, _ALL)
            if full_key not in cache:
                cache[full_key] = _load(alive[i], f"{side}:{name}")
            if gkey is not _ALL:
                cache[key] = _take(cache[full_key], group_rows[gkey])
        return cache[key]

    grams: dict[int, np.ndarray] = {}

    def full_gram(side: str, name: str) -> np.ndarray:
        """Centered Gram of all samples: from memory, or from Zarr by column blocks."""
        i = ident(side, name)
        if i not in grams:
            src = alive[i]
            if (i, _ALL) in cache or _in_memory(src):
                grams[i] = centered_gram(to_numpy(layer(side, name, _ALL)))
            else:
                grams[i] = _zarr_gram(src, f"{side}:{name}", limit)
        return grams[i]

    stats: dict[tuple[int, Any], _LinearStats] = {}

    def linear_stats(side: str, name: str, gkey: Any, via_gram: bool = False) -> _LinearStats:
        key = (ident(side, name), gkey)
        if key not in stats:
            if via_gram:
                K = full_gram(side, name)
                rows_g = group_rows[gkey]
                stats[key] = _LinearStats(gram=K if rows_g is None else K[np.ix_(rows_g, rows_g)])
            else:
                stats[key] = _LinearStats(layer(side, name, gkey))
        return stats[key]

    crosses: dict[tuple[int, int, Any], float] = {}

    def linear_cell(la: str, lb: str, g: Any, measure: str, via_gram: bool) -> float:
        sa = linear_stats("a", la, g, via_gram)
        sb = linear_stats("b", lb, g, via_gram)
        ia, ib = ident("a", la), ident("b", lb)
        key = (ia, ib, g)
        if key not in crosses:
            rev = crosses.get((ib, ia, g))
            crosses[key] = rev if rev is not None else sa.cross(sb)
        return _linear_value(sa, sb, measure, crosses[key])

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

    multi: dict[str, Any] = {}

    def multi_stream() -> tuple[dict[Any, MultiLayerCKAAccumulator], dict[int, int]] | None:
        """One pass over the rows for every streamed pair: each layer read once."""
        if "accs" not in multi:
            feat = [(la, lb) for la, lb in layer_pairs if pair_route(la, lb) == "feature"]
            pos: dict[int, int] = {}
            arrays: list[Any] = []
            for la, lb in feat:
                for side, name in (("a", la), ("b", lb)):
                    i = ident(side, name)
                    if i not in pos:
                        pos[i] = len(arrays)
                        arrays.append(alive[i])
            pairs_idx = [(pos[ident("a", la)], pos[ident("b", lb)]) for la, lb in feat]
            widths = [int(x.shape[1]) for x in arrays]
            state = MultiLayerCKAAccumulator.bytes_needed(widths, pairs_idx) * len(group_rows)
            if not feat or state > limit // 2:
                multi["accs"] = None
                return None
            accs = {g: MultiLayerCKAAccumulator(widths, pairs_idx) for g in group_rows}
            # one batch of every layer up to 128 MB: few, large syrk updates
            bs = batch_size or int(max(256, 2**27 // (8 * sum(widths))))
            for i, batches in enumerate(
                iter_rows(arrays, bs, progress=progress, desc="streaming layers")
            ):
                accs[_ALL].update(batches)
                for g, idx in group_rows.items():
                    if g is _ALL:
                        continue
                    sel = idx[(idx >= i * bs) & (idx < (i + 1) * bs)] - i * bs
                    if sel.size:
                        accs[g].update([_take(as_matrix(x), sel) for x in batches])
            multi["accs"], multi["pos"] = accs, pos
        if multi["accs"] is None:
            return None
        return multi["accs"], multi["pos"]

    def pair_route(la: str, lb: str) -> str:
        """Streamed linear CKA of a Zarr pair: accumulators (feature) or kernels (Gram)."""
        if batch_size is not None:
            return "feature"
        da, db = int(a[la].shape[1]), int(b[lb].shape[1])
        # the streaming feature route keeps all three d x d sums at once
        feature_bytes = 8 * (da * da + db * db + da * db) + 8 * max(da, db) ** 2
        gram_cheaper = n * (da + db) < (da * da + db * db + 2 * da * db)
        if gram_cheaper or feature_bytes > limit:
            return "gram"
        return "feature"

    bases: dict[tuple[int, Any, str], tuple[Any, int, int]] = {}

    def cca_basis(side: str, name: str, gkey: Any, precision: str) -> tuple[Any, int, int]:
        """``(basis, dead units dropped, width)`` of one layer, computed once for every pair."""
        key = (ident(side, name), gkey, precision)
        if key not in bases:
            X = to_numpy(layer(side, name, gkey))
            const = constant_columns(X)
            Xc = center(X[:, ~const])
            bases[key] = (basis(Xc, precision=precision), int(const.sum()), X.shape[1])
        return bases[key]

    def cca_cell(la: str, lb: str, g: Any, m: Measure, opts: dict[str, Any]) -> float:
        precision = opts.get("precision", "float64")
        check_precision(precision)
        (bx, dx, nx), (by, dy, ny) = (
            cca_basis("a", la, g, precision),
            cca_basis("b", lb, g, precision),
        )
        label = _CCA_LABELS[m.name]
        warn_dropped(label, dx, nx, dy, ny, stacklevel=2)
        n_keep = None
        if m.name == "svcca":
            keep = opts.get("keep", 0.99)
            rule = opts.get("rule", "variance")
            n_comp = opts.get("n_components")
            n_keep = lambda sv: n_kept(sv, keep, rule, n_comp)  # noqa: E731
        n_g = bx[0].shape[0]
        res = cca_of_bases(bx, by, n_g, dx, dy, label, n_keep=n_keep, weighted=m.name == "pwcca")
        return res.value

    counts: dict[tuple[Any, int], np.ndarray] = {}
    sides: dict[tuple[int, Any, int], GramSide] = {}
    selfs: dict[tuple[int, Any, int], Any] = {}
    boots: dict[tuple[int, int, Any, bool, int], np.ndarray] = {}

    def linear_boot(la: str, lb: str, g: Any, debiased: bool, nb: int) -> np.ndarray:
        """Replicates of linear CKA from per-sample statistics (repsim.similarity.bootstrap)."""
        if (g, nb) not in counts:
            counts[(g, nb)] = bootstrap_counts(n if g is _ALL else group_rows[g].size, nb, seed)
        U = counts[(g, nb)]

        def side(s: str, name: str) -> tuple[GramSide, Any]:
            key = (ident(s, name), g, nb)
            if key not in sides:
                K = full_gram(s, name)
                if g is not _ALL:
                    K = K[np.ix_(group_rows[g], group_rows[g])]
                sides[key] = GramSide.build(K, U)
                selfs[key] = _cross(sides[key], sides[key], U, True)
            return sides[key], selfs[key]

        key = (ident("a", la), ident("b", lb), g, debiased, nb)
        if key not in boots:
            rev = (key[1], key[0], g, debiased, nb)
            if rev in boots:
                boots[key] = boots[rev]
            else:
                (sa, xa), (sb, xb) = side("a", la), side("b", lb)
                boots[key] = resampled_cka(sa, sb, U, debiased=debiased, self_terms=(xa, xb))
        return boots[key]

    def cell_value(
        la: str,
        lb: str,
        m: Measure,
        g: Any,
        n_g: int,
        opts: dict[str, Any],
        where: str,
        note: list[str],
    ) -> float:
        if g is not _ALL and n_g < min_group_size:
            note.append(f"group has {n_g} < min_group_size={min_group_size} samples")
            warn(f"group {g!r} has {n_g} < {min_group_size} samples; {m.name} set to NaN.")
            return math.nan
        if n_g < m.min_n:
            note.append(f"needs at least {m.min_n} samples")
            warn(
                f"{m.name} of {la} vs {lb} on {where} needs at least {m.min_n} samples, got "
                f"{n_g}; set to NaN."
            )
            return math.nan
        try:
            if m.name in _LINEAR and not opts and stream_needed:
                if pair_route(la, lb) == "gram":
                    return linear_cell(la, lb, g, m.name, via_gram=True)
                ms_ = multi_stream()
                if ms_ is not None:
                    accs, pos = ms_
                    i, j = pos[ident("a", la)], pos[ident("b", lb)]
                    return accs[g].result(i, j, debiased=m.name == "cka_debiased")
                return stream(la, lb)[g].result(debiased=m.name == "cka_debiased")
            if m.name in _LINEAR and not opts:
                return linear_cell(la, lb, g, m.name, via_gram=False)
            if m.name in _CCA_LABELS and set(opts) <= _CCA_OPTIONS[m.name]:
                return cca_cell(la, lb, g, m, opts)
            return float(m.function(layer("a", la, g), layer("b", lb, g), **opts))
        except (InsufficientDataError, np.linalg.LinAlgError) as exc:
            note.append(f"{type(exc).__name__}: {exc}")
            warn(f"{m.name} of {la} vs {lb} on {where} is undefined ({exc}); set to NaN.")
            return math.nan

    def cell_interval(
        la: str, lb: str, m: Measure, g: Any, n_g: int, opts: dict[str, Any]
    ) -> tuple[float, float]:
        if (g is not _ALL and n_g < min_group_size) or n_g < m.min_n:
            return math.nan, math.nan
        desc = f"bootstrap {m.name} {la}" + ("" if g is _ALL else f" [{g}]")
        nb = boots_of[m.name]
        if m.name in _LINEAR and not opts and n_g <= _GRAM_BOOT_MAX_N:
            vals = linear_boot(la, lb, g, m.name == "cka_debiased", nb)
            return _interval(vals, nb, ci, desc)
        return _bootstrap(
            functools.partial(_call_measure, m, opts),
            layer("a", la, g),
            layer("b", lb, g),
            nb,
            seed,
            ci,
            desc,
            progress,
        )

    def all_products_at_once() -> None:
        """Form every product of a symmetric set of in-memory layers with one ``syrk``.

        ``Z^T Z`` of the concatenated centered layers holds each ``X_i^T X_j`` once.
        """
        if stream_needed or not any(m.name in _LINEAR for m in ms):
            return
        side_a = list(dict.fromkeys(ident("a", la) for la, _ in layer_pairs))
        side_b = list(dict.fromkeys(ident("b", lb) for _, lb in layer_pairs))
        if set(side_a) != set(side_b) or len(side_a) < 3:
            return
        if not all(isinstance(alive[i], np.ndarray) for i in side_a):
            return  # torch tensors keep their device: pair by pair
        names = {ident("a", la): ("a", la) for la, _ in layer_pairs}
        widths = [int(alive[i].shape[1]) for i in side_a]
        if max(widths) > n or sum(widths) ** 2 * 8 > 2**29 or n * sum(widths) * 8 > 2**30:
            return
        sts = []
        for i in side_a:
            st = _LinearStats(layer(*names[i], _ALL), self_term=False)
            stats[(i, _ALL)] = st
            sts.append(st)
        Z = np.concatenate([st.Xc for st in sts], axis=1)
        G = Z.T @ Z  # numpy evaluates A.T @ A with syrk
        del Z
        edges = np.cumsum([0, *widths])
        for p, ip in enumerate(side_a):
            for q, iq in enumerate(side_a):
                if q < p:
                    continue
                B = G[edges[p] : edges[p + 1], edges[q] : edges[q + 1]]
                c = float(np.einsum("ij,ij->", B, B))
                crosses[(ip, iq, _ALL)] = crosses[(iq, ip, _ALL)] = c
                if p == q:
                    sts[p].c_self = c

    all_products_at_once()
    cells = [(la, lb, m, g) for la, lb in layer_pairs for m in ms for g in group_rows]
    last_use: dict[int, int] = {}
    for i, (la, lb, _, _) in enumerate(cells):
        last_use[ident("a", la)] = i
        last_use[ident("b", lb)] = i
    log = _WarningLog() if collapse_warnings else None

    def evict(i: int) -> None:
        """Drop what no later cell needs (pairs='same' keeps memory to about one pair)."""
        done = {k for k, last in last_use.items() if last == i}
        if not done:
            return
        for store in (cache, stats, sides, selfs):
            for key in [k for k in store if k[0] in done]:
                del store[key]
        for key in [k for k in grams if k in done]:
            del grams[key]
        for key in [k for k in bases if k[0] in done]:
            del bases[key]

    for i, (la, lb, m, g) in enumerate(
        tqdm(cells, desc="compare", disable=None if progress is None else not progress)
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
        where = "all samples" if g is _ALL else f"group {g!r}"
        note: list[str] = []
        call = functools.partial(cell_value, la, lb, m, g, n_g, opts, where, note)
        row["value"] = log.run(m.name, call) if log else call()
        if boots_of[m.name]:
            call = functools.partial(cell_interval, la, lb, m, g, n_g, opts)
            lo, hi = log.run(m.name, call) if log else call()
            row.update(ci_low=lo, ci_high=hi, n_boot=boots_of[m.name])
        if note:
            row["note"] = "; ".join(note)
        rows.append(row)
        evict(i)
    if log:
        log.emit()
    return SimilarityTable(rows)


#: Largest group (or sample) size whose linear-CKA bootstrap goes through ``n x n`` Grams
#: (8 n^2 bytes per layer); larger ones recompute CKA on each resample.
_GRAM_BOOT_MAX_N = 8192
_CCA_LABELS = {"svcca": "SVCCA", "pwcca": "PWCCA", "mean_cca": "mean CCA"}
_CCA_OPTIONS = {
    "svcca": {"keep", "rule", "n_components", "precision"},
    "pwcca": {"precision"},
    "mean_cca": {"precision"},
}


def _call_measure(m: Measure, opts: dict[str, Any], X: Any, Y: Any) -> float:
    return m.function(X, Y, **opts)


def _zarr_gram(src: Any, name: str, limit: int) -> np.ndarray:
    """Centered Gram ``X_c X_c^T`` of an array read by column blocks (never whole)."""
    cols = _linear.column_stats(src, name)
    p = _linear.plan(cols.n, cols.d, cols.d, route="gram", memory_limit=limit, block_bytes=2**29)
    if p.tile_rows < cols.n:
        raise ConfigError(
            f"the {cols.n} x {cols.n} Gram of {name} does not fit memory_limit={limit} bytes; "
            "raise memory_limit or compare fewer samples."
        )
    K = _linear._gram_tile(src, cols, slice(0, cols.n), p.block, "float64", None)
    _linear.mirror_upper(K)
    return K
