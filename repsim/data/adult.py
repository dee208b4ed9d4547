"""UCI Adult census income with its real sensitive attributes (sex, race, age band).

Preprocessing (the common one, e.g. in fairlearn and AIF360 examples):

1. read ``adult.data`` (train, 32,561 rows) and ``adult.test`` (test, 16,281 rows; its first line
   is a comment and its labels end in ``.``); strip whitespace;
2. drop rows with a missing value (``?``): 30,162 train and 15,060 test rows remain;
3. label: ``income`` is ``>50K`` (1) or ``<=50K`` (0);
4. continuous columns (age, fnlwgt, education-num, capital-gain, capital-loss, hours-per-week)
   standardised with the mean and standard deviation of the *training* rows;
5. categorical columns one-hot encoded with the categories seen in the *training* rows (a test
   category never seen in training, e.g. none in practice, encodes as all zeros);
6. sensitive attributes stay in the features unless ``drop_sensitive=True`` (then sex and race
   are dropped from the inputs; age is continuous and stays).

Groups: ``sex`` (Female, Male; the default), ``race`` (five values), ``age`` (bands 17-24,
25-44, 45-64, 65+). Sample ids are the row numbers in the original files, test rows numbered
after the 32,561 train rows.
"""

from __future__ import annotations

import gzip
import io
import os
from importlib import resources
from pathlib import Path

import numpy as np

from repsim.data.base import GroupedData, GroupedDataset
from repsim.errors import DataError

COLUMNS = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
)
CONTINUOUS = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
CATEGORICAL = tuple(c for c in COLUMNS[:-1] if c not in CONTINUOUS)
SENSITIVE = ("sex", "race")
AGE_BANDS = ((17, 24), (25, 44), (45, 64), (65, 200))
AGE_BAND_NAMES = ("17-24", "25-44", "45-64", "65+")
N_TRAIN_ROWS = 32561
SOURCE = (
    "Becker, B. & Kohavi, R. (1996). Adult [Dataset]. UCI Machine Learning Repository. "
    "https://doi.org/10.24432/C5XW20. Licence CC BY 4.0; a copy ships inside repsim."
)


def _find_file(root: Path | None, stem: str) -> Path | None:
    for candidate in (stem, stem + ".gz"):
        if root is not None and (root / candidate).is_file():
            return root / candidate
    return None


def _candidate_dirs(root: str | os.PathLike | None) -> list[tuple[str, Path]]:
    if root is not None:
        return [("argument", Path(root))]
    dirs = []
    env = os.environ.get("REPSIM_DATA")
    if env:
        dirs += [("REPSIM_DATA", Path(env) / "adult"), ("REPSIM_DATA", Path(env))]
    dirs.append(("package", Path(str(resources.files("repsim.data") / "files"))))
    return dirs


