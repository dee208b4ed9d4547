"""``MetricTable``: a small tidy table (a list of row dicts) without a pandas dependency."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from repsim.errors import DataError, did_you_mean


class MetricTable:
    """A tidy table: one row per observation, one column per variable.

    Parameters
    ----------
    rows : iterable of mapping
        The rows; every row gets every column (missing entries are ``None``).
    columns : sequence of str, optional
        Column order; by default the order in which keys first appear.

    Examples
    --------
    >>> t = MetricTable([{"group": "a", "n": 3, "accuracy": 0.5}])
    >>> t.column("accuracy")
    array([0.5])
    """

    def __init__(
        self, rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None
    ) -> None:
        rows = [dict(r) for r in rows]
        if columns is None:
            cols: list[str] = []
            for r in rows:
                cols.extend(k for k in r if k not in cols)
        else:
            cols = list(columns)
        self.columns: list[str] = cols
        self.rows: list[dict[str, Any]] = [{c: r.get(c) for c in cols} for r in rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return self.column(key)
        return self.rows[key]

    def column(self, name: str) -> np.ndarray:
        """The values of column ``name`` as an array (float where every value is numeric)."""
        if name not in self.columns:
            raise DataError(
                f"no column {name!r}; columns are {self.columns}.{did_you_mean(name, self.columns)}"
            )
        values = [r[name] for r in self.rows]
        if all(
            isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
            for v in values
        ):
            return np.asarray(values, dtype=float)
        return np.asarray(values, dtype=object)

    def row(self, **match: Any) -> dict[str, Any]:
        """The one row whose columns equal ``match`` (e.g. ``table.row(group="a")``)."""
        found = [r for r in self.rows if all(r.get(k) == v for k, v in match.items())]
        if len(found) != 1:
            raise DataError(f"{len(found)} rows match {match}; expected exactly one.")
        return found[0]

    def to_records(self) -> list[dict[str, Any]]:
        """The rows as a list of plain dicts (copies)."""
        return [dict(r) for r in self.rows]

    def to_csv(self, path: str | Path) -> Path:
        """Write the table to ``path`` as CSV (NaN written as ``nan``) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns)
            writer.writeheader()
            for r in self.rows:
                writer.writerow({k: _plain(v) for k, v in r.items()})
        return path

    def to_pandas(self):
        """The table as a ``pandas.DataFrame`` (needs pandas installed)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("MetricTable.to_pandas() needs pandas: pip install pandas") from exc
        return pd.DataFrame.from_records(self.to_records(), columns=self.columns)

    def __repr__(self) -> str:
        head = self.rows[:20]
        cells = [[_fmt(r[c]) for c in self.columns] for r in head]
        widths = [
            max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(self.columns)
        ]
        lines = ["  ".join(c.rjust(w) for c, w in zip(self.columns, widths))]
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
        if len(self.rows) > len(head):
            lines.append(f"... ({len(self.rows)} rows)")
        return f"MetricTable({len(self.rows)} rows x {len(self.columns)} columns)\n" + "\n".join(
            lines
        )


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def _fmt(v: Any) -> str:
    v = _plain(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)
