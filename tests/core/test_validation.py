"""The one home of array checks: repsim._core.validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repsim._core.rows import common_rows, iter_rows
from repsim._core.validation import (
    as_array,
    as_like,
    as_matrix,
    as_pair,
    as_vector,
    check_consistent_length,
    is_torch,
    n_rows,
    to_numpy,
)
from repsim.errors import DataError, InsufficientDataError, NonFiniteError, ShapeError


class _ShapeOnly:
    """An array-like that only has a shape (a zarr array is read no further for the check)."""

    shape = (7, 3)

    def __array__(self, *args, **kwargs):  # pragma: no cover - must not be called
        raise AssertionError("the data was read")


def test_to_numpy_converts_tensors_lists_and_rejects_none():
    t = torch.arange(6.0).reshape(2, 3)
    out = to_numpy(t, "t")
    assert isinstance(out, np.ndarray) and np.array_equal(out, t.numpy())
    assert to_numpy([1, 2], "x", dtype=float).dtype == np.float64
    with pytest.raises(DataError, match="'y_true' is required"):
        to_numpy(None, "y_true")


def test_is_torch_and_as_like():
    t = torch.ones(2)
    a = np.ones(2)
    assert is_torch(t) and not is_torch(a) and not is_torch([1.0])
    assert isinstance(as_like(a, t), torch.Tensor)
    assert isinstance(as_like(t, a), np.ndarray)
    assert as_like(a, None) is a and as_like(t, t) is t


def test_check_consistent_length_returns_n_and_names_the_mismatch():
    assert check_consistent_length(np.zeros((5, 2)), np.zeros(5), [0] * 5) == 5
    assert check_consistent_length(_ShapeOnly(), np.zeros((7, 1))) == 7
    with pytest.raises(ShapeError, match=r"y_true, y_pred and groups hold 3, 3 and 4 samples"):
        check_consistent_length([0] * 3, [0] * 3, [0] * 4, names=("y_true", "y_pred", "groups"))
    with pytest.raises(ShapeError, match="the arrays hold 2 and 1"):
        check_consistent_length(np.zeros(2), np.zeros(1))
    with pytest.raises(ShapeError, match="no arrays"):
        check_consistent_length()
    assert n_rows([1, 2, 3]) == 3


def test_rows_helpers_use_the_same_check():
    a, b = np.arange(10), np.arange(10) * 2
    assert common_rows([a, b]) == 10
    assert [len(x) for x, _ in iter_rows([a, b], 4)] == [4, 4, 2]
    with pytest.raises(ShapeError, match="samples"):
        common_rows([a, b[:-1]])


def test_as_vector_and_as_array():
    v = as_vector(torch.tensor([1, 2, 3]), "y", 3)
    assert isinstance(v, np.ndarray) and v.tolist() == [1, 2, 3]
    with pytest.raises(ShapeError, match=r"'y' must be 1-D \(one entry per sample\)"):
        as_vector(np.zeros((3, 1)), "y")
    with pytest.raises(ShapeError, match=r"'g' has 2 entries but there are 3 samples \(as in y\)"):
        as_vector([0, 1], "g", 3, against="y")
    s = as_array([[0.1, 0.9], [0.4, 0.6]], "y_score", ndim=(1, 2), n=2, dtype=float, finite=True)
    assert s.shape == (2, 2)
    with pytest.raises(ShapeError, match="1-D or 2-D"):
        as_array(np.zeros((2, 2, 2)), "y_score", ndim=(1, 2))
    with pytest.raises(NonFiniteError, match="'y_score' holds NaN"):
        as_array([0.1, np.nan], "y_score", dtype=float, finite=True)


def test_as_matrix_float64_finite_2d():
    X = np.arange(6, dtype=np.float32).reshape(3, 2) + 1000
    M = as_matrix(X)
    assert M.dtype == np.float64 and np.array_equal(M, X.astype(np.float64))
    T = as_matrix(torch.ones(3, 2, dtype=torch.float32))
    assert isinstance(T, torch.Tensor) and T.dtype == torch.float64
    assert isinstance(as_matrix(torch.ones(3, 2), allow_torch=False), np.ndarray)
    with pytest.raises(ShapeError, match=r"reshape\(-1, 1\)"):
        as_matrix(np.zeros(4))
    with pytest.raises(ShapeError, match="flatten or pool"):
        as_matrix(np.zeros((2, 3, 4)))
    with pytest.raises(ShapeError, match="no features"):
        as_matrix(np.zeros((4, 0)))
    with pytest.raises(ShapeError, match="complex"):
        as_matrix(np.zeros((2, 2), dtype=complex))
    with pytest.raises(ShapeError, match="dtype"):
        as_matrix(np.array([["a", "b"]]))
    bad = np.zeros((5, 3))
    bad[3, 1] = np.inf
    with pytest.raises(NonFiniteError, match="1 NaN or infinite value.*row 3, column 1; re-run"):
        as_matrix(bad, hint="re-run")
    with pytest.raises(NonFiniteError, match="row 3, column 1"):
        as_matrix(torch.as_tensor(bad))


def test_as_pair_aligns_kinds_and_checks_rows():
    X, Y = np.ones((4, 2)), torch.ones(4, 3)
    Xm, Ym = as_pair(X, Y)
    assert isinstance(Xm, torch.Tensor) and Xm.dtype == torch.float64 and Xm.device == Ym.device
    with pytest.raises(ShapeError, match="X and Y hold 4 and 3 samples"):
        as_pair(np.ones((4, 2)), np.ones((3, 2)))
    with pytest.raises(InsufficientDataError, match="CKA needs at least 5 samples, got 4"):
        as_pair(np.ones((4, 2)), np.ones((4, 2)), min_n=5, what="CKA")
