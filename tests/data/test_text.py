"""The synthetic spurious-text task: deterministic, padded, grouped, with its shortcut."""

from __future__ import annotations

import numpy as np
import pytest

from repsim.data import load_dataset
from repsim.data.text import MARKER, STYLE_B, VOCAB_SIZE, WORDS
from repsim.errors import DataError


def test_spurious_text_is_deterministic_and_padded():
    a, b = (
        load_dataset("spurious-text", n_train=300, n_test=200),
        load_dataset("spurious-text", n_train=300, n_test=200),
    )
    assert a.fingerprint() == b.fingerprint()
    assert load_dataset("spurious-text", n_train=300, n_test=200, seed=1).fingerprint() != (
        a.fingerprint()
    )
    tr = a.train
    ids, mask = tr.x["input_ids"], tr.x["attention_mask"]
    assert ids.shape == (300, 24) and tr.input_keys == ("input_ids", "attention_mask")
    assert (ids[:, 0] == 1).all() and ids.max() < VOCAB_SIZE
    lengths = mask.sum(1)
    assert lengths.min() >= 8 and lengths.max() <= 24
    assert (ids[mask == 0] == 0).all() and (ids[mask == 1] != 0).all()
    # right padding: the real tokens come first
    assert all((mask[i, : lengths[i]] == 1).all() for i in range(len(mask)))
    assert not set(tr.sample_id) & set(a.test.sample_id)


def test_groups_labels_and_the_shortcut():
    ds = load_dataset("spurious-text", n_train=4000, n_test=10)
    tr = ds.train
    assert tr.group_names == ("A", "B") and tr.group_attribute == "dialect"
    assert abs(np.mean(tr.groups == 1) - 0.25) < 0.03
    ids, y, g = tr.x["input_ids"], tr.y, tr.groups
    has_marker = (ids == MARKER).any(1)
    np.testing.assert_array_equal(has_marker, tr.attributes["marker"] == 1)
    a_pos, a_neg = has_marker[(g == 0) & (y == 1)].mean(), has_marker[(g == 0) & (y == 0)].mean()
    b_pos, b_neg = has_marker[(g == 1) & (y == 1)].mean(), has_marker[(g == 1) & (y == 0)].mean()
    assert a_pos > 0.7 and a_neg < 0.2  # the shortcut holds in dialect A ...
    assert abs(b_pos - b_neg) < 0.1  # ... and not in dialect B
    style = np.isin(ids, STYLE_B).any(1)
    np.testing.assert_array_equal(style, g == 1)
    # the label is the majority polarity, by one word, in dialect A's words
    pos = np.isin(ids, WORDS[0][0]).sum(1)
    neg = np.isin(ids, WORDS[0][1]).sum(1)
    np.testing.assert_array_equal((pos - neg)[g == 0], np.where(y[g == 0] == 1, 1, -1))
    assert tr.with_groups("marker").group_names == ("absent", "present")


def test_bad_options_are_refused():
    with pytest.raises(DataError, match="share_b"):
        load_dataset("spurious-text", share_b=1.0)
    with pytest.raises(DataError, match="min_len"):
        load_dataset("spurious-text", min_len=30)
    with pytest.raises(DataError, match="max_len"):
        load_dataset("spurious-text", min_len=4, max_len=6)
