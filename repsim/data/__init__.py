"""Built-in grouped datasets, all offline, and the :class:`GroupedData` contract.

Use :func:`load_dataset` with a name from :func:`list_datasets`; turn your own data (a torch
``Dataset``/``DataLoader``, arrays plus group labels, tokenizer outputs) into a
:class:`GroupedData` with :func:`as_grouped`, or read a file of arrays with :func:`load_npz`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from repsim.data.adapt import as_grouped, group_labels
from repsim.data.adult import load_adult
from repsim.data.base import GroupedData, GroupedDataset, input_tensors, pack_inputs
from repsim.data.digits import load_digits_colour, load_digits_imbalanced, load_digits_plain
from repsim.data.fashion_mnist import load_fashion_mnist, read_idx
from repsim.data.npz import load_npz, split_grouped
from repsim.data.text import load_spurious_text
from repsim.errors import DataError, did_you_mean

DATASETS: dict[str, Callable[..., GroupedDataset]] = {
    "digits": load_digits_plain,
    "digits-imbalanced": load_digits_imbalanced,
    "digits-colour": load_digits_colour,
    "adult": load_adult,
    "fashion-mnist": load_fashion_mnist,
    "spurious-text": load_spurious_text,
}

SUMMARIES = {
    "digits": "scikit-learn 8x8 digits; groups = classes",
    "digits-imbalanced": "digits with minority classes cut in training (long tail); "
    "groups = minority/majority, class",
    "digits-colour": "SYNTHETIC colour-biased digits (Biased-MNIST); "
    "groups = bias-aligned/conflicting",
    "adult": "UCI Adult census income (shipped copy); groups = sex, race, age band",
    "fashion-mnist": "Fashion-MNIST from IDX files (path / REPSIM_DATA); groups = classes",
    "spurious-text": "SYNTHETIC token sequences, two dialects and a spurious marker token; "
    "groups = dialect, marker",
}


def list_datasets() -> dict[str, str]:
    """Names of the built-in datasets with a one-line summary each."""
    return dict(SUMMARIES)


def load_dataset(name: str, **options: object) -> GroupedDataset:
    """Load a built-in dataset by name.

    Parameters
    ----------
    name : str
        One of :func:`list_datasets`.
    **options
        Keyword options of that dataset's loader (e.g. ``rho`` for ``digits-colour``).

    Raises
    ------
    DataError
        For an unknown name or an option the loader does not take.
    """
    if name not in DATASETS:
        raise DataError(
            f"Unknown dataset {name!r}; built-in datasets are {sorted(DATASETS)}."
            + did_you_mean(name, DATASETS)
        )
    loader = DATASETS[name]
    params = inspect.signature(loader).parameters
    for key in options:
        if key not in params:
            raise DataError(
                f"Dataset {name!r} has no option {key!r}; its options are {sorted(params)}."
                + did_you_mean(key, params)
            )
    return loader(**options)


__all__ = [
    "DATASETS",
    "GroupedData",
    "GroupedDataset",
    "as_grouped",
    "group_labels",
    "input_tensors",
    "list_datasets",
    "load_dataset",
    "load_npz",
    "pack_inputs",
    "read_idx",
    "split_grouped",
]
