"""Statistics shared by every stage: correlation, bootstrap intervals, permutation tests.

The one home of resampling statistics in repsim; :mod:`repsim.explain`, :mod:`repsim.fairness`,
:mod:`repsim.similarity` and :mod:`repsim.pipeline` call these rather than writing their own.

* Pearson ``r = cov(x, y) / (sd(x) sd(y))``; Spearman ``rho`` = Pearson of the (average-tie)
  ranks (Spearman 1904). Both match :func:`scipy.stats.pearsonr` / :func:`scipy.stats.spearmanr`.
* Slope: ordinary least squares of ``y`` on ``x``, ``b = cov(x, y) / var(x)``
  (as :func:`scipy.stats.linregress`).
* Percentile bootstrap intervals (Efron & Tibshirani 1993, ch. 13): resample ``b`` draws
  ``i_1..i_n`` uniformly with replacement from ``numpy.random.default_rng(seed)``
  (:func:`bootstrap_indices`, or :func:`bootstrap_replicates` one resample at a time: the same
  draws), and the interval is ``[q_{t/2}, q_{1-t/2}]`` of the replicates with ``t = 1 - ci``
  (:func:`percentile_interval`). Within strata (groups) each stratum is resampled on its own.
* Student t interval of a mean: ``mean +/- t_{1-t/2, n-1} s / sqrt(n)`` (:func:`t_interval`).
* Multiple-testing adjustment: Bonferroni, Holm (1979), Benjamini & Hochberg (1995)
  (:func:`adjust_pvalues`).
* Permutation p-values, exact by enumeration for small ``n``, else Monte Carlo with the
  ``(1 + hits) / (1 + B)`` rule (Phipson & Smyth 2010).

Undefined values are NaN with a :class:`repsim.errors.RelationWarning`, never 0.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from repsim._core.deprecation import renamed_arguments
from repsim._core.validation import check_consistent_length, to_numpy
from repsim.errors import ConfigError, RelationWarning

__all__ = [
    "CORRECTIONS",
    "adjust_pvalues",
    "alpha_renamed_to_ci",
    "alpha_to_ci",
    "bootstrap_ci",
    "bootstrap_indices",
    "bootstrap_mean",
    "bootstrap_mean_difference",
    "bootstrap_replicates",
    "correlate",
    "paired_difference",
    "percentile_interval",
    "permutation_pvalue",
    "t_interval",
    "tail_probability",
]

Seed = int | np.random.Generator | None


def _warn(message: str) -> None:
    warnings.warn(message, RelationWarning, stacklevel=3)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of ``[m, n]`` arrays (NaN where a row is constant)."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    sxy = (xc * yc).sum(-1)
    sxx = (xc * xc).sum(-1)
    syy = (yc * yc).sum(-1)
    den = np.sqrt(sxx * syy)
    tol = 1e-12 * np.maximum(1.0, np.sqrt((x * x).sum(-1) * (y * y).sum(-1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > tol, sxy / np.where(den > 0, den, 1.0), np.nan)
    return np.clip(r, -1.0, 1.0)


def _slope_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    sxx = (xc * xc).sum(-1)
    tol = 1e-24 * np.maximum(1.0, (x * x).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sxx > tol, (xc * yc).sum(-1) / np.where(sxx > 0, sxx, 1.0), np.nan)


def _rank_rows(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(a, axis=-1)


def _statistic(name: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if name == "pearson":
        return _pearson_rows(x, y)
    if name == "spearman":
        return _pearson_rows(_rank_rows(x), _rank_rows(y))
    if name == "slope":
        return _slope_rows(x, y)
    raise ConfigError(f"unknown statistic {name!r}; use 'pearson', 'spearman' or 'slope'.")


# --------------------------------------------------------------------------------------------
# interval levels


def _complement(p: float) -> float:
    # 1 - p in decimal arithmetic on p as written, so 1 - 0.95 is exactly 0.05 (not 0.05 + 4e-17)
    return float(Decimal(1) - Decimal(repr(float(p))))


def tail_probability(ci: float) -> float:
    """The probability ``t = 1 - ci`` outside a ``ci`` interval, e.g. 0.05 for ``ci=0.95``.

    Computed on ``ci`` as written (decimal), so ``ci=0.95`` gives exactly the float ``0.05``
    and the interval bounds are the quantiles ``t/2 = 0.025`` and ``1 - t/2 = 0.975``.

    Raises
    ------
    ConfigError
        ``ci`` outside ``(0, 1)``.
    """
    ci = float(ci)
    if not 0.0 < ci < 1.0:
        raise ConfigError(f"ci must be a confidence level in (0, 1), e.g. 0.95; got {ci!r}.")
    return _complement(ci)


def alpha_to_ci(alpha: float) -> float:
    """The confidence level ``1 - alpha`` of the deprecated ``alpha=`` spelling (0.05 -> 0.95)."""
    return _complement(alpha)


#: Decorator of functions whose ``alpha=`` (tail probability) became ``ci=`` (level).
alpha_renamed_to_ci = renamed_arguments({"alpha": "ci"}, convert={"alpha": alpha_to_ci})


def percentile_interval(
    values: Any, ci: float = 0.95, *, sides: int = 2, axis: int | None = None
) -> tuple[Any, Any]:
    """Percentile interval of replicates, NaN replicates ignored.

    Two-sided: ``(q_{t/2}, q_{1-t/2})``; one-sided (``sides=1``): ``(q_t, +inf)``, with
    ``t = 1 - ci`` (:func:`tail_probability`) and ``q_p`` the linearly interpolated ``p``
    quantile (:func:`numpy.nanquantile`). Efron & Tibshirani (1993), ch. 13.

    Parameters
    ----------
    values : array-like
        Replicates (e.g. bootstrap statistics); NaN entries are ignored.
    ci : float
        Confidence level in ``(0, 1)``.
    sides : {1, 2}
        Two-sided interval or one-sided lower bound.
    axis : int, optional
        Axis of the replicates (default: all values).

    Returns
    -------
    (low, high)
        Floats (arrays along the other axes with ``axis``); NaN where every replicate is NaN.
    """
    t = tail_probability(ci)
    v = np.asarray(values, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN slice gives NaN
        if sides == 1:
            return np.nanquantile(v, t, axis=axis), math.inf
        if sides != 2:
            raise ConfigError(f"sides must be 1 or 2, got {sides!r}.")
        lo, hi = np.nanquantile(v, [t / 2, 1 - t / 2], axis=axis)
    return lo, hi


def t_interval(values: Sequence[float], ci: float = 0.95) -> dict[str, float]:
    """Mean and Student t interval ``mean +/- t_{1-t/2, n-1} s / sqrt(n)`` (Student 1908).

    ``s`` is the sample standard deviation (``ddof=1``) and ``t = 1 - ci``; NaN values are
    dropped first. As :func:`scipy.stats.t.interval` with ``scale = s / sqrt(n)``.

    Returns
    -------
    dict
        ``mean``, ``lo``, ``hi``, ``n``; the bounds are NaN with fewer than 2 values.
    """
    from scipy import stats

    v = np.asarray([x for x in values if not math.isnan(x)], dtype=float)
    if len(v) < 2:
        return {
            "mean": float(v.mean()) if len(v) else math.nan,
            "lo": math.nan,
            "hi": math.nan,
            "n": len(v),
        }
    half = stats.t.ppf(1 - tail_probability(ci) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return {
        "mean": float(v.mean()),
        "lo": float(v.mean() - half),
        "hi": float(v.mean() + half),
        "n": len(v),
    }


# --------------------------------------------------------------------------------------------
# resampling


def _rng(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def bootstrap_indices(n: int, n_boot: int, seed: Seed = 0) -> np.ndarray:
    """``[n_boot, n]`` indices drawn uniformly with replacement: one bootstrap resample per row.

    ``numpy.random.default_rng(seed).integers(0, n, size=(n_boot, n))``; the rows are the same
    draws :func:`bootstrap_replicates` makes one resample at a time. ``seed`` may be a
    ``numpy.random.Generator``, which then advances.
    """
    return _rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_replicates(
    statistic: Callable[[np.ndarray], Any],
    strata: int | Sequence[np.ndarray],
    *,
    n_boot: int,
    seed: Seed = 0,
    progress: bool | None = None,
    desc: str = "bootstrap",
) -> list[Any]:
    """``statistic(idx)`` for ``n_boot`` bootstrap resamples ``idx`` of row indices.

    Parameters
    ----------
    statistic : callable
        Takes the resample's row indices, returns its value (any object).
    strata : int or sequence of int arrays
        ``n``: resample ``n`` rows with replacement (``idx = rng.integers(0, n, size=n)``);
        a sequence of index arrays (e.g. each group's rows): resample within each stratum, so
        stratum sizes stay fixed, and concatenate in stratum order.
    n_boot : int
        Number of resamples.
    seed : int, Generator or None
        Seed of ``numpy.random.default_rng``.
    progress : bool, optional
        tqdm bar (default: only on a terminal).
    desc : str
        The bar's label.

    Returns
    -------
    list
        One value per resample, in draw order.
    """
    rng = _rng(seed)
    out = []
    for _ in tqdm(
        range(n_boot), desc=desc, disable=None if progress is None else not progress, leave=False
    ):
        if isinstance(strata, int | np.integer):
            idx = rng.integers(0, strata, size=strata)
        else:
            idx = np.concatenate([m[rng.integers(0, len(m), size=len(m))] for m in strata])
        out.append(statistic(idx))
    return out


def bootstrap_mean(
    values: Any, *, n_boot: int = 2000, ci: float = 0.95, seed: Seed = 0, sides: int = 2
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampled with replacement).

    The replicates are ``mean(values[idx])`` for the rows ``idx`` of :func:`bootstrap_indices`;
    the interval is their :func:`percentile_interval`. NaN bounds for fewer than 2 values.
    """
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return math.nan, math.nan
    boot = v[bootstrap_indices(v.size, n_boot, seed)].mean(1)
    lo, hi = percentile_interval(boot, ci, sides=sides)
    return float(lo), float(hi)


def bootstrap_mean_difference(
    a: Any, b: Any, *, n_boot: int = 2000, ci: float = 0.95, seed: Seed = 0, sides: int = 2
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(a) - mean(b)`` for two independent samples.

    ``a`` and ``b`` are resampled independently (``a``'s ``n_boot`` resamples first, then
    ``b``'s, from one generator); the replicates are ``mean(a*) - mean(b*)``. NaN bounds when
    either sample is empty.
    """
    av, bv = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if av.size == 0 or bv.size == 0:
        return math.nan, math.nan
    rng = _rng(seed)
    ba = av[bootstrap_indices(av.size, n_boot, rng)].mean(1)
    bb = bv[bootstrap_indices(bv.size, n_boot, rng)].mean(1)
    lo, hi = percentile_interval(ba - bb, ci, sides=sides)
    return float(lo), float(hi)


# --------------------------------------------------------------------------------------------
# multiple testing

#: Corrections :func:`adjust_pvalues` knows.
CORRECTIONS = ("none", "bonferroni", "holm", "fdr_bh")


def adjust_pvalues(p: Any, method: str = "holm") -> np.ndarray:
    """Multiple-testing adjusted p-values; NaN p-values stay NaN and do not count in ``m``.

    With the ``m`` finite p-values sorted, ``p_(1) <= ... <= p_(m)``:

    * ``"bonferroni"``: ``min(1, m p_i)``;
    * ``"holm"`` (Holm 1979): ``max_{j <= i} min(1, (m - j + 1) p_(j))``;
    * ``"fdr_bh"`` (Benjamini & Hochberg 1995): ``min_{j >= i} min(1, m p_(j) / j)``, as
      :func:`scipy.stats.false_discovery_control`;
    * ``"none"``: unchanged.

    Raises
    ------
    ConfigError
        An unknown ``method``.
    """
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    q = p[ok]
    m = len(q)
    if method not in CORRECTIONS:
        raise ConfigError(f"correction must be one of {CORRECTIONS}, got {method!r}.")
    if m == 0 or method == "none":
        out[ok] = q
        return out
    order = np.argsort(q, kind="stable")
    ranked = q[order]
    if method == "bonferroni":
        out[ok] = np.minimum(q * m, 1.0)
        return out
    if method == "holm":
        steps = np.maximum.accumulate((m - np.arange(m)) * ranked)
    else:  # fdr_bh
        steps = (m / np.arange(1, m + 1)) * ranked
        steps = np.minimum.accumulate(steps[::-1])[::-1]
    adj = np.empty(m)
    adj[order] = np.minimum(steps, 1.0)
    out[ok] = adj
    return out


# --------------------------------------------------------------------------------------------
# paired statistics


def _finite_pairs(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Flattened float ``x`` and ``y`` of equal length, pairs with a non-finite side dropped."""
    xa = to_numpy(x, "x", dtype=float).ravel()
    ya = to_numpy(y, "y", dtype=float).ravel()
    check_consistent_length(xa, ya, names=("x", "y"))
    keep = np.isfinite(xa) & np.isfinite(ya)
    return xa[keep], ya[keep]


@alpha_renamed_to_ci
def bootstrap_ci(
    x: Any,
    y: Any,
    statistic: str = "spearman",
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    sides: int = 2,
) -> tuple[float, float, int]:
    """Percentile bootstrap interval of a paired statistic, resampling pairs with replacement.

    ``statistic`` is ``"spearman"``, ``"pearson"`` or ``"slope"`` (OLS slope of ``y`` on ``x``).
    The interval is ``[q_{t/2}, q_{1-t/2}]`` of the resampled statistics with ``t = 1 - ci``
    (with ``sides=1``: ``[q_t, +inf)``). Efron & Tibshirani (1993), "An Introduction to the
    Bootstrap", ch. 13. Non-finite pairs are dropped first. The deprecated ``alpha=a`` means
    ``ci=1 - a``.

    Returns
    -------
    (low, high, n_valid)
        The bounds and how many resamples gave a defined statistic; NaN bounds (with a
        :class:`RelationWarning`) when fewer than half did or fewer than 3 pairs remain.
    """
    xa, ya = _finite_pairs(x, y)
    n = xa.size
    if n < 3:
        _warn(f"bootstrap CI needs at least 3 finite pairs, got {n}; returning NaN.")
        return math.nan, math.nan, 0
    idx = bootstrap_indices(n, n_boot, seed)
    stats = _statistic(statistic, xa[idx], ya[idx])
    ok = np.isfinite(stats)
    if ok.sum() < n_boot / 2:
        _warn(
            f"only {int(ok.sum())} of {n_boot} bootstrap resamples gave a defined {statistic}; "
            "returning NaN."
        )
        return math.nan, math.nan, int(ok.sum())
    lo, hi = percentile_interval(stats[ok], ci, sides=sides)
    return float(lo), float(hi), int(ok.sum())


def permutation_pvalue(
    x: Any,
    y: Any,
    statistic: str = "spearman",
    *,
    n_permutations: int = 10000,
    seed: int = 0,
) -> tuple[float, bool]:
    """Two-sided permutation p-value of no association between paired ``x`` and ``y``.

    Exact (every permutation of ``y``) when ``n! <= n_permutations``:
    ``p = #{pi : |r(x, y_pi)| >= |r(x, y)|} / n!``. Otherwise Monte Carlo with
    ``numpy.random.default_rng(seed)``: ``p = (1 + #{|r_pi| >= |r|}) / (1 + n_permutations)``
    (Phipson & Smyth 2010, "Permutation p-values should never be zero"). A relative tolerance
    of 1e-9 counts ties in ``|r|`` as ``>=``.

    Returns
    -------
    (p, exact)
        NaN (with a warning) when the statistic is undefined on the data.
    """
    xa, ya = _finite_pairs(x, y)
    n = xa.size
    if n < 3:
        _warn(f"permutation test needs at least 3 finite pairs, got {n}; returning NaN.")
        return math.nan, False
    if statistic == "spearman":
        xa, ya = _rank_rows(xa), _rank_rows(ya)
        statistic = "pearson"
    obs = float(_statistic(statistic, xa[None], ya[None])[0])
    if not np.isfinite(obs):
        _warn("the statistic is undefined (constant input); permutation p-value is NaN.")
        return math.nan, False
    exact = math.factorial(n) <= n_permutations
    if exact:
        perms = np.array(list(itertools.permutations(range(n))), dtype=np.intp)
    else:
        rng = np.random.default_rng(seed)
        perms = rng.permuted(np.tile(np.arange(n), (n_permutations, 1)), axis=1)
    null = _statistic(statistic, np.broadcast_to(xa, perms.shape), ya[perms])
    hits = int(np.sum(np.abs(null) >= abs(obs) * (1 - 1e-9) - 1e-12))
    if exact:
        return hits / len(perms), True
    return (1 + hits) / (1 + n_permutations), False


@alpha_renamed_to_ci
def correlate(
    x: Any,
    y: Any,
    *,
    n_boot: int = 2000,
    n_permutations: int = 10000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Spearman and Pearson correlation, OLS slope, bootstrap CIs and permutation p-values.

    See the module docstring for the formulas. Non-finite pairs are dropped. The intervals are
    :func:`bootstrap_ci` at level ``ci`` (the deprecated ``alpha=a`` means ``ci=1 - a``).

    Returns
    -------
    dict
        ``n``, ``spearman``, ``spearman_low``, ``spearman_high``, ``spearman_p``, ``pearson``,
        ``pearson_low``, ``pearson_high``, ``pearson_p``, ``slope``, ``intercept``,
        ``slope_low``, ``slope_high``, ``p_exact`` (whether the p-values are exact).
    """
    xa, ya = _finite_pairs(x, y)
    n = int(xa.size)
    out: dict[str, Any] = {"n": n}
    if n < 3:
        _warn(f"a correlation needs at least 3 family members with finite values, got {n}.")
        for key in ("spearman", "pearson", "slope"):
            out.update({key: math.nan, f"{key}_low": math.nan, f"{key}_high": math.nan})
        out.update(spearman_p=math.nan, pearson_p=math.nan, intercept=math.nan, p_exact=False)
        return out
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RelationWarning)
        for key in ("spearman", "pearson", "slope"):
            value = float(_statistic(key, xa[None], ya[None])[0])
            lo, hi, _ = bootstrap_ci(xa, ya, key, n_boot=n_boot, ci=ci, seed=seed)
            out.update({key: value, f"{key}_low": lo, f"{key}_high": hi})
        for key in ("spearman", "pearson"):
            p, exact = permutation_pvalue(xa, ya, key, n_permutations=n_permutations, seed=seed)
            out[f"{key}_p"] = p
        out["p_exact"] = exact
    out["intercept"] = (
        float(ya.mean() - out["slope"] * xa.mean()) if np.isfinite(out["slope"]) else math.nan
    )
    if caught:
        reason = (
            "constant divergence or bias across members"
            if not np.isfinite(out["spearman"])
            else str(caught[0].message)
        )
        _warn(f"correlation partly undefined ({reason}); undefined values are NaN.")
    return out


@alpha_renamed_to_ci
def paired_difference(
    a: Any, b: Any, *, n_boot: int = 2000, ci: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Mean paired difference ``mean_i (a_i - b_i)`` with a percentile bootstrap CI over pairs.

    Pairs with a non-finite side are dropped; the interval is :func:`bootstrap_mean` of the
    differences at level ``ci`` (the deprecated ``alpha=a`` means ``ci=1 - a``). With fewer
    than 2 pairs the CI is NaN (warned).

    Returns
    -------
    dict
        ``n``, ``mean``, ``low``, ``high``, ``n_positive`` (pairs with ``a > b``).
    """
    xa, ya = _finite_pairs(a, b)
    d = xa - ya
    out: dict[str, Any] = {
        "n": int(d.size),
        "mean": float(d.mean()) if d.size else math.nan,
        "low": math.nan,
        "high": math.nan,
        "n_positive": int((d > 0).sum()),
    }
    if d.size < 2:
        _warn(f"a paired-difference CI needs at least 2 pairs, got {d.size}; CI is NaN.")
        return out
    out["low"], out["high"] = bootstrap_mean(d, n_boot=n_boot, ci=ci, seed=seed)
    return out