def _read_rows(path: Path) -> list[list[str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            text = io.TextIOWrapper(fh, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise DataError(
            f"Cannot read Adult file {path}: {exc}. Replace it with the UCI original."
        ) from exc
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("|"):
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != len(COLUMNS):
            raise DataError(
                f"Malformed Adult file {path}, line {lineno}: expected {len(COLUMNS)} "
                f"comma-separated fields, found {len(fields)}. Replace it with the UCI original."
            )
        rows.append(fields)
    return rows


def _columns(rows: list[list[str]]) -> dict[str, np.ndarray]:
    arr = np.array(rows, dtype=object)
    return {c: arr[:, i] for i, c in enumerate(COLUMNS)}


def load_adult(
    *, root: str | os.PathLike | None = None, drop_sensitive: bool = False
) -> GroupedDataset:
    """Load UCI Adult with sex, race and age-band groups (see the module docstring).

    Parameters
    ----------
    root : path, optional
        Directory holding ``adult.data`` and ``adult.test`` (plain or ``.gz``). Default: the
        ``adult/`` folder under ``$REPSIM_DATA`` if set, else the copy shipped in the package.
    drop_sensitive : bool
        Drop sex and race from the input features (they stay as group labels).
    """
    looked = []
    paths = None
    for origin, d in _candidate_dirs(root):
        looked.append(f"{d} ({origin})")
        train_p, test_p = _find_file(d, "adult.data"), _find_file(d, "adult.test")
        if train_p and test_p:
            paths = (train_p, test_p)
            break
    if paths is None:
        raise DataError(
            "Adult files adult.data[.gz] and adult.test[.gz] not found; looked in: "
            + "; ".join(looked)
            + ". Pass root=DIR or set REPSIM_DATA to a folder holding them."
        )
    train_rows, test_rows = _read_rows(paths[0]), _read_rows(paths[1])
    n_train_raw = len(train_rows)
    raw = {"train": _columns(train_rows), "test": _columns(test_rows)}
    ids = {
        "train": np.arange(n_train_raw, dtype=np.int64),
        "test": n_train_raw + np.arange(len(test_rows), dtype=np.int64),
    }
    for s, cols in raw.items():
        complete = np.ones(len(cols["age"]), dtype=bool)
        for c in COLUMNS:
            complete &= cols[c] != "?"
        raw[s] = {c: v[complete] for c, v in cols.items()}
        ids[s] = ids[s][complete]

    tr = raw["train"]
    try:
        cont = {s: np.stack([raw[s][c].astype(np.float64) for c in CONTINUOUS], 1) for s in raw}
    except ValueError as exc:
        raise DataError(f"Adult file holds a non-numeric value in a numeric column: {exc}") from exc
    mean, std = cont["train"].mean(0), cont["train"].std(0)
    std[std == 0] = 1.0
    categorical = [c for c in CATEGORICAL if not (drop_sensitive and c in SENSITIVE)]
    categories = {c: sorted(set(tr[c].tolist())) for c in categorical}
    feature_names = list(CONTINUOUS) + [f"{c}={v}" for c in categorical for v in categories[c]]

    races = tuple(sorted(set(tr["race"].tolist())))
    attr_names = {"sex": ("Female", "Male"), "race": races, "age": AGE_BAND_NAMES}
    splits = {}
    for s, cols in raw.items():
        parts = [(cont[s] - mean) / std]
        for c in categorical:
            parts.append(cols[c][:, None] == np.array(categories[c], dtype=object)[None, :])
        x = np.concatenate([p.astype(np.float32) for p in parts], axis=1)
        y = np.array([v.rstrip(".") == ">50K" for v in cols["income"]], dtype=np.int64)
        age = cols["age"].astype(np.float64)
        band = np.zeros(len(age), dtype=np.int64)
        for b, (lo, _hi) in enumerate(AGE_BANDS):
            band[age >= lo] = b
        sex = np.array([attr_names["sex"].index(v) for v in cols["sex"]], dtype=np.int64)
        race = np.array([races.index(v) for v in cols["race"]], dtype=np.int64)
        attrs = {"sex": sex, "race": race, "age": band}
        splits[s] = GroupedData(
            x=x,
            y=y,
            groups=sex,
            sample_id=ids[s],
            group_names=attr_names["sex"],
            class_names=("<=50K", ">50K"),
            group_attribute="sex",
            attributes=attrs,
            attribute_names=attr_names,
            name="adult",
            split=s,
        )
    return GroupedDataset(
        name="adult",
        train=splits["train"],
        test=splits["test"],
        description=(
            "UCI Adult census income (>50K vs <=50K), rows with missing values dropped, "
            f"{len(feature_names)} features (continuous standardised on train, categoricals "
            "one-hot). Groups: sex (default), race, age band."
        ),
        source=SOURCE,
        options={
            "root": None if root is None else str(root),
            "drop_sensitive": drop_sensitive,
            "files": [str(p) for p in paths],
            "feature_names": feature_names,
        },
    )
