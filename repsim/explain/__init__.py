"""Explain: relate per-layer representation divergence to the bias compression causes.

:func:`relate` takes the tidy similarity and shift tables of a model family and returns
:class:`Relations`: per-layer correlations with bias, the dense-vs-dense noise floor, the onset
layer and group-conditional divergence gaps. The statistics themselves live in
:mod:`repsim._core.stats`.
"""

from __future__ import annotations

from repsim._core.stats import bootstrap_ci, correlate, paired_difference, permutation_pvalue
from repsim.errors import RelationWarning
from repsim.explain.relations import (
    BIAS_METRICS,
    Relations,
    as_rows,
    correlations,
    group_gaps,
    noise_floor,
    onset,
    parse_divergence,
    relate,
)

__all__ = [
    "BIAS_METRICS",
    "RelationWarning",
    "Relations",
    "as_rows",
    "bootstrap_ci",
    "correlate",
    "correlations",
    "group_gaps",
    "noise_floor",
    "onset",
    "paired_difference",
    "parse_divergence",
    "permutation_pvalue",
    "relate",
]
