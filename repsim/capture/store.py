"""The activation cache: a Zarr v3 store of captured activations, with atomic entries.

Layout on disk (``path`` defaults to ``cache/``)::

    <path>/
      <model_fp>-<data_fp>/            one Zarr group per (model fingerprint, data fingerprint)
        zarr.json                      group attrs: fingerprints, n_samples, model name, versions
        sample_id  labels  groups      int64 [n]            aligned with every array below
        logits                         float32 [n, C]
        predictions                    int64 [n]
        <layer>@<reduction>/           float32 [n, n_features], e.g. "layer1.0.conv1@mean",
                                       "fc+input@flatten" for layer "fc:input"
      .tmp/<pid>-<uuid>/               a capture in progress (a Zarr group of new arrays)
      .trash/<pid>-<uuid>/             replaced corrupt entries on their way out

Every array is chunked by samples with full rows (about ``chunk_bytes`` per chunk), compressed
with Blosc/zstd, and filled with NaN (integers: -1), so rows never written are detectable.

Crash safety: a capture writes its new arrays into its own ``.tmp`` group, marks each one
``complete`` in its attrs when every row is written, then publishes by ``os.rename`` (atomic on
one filesystem): the whole group at once when the entry is new, otherwise array by array. A
reader only looks at final names and checks the ``complete`` mark, so it never sees a partial
array. A killed capture leaves only its ``.tmp`` group, which the next capture deletes (once its
process is gone) before redoing the work, so the result is bit-identical to an uninterrupted
run. When two processes publish the same array, the first rename wins and the other discards
its copy; a complete array is never replaced, a corrupt one only by a complete new one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
import zarr
import zarr.codecs
import zarr.storage

from repsim._core.provenance import provenance
from repsim.errors import CacheError

SCHEMA_VERSION = 1
"""Version of the on-disk layout; entries with another version are treated as corrupt."""

META_ARRAYS = ("sample_id", "labels", "groups", "logits", "predictions")
"""Per-entry arrays besides the layers."""

REDUCTIONS = ("flatten", "mean", "max")

_KEY_RE = re.compile(r"^[0-9a-f]{4,64}-[0-9a-f]{4,64}$")
_TMP = ".tmp"
_TRASH = ".trash"


def entry_key(model_fingerprint: str, data_fingerprint: str) -> str:
    """The group name of an entry: ``"<model_fp>-<data_fp>"``."""
    return f"{model_fingerprint}-{data_fingerprint}"


def array_name(layer: str, reduction: str) -> str:
    """The array name of a layer: ``"<layer>@<reduction>"`` with ``:`` written as ``+``.

    Characters other than letters, digits and ``._-+@`` are percent-encoded, so any module name
    makes a valid, portable Zarr node name.
    """
    return quote(layer.replace(":", "+"), safe="._-+") + "@" + reduction


def parse_array_name(name: str) -> tuple[str, str] | None:
    """Invert :func:`array_name`; ``None`` for a meta array or a foreign name."""
    if "@" not in name:
        return None
    layer, reduction = name.rsplit("@", 1)
    return unquote(layer).replace("+", ":"), reduction


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dir_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def _read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        meta = json.load(fh)
    if not isinstance(meta, dict):
        raise ValueError("metadata is not a JSON object")
    return meta


@dataclass
class Problem:
    """One defect :meth:`ActivationStore.verify` found."""

    key: str
    array: str | None
    reason: str

    def __str__(self) -> str:
        where = self.key if self.array is None else f"{self.key}/{self.array}"
        return f"{where}: {self.reason}"


@dataclass
class EntryInfo:
    """Summary of one cache entry, as ``repsim cache ls`` prints it."""

    key: str
    model_fingerprint: str
    data_fingerprint: str
    name: str
    n_samples: int
    layers: list[tuple[str, str, int]] = field(default_factory=list)
    nbytes: int = 0
    ok: bool = True


class RowWriter:
    """Buffer rows of one array and write them to Zarr one full chunk at a time.

    Writing whole chunks avoids Zarr's read-modify-write of partial chunks, so each chunk is
    compressed and written exactly once.
    """

    def __init__(self, array: zarr.Array) -> None:
        self.array = array
        self.rows_per_chunk = int(array.chunks[0])
        self.buffer = np.empty((self.rows_per_chunk, *array.shape[1:]), dtype=array.dtype)
        self.filled = 0
        self.start = 0

    def append(self, rows: np.ndarray) -> None:
        """Append rows (``[k, *shape[1:]]``) after those already appended."""
        i = 0
        while i < len(rows):
            take = min(len(rows) - i, self.rows_per_chunk - self.filled)
            self.buffer[self.filled : self.filled + take] = rows[i : i + take]
            self.filled += take
            i += take
            if self.filled == self.rows_per_chunk:
                self.flush()

    def flush(self) -> None:
        """Write the buffered rows (the last chunk may be partial)."""
        if self.filled:
            stop = self.start + self.filled
            if stop > self.array.shape[0]:
                raise CacheError(
                    f"More rows than the {self.array.shape[0]} samples the entry was created for."
                )
            self.array[self.start : stop] = self.buffer[: self.filled]
            self.start = stop
            self.filled = 0


class PendingEntry:
    """New arrays of one entry, written under a temporary name until :meth:`commit`."""

    def __init__(self, store: ActivationStore, key: str, tmp: Path, n_samples: int) -> None:
        self.store = store
        self.key = key
        self.tmp = tmp
        self.n_samples = n_samples
        self.group = zarr.open_group(zarr.storage.LocalStore(tmp), mode="r+")
        self.arrays: dict[str, zarr.Array] = {}

    def create_array(
        self, name: str, n_features: int | None, dtype: Any, attrs: Mapping[str, Any]
    ) -> zarr.Array:
        """Create ``name`` with shape ``[n_samples]`` (``n_features=None``) or ``[n, f]``."""
        dtype = np.dtype(dtype)
        shape: tuple[int, ...] = (
            (self.n_samples,) if n_features is None else (self.n_samples, n_features)
        )
        row_bytes = dtype.itemsize * (1 if n_features is None else max(n_features, 1))
        rows = int(max(1, min(self.n_samples, self.store.chunk_bytes // row_bytes)))
        fill = np.nan if dtype.kind == "f" else -1
        arr = self.group.create_array(
            name,
            shape=shape,
            chunks=(rows, *shape[1:]),
            dtype=dtype,
            fill_value=fill,
            compressors=zarr.codecs.BloscCodec(
                cname="zstd", clevel=self.store.clevel, shuffle="shuffle"
            ),
            attributes={
                **dict(attrs),
                "repsim_schema": SCHEMA_VERSION,
                "complete": False,
                "dtype": dtype.str,
                **({} if n_features is None else {"n_features": int(n_features)}),
            },
        )
        self.arrays[name] = arr
        return arr

    def finish(self, name: str) -> None:
        """Mark ``name`` complete (every row written)."""
        self.arrays[name].attrs.update({"complete": True})

    def commit(self) -> None:
        """Publish the finished arrays atomically and delete the temporary group.

        Unfinished arrays are dropped. A new entry is published by one rename of the whole group;
        into an existing entry each array is renamed in, keeping any complete array already there
        (first writer wins) and replacing a corrupt one.
        """
        for name, arr in list(self.arrays.items()):
            if not arr.attrs.get("complete"):
                shutil.rmtree(self.tmp / name, ignore_errors=True)
        final = self.store.path / self.key
        try:
            if not final.exists():
                os.rename(self.tmp, final)
                return
        except OSError:
            pass  # another process published the group first
        if not self.store._group_ok(self.key):
            self.store._move_aside(final)
            try:
                os.rename(self.tmp, final)
                return
            except OSError:
                pass
        for name in self.arrays:
            src = self.tmp / name
            if not src.exists():
                continue
            dest = final / name
            if dest.exists():
                if self.store._array_problem(self.key, name, self.n_samples) is None:
                    continue  # a complete copy is already there
                self.store._move_aside(dest)
            try:
                os.rename(src, dest)
            except OSError:
                pass  # a concurrent writer won
        self.abort()

    def abort(self) -> None:
        """Delete the temporary group (nothing published is touched)."""
        shutil.rmtree(self.tmp, ignore_errors=True)


class ActivationStore:
    """A directory of captured activations, keyed by model and data fingerprints.

    Parameters
    ----------
    path : str or os.PathLike
        Directory of the cache; created if missing. Other files in it (a README, saved models)
        are left alone.
    chunk_bytes : int
        Target uncompressed size of one chunk; a chunk holds whole rows
        (``max(1, chunk_bytes // row_bytes)`` samples).
    clevel : int
        Blosc/zstd compression level (1-9); low levels keep capture close to forward-pass speed.

    Raises
    ------
    CacheError
        If ``path`` is a file, or a Zarr store that repsim did not write.
    """

    def __init__(
        self, path: str | os.PathLike = "cache/", *, chunk_bytes: int = 2**21, clevel: int = 1
    ) -> None:
        self.path = Path(path)
        self.chunk_bytes = int(chunk_bytes)
        self.clevel = int(clevel)
        if self.path.exists() and not self.path.is_dir():
            raise CacheError(
                f"Cache path {self.path} is a file, not a directory. Pass a directory path "
                "(it is created if missing)."
            )
        root_meta = self.path / "zarr.json"
        if root_meta.exists():
            try:
                attrs = _read_json(root_meta).get("attributes", {})
            except (OSError, ValueError) as exc:
                raise CacheError(f"{self.path} holds an unreadable zarr.json ({exc}).") from None
            if "repsim_cache" not in attrs:
                raise CacheError(
                    f"{self.path} is a Zarr store that repsim did not write; it will not write "
                    "into it. Choose another cache path."
                )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"Cannot create cache directory {self.path}: {exc}.") from None

    def __repr__(self) -> str:
        return f"ActivationStore({str(self.path)!r})"

    # ------------------------------------------------------------------ checks
    def _group_attrs(self, key: str) -> dict[str, Any] | None:
        try:
            meta = _read_json(self.path / key / "zarr.json")
        except (OSError, ValueError):
            return None
        attrs = meta.get("attributes", {})
        if meta.get("node_type") != "group" or attrs.get("repsim_schema") != SCHEMA_VERSION:
            return None
        return attrs

    def _group_ok(self, key: str) -> bool:
        return self._group_attrs(key) is not None

    def _array_problem(self, key: str, name: str, n_samples: int) -> str | None:
        """Metadata-level check of one array; ``None`` when complete and well-formed."""
        try:
            meta = _read_json(self.path / key / name / "zarr.json")
        except FileNotFoundError:
            return "missing"
        except (OSError, ValueError) as exc:
            return f"unreadable metadata ({exc})"
        attrs = meta.get("attributes", {})
        if meta.get("node_type") != "array" or attrs.get("repsim_schema") != SCHEMA_VERSION:
            return "not a repsim array (foreign or other schema version)"
        if not attrs.get("complete"):
            return "not marked complete"
        if attrs.get("corrupt"):
            return f"flagged corrupt: {attrs['corrupt']}"
        shape = meta.get("shape", [])
        if not shape or shape[0] != n_samples:
            return f"shape {shape} does not have {n_samples} rows"
        want_ndim = 2 if parse_array_name(name) is not None or name == "logits" else 1
        if len(shape) != want_ndim:
            return f"shape {shape} is not {want_ndim}-D"
        if "n_features" in attrs and want_ndim == 2 and shape[1] != attrs["n_features"]:
            return f"shape {shape} disagrees with n_features={attrs['n_features']}"
        return None

    def missing(
        self, model_fingerprint: str, data_fingerprint: str, names: Iterable[str], n_samples: int
    ) -> list[str]:
        """Names among ``names`` (array names) with no complete, well-formed array."""
        key = entry_key(model_fingerprint, data_fingerprint)
        attrs = self._group_attrs(key)
        if attrs is None or attrs.get("n_samples") != n_samples:
            return list(names)
        return [n for n in names if self._array_problem(key, n, n_samples) is not None]

    # ------------------------------------------------------------------ writing
    def _cleanup_stale(self) -> None:
        for sub in (_TMP, _TRASH):
            base = self.path / sub
            if not base.is_dir():
                continue
            for d in base.iterdir():
                try:
                    pid = int(d.name.split("-", 1)[0])
                except ValueError:
                    pid = -1
                if pid < 0 or not _pid_alive(pid):
                    shutil.rmtree(d, ignore_errors=True)

    def _move_aside(self, path: Path) -> None:
        trash = self.path / _TRASH / f"{os.getpid()}-{uuid.uuid4().hex}"
        trash.parent.mkdir(exist_ok=True)
        try:
            os.rename(path, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def begin(
        self,
        model_fingerprint: str,
        data_fingerprint: str,
        n_samples: int,
        attrs: Mapping[str, Any] | None = None,
    ) -> PendingEntry:
        """Start writing arrays of an entry into a fresh temporary group.

        Stale temporary groups of dead processes are deleted first.
        """
        self._cleanup_stale()
        key = entry_key(model_fingerprint, data_fingerprint)
        tmp = self.path / _TMP / f"{os.getpid()}-{uuid.uuid4().hex}"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        group_attrs = {
            **dict(attrs or {}),
            "repsim_schema": SCHEMA_VERSION,
            "model_fingerprint": model_fingerprint,
            "data_fingerprint": data_fingerprint,
            "n_samples": int(n_samples),
            "versions": provenance(),
        }
        zarr.open_group(zarr.storage.LocalStore(tmp), mode="w", attributes=group_attrs)
        return PendingEntry(self, key, tmp, int(n_samples))

    # ------------------------------------------------------------------ reading
    def open(self, model_fingerprint: str, data_fingerprint: str, name: str) -> zarr.Array:
        """Open one complete array of an entry read-only.

        Raises
        ------
        CacheError
            If the array is missing, incomplete or corrupt.
        """
        key = entry_key(model_fingerprint, data_fingerprint)
        attrs = self._group_attrs(key)
        if attrs is None:
            raise CacheError(f"No valid cache entry {key} in {self.path}.")
        problem = self._array_problem(key, name, attrs["n_samples"])
        if problem is not None:
            raise CacheError(f"Cache array {key}/{name} is unusable: {problem}.")
        return zarr.open_array(zarr.storage.LocalStore(self.path / key / name, read_only=True))

    def keys(self) -> list[str]:
        """Names of the entry directories (valid or not), sorted."""
        if not self.path.is_dir():
            return []
        return sorted(
            d.name
            for d in self.path.iterdir()
            if d.is_dir()
            and not d.name.startswith(".")
            and (_KEY_RE.match(d.name) or (d / "zarr.json").exists())
        )

    def resolve(self, key_or_prefix: str) -> str:
        """The entry key that ``key_or_prefix`` names (a unique prefix is enough)."""
        keys = self.keys()
        if key_or_prefix in keys:
            return key_or_prefix
        hits = [k for k in keys if k.startswith(key_or_prefix)]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise CacheError(
                f"No cache entry {key_or_prefix!r} in {self.path}; list them with "
                "`repsim cache ls`."
            )
        raise CacheError(f"{key_or_prefix!r} matches {len(hits)} entries; give more characters.")

    def _arrays(self, key: str) -> list[str]:
        d = self.path / key
        return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []

    def entries(self) -> list[EntryInfo]:
        """Summaries of every entry, in key order."""
        return [self.entry(k) for k in self.keys()]

    def entry(self, key: str) -> EntryInfo:
        """Summary of one entry (``ok`` is the metadata-level check, see :meth:`verify`)."""
        key = self.resolve(key)
        attrs = self._group_attrs(key)
        n = -1 if attrs is None else int(attrs.get("n_samples", -1))
        info = EntryInfo(
            key=key,
            model_fingerprint="?" if attrs is None else attrs["model_fingerprint"],
            data_fingerprint="?" if attrs is None else attrs["data_fingerprint"],
            name="?" if attrs is None else str(attrs.get("name", "?")),
            n_samples=n,
            nbytes=_dir_size(self.path / key),
            ok=attrs is not None,
        )
        for name in self._arrays(key):
            parsed = parse_array_name(name)
            problem = self._array_problem(key, name, n)
            if problem is not None and name in META_ARRAYS:
                info.ok = False
            if parsed is None:
                continue
            if problem is not None:
                info.ok = False
                continue
            shape = _read_json(self.path / key / name / "zarr.json")["shape"]
            info.layers.append((parsed[0], parsed[1], int(shape[1])))
        return info

    def info(self, key: str) -> dict[str, Any]:
        """Everything recorded about one entry: group attrs and each array's shape and attrs."""
        key = self.resolve(key)
        out: dict[str, Any] = {"key": key, "path": str(self.path / key)}
        out["attrs"] = self._group_attrs(key)
        n = -1 if out["attrs"] is None else int(out["attrs"].get("n_samples", -1))
        arrays = {}
        for name in self._arrays(key):
            try:
                meta = _read_json(self.path / key / name / "zarr.json")
            except (OSError, ValueError):
                meta = {}
            arrays[name] = {
                "shape": meta.get("shape"),
                "chunks": meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape"),
                "nbytes": _dir_size(self.path / key / name),
                "problem": self._array_problem(key, name, n),
                "attrs": meta.get("attributes", {}),
            }
        out["arrays"] = arrays
        return out

    # ------------------------------------------------------------------ verify / remove
    def verify(
        self, keys: Iterable[str] | None = None, *, deep: bool = True, mark: bool = True
    ) -> list[Problem]:
        """Check entries and report every defect.

        Checks, per entry: the group's repsim schema attrs; every meta array present; every
        array complete, with ``n_samples`` rows and the recorded feature count; ``sample_id``
        unique. With ``deep``, also reads every array chunk by chunk and reports rows left at
        the fill value (NaN, or -1 for integers): a lost or never-written chunk. With ``mark``,
        arrays whose metadata is fine but whose data is not are flagged ``corrupt`` in their
        attrs, so the next capture rebuilds them. Stale temporary groups are reported too.

        Returns
        -------
        list of Problem
            Empty when everything is sound.
        """
        problems: list[Problem] = []
        for key in self.keys() if keys is None else [self.resolve(k) for k in keys]:
            attrs = self._group_attrs(key)
            if attrs is None:
                problems.append(
                    Problem(
                        key,
                        None,
                        "not a repsim entry (missing or foreign "
                        "group metadata); the next capture rebuilds it",
                    )
                )
                continue
            n = int(attrs.get("n_samples", -1))
            names = self._arrays(key)
            for meta in META_ARRAYS:
                if meta not in names:
                    problems.append(Problem(key, meta, "missing"))
            for name in names:
                problem = self._array_problem(key, name, n)
                if problem is None and deep:
                    problem = self._data_problem(key, name)
                    if problem is not None and mark:
                        try:
                            arr = zarr.open_array(zarr.storage.LocalStore(self.path / key / name))
                            arr.attrs.update({"corrupt": problem})
                        except Exception:  # noqa: BLE001 - reporting is what matters here
                            pass
                if problem is not None:
                    problems.append(Problem(key, name, problem))
        for sub in (_TMP, _TRASH):
            base = self.path / sub
            if base.is_dir():
                for d in base.iterdir():
                    problems.append(
                        Problem(
                            f"{sub}/{d.name}",
                            None,
                            "leftover of an unfinished capture; removed by the "
                            "next capture once its process has ended",
                        )
                    )
        return problems

    def _data_problem(self, key: str, name: str) -> str | None:
        try:
            arr = zarr.open_array(zarr.storage.LocalStore(self.path / key / name, read_only=True))
            step = int(arr.chunks[0])
            for start in range(0, arr.shape[0], step):
                block = np.asarray(arr[start : start + step])
                if block.dtype.kind == "f":
                    bad = np.isnan(block).reshape(len(block), -1).any(axis=1)
                else:
                    bad = (block == -1).reshape(len(block), -1).any(axis=1)
                if bad.any():
                    first = start + int(np.argmax(bad))
                    return (
                        f"{int(bad.sum())} unwritten (fill-value) rows from row {first}; "
                        "a chunk is lost"
                    )
            if name == "sample_id":
                ids = np.asarray(arr[:])
                if len(np.unique(ids)) != len(ids):
                    return "sample ids are not unique"
        except Exception as exc:  # noqa: BLE001 - any read failure is corruption
            return f"unreadable data ({type(exc).__name__}: {exc})"
        return None

    def rm(self, key: str, layers: Iterable[tuple[str, str]] | None = None) -> None:
        """Delete an entry, or only the given ``(layer, reduction)`` arrays of it."""
        key = self.resolve(key)
        if layers is None:
            self._move_aside(self.path / key)
            return
        for layer, reduction in layers:
            target = self.path / key / array_name(layer, reduction)
            if not target.exists():
                raise CacheError(f"Entry {key} has no array for {layer!r} ({reduction}).")
            self._move_aside(target)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())
