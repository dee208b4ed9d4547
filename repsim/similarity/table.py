"""``SimilarityTable``: the tidy result of :func:`repsim.similarity.compare`."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repsim.errors import ConfigError

BASE_COLUMNS = ("model_a", "layer_a", "model_b", "layer_b", "measure", "value")
EXTRA_COLUMNS = ("group", "n", "ci_low", "ci_high", "n_boot")


@dataclass(frozen=True)
class LabelledMatrix:
    """A layer-by-layer matrix: ``values[i, j]`` compares ``rows[i]`` (model a) to ``cols[j]``."""

    values: np.ndarray
    rows: list[str]
    cols: list[str]
    measure: str

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.values if dtype is None else self.values.astype(dtype)


@dataclass
class SimilarityTable:
    """Rows ``(model_a, layer_a, model_b, layer_b, measure, value)`` and, when relevant, ``group``
    (group-conditional rows; ``None`` for all samples), ``n`` (samples used), ``ci_low``,
    ``ci_high`` and ``n_boot`` (bootstrap interval).

    ``rows`` is a plain ``list[dict]``; nothing here needs pandas.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def __repr__(self) -> str:
        return f"SimilarityTable({len(self.rows)} rows, columns={self.columns})"

    @property
    def columns(self) -> list[str]:
        """The base columns followed by whichever extra columns any row carries."""
        present = {k for r in self.rows for k in r}
        return list(BASE_COLUMNS) + [c for c in EXTRA_COLUMNS if c in present]

    def to_records(self) -> list[dict[str, Any]]:
        """A copy of the rows, each a dict with every column (missing ones as None)."""
        cols = self.columns
        return [{c: r.get(c) for c in cols} for r in self.rows]

    def to_csv(self, path: str | Path) -> Path:
        """Write the table as CSV (NaN as ``nan``, None as empty); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(self.to_records())
        return path

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` of the rows (needs pandas, which repsim does not depend on)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("to_pandas() needs pandas; use to_records() or to_csv().") from exc
        return pd.DataFrame(self.to_records(), columns=self.columns)

    def filter(self, **equal: Any) -> SimilarityTable:
        """Rows whose columns equal the given values, e.g. ``table.filter(measure="cka")``."""
        return SimilarityTable(
            [r for r in self.rows if all(r.get(k) == v for k, v in equal.items())]
        )

    def value(self, **equal: Any) -> float:
        """The single value matching the filter; raises ConfigError unless exactly one row."""
        rows = self.filter(**equal).rows
        if len(rows) != 1:
            raise ConfigError(f"{len(rows)} rows match {equal}; narrow the filter to one row.")
        return rows[0]["value"]

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
