"""exemplar_grid writes a PNG of the right size; bad shapes are clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from repsim.errors import ShapeError
from repsim.fairness import exemplars
from repsim.report.exemplar_grid import exemplar_grid


def _setup():
    rng = np.random.default_rng(0)
    n = 12
    images = rng.random((n, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, n)
    dense = np.stack([y, y])
    comp = np.stack([y, y])
    comp[:, :6] = (y[:6] + 1) % 3
    return images, y, exemplars(dense_preds=dense, compressed_preds=comp)


def test_grid_png(tmp_path):
    images, y, ex = _setup()
    assert len(ex) == 6
    out = exemplar_grid(
        images=images,
        exemplars=ex,
        y_true=y,
        path=tmp_path / "g" / "x.png",
        max_images=4,
        ncols=2,
        dpi=50,
    )
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    arr = imread(out)
    assert abs(arr.shape[1] - 1.9 * 2 * 50) <= 1 and arr.shape[0] > 0
    flat = exemplar_grid(
        images=images.reshape(12, 64),
        exemplars=ex,
        y_true=y,
        path=tmp_path / "f.png",
        image_shape=(8, 8),
        class_names=["a", "b", "c"],
    )
    assert flat.exists()


def test_grid_mismatch(tmp_path):
    images, y, ex = _setup()
    with pytest.raises(ShapeError):
        exemplar_grid(images=images[:5], exemplars=ex, y_true=y[:5], path=tmp_path / "x.png")
