"""Capture split by sample ranges: many workers write one store entry, published when complete.

``record_shard(model, data, layers, shard=(i, k), store=...)`` runs the forward pass on shard
``i`` of ``k`` only: the samples ``[a_i, b_i)`` where the boundaries are multiples of a common
row-chunk size ``R`` (:func:`shard_ranges`), so each worker writes whole Zarr chunks of its own
rows and no two workers ever touch the same chunk. Layout while shards are running::

    <store>/.shards/<model_fp>-<data_fp>@<reduction>/
        zarr.json                 group attrs as a normal entry (fingerprints, n_samples, ...)
        <layer>@<reduction>/ ...  [n, f] arrays, chunks (R, f), created by whichever worker is
                                  first (identical metadata from every worker)
        logits labels ...         the meta arrays, written the same way
        .done/<i>-of-<k>.json     written (atomically) when shard i has flushed every row

The entry is **complete only when all k markers exist**: the worker that writes the last marker
(or anyone calling :func:`finalize_shards`) claims the directory by one atomic rename into the
store's ``.tmp`` area, marks every array complete and publishes it exactly like a normal capture
(:meth:`repsim.capture.store.PendingEntry.commit`). Readers never see a partial entry; a worker that dies
leaves no marker, and rerunning its shard rewrites the same rows (idempotent). Two workers
racing to finalize: the rename succeeds for one; the other finds the directory gone and returns.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
import zarr.codecs
import zarr.errors
import zarr.storage

from repsim._core.fingerprints import model_fingerprint, unwrap_model
from repsim._core.io import write_json
from repsim.capture.record import (
    _source,
    array_attrs,
    fingerprint_source,
    forward_rows,
    resolve_device,
)
from repsim.capture.store import (
    META_ARRAYS,
    REDUCTIONS,
    SCHEMA_VERSION,
    ActivationStore,
    PendingEntry,
    RowWriter,
    _RecordingStore,
    array_attributes,
    array_name,
    compressor,
    entry_key,
    fill_value,
    provenance,
)
from repsim.errors import CacheError, ConfigError, DataError, ShapeError
from repsim.layers import select_layers

__all__ = ["finalize_shards", "record_shard", "shard_ranges", "shard_status"]

_SHARDS = ".shards"


def shard_ranges(n: int, k: int, chunk_rows: int) -> list[tuple[int, int]]:
    """Split ``n`` samples into ``k`` chunk-aligned contiguous ranges.

    Split ``n`` samples into ``k`` contiguous ranges whose boundaries are multiples of
    ``chunk_rows`` (the last range ends at ``n``). Ranges may be empty when ``k`` exceeds the
    number of chunks.
    """
    if k < 1 or chunk_rows < 1 or n < 0:
        raise ConfigError(
            f"need k >= 1 shards and chunk_rows >= 1, got k={k}, chunk_rows={chunk_rows}."
        )
    n_chunks = -(-n // chunk_rows)
    bounds = [min(n, (n_chunks * i // k) * chunk_rows) for i in range(k + 1)]
    bounds[-1] = n
    return [(bounds[i], bounds[i + 1]) for i in range(k)]


def _shard_dir(store: ActivationStore, key: str, reduction: str) -> Path:
    return store.path / _SHARDS / f"{key}@{reduction}"


def _create_or_open(
    group_path: Path,
    name: str,
    n: int,
    n_features: int | None,
    dtype: Any,
    rows: int,
    clevel: int,
    attrs: dict[str, Any],
    recorder: _RecordingStore,
) -> zarr.Array:
    """Create the shared array, or open the one another worker created (same metadata).

    Chunks go through ``recorder``, which keeps each written chunk's checksum for the
    worker's done-marker.
    """
    dtype = np.dtype(dtype)
    shape: tuple[int, ...] = (n,) if n_features is None else (n, n_features)
    path = group_path / name
    try:
        zarr.create_array(
            zarr.storage.LocalStore(path),
            shape=shape,
            chunks=(rows, *shape[1:]),
            dtype=dtype,
            fill_value=fill_value(dtype),
            compressors=compressor(clevel),
            attributes=array_attributes(attrs, dtype, n_features),
        )
    except (zarr.errors.ContainsArrayError, zarr.errors.ContainsGroupError, FileExistsError):
        pass
    arr = zarr.open_array(recorder, path=name, mode="r+").with_config({"write_empty_chunks": True})
    if tuple(arr.shape) != shape or int(arr.chunks[0]) != rows or arr.dtype != dtype:
        raise CacheError(
            f"shard array {name} exists with shape {arr.shape}, chunks {arr.chunks}, dtype "
            f"{arr.dtype} but this worker needs {shape}, rows {rows}, {dtype}: the workers run "
            "different models, layers or chunk_rows. Use the same arguments on every worker, "
            f"or delete {group_path} to start over."
        )
    return arr


def record_shard(
    model: torch.nn.Module,
    data: Any,
    layers: Any = None,
    *,
    shard: tuple[int, int],
    store: ActivationStore | str,
    reduction: str = "flatten",
    chunk_rows: int = 1024,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    seed: int = 0,
    name: str | None = None,
    progress: bool | None = None,
) -> bool:
    """Capture shard ``i`` of ``k`` (``shard=(i, k)``) of ``data`` into a shared store entry.

    Every worker must pass the same ``model`` (weights), ``data``, ``layers``, ``reduction``,
    ``chunk_rows`` and ``k``; worker ``i`` runs the forward pass only on its samples
    ``shard_ranges(n, k, chunk_rows)[i]`` and writes them as whole chunks of the shared arrays.
    When the last shard finishes, the entry is published atomically and ``record(...,
    store=store)`` then serves it without a forward pass. With ``chunk_rows`` a multiple of
    ``batch_size`` (and the same ``batch_size`` as a single-process ``record``) every forward
    batch is the same, so the arrays are bit-identical to a single-process capture; otherwise
    they differ only by float32 rounding of batch-size-dependent kernels.

    Parameters
    ----------
    shard : (int, int)
        ``(i, k)``: this worker's index ``0 <= i < k`` and the number of shards.
    chunk_rows : int
        Rows per Zarr chunk of every array of the entry; shard boundaries are multiples of it.
    model, data, layers, reduction, batch_size, device, seed, name, progress
        As in :func:`repsim.capture.record`.

    Returns
    -------
    bool
        True when this call published the complete entry (it finished the last shard); False
        when other shards are still missing, or the store already held every array.

    Raises
    ------
    ConfigError
        Bad ``shard`` or ``reduction``.
    CacheError
        Workers disagree on the array layout.
    NonFiniteError, ShapeError, DataError
        As :func:`repsim.capture.record`; this shard's marker is then not written.
    """
    try:
        i, k = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ConfigError(f"shard must be a pair (index, count), got {shard!r}.") from None
    if k < 1 or not 0 <= i < k:
        raise ConfigError(f"shard (i, k) needs 0 <= i < k, got {shard!r}.")
    if reduction not in REDUCTIONS:
        raise ConfigError(f"Unknown reduction {reduction!r}; choose one of {list(REDUCTIONS)}.")
    if reduction == "tokens":
        raise ConfigError(
            "Sharded capture splits samples into row ranges of the entry's arrays; 'tokens' "
            "arrays have one row per token, so capture them with repsim.capture.record."
        )
    if not isinstance(store, ActivationStore):
        store = ActivationStore(store)
    model = unwrap_model(model)
    pairs = [(layer, reduction) for layer in select_layers(model, layers)]
    label = name or type(model).__name__
    src = _source(data, batch_size)
    if src.n == 0:
        raise DataError("The data holds no samples.")
    m_fp = model_fingerprint(model, strict=True)
    d_fp = fingerprint_source(src)  # one read: the shard's forward pass replays it
    key = entry_key(m_fp, d_fp)
    wanted = [array_name(layer, red) for layer, red in pairs] + list(META_ARRAYS)
    if not store.missing(m_fp, d_fp, wanted, src.n):
        return False  # already captured and published: nothing to do
    a, b = shard_ranges(src.n, k, chunk_rows)[i]
    resolve_device(device)
    store._claim()
    gdir = _shard_dir(store, key, reduction)
    gdir.mkdir(parents=True, exist_ok=True)
    group_attrs = {
        "name": label,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "seed": seed,
        "repsim_schema": SCHEMA_VERSION,
        "model_fingerprint": m_fp,
        "data_fingerprint": d_fp,
        "n_samples": int(src.n),
        "versions": provenance(),
        "shards": k,
        "chunk_rows": int(chunk_rows),
    }
    if not (gdir / "zarr.json").exists():
        write_json(
            {"zarr_format": 3, "node_type": "group", "attributes": group_attrs},
            gdir / "zarr.json",
            indent=None,
            allow_nan=True,
        )
    sink = _ShardSink(
        gdir, src.n, int(chunk_rows), store.clevel, array_attrs(pairs, label, seed, META_ARRAYS)
    )
    try:
        forward_rows(
            model,
            src,
            pairs,
            sink,
            rows=(a, b),
            seed=seed,
            device=device,
            progress=progress,
            desc=f"capture {label} shard {i}/{k}",
        )
        sink.close()
    except OSError as exc:  # a read-only or full disk: this shard's marker is not written
        raise CacheError(
            f"cannot write shard {i} of {k} into the cache {store.path}: "
            f"{exc.strerror or exc}. Free some space or choose a writable cache path, then "
            "run this shard again."
        ) from None
    write_json(
        {"shard": i, "of": k, "rows": [a, b], "pid": os.getpid(), "chunks": sink.checksums()},
        gdir / ".done" / f"{i}-of-{k}.json",
        indent=None,
        allow_nan=True,
    )
    return finalize_shards(store, m_fp, d_fp, reduction=reduction)


class _ShardSink:
    """Write a shard's rows into the shared arrays (created by whichever worker is first)."""

    def __init__(
        self, gdir: Path, n: int, chunk_rows: int, clevel: int, attrs: dict[str, dict[str, Any]]
    ) -> None:
        self.gdir, self.n, self.chunk_rows, self.clevel = gdir, n, chunk_rows, clevel
        self.attrs = attrs
        self.writers: dict[str, RowWriter] = {}
        self.recorder = _RecordingStore(gdir)

    def write(self, start: int, batch: dict[str, np.ndarray]) -> None:
        for nm, v in batch.items():
            if nm not in self.writers:
                arr = _create_or_open(
                    self.gdir,
                    nm,
                    self.n,
                    None if v.ndim == 1 else v.shape[1],
                    v.dtype,
                    self.chunk_rows,
                    self.clevel,
                    self.attrs.get(nm, {}),
                    self.recorder,
                )
                if v.ndim == 2 and arr.shape[1] != v.shape[1]:
                    raise ShapeError(
                        f"{nm} has {v.shape[1]} features here but {arr.shape[1]} in the shared "
                        "array."
                    )
                self.writers[nm] = RowWriter(arr)
                self.writers[nm].start = start
            self.writers[nm].append(v)

    def close(self) -> None:
        """Write the buffered last rows of every array."""
        for w in self.writers.values():
            w.flush()

    def checksums(self) -> dict[str, dict[str, list[int]]]:
        """``{array name: {chunk key: [checksum, nbytes]}}`` of the chunks this worker wrote."""
        return {nm: self.recorder.take(f"{nm}/") for nm in self.writers}


