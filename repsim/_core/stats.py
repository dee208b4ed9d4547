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
* Clustered designs (the dense seed is the unit of replication): cluster bootstrap
  (:func:`cluster_bootstrap`), delete-one-cluster jackknife (:func:`cluster_jackknife`,
  :func:`jackknife_interval`), the interval rule by number of seeds (:func:`cluster_interval`),
  BC/BCa intervals that never miss their estimate and are NaN for a NaN estimate
  (:func:`bootstrap_interval`), Student t tests (:func:`t_test`), stratified and partial rank
  correlation (:func:`partial_rank_correlation`) and their permutation test within strata that
  moves a seed's members together (:func:`cluster_permutations`,
  :func:`stratified_permutation_test`, Freedman & Lane 1983). docs/explain.md has the notes.

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
from repsim.errors import ConfigError, RelationWarning, ShapeError

__all__ = [
    "ALTERNATIVES",
    "CORRECTIONS",
    "FEW_SEEDS",
    "MIN_SEEDS_BOOTSTRAP",
    "adjust_pvalues",
    "alpha_renamed_to_ci",
    "alpha_to_ci",
    "bootstrap_ci",
    "bootstrap_indices",
    "bootstrap_interval",
    "bootstrap_mean",
    "bootstrap_mean_difference",
    "bootstrap_replicates",
    "cluster_bootstrap",
    "cluster_bootstrap_indices",
    "cluster_interval",
    "cluster_jackknife",
    "cluster_permutations",
    "codes",
    "correlate",
    "is_few_seeds",
    "jackknife_interval",
    "paired_difference",
    "partial_rank_correlation",
    "partial_rank_correlation_rows",
    "percentile_interval",
    "permutation_pvalue",
    "rank_residuals",
    "rank_within",
    "stratified_permutation_test",
    "t_interval",
    "t_test",
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

#: Corrections :func:`adjust_pvalues` knows (``"bh"`` is another name for ``"fdr_bh"``).
CORRECTIONS = ("none", "bonferroni", "holm", "fdr_bh", "bh")


def adjust_pvalues(p: Any, method: str = "holm") -> np.ndarray:
    """Multiple-testing adjusted p-values; NaN p-values stay NaN and do not count in ``m``.

    With the ``m`` finite p-values sorted, ``p_(1) <= ... <= p_(m)``:

    * ``"bonferroni"``: ``min(1, m p_i)``;
    * ``"holm"`` (Holm 1979): ``max_{j <= i} min(1, (m - j + 1) p_(j))``;
    * ``"fdr_bh"`` or ``"bh"`` (Benjamini & Hochberg 1995): ``min_{j >= i} min(1, m p_(j) / j)``,
      as :func:`scipy.stats.false_discovery_control`;
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
    else:  # fdr_bh / bh
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
    a: Any,
    b: Any,
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    interval: str = "bootstrap",
) -> dict[str, Any]:
    """Mean paired difference ``mean_i (a_i - b_i)`` with a CI over pairs.

    Pairs with a non-finite side are dropped. ``interval="bootstrap"`` (the 0.2 behaviour) is
    :func:`bootstrap_mean` of the differences at level ``ci``; ``interval="t"`` is the Student
    t interval of :func:`t_test`, the right one when the pairs are a handful of seeds (a
    percentile bootstrap of 3-9 values undercovers). ``"auto"``: ``"t"`` below
    :data:`MIN_SEEDS_BOOTSTRAP` pairs, else ``"bootstrap"``. The deprecated ``alpha=a`` means
    ``ci=1 - a``. With fewer than 2 pairs the CI is NaN (warned).

    Returns
    -------
    dict
        ``n``, ``mean``, ``low``, ``high``, ``n_positive`` (pairs with ``a > b``), ``interval``.
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
    if interval not in ("bootstrap", "t", "auto"):
        raise ConfigError(f"interval must be 'bootstrap', 't' or 'auto', got {interval!r}.")
    if interval == "auto":
        interval = "t" if d.size < MIN_SEEDS_BOOTSTRAP else "bootstrap"
    out["interval"] = interval
    if d.size < 2:
        _warn(f"a paired-difference CI needs at least 2 pairs, got {d.size}; CI is NaN.")
        return out
    if interval == "t":
        res = t_test(d, ci=ci)
        out["low"], out["high"] = res["low"], res["high"]
    else:
        out["low"], out["high"] = bootstrap_mean(d, n_boot=n_boot, ci=ci, seed=seed)
    return out


# --------------------------------------------------------------------------------------------
# clustered designs: the dense seed is the unit of replication
#
# A model family holds, for every dense seed, one member per configuration (method, sparsity)
# and controls. Members of one seed share its dense model, so they are not independent: the
# seed is the unit of replication (a *cluster*). The functions below resample and permute
# clusters, give intervals that say how many clusters they rest on, and adjust p-values.
# docs/explain.md gives the formulas, the sources and the departures.

#: A result resting on fewer seeds than this is flagged ``few_seeds``.
FEW_SEEDS = 5
#: From this many seeds on, an interval of a statistic is a BCa cluster bootstrap interval;
#: below it, the delete-one-seed jackknife with Student t quantiles (:func:`cluster_interval`).
MIN_SEEDS_BOOTSTRAP = 10
#: The alternatives of the tests.
ALTERNATIVES = ("two-sided", "greater", "less")


def is_few_seeds(n_seeds: int, threshold: int = FEW_SEEDS) -> bool:
    """Whether ``n_seeds`` is fewer than ``threshold`` (default :data:`FEW_SEEDS`, 5)."""
    return int(n_seeds) < int(threshold)


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ConfigError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}.")


