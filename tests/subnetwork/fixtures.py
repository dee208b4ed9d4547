"""A stored vanilla CNN for tests that must not depend on training code.

``data/cnn_w4_rho09.safetensors``: a ``SmallCNN(width=4, hidden=16)`` trained 3 epochs on
digits-colour (rho = 0.9) with repsim 6b3f4b6, stored so that golden masks do not change when
the training loop does.
"""

from __future__ import annotations

import functools
from pathlib import Path

from safetensors.torch import load_file

from repsim.data.digits import load_digits_colour
from repsim.models.cnn import SmallCNN

DATA = Path(__file__).parent / "data"


@functools.lru_cache(maxsize=1)
def digits():
    """digits-colour, rho = 0.9 for training, an unbiased validation split (val_rho = 0.1)."""
    return load_digits_colour(rho=0.9, val_rho=0.1)


def fixture_cnn() -> SmallCNN:
    """The stored vanilla CNN, in eval mode."""
    model = SmallCNN((3, 8, 8), 10, width=4, hidden=16)
    model.load_state_dict(load_file(DATA / "cnn_w4_rho09.safetensors"))
    return model.eval()
