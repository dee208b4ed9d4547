"""``SimilarityTable``: the tidy result of :func:`repsim.similarity.compare`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from repsim._core.table import Table
from repsim.errors import ConfigError

BASE_COLUMNS = ("model_a", "layer_a", "model_b", "layer_b", "measure", "value")
EXTRA_COLUMNS = ("group", "n", "ci_low", "ci_high", "n_boot", "note")


@dataclass(frozen=True)
class LabelledMatrix:
    """A layer-by-layer matrix: ``values[i, j]`` compares ``rows[i]`` (model a) to ``cols[j]``."""

    values: np.ndarray
    rows: list[str]
    cols: list[str]
    measure: str

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.values if dtype is None else self.values.astype(dtype)


class SimilarityTable(Table):
    """The tidy result of :func:`repsim.similarity.compare`.

    Rows ``(model_a, layer_a, model_b, layer_b, measure, value)`` and, when relevant, ``group``
    (group-conditional rows; ``None`` for all samples), ``n`` (samples used), ``ci_low``,
    ``ci_high`` and ``n_boot`` (bootstrap interval), ``note`` (why a value is NaN, when it is).

    A :class:`repsim._core.table.Table` whose columns are the base columns followed by whichever
    extra columns any row carries, with a layer-by-layer :meth:`matrix` view.
    """

    def __init__(
        self, rows: Iterable[Mapping[str, Any]] = (), columns: Sequence[str] | None = None
    ) -> None:
        rows = [dict(r) for r in rows]
        if columns is None:
            present = {k for r in rows for k in r}
            columns = list(BASE_COLUMNS) + [c for c in EXTRA_COLUMNS if c in present]
        super().__init__(rows, columns)

    def value(self, column: str = "value", **equal: Any) -> Any:
        """The single value matching the filter; raises ConfigError unless exactly one row."""
        rows = self.filter(**equal).rows
        if len(rows) != 1:
            raise ConfigError(f"{len(rows)} rows match {equal}; narrow the filter to one row.")
        return rows[0][column]

    def matrix(self, measure: str | None = None, *, group: Any = None) -> LabelledMatrix:
        """The layer_a x layer_b matrix of one measure (NaN where a pair was not computed).

        Parameters
        ----------
        measure : str, optional
            Which measure; may be omitted when the table holds only one.
        group : optional
            For group-conditional tables, which group (None: all samples).
        """
        measures = list(dict.fromkeys(r["measure"] for r in self.rows))
        if measure is None:
            if len(measures) != 1:
                raise ConfigError(f"the table holds measures {measures}; pass measure=.")
            measure = measures[0]
        if measure not in measures:
            raise ConfigError(f"no rows for measure {measure!r}; the table holds {measures}.")
        rows = [r for r in self.rows if r["measure"] == measure and r.get("group") == group]
        la = list(dict.fromkeys(r["layer_a"] for r in rows))
        lb = list(dict.fromkeys(r["layer_b"] for r in rows))
        values = np.full((len(la), len(lb)), math.nan)
        ia = {name: i for i, name in enumerate(la)}
        ib = {name: j for j, name in enumerate(lb)}
        for r in rows:
            values[ia[r["layer_a"]], ib[r["layer_b"]]] = r["value"]
        return LabelledMatrix(values, la, lb, measure)