def _t_pvalue(t: float, df: float, alternative: str) -> float:
    from scipy import stats

    if alternative == "greater":
        return float(stats.t.sf(t, df))
    if alternative == "less":
        return float(stats.t.cdf(t, df))
    return float(min(1.0, 2 * stats.t.sf(abs(t), df)))


def t_test(
    values: Any, *, ci: float = 0.95, null: float = 0.0, alternative: str = "two-sided"
) -> dict[str, Any]:
    """One-sample Student t test and interval of a mean (e.g. per-seed paired differences).

    With the ``n`` finite values, mean ``m`` and ``s`` (``ddof=1``): ``se = s / sqrt(n)``,
    ``t = (m - null) / se`` on ``n - 1`` degrees of freedom (Student 1908), the two-sided
    ``ci`` interval ``m +/- t_{1-(1-ci)/2, n-1} se`` (always two-sided) and the p-value of
    ``alternative`` (``"two-sided"``, ``"greater"``: mean > null, ``"less"``). As
    :func:`scipy.stats.ttest_1samp`.

    Returns
    -------
    dict
        ``n``, ``mean``, ``se``, ``df``, ``t``, ``p``, ``low``, ``high``. Everything but ``n``
        and ``mean`` is NaN (with a :class:`RelationWarning`) with fewer than 2 values or no
        variation among them.
    """
    from scipy import stats

    _check_alternative(alternative)
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    n = int(v.size)
    out: dict[str, Any] = {
        "n": n,
        "mean": float(v.mean()) if n else math.nan,
        "se": math.nan,
        "df": max(n - 1, 0),
        "t": math.nan,
        "p": math.nan,
        "low": math.nan,
        "high": math.nan,
    }
    if n < 2:
        _warn(f"a t interval needs at least 2 values (seeds), got {n}; it is NaN.")
        return out
    sd = float(v.std(ddof=1))
    if not sd > 1e-12 * max(1.0, abs(out["mean"])):
        _warn("the values do not vary (every seed gives the same number); t test is NaN.")
        return out
    se = sd / math.sqrt(n)
    half = float(stats.t.ppf(1 - tail_probability(ci) / 2, n - 1)) * se
    t = (out["mean"] - null) / se
    out.update(
        se=se,
        t=t,
        p=_t_pvalue(t, n - 1, alternative),
        low=out["mean"] - half,
        high=out["mean"] + half,
    )
    return out


def _fisher(r: Any) -> Any:
    return np.arctanh(np.clip(r, -1 + 1e-12, 1 - 1e-12))


def jackknife_interval(
    estimate: float,
    replicates: Any,
    *,
    ci: float = 0.95,
    null: float = 0.0,
    transform: str | None = None,
    alternative: str = "two-sided",
) -> dict[str, Any]:
    """Delete-one-cluster jackknife standard error, Student t interval and test.

    With ``G`` leave-one-cluster-out replicates ``theta_(g)`` and their mean ``theta_(.)``:
    ``se = sqrt((G - 1) / G * sum_g (theta_(g) - theta_(.))^2)`` (Quenouille 1956, Tukey 1958),
    the interval ``theta +/- t_{1-(1-ci)/2, G-1} se`` and ``t = (theta - null) / se`` on
    ``G - 1`` degrees of freedom. With ``transform="fisher"`` (correlations) everything is done
    on ``atanh`` and the bounds mapped back with ``tanh``. This is the CV3 cluster-robust
    variance with ``G - 1`` df that MacKinnon, Nielsen & Webb (2023, "Cluster-robust
    inference: a guide to empirical practice", J. Econometrics) recommend with few clusters.

    Returns
    -------
    dict
        ``se``, ``df``, ``t``, ``p``, ``low``, ``high``; NaN (warned) when the estimate or a
        replicate is NaN, with fewer than 2 clusters, or when the replicates do not vary.
    """
    _check_alternative(alternative)
    if transform not in (None, "fisher"):
        raise ConfigError(f"transform must be None or 'fisher', got {transform!r}.")
    reps = np.asarray(replicates, dtype=float).ravel()
    g = int(reps.size)
    out: dict[str, Any] = {
        "se": math.nan,
        "df": max(g - 1, 0),
        "t": math.nan,
        "p": math.nan,
        "low": math.nan,
        "high": math.nan,
    }
    if not np.isfinite(estimate):
        return out
    if g < 2 or not np.isfinite(reps).all():
        _warn(
            f"the delete-one-seed jackknife needs at least 2 seeds and a defined statistic "
            f"without each ({g} seeds, {int(np.isfinite(reps).sum())} defined); interval is NaN."
        )
        return out
    fwd = _fisher if transform == "fisher" else (lambda v: np.asarray(v, dtype=float))
    z = fwd(reps)
    centre = float(fwd(estimate))
    se = float(math.sqrt((g - 1) / g * float(np.sum((z - z.mean()) ** 2))))
    if not se > 1e-12 * max(1.0, abs(centre)):
        _warn("the statistic does not change when any one seed is left out; interval is NaN.")
        return out
    from scipy import stats

    half = float(stats.t.ppf(1 - tail_probability(ci) / 2, g - 1)) * se
    t = (centre - float(fwd(null))) / se
    low, high = centre - half, centre + half
    if transform == "fisher":
        low, high = float(np.tanh(low)), float(np.tanh(high))
    out.update(se=se, t=t, p=_t_pvalue(t, g - 1, alternative), low=low, high=high)
    return out