def pairs_by_name(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Array name -> layer name."""
    return {array_name(layer, red): layer for layer, red in pairs}


def shard_status(
    store: ActivationStore | str,
    model_fingerprint: str,
    data_fingerprint: str,
    *,
    reduction: str = "flatten",
) -> dict[str, Any]:
    """Which shards of an entry in progress are done: ``{"shards": k, "done": [i, ...]}``."""
    if not isinstance(store, ActivationStore):
        store = ActivationStore(store)
    gdir = _shard_dir(store, entry_key(model_fingerprint, data_fingerprint), reduction)
    try:
        attrs = json.loads((gdir / "zarr.json").read_text())["attributes"]
    except (OSError, ValueError, KeyError):
        return {"shards": None, "done": []}
    k = int(attrs["shards"])
    done = sorted(i for i in range(k) if (gdir / ".done" / f"{i}-of-{k}.json").exists())
    return {"shards": k, "done": done, "missing": sorted(set(range(k)) - set(done))}


def finalize_shards(
    store: ActivationStore | str,
    model_fingerprint: str,
    data_fingerprint: str,
    *,
    reduction: str = "flatten",
) -> bool:
    """Publish a sharded entry if every shard is done; return whether this call published it.

    Safe to call from several processes at once: one atomic rename claims the directory.
    """
    if not isinstance(store, ActivationStore):
        store = ActivationStore(store)
    key = entry_key(model_fingerprint, data_fingerprint)
    status = shard_status(store, model_fingerprint, data_fingerprint, reduction=reduction)
    if status["shards"] is None or status["missing"]:
        return False
    gdir = _shard_dir(store, key, reduction)
    claimed = store.path / ".tmp" / f"{os.getpid()}-{uuid.uuid4().hex}"
    claimed.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(gdir, claimed)
    except OSError:
        return False  # another worker is publishing it
    n = int(json.loads((claimed / "zarr.json").read_text())["attributes"]["n_samples"])
    sums: dict[str, dict[str, Any]] = {}
    done = claimed / ".done"
    for f in sorted(done.iterdir()):
        try:
            marker = json.loads(f.read_text())
        except (OSError, ValueError):
            marker = {}
        for nm, chunks in (marker.get("chunks") or {}).items():
            sums.setdefault(nm, {}).update(chunks)
        f.unlink()
    done.rmdir()
    pending = PendingEntry(store, key, claimed, n)
    try:
        for sub in sorted(p.name for p in claimed.iterdir() if p.is_dir()):
            pending.arrays[sub] = zarr.open_array(zarr.storage.LocalStore(claimed / sub), mode="r+")
            pending.finish(sub, sums.get(sub, {}))
    except BaseException:
        pending.abort()
        raise
    pending.commit()
    return True
