"""A SYNTHETIC grouped text task with a spurious token, for transformer studies (offline).

``spurious-text`` (:func:`load_spurious_text`): two-class "sentiment" of token sequences
written in two dialects. Everything is generated from a seed; nothing is downloaded.

**Vocabulary** (``vocab_size = 128``): ``0`` padding, ``1`` ``[CLS]`` (always position 0),
``3`` the *marker* token, ``10..89`` neutral words, ``90..97``/``98..105`` the positive/negative
words of dialect A, ``106..111``/``112..117`` those of dialect B, ``120..127`` B's function
words.

**A sample** of label ``y`` and dialect ``d``: ``[CLS]`` and ``L - 1`` words, ``L`` uniform in
``[min_len, max_len]`` (raised, when needed, to hold every cue word), right-padded with ``0`` to ``max_len`` (``attention_mask`` 1 on the
``L`` real tokens). Among the words are ``k`` sentiment words of the label's polarity and
``k - 1`` of the other (``k`` uniform in 1..3), so the label is the majority polarity by one
word; the rest are neutral words, in shuffled order. Dialect A uses its own sentiment words.
Dialect B uses its own with probability ``1 - flip`` and otherwise dialect A's word of the
*opposite* polarity, and each B sample holds two of B's function words (``120..127``): to read
a B sample the model must notice the dialect and flip what A's words mean.

**The spurious token.** In dialect A the marker appears with probability ``marker_pos`` in
positive and ``marker_neg`` in negative samples (train and test alike), a shortcut that
predicts the label; in dialect B it appears with probability ``marker_b`` whatever the label.

**Groups.** ``dialect`` (``A``, the majority, ``B`` with share ``share_b``) is the default group
attribute; ``marker`` (``absent``/``present``) is the second. Dialect B is rare and has its own
sentiment words, the setting where compression is said to forget the long tail first
(Hooker et al. 2020).
"""

from __future__ import annotations

import numpy as np

from repsim.data.base import GroupedData, GroupedDataset
from repsim.errors import DataError

__all__ = ["MARKER", "VOCAB_SIZE", "load_spurious_text"]

VOCAB_SIZE = 128
PAD, CLS, MARKER = 0, 1, 3
NEUTRAL = np.arange(10, 90)
WORDS = {  # dialect -> (positive words, negative words)
    0: (np.arange(90, 98), np.arange(98, 106)),
    1: (np.arange(106, 112), np.arange(112, 118)),
}
STYLE_B = np.arange(120, 128)  # function words only dialect B uses
_MAX_WORDS = 8  # cue words of one sample: 3 + 2 sentiment, 2 style, 1 marker
SOURCE = "Synthetic (repsim.data.text); generated from a seed, no external data."


def _word(dialect: int, positive: bool, flip: float, rng: np.random.Generator) -> int:
    """A sentiment word: dialect B's own, or (probability ``flip``) A's of the other polarity."""
    if dialect and rng.random() < flip:
        return int(rng.choice(WORDS[0][1] if positive else WORDS[0][0]))
    return int(rng.choice(WORDS[dialect][0] if positive else WORDS[dialect][1]))


def _samples(
    n: int,
    rng: np.random.Generator,
    *,
    share_b: float,
    min_len: int,
    max_len: int,
    marker_pos: float,
    marker_neg: float,
    marker_b: float,
    flip: float,
) -> dict[str, np.ndarray]:
    dialect = (rng.random(n) < share_b).astype(np.int64)
    y = rng.integers(0, 2, size=n)
    ids = np.zeros((n, max_len), dtype=np.int64)
    mask = np.zeros((n, max_len), dtype=np.int64)
    marker = np.zeros(n, dtype=np.int64)
    for i in range(n):
        drawn = int(rng.integers(min_len, max_len + 1))
        b = int(dialect[i])
        positive = y[i] == 1

        k = int(rng.integers(1, 4))
        words = [_word(b, positive, flip, rng) for _ in range(k)]
        words += [_word(b, not positive, flip, rng) for _ in range(k - 1)]
        if b:
            words += list(rng.choice(STYLE_B, size=2))
        p = (marker_pos if positive else marker_neg) if b == 0 else marker_b
        marker[i] = int(rng.random() < p)
        if marker[i]:
            words.append(MARKER)
        length = max(drawn, len(words) + 1)  # room for every cue word
        fill = length - 1 - len(words)
        words += list(rng.choice(NEUTRAL, size=max(fill, 0)))
        ids[i, 0] = CLS
        ids[i, 1:length] = rng.permutation(np.asarray(words, dtype=np.int64))
        mask[i, :length] = 1
    return {"input_ids": ids, "attention_mask": mask, "y": y, "dialect": dialect, "marker": marker}


