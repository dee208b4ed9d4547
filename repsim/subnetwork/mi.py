"""Mutual information between a bias label and a bias head's predictions (IRENE-style).

For one-hot bias labels ``b_s`` (``K`` values) and the bias head's softmax ``p_s`` on sample
``s`` with weights ``w_s`` (default 1), the empirical joint distribution is

    P(i, j) = sum_s w_s b_si p_sj / sum_s w_s,

with marginals ``P_b(i) = sum_j P(i, j)`` (the label frequencies) and
``P_p(j) = sum_i P(i, j)`` (the mean prediction). The estimate is

    I(b; b_hat) = sum_ij P(i, j) log(P(i, j) / (P_b(i) P_p(j)))  /  log K,

with ``0 log 0 = 0``, so it lies in ``[0, 1]``: 0 when the predictions do not depend on the
label, 1 when they recover a uniformly distributed label exactly. Differentiable in ``p``, it
is the information-removal term of Nahon et al. 2023 ("Unbiased Supervised Contrastive
Learning"/IRENE: "Information Removal at the bottleneck in Deep Neural Networks", BMVC 2022)
reused by Debiasing Surgeon (ECCV 2024) and BISE (CVPR 2026).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from repsim.errors import DataError, ShapeError


def mutual_information(
    bias: torch.Tensor | np.ndarray,
    probs: torch.Tensor | np.ndarray,
    *,
    weights: torch.Tensor | np.ndarray | None = None,
    normalise: bool = True,
) -> torch.Tensor:
    """Empirical mutual information between bias labels and predicted bias probabilities.

    Parameters
    ----------
    bias : array of int, shape [n]
        Bias label of each sample, in ``0..K-1``.
    probs : array, shape [n, K]
        The bias head's softmax on each sample (rows sum to 1).
    weights : array, shape [n], optional
        Non-negative sample weights of the empirical joint (default: equal).
    normalise : bool
        Divide by ``log K`` (default), giving a value in ``[0, 1]``.

    Returns
    -------
    torch.Tensor
        A scalar (differentiable with respect to ``probs``), float64 for numpy inputs.

    Raises
    ------
    ShapeError
        For mismatched lengths or label values outside ``0..K-1``.
    DataError
        For ``K < 2``, an empty batch or weights that are negative or all zero.
    """
    p = torch.as_tensor(probs)
    if p.ndim != 2:
        raise ShapeError(f"probs must be [n, K], got shape {tuple(p.shape)}.")
    n, k = p.shape
    b = torch.as_tensor(bias, device=p.device).long()
    if b.ndim != 1 or len(b) != n:
        raise ShapeError(
            f"bias must be 1-D with {n} entries (one per row of probs), got shape {tuple(b.shape)}."
        )
    if k < 2:
        raise DataError("Mutual information needs at least 2 bias values (K >= 2).")
    if n == 0:
        raise DataError("Mutual information of an empty batch is undefined.")
    if b.min() < 0 or b.max() >= k:
        raise ShapeError(f"bias labels must lie in 0..{k - 1} (one column of probs per value).")
    if weights is None:
        w = torch.ones(n, dtype=p.dtype, device=p.device)
    else:
        w = torch.as_tensor(weights, dtype=p.dtype, device=p.device)
        if w.shape != (n,) or bool((w < 0).any()) or not float(w.sum()) > 0:
            raise DataError("weights must be [n], non-negative and not all zero.")
    onehot = torch.nn.functional.one_hot(b, k).to(p.dtype)
    joint = (onehot * w[:, None]).T @ p / w.sum()  # [K, K]: P(b = i, b_hat = j)
    pb = joint.sum(1, keepdim=True)
    pp = joint.sum(0, keepdim=True)
    ratio = joint / (pb * pp).clamp_min(torch.finfo(p.dtype).tiny)
    terms = torch.where(
        joint > 0,
        joint * torch.log(ratio.clamp_min(torch.finfo(p.dtype).tiny)),
        torch.zeros_like(joint),
    )
    mi = terms.sum().clamp_min(0.0)
    return mi / math.log(k) if normalise else mi
