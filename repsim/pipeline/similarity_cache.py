"""Cached layer similarity: a re-run of a study reuses every comparison it made before.

:func:`cached_compare` is :func:`repsim.similarity.compare` with a cache. Its key is built the
way activation-cache keys are: both captures' model fingerprints, data fingerprints and
reductions, plus every argument that changes a number (layers, measures and their options,
pairs, group labels, bootstrap settings, seed) and the repsim version. A key that matches
returns the stored table; anything else computes the comparison and stores it.

Entries are JSON files ``<cache_dir>/similarity/<key>.json`` written atomically
(:mod:`repsim._core.io`), holding the key's ingredients (checked on every read, so a
truncated-hash collision can never return another comparison), the columns and the rows
(floats exactly as computed; NaN kept). An unreadable entry is recomputed and rewritten.
Deleting the folder is always safe.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from repsim._core.io import read_json, write_json
from repsim._core.log import get_logger
from repsim._version import __version__
from repsim.errors import OutputError

__all__ = ["SCHEMA_VERSION", "cached_compare", "similarity_key"]

#: Version of the entry layout; bumping it invalidates every stored entry.
SCHEMA_VERSION = 1

logger = get_logger(__name__)


def _labels_digest(labels: Any) -> str | None:
    if labels is None:
        return None
    text = json.dumps([str(v) for v in np.asarray(labels, dtype=object).ravel().tolist()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars and containers made JSON-native; NaN kept as a float."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _capture_id(capture: Any) -> list[Any] | None:
    fp = getattr(capture, "model_fingerprint", None)
    data = getattr(capture, "data_fingerprint", None)
    if not fp or not data:
        return None
    return [str(fp), str(data), str(getattr(capture, "reduction", ""))]


def similarity_key(a: Any, b: Any, **options: Any) -> tuple[str, dict[str, Any]] | None:
    """The cache key of ``compare(a, b, **options)`` and what it is made of.

    Returns
    -------
    (str, dict) or None
        The hex key and its ingredients; ``None`` when a capture carries no fingerprints
        (a plain mapping of arrays), which is then never cached.
    """
    ids = (_capture_id(a), _capture_id(b))
    if ids[0] is None or ids[1] is None:
        return None
    opts = dict(options)
    opts.pop("progress", None)
    groups = opts.get("groups")
    if groups is True:
        groups = getattr(a, "groups", None)
    opts["groups"] = _labels_digest(groups)
    for name in ("layers", "measures"):
        value = opts.get(name)
        if isinstance(value, str):
            opts[name] = [value]
    material = {
        "schema": SCHEMA_VERSION,
        "repsim": __version__,
        "a": ids[0],
        "b": ids[1],
        "options": _plain(opts),
    }
    text = json.dumps(material, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32], json.loads(text)


def _same(stored: Any, material: Mapping[str, Any]) -> bool:
    return json.dumps(stored, sort_keys=True) == json.dumps(material, sort_keys=True)


def cached_compare(
    a: Any,
    b: Any,
    *,
    cache_dir: str | Path | None,
    name_a: str | None = None,
    name_b: str | None = None,
    **options: Any,
) -> tuple[Any, bool]:
    """:func:`repsim.similarity.compare` of two captures, through the similarity cache.

    Parameters
    ----------
    a, b : Capture
        Captures with ``model_fingerprint``, ``data_fingerprint`` and ``reduction`` (as
        :func:`repsim.capture.record` returns them); plain mappings are compared uncached.
    cache_dir : path-like or None
        The cache root (entries go to ``cache_dir/similarity/``); ``None`` disables caching.
    name_a, name_b : str, optional
        Labels of the rows' ``model_a`` and ``model_b`` (default the captures' names); not
        part of the key.
    **options
        Keyword arguments of :func:`~repsim.similarity.compare`.

    Returns
    -------
    (SimilarityTable, bool)
        The table and whether it came from the cache.
    """
    from repsim.similarity import compare
    from repsim.similarity.table import SimilarityTable

    key = similarity_key(a, b, **options) if cache_dir is not None else None
    path = None
    if key is not None:
        path = Path(cache_dir) / "similarity" / f"{key[0]}.json"
        if path.is_file():
            try:
                entry = read_json(path, what="similarity cache entry")
                if isinstance(entry, dict) and _same(entry.get("key"), key[1]):
                    rows = entry["rows"]
                    for row in rows:
                        if "model_a" in row:
                            row["model_a"] = name_a or getattr(a, "name", None) or "a"
                        if "model_b" in row:
                            row["model_b"] = name_b or getattr(b, "name", None) or "b"
                    logger.debug("similarity %s vs %s: from cache %s", a.name, b.name, path.name)
                    return SimilarityTable(rows, entry["columns"]), True
            except (OutputError, KeyError, TypeError) as exc:
                logger.debug("similarity cache entry %s unreadable (%s); recomputing", path, exc)
    table = compare(a, b, model_a=name_a, model_b=name_b, **options)
    if path is not None and key is not None:
        rows = [_plain(r) for r in table.to_records()]
        entry = {"key": key[1], "columns": list(table.columns), "rows": rows}
        try:
            write_json(entry, path, indent=None, allow_nan=True)
        except (OutputError, OSError) as exc:  # a read-only cache must not fail the study
            logger.warning("could not store a similarity result (%s); continuing", exc)
    return table, False