def bootstrap_interval(
    estimate: float,
    replicates: Any,
    ci: float = 0.95,
    *,
    method: str = "bc",
    jackknife: Any = None,
    sides: int = 2,
) -> tuple[float, float]:
    """Bootstrap interval of ``estimate`` from its replicates: percentile, BC or BCa.

    * A NaN ``estimate`` gets a NaN interval, whatever the replicates.
    * ``"percentile"``: :func:`percentile_interval`.
    * ``"bc"`` / ``"bca"`` (Efron 1987, "Better bootstrap confidence intervals", JASA 82;
      Efron & Tibshirani 1993, ch. 14): with ``B`` finite replicates,
      ``z0 = Phi^-1((#{theta* < theta} + #{theta* = theta} / 2) / B)`` (the proportion clipped
      to ``[1/(2B), 1 - 1/(2B)]``), the acceleration ``a = sum d^3 / (6 (sum d^2)^(3/2))`` with
      ``d = mean(theta_(.)) - theta_(g)`` from the ``jackknife`` replicates (``"bca"``; 0 for
      ``"bc"``), and the bounds are the replicate quantiles at
      ``Phi(z0 + (z0 + z_q) / (1 - a (z0 + z_q)))`` for ``q = t/2, 1 - t/2`` (``t = 1 - ci``).
    * When the replicates lie so far to one side of the estimate that the BC interval would
      miss it (``|z0|`` above ``z_{1-t/2}``, e.g. a biased statistic like CKA on a small
      group), the bound is moved to the estimate, with a :class:`RelationWarning`: the
      interval always contains its estimate.

    Parameters
    ----------
    estimate : float
        The statistic on the original data.
    replicates : array-like
        Bootstrap replicates; NaN ones are dropped. NaN interval (warned) when fewer than half
        are finite.
    ci : float
        Confidence level.
    method : {"bc", "bca", "percentile"}
        The interval.
    jackknife : array-like, optional
        Leave-one-out (or leave-one-cluster-out) replicates, required for ``"bca"``.
    sides : {1, 2}
        Two-sided, or one-sided lower bound (upper bound ``+inf``).

    Returns
    -------
    (low, high)
    """
    from scipy.stats import norm

    if method not in ("percentile", "bc", "bca"):
        raise ConfigError(f"method must be 'percentile', 'bc' or 'bca', got {method!r}.")
    if sides not in (1, 2):
        raise ConfigError(f"sides must be 1 or 2, got {sides!r}.")
    t = tail_probability(ci)
    est = float(estimate)
    if not np.isfinite(est):
        return math.nan, math.nan
    allv = np.asarray(replicates, dtype=float).ravel()
    reps = allv[np.isfinite(allv)]
    b = int(reps.size)
    if b == 0 or b < allv.size / 2:
        _warn(f"only {b} of {allv.size} bootstrap replicates are defined; interval is NaN.")
        return math.nan, math.nan
    if method == "percentile":
        lo, hi = percentile_interval(reps, ci, sides=sides)
        return float(lo), float(hi)
    prop = (np.sum(reps < est) + 0.5 * np.sum(reps == est)) / b
    z0 = float(norm.ppf(min(max(prop, 0.5 / b), 1 - 0.5 / b)))
    a = 0.0
    if method == "bca":
        if jackknife is None:
            raise ConfigError("method='bca' needs the jackknife replicates (jackknife=...).")
        jk = np.asarray(jackknife, dtype=float).ravel()
        jk = jk[np.isfinite(jk)]
        if jk.size >= 2:
            d = jk.mean() - jk
            ss = float(np.sum(d * d))
            a = float(np.sum(d**3) / (6 * ss**1.5)) if ss > 0 else 0.0
    qs = [t / 2, 1 - t / 2] if sides == 2 else [t]
    levels = []
    for q in qs:
        zq = float(norm.ppf(q))
        den = 1 - a * (z0 + zq)
        if den > 0:
            levels.append(float(norm.cdf(z0 + (z0 + zq) / den)))
        else:
            levels.append(1.0 if z0 + zq > 0 else 0.0)
    lo = float(np.quantile(reps, levels[0]))
    hi = float(np.quantile(reps, levels[1])) if sides == 2 else math.inf
    if est < lo or est > hi:
        _warn(
            f"the bootstrap replicates lie almost entirely on one side of the estimate "
            f"(z0 = {z0:.2f}); the {method.upper()} interval was extended to contain the "
            "estimate. The statistic is strongly biased under resampling; prefer a debiased "
            "estimator or more data."
        )
        lo, hi = min(lo, est), max(hi, est)
    return lo, hi


