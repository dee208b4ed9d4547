"""Group fairness and compression-bias metrics: per-group rates, CEV/SDE, PIE/CIE.

See ``docs/fairness.md`` for every formula, its source, and the choices made where sources
disagree.
"""

from __future__ import annotations

from repsim.errors import UndefinedMetricWarning
from repsim.fairness.counts import ConfusionCounter, group_metrics_from_counts, stream_group_metrics
from repsim.fairness.exemplars import Exemplars, exemplars, label_histograms, modal_labels
from repsim.fairness.groups import GroupMetrics, group_metrics
from repsim.fairness.shift import (
    CompressionShift,
    bias_amplification,
    cev_sde,
    compression_shift,
    per_class_test,
    relative_change,
)
from repsim.fairness.table import MetricTable

__all__ = [
    "ConfusionCounter",
    "CompressionShift",
    "Exemplars",
    "GroupMetrics",
    "MetricTable",
    "UndefinedMetricWarning",
    "bias_amplification",
    "cev_sde",
    "compression_shift",
    "exemplars",
    "group_metrics",
    "group_metrics_from_counts",
    "label_histograms",
    "modal_labels",
    "per_class_test",
    "relative_change",
    "stream_group_metrics",
]
