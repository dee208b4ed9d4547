"""Datasets built from scikit-learn's 8x8 handwritten digits (shipped with scikit-learn).

Three variants share one stratified train/test split (``split_seed``), so their test sets hold
the same images:

- ``digits``: the digits as they are; groups are the classes.
- ``digits-imbalanced``: chosen classes cut to a fraction of their *training* samples, the
  long-tail setting of Hooker et al. (2020) and Blakeney et al. (2021); the test split stays
  balanced. Groups: ``minority``/``majority`` (attribute ``minority``) and the class.
- ``digits-colour``: a synthetic Biased-MNIST (Bahng et al. 2020): the background is painted a
  colour that equals the label's colour with probability ``rho`` and is one of the nine other
  colours, uniformly, otherwise. Groups: ``aligned``/``conflicting`` (attribute ``bias``), the
  colour (attribute ``colour``, the bias label for subnetwork search) and the class.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from repsim.data.base import GroupedData, GroupedDataset
from repsim.errors import DataError

CLASS_NAMES = tuple(str(i) for i in range(10))
SOURCE = (
    "UCI Optical Recognition of Handwritten Digits (Alpaydin & Kaynak, 1998), as shipped by "
    "scikit-learn (sklearn.datasets.load_digits); CC BY 4.0."
)

#: Ten well-separated RGB colours in [0, 1], one per class (the bias colours of digits-colour).
COLOURS = np.array(
    [
        [0.90, 0.10, 0.10],  # red
        [0.10, 0.70, 0.10],  # green
        [0.10, 0.20, 0.90],  # blue
        [0.95, 0.85, 0.10],  # yellow
        [0.90, 0.10, 0.90],  # magenta
        [0.10, 0.85, 0.85],  # cyan
        [0.95, 0.50, 0.05],  # orange
        [0.50, 0.10, 0.70],  # purple
        [0.55, 0.35, 0.15],  # brown
        [0.50, 0.50, 0.50],  # grey
    ],
    dtype=np.float32,
)
COLOUR_NAMES = (
    "red",
    "green",
    "blue",
    "yellow",
    "magenta",
    "cyan",
    "orange",
    "purple",
    "brown",
    "grey",
)


def _base_split(
    test_fraction: float, val_fraction: float, split_seed: int
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Load the digits and return images ``[n,1,8,8]`` in [0,1], labels and split indices."""
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must lie in (0, 1), got {test_fraction}.")
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must lie in [0, 1), got {val_fraction}.")
    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    idx = np.arange(len(y))
    train_idx, test_idx = train_test_split(
        idx, test_size=test_fraction, random_state=split_seed, stratify=y
    )
    parts = {"test": np.sort(test_idx)}
    if val_fraction > 0:
        train_idx, val_idx = train_test_split(
            train_idx, test_size=val_fraction, random_state=split_seed + 1, stratify=y[train_idx]
        )
        parts["val"] = np.sort(val_idx)
    parts["train"] = np.sort(train_idx)
    return x, y, parts


def _split(
    name: str,
    split: str,
    x: np.ndarray,
    y: np.ndarray,
    ids: np.ndarray,
    attributes: dict[str, np.ndarray],
    attribute_names: dict[str, tuple[str, ...]],
    active: str,
) -> GroupedData:
    return GroupedData(
        x=x,
        y=y,
        groups=attributes[active],
        sample_id=ids.astype(np.int64),
        group_names=attribute_names[active],
        class_names=CLASS_NAMES,
        group_attribute=active,
        attributes=attributes,
        attribute_names=attribute_names,
        name=name,
        split=split,
    )


def load_digits_plain(
    *, test_fraction: float = 0.3, val_fraction: float = 0.0, split_seed: int = 0
) -> GroupedDataset:
    """scikit-learn's 8x8 digits with the classes as groups.

    Parameters
    ----------
    test_fraction : float
        Share of the 1,797 images held out for test (stratified by class).
    val_fraction : float
        Share of the remaining training images held out for validation (0: no val split).
    split_seed : int
        Seed of the stratified split; the default gives the split every study uses.
    """
    x, y, parts = _base_split(test_fraction, val_fraction, split_seed)
    names = {"class": CLASS_NAMES}
    splits = {
        s: _split("digits", s, x[i], y[i], i, {"class": y[i]}, names, "class")
        for s, i in parts.items()
    }
    return GroupedDataset(
        name="digits",
        train=splits["train"],
        test=splits["test"],
        val=splits.get("val"),
        description="scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes); "
        "groups are the classes.",
        source=SOURCE,
        options={
            "test_fraction": test_fraction,
            "val_fraction": val_fraction,
            "split_seed": split_seed,
        },
    )