def _labels(values: Any) -> list[Any]:
    out = []
    for v in values:
        if isinstance(v, np.generic):
            v = v.item()
        out.append(tuple(v) if isinstance(v, list | np.ndarray) else v)
    return out


def codes(labels: Any) -> np.ndarray:
    """Integer codes ``0..K-1`` of hashable labels, in order of first appearance."""
    seen: dict[Any, int] = {}
    return np.array([seen.setdefault(v, len(seen)) for v in _labels(labels)], dtype=np.intp)


def _cluster_rows(clusters: Any) -> list[np.ndarray]:
    c = codes(clusters)
    if c.size == 0:
        return []
    return [np.flatnonzero(c == g) for g in range(int(c.max()) + 1)]


def cluster_bootstrap_indices(clusters: Any, n_boot: int, seed: Seed = 0) -> list[np.ndarray]:
    """Row indices of ``n_boot`` cluster bootstrap resamples.

    Each resample draws ``G`` clusters (seeds) uniformly with replacement,
    ``rng.integers(0, G, size=(n_boot, G))`` from ``numpy.random.default_rng(seed)`` with
    clusters numbered in order of first appearance, and takes *every* row of each drawn
    cluster, in row order, once per draw (Davison & Hinkley 1997, sec. 3.8; Field & Welsh
    2007, "Bootstrapping clustered data", JRSS-B 69). A cluster drawn twice appears twice.
    """
    rows = _cluster_rows(clusters)
    draws = _rng(seed).integers(0, len(rows), size=(n_boot, len(rows)))
    return [np.concatenate([rows[g] for g in d]) for d in draws]


def cluster_bootstrap(
    statistic: Callable[[np.ndarray], Any],
    clusters: Any,
    *,
    n_boot: int = 2000,
    seed: Seed = 0,
    vectorized: bool = False,
) -> np.ndarray:
    """``statistic`` on ``n_boot`` cluster bootstrap resamples (:func:`cluster_bootstrap_indices`).

    ``statistic(idx)`` takes the resample's row indices and returns a float. With
    ``vectorized=True`` and clusters of equal size it is called once with the ``[n_boot, n]``
    array of every resample's indices and returns ``n_boot`` values (the same draws).
    """
    if vectorized:
        rows = _cluster_rows(clusters)
        if rows and len({len(r) for r in rows}) == 1:
            draws = _rng(seed).integers(0, len(rows), size=(n_boot, len(rows)))
            idx = np.stack(rows)[draws].reshape(n_boot, -1)  # the draws of the list form
            return np.asarray(statistic(idx), dtype=float).reshape(n_boot)
    idx = cluster_bootstrap_indices(clusters, n_boot, seed)
    return np.array([float(statistic(i)) for i in idx], dtype=float)


def cluster_jackknife(
    statistic: Callable[[np.ndarray], Any], clusters: Any, *, vectorized: bool = False
) -> np.ndarray:
    """``statistic`` with each cluster left out in turn (the delete-one-cluster jackknife).

    ``G`` values, clusters in order of first appearance; ``statistic(idx)`` gets the remaining
    row indices in row order. With ``vectorized=True`` and clusters of equal size it is called
    once with the ``[G, n - m]`` array of every leave-one-out index set.
    """
    rows = _cluster_rows(clusters)
    n = sum(len(r) for r in rows)
    sets = []
    for r in rows:
        keep = np.ones(n, dtype=bool)
        keep[r] = False
        sets.append(np.flatnonzero(keep))
    if vectorized and sets and len({len(i) for i in sets}) == 1:
        return np.asarray(statistic(np.stack(sets)), dtype=float).reshape(len(sets))
    return np.asarray([float(statistic(i)) for i in sets], dtype=float)


