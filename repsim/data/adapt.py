"""One adapter from what researchers hold to a :class:`GroupedData`: :func:`as_grouped`.

The analysis APIs (:func:`repsim.train.fit`, :func:`repsim.compress.distill`,
:func:`repsim.saliency.weight_saliency`, the group labels of
:func:`repsim.similarity.compare` and :func:`repsim.fairness.group_metrics`...) call it on
their data argument, so each accepts:

- a :class:`GroupedData` (returned as is);
- a torch ``Dataset`` (map-style, e.g. ``TensorDataset(x, y, g)``) or a non-shuffling
  ``DataLoader`` whose items/batches are ``(x, y, group)`` tuples or dicts;
- arrays: ``as_grouped(x, y, groups)`` with numpy arrays, tensors or lists, or a tuple
  ``(x, y, groups)``; ``x`` may be a dict of arrays (a tokenizer's output);
- a dict of columns holding the labels and groups next to the inputs.

**Dict items.** The label is read from ``"y"``, ``"label"`` or ``"labels"``, the group from
``"group"`` or ``"groups"``, an optional id from ``"sample_id"``. The input is ``"x"`` (or
``"inputs"``) when present, else every remaining key (``input_ids``, ``attention_mask``,
``token_type_ids``...), which become dict inputs passed to the model as keyword arguments.

**Encoding.** Labels must be integer class indices; the class names are ``"0" .. "K-1"``
(``K = n_classes`` or ``max(y) + 1``) unless ``class_names`` is given. Groups may be any
labels: without ``group_names`` the distinct values, sorted, become the group names (as strings)
and each sample gets the index of its value; with ``group_names`` the groups must already be
integer codes into it. Sample ids default to ``0 .. n-1`` in iteration order (a shuffling
``DataLoader`` has no stable order and is refused).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from repsim.data.base import GroupedData, GroupedDataset, pack_inputs
from repsim.errors import DataError

__all__ = ["EXPECTED", "as_grouped", "group_labels"]

#: What :func:`as_grouped` accepts, for error messages.
EXPECTED = (
    "a GroupedData, a torch Dataset or non-shuffling DataLoader yielding (x, y, group) tuples "
    "or dicts with 'label' and 'group' keys, or arrays: as_grouped(x, y, groups) / a tuple "
    "(x, y, groups) of numpy arrays or tensors"
)

_LABEL_KEYS = ("y", "label", "labels")
_GROUP_KEYS = ("group", "groups")
_INPUT_KEYS = ("x", "inputs")


def _numpy(value: Any, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.float()
        return value.numpy()
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{what} cannot be read as one array ({exc}); if its items have different shapes, "
            "pad them to one length (e.g. tokenizer(..., padding='max_length'))."
        ) from None
    if arr.dtype == object:
        raise DataError(
            f"{what} is not a numeric array (got {type(value).__name__} of mixed objects); pad "
            "token sequences to one length (e.g. tokenizer(..., padding='max_length'))."
        )
    return arr


def _inputs(value: Any, what: str) -> np.ndarray:
    if isinstance(value, Mapping):
        return pack_inputs({k: _numpy(v, f"{what}[{k!r}]") for k, v in value.items()}, what)
    return _numpy(value, what)


def _split_record(item: Mapping[str, Any], what: str) -> tuple[Any, Any, Any, Any]:
    """``(x, y, group, sample_id)`` of a dict item or of a dict of columns."""
    keys = list(item)
    label = next((k for k in _LABEL_KEYS if k in item), None)
    group = next((k for k in _GROUP_KEYS if k in item), None)
    if label is None:
        raise DataError(
            f"{what} is a dict without a label; expected one of {list(_LABEL_KEYS)} among its "
            f"keys {keys}."
        )
    rest = [k for k in keys if k not in (label, group, "sample_id")]
    inp = next((k for k in _INPUT_KEYS if k in item), None)
    if inp is not None:
        x = item[inp]
    elif rest:
        x = {k: item[k] for k in rest}
    else:
        raise DataError(f"{what} holds labels but no inputs (keys {keys}).")
    return x, item[label], None if group is None else item[group], item.get("sample_id")


def _split_tuple(item: Any, what: str) -> tuple[Any, Any, Any, Any]:
    if isinstance(item, Mapping):
        return _split_record(item, what)
    if isinstance(item, tuple | list) and len(item) in (2, 3):
        x, y, *g = item
        return x, y, (g[0] if g else None), None
    raise DataError(
        f"{what} yields {type(item).__name__} items; expected (x, y, group) tuples, (x, y) "
        "pairs or dicts with 'label' and 'group' keys."
    )


def _stack(values: list[Any], what: str) -> Any:
    """Stack per-sample or per-batch values (``concat`` for batches) into arrays / dicts."""
    if isinstance(values[0], Mapping):
        keys = list(values[0])
        for v in values:
            if not isinstance(v, Mapping) or list(v) != keys:
                raise DataError(f"{what}: items have different input keys.")
        return {k: _stack([v[k] for v in values], f"{what}[{k!r}]") for k in keys}
    arrays = [_numpy(v, what) for v in values]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(
            f"{what}: items have different shapes {sorted(shapes)[:4]}; pad them to one length "
            "(e.g. tokenizer(..., padding='max_length'))."
        )
    return np.stack(arrays)


def _concat(values: list[Any], what: str) -> Any:
    if isinstance(values[0], Mapping):
        keys = list(values[0])
        return {k: _concat([v[k] for v in values], f"{what}[{k!r}]") for k in keys}
    arrays = [np.atleast_1d(_numpy(v, what)) for v in values]
    try:
        return np.concatenate(arrays)
    except ValueError as exc:
        raise DataError(
            f"{what}: batches have different shapes ({exc}); pad inputs to one length."
        ) from None


def _from_dataset(ds: torch.utils.data.Dataset, what: str) -> tuple[Any, Any, Any, Any]:
    if isinstance(ds, torch.utils.data.TensorDataset):
        if len(ds.tensors) not in (2, 3):
            raise DataError(
                f"{what} is a TensorDataset of {len(ds.tensors)} tensors; expected "
                "TensorDataset(x, y, groups) (or (x, y) where groups are not needed)."
            )
        x, y, *g = ds.tensors
        return x, y, (g[0] if g else None), None
    try:
        n = len(ds)  # type: ignore[arg-type]
    except TypeError:
        raise DataError(
            f"{what} is an iterable Dataset without a length; expected {EXPECTED}."
        ) from None
    if n == 0:
        raise DataError(f"{what} is empty.")
    items = [_split_tuple(ds[i], what) for i in range(n)]
    xs, ys, gs, ids = zip(*items, strict=True)
    return (
        _stack(list(xs), f"{what} inputs"),
        _stack(list(ys), f"{what} labels"),
        None if gs[0] is None else _stack(list(gs), f"{what} groups"),
        None if ids[0] is None else _stack(list(ids), f"{what} sample ids"),
    )


def _from_loader(dl: torch.utils.data.DataLoader, what: str) -> tuple[Any, Any, Any, Any]:
    shuffling = (
        torch.utils.data.RandomSampler,
        torch.utils.data.SubsetRandomSampler,
        torch.utils.data.WeightedRandomSampler,
    )
    if isinstance(dl.sampler, shuffling):
        raise DataError(
            f"{what} is a DataLoader with {type(dl.sampler).__name__}; its order changes between "
            "passes, so samples cannot be matched across models. Pass its dataset, or a "
            "DataLoader with shuffle=False."
        )
    batches = [_split_tuple(b, what) for b in dl]
    if not batches:
        raise DataError(f"{what} yields no batches.")
    xs, ys, gs, ids = zip(*batches, strict=True)
    join = _stack if dl.batch_size is None and dl.batch_sampler is None else _concat
    return (
        join(list(xs), f"{what} inputs"),
        join(list(ys), f"{what} labels"),
        None if gs[0] is None else join(list(gs), f"{what} groups"),
        None if ids[0] is None else join(list(ids), f"{what} sample ids"),
    )


def _encode_groups(
    groups: np.ndarray, group_names: Sequence[str] | None, what: str
) -> tuple[np.ndarray, tuple[str, ...]]:
    if groups.ndim != 1:
        groups = groups.reshape(len(groups), -1)
        if groups.shape[1] != 1:
            raise DataError(f"{what}: groups must hold one label per sample, got {groups.shape}.")
        groups = groups[:, 0]
    if group_names is not None:
        if groups.dtype.kind not in "iu":
            raise DataError(
                f"{what}: with group_names, groups must be integer codes into it, got dtype "
                f"{groups.dtype}."
            )
        return groups.astype(np.int64), tuple(str(n) for n in group_names)
    values, codes = np.unique(groups, return_inverse=True)
    names = tuple(str(v.item() if hasattr(v, "item") else v) for v in values)
    return codes.astype(np.int64).reshape(-1), names


def as_grouped(
    data: Any,
    y: Any = None,
    groups: Any = None,
    *,
    sample_id: Any = None,
    group_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    n_classes: int | None = None,
    name: str = "data",
    split: str = "data",
    require_groups: bool = True,
    what: str = "data",
) -> GroupedData:
    """Turn what a researcher holds into a :class:`GroupedData` (see the module docstring).

    Parameters
    ----------
    data : GroupedData, torch Dataset, DataLoader, tuple, array, tensor or dict
        The samples; with ``y`` (and ``groups``), the inputs alone.
    y, groups : array-like, optional
        Labels and group labels when ``data`` holds only the inputs.
    sample_id : array-like, optional
        Unique integer ids (default ``0 .. n-1``).
    group_names, class_names : sequence of str, optional
        Names of integer group codes / of the classes.
    n_classes : int, optional
        Number of classes (default ``max(y) + 1``, or ``len(class_names)``).
    name, split : str
        Labels of the result.
    require_groups : bool
        Without group labels: raise (default), or put every sample in one group ``"all"``
        (training and evaluation need no groups).
    what : str
        The argument's name, for messages.

    Raises
    ------
    DataError
        Anything else, or a container whose items do not fit (the message says what is
        expected); labels that are not integers; missing groups with ``require_groups``.
    """
    if isinstance(data, GroupedData):
        if y is not None or groups is not None:
            raise DataError(
                f"{what} is a GroupedData, which carries its labels and groups; drop y/groups."
            )
        return data
    if isinstance(data, GroupedDataset):
        raise DataError(
            f"{what} is a whole dataset ({data.name}); pass one split, e.g. {what}.train or "
            f"{what}.test."
        )
    ids = sample_id
    if y is not None:
        x, labels, grp = data, y, groups
    elif groups is not None:
        raise DataError(
            f"{what}: groups were given without labels y; pass as_grouped(x, y, groups)."
        )
    elif isinstance(data, torch.utils.data.DataLoader):
        x, labels, grp, found = _from_loader(data, what)
        ids = ids if ids is not None else found
    elif isinstance(data, torch.utils.data.Dataset):
        x, labels, grp, found = _from_dataset(data, what)
        ids = ids if ids is not None else found
    elif isinstance(data, Mapping):
        x, labels, grp, found = _split_record(data, what)
        ids = ids if ids is not None else found
    elif isinstance(data, tuple | list) and len(data) in (2, 3) and not np.isscalar(data[0]):
        x, labels, grp, _ = _split_tuple(data, what)
    else:
        raise DataError(f"{what}: got {type(data).__name__}; expected {EXPECTED}.")

    xa = _inputs(x, f"{what} inputs")
    n = len(xa)
    ya = _numpy(labels, f"{what} labels").reshape(-1) if np.ndim(labels) else np.asarray([labels])
    if len(ya) != n:
        raise DataError(f"{what}: {len(ya)} labels for {n} inputs; pass one label per sample.")
    if ya.dtype.kind == "f":
        if not np.all(np.isfinite(ya)) or not np.all(ya == np.round(ya)):
            raise DataError(
                f"{what}: labels must be integer class indices, got non-integer floats."
            )
    elif ya.dtype.kind not in "biu":
        raise DataError(f"{what}: labels must be integer class indices, got dtype {ya.dtype}.")
    ya = ya.astype(np.int64)
    if n and ya.min() < 0:
        raise DataError(f"{what}: labels must be class indices >= 0, got {int(ya.min())}.")
    if class_names is None:
        k = n_classes if n_classes is not None else (int(ya.max()) + 1 if n else 0)
        class_names = tuple(str(i) for i in range(k))
    if grp is None:
        if require_groups:
            raise DataError(
                f"{what} has no group labels; pass groups (as_grouped(x, y, groups)) or a "
                "dataset yielding (x, y, group)."
            )
        codes, gnames = np.zeros(n, dtype=np.int64), ("all",)
    else:
        ga = _numpy(grp, f"{what} groups")
        if len(ga) != n:
            raise DataError(f"{what}: {len(ga)} group labels for {n} inputs; pass one per sample.")
        codes, gnames = _encode_groups(ga, group_names, what)
    if ids is None:
        sid = np.arange(n, dtype=np.int64)
    else:
        sid = _numpy(ids, f"{what} sample ids").reshape(-1)
        if sid.dtype.kind not in "iu":
            raise DataError(f"{what}: sample ids must be integers, got dtype {sid.dtype}.")
        sid = sid.astype(np.int64)
    return GroupedData(
        x=xa,
        y=ya,
        groups=codes,
        sample_id=sid,
        group_names=gnames,
        class_names=tuple(str(c) for c in class_names),
        name=name,
        split=split,
    )


def is_container(obj: Any) -> bool:
    """Whether ``obj`` is a sample container (GroupedData, torch Dataset or DataLoader)."""
    return isinstance(obj, GroupedData | torch.utils.data.Dataset | torch.utils.data.DataLoader)


def group_labels(obj: Any, what: str = "groups") -> tuple[np.ndarray, list[str]] | None:
    """Group codes and names of a sample container, or ``None`` for plain labels.

    A :class:`GroupedData`, torch ``Dataset`` or ``DataLoader`` gives ``(codes, names)`` (as
    :func:`as_grouped` encodes them); anything else (an array of labels) gives ``None``, for
    the caller to treat as the labels themselves.
    """
    if not is_container(obj):
        return None
    data = as_grouped(obj, what=what)
    return np.asarray(data.groups), list(data.group_names)
