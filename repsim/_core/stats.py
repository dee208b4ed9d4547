"""Statistics shared by every stage: correlation, bootstrap intervals, permutation tests.

The one home of resampling statistics in repsim; :mod:`repsim.explain`, :mod:`repsim.fairness`
and :mod:`repsim.similarity` call these rather than writing their own.

* Pearson ``r = cov(x, y) / (sd(x) sd(y))``; Spearman ``rho`` = Pearson of the (average-tie)
  ranks (Spearman 1904). Both match :func:`scipy.stats.pearsonr` / :func:`scipy.stats.spearmanr`.
* Slope: ordinary least squares of ``y`` on ``x``, ``b = cov(x, y) / var(x)``
  (as :func:`scipy.stats.linregress`).
* Percentile bootstrap intervals (Efron & Tibshirani 1993, ch. 13).
* Permutation p-values, exact by enumeration for small ``n``, else Monte Carlo with the
  ``(1 + hits) / (1 + B)`` rule (Phipson & Smyth 2010).

Undefined values are NaN with a :class:`repsim.errors.RelationWarning`, never 0.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import numpy as np

from repsim.errors import ConfigError, DataError, RelationWarning

__all__ = [
    "bootstrap_ci",
    "correlate",
    "paired_difference",
    "permutation_pvalue",
]


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


def _check_pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    xa = np.asarray(x, dtype=float).ravel()
    ya = np.asarray(y, dtype=float).ravel()
    if xa.shape != ya.shape:
        raise DataError(f"x and y must have the same length, got {xa.size} and {ya.size}.")
    keep = np.isfinite(xa) & np.isfinite(ya)
    return xa[keep], ya[keep]


def bootstrap_ci(
    x: Any,
    y: Any,
    statistic: str = "spearman",
    *,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    sides: int = 2,
) -> tuple[float, float, int]:
    """Percentile bootstrap interval of a paired statistic, resampling pairs with replacement.

    ``statistic`` is ``"spearman"``, ``"pearson"`` or ``"slope"`` (OLS slope of ``y`` on ``x``).
    The interval is ``[q_{alpha/2}, q_{1-alpha/2}]`` of the resampled statistics (with
    ``sides=1``: ``[q_alpha, +inf)``). Efron & Tibshirani (1993), "An Introduction to the
    Bootstrap", ch. 13. Non-finite pairs are dropped first.

    Returns
    -------
    (low, high, n_valid)
        The bounds and how many resamples gave a defined statistic; NaN bounds (with a
        :class:`RelationWarning`) when fewer than half did or fewer than 3 pairs remain.
    """
    xa, ya = _check_pair(x, y)
    n = xa.size
    if n < 3:
        _warn(f"bootstrap CI needs at least 3 finite pairs, got {n}; returning NaN.")
        return math.nan, math.nan, 0
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    stats = _statistic(statistic, xa[idx], ya[idx])
    ok = np.isfinite(stats)
    if ok.sum() < n_boot / 2:
        _warn(
            f"only {int(ok.sum())} of {n_boot} bootstrap resamples gave a defined {statistic}; "
            "returning NaN."
        )
        return math.nan, math.nan, int(ok.sum())
    vals = stats[ok]
    if sides == 1:
        return float(np.quantile(vals, alpha)), math.inf, int(ok.sum())
    lo, hi = np.quantile(vals, [alpha / 2, 1 - alpha / 2])
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
    xa, ya = _check_pair(x, y)
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


def correlate(
    x: Any,
    y: Any,
    *,
    n_boot: int = 2000,
    n_permutations: int = 10000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Spearman and Pearson correlation, OLS slope, bootstrap CIs and permutation p-values.

    See the module docstring for the formulas. Non-finite pairs are dropped.

    Returns
    -------
    dict
        ``n``, ``spearman``, ``spearman_low``, ``spearman_high``, ``spearman_p``, ``pearson``,
        ``pearson_low``, ``pearson_high``, ``pearson_p``, ``slope``, ``intercept``,
        ``slope_low``, ``slope_high``, ``p_exact`` (whether the p-values are exact).
    """
    xa, ya = _check_pair(x, y)
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
            lo, hi, _ = bootstrap_ci(xa, ya, key, n_boot=n_boot, alpha=alpha, seed=seed)
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


def paired_difference(
    a: Any, b: Any, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> dict[str, Any]:
    """Mean paired difference ``mean_i (a_i - b_i)`` with a percentile bootstrap CI over pairs.

    Pairs with a non-finite side are dropped. With fewer than 2 pairs the CI is NaN (warned).

    Returns
    -------
    dict
        ``n``, ``mean``, ``low``, ``high``, ``n_positive`` (pairs with ``a > b``).
    """
    xa, ya = _check_pair(a, b)
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
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(1)
    out["low"], out["high"] = (float(q) for q in np.quantile(boot, [alpha / 2, 1 - alpha / 2]))
    return out
