"""Tidy tables to disk for reports: CSV (one row per dict) and JSON (NaN as ``null``).

The writers are the shared ones of :mod:`repsim._core.table` and :mod:`repsim._core.io`
(atomic, full float precision); this module is where report code finds them.
"""

from __future__ import annotations

from repsim._core.io import to_jsonable, write_json
from repsim._core.table import columns_of, read_csv, write_csv

__all__ = ["columns_of", "read_csv", "to_jsonable", "write_csv", "write_json"]
