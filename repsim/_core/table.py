"""The one tidy table of repsim, and the CSV reader/writer every stage uses.

A :class:`Table` is a list of row dicts (one row per observation, one column per variable)
without a pandas dependency. Fairness results (:class:`repsim.fairness.MetricTable` is this
class), similarity results (:class:`repsim.similarity.SimilarityTable`, a Table with a
layer-by-layer matrix view) and report CSVs all use it.

CSV format: floats at full precision (``repr``) so a reader gets the exact numbers back, NaN as
``nan``, ``None`` as an empty cell; written atomically (:mod:`repsim._core.io`).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from repsim._core.io import write_text
from repsim.errors import DataError, did_you_mean

__all__ = ["Table", "columns_of", "read_csv", "write_csv"]


def columns_of(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Column names in order of first appearance across ``rows``."""
    return list(dict.fromkeys(k for r in rows for k in r))


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        f = float(value)
        return "nan" if math.isnan(f) else repr(f)
    return _plain(value)


def write_csv(
    rows: Iterable[Mapping[str, Any]], path: str | Path, *, columns: Sequence[str] | None = None
) -> Path:
    """Write tidy rows as CSV (see the module docstring for the format); returns the path.

    Parameters
    ----------
    rows : iterable of mapping
        The rows; missing entries are written as empty cells, extra keys are ignored when
        ``columns`` is given.
    path : path-like
        Destination (written atomically).
    columns : sequence of str, optional
        Column order; default: order of first appearance.
    """
    rows = list(rows)
    cols = list(columns) if columns is not None else columns_of(rows)
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=cols, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: _cell(r.get(c)) for c in cols})
    return write_text(buffer.getvalue(), path)


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Read a CSV written by :func:`write_csv` back as rows of strings."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _fmt(v: Any) -> str:
    v = _plain(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


class Table:
    """A tidy table: one row per observation, one column per variable.

    Parameters
    ----------
    rows : iterable of mapping
        The rows; every row gets every column (missing entries are ``None``).
    columns : sequence of str, optional
        Column order; by default the order in which keys first appear.

    Examples
    --------
    >>> t = Table([{"group": "a", "n": 3, "accuracy": 0.5}])
    >>> t.column("accuracy")
    array([0.5])
    >>> t.filter(group="a").value(column="n")
    3
    """

    def __init__(
        self, rows: Iterable[Mapping[str, Any]] = (), columns: Sequence[str] | None = None
    ) -> None:
        rows = [dict(r) for r in rows]
        cols = list(columns) if columns is not None else columns_of(rows)
        self.columns: list[str] = cols
        self.rows: list[dict[str, Any]] = [{c: r.get(c) for c in cols} for r in rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return self.column(key)
        return self.rows[key]

    def _check_column(self, name: str) -> None:
        if name not in self.columns:
            raise DataError(
                f"no column {name!r}; columns are {self.columns}.{did_you_mean(name, self.columns)}"
            )

    def column(self, name: str) -> np.ndarray:
        """The values of column ``name`` as an array (float where every value is numeric)."""
        self._check_column(name)
        values = [r[name] for r in self.rows]
        if all(
            isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
            for v in values
        ):
            return np.asarray(values, dtype=float)
        return np.asarray(values, dtype=object)

    def filter(self, **equal: Any) -> Table:
        """Rows whose columns equal the given values, e.g. ``table.filter(measure="cka")``."""
        kept = [r for r in self.rows if all(r.get(k) == v for k, v in equal.items())]
        return self._like(kept)

    def _like(self, rows: list[dict[str, Any]]) -> Table:
        return type(self)(rows, columns=self.columns)

    def row(self, **match: Any) -> dict[str, Any]:
        """The one row whose columns equal ``match`` (e.g. ``table.row(group="a")``).

        Raises
        ------
        DataError
            When no row or more than one row matches.
        """
        found = self.filter(**match).rows
        if len(found) != 1:
            raise DataError(f"{len(found)} rows match {match}; expected exactly one.")
        return found[0]

    def value(self, column: str = "value", **match: Any) -> Any:
        """The ``column`` entry of the one row matching ``match``."""
        self._check_column(column)
        return self.row(**match)[column]

    def to_records(self) -> list[dict[str, Any]]:
        """The rows as a list of plain dicts (copies, every column present)."""
        return [{c: r.get(c) for c in self.columns} for r in self.rows]

    def to_csv(self, path: str | Path) -> Path:
        """Write the table as CSV (see :func:`write_csv`) and return the path."""
        return write_csv(self.to_records(), path, columns=self.columns)

    def to_pandas(self) -> Any:
        """The table as a ``pandas.DataFrame`` (needs pandas, which repsim does not depend on)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"{type(self).__name__}.to_pandas() needs pandas (pip install pandas); "
                "use to_records() or to_csv() without it."
            ) from exc
        return pd.DataFrame.from_records(self.to_records(), columns=self.columns)

    def __repr__(self) -> str:
        head = self.rows[:20]
        cells = [[_fmt(r.get(c)) for c in self.columns] for r in head]
        widths = [
            max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(self.columns)
        ]
        lines = ["  ".join(c.rjust(w) for c, w in zip(self.columns, widths, strict=True))]
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
        if len(self.rows) > len(head):
            lines.append(f"... ({len(self.rows)} rows)")
        title = f"{type(self).__name__}({len(self.rows)} rows x {len(self.columns)} columns)"
        return title + "\n" + "\n".join(lines)