def cluster_interval(
    statistic: Callable[[np.ndarray], Any],
    clusters: Any,
    *,
    estimate: float | None = None,
    ci: float = 0.95,
    n_boot: int = 2000,
    seed: Seed = 0,
    min_clusters_bootstrap: int = MIN_SEEDS_BOOTSTRAP,
    transform: str | None = None,
    vectorized: bool = False,
) -> dict[str, Any]:
    """Interval of a statistic of clustered rows that says what it rests on.

    * NaN estimate: NaN interval (``interval="none"``).
    * ``G >= min_clusters_bootstrap`` clusters (default 10): BCa interval
      (:func:`bootstrap_interval`) of ``n_boot`` cluster bootstrap replicates
      (:func:`cluster_bootstrap`), the acceleration from the delete-one-cluster jackknife
      (``interval="bca_cluster_bootstrap"``).
    * ``2 <= G < min_clusters_bootstrap``: the delete-one-cluster jackknife with ``G - 1``
      degrees of freedom (:func:`jackknife_interval`; on Fisher's ``atanh`` scale with
      ``transform="fisher"``; ``interval="cluster_jackknife_t"``). With fewer than ten seeds
      the ``C(2G-1, G)`` distinct bootstrap resamples are too few and percentile-type
      intervals undercover (Cameron, Gelbach & Miller 2008, "Bootstrap-based improvements for
      inference with clustered errors", REStat 90).
    * ``G < 2``: NaN.

    Returns
    -------
    dict
        ``estimate``, ``low``, ``high``, ``interval``, ``n_clusters``.
    """
    rows = _cluster_rows(clusters)
    g = len(rows)
    n = sum(len(r) for r in rows)
    est = float(statistic(np.arange(n))) if estimate is None else float(estimate)
    out: dict[str, Any] = {
        "estimate": est,
        "low": math.nan,
        "high": math.nan,
        "interval": "none",
        "n_clusters": g,
    }
    if not np.isfinite(est):
        return out
    if g < 2:
        _warn(f"an interval over seeds needs at least 2 seeds, got {g}; it is NaN.")
        return out
    jk = cluster_jackknife(statistic, clusters, vectorized=vectorized)
    if g >= min_clusters_bootstrap:
        reps = cluster_bootstrap(
            statistic, clusters, n_boot=n_boot, seed=seed, vectorized=vectorized
        )
        out["low"], out["high"] = bootstrap_interval(est, reps, ci, method="bca", jackknife=jk)
        out["interval"] = "bca_cluster_bootstrap"
    else:
        res = jackknife_interval(est, jk, ci=ci, transform=transform)
        out["low"], out["high"] = res["low"], res["high"]
        out["interval"] = "cluster_jackknife_t"
    return out


# --------------------------------------------------------------------------------------------
# stratified and partial rank correlation, permutations that respect strata and clusters


def rank_within(values: Any, strata: Any = None) -> np.ndarray:
    """Average-tie ranks (1..n_k) of ``values`` along the last axis, within each stratum.

    ``strata`` (one label per position of the last axis) or None for one stratum. Equal to
    :func:`scipy.stats.rankdata` (``method="average"``) applied to each stratum's positions,
    vectorised over leading axes; values must be finite.
    """
    v = np.asarray(values, dtype=float)
    n = v.shape[-1]
    c = codes(strata) if strata is not None else np.zeros(n, dtype=np.intp)
    if n == 0:
        return v.copy()
    flat = v.reshape(-1, n)
    cb = np.broadcast_to(c, flat.shape)
    order = np.lexsort((flat, cb), axis=-1)
    sv = np.take_along_axis(flat, order, axis=-1)
    sc = np.take_along_axis(cb, order, axis=-1)
    pos = np.broadcast_to(np.arange(n), flat.shape)
    new_stratum = np.ones(flat.shape, dtype=bool)
    new_stratum[:, 1:] = sc[:, 1:] != sc[:, :-1]
    new_run = new_stratum.copy()
    new_run[:, 1:] |= sv[:, 1:] != sv[:, :-1]
    run_ends = np.ones(flat.shape, dtype=bool)
    run_ends[:, :-1] = new_run[:, 1:]
    stratum_start = np.maximum.accumulate(np.where(new_stratum, pos, 0), axis=-1)
    run_start = np.maximum.accumulate(np.where(new_run, pos, 0), axis=-1)
    run_end = np.minimum.accumulate(np.where(run_ends, pos, n - 1)[:, ::-1], axis=-1)[:, ::-1]
    ranks = np.empty_like(flat)
    np.put_along_axis(ranks, order, (run_start + run_end) / 2 - stratum_start + 1, axis=-1)
    return ranks.reshape(v.shape)


def _centre_within(v: np.ndarray, c: np.ndarray) -> np.ndarray:
    out = np.array(v, dtype=float, copy=True)
    for k in np.unique(c):
        cols = c == k
        out[..., cols] -= out[..., cols].mean(axis=-1, keepdims=True)
    return out


