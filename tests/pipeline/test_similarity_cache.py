"""The similarity cache: exact reuse, keys that cover every input, safe fallbacks."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from repsim.pipeline.similarity_cache import cached_compare, similarity_key


class Cap(dict):
    """A capture: layers plus the fingerprints and names :func:`record` attaches."""

    def __init__(self, arrays, *, fp, data="d0", reduction="flatten", name="m"):
        super().__init__(arrays)
        self.model_fingerprint, self.data_fingerprint = fp, data
        self.reduction, self.name = reduction, name
        self.sample_id = np.arange(len(next(iter(arrays.values()))))


def _pair(seed=0):
    rng = np.random.default_rng(seed)
    x = {f"l{i}": rng.normal(size=(40, 6 + i)) for i in range(3)}
    y = {
        k: v @ rng.normal(size=(v.shape[1], 5)) + 0.1 * rng.normal(size=(40, 5))
        for k, v in x.items()
    }
    return Cap(x, fp="A", name="dense"), Cap(y, fp="B", name="pruned")


GROUPS = np.array(["big"] * 37 + ["tiny"] * 3, dtype=object)  # "tiny" < min_group_size: NaN


def _rows(table):
    return [
        {k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in table.to_records()
    ]


def _compare(a, b, cache_dir, **extra):
    opts = {"measures": ["cka", "procrustes"], "groups": GROUPS, "seed": 0, "progress": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cached_compare(a, b, cache_dir=cache_dir, **{**opts, **extra})


def test_second_call_returns_the_identical_table_from_disk(tmp_path):
    from repsim.similarity import compare

    a, b = _pair()
    first, hit1 = _compare(a, b, tmp_path)
    second, hit2 = _compare(a, b, tmp_path)
    assert (hit1, hit2) == (False, True)
    assert len(list((tmp_path / "similarity").glob("*.json"))) == 1
    assert second.columns == first.columns
    assert _rows(second) == _rows(first)
    assert any(r["value"] == "nan" for r in _rows(second))  # NaN survives the round trip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = compare(a, b, measures=["cka", "procrustes"], groups=GROUPS, seed=0)
    assert _rows(fresh) == _rows(second)  # bit-identical to an uncached computation
    assert second.matrix("cka").values.shape == (3, 3)


@pytest.mark.parametrize(
    "change",
    [
        {"measures": ["cka"]},
        {"seed": 1},
        {"groups": np.array(["big"] * 36 + ["tiny"] * 4, dtype=object)},
        {"groups": None},
        {"layers": ["l0", "l1"]},
        {"pairs": "all"},
        {"n_boot": 5},
        {"min_group_size": 2},
    ],
)
def test_any_change_of_options_misses(tmp_path, change):
    a, b = _pair()
    _compare(a, b, tmp_path)
    _, hit = _compare(a, b, tmp_path, **change)
    assert not hit


@pytest.mark.parametrize("attr", ["model_fingerprint", "data_fingerprint", "reduction"])
def test_another_model_data_or_reduction_misses(tmp_path, attr):
    a, b = _pair()
    _compare(a, b, tmp_path)
    setattr(b, attr, "other")
    assert not _compare(a, b, tmp_path)[1]


def test_names_are_not_part_of_the_key_but_label_the_rows(tmp_path):
    a, b = _pair()
    _compare(a, b, tmp_path)
    b.name = "renamed"
    table, hit = _compare(a, b, tmp_path)
    assert hit and {r["model_b"] for r in table.to_records()} == {"renamed"}


def test_measure_options_are_part_of_the_key_and_progress_is_not():
    a, b = _pair()
    assert similarity_key(a, b, progress=True)[0] == similarity_key(a, b, progress=False)[0]
    keys = {
        similarity_key(a, b, measures=["svcca"], options={"svcca": {"keep": k}})[0]
        for k in (0.9, 0.99)
    }
    assert len(keys) == 2


def test_plain_mappings_and_no_cache_dir_are_never_stored(tmp_path):
    a, b = _pair()
    assert similarity_key(dict(a), b) is None
    _, hit = _compare(dict(a), b, tmp_path)
    _, hit_again = _compare(dict(a), b, tmp_path)
    assert not hit and not hit_again and not (tmp_path / "similarity").exists()
    assert not _compare(a, b, None)[1] and not (tmp_path / "similarity").exists()


@pytest.mark.parametrize("damage", ["garbage", "wrong key", "no rows"])
def test_a_damaged_or_foreign_entry_is_recomputed_and_rewritten(tmp_path, damage):
    a, b = _pair()
    good, _ = _compare(a, b, tmp_path)
    (path,) = (tmp_path / "similarity").glob("*.json")
    entry = json.loads(path.read_text())
    if damage == "garbage":
        path.write_text("{not json")
    elif damage == "wrong key":
        entry["key"]["a"][0] = "someone else"
        path.write_text(json.dumps(entry))
    else:
        del entry["rows"]
        path.write_text(json.dumps(entry))
    again, hit = _compare(a, b, tmp_path)
    assert not hit and _rows(again) == _rows(good)
    assert _compare(a, b, tmp_path)[1]  # rewritten


def test_an_unwritable_cache_warns_and_still_returns_the_table(tmp_path, caplog):
    a, b = _pair()
    blocker = tmp_path / "similarity"
    blocker.write_text("a file where the folder should be")
    table, hit = _compare(a, b, tmp_path)
    assert not hit and len(table) > 0
    assert "could not store a similarity result" in caplog.text
