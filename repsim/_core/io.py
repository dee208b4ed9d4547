"""Atomic file writes: the one place repsim puts bytes on disk.

Every writer takes the content first and the path second (as :func:`json.dump` does) and
writes to a unique temporary name in the target's directory and renames it
into place (``os.replace``, atomic on one filesystem), so a killed process or a concurrent
writer never leaves a half-written file under the final name, and two processes saving the
same path never collide on a shared temporary name. The temporary file is removed on any
error. An operating-system failure (read-only directory, full disk, a path that is a file)
becomes an :class:`repsim.errors.OutputError` naming the path.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from repsim.errors import OutputError

__all__ = [
    "atomic_write",
    "read_json",
    "read_npz",
    "read_tensor_pair",
    "tensor_pair_paths",
    "to_jsonable",
    "write_bytes",
    "write_json",
    "write_tensor_pair",
    "write_text",
]


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file, then rename it to ``path``.

    Parameters
    ----------
    path : path-like
        Final location; its parent directories are created.
    write : callable
        Writes the complete content to the temporary path it is given.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    OutputError
        When the directory cannot be created or written (read-only, full disk, a file in the
        way); nothing is left behind under ``path`` or the temporary name.
    """
    path = Path(path)
    tmp = _temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        reason = exc.strerror or str(exc)
        raise OutputError(
            f"cannot write {path}: {reason}. Choose a writable location with free space."
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(text: str, path: str | os.PathLike) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def to_jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, tuples, sets and paths made JSON-native.

    Non-finite floats become ``None`` (JSON has no NaN).
    """
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(
    obj: Any, path: str | os.PathLike, *, indent: int | None = 2, allow_nan: bool = False
) -> Path:
    """Write ``obj`` as JSON atomically.

    With ``allow_nan=False`` (default) the object goes through :func:`to_jsonable` (NaN and
    infinities become ``null``: strict JSON); with ``allow_nan=True`` floats are written as
    Python's ``json`` writes them (``NaN``, ``Infinity``), which :func:`read_json` reads back.
    """
    if allow_nan:
        text = json.dumps(obj, indent=indent, default=str, allow_nan=True)
    else:
        text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False, default=str)
    return write_text(text, path)


def read_json(path: str | os.PathLike, *, what: str = "JSON file") -> Any:
    """Read a JSON file; a missing, unreadable or malformed file raises ``OutputError``.

    Parameters
    ----------
    path : path-like
        The file.
    what : str
        What the file is, for the message (``"model spec"``, ``"mask report"``).
    """
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OutputError(f"{what} {p} does not exist.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OutputError(f"{what} {p} is unreadable or not valid JSON ({exc}).") from None


# ------------------------------------------------------------------ safetensors + JSON pairs


def tensor_pair_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``PATH.safetensors`` and ``PATH.json`` for ``PATH`` (with or without either suffix)."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def write_tensor_pair(
    tensors: Mapping[str, Any], info: Mapping[str, Any], path: str | os.PathLike
) -> Path:
    """Write ``tensors`` to ``PATH.safetensors`` and ``info`` to ``PATH.json``, each atomically.

    The tensors go first and the JSON second, so a reader that finds the JSON finds the
    tensors it describes; each file is written under a unique temporary name and renamed
    (:func:`atomic_write`), so two processes saving the same path never collide. The JSON is
    ``json.dumps(info, indent=2, default=str)`` (NaN written as ``NaN``).

    Parameters
    ----------
    tensors : mapping of str to torch.Tensor
        Contiguous CPU tensors (``safetensors.torch.save_file``: never pickled).
    info : mapping
        The description saved next to them.
    path : path-like
        ``PATH``, ``PATH.safetensors`` or ``PATH.json``.

    Returns
    -------
    pathlib.Path
        The ``.safetensors`` path.

    Raises
    ------
    OutputError
        When either file cannot be written.
    """
    from safetensors.torch import save_file

    weights, meta = tensor_pair_paths(path)
    atomic_write(weights, lambda tmp: save_file(dict(tensors), str(tmp)))
    write_json(info, meta, indent=2, allow_nan=True)
    return weights


def read_tensor_pair(
    path: str | os.PathLike,
    *,
    what: str,
    hint: str,
    error: type[Exception] = OutputError,
    need_info: bool = True,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Read a pair written by :func:`write_tensor_pair`: ``(tensors, info)``; never unpickles.

    Parameters
    ----------
    path : path-like
        ``PATH``, ``PATH.safetensors`` or ``PATH.json``.
    what : str
        What the files hold, for messages (``"saved model"``, ``"mask"``).
    hint : str
        How to make one, for the message of a missing file (``"save one with save_model"``).
    error : exception type
        The :mod:`repsim.errors` type raised for a missing or damaged file.
    need_info : bool
        Whether ``PATH.json`` must exist; without it, ``info`` is ``None`` when it is absent.

    Raises
    ------
    error
        When a needed file is missing, a file is damaged (not safetensors, not valid JSON, or
        a JSON value that is not an object).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, meta = tensor_pair_paths(path)
    if not weights.is_file() or (need_info and not meta.is_file()):
        also = f" (+ {meta.name})" if need_info else ""
        raise error(f"No {what} at {weights}{also}; {hint}.")
    info = None
    if meta.is_file():
        try:
            info = read_json(meta, what=f"{what} description")
        except OutputError as exc:
            raise error(f"{exc} Save the {what} again; {hint}.") from None
        if not isinstance(info, dict):
            raise error(
                f"{meta} holds a JSON {type(info).__name__}, not a {what} description. Save the "
                f"{what} again; {hint}."
            )
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise error(
            f"{weights} is not a readable safetensors file ({exc}); it is damaged or was not "
            f"written by repsim. Save the {what} again; {hint}."
        ) from None
    return tensors, info


# ------------------------------------------------------------------ numpy archives


def read_npz(
    path: str | os.PathLike,
    *,
    what: str = "array archive",
    error: type[Exception] = OutputError,
) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` (or ``.npy``) file; never unpickles.

    The file is opened with ``allow_pickle=False`` and every array is read at once, so an
    archive holding Python objects (an object array, whose loading would run pickled code)
    is refused here with one clear message instead of failing later on first access.

    Parameters
    ----------
    path : path-like
        The file.
    what : str
        What the file holds, for messages (``"capture"``).
    error : exception type
        The :mod:`repsim.errors` type raised for a missing or unusable file.

    Returns
    -------
    dict of str to numpy.ndarray
        Name -> array (``{"arr_0": a}`` for a ``.npy`` file).

    Raises
    ------
    error
        If the file is missing, damaged, not a numpy archive, or holds object arrays.
    """
    import zipfile

    p = Path(path)
    if not p.is_file():
        raise error(f"{what} {p} does not exist.")
    objects = (
        f"{what} {p} holds pickled Python objects (an object array, or a pickle rather than a "
        "numpy file), which repsim never loads because unpickling can run code. Save plain "
        "numeric arrays (np.savez with numeric dtypes)."
    )
    try:
        obj = np.load(p, allow_pickle=False)
        if isinstance(obj, np.ndarray):
            return {"arr_0": obj}
        with obj:
            return {k: np.asarray(obj[k]) for k in obj.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "bject array" in str(exc):
            raise error(objects) from None
        raise error(f"{what} {p} is not a readable numpy archive ({exc}).") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise error(f"{what} {p} is not a readable numpy archive ({exc}).") from None