def rank_residuals(values: Any, strata: Any = None, covariates: Any = None) -> np.ndarray:
    """Ranks within strata, residualised on stratum indicators and covariate ranks.

    ``r = rank_within(values, strata)``; by Frisch-Waugh-Lovell, the residual of ``r`` on
    ``[stratum indicators, covariate ranks]`` is the stratum-centred ``r`` minus its least
    squares projection on the stratum-centred ranks (within strata) of the covariates.
    Broadcasts over leading axes; ``covariates`` is ``[..., n, q]`` (or ``[n, q]``).
    """
    v = np.asarray(values, dtype=float)
    c = codes(strata) if strata is not None else np.zeros(v.shape[-1], dtype=np.intp)
    r = _centre_within(rank_within(v, c), c)
    if covariates is None:
        return r
    cov = np.asarray(covariates, dtype=float)
    if cov.ndim == 1:
        cov = cov[:, None]
    cr = np.moveaxis(
        _centre_within(rank_within(np.moveaxis(cov, -1, -2), c), c), -2, -1
    )  # [..., n, q]
    beta = np.linalg.pinv(cr) @ r[..., None]
    return r - (cr @ beta)[..., 0]


def _as_covariates(covariates: Any, n: int) -> np.ndarray | None:
    """``[n, q]`` float covariates (a 1-D array is one covariate), or None."""
    if covariates is None:
        return None
    cov = np.asarray(covariates, dtype=float)
    if cov.ndim == 1:
        cov = cov[:, None]
    if cov.ndim != 2 or cov.shape[0] != n:
        raise ShapeError(
            f"covariates must be [n, q] with n = {n} rows (one per pair), got {cov.shape}."
        )
    return cov


def _finite_rows(*arrays: np.ndarray) -> np.ndarray:
    keep = np.ones(arrays[0].shape[0], dtype=bool)
    for a in arrays:
        if a is None:
            continue
        f = np.isfinite(a)
        keep &= f if f.ndim == 1 else f.all(axis=tuple(range(1, f.ndim)))
    return keep


def partial_rank_correlation(
    x: Any, y: Any, *, strata: Any = None, covariates: Any = None
) -> float:
    """Spearman correlation of ``x`` and ``y`` within strata and given covariates.

    ``rho = corr(e_x, e_y)`` with ``e = rank_residuals(., strata, covariates)``
    (:func:`rank_residuals`). No strata and no covariates: Spearman's rho. Strata only: the
    *pooled-within* rank correlation, which with untied ranks is the average of the
    per-stratum Spearman correlations weighted by ``n_k (n_k^2 - 1)`` (so the plain mean for
    equal strata), and never mixes differences between strata. Covariates: a rank-based
    partial correlation (Conover 1999, sec. 5.5; partial Spearman). Rows with a non-finite
    value are dropped. NaN when a residual is constant.
    """
    xa = np.asarray(x, dtype=float).ravel()
    ya = np.asarray(y, dtype=float).ravel()
    check_consistent_length(xa, ya, names=("x", "y"))
    cov = _as_covariates(covariates, len(xa))
    keep = _finite_rows(xa, ya, cov)
    s = None if strata is None else np.asarray(codes(strata))[keep]
    cv = None if cov is None else cov[keep]
    if keep.sum() < 3:
        return math.nan
    return float(
        partial_rank_correlation_rows(
            xa[keep][None], ya[keep][None], strata=s, covariates=None if cv is None else cv[None]
        )[0]
    )


def partial_rank_correlation_rows(
    x: Any, y: Any, *, strata: Any = None, covariates: Any = None
) -> np.ndarray:
    """:func:`partial_rank_correlation` of each row of ``[B, n]`` arrays (no NaN handling).

    ``strata`` labels the ``n`` columns (the same for every row); ``covariates`` is
    ``[B, n, q]`` or ``[n, q]``. Returns ``B`` values, NaN where a residual is constant.
    """
    xa = np.atleast_2d(np.asarray(x, dtype=float))
    ya = np.atleast_2d(np.asarray(y, dtype=float))
    c = codes(strata) if strata is not None else None
    ex = rank_residuals(xa, c, covariates)
    ey = rank_residuals(ya, c, covariates)
    return _pearson_rows(ex, ey)


def _count_at_most(sizes: Sequence[int], limit: int) -> int | None:
    """``prod(n_k!)`` when it is at most ``limit``, else None."""
    total = 1
    for n in sizes:
        for i in range(2, n + 1):
            total *= i
            if total > limit:
                return None
    return total


