"""Streaming group metrics: confusion counts per group, accumulated batch by batch.

:class:`ConfusionCounter` counts ``(group, true, predicted)`` triples; the tables come from the
shared :mod:`repsim.fairness.groups` formulas applied to those counts, so labels and
predictions never need to be in memory together. Merging adds counts, so the counter also runs
as a reduction over Zarr chunks (:mod:`repsim.scale.dask`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from repsim._core.rows import iter_rows
from repsim._core.validation import as_vector, check_consistent_length
from repsim.errors import DataError
from repsim.fairness.groups import (
    apply_min_group_size,
    encode_inputs,
    metrics_from_confusions,
    metrics_result,
)

__all__ = ["ConfusionCounter", "group_metrics_from_counts", "stream_group_metrics"]


class ConfusionCounter:
    """Counts of ``(group, true label, predicted label)`` triples, batch by batch.

    Memory: one entry per distinct triple (at most ``G K^2``), whatever ``n``. Merging adds
    counts, so the counter runs as a reduction over chunks.
    """

    def __init__(self) -> None:
        self.counts: Counter[tuple[Any, Any, Any]] = Counter()
        self.n = 0

    def __repr__(self) -> str:
        return f"ConfusionCounter(n={self.n}, cells={len(self.counts)})"

    def update(self, y_true: Any, y_pred: Any, groups: Any) -> ConfusionCounter:
        """Add a batch of labels, predictions and group labels (1-D, equal length)."""
        names = ("y_true", "y_pred", "groups")
        yt, yp, g = (as_vector(a, name) for a, name in zip((y_true, y_pred, groups), names))
        check_consistent_length(yt, yp, g, names=names)
        if len(yt) == 0:
            return self
        rec = np.rec.fromarrays([g, yt, yp], names="g,t,p")
        cells, counts = np.unique(rec, return_counts=True)
        for cell, c in zip(cells.tolist(), counts.tolist()):
            self.counts[tuple(cell)] += int(c)
        self.n += len(yt)
        return self

    def merge(self, other: ConfusionCounter) -> ConfusionCounter:
        """Add another counter's cells into ``self``; returns ``self``."""
        if not isinstance(other, ConfusionCounter):
            raise TypeError(f"can only merge a ConfusionCounter, got {type(other).__name__}.")
        self.counts.update(other.counts)
        self.n += other.n
        return self

    def result(self, **options: Any) -> Any:
        """:func:`group_metrics_from_counts` of the counts so far."""
        return group_metrics_from_counts(self, **options)


def group_metrics_from_counts(
    counts: ConfusionCounter,
    *,
    group_names: Sequence[str] | None = None,
    labels: Sequence[Any] | None = None,
    pos_label: Any = None,
    min_group_size: int = 1,
) -> Any:
    """Per-group metrics from confusion counts: the same result as ``group_metrics``.

    Applies the formulas of :func:`repsim.fairness.group_metrics` (one-vs-rest rates, accuracy,
    Cohen's kappa, between-group gaps; see docs/fairness.md) to the ``[G, K, K]`` confusion
    matrices, so the labels and predictions never need to be in memory together. AUC (which
    needs scores, not counts) and bootstrap intervals (which resample samples) are not available
    here; call ``group_metrics`` on the vectors for those.

    Parameters
    ----------
    counts : ConfusionCounter
        The counts.
    group_names, labels, pos_label, min_group_size
        As in :func:`repsim.fairness.group_metrics`.

    Returns
    -------
    repsim.fairness.GroupMetrics
    """
    if counts.n == 0:
        raise DataError("no samples counted; update() the counter with batches first.")
    cells = list(counts.counts.items())
    g_raw = np.array([c[0][0] for c in cells])
    t_raw = np.array([c[0][1] for c in cells])
    p_raw = np.array([c[0][2] for c in cells])
    w = np.array([c[1] for c in cells], dtype=float)
    yt, yp, g, names, lab, pos = encode_inputs(
        t_raw, p_raw, g_raw, len(g_raw), labels=labels, group_names=group_names, pos_label=pos_label
    )
    k, n_groups = len(lab), len(names)
    cm = np.zeros((n_groups, k, k))
    np.add.at(cm, (g, yt, yp), w)
    res = metrics_from_confusions(cm, k, pos)
    res, _, undefined = apply_min_group_size(res, names, min_group_size, k, pos, None)
    return metrics_result(res, names, lab, pos, undefined, "group_metrics_from_counts")


def stream_group_metrics(
    y_true: Any,
    y_pred: Any,
    groups: Any,
    *,
    batch_size: int = 1 << 20,
    progress: bool | None = None,
    **options: Any,
) -> Any:
    """:func:`repsim.fairness.group_metrics` of 1-D arrays read ``batch_size`` entries at a time.

    ``y_true``, ``y_pred``, ``groups`` may be the store's ``labels``, ``predictions`` and
    ``groups`` arrays. ``options``: ``group_names``, ``labels``, ``pos_label``,
    ``min_group_size``.
    """
    counter = ConfusionCounter()
    for yt, yp, g in iter_rows(
        [y_true, y_pred, groups], batch_size, progress=progress, desc="group counts"
    ):
        counter.update(yt, yp, g)
    return group_metrics_from_counts(counter, **options)
