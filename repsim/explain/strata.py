"""Divergence-bias association within configurations, with the dense seed as the unit.

Three tables, one row per layer and bias metric (``within``: also per stratum):

``controlled`` (:func:`controlled_correlations`, the default analysis)
    Spearman correlation of member divergence with member bias *within strata* (default
    ``method`` x ``sparsity``: within one configuration) and, optionally, given covariates
    (``sparsity``, ``accuracy_drop``...): ranks are taken within each stratum, residualised
    on stratum indicators and the covariates' within-stratum ranks, and correlated
    (:func:`repsim._core.stats.partial_rank_correlation`). Without covariates this is the
    pooled-within rank correlation: the average of the per-stratum Spearman correlations
    weighted by ``n_k (n_k^2 - 1)``. p-value: Freedman-Lane permutation test within
    configuration blocks that moves a seed's members together
    (:func:`repsim._core.stats.stratified_permutation_test`); CI over seeds
    (:func:`repsim._core.stats.cluster_interval`); Holm (default) or BH across every layer x
    bias row.
``pooled`` (:func:`pooled_correlations`)
    The plain Spearman correlation across every member of every configuration, labelled
    *confounded by sparsity (and method)*: divergence and bias both grow with sparsity, so
    this number says that, not that divergence tracks bias. Its p-value tests independence
    of all members (member-level permutation); its CI is over seeds like every other.
``within`` (:func:`stratum_correlations`)
    Spearman correlation inside each stratum, exact permutation p-value when ``n! <=
    n_permutations``, a BCa bootstrap CI from 10 seeds on (NaN below: a CI of a correlation
    of 3-9 points is not worth printing; the p-value is exact).

Every row says how many members and seeds it rests on (``n_members``, ``n_seeds``) and is
flagged ``few_seeds`` below 5 seeds. docs/explain.md has the formulas and choices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from repsim._core.stats import (
    FEW_SEEDS,
    MIN_SEEDS_BOOTSTRAP,
    adjust_pvalues,
    cluster_interval,
    codes,
    partial_rank_correlation,
    partial_rank_correlation_rows,
    stratified_permutation_test,
)
from repsim.errors import ConfigError
from repsim.explain._tables import (
    _bias_columns,
    _divergences,
    _layer_order,
    _member_key,
    _warn,
    check_covariates,
    covariate_value,
    shift_tables,
    stratum_value,
)

#: Default strata of the controlled analysis: one stratum per configuration.
DEFAULT_STRATA = ("method", "sparsity")
#: What the pooled correlation is confounded by.
CONFOUNDERS = ("sparsity", "method")
POOLED_LABEL = (
    "pooled across configurations: confounded by sparsity (and method); divergence and bias "
    "both grow with sparsity, so this is not evidence that divergence tracks bias"
)


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


class _Joined:
    """Member-level arrays per layer and bias metric."""

    def __init__(
        self,
        similarity: Any,
        shifts: Any,
        *,
        divergence: str,
        bias: Any,
        layers: Sequence[str] | None,
        strata: Sequence[str],
        covariates: Sequence[str],
    ) -> None:
        divs, found = _divergences(similarity, divergence)
        self.order = _layer_order(found, layers)
        self.members, _ = shift_tables(shifts)
        self.metrics = _bias_columns(list(self.members.values()), bias)
        check_covariates(self.members, covariates)
        for name in strata:
            if name not in ("method", "sparsity", "seed") and not any(
                name in r for r in self.members.values()
            ):
                raise ConfigError(
                    f"stratum column {name!r} is in no shift row; strata are shift-table "
                    "columns such as 'method' and 'sparsity'."
                )
        self.strata, self.covariates = list(strata), list(covariates)
        self.by_layer: dict[str, dict[tuple[str, float, str], float]] = {}
        for d in divs:
            if d.kind != "compressed" or d.group is not None:
                continue
            self.by_layer.setdefault(d.layer, {})[_member_key(d.method, d.sparsity, d.seed)] = (
                d.value
            )

    def arrays(self, layer: str, metric: str) -> dict[str, Any]:
        """x, y, strata, blocks, clusters, covariates of the members with finite values."""
        xs = self.by_layer.get(layer, {})
        keys, x, y, cov = [], [], [], []
        for key, xv in xs.items():
            row = self.members.get(key)
            if row is None:
                continue
            yv = row.get(metric)
            yv = math.nan if yv is None else float(yv)
            cv = [covariate_value(row, c, key) for c in self.covariates]
            if not (np.isfinite(xv) and np.isfinite(yv) and all(np.isfinite(cv))):
                continue
            keys.append(key)
            x.append(xv)
            y.append(yv)
            cov.append(cv)
        strata = [tuple(stratum_value(self.members[k], s, k) for s in self.strata) for k in keys]
        # stratum-major, then seed: every seed's members then come in the same stratum order,
        # so cluster resamples share one stratum pattern and are computed in one batch
        block_codes = codes([(k[0], k[1], *s) for k, s in zip(keys, strata, strict=True)])
        perm = np.lexsort((codes([k[2] for k in keys]), block_codes)) if keys else []
        keys = [keys[i] for i in perm]
        strata = [strata[i] for i in perm]
        x, y, cov = [x[i] for i in perm], [y[i] for i in perm], [cov[i] for i in perm]
        return {
            "keys": keys,
            "x": np.asarray(x, dtype=float),
            "y": np.asarray(y, dtype=float),
            "strata": strata if self.strata else None,
            "blocks": [(k[0], k[1], s) for k, s in zip(keys, strata or [()] * len(keys))],
            "clusters": [k[2] for k in keys],
            "cov": np.asarray(cov, dtype=float).reshape(len(keys), len(self.covariates))
            if self.covariates
            else None,
        }


def _statistic(x: np.ndarray, y: np.ndarray, strata: Any, cov: np.ndarray | None) -> Any:
    """The (batched) controlled rank correlation of rows ``idx`` (1-D or ``[B, m]``)."""
    sc = codes(strata) if strata is not None else np.zeros(len(x), dtype=np.intp)

    def stat(idx: np.ndarray) -> Any:
        idx = np.asarray(idx)
        if idx.ndim == 2 and (sc[idx] == sc[idx[0]]).all():
            c = sc[idx[0]]
            return partial_rank_correlation_rows(
                x[idx], y[idx], strata=c, covariates=None if cov is None else cov[idx]
            )
        if idx.ndim == 2:
            return np.array([stat(i) for i in idx])
        if idx.size < 3:
            return math.nan
        return partial_rank_correlation(
            x[idx], y[idx], strata=sc[idx], covariates=None if cov is None else cov[idx]
        )

    return stat


def _seeds(clusters: Sequence[Any]) -> int:
    return len(set(clusters))


def _analysis(strata: Sequence[str], covariates: Sequence[str]) -> str:
    if strata and covariates:
        return "partial within strata"
    if strata:
        return "within strata"
    if covariates:
        return "partial"
    return "unadjusted"


def _finish(rows: list[dict[str, Any]], correction: str) -> list[dict[str, Any]]:
    adj = adjust_pvalues([r["p"] for r in rows], correction) if rows else []
    for r, a in zip(rows, adj, strict=True):
        r["p_adjusted"] = float(a)
        r["correction"] = correction
    return rows


def _check(correction: str) -> None:
    from repsim._core.stats import CORRECTIONS

    if correction not in CORRECTIONS:
        raise ConfigError(f"correction must be one of {CORRECTIONS}, got {correction!r}.")


def controlled_correlations(
    similarity: Any,
    shifts: Any,
    *,
    divergence: str = "1-cka",
    bias: str | Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    strata: str | Sequence[str] | None = DEFAULT_STRATA,
    covariates: str | Sequence[str] | None = None,
    correction: str = "holm",
    n_boot: int = 2000,
    n_permutations: int = 10000,
    ci: float = 0.95,
    seed: int = 0,
    min_seeds_bootstrap: int = MIN_SEEDS_BOOTSTRAP,
    few_seeds: int = FEW_SEEDS,
) -> list[dict[str, Any]]:
    """Per layer and bias metric: the rank correlation within strata and given covariates.

    Parameters
    ----------
    similarity, shifts
        Tidy tables (schema in :mod:`repsim.explain.relations`). Shift rows of kind
        ``"dense"`` are ignored here.
    divergence, bias, layers
        As :func:`repsim.explain.relate`.
    strata : list of str or None
        Shift-table columns whose combinations are the strata (default ``method`` x
        ``sparsity``); None for none.
    covariates : list of str, optional
        Covariates partialled out by rank (``"sparsity"``, ``"accuracy_drop"`` (derived as
        ``dense_accuracy - accuracy`` when absent) or any numeric shift column). A covariate
        constant within every stratum (``sparsity`` within ``method`` x ``sparsity``) is
        absorbed by the strata and changes nothing.
    correction : {"holm", "bh", "fdr_bh", "bonferroni", "none"}
        Multiple-testing correction across every row (layers x bias metrics).
    n_boot, n_permutations, ci, seed
        Cluster bootstrap resamples (used from ``min_seeds_bootstrap`` seeds on),
        permutations, interval level and seed of every draw.
    min_seeds_bootstrap, few_seeds
        Seeds from which the CI is a BCa cluster bootstrap (below: cluster jackknife t on
        Fisher's z), and below which a row is flagged ``few_seeds``.

    Returns
    -------
    list of dict
        ``layer``, ``bias``, ``divergence``, ``analysis``, ``statistic`` (``"spearman"``),
        ``strata``, ``covariates``, ``estimate``, ``low``, ``high``, ``ci``, ``interval``,
        ``p``, ``p_adjusted``, ``correction``, ``p_exact``, ``permutation`` (``"joint"``:
        seeds permuted together across blocks; ``"within"``: the fallback), ``n_permutations``,
        ``n_members``, ``n_seeds``, ``n_strata``, ``few_seeds``, ``covariate_r2_x`` /
        ``covariate_r2_y`` (share of the within-stratum rank variance of divergence / bias the
        covariates explain; NaN without covariates; above 0.8 for both, the p-value is
        approximate and can be too small), ``label``.
    """
    _check(correction)
    strata_n, cov_n = _names(strata), _names(covariates)
    data = _Joined(
        similarity,
        shifts,
        divergence=divergence,
        bias=bias,
        layers=layers,
        strata=strata_n,
        covariates=cov_n,
    )
    analysis = _analysis(strata_n, cov_n)
    label = (
        ("rank correlation within " + " x ".join(strata_n) if strata_n else "rank correlation")
        + (" given " + ", ".join(cov_n) if cov_n else "")
        + "; seeds permuted together within configurations"
    )
    rows = []
    for layer in data.order:
        for metric in data.metrics:
            a = data.arrays(layer, metric)
            test = stratified_permutation_test(
                a["x"],
                a["y"],
                strata=a["strata"],
                covariates=a["cov"],
                blocks=a["blocks"],
                clusters=a["clusters"],
                n_permutations=n_permutations,
                seed=seed,
            )
            est = test["estimate"]
            interval = cluster_interval(
                _statistic(a["x"], a["y"], a["strata"], a["cov"]),
                a["clusters"],
                estimate=est,
                ci=ci,
                n_boot=n_boot,
                seed=seed,
                min_clusters_bootstrap=min_seeds_bootstrap,
                transform="fisher",
                vectorized=True,
            )
            n_seeds = _seeds(a["clusters"])
            n_strata = (
                sum(1 for c in np.bincount(codes(a["strata"])) if c >= 2)
                if a["strata"]
                else int(len(a["keys"]) >= 2)
            )
            rows.append(
                {
                    "layer": layer,
                    "bias": metric,
                    "divergence": divergence,
                    "analysis": analysis,
                    "statistic": "spearman",
                    "strata": strata_n,
                    "covariates": cov_n,
                    "estimate": est,
                    "low": interval["low"],
                    "high": interval["high"],
                    "ci": ci,
                    "interval": interval["interval"],
                    "p": test["p"],
                    "p_exact": test["exact"],
                    "permutation": test["scheme"],
                    "n_permutations": test["n_permutations"],
                    "n_members": len(a["keys"]),
                    "n_seeds": n_seeds,
                    "n_strata": n_strata,
                    "few_seeds": n_seeds < few_seeds,
                    "covariate_r2_x": test.get("covariate_r2_x", math.nan),
                    "covariate_r2_y": test.get("covariate_r2_y", math.nan),
                    "label": label,
                }
            )
    return _finish(rows, correction)


def pooled_correlations(
    similarity: Any,
    shifts: Any,
    *,
    divergence: str = "1-cka",
    bias: str | Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    correction: str = "holm",
    n_boot: int = 2000,
    n_permutations: int = 10000,
    ci: float = 0.95,
    seed: int = 0,
    min_seeds_bootstrap: int = MIN_SEEDS_BOOTSTRAP,
    few_seeds: int = FEW_SEEDS,
) -> list[dict[str, Any]]:
    """Per layer and bias metric: Spearman across every member, labelled confounded.

    The correlation a naive reading of a family gives: every member of every configuration in
    one cloud. Because divergence and bias both grow with sparsity, it is confounded by
    sparsity (and method); each row says so in ``confounded_by`` and ``label``. ``p`` is the
    member-level permutation test of independence (it ignores that members share seeds); the
    CI is over seeds as in :func:`controlled_correlations`; ``p_adjusted`` across rows.

    Returns
    -------
    list of dict
        The columns of :func:`controlled_correlations` plus ``confounded_by``.
    """
    _check(correction)
    data = _Joined(
        similarity,
        shifts,
        divergence=divergence,
        bias=bias,
        layers=layers,
        strata=[],
        covariates=[],
    )
    rows = []
    for layer in data.order:
        for metric in data.metrics:
            a = data.arrays(layer, metric)
            test = stratified_permutation_test(
                a["x"], a["y"], n_permutations=n_permutations, seed=seed
            )
            interval = cluster_interval(
                _statistic(a["x"], a["y"], None, None),
                a["clusters"],
                estimate=test["estimate"],
                ci=ci,
                n_boot=n_boot,
                seed=seed,
                min_clusters_bootstrap=min_seeds_bootstrap,
                transform="fisher",
                vectorized=True,
            )
            n_seeds = _seeds(a["clusters"])
            rows.append(
                {
                    "layer": layer,
                    "bias": metric,
                    "divergence": divergence,
                    "analysis": "pooled",
                    "statistic": "spearman",
                    "strata": [],
                    "covariates": [],
                    "estimate": test["estimate"],
                    "low": interval["low"],
                    "high": interval["high"],
                    "ci": ci,
                    "interval": interval["interval"],
                    "p": test["p"],
                    "p_exact": test["exact"],
                    "permutation": "members",
                    "n_permutations": test["n_permutations"],
                    "n_members": len(a["keys"]),
                    "n_seeds": n_seeds,
                    "n_strata": 1,
                    "few_seeds": n_seeds < few_seeds,
                    "confounded_by": list(CONFOUNDERS),
                    "label": POOLED_LABEL,
                }
            )
    return _finish(rows, correction)


def stratum_correlations(
    similarity: Any,
    shifts: Any,
    *,
    divergence: str = "1-cka",
    bias: str | Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    strata: str | Sequence[str] | None = DEFAULT_STRATA,
    correction: str = "holm",
    n_boot: int = 2000,
    n_permutations: int = 10000,
    ci: float = 0.95,
    seed: int = 0,
    min_seeds_bootstrap: int = MIN_SEEDS_BOOTSTRAP,
    few_seeds: int = FEW_SEEDS,
) -> list[dict[str, Any]]:
    """Per layer, bias metric and stratum: Spearman correlation across the stratum's seeds.

    Inside one stratum each seed has one member, so rows are independent: the p-value is the
    plain permutation test (exact when ``n! <= n_permutations``), and the CI a BCa bootstrap
    over seeds from ``min_seeds_bootstrap`` seeds on, NaN below (``interval="none"``).
    ``p_adjusted`` across every row of the table.

    Returns
    -------
    list of dict
        ``layer``, ``bias``, ``stratum`` (dict of the stratum columns), ``estimate``, ``low``,
        ``high``, ``interval``, ``p``, ``p_exact``, ``p_adjusted``, ``correction``,
        ``n_seeds``, ``few_seeds``.
    """
    _check(correction)
    strata_n = _names(strata) or list(DEFAULT_STRATA)
    data = _Joined(
        similarity,
        shifts,
        divergence=divergence,
        bias=bias,
        layers=layers,
        strata=strata_n,
        covariates=[],
    )
    rows = []
    small: dict[Any, int] = {}
    for layer in data.order:
        for metric in data.metrics:
            a = data.arrays(layer, metric)
            labels = a["strata"] or []
            for value in dict.fromkeys(labels):
                idx = np.array([i for i, s in enumerate(labels) if s == value], dtype=np.intp)
                x, y = a["x"][idx], a["y"][idx]
                clusters = [a["clusters"][i] for i in idx]
                if len(idx) >= 3:
                    test = stratified_permutation_test(
                        x, y, n_permutations=n_permutations, seed=seed
                    )
                else:
                    small.setdefault(value, len(idx))
                    test = {"estimate": math.nan, "p": math.nan, "exact": False}
                if len(set(clusters)) >= min_seeds_bootstrap:
                    interval = cluster_interval(
                        _statistic(x, y, None, None),
                        clusters,
                        estimate=test["estimate"],
                        ci=ci,
                        n_boot=n_boot,
                        seed=seed,
                        min_clusters_bootstrap=min_seeds_bootstrap,
                        vectorized=True,
                    )
                else:
                    interval = {"low": math.nan, "high": math.nan, "interval": "none"}
                n_seeds = _seeds(clusters)
                rows.append(
                    {
                        "layer": layer,
                        "bias": metric,
                        "divergence": divergence,
                        "stratum": dict(zip(strata_n, value, strict=True)),
                        "statistic": "spearman",
                        "estimate": test["estimate"],
                        "low": interval["low"],
                        "high": interval["high"],
                        "ci": ci,
                        "interval": interval["interval"],
                        "p": test["p"],
                        "p_exact": test["exact"],
                        "n_seeds": n_seeds,
                        "few_seeds": n_seeds < few_seeds,
                    }
                )
    if small:
        listed = "; ".join(
            f"{dict(zip(strata_n, v, strict=True))}: {n}" for v, n in list(small.items())[:5]
        )
        _warn(
            f"{len(small)} strata have fewer than 3 seeds with values ({listed}"
            f"{'; ...' if len(small) > 5 else ''}); their correlations are NaN."
        )
    return _finish(rows, correction)


__all__ = [
    "CONFOUNDERS",
    "DEFAULT_STRATA",
    "POOLED_LABEL",
    "controlled_correlations",
    "pooled_correlations",
    "stratum_correlations",
]