def cluster_permutations(
    blocks: Any = None,
    clusters: Any = None,
    *,
    n: int | None = None,
    n_permutations: int = 10000,
    seed: Seed = 0,
) -> tuple[np.ndarray, bool, str]:
    """Row permutations that stay within blocks and move clusters together.

    ``perm[b, i]`` is the row whose value row ``i`` receives in permutation ``b``.

    * ``"joint"``: when every block holds the same clusters, each exactly once (a complete
      family: every seed has one member per configuration), one permutation ``pi`` of the
      ``G`` clusters is applied in every block: the member of seed ``s`` in block ``k``
      receives the value of seed ``pi(s)`` in block ``k``. A seed's values travel together,
      so dependence between a seed's members (its dense model) is kept under the null.
      ``G!`` permutations.
    * ``"within"``: otherwise (a block misses a seed, or no clusters given), independent
      permutations within each block, ``prod_k n_k!``; with clusters given this ignores
      dependence between members of a seed in different blocks (warned).

    When the number of distinct permutations is at most ``n_permutations`` every one is
    enumerated (``exact=True``, the identity included); otherwise ``n_permutations`` are drawn
    from ``numpy.random.default_rng(seed)``.

    Returns
    -------
    (perms, exact, scheme)
        ``perms``: ``[B, n]`` int array.
    """
    if blocks is None and clusters is None and n is None:
        raise ConfigError("cluster_permutations needs blocks, clusters or n.")
    size = len(blocks) if blocks is not None else len(clusters) if clusters is not None else n
    assert size is not None
    bc = codes(blocks) if blocks is not None else np.zeros(size, dtype=np.intp)
    rng = _rng(seed)
    block_rows = [np.flatnonzero(bc == k) for k in range(int(bc.max()) + 1 if size else 0)]
    scheme = "within"
    if clusters is not None and len(block_rows) > 1:
        cc = codes(clusters)
        sets = [tuple(sorted(cc[r].tolist())) for r in block_rows]
        if all(len(set(s)) == len(s) for s in sets) and len(set(sets)) == 1:
            scheme = "joint"
        else:
            _warn(
                "the blocks do not all hold the same seeds once each (an incomplete family); "
                "permuting within each block independently, which ignores the dependence "
                "between members of one seed: p-values may be too small."
            )
    if scheme == "joint":
        g = len(sets[0])
        grid = np.empty((len(block_rows), g), dtype=np.intp)
        for k, r in enumerate(block_rows):
            grid[k, cc[r]] = r
        total = _count_at_most([g], n_permutations)
        exact = total is not None
        if exact:
            pis = np.array(list(itertools.permutations(range(g))), dtype=np.intp)
        else:
            pis = rng.permuted(np.tile(np.arange(g), (n_permutations, 1)), axis=1)
        perms = np.empty((len(pis), size), dtype=np.intp)
        for k in range(len(block_rows)):
            perms[:, grid[k]] = grid[k][pis]
        return perms, exact, scheme
    total = _count_at_most([len(r) for r in block_rows], n_permutations)
    exact = total is not None
    if exact:
        per_block = [list(itertools.permutations(range(len(r)))) for r in block_rows]
        combos = list(itertools.product(*per_block))
        perms = np.empty((len(combos), size), dtype=np.intp)
        for b, combo in enumerate(combos):
            for r, p in zip(block_rows, combo, strict=True):
                perms[b, r] = r[list(p)]
        return perms, exact, scheme
    perms = np.empty((n_permutations, size), dtype=np.intp)
    for r in block_rows:
        perms[:, r] = r[rng.permuted(np.tile(np.arange(len(r)), (n_permutations, 1)), axis=1)]
    return perms, exact, scheme


