"""The ``GroupedData`` contract: inputs, labels, groups and stable sample ids for one split.

Every stage of repsim (capture, fairness, saliency, subnetwork search) consumes a
:class:`GroupedData`. A built-in dataset is a :class:`GroupedDataset`: a train and a test split
(and, where the dataset defines one, a validation split) with shared class and group names.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from repsim._core.fingerprints import DataHasher, array_fingerprint
from repsim.errors import DataError, did_you_mean


def _check_group_codes(groups: np.ndarray, where: str) -> None:
    """Raise ``DataError`` unless ``groups`` holds integer codes (no None, NaN or floats)."""
    g = np.asarray(groups)
    if g.dtype.kind in "iub":
        return
    if g.dtype.kind == "f" and np.isnan(g).any():
        bad = int(np.isnan(g).sum())
    elif g.dtype.kind == "O":
        bad = sum(1 for v in g.ravel() if v is None or (isinstance(v, float) and v != v))
    else:
        bad = 0
    if bad:
        raise DataError(
            f"{where}: {bad} group label(s) are missing (None or NaN). Give every sample a "
            "group, or drop those samples first (data.subset(mask))."
        )
    if g.dtype.kind == "f" and np.all(g == np.round(g)):
        return  # integral floats are accepted as codes
    raise DataError(
        f"{where}: 'groups' must hold integer codes indexing group_names, got dtype {g.dtype}."
    )


@dataclass(frozen=True, eq=False)
class GroupedData:
    """One split of a grouped dataset.

    Attributes
    ----------
    x : numpy.ndarray
        Inputs, shape ``[n, ...]``: floats (images are ``[n, C, H, W]``), or integers (token
        ids), kept in their dtype. Dict inputs (``{"input_ids": [n, T], "attention_mask":
        [n, T]}``, a tokenizer's output) are stored as one numpy structured array ``[n]`` with
        a field per key, so indexing, :meth:`subset` and fingerprints work as for any array;
        ``x["input_ids"]`` reads a field and :meth:`inputs` gives the dict of tensors.
    y : numpy.ndarray
        Integer class labels, shape ``[n]``.
    groups : numpy.ndarray
        Integer group codes, shape ``[n]``, indexing ``group_names``.
    sample_id : numpy.ndarray
        ``int64`` ids, unique within the dataset and stable across runs and machines (the row of
        the sample in the original files). Sample order everywhere in repsim is this order.
    group_names : tuple of str
        Name of each group code.
    class_names : tuple of str
        Name of each class label.
    group_attribute : str
        Name of the attribute ``groups`` holds (e.g. ``"sex"``, ``"class"``).
    attributes : Mapping[str, numpy.ndarray]
        Every grouping attribute the dataset defines (integer codes, shape ``[n]``), including
        ``group_attribute``; switch the active one with :meth:`with_groups`.
    attribute_names : Mapping[str, tuple of str]
        Code names for each attribute.
    name : str
        Dataset name, e.g. ``"digits"``.
    split : str
        ``"train"``, ``"val"`` or ``"test"``.
    """

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    sample_id: np.ndarray
    group_names: tuple[str, ...]
    class_names: tuple[str, ...]
    group_attribute: str = "group"
    attributes: Mapping[str, np.ndarray] = field(default_factory=dict)
    attribute_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    name: str = "data"
    split: str = "test"

    def __post_init__(self) -> None:
        if isinstance(self.x, Mapping):
            object.__setattr__(self, "x", pack_inputs(self.x, f"{self.name}/{self.split}"))
        n = len(self.x)
        for label, arr in (("y", self.y), ("groups", self.groups), ("sample_id", self.sample_id)):
            if np.ndim(arr) != 1 or len(arr) != n:
                raise DataError(
                    f"{self.name}/{self.split}: '{label}' must be 1-D with one entry per input "
                    f"({n}), got shape {np.shape(arr)}."
                )
        _check_group_codes(self.groups, f"{self.name}/{self.split}")
        if len(np.unique(self.sample_id)) != n:
            raise DataError(f"{self.name}/{self.split}: sample ids are not unique.")
        if n and (self.groups.min() < 0 or self.groups.max() >= len(self.group_names)):
            raise DataError(
                f"{self.name}/{self.split}: group codes must lie in [0, {len(self.group_names)})."
            )
        if n and (self.y.min() < 0 or self.y.max() >= len(self.class_names)):
            raise DataError(
                f"{self.name}/{self.split}: labels must lie in [0, {len(self.class_names)})."
            )
        if not _all_finite(self.x):
            raise DataError(f"{self.name}/{self.split}: inputs hold NaN or inf values.")
        attrs = dict(self.attributes)
        names = dict(self.attribute_names)
        attrs.setdefault(self.group_attribute, self.groups)
        names.setdefault(self.group_attribute, tuple(self.group_names))
        object.__setattr__(self, "attributes", attrs)
        object.__setattr__(self, "attribute_names", names)

    def __len__(self) -> int:
        return len(self.x)

    def __repr__(self) -> str:
        return (
            f"GroupedData(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"{self._x_repr()}, classes={len(self.class_names)}, "
            f"groups={self.group_attribute}:{list(self.group_names)})"
        )

    def _x_repr(self) -> str:
        if self.input_keys:
            fields = {k: tuple(self.x.dtype[k].shape) for k in self.input_keys}
            return "inputs={" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}"
        return f"x_shape={tuple(self.x.shape[1:])}"

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, ``x.shape[1:]`` (dict inputs: that of the first field)."""
        if self.input_keys:
            return tuple(int(s) for s in self.x.dtype[self.input_keys[0]].shape)
        return tuple(int(s) for s in self.x.shape[1:])

    @property
    def input_keys(self) -> tuple[str, ...] | None:
        """Keys of dict inputs (``("input_ids", "attention_mask")``), ``None`` for an array."""
        names = self.x.dtype.names
        return tuple(names) if names else None

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def fingerprint(self) -> str:
        """Hash of the sample ids, inputs, labels and group labels, as the cache keys use.

        Inputs count by dtype, shape and bytes; labels and groups as ``int64`` codes
        (:class:`repsim._core.fingerprints.DataHasher`). Switching the active group attribute
        (:meth:`with_groups`) changes the fingerprint.
        """
        hasher = DataHasher(self.sample_id)
        hasher.update(self.x, self.y, self.groups)
        return hasher.hexdigest()

    def with_groups(self, attribute: str) -> GroupedData:
        """Return the same split with ``groups`` taken from another attribute.

        Raises
        ------
        DataError
            If the dataset has no such attribute.
        """
        if attribute not in self.attributes:
            raise DataError(
                f"{self.name} has no group attribute {attribute!r}; it has "
                f"{sorted(self.attributes)}.{did_you_mean(attribute, self.attributes)}"
            )
        return replace(
            self,
            groups=np.asarray(self.attributes[attribute]),
            group_names=tuple(self.attribute_names[attribute]),
            group_attribute=attribute,
        )

    def subset(self, index: np.ndarray | slice) -> GroupedData:
        """Return the samples at ``index`` (boolean mask, integer indices or a slice)."""
        return replace(
            self,
            x=self.x[index],
            y=self.y[index],
            groups=self.groups[index],
            sample_id=self.sample_id[index],
            attributes={k: v[index] for k, v in self.attributes.items()},
        )

    def group_sizes(self, attribute: str | None = None) -> dict[str, int]:
        """Number of samples per group name of ``attribute`` (default: the active groups)."""
        attribute = attribute or self.group_attribute
        data = self if attribute == self.group_attribute else self.with_groups(attribute)
        counts = np.bincount(data.groups, minlength=len(data.group_names))
        return {name: int(c) for name, c in zip(data.group_names, counts, strict=True)}

    def class_sizes(self) -> dict[str, int]:
        """Number of samples per class name."""
        counts = np.bincount(self.y, minlength=len(self.class_names))
        return {name: int(c) for name, c in zip(self.class_names, counts, strict=True)}

    def inputs(
        self, index: np.ndarray | slice | None = None
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Inputs at ``index`` (default: all) as CPU tensors, dtypes kept (:func:`input_tensors`).

        Floats become ``float32``, integers ``int64`` (token ids stay integer), booleans stay
        ``bool``; dict inputs give ``{key: tensor}``.
        """
        return input_tensors(self.x if index is None else self.x[index])

    def tensors(self) -> tuple[torch.Tensor | dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Inputs, labels and groups as CPU tensors (inputs as :meth:`inputs`; ``int64``, ``int64``)."""
        return (
            self.inputs(),
            torch.from_numpy(np.ascontiguousarray(self.y, dtype=np.int64)),
            torch.from_numpy(np.ascontiguousarray(self.groups, dtype=np.int64)),
        )

    def to_torch(self) -> torch.utils.data.Dataset:
        """A torch ``Dataset`` yielding ``(x, y, group)``.

        A ``TensorDataset`` for array inputs; ``({key: tensor}, y, group)`` items for dict inputs.
        """
        x, y, g = self.tensors()
        if isinstance(x, dict):
            return _DictInputDataset(x, y, g)
        return torch.utils.data.TensorDataset(x, y, g)

    def batches(
        self, batch_size: int
    ) -> Iterator[tuple[slice, torch.Tensor | dict[str, torch.Tensor], torch.Tensor]]:
        """Yield ``(rows, x, y)`` for consecutive batches in sample order (``x`` as :meth:`inputs`)."""
        y = torch.from_numpy(np.ascontiguousarray(self.y, dtype=np.int64))
        for start in range(0, len(self), batch_size):
            rows = slice(start, min(start + batch_size, len(self)))
            yield rows, self.inputs(rows), y[rows]


class _DictInputDataset(torch.utils.data.Dataset):
    """``({key: tensor}, y, group)`` items of dict inputs (what ``GroupedData.to_torch`` gives)."""

    def __init__(self, x: dict[str, torch.Tensor], y: torch.Tensor, g: torch.Tensor) -> None:
        self.x, self.y, self.g = x, y, g

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        return {k: v[i] for k, v in self.x.items()}, self.y[i], self.g[i]


def pack_inputs(inputs: Mapping[str, object], what: str = "inputs") -> np.ndarray:
    """Dict inputs ``{key: [n, ...] array}`` as one numpy structured array ``[n]``, a field per key.

    Raises
    ------
    DataError
        An empty dict, a non-string key, a non-numeric value, or values of different lengths.
    """
    if not inputs:
        raise DataError(f"{what}: the input dict is empty; pass at least one array.")
    arrays: dict[str, np.ndarray] = {}
    for key, value in inputs.items():
        if not isinstance(key, str):
            raise DataError(f"{what}: input keys must be strings, got {key!r}.")
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if value.dtype == torch.bfloat16:
                value = value.float()
            value = value.numpy()
        arr = np.asarray(value)
        if arr.ndim < 1 or arr.dtype.kind not in "biuf":
            raise DataError(
                f"{what}: input {key!r} must be a numeric array [n, ...], got dtype {arr.dtype} "
                f"and shape {arr.shape}."
            )
        arrays[key] = arr
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise DataError(f"{what}: the input arrays have different lengths {lengths}.")
    n = next(iter(lengths.values()))
    packed = np.empty(n, dtype=[(k, v.dtype, v.shape[1:]) for k, v in arrays.items()])
    for key, arr in arrays.items():
        packed[key] = arr
    return packed


def _tensor(arr: np.ndarray) -> torch.Tensor:
    if arr.dtype.kind == "f":
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    elif arr.dtype.kind in "iu":
        arr = np.ascontiguousarray(arr, dtype=np.int64)
    elif arr.dtype.kind == "b":
        arr = np.ascontiguousarray(arr, dtype=np.bool_)
    else:
        raise DataError(f"Inputs of dtype {arr.dtype} cannot be turned into tensors.")
    return torch.from_numpy(arr)


def input_tensors(x: np.ndarray) -> torch.Tensor | dict[str, torch.Tensor]:
    """CPU tensors of inputs ``x``: floats as ``float32``, integers as ``int64``, bool kept.

    A structured array (dict inputs, see :func:`pack_inputs`) gives ``{field: tensor}``.
    """
    x = np.asarray(x)
    if x.dtype.names:
        return {k: _tensor(x[k]) for k in x.dtype.names}
    return _tensor(x)


def _all_finite(x: np.ndarray) -> bool:
    if x.dtype.names:
        return all(_all_finite(x[k]) for k in x.dtype.names)
    if x.dtype.kind != "f":
        return True
    return bool(np.all(np.isfinite(x)))


@dataclass(frozen=True, eq=False)
class GroupedDataset:
    """A built-in dataset: its splits and what it is.

    Attributes
    ----------
    name : str
        Registry name.
    train, test : GroupedData
        The training and test splits.
    val : GroupedData or None
        A validation split, where the dataset defines one.
    description : str
        One paragraph on what the data is, how groups are built, and whether it is synthetic.
    source : str
        Citation and licence.
    options : dict
        The options the dataset was built with (so a study can record them).
    """

    name: str
    train: GroupedData
    test: GroupedData
    val: GroupedData | None = None
    description: str = ""
    source: str = ""
    options: Mapping[str, object] = field(default_factory=dict)

    def splits(self) -> dict[str, GroupedData]:
        """The splits by name."""
        out = {"train": self.train}
        if self.val is not None:
            out["val"] = self.val
        out["test"] = self.test
        return out

    def with_groups(self, attribute: str) -> GroupedDataset:
        """All splits with their active groups taken from ``attribute``."""
        return replace(
            self,
            train=self.train.with_groups(attribute),
            test=self.test.with_groups(attribute),
            val=None if self.val is None else self.val.with_groups(attribute),
        )

    def fingerprint(self) -> str:
        """Hash of every split's fingerprint."""
        return array_fingerprint(
            np.frombuffer("".join(s.fingerprint() for s in self.splits().values()).encode(), "u1")
        )
