"""timm models end to end (skipped where timm is not installed: it needs torchvision)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")

from repsim.compress import prune, quantize  # noqa: E402
from repsim.data import as_grouped  # noqa: E402
from repsim.models import from_builder, load_model, save_model  # noqa: E402
from repsim.train import evaluate, fit  # noqa: E402


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    g = rng.integers(0, 2, 32)
    return as_grouped(x, y, g)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model_name": "resnet18", "num_classes": 3},
        {
            "model_name": "vit_tiny_patch16_224",
            "num_classes": 3,
            "img_size": 32,
            "patch_size": 8,
            "depth": 2,
        },
    ],
)
def test_timm_fit_prune_quantize_save_load(tmp_path, images, kwargs):
    net = from_builder("timm:create_model", pretrained=False, seed=0, **kwargs)
    fit(net, images, epochs=1, batch_size=16, seed=0)
    pruned, rec = prune(net, 0.5, method="wanda", data=images.subset(slice(0, 8)))
    assert rec.sparsity == pytest.approx(0.5, abs=0.01)
    q, qrec = quantize(pruned, bits=4, group_size=64)
    assert qrec.layers
    save_model(q, tmp_path / "m")
    back = load_model(tmp_path / "m")
    np.testing.assert_array_equal(evaluate(back, images).logits, evaluate(q, images).logits)
    assert torch.isfinite(torch.from_numpy(evaluate(back, images).logits)).all()
