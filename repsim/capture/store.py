"""The activation cache: a Zarr v3 store of captured activations, with atomic, checksummed entries.

Layout on disk (``path`` defaults to ``cache/``)::

    <path>/
      zarr.json                        the ownership marker: a Zarr group whose attrs hold
                                       ``repsim_cache = {"schema": 2}``
      <model_fp>-<data_fp>/            one Zarr group per (model fingerprint, data fingerprint)
        zarr.json                      group attrs: repsim_schema, fingerprints, n_samples, ...
        sample_id  labels  groups      int64 [n]            aligned with every array below
        logits                         float32 [n, C]
        predictions                    int64 [n]
        <layer>@<reduction>/           float32 [n, n_features], e.g. "layer1.0.conv1@mean",
                                       "fc+input@flatten" for layer "fc:input" (see array_name)
        <layer>@tokens/                float32 [n_tokens, n_features]: one row per real token
        <layer>@token_index/           int64 [n_tokens, 2]: (sample row, position) of each row
                                       of <layer>@tokens; both carry attrs n_rows = n_tokens
      .tmp/<pid>-<uuid>/               a capture in progress (a Zarr group of new arrays)
      .trash/<pid>-<uuid>/             replaced corrupt entries on their way out

Every array is chunked by samples with full rows (about ``chunk_bytes`` per chunk) and
compressed with Blosc/zstd; every chunk is written, even one equal to the fill value.

**Integrity.** When an array is complete, its attrs record a CRC-32C checksum and the size of
every chunk as written (``chunk_checksums``). Every read of a chunk through the store
(:meth:`ActivationStore.open`, hence every ``Capture`` array) checks the bytes against that
record first: a flipped, truncated, swapped or missing chunk raises
:class:`~repsim.errors.CacheCorruptError` naming the entry and the fix, and flags the array
``corrupt`` so the next capture rebuilds it. No fill value is ever served for a lost chunk. A
capture that finds an entry in the cache checks every chunk before serving it, and recaptures
any damaged array.

**Ownership.** repsim writes into a directory only when it is not someone else's Zarr store (no
foreign ``zarr.json``, no Zarr v2 ``.zgroup``/``.zarray``), and marks it with its root
``zarr.json``. It deletes or rebuilds only entry directories whose group carries its marker
(``repsim_schema``) or whose metadata is unreadable; a foreign Zarr group is never listed,
counted, overwritten or removed.

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

import errno
import hashlib
import json
import math
import os
import re
import shutil
import threading
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

from repsim._core.io import write_json
from repsim._core.provenance import provenance
from repsim.capture.reductions import REDUCTIONS as REDUCTIONS  # re-exported
from repsim.capture.reductions import TOKEN_INDEX, TOKEN_ROW_ARRAYS
from repsim.errors import CacheCorruptError, CacheError, OutputError

try:  # a dependency of zarr >= 3.1 (its crc32c codec); hardware-accelerated
    import google_crc32c as _crc32c_impl

    CHECKSUM = "crc32c"

    def _checksum(data: Any) -> int:
        if not isinstance(data, bytes | np.ndarray):
            data = np.frombuffer(data, dtype=np.uint8)
        return int(_crc32c_impl.value(data))

except ImportError:  # pragma: no cover - older zarr without google-crc32c
    import zlib

    CHECKSUM = "crc32"

    def _checksum(data: Any) -> int:
        return zlib.crc32(data) & 0xFFFFFFFF


SCHEMA_VERSION = 2
"""Version of the on-disk layout; entries with another version are rebuilt when needed."""

META_ARRAYS = ("sample_id", "labels", "groups", "logits", "predictions")
"""Per-entry arrays besides the layers."""

_KEY_RE = re.compile(r"^[0-9a-f]{4,64}-[0-9a-f]{4,64}$")
_CHUNK_RE = re.compile(r"^c(/\d+)+$")
_TMP = ".tmp"
_TRASH = ".trash"
_NAME_LIMIT = 150
"""Longest escaped layer part of an array name, in bytes (file systems allow 255 per name)."""

_V2_MARKERS = (".zgroup", ".zarray", ".zattrs", ".zmetadata")


def entry_key(model_fingerprint: str, data_fingerprint: str) -> str:
    """The group name of an entry: ``"<model_fp>-<data_fp>"``."""
    return f"{model_fingerprint}-{data_fingerprint}"


def array_name(layer: str, reduction: str) -> str:
    """The array name of a layer: ``"<layer>@<reduction>"``, escaped, collision-free.

    Letters, digits and ``._-`` stay; ``:`` is written ``+`` (``"fc:input"`` ->
    ``"fc+input@flatten"``); every other character, ``+``, ``~`` and ``@`` included, is
    percent-encoded (UTF-8), so two layer names never share an array name (``"fc+input"`` ->
    ``"fc%2Binput@flatten"``). A name whose escaped layer part is longer than 150 bytes keeps
    a readable prefix and ends in ``~`` and 16 hex digits of the SHA-256 of the layer name, so
    it fits every file system; the full name is in the array's ``layer`` attribute.
    """
    enc = quote(layer, safe="._-:", errors="surrogatepass").replace("~", "%7E")
    enc = enc.replace(":", "+")
    if len(enc) > _NAME_LIMIT:
        digest = hashlib.sha256(layer.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        head = enc[: _NAME_LIMIT - 17]
        cut = head.rfind("%", len(head) - 2)
        if cut >= 0:  # do not split a %XX escape
            head = head[:cut]
        enc = f"{head}~{digest}"
    return enc + "@" + reduction


def parse_array_name(name: str) -> tuple[str, str] | None:
    """Invert :func:`array_name`; ``None`` for a meta array, a foreign or a hashed name.

    A hashed (long) name cannot be inverted: read the array's ``layer`` attribute instead.
    """
    if "@" not in name:
        return None
    layer, reduction = name.rsplit("@", 1)
    if "~" in layer:
        return None
    return unquote(layer.replace("+", ":"), errors="surrogatepass"), reduction


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


def _os_problem(exc: OSError, path: Path, action: str) -> CacheError:
    """One clear line for an operating-system failure while writing the cache."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        hint = "free some space or choose another cache path"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "choose a writable cache path or fix its permissions"
    else:
        hint = "check the cache path"
    return CacheError(
        f"cannot {action} in the cache {path}: {reason}; {hint}. Nothing was published."
    )


