"""Explain: relate per-layer representation divergence to the bias compression causes.

:func:`relate` takes the tidy similarity and shift tables of a model family and returns
:class:`Relations`. The dense seed is the unit of replication throughout. The default
(headline) analysis is *controlled*: the rank correlation of divergence with bias within each
configuration (:func:`controlled_correlations`), drift and bias beyond the recovery-only
control, random pruning and the dense-vs-dense floor (:func:`drift_effects`,
:func:`bias_effects`), the onset layer tested against the recovery-only control
(:func:`onset_tests`) and size-fair group gaps (:func:`group_gaps`), each with the number of
seeds it rests on and corrected p-values. The pooled correlation (:func:`pooled_correlations`)
is kept, labelled confounded by sparsity. The statistics live in :mod:`repsim._core.stats`;
docs/explain.md has the method notes.
"""

from __future__ import annotations

from repsim._core.stats import (
    adjust_pvalues,
    bootstrap_ci,
    bootstrap_interval,
    cluster_bootstrap,
    cluster_interval,
    correlate,
    paired_difference,
    partial_rank_correlation,
    permutation_pvalue,
    stratified_permutation_test,
    t_test,
)
from repsim.errors import RelationWarning
from repsim.explain._tables import control_role, split_method
from repsim.explain.controls import (
    COMPARISONS,
    RANDOM_PRUNING,
    RECOVERY_ONLY,
    bias_effects,
    controls_of,
    drift_effects,
    floor_effect,
    onset_tests,
    paired_effect,
)
from repsim.explain.groups import group_gaps
from repsim.explain.relations import (
    BIAS_METRICS,
    Relations,
    as_rows,
    correlations,
    noise_floor,
    onset,
    parse_divergence,
    relate,
)
from repsim.explain.strata import (
    CONFOUNDERS,
    DEFAULT_STRATA,
    controlled_correlations,
    pooled_correlations,
    stratum_correlations,
)

__all__ = [
    "BIAS_METRICS",
    "COMPARISONS",
    "CONFOUNDERS",
    "DEFAULT_STRATA",
    "RANDOM_PRUNING",
    "RECOVERY_ONLY",
    "RelationWarning",
    "Relations",
    "adjust_pvalues",
    "as_rows",
    "bias_effects",
    "bootstrap_ci",
    "bootstrap_interval",
    "cluster_bootstrap",
    "cluster_interval",
    "control_role",
    "controlled_correlations",
    "controls_of",
    "correlate",
    "correlations",
    "drift_effects",
    "floor_effect",
    "group_gaps",
    "noise_floor",
    "onset",
    "onset_tests",
    "paired_difference",
    "paired_effect",
    "parse_divergence",
    "partial_rank_correlation",
    "permutation_pvalue",
    "pooled_correlations",
    "relate",
    "split_method",
    "stratified_permutation_test",
    "stratum_correlations",
    "t_test",
]
