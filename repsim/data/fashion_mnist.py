"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) read from its original IDX files.

The loader looks for the four files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, plain or ``.gz``) in, in order: the
``root`` argument; ``$REPSIM_DATA/fashion-mnist`` and ``$REPSIM_DATA``; Debian's
``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``). Nothing is downloaded.

Groups are the classes, or with ``minority_classes`` the classes named there are cut to
``fraction`` of their training samples (groups minority/majority, as for ``digits-imbalanced``).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from repsim.data.base import GroupedData, GroupedDataset
from repsim.errors import DataError

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
SOURCE = "Xiao, Rasul & Vollgraf (2017), Fashion-MNIST, arXiv:1708.07747; MIT licence (Zalando SE)."
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzip) into an array, validating its header and length.

    Raises
    ------
    DataError
        If the file cannot be read, its magic number is wrong, or its size disagrees with its
        header (a truncated or corrupt file).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(
            f"Cannot read IDX file {path}: {exc}. Replace it with the original file."
        ) from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(
            f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'}). "
            "Replace it with the original file."
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: IDX header truncated. Replace it with the original file.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(
            f"{path}: IDX file is corrupt or truncated: header says shape {shape} "
            f"({expected} bytes) but the file holds {len(raw)} bytes. Replace it with the original."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _locate(root: str | os.PathLike | None) -> tuple[Path, dict[str, Path]]:
    if root is not None:
        dirs = [Path(root)]
    else:
        dirs = []
        env = os.environ.get("REPSIM_DATA")
        if env:
            dirs += [Path(env) / "fashion-mnist", Path(env)]
        dirs.append(DEBIAN_DIR)
    for d in dirs:
        found = {}
        for key, stem in FILES.items():
            for candidate in (d / (stem + ".gz"), d / stem):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(FILES):
            return d, found
    raise DataError(
        "Fashion-MNIST IDX files (" + ", ".join(FILES.values()) + ", plain or .gz) not found; "
        "looked in: " + "; ".join(str(d) for d in dirs) + ". Pass root=DIR, set REPSIM_DATA, "
        "or install Debian's package dataset-fashion-mnist."
    )


def load_fashion_mnist(
    *,
    root: str | os.PathLike | None = None,
    minority_classes: tuple[int, ...] | list[int] | None = None,
    fraction: float = 0.1,
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
) -> GroupedDataset:
    """Fashion-MNIST from IDX files, images ``[n, 1, 28, 28]`` scaled to [0, 1].

    Parameters
    ----------
    root : path, optional
        Directory with the four IDX files (see the module docstring for the search order).
    minority_classes : sequence of int, optional
        Classes cut to ``fraction`` of their training samples; groups become minority/majority.
    fraction : float
        Share of each minority class's training samples kept.
    train_size, test_size : int, optional
        Keep a stratified random subset of this many samples (for quick studies).
    seed : int
        Seed of the minority cut and the subsets.
    """
    directory, paths = _locate(root)
    arrays = {k: read_idx(p) for k, p in paths.items()}
    for s in ("train", "test"):
        imgs, labels = arrays[f"{s}_images"], arrays[f"{s}_labels"]
        if imgs.ndim != 3 or labels.ndim != 1 or len(imgs) != len(labels):
            raise DataError(
                f"Fashion-MNIST {s} files in {directory} disagree: images {imgs.shape}, "
                f"labels {labels.shape}."
            )
        if labels.size and labels.max() >= len(CLASS_NAMES):
            raise DataError(f"Fashion-MNIST {s} labels in {directory} exceed 9: corrupt file.")
    rng = np.random.default_rng(seed)
    n_train = len(arrays["train_labels"])
    index = {
        "train": np.arange(n_train),
        "test": np.arange(len(arrays["test_labels"])),
    }
    for s, size in (("train", train_size), ("test", test_size)):
        if size is not None:
            labels = arrays[f"{s}_labels"]
            if not 0 < size <= len(labels):
                raise DataError(f"{s}_size must lie in 1..{len(labels)}, got {size}.")
            per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(10)]
            take = np.concatenate([p[: int(round(size * len(p) / len(labels)))] for p in per_class])
            index[s] = np.sort(take)
    minority = None if minority_classes is None else sorted({int(c) for c in minority_classes})
    if minority is not None:
        if not minority or any(c < 0 or c > 9 for c in minority) or len(minority) >= 10:
            raise DataError(f"minority_classes must name 1 to 9 classes in 0..9, got {minority}.")
        if not 0 < fraction <= 1:
            raise DataError(f"fraction must lie in (0, 1], got {fraction}.")
        labels = arrays["train_labels"][index["train"]]
        keep = np.ones(len(labels), dtype=bool)
        for c in minority:
            rows = np.flatnonzero(labels == c)
            keep[rng.permutation(rows)[max(1, int(round(fraction * len(rows)))) :]] = False
        index["train"] = index["train"][keep]
    splits = {}
    for s in ("train", "test"):
        i = index[s]
        x = (arrays[f"{s}_images"][i].astype(np.float32) / 255.0)[:, None]
        y = arrays[f"{s}_labels"][i].astype(np.int64)
        ids = i.astype(np.int64) + (0 if s == "train" else n_train)
        attrs = {"class": y}
        names = {"class": CLASS_NAMES}
        active = "class"
        if minority is not None:
            attrs["minority"] = np.isin(y, minority).astype(np.int64)
            names["minority"] = ("majority", "minority")
            active = "minority"
        splits[s] = GroupedData(
            x=x,
            y=y,
            groups=attrs[active],
            sample_id=ids,
            group_names=names[active],
            class_names=CLASS_NAMES,
            group_attribute=active,
            attributes=attrs,
            attribute_names=names,
            name="fashion-mnist",
            split=s,
        )
    return GroupedDataset(
        name="fashion-mnist",
        train=splits["train"],
        test=splits["test"],
        description="Fashion-MNIST 28x28 grey images, 10 classes; groups are classes"
        + (f", classes {minority} cut to {fraction:g} (minority/majority)." if minority else "."),
        source=SOURCE,
        options={
            "root": str(directory),
            "minority_classes": minority,
            "fraction": fraction,
            "train_size": train_size,
            "test_size": test_size,
            "seed": seed,
        },
    )