def _chunk_keys(meta: Mapping[str, Any]) -> list[str]:
    """The key of every chunk of an array from its metadata (chunks of whole rows)."""
    shape = [int(s) for s in meta.get("shape", [])]
    grid = [
        int(c) for c in meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape", [])
    ]
    enc = meta.get("chunk_key_encoding", {})
    sep = enc.get("configuration", {}).get("separator", "/")
    if (
        enc.get("name") != "default"
        or not shape
        or len(grid) != len(shape)
        or grid[0] < 1
        or grid[1:] != shape[1:]
    ):
        raise ValueError(f"unexpected chunk layout {grid} for shape {shape}")
    rest = ["0"] * (len(shape) - 1)
    return [sep.join(["c", str(i), *rest]) for i in range(math.ceil(shape[0] / grid[0]))]


class _RecordingStore(zarr.storage.LocalStore):
    """A LocalStore that records the checksum and size of every chunk it writes."""

    def __init__(self, root: Path | str, *, read_only: bool = False) -> None:
        super().__init__(root, read_only=read_only)
        self.sums: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def with_read_only(self, read_only: bool = False) -> _RecordingStore:
        """The same store, read-only or not, sharing the record."""
        other = _RecordingStore(self.root, read_only=read_only)
        other.sums, other._lock = self.sums, self._lock
        return other

    def _record(self, key: str, value: Any) -> None:
        if key.endswith("zarr.json"):
            return
        data = value.as_numpy_array()
        with self._lock:
            self.sums[key] = (_checksum(data), int(data.nbytes))

    async def _set(self, key: str, value: Any, exclusive: bool = False) -> None:
        await super()._set(key, value, exclusive=exclusive)
        self._record(key, value)

    def set_sync(self, key: str, value: Any) -> None:
        """Write one key synchronously and record its checksum."""
        super().set_sync(key, value)
        self._record(key, value)

    def take(self, prefix: str) -> dict[str, list[int]]:
        """The recorded ``{chunk key: [checksum, nbytes]}`` under ``prefix`` (relative keys)."""
        with self._lock:
            return {
                k[len(prefix) :]: [c, n] for k, (c, n) in self.sums.items() if k.startswith(prefix)
            }