def load_digits_imbalanced(
    *,
    minority_classes: tuple[int, ...] | list[int] = (3, 5, 8),
    fraction: float = 0.1,
    seed: int = 0,
    test_fraction: float = 0.3,
    val_fraction: float = 0.0,
    split_seed: int = 0,
) -> GroupedDataset:
    """Digits with ``minority_classes`` cut to ``fraction`` of their training samples.

    The cut keeps ``max(1, round(fraction * n_c))`` training samples of each minority class ``c``,
    chosen with ``seed``; the validation and test splits are not cut, so the test set stays
    balanced (the long-tail protocol of Hooker et al. 2020, "Characterising Bias in Compressed
    Models", and Blakeney et al. 2021, "Simon Says").

    Parameters
    ----------
    minority_classes : sequence of int
        Classes to cut (each in 0..9).
    fraction : float
        Share of each minority class's training samples kept, in (0, 1].
    seed : int
        Seed choosing which minority samples are kept.
    test_fraction, val_fraction, split_seed
        As for ``digits``.
    """
    minority = sorted({int(c) for c in minority_classes})
    if not minority or any(c < 0 or c > 9 for c in minority) or len(minority) >= 10:
        raise DataError(
            f"minority_classes must name 1 to 9 distinct classes in 0..9, got {minority_classes}."
        )
    if not 0 < fraction <= 1:
        raise DataError(f"fraction must lie in (0, 1], got {fraction}.")
    x, y, parts = _base_split(test_fraction, val_fraction, split_seed)
    rng = np.random.default_rng(seed)
    train = parts["train"]
    keep = np.ones(len(train), dtype=bool)
    for c in minority:
        rows = np.flatnonzero(y[train] == c)
        n_keep = max(1, int(round(fraction * len(rows))))
        drop = rng.permutation(rows)[n_keep:]
        keep[drop] = False
    parts["train"] = train[keep]
    is_minority = np.isin(y, minority).astype(np.int64)
    names = {"minority": ("majority", "minority"), "class": CLASS_NAMES}
    splits = {
        s: _split(
            "digits-imbalanced",
            s,
            x[i],
            y[i],
            i,
            {"minority": is_minority[i], "class": y[i]},
            names,
            "minority",
        )
        for s, i in parts.items()
    }
    return GroupedDataset(
        name="digits-imbalanced",
        train=splits["train"],
        test=splits["test"],
        val=splits.get("val"),
        description=(
            f"Digits with classes {minority} cut to {fraction:g} of their training samples "
            "(long-tail setting); test split balanced. Groups: minority/majority, and class."
        ),
        source=SOURCE,
        options={
            "minority_classes": minority,
            "fraction": fraction,
            "seed": seed,
            "test_fraction": test_fraction,
            "val_fraction": val_fraction,
            "split_seed": split_seed,
        },
    )


def colourise(
    images: np.ndarray, labels: np.ndarray, rho: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Paint each image's background with a colour that matches its label w.p. ``rho``.

    With probability ``rho`` the colour index is the label; otherwise it is drawn uniformly from
    the nine other colours (so ``rho = 0.1`` makes colour independent of the label). A pixel of
    intensity ``v`` becomes ``v * white + (1 - v) * colour``.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        RGB images ``[n, 3, H, W]`` in [0, 1] and the colour index of each image.
    """
    n = len(labels)
    aligned = rng.random(n) < rho
    offset = rng.integers(1, 10, size=n)
    colour = np.where(aligned, labels, (labels + offset) % 10).astype(np.int64)
    v = images[:, 0:1]  # [n,1,H,W]
    rgb = v + (1.0 - v) * COLOURS[colour][:, :, None, None]
    return rgb.astype(np.float32), colour


def load_digits_colour(
    *,
    rho: float = 0.99,
    test_rho: float = 0.1,
    val_rho: float | None = None,
    seed: int = 0,
    test_fraction: float = 0.3,
    val_fraction: float = 0.15,
    split_seed: int = 0,
) -> GroupedDataset:
    """Synthetic colour-biased digits (Biased-MNIST construction of Bahng et al. 2020).

    The training split's background colour matches the label with probability ``rho``; the test
    split uses ``test_rho`` (0.1: colour independent of the label, an unbiased test); the
    validation split uses ``val_rho`` (default ``rho``: it is biased like training data, as a
    practitioner's held-out data would be). The data are synthetic: the shapes are real
    handwritten digits, the colours are painted by this function.

    Parameters
    ----------
    rho : float
        Probability, in [0.1, 1], that a training image's colour matches its label.
    test_rho, val_rho : float
        The same for the test and validation splits.
    seed : int
        Seed of the colour draws.
    test_fraction, val_fraction, split_seed
        As for ``digits``.
    """
    val_rho = rho if val_rho is None else val_rho
    for key, value in (("rho", rho), ("test_rho", test_rho), ("val_rho", val_rho)):
        if not 0.0 <= value <= 1.0:
            raise DataError(f"{key} must lie in [0, 1], got {value}.")
    x, y, parts = _base_split(test_fraction, val_fraction, split_seed)
    rhos = {"train": rho, "val": val_rho, "test": test_rho}
    names = {
        "bias": ("aligned", "conflicting"),
        "colour": COLOUR_NAMES,
        "class": CLASS_NAMES,
    }
    splits = {}
    stream = {"train": 0, "val": 1, "test": 2}
    for s, i in parts.items():
        rng = np.random.default_rng([seed, stream[s]])
        rgb, colour = colourise(x[i], y[i], rhos[s], rng)
        attrs = {"bias": (colour != y[i]).astype(np.int64), "colour": colour, "class": y[i]}
        splits[s] = _split("digits-colour", s, rgb, y[i], i, attrs, names, "bias")
    return GroupedDataset(
        name="digits-colour",
        train=splits["train"],
        test=splits["test"],
        val=splits.get("val"),
        description=(
            f"SYNTHETIC colour-biased digits: background colour matches the label with "
            f"probability rho={rho:g} in training, {val_rho:g} in validation and "
            f"{test_rho:g} in test. Groups: bias-aligned/bias-conflicting; bias label: colour."
        ),
        source=SOURCE + " Colouring after Bahng et al. 2020 (ReBias), synthetic.",
        options={
            "rho": rho,
            "test_rho": test_rho,
            "val_rho": val_rho,
            "seed": seed,
            "test_fraction": test_fraction,
            "val_fraction": val_fraction,
            "split_seed": split_seed,
        },
    )
