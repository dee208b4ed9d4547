"""as_grouped: what researchers hold becomes a GroupedData; the analysis APIs accept it all."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from repsim.data import GroupedData, as_grouped, group_labels, load_dataset
from repsim.errors import DataError
from tests.models.tiny_hf import token_task


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    y = rng.integers(0, 3, 30)
    g = rng.integers(0, 2, 30)
    return x, y, g


def _same(d: GroupedData, x, y, g):
    assert np.array_equal(d.x, x) and np.array_equal(d.y, y)
    assert np.array_equal(np.asarray(d.group_names)[d.groups], np.array([str(v) for v in g]))
    assert np.array_equal(d.sample_id, np.arange(len(x)))


def test_tensor_dataset_loader_tuple_and_arrays_agree(arrays):
    x, y, g = arrays
    tds = TensorDataset(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(g))
    for obj in (tds, DataLoader(tds, batch_size=7), (x, y, g)):
        _same(as_grouped(obj), x, y, g)
    _same(as_grouped(x, y, g), x, y, g)
    _same(as_grouped(torch.from_numpy(x), list(y), list(g)), x, y, g)
    assert as_grouped(x, y, g).n_classes == 3
    assert as_grouped(x, y, g, n_classes=5).n_classes == 5


def test_string_groups_and_named_codes(arrays):
    x, y, _ = arrays
    names = np.array(["f", "m", "x"])[np.arange(30) % 3]
    d = as_grouped(x, y, names)
    assert d.group_names == ("f", "m", "x")
    assert np.array_equal(np.asarray(d.group_names)[d.groups], names)
    d2 = as_grouped(x, y, np.arange(30) % 3, group_names=["a", "b", "c"])
    assert d2.group_names == ("a", "b", "c") and np.array_equal(d2.groups, np.arange(30) % 3)


def test_dict_items_and_tokenizer_like_columns_keep_integer_ids():
    task = token_task(n=20)

    class Items(Dataset):
        def __len__(self):
            return 20

        def __getitem__(self, i):
            return {
                "input_ids": torch.tensor(task["input_ids"][i]),
                "attention_mask": torch.tensor(task["attention_mask"][i]),
                "labels": int(task["label"][i]),
                "group": ["maj", "min"][task["group"][i]],
            }

    for obj in (Items(), task, DataLoader(Items(), batch_size=6)):
        d = as_grouped(obj)
        assert d.input_keys == ("input_ids", "attention_mask")
        assert np.array_equal(d.x["input_ids"], task["input_ids"])
        assert d.x["input_ids"].dtype.kind == "i"
        inputs = d.inputs(slice(0, 3))
        assert inputs["input_ids"].dtype == torch.int64
        assert torch.equal(inputs["attention_mask"], torch.from_numpy(task["attention_mask"][:3]))
    assert as_grouped(Items()).group_names == ("maj", "min")


def test_grouped_data_keeps_dtypes_and_dict_inputs_index_like_arrays():
    task = token_task(n=12)
    d = GroupedData(
        x={"input_ids": task["input_ids"], "attention_mask": task["attention_mask"]},
        y=task["label"],
        groups=task["group"],
        sample_id=np.arange(100, 112),
        group_names=("a", "b"),
        class_names=("0", "1"),
    )
    sub = d.subset(np.array([3, 1]))
    assert np.array_equal(sub.x["input_ids"], task["input_ids"][[3, 1]])
    assert d.input_shape == (task["input_ids"].shape[1],)
    assert "inputs={input_ids: (10,)" in repr(d)
    other = d.subset(np.arange(12))
    assert other.fingerprint() == d.fingerprint()
    changed = task["input_ids"].copy()
    changed[0, 1] += 1
    d2 = GroupedData(
        x={"input_ids": changed, "attention_mask": task["attention_mask"]},
        y=task["label"],
        groups=task["group"],
        sample_id=np.arange(100, 112),
        group_names=("a", "b"),
        class_names=("0", "1"),
    )
    assert d2.fingerprint() != d.fingerprint()
    ids = GroupedData(
        x=task["input_ids"],
        y=task["label"],
        groups=task["group"],
        sample_id=np.arange(12),
        group_names=("a", "b"),
        class_names=("0", "1"),
    )
    x, _, _ = ids.tensors()
    assert x.dtype == torch.int64 and torch.equal(x, torch.from_numpy(task["input_ids"]))
    ds = d.to_torch()
    item = ds[2]
    assert torch.equal(item[0]["input_ids"], torch.from_numpy(task["input_ids"][2]))


def test_float_inputs_still_float32():
    digits = load_dataset("digits")
    x, y, g = digits.test.tensors()
    assert x.dtype == torch.float32 and y.dtype == torch.int64


@pytest.mark.parametrize(
    "bad, match",
    [
        (5, "expected a GroupedData, a torch Dataset"),
        ("text", "expected a GroupedData"),
        (TensorDataset(torch.zeros(3, 2)), "TensorDataset of 1 tensors"),
        ({"input_ids": np.zeros((3, 2))}, "without a label"),
    ],
)
def test_bad_containers_name_what_is_expected(bad, match):
    with pytest.raises(DataError, match=match):
        as_grouped(bad)


def test_other_refusals(arrays):
    x, y, g = arrays
    tds = TensorDataset(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(g))
    with pytest.raises(DataError, match="shuffle=False"):
        as_grouped(DataLoader(tds, batch_size=4, shuffle=True))
    with pytest.raises(DataError, match="no group labels"):
        as_grouped(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)))
    assert as_grouped((x, y), require_groups=False).group_names == ("all",)
    with pytest.raises(DataError, match="integer class indices"):
        as_grouped(x, y + 0.5, g)
    with pytest.raises(DataError, match="one label per sample"):
        as_grouped(x, y[:-1], g)
    with pytest.raises(DataError, match="whole dataset"):
        as_grouped(load_dataset("digits"))
    with pytest.raises(DataError, match="different shapes"):
        as_grouped([np.zeros(3), np.zeros(4)], [0, 1], [0, 0])


def test_group_labels_only_for_containers(arrays):
    x, y, g = arrays
    assert group_labels(g) is None
    codes, names = group_labels(
        TensorDataset(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(g))
    )
    assert np.array_equal(np.asarray(names)[codes], g.astype(str))


def test_compare_and_group_metrics_take_containers(arrays):
    from repsim.fairness import group_metrics
    from repsim.similarity import compare

    x, y, g = arrays
    tds = TensorDataset(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(g))
    rng = np.random.default_rng(1)
    a = {"l": rng.normal(size=(30, 5))}
    b = {"l": a["l"] @ rng.normal(size=(5, 5))}
    by_array = compare(a, b, groups=g.astype(str), min_group_size=2)
    by_dataset = compare(a, b, groups=tds, min_group_size=2)
    by_grouped = compare(a, b, groups=as_grouped(x, y, g), min_group_size=2)
    for other in (by_dataset, by_grouped):
        assert list(other.column("group")) == list(by_array.column("group"))
        np.testing.assert_allclose(other.column("value"), by_array.column("value"))
    pred = (y + (np.arange(30) % 4 == 0)) % 3
    direct = group_metrics(y_true=y, y_pred=pred, groups=g)
    via = group_metrics(y_true=tds, y_pred=pred, groups=tds)
    np.testing.assert_allclose(direct.by_group.column("accuracy"), via.by_group.column("accuracy"))
    assert list(via.group_names) == ["0", "1"]