def _flag_array(array_dir: Path, reason: str) -> None:
    """Mark an array ``corrupt`` in its attrs (best effort: the store may be read-only)."""
    meta_path = array_dir / "zarr.json"
    try:
        meta = _read_json(meta_path)
        attrs = meta.setdefault("attributes", {})
        if not isinstance(attrs, dict) or attrs.get("corrupt"):
            return
        attrs["corrupt"] = reason
        write_json(meta, meta_path, indent=2, allow_nan=True)
    except (OSError, ValueError, OutputError):
        pass


@dataclass(frozen=True)
class _Flagger:
    """Flags one array ``corrupt`` when a read finds it damaged (picklable, for Dask)."""

    root: Path
    key: str
    name: str

    def __call__(self, reason: str) -> None:
        _flag_array(self.root / self.key / self.name, reason)


class _VerifiedStore(zarr.storage.LocalStore):
    """A read-only LocalStore of one array that checks every chunk it reads against its record.

    A missing chunk, or one whose size or checksum differs from what was written, raises
    :class:`CacheCorruptError` (and ``on_corrupt(reason)`` is called first) instead of being
    decoded or replaced by the fill value.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        read_only: bool = True,
        sums: Mapping[str, Any] | None = None,
        label: str = "",
        on_corrupt: Any = None,
    ) -> None:
        super().__init__(root, read_only=True)
        self.sums = dict(sums or {})
        self.label = label
        self.on_corrupt = on_corrupt

    def with_read_only(self, read_only: bool = True) -> _VerifiedStore:
        """A copy of this store (always read-only)."""
        return _VerifiedStore(
            self.root, sums=self.sums, label=self.label, on_corrupt=self.on_corrupt
        )

    def _fail(self, reason: str) -> CacheCorruptError:
        if self.on_corrupt is not None:
            self.on_corrupt(reason)
        return CacheCorruptError(
            f"cache array {self.label} is damaged ({reason}); it was not served. It is now "
            "flagged, and the next capture of this model and data rebuilds it: run the "
            "command again (`repsim cache verify` checks the other entries)."
        )

    def _check(self, key: str, buf: Any) -> Any:
        if key.endswith("zarr.json") or not _CHUNK_RE.match(key):
            return buf
        want = self.sums.get(key)
        if want is None:
            raise self._fail(f"chunk {key} has no recorded checksum")
        if buf is None:
            raise self._fail(f"chunk {key} is missing")
        data = buf.as_numpy_array()
        if int(data.nbytes) != int(want[1]):
            raise self._fail(f"chunk {key} has {data.nbytes} bytes, {want[1]} were written")
        if _checksum(data) != int(want[0]):
            raise self._fail(f"chunk {key} fails its {CHECKSUM} checksum")
        return buf

    async def get(self, key: str, prototype: Any = None, byte_range: Any = None) -> Any:
        """Read ``key``; a chunk is checked in full before any of it is returned."""
        if byte_range is None or key.endswith("zarr.json"):
            return self._check(key, await super().get(key, prototype, byte_range))
        full = self._check(key, await super().get(key, prototype, None))
        return await super().get(key, prototype, byte_range) if full is not None else None

    def get_sync(self, key: str, *, prototype: Any = None, byte_range: Any = None) -> Any:
        """Synchronous :meth:`get`."""
        buf = super().get_sync(key, prototype=prototype, byte_range=None)
        self._check(key, buf)
        if byte_range is None:
            return buf
        return super().get_sync(key, prototype=prototype, byte_range=byte_range)


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
        self.recorder = _RecordingStore(tmp)
        self.group = zarr.open_group(self.recorder, mode="r+")
        self.arrays: dict[str, zarr.Array] = {}

    def create_array(
        self,
        name: str,
        n_features: int | None,
        dtype: Any,
        attrs: Mapping[str, Any],
        *,
        n_rows: int | None = None,
    ) -> zarr.Array:
        """Create ``name`` with shape ``[n]`` (``n_features=None``) or ``[n, f]``.

        ``n`` is ``n_samples``, or ``n_rows`` for the token-row arrays (``@tokens``,
        ``@token_index``), which record it in their ``n_rows`` attr.
        """
        dtype = np.dtype(dtype)
        n = self.n_samples if n_rows is None else int(n_rows)
        if n_rows is not None:
            attrs = {**dict(attrs), "n_rows": n}
        shape: tuple[int, ...] = (n,) if n_features is None else (n, n_features)
        row_bytes = dtype.itemsize * (1 if n_features is None else max(n_features, 1))
        rows = int(max(1, min(max(n, 1), self.store.chunk_bytes // row_bytes)))
        try:
            arr = self.group.create_array(
                name,
                shape=shape,
                chunks=(rows, *shape[1:]),
                dtype=dtype,
                fill_value=fill_value(dtype),
                compressors=compressor(self.store.clevel),
                config={"write_empty_chunks": True},
                attributes=array_attributes(attrs, dtype, n_features),
            )
        except OSError as exc:
            raise _os_problem(exc, self.store.path, "create an array") from None
        self.arrays[name] = arr
        return arr

    def finish(self, name: str, sums: Mapping[str, Any] | None = None) -> None:
        """Mark ``name`` complete, recording every chunk's checksum and size.

        ``sums`` (``{chunk key: [checksum, nbytes]}``) is taken from what this entry's store
        wrote when not given (a sharded capture passes what its workers recorded).

        Raises
        ------
        CacheError
            If a chunk was never written (the array is then left incomplete).
        """
        arr = self.arrays[name]
        sums = dict(self.recorder.take(f"{name}/") if sums is None else sums)
        keys = _chunk_keys(_read_json(self.tmp / name / "zarr.json"))
        lost = [k for k in keys if k not in sums]
        if lost:
            raise CacheError(
                f"capture of {name} wrote no chunk {lost[0]} ({len(lost)} missing); the "
                "entry was not published. Capture again."
            )
        # one metadata write (``attrs.update`` writes once per key)
        arr.update_attributes(
            {"complete": True, "checksum": CHECKSUM, "chunk_checksums": {k: sums[k] for k in keys}}
        )

    def commit(self) -> None:
        """Publish the finished arrays atomically and delete the temporary group.

        Unfinished arrays are dropped. A new entry is published by one rename of the whole group;
        into an existing entry each array is renamed in, keeping any complete array already there
        (first writer wins) and replacing a corrupt one. A directory at the entry's name that
        repsim did not write is never replaced.

        Raises
        ------
        CacheError
            If a foreign directory holds the entry's name, or the store cannot be written.
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
        if not self.store.owns(self.key):
            self.abort()
            raise CacheError(
                f"{final} exists but was not written by repsim; it is left alone and this "
                "capture was not cached. Move it out of the cache directory."
            )
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


