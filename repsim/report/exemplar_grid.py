"""``exemplar_grid``: the top compression-identified exemplars as a PNG for human audit.

Hooker et al. (2019, 2020) propose compression-identified exemplars as a small, tractable set
for a domain expert to inspect; this draws them with their true label and the dense and
compressed modal predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from repsim._core.validation import as_vector, check_consistent_length, to_numpy
from repsim.errors import DataError, ShapeError
from repsim.fairness.exemplars import Exemplars


def _as_image(x: np.ndarray, image_shape: Sequence[int] | None) -> np.ndarray:
    """One sample as ``[H, W]`` or ``[H, W, 3]`` in [0, 1] for ``imshow``."""
    if image_shape is not None:
        x = x.reshape(tuple(image_shape))
    if x.ndim == 3 and x.shape[0] in (1, 3) and x.shape[-1] not in (1, 3):
        x = np.moveaxis(x, 0, -1)  # channels first -> channels last
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim not in (2, 3):
        raise ShapeError(
            f"cannot draw a sample of shape {x.shape} as an image; pass image_shape=(H, W) or "
            "(C, H, W)."
        )
    x = x.astype(float)
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def exemplar_grid(
    *,
    images: Any,
    exemplars: Exemplars,
    y_true: Any,
    path: str | Path,
    max_images: int = 25,
    ncols: int = 5,
    class_names: Sequence[str] | None = None,
    image_shape: Sequence[int] | None = None,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Draw the top exemplars as an image grid and save it as a PNG.

    Parameters
    ----------
    images : array-like, ``[n, ...]``
        The inputs in the same sample order as the predictions (e.g. ``GroupedData.x``):
        ``[n, H, W]``, ``[n, C, H, W]``, ``[n, H, W, C]``, or flat with ``image_shape``.
    exemplars : Exemplars
        Result of :func:`repsim.fairness.exemplars`; its ``indices`` are drawn in order (most
        divergent first).
    y_true : array-like, ``[n]``
        True labels.
    path : str or Path
        Output PNG path (parent folders are created).
    max_images, ncols : int
        How many exemplars at most, and grid columns.
    class_names : sequence of str, optional
        Names of the labels (indexed by label value).
    image_shape : sequence of int, optional
        Shape to reshape flat inputs to.
    title : str, optional
        Figure title; default names the method and the count.
    dpi : int
        Resolution.

    Returns
    -------
    Path
        The written file. Each panel is titled ``true / dense / compressed`` (modal labels).
    """
    imgs = to_numpy(images, "images")
    n = len(imgs)
    yt = as_vector(y_true, "y_true", n, against="images")
    check_consistent_length(imgs, exemplars.dense_mode, names=("images", "the exemplars"))
    if max_images < 1 or ncols < 1:
        raise DataError("max_images and ncols must be positive.")
    idx = np.asarray(exemplars.indices)[:max_images]

    def name(v: Any) -> str:
        if class_names is not None:
            return str(class_names[int(v)])
        return str(v.item() if hasattr(v, "item") else v)

    k = max(len(idx), 1)
    cols = min(ncols, k)
    rows = int(np.ceil(k / cols))
    fig = Figure(figsize=(1.9 * cols, 2.1 * rows + 0.5), dpi=dpi)
    FigureCanvasAgg(fig)
    if len(idx) == 0:
        ax = fig.add_subplot(1, 1, 1)
        ax.axis("off")
        ax.text(0.5, 0.5, "no exemplars", ha="center", va="center")
    for i, j in enumerate(idx):
        ax = fig.add_subplot(rows, cols, i + 1)
        img = _as_image(imgs[j], image_shape)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        wrong = exemplars.compressed_mode[j] != yt[j]
        ax.set_title(
            f"#{j}  true {name(yt[j])}\ndense {name(exemplars.dense_mode[j])} / "
            f"comp {name(exemplars.compressed_mode[j])}",
            fontsize=8,
            color="firebrick" if wrong else "black",
        )
    fig.suptitle(
        title or f"Top {len(idx)} compression-identified exemplars ({exemplars.method})",
        fontsize=10,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


__all__ = ["exemplar_grid"]
