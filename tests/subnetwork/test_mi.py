import math

import numpy as np
import pytest
import torch

from repsim.errors import DataError, ShapeError
from repsim.subnetwork.mi import mutual_information


def _reference_mi(b, p, w=None):
    """Plain-loop MI of the weighted joint, in nats."""
    n, k = p.shape
    w = np.ones(n) if w is None else np.asarray(w, float)
    joint = np.zeros((k, k))
    for s in range(n):
        joint[b[s]] += w[s] * p[s]
    joint /= w.sum()
    pb, pp = joint.sum(1), joint.sum(0)
    total = 0.0
    for i in range(k):
        for j in range(k):
            if joint[i, j] > 0:
                total += joint[i, j] * math.log(joint[i, j] / (pb[i] * pp[j]))
    return total


def test_zero_for_predictions_independent_of_the_label():
    rng = np.random.default_rng(0)
    b = rng.integers(0, 4, 200)
    p = np.tile(rng.dirichlet(np.ones(4)), (200, 1))  # same prediction for everyone
    assert abs(float(mutual_information(b, p))) < 1e-12
    # independent random predictions: close to 0, shrinking with n
    big = rng.integers(0, 4, 200_000)
    q = rng.dirichlet(np.ones(4), size=200_000)
    assert float(mutual_information(big, q)) < 1e-3


def test_perfect_predictions_reach_log_k():
    for k in (2, 3, 10):
        b = np.repeat(np.arange(k), 5)
        p = np.eye(k)[b]
        assert float(mutual_information(b, p, normalise=False)) == pytest.approx(math.log(k))
        assert float(mutual_information(b, p)) == pytest.approx(1.0)


def test_matches_reference_and_is_bounded():
    rng = np.random.default_rng(1)
    for k in (2, 5):
        b = rng.integers(0, k, 300)
        logits = rng.normal(size=(300, k)) + 2.0 * np.eye(k)[b]
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        w = rng.random(300)
        mi = float(mutual_information(b, p, weights=w, normalise=False))
        assert mi == pytest.approx(_reference_mi(b, p, w), rel=1e-10)
        assert 0 <= mi <= math.log(k)
        norm = float(mutual_information(b, p, weights=w))
        assert norm == pytest.approx(mi / math.log(k))


def test_differentiable():
    rng = np.random.default_rng(2)
    b = torch.from_numpy(rng.integers(0, 3, 50))
    logits = torch.randn(
        50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True
    )
    mutual_information(b, torch.softmax(logits, 1)).backward()
    assert torch.isfinite(logits.grad).all()


def test_bad_input():
    p = np.full((4, 2), 0.5)
    with pytest.raises(ShapeError, match="4 entries"):
        mutual_information(np.array([0, 1, 0]), p)
    with pytest.raises(ShapeError, match="0..1"):
        mutual_information(np.array([0, 1, 2, 0]), p)
    with pytest.raises(DataError, match="K >= 2"):
        mutual_information(np.zeros(4, int), np.ones((4, 1)))
    with pytest.raises(DataError, match="weights"):
        mutual_information(np.array([0, 1, 0, 1]), p, weights=np.zeros(4))