def fill_value(dtype: Any) -> Any:
    """The fill value of a new array: NaN for floats, -1 for integers (never served)."""
    return np.nan if np.dtype(dtype).kind == "f" else -1


def compressor(clevel: int) -> Any:
    """The codec of every cache array: Blosc/zstd with byte shuffle at ``clevel``."""
    return zarr.codecs.BloscCodec(cname="zstd", clevel=clevel, shuffle="shuffle")


def array_attributes(
    attrs: Mapping[str, Any], dtype: Any, n_features: int | None
) -> dict[str, Any]:
    """The attributes a new (incomplete) array starts with."""
    return {
        **dict(attrs),
        "repsim_schema": SCHEMA_VERSION,
        "complete": False,
        "dtype": np.dtype(dtype).str,
        **({} if n_features is None else {"n_features": int(n_features)}),
    }


class ActivationStore:
    """A directory of captured activations, keyed by model and data fingerprints.

    Parameters
    ----------
    path : str or os.PathLike
        Directory of the cache; created (with repsim's ownership marker) at the first capture
        into it. Other files in it (a README, saved models) are left alone.
    chunk_bytes : int
        Target uncompressed size of one chunk; a chunk holds whole rows
        (``max(1, chunk_bytes // row_bytes)`` samples).
    clevel : int
        Blosc/zstd compression level (1-9); low levels keep capture close to forward-pass speed.

    Raises
    ------
    CacheError
        If ``path`` is a file, or a Zarr store (v2 or v3) that repsim did not write.
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
        self._check_root()

    def __repr__(self) -> str:
        return f"ActivationStore({str(self.path)!r})"

    # ------------------------------------------------------------------ ownership
    def _check_root(self) -> dict[str, Any] | None:
        """The root marker's attrs (``None`` when there is none yet); refuse foreign stores."""
        for v2 in _V2_MARKERS:
            if (self.path / v2).exists():
                raise CacheError(
                    f"{self.path} is a Zarr v2 store that repsim did not write; it will not "
                    "write into or delete from it. Choose another cache path."
                )
        root_meta = self.path / "zarr.json"
        if not root_meta.exists():
            return None
        try:
            attrs = _read_json(root_meta).get("attributes", {})
        except (OSError, ValueError) as exc:
            raise CacheError(
                f"{self.path} holds an unreadable zarr.json ({exc}); it is not a repsim cache "
                "repsim can use. Choose another cache path."
            ) from None
        marker = attrs.get("repsim_cache") if isinstance(attrs, dict) else None
        if marker is None:
            raise CacheError(
                f"{self.path} is a Zarr store that repsim did not write; it will not write "
                "into or delete from it. Choose another cache path."
            )
        schema = marker.get("schema", 1) if isinstance(marker, dict) else 1
        if isinstance(schema, int) and schema > SCHEMA_VERSION:
            raise CacheError(
                f"{self.path} was written by a newer repsim (cache schema {schema}, this one "
                f"reads {SCHEMA_VERSION}); upgrade repsim or choose another cache path."
            )
        return attrs

    def _claim(self) -> None:
        """Create the directory and its ownership marker (before the first write)."""
        attrs = self._check_root()
        marker = (attrs or {}).get("repsim_cache")
        if isinstance(marker, dict) and marker.get("schema") == SCHEMA_VERSION:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            write_json(
                {
                    "zarr_format": 3,
                    "node_type": "group",
                    "attributes": {
                        "repsim_cache": {
                            "schema": SCHEMA_VERSION,
                            "about": "repsim activation cache; manage it with `repsim cache`",
                        }
                    },
                },
                self.path / "zarr.json",
            )
        except OSError as exc:
            raise _os_problem(exc, self.path, "create the cache directory") from None

    def owns(self, key: str) -> bool:
        """Whether the entry directory ``key`` is repsim's to rebuild or delete.

        True when its group metadata carries repsim's marker (``repsim_schema``, any version);
        when that metadata is unreadable (damaged JSON); or when it is missing and every
        array inside carries the marker. False for a readable Zarr node that repsim did not
        write, or a directory of other files.
        """
        d = self.path / key
        try:
            meta = _read_json(d / "zarr.json")
        except FileNotFoundError:
            try:
                children = list(d.iterdir())
            except OSError:
                return False
            return all(c.is_dir() and self._marked(c / "zarr.json") for c in children)
        except (OSError, ValueError):
            return True  # a damaged entry under a repsim key name
        attrs = meta.get("attributes", {})
        return isinstance(attrs, dict) and "repsim_schema" in attrs

    @staticmethod
    def _marked(meta_path: Path) -> bool:
        try:
            attrs = _read_json(meta_path).get("attributes", {})
        except (OSError, ValueError):
            return False
        return isinstance(attrs, dict) and "repsim_schema" in attrs

    # ------------------------------------------------------------------ checks
    def _group_attrs(self, key: str) -> dict[str, Any] | None:
        try:
            meta = _read_json(self.path / key / "zarr.json")
        except (OSError, ValueError):
            return None
        attrs = meta.get("attributes", {})
        if (
            meta.get("node_type") != "group"
            or not isinstance(attrs, dict)
            or attrs.get("repsim_schema") != SCHEMA_VERSION
            or not isinstance(attrs.get("n_samples"), int)
        ):
            return None
        return attrs

    def _group_ok(self, key: str) -> bool:
        return self._group_attrs(key) is not None

    def _array_meta(self, key: str, name: str) -> tuple[dict[str, Any] | None, str | None]:
        try:
            return _read_json(self.path / key / name / "zarr.json"), None
        except FileNotFoundError:
            return None, "missing"
        except (OSError, ValueError) as exc:
            return None, f"unreadable metadata ({exc})"

    def _array_problem(
        self, key: str, name: str, n_samples: int, *, chunks: str | None = "stat"
    ) -> str | None:
        """Check of one array; ``None`` when complete, well-formed and (per ``chunks``) intact.

        ``chunks``: ``None`` checks metadata only; ``"stat"`` also that every chunk file
        exists with the size written; ``"read"`` also every chunk's checksum.
        """
        meta, problem = self._array_meta(key, name)
        if meta is None:
            return problem
        attrs = meta.get("attributes", {})
        if (
            meta.get("node_type") != "array"
            or not isinstance(attrs, dict)
            or attrs.get("repsim_schema") != SCHEMA_VERSION
        ):
            return "not a repsim array (foreign or other schema version)"
        if not attrs.get("complete"):
            return "not marked complete"
        if attrs.get("corrupt"):
            return f"flagged corrupt: {attrs['corrupt']}"
        shape = meta.get("shape", [])
        rows = n_samples
        if attrs.get("reduction") in TOKEN_ROW_ARRAYS:
            rows = attrs.get("n_rows")
            if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
                return "a token-row array without a valid n_rows attr"
        if not shape or shape[0] != rows:
            return f"shape {shape} does not have {rows} rows"
        is_layer = "@" in name
        want_ndim = 2 if is_layer or name == "logits" else 1
        if len(shape) != want_ndim:
            return f"shape {shape} is not {want_ndim}-D"
        if "n_features" in attrs and want_ndim == 2 and shape[1] != attrs["n_features"]:
            return f"shape {shape} disagrees with n_features={attrs['n_features']}"
        if is_layer:
            layer, reduction = attrs.get("layer"), attrs.get("reduction")
            if not isinstance(layer, str) or array_name(layer, str(reduction)) != name:
                return f"its attrs name layer {layer!r} ({reduction}), not this array"
        if chunks is None:
            return None
        return self._chunks_problem(key, name, meta, read=chunks == "read")

    def _chunks_problem(
        self, key: str, name: str, meta: Mapping[str, Any], *, read: bool
    ) -> str | None:
        attrs = meta.get("attributes", {})
        sums = attrs.get("chunk_checksums")
        if attrs.get("checksum") != CHECKSUM or not isinstance(sums, dict):
            return "no chunk checksums recorded (or another checksum algorithm)"
        try:
            keys = _chunk_keys(meta)
        except ValueError as exc:
            return str(exc)
        if set(sums) != set(keys):
            return "its recorded chunks do not match its shape"
        base = self.path / key / name
        for ck in keys:
            want = sums[ck]
            f = base / ck
            try:
                size = f.stat().st_size
            except OSError:
                return f"chunk {ck} is missing: lost or never written"
            if not isinstance(want, list) or len(want) != 2:
                return f"chunk {ck} has a malformed checksum record"
            if size != want[1]:
                return (
                    f"chunk {ck} has {size} bytes, {want[1]} were written (truncated or replaced)"
                )
            if read:
                try:
                    data = np.fromfile(f, dtype=np.uint8)
                except OSError as exc:
                    return f"chunk {ck} is unreadable ({exc.strerror or exc})"
                if _checksum(data) != want[0]:
                    return f"chunk {ck} fails its {CHECKSUM} checksum (flipped or swapped bytes)"
        return None

    def missing(
        self,
        model_fingerprint: str,
        data_fingerprint: str,
        names: Iterable[str],
        n_samples: int,
        *,
        deep: bool = False,
    ) -> list[str]:
        """Names among ``names`` (array names) with no complete, intact array.

        Every chunk file must exist with the size written; with ``deep`` every chunk's
        checksum is checked too (reading the compressed bytes, no decompression). An array
        found damaged is flagged ``corrupt``.
        """
        key = entry_key(model_fingerprint, data_fingerprint)
        attrs = self._group_attrs(key)
        if attrs is None or attrs.get("n_samples") != n_samples:
            return list(names)
        out = []
        for n in names:
            if self._array_problem(key, n, n_samples, chunks=None) is not None:
                out.append(n)
                continue
            meta, _ = self._array_meta(key, n)
            damage = self._chunks_problem(key, n, meta or {}, read=deep)
            if damage is not None:
                self._flag(key, n, damage)  # so the recapture replaces it
                out.append(n)
        return out

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
        try:
            trash.parent.mkdir(exist_ok=True)
            os.rename(path, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def _flag(self, key: str, name: str, reason: str) -> None:
        """Mark an array ``corrupt`` in its attrs (best effort: the store may be read-only)."""
        _flag_array(self.path / key / name, reason)

    def begin(
        self,
        model_fingerprint: str,
        data_fingerprint: str,
        n_samples: int,
        attrs: Mapping[str, Any] | None = None,
    ) -> PendingEntry:
        """Start writing arrays of an entry into a fresh temporary group.

        The directory and its ownership marker are created first; stale temporary groups of
        dead processes are deleted.

        Raises
        ------
        CacheError
            If the store is someone else's, or cannot be written (read-only, full disk).
        """
        self._claim()
        key = entry_key(model_fingerprint, data_fingerprint)
        if (self.path / key).exists() and not self.owns(key):
            raise CacheError(
                f"{self.path / key} exists but was not written by repsim; it is left alone. "
                "Move it out of the cache directory."
            )
        self._cleanup_stale()
        tmp = self.path / _TMP / f"{os.getpid()}-{uuid.uuid4().hex}"
        group_attrs = {
            **dict(attrs or {}),
            "repsim_schema": SCHEMA_VERSION,
            "model_fingerprint": model_fingerprint,
            "data_fingerprint": data_fingerprint,
            "n_samples": int(n_samples),
            "versions": provenance(),
        }
        try:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            zarr.open_group(zarr.storage.LocalStore(tmp), mode="w", attributes=group_attrs)
            return PendingEntry(self, key, tmp, int(n_samples))
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _os_problem(exc, self.path, "start a capture") from None

    # ------------------------------------------------------------------ reading
    def open(self, model_fingerprint: str, data_fingerprint: str, name: str) -> zarr.Array:
        """Open one complete array of an entry read-only; every chunk read is verified.

        Raises
        ------
        CacheError
            If the array is missing, incomplete, or flagged corrupt.
        CacheCorruptError
            If a chunk file is missing or has the wrong size (checked here), or, when it is
            read, its bytes fail their checksum.
        """
        key = entry_key(model_fingerprint, data_fingerprint)
        attrs = self._group_attrs(key)
        if attrs is None:
            raise CacheError(f"No valid cache entry {key} in {self.path}.")
        problem = self._array_problem(key, name, attrs["n_samples"], chunks=None)
        if problem is not None:
            raise CacheError(f"Cache array {key}/{name} is unusable: {problem}.")
        meta, _ = self._array_meta(key, name)
        assert meta is not None
        verified = _VerifiedStore(
            self.path / key / name,
            sums=meta["attributes"]["chunk_checksums"],
            label=f"{key}/{name} in {self.path}",
            on_corrupt=_Flagger(self.path, key, name),
        )
        damage = self._chunks_problem(key, name, meta, read=False)
        if damage is not None:
            raise verified._fail(damage)
        return zarr.open_array(verified)

    def keys(self) -> list[str]:
        """Names of repsim's entry directories (valid or damaged), sorted.

        A directory counts when its name has the form ``<model_fp>-<data_fp>`` and
        :meth:`owns` it; foreign Zarr groups (any name) are never listed.
        """
        if not self.path.is_dir():
            return []
        return sorted(
            d.name
            for d in self.path.iterdir()
            if d.is_dir() and _KEY_RE.match(d.name) and self.owns(d.name)
        )

    def resolve(self, key_or_prefix: str) -> str:
        """The entry key that ``key_or_prefix`` names (a unique prefix is enough)."""
        keys = self.keys()
        if key_or_prefix in keys:
            return key_or_prefix
        hits = [k for k in keys if k.startswith(key_or_prefix)] if key_or_prefix else []
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

    def _layer_of(self, key: str, name: str) -> tuple[str, str] | None:
        """``(layer, reduction)`` of a layer array (from its attrs), ``None`` for others."""
        if "@" not in name:
            return None
        meta, _ = self._array_meta(key, name)
        attrs = (meta or {}).get("attributes", {})
        if isinstance(attrs, dict) and isinstance(attrs.get("layer"), str):
            return attrs["layer"], str(attrs.get("reduction"))
        return parse_array_name(name)

    def entries(self) -> list[EntryInfo]:
        """Summaries of every entry, in key order."""
        return [self.entry(k) for k in self.keys()]

    def entry(self, key: str) -> EntryInfo:
        """Summary of one entry (``ok``: metadata and chunk files intact, see :meth:`verify`)."""
        key = self.resolve(key)
        attrs = self._group_attrs(key)
        n = -1 if attrs is None else int(attrs.get("n_samples", -1))
        info = EntryInfo(
            key=key,
            model_fingerprint="?" if attrs is None else str(attrs.get("model_fingerprint")),
            data_fingerprint="?" if attrs is None else str(attrs.get("data_fingerprint")),
            name="?" if attrs is None else str(attrs.get("name", "?")),
            n_samples=n,
            nbytes=_dir_size(self.path / key),
            ok=attrs is not None,
        )
        for name in self._arrays(key):
            problem = self._array_problem(key, name, n)
            if problem is not None and name in META_ARRAYS:
                info.ok = False
            parsed = self._layer_of(key, name)
            if parsed is None or parsed[1] == TOKEN_INDEX:
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
            meta, _ = self._array_meta(key, name)
            meta = meta or {}
            attrs = dict(meta.get("attributes", {}) or {})
            attrs.pop("chunk_checksums", None)
            arrays[name] = {
                "shape": meta.get("shape"),
                "chunks": meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape"),
                "nbytes": _dir_size(self.path / key / name),
                "problem": self._array_problem(key, name, n),
                "attrs": attrs,
            }
        out["arrays"] = arrays
        return out

    # ------------------------------------------------------------------ verify / remove
    def verify(
        self, keys: Iterable[str] | None = None, *, deep: bool = True, mark: bool = True
    ) -> list[Problem]:
        """Check entries and report every defect.

        Checks, per entry: the group's repsim schema attrs; every meta array present; every
        array complete, with ``n_samples`` rows, the recorded feature count and layer name;
        every chunk file present with the size written. With ``deep``, also every chunk's
        checksum (a flipped, swapped or replaced chunk) and that ``sample_id`` is unique.
        With ``mark``, arrays whose metadata is fine but whose data is not are flagged
        ``corrupt`` in their attrs, so the next capture rebuilds them. Stale temporary groups
        are reported too.

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
                        "unreadable group metadata or another schema version; the next "
                        "capture rebuilds it",
                    )
                )
                continue
            n = int(attrs["n_samples"])
            names = self._arrays(key)
            for meta in META_ARRAYS:
                if meta not in names:
                    problems.append(Problem(key, meta, "missing"))
            for name in names:
                problem = self._array_problem(key, name, n, chunks=None)
                if problem is None:
                    meta, _ = self._array_meta(key, name)
                    problem = self._chunks_problem(key, name, meta or {}, read=deep)
                    if problem is None and deep and name == "sample_id":
                        problem = self._ids_problem(key)
                    if problem is not None and mark:
                        self._flag(key, name, problem)
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

    def _ids_problem(self, key: str) -> str | None:
        attrs = self._group_attrs(key) or {}
        try:
            ids = np.asarray(
                self.open(attrs["model_fingerprint"], attrs["data_fingerprint"], "sample_id")[:]
            )
        except (CacheError, KeyError) as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - any decode failure is corruption
            return f"unreadable data ({type(exc).__name__}: {exc})"
        if len(np.unique(ids)) != len(ids):
            return "sample ids are not unique"
        return None

    def rm(self, key: str, layers: Iterable[tuple[str, str]] | None = None) -> None:
        """Delete an entry, or only the given ``(layer, reduction)`` arrays of it.

        Only directories repsim owns (see :meth:`owns`) are deleted.

        Raises
        ------
        CacheError
            If there is no such entry or array, or the store is not repsim's.
        """
        key = self.resolve(key)
        if not self.owns(key):  # pragma: no cover - resolve() lists owned entries only
            raise CacheError(f"{self.path / key} was not written by repsim; it is left alone.")
        if layers is None:
            self._move_aside(self.path / key)
            if (self.path / key).exists():
                raise CacheError(
                    f"cannot remove {self.path / key}; check that the cache directory is writable."
                )
            return
        for layer, reduction in layers:
            target = self.path / key / array_name(layer, reduction)
            if not target.exists():
                raise CacheError(f"Entry {key} has no array for {layer!r} ({reduction}).")
            self._move_aside(target)
            if reduction == "tokens":  # its row index goes with it
                index = self.path / key / array_name(layer, TOKEN_INDEX)
                if index.exists():
                    self._move_aside(index)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())