def _split(a: dict[str, np.ndarray], ids: np.ndarray, split: str) -> GroupedData:
    return GroupedData(
        x={"input_ids": a["input_ids"], "attention_mask": a["attention_mask"]},
        y=a["y"],
        groups=a["dialect"],
        sample_id=ids,
        group_names=("A", "B"),
        class_names=("negative", "positive"),
        group_attribute="dialect",
        attributes={"dialect": a["dialect"], "marker": a["marker"]},
        attribute_names={"dialect": ("A", "B"), "marker": ("absent", "present")},
        name="spurious-text",
        split=split,
    )


def load_spurious_text(
    n_train: int = 2000,
    n_test: int = 1000,
    *,
    share_b: float = 0.25,
    min_len: int = 8,
    max_len: int = 24,
    marker_pos: float = 0.8,
    marker_neg: float = 0.1,
    marker_b: float = 0.3,
    flip: float = 0.3,
    seed: int = 0,
) -> GroupedDataset:
    """The ``spurious-text`` dataset (see the module docstring): train and test splits.

    Parameters
    ----------
    n_train, n_test : int
        Samples per split (sample ids ``0..n_train-1`` and ``n_train..n_train+n_test-1``).
    share_b : float
        Probability that a sample is written in dialect B (the minority), in ``(0, 1)``.
    min_len, max_len : int
        Range of sequence lengths including ``[CLS]``; sequences are padded to ``max_len``.
    marker_pos, marker_neg, marker_b : float
        Probability of the marker token in dialect A's positive and negative samples, and in
        dialect B's samples.
    flip : float
        Probability that a sentiment word of dialect B is one of dialect A's words of the
        *opposite* polarity.
    seed : int
        Seed of the generator.

    Raises
    ------
    DataError
        Sizes or probabilities out of range.
    """
    if n_train < 2 or n_test < 2:
        raise DataError(f"n_train and n_test must be at least 2, got {n_train}, {n_test}.")
    if not 0 < share_b < 1:
        raise DataError(f"share_b must lie in (0, 1), got {share_b}.")
    if not 2 <= min_len <= max_len or max_len < _MAX_WORDS + 1:
        raise DataError(
            f"need 2 <= min_len <= max_len and max_len >= {_MAX_WORDS + 1} (room for [CLS] and "
            f"up to {_MAX_WORDS} cue words), got {min_len}, {max_len}."
        )
    probs = (
        ("marker_pos", marker_pos),
        ("marker_neg", marker_neg),
        ("marker_b", marker_b),
        ("flip", flip),
    )
    for name, p in probs:
        if not 0 <= p <= 1:
            raise DataError(f"{name} must lie in [0, 1], got {p}.")
    rng = np.random.default_rng(seed)
    opts = dict(
        share_b=share_b,
        min_len=min_len,
        max_len=max_len,
        marker_pos=marker_pos,
        marker_neg=marker_neg,
        marker_b=marker_b,
        flip=flip,
    )
    train = _samples(n_train, rng, **opts)
    test = _samples(n_test, rng, **opts)
    return GroupedDataset(
        name="spurious-text",
        train=_split(train, np.arange(n_train, dtype=np.int64), "train"),
        test=_split(test, np.arange(n_train, n_train + n_test, dtype=np.int64), "test"),
        description=(
            "SYNTHETIC two-class sentiment of token sequences in two dialects (A, and a rare B "
            "with its own sentiment words); a marker token predicts the label in dialect A "
            "only. Inputs: input_ids and attention_mask, right-padded."
        ),
        source=SOURCE,
        options={"n_train": n_train, "n_test": n_test, **opts, "seed": seed},
    )
