"""Group-conditional similarity that is fair to group size.

A similarity computed on a group's samples only depends on how many samples the group has:
linear CKA with the biased HSIC estimator, SVCCA and PWCCA are biased in ``n`` (the biased HSIC
carries an ``O(1/n)`` term; CCA overfits when ``n`` is not much larger than the width), so a
group of 50 and a group of 500 drawn from one distribution get different values, and their
difference looks like a group gap. :func:`group_similarity` removes that by *size-matched
subsampling* (the default): every group's measure is computed on subsamples of ``m`` samples,
``m`` the size of the smallest group, drawn without replacement and averaged over ``n_draws``
draws (the smallest group is used whole, once). Every group's value then has the bias of ``m``
samples, whatever the measure. ``size_matching="none"`` gives the plain per-group value (as
:func:`repsim.similarity.compare` with ``groups=``) for comparison.

Why subsampling rather than debiased CKA by default: it works for every measure (SVCCA,
PWCCA, Procrustes, RBF CKA have no debiased form), and debiased CKA, although its HSIC terms
are unbiased, is a ratio of unbiased estimates (still biased in small samples) and is much
noisier on small groups. Debiased CKA is available as ``measure="cka_debiased"`` and can be
combined with either matching. docs/explain.md discusses the choice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from repsim.errors import ConfigError, InsufficientDataError, ShapeError, SimilarityWarning
from repsim.similarity.registry import Measure, get_measure

#: Size-matching schemes of :func:`group_similarity`.
SIZE_MATCHING = ("subsample", "none")


def _warn(message: str) -> None:
    import warnings

    warnings.warn(message, SimilarityWarning, stacklevel=3)


def _function(measure: str | Measure | Callable[..., float]) -> tuple[str, Callable[..., float]]:
    if callable(measure) and not isinstance(measure, str | Measure):
        return getattr(measure, "__name__", "measure"), measure
    m = get_measure(measure)
    return m.name, m.function


def _value(fn: Callable[..., float], X: Any, Y: Any, options: Mapping[str, Any]) -> float:
    try:
        return float(fn(X, Y, **options))
    except InsufficientDataError:
        return math.nan


def group_similarity(
    X: Any,
    Y: Any,
    groups: Any,
    *,
    measure: str | Measure | Callable[..., float] = "cka",
    size_matching: str = "subsample",
    n_draws: int = 20,
    seed: int = 0,
    group_names: Sequence[Any] | None = None,
    options: Mapping[str, Any] | None = None,
    min_group_size: int = 4,
) -> list[dict[str, Any]]:
    """A similarity measure per group, computed on equal sample sizes.

    Parameters
    ----------
    X, Y : array-like
        ``[n, d_x]`` and ``[n, d_y]`` activations of the same samples (rows aligned).
    groups : array-like
        One group label per sample.
    measure : str, Measure or callable
        Registry name (``"cka"``, ``"cka_debiased"``, ``"svcca"``, ...) or
        ``f(X, Y, **options) -> float``.
    size_matching : {"subsample", "none"}
        ``"subsample"``: every group's value is the mean over ``n_draws`` subsamples of ``m``
        rows drawn without replacement, ``m`` the smallest group's size (a group of exactly
        ``m`` rows is used whole, once). ``"none"``: each group on all its rows.
    n_draws : int
        Subsamples per group larger than ``m``.
    seed : int
        Seed: group ``j`` (in order of first appearance) draws from
        ``numpy.random.default_rng([seed, j])``, so a group's draws do not depend on the
        others.
    group_names : sequence, optional
        Names for integer labels ``0..K-1``.
    options : dict, optional
        Keyword options of the measure.
    min_group_size : int
        Groups with fewer rows get NaN (warned) and do not set ``m``.

    Returns
    -------
    list of dict
        One row per group: ``group``, ``n`` (the group's rows), ``n_used`` (rows per value),
        ``n_draws`` (values averaged), ``measure``, ``value`` (mean over draws; NaN when every
        draw is undefined), ``sd`` (standard deviation over draws, ``ddof=1``; NaN for one
        draw), ``size_matching``.

    Raises
    ------
    ShapeError
        ``X``, ``Y`` and ``groups`` of different lengths.
    ConfigError
        An unknown ``size_matching`` or ``n_draws < 1``.
    """
    if size_matching not in SIZE_MATCHING:
        raise ConfigError(f"size_matching must be one of {SIZE_MATCHING}, got {size_matching!r}.")
    if n_draws < 1:
        raise ConfigError(f"n_draws must be at least 1, got {n_draws}.")
    name, fn = _function(measure)
    opts = dict(options or {})
    labels = np.asarray(groups)
    n = len(labels)
    if len(X) != n or len(Y) != n:
        raise ShapeError(
            f"X, Y and groups hold {len(X)}, {len(Y)} and {n} rows; pass one group label per "
            "sample, rows aligned."
        )
    order = list(dict.fromkeys(labels.tolist()))
    rows_of = {g: np.flatnonzero(labels == g) for g in order}
    sizes = {g: len(r) for g, r in rows_of.items()}
    usable = [g for g in order if sizes[g] >= min_group_size]
    for g in order:
        if sizes[g] < min_group_size:
            _warn(f"group {g!r} has {sizes[g]} < {min_group_size} samples; its value is NaN.")
    m = min((sizes[g] for g in usable), default=0)
    out = []
    for j, g in enumerate(order):
        rows = rows_of[g]
        name_g = (
            group_names[int(g)]
            if group_names is not None and isinstance(g, int | np.integer)
            else g
        )
        row: dict[str, Any] = {
            "group": name_g,
            "n": int(sizes[g]),
            "n_used": 0,
            "n_draws": 0,
            "measure": name,
            "value": math.nan,
            "sd": math.nan,
            "size_matching": size_matching,
        }
        if g in usable:
            if size_matching == "none" or sizes[g] == m:
                values = [_value(fn, X[rows], Y[rows], opts)]
                used = sizes[g]
            else:
                rng = np.random.default_rng([seed, j])
                values = []
                for _ in range(n_draws):
                    idx = np.sort(rng.choice(rows, size=m, replace=False))
                    values.append(_value(fn, X[idx], Y[idx], opts))
                used = m
            v = np.asarray(values, dtype=float)
            ok = v[np.isfinite(v)]
            if ok.size < v.size:
                _warn(f"{v.size - ok.size} of {v.size} draws of {name} on group {g!r} are NaN.")
            row.update(
                n_used=int(used),
                n_draws=int(v.size),
                value=float(ok.mean()) if ok.size else math.nan,
                sd=float(ok.std(ddof=1)) if ok.size > 1 else math.nan,
            )
        out.append(row)
    return out


def compare_groups(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    groups: Any,
    *,
    layers: Sequence[str] | None = None,
    measures: Sequence[str | Measure] | str = ("cka",),
    size_matching: str = "subsample",
    n_draws: int = 20,
    seed: int = 0,
    group_names: Sequence[Any] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    min_group_size: int = 4,
) -> list[dict[str, Any]]:
    """:func:`group_similarity` for every layer and measure of two captures.

    Parameters
    ----------
    a, b : Mapping[str, array-like]
        Captures, layer name -> ``[n, features]``, rows in the same sample order.
    groups : array-like
        One group label per sample.
    layers : list of str, optional
        Layers (default: those both captures hold, in ``a``'s order).
    measures : list of str
        Registry names.
    size_matching, n_draws, seed, group_names, min_group_size
        As :func:`group_similarity` (the same ``seed`` for every layer, so every layer
        uses the same subsamples).
    options : dict, optional
        Per-measure keyword options, e.g. ``{"svcca": {"keep": 0.95}}``.

    Returns
    -------
    list of dict
        Rows of :func:`group_similarity` with ``layer`` added: the group rows
        :func:`repsim.explain.group_gaps` reads (add ``kind``, ``method``, ``sparsity``,
        ``seed``, ``seed_b``).
    """
    if isinstance(measures, str | Measure):
        measures = [measures]
    names = list(layers) if layers is not None else [k for k in a if k in b]
    missing = [k for k in names if k not in a or k not in b]
    if missing:
        raise ConfigError(f"layers {missing} are not in both captures.")
    opts = dict(options or {})
    out = []
    for layer in names:
        for m in measures:
            key = m.name if isinstance(m, Measure) else str(m)
            for r in group_similarity(
                a[layer],
                b[layer],
                groups,
                measure=m,
                size_matching=size_matching,
                n_draws=n_draws,
                seed=seed,
                group_names=group_names,
                options=opts.get(key),
                min_group_size=min_group_size,
            ):
                out.append({"layer": layer, **r})
    return out


__all__ = ["SIZE_MATCHING", "compare_groups", "group_similarity"]