def stratified_permutation_test(
    x: Any,
    y: Any,
    *,
    strata: Any = None,
    covariates: Any = None,
    blocks: Any = None,
    clusters: Any = None,
    n_permutations: int = 10000,
    seed: Seed = 0,
    alternative: str = "two-sided",
    studentize: bool | None = None,
) -> dict[str, Any]:
    """Permutation test of :func:`partial_rank_correlation` that respects strata and clusters.

    Freedman & Lane (1983, "A nonstochastic interpretation of reported significance levels",
    JBES 1): with ``Z`` = [stratum indicators, covariate ranks] and ``e_y`` the residual of
    ``y``'s ranks on ``Z``, each permutation ``P`` gives ``y* = Z b + P e_y`` and the statistic
    ``corr(e_x, R_Z y*) = corr(e_x, R_Z P e_y)`` (``R_Z``: residual-maker). ``P`` comes from
    :func:`cluster_permutations` over the blocks (default: the strata; a block is always made
    nested in its stratum) and the clusters. Without covariates ``R_Z P e_y = P e_y`` and this
    is the stratified permutation test of the pooled-within rank correlation, exact in finite
    samples (Anderson & Legendre 1999 compare the schemes; Winkler et al. 2014 give the
    exchangeability blocks).

    The test statistic is ``corr(e_x, R_Z y*)`` itself, or, with ``studentize=True`` (the
    default when covariates are given), the cluster-studentised
    ``T = sum_g S_g / sqrt(sum_g S_g^2)`` with ``S_g = sum_{i in seed g} e_x,i (R_Z y*)_i``
    (each row its own cluster without ``clusters``): the correlation divided by its
    cluster-robust standard error. Without covariates the permuted ranks are exchangeable and
    any statistic gives an exact test; the plain correlation is then the more powerful one
    with few seeds. With covariates the rank residuals are not exchangeable (they are larger
    where the covariate is dense), and studentising keeps the permutation test asymptotically
    valid where the plain correlation is not (DiCiccio & Romano 2017, "Robust permutation
    tests for correlation and regression coefficients", JASA 112).

    p-value: exact ``#{|T_P| >= |T|} / #P`` when every permutation is enumerated, else
    ``(1 + #{|T_P| >= |T|}) / (1 + B)`` (Phipson & Smyth 2010); one-sided alternatives count
    ``T_P >= T`` (``"greater"``) or ``T_P <= T`` (``"less"``). A relative tolerance of 1e-9
    counts ties.

    Returns
    -------
    dict
        ``estimate``, ``p``, ``exact``, ``scheme`` (``"joint"``/``"within"``),
        ``n_permutations`` (evaluated), ``n`` (rows used) and, with covariates,
        ``covariate_r2_x`` / ``covariate_r2_y`` (the share of the within-stratum rank variance
        of ``x`` / ``y`` the covariates explain; above 0.8 for both the p-value is approximate
        and can be too small, warned). NaN ``p`` (warned) when the statistic is undefined.
    """
    _check_alternative(alternative)
    xa = np.asarray(x, dtype=float).ravel()
    ya = np.asarray(y, dtype=float).ravel()
    check_consistent_length(xa, ya, names=("x", "y"))
    cov = _as_covariates(covariates, len(xa))
    keep = _finite_rows(xa, ya, cov)
    xa, ya = xa[keep], ya[keep]
    cov = None if cov is None else cov[keep]
    n = int(keep.sum())
    sc = codes(strata)[keep] if strata is not None else np.zeros(n, dtype=np.intp)
    bl = codes(blocks)[keep] if blocks is not None else np.zeros(n, dtype=np.intp)
    nested = codes(list(zip(sc.tolist(), bl.tolist(), strict=True)))
    cl = None if clusters is None else [c for c, k in zip(_labels(clusters), keep) if k]
    out: dict[str, Any] = {
        "estimate": math.nan,
        "p": math.nan,
        "exact": False,
        "scheme": "none",
        "n_permutations": 0,
        "n": n,
    }
    if n < 3:
        _warn(f"a permutation test needs at least 3 rows with finite values, got {n}; p is NaN.")
        return out
    ex = rank_residuals(xa, sc, cov)
    ey = rank_residuals(ya, sc, cov)
    est = float(_pearson_rows(ex[None], ey[None])[0])
    out["estimate"] = est
    if cov is not None:
        # share of the within-stratum rank variance the covariates explain
        for name, e, v in (("x", ex, xa), ("y", ey, ya)):
            total = float(np.sum(rank_residuals(v, sc) ** 2))
            out[f"covariate_r2_{name}"] = 1 - float(np.sum(e * e)) / total if total else math.nan
        if min(out["covariate_r2_x"], out["covariate_r2_y"]) > 0.8:
            _warn(
                f"the covariates explain {out['covariate_r2_x']:.0%} and "
                f"{out['covariate_r2_y']:.0%} of the within-stratum rank variation of x and y; "
                "the Freedman-Lane p-value of the partial correlation is then approximate and "
                "can be too small (see docs/explain.md)."
            )
    if not np.isfinite(est):
        _warn("the rank correlation is undefined (no variation left within strata); p is NaN.")
        return out
    perms, exact, scheme = cluster_permutations(
        nested, cl, n_permutations=n_permutations, seed=seed
    )
    if studentize is None:
        studentize = cov is not None
    eyp = ey[perms]
    if cov is not None:
        cr = np.moveaxis(_centre_within(rank_within(cov.T, sc), sc), -2, -1)
        u, s, _ = np.linalg.svd(cr, full_matrices=False)
        q = u[:, s > 1e-10 * max(s.max(initial=0.0), 1.0) * max(cr.shape)]
        if q.shape[1]:
            eyp = eyp - (eyp @ q) @ q.T  # R_Z P e_y (P keeps the stratum centring)
    if studentize:
        # T = sum_g S_g / sqrt(sum_g S_g^2), S_g = sum over cluster g of e_x e_y*
        cid = codes(cl) if cl is not None else np.arange(n)
        onehot = np.zeros((n, int(cid.max()) + 1))
        onehot[np.arange(n), cid] = 1.0
        per = (eyp * ex) @ onehot
        obs_s = (ey * ex) @ onehot
        num, den = per.sum(axis=1), np.sqrt(np.sum(per * per, axis=1))
        obs_den = math.sqrt(float(np.sum(obs_s * obs_s)))
        obs = float(obs_s.sum()) / obs_den if obs_den > 0 else 0.0  # every S_g = 0: T = 0
    else:
        num, den = eyp @ ex, np.linalg.norm(ex) * np.linalg.norm(eyp, axis=1)
        obs = est
    with np.errstate(invalid="ignore", divide="ignore"):
        null = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    tol = 1e-9 * abs(obs) + 1e-12
    if alternative == "two-sided":
        hits = int(np.sum(np.abs(null) >= abs(obs) - tol))
    elif alternative == "greater":
        hits = int(np.sum(null >= obs - tol))
    else:
        hits = int(np.sum(null <= obs + tol))
    b = len(perms)
    out.update(
        p=hits / b if exact else (1 + hits) / (1 + b),
        exact=exact,
        scheme=scheme,
        n_permutations=b,
    )
    return out
