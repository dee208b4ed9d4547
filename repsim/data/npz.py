"""A grouped dataset from an ``.npz`` file of plain arrays, and splitting one into train/test.

:func:`load_npz` reads the file with ``allow_pickle=False`` (:func:`repsim._core.io.read_npz`:
an archive holding Python objects is refused, never unpickled). The arrays, by name:

=================  ====================================================================
``x``              inputs ``[n, ...]`` (floats, or integer token ids); **or**
``x.<key>``        dict inputs, one array per key (``x.input_ids``, ``x.attention_mask``),
                   passed to the model as keyword arguments
``y``              integer class labels ``[n]``
``groups``         group labels ``[n]``: integers or strings (a numpy ``U`` array)
``split``          optional ``[n]``: ``"train"``, ``"val"``, ``"test"`` (or ``0``, ``2``,
                   ``1``); without it the samples are split by :func:`split_grouped`
``sample_id``      optional unique integer ids ``[n]`` (default ``0..n-1``)
``group_names``    optional names of integer group codes (then ``groups`` are codes)
``class_names``    optional names of the classes
=================  ====================================================================

Write one with ``np.savez("task.npz", x=..., y=..., groups=...)`` (numeric or fixed-width
string arrays only).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from repsim._core.io import read_npz
from repsim.data.adapt import as_grouped
from repsim.data.base import GroupedData, GroupedDataset
from repsim.errors import DataError

__all__ = ["SPLIT_CODES", "load_npz", "split_grouped"]

#: Integer codes accepted in an ``.npz``'s ``split`` array.
SPLIT_CODES = {0: "train", 1: "test", 2: "val"}

_KNOWN = ("x", "y", "groups", "split", "sample_id", "group_names", "class_names")


def split_grouped(
    data: GroupedData, *, test_fraction: float = 0.25, seed: int = 0
) -> tuple[GroupedData, GroupedData]:
    """Split samples into train and test, stratified by (group, class).

    Within every (group, class) cell the samples are shuffled with ``seed`` and the first
    ``round(test_fraction * n_cell)`` go to test (at least one when the cell has two or more
    samples), so small groups appear in both splits. Each split keeps the sample order of
    ``data``.

    Raises
    ------
    DataError
        ``test_fraction`` outside ``(0, 1)``, or a split that would be empty.
    """
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must lie in (0, 1), got {test_fraction!r}.")
    rng = np.random.default_rng(seed)
    test = np.zeros(len(data), dtype=bool)
    cells = np.asarray(data.groups, np.int64) * (len(data.class_names) + 1) + data.y
    for cell in np.unique(cells):
        idx = np.flatnonzero(cells == cell)
        k = round(test_fraction * len(idx))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        test[rng.permutation(idx)[:k]] = True
    if test.all() or not test.any():
        raise DataError(
            f"{data.name}: splitting {len(data)} samples with test_fraction={test_fraction} "
            "leaves a split empty; give more samples or a 'split' array."
        )
    return (
        _named(data.subset(np.flatnonzero(~test)), "train"),
        _named(data.subset(np.flatnonzero(test)), "test"),
    )


def _named(data: GroupedData, split: str) -> GroupedData:
    from dataclasses import replace

    return replace(data, split=split)


def _strings(arr: np.ndarray | None, what: str, path: Path) -> tuple[str, ...] | None:
    if arr is None:
        return None
    if arr.ndim != 1:
        raise DataError(f"{path}: '{what}' must be a 1-D array of names, got shape {arr.shape}.")
    return tuple(str(v) for v in arr.tolist())


def load_npz(
    path: str | os.PathLike,
    *,
    test_fraction: float = 0.25,
    split_seed: int = 0,
    name: str | None = None,
) -> GroupedDataset:
    """Load a grouped dataset from an ``.npz`` file (layout in the module docstring).

    Parameters
    ----------
    path : path-like
        The file.
    test_fraction, split_seed : float, int
        How samples are split when the file has no ``split`` array (:func:`split_grouped`).
    name : str, optional
        Dataset name (default: the file's stem).

    Returns
    -------
    GroupedDataset
        ``train`` and ``test`` (and ``val`` when the ``split`` array has one); group codes,
        group and class names are shared by the splits.

    Raises
    ------
    DataError
        A missing or damaged file, pickled objects, a missing ``x``/``y``/``groups`` array, an
        unknown array name, arrays of different lengths, or an unknown split name.
    """
    p = Path(path)
    arrays = read_npz(p, what="dataset file", error=DataError)
    label = name or p.stem
    unknown = [k for k in arrays if k not in _KNOWN and not k.startswith("x.")]
    if unknown:
        raise DataError(
            f"{p}: unknown arrays {unknown}; a dataset file holds {list(_KNOWN)} (inputs as 'x' "
            "or as 'x.<key>' for dict inputs)."
        )
    keyed = {k[2:]: v for k, v in arrays.items() if k.startswith("x.")}
    if "x" in arrays and keyed:
        raise DataError(f"{p}: give the inputs as 'x' or as 'x.<key>' arrays, not both.")
    x: Any = arrays.get("x") if not keyed else keyed
    missing = [
        k
        for k, v in (("x", x), ("y", arrays.get("y")), ("groups", arrays.get("groups")))
        if v is None
    ]
    if missing:
        raise DataError(
            f"{p} has no {missing} array(s); a dataset file holds x (or x.<key>), y and groups."
        )
    group_names = _strings(arrays.get("group_names"), "group_names", p)
    class_names = _strings(arrays.get("class_names"), "class_names", p)
    data = as_grouped(
        x,
        arrays["y"],
        arrays["groups"],
        sample_id=arrays.get("sample_id"),
        group_names=group_names,
        class_names=class_names,
        name=label,
        split="all",
        what=str(p),
    )
    split = arrays.get("split")
    options: dict[str, Any] = {"path": str(p)}
    if split is None:
        train, test = split_grouped(data, test_fraction=test_fraction, seed=split_seed)
        val = None
        options.update(test_fraction=test_fraction, split_seed=split_seed)
    else:
        train, test, val = _by_split(data, split, p)
    return GroupedDataset(
        name=label,
        train=train,
        test=test,
        val=val,
        description=f"Loaded from {p}.",
        source=str(p),
        options=options,
    )


def _by_split(
    data: GroupedData, split: np.ndarray, path: Path
) -> tuple[GroupedData, GroupedData, GroupedData | None]:
    if split.shape != (len(data),):
        raise DataError(f"{path}: 'split' must have one entry per sample, got {split.shape}.")
    names = (
        np.asarray([SPLIT_CODES.get(int(v), f"<{v}>") for v in split])
        if split.dtype.kind in "iu"
        else split.astype(str)
    )
    bad = sorted(set(names.tolist()) - set(SPLIT_CODES.values()))
    if bad:
        raise DataError(f"{path}: 'split' holds {bad}; use 'train', 'test', 'val' (or 0, 1, 2).")
    parts: Mapping[str, GroupedData] = {
        s: _named(data.subset(np.flatnonzero(names == s)), s)
        for s in SPLIT_CODES.values()
        if (names == s).any()
    }
    for s in ("train", "test"):
        if s not in parts:
            raise DataError(f"{path}: 'split' has no {s!r} samples.")
    return parts["train"], parts["test"], parts.get("val")
