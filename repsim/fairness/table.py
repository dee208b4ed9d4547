"""``MetricTable``: the tidy table of fairness results (the shared :class:`repsim._core.table.Table`)."""

from __future__ import annotations

from repsim._core.table import Table

#: Fairness results are plain :class:`~repsim._core.table.Table` objects under this name.
MetricTable = Table

__all__ = ["MetricTable"]
