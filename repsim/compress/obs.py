"""Optimal-brain-surgeon layer solvers: SparseGPT (pruning) and GPTQ (quantisation).

Both compress one layer ``W`` (``[rows, cols]``: one row per output unit, columns the input
features) so as to keep the layer's output on calibration inputs ``X``, i.e. to minimise
``||W X^T - W' X^T||_2^2``, whose Hessian in each row is ``H = 2 X^T X / N``
(:class:`repsim.compress.calibrate.LayerStats`). Columns are processed left to right; when
column ``c`` is fixed (pruned or quantised) from ``w_c`` to ``w'_c``, the optimal brain
surgeon update of the columns not yet fixed is (Hassibi & Stork 1993; Frantar & Alistarh 2022)

    err   = (w_c - w'_c) / [H^-1]_cc
    W_:,F -= err · [H^-1]_c,F          (F = the columns after c)

using the rows of the upper Cholesky factor of ``H^-1`` (which hold the inverse Hessians of
the shrinking sets of remaining columns, so no re-inversion is needed), as both papers do.

Shared choices, as in the reference implementations:

- **Dead inputs.** Columns with ``H_jj = 0`` (an input never nonzero on the calibration data)
  get ``H_jj = 1`` and their weights are set to 0.
- **Damping.** ``H += λ I`` with ``λ = percdamp · mean(diag H)`` (default ``percdamp =
  0.01``) before inverting.
- **Lazy batch updates.** Columns are processed in blocks of ``blocksize`` (default 128);
  inside a block the update is applied column by column, to the rest of the matrix once per
  block (``W_:,after -= Err_block · [H^-1]_block,after``); the result is the same as
  column-by-column updates, with fewer memory passes.

Computation is in float64 (the papers use float32 on GPU; on CPU for small layers float64 costs
little and removes Cholesky failures of ill-conditioned ``H``).

**SparseGPT** (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately
Pruned in One-Shot"). Unstructured: at the start of each block, the weights pruned in it are
those of smallest ``w^2 / [H^-1]_cc^2`` over the whole block (adaptive mask selection). The
paper takes every weight at or below the ``s``-quantile of the block; repsim prunes exactly
``round(s·rows·i2) - round(s·rows·i1)`` weights in the block of columns ``[i1, i2)``, so each
layer ends at exactly ``round(s · size)`` zeros. N:M (``n`` kept of every ``m``): at the first
column of each group of ``m``, the ``m - n`` weights of each row with smallest
``w^2 / [H^-1]_cc^2`` over the group are pruned.

**GPTQ** (Frantar, Ashkboos, Hoefler & Alistarh 2022, "GPTQ: Accurate Post-Training
Quantization for Generative Pre-trained Transformers"). Each column is rounded to the grid of
its group; a group's grid (scale, zero point) is computed when its first column is reached,
from the group's weights as updated so far. Departure: the reference code reads the group's
weights from the matrix that does not yet hold the updates made inside the current block, so
for groups that start inside a block it uses partly stale weights; repsim makes the block size a
multiple of the group size (groups never straddle blocks) and reads the updated weights.
No activation reordering (``act_order``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from repsim.errors import ConfigError, NonFiniteError

__all__ = ["gptq_matrix", "inverse_hessian_factor", "sparsegpt_matrix"]


def inverse_hessian_factor(
    w: torch.Tensor, h: torch.Tensor, percdamp: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero dead columns of ``w``, damp ``h``; return ``(w, U)``, ``U`` upper Cholesky of ``H^-1``.

    ``H`` is damped first (``H + λI``, see the module docstring).
    """
    if not 0 <= percdamp:
        raise ConfigError(f"percdamp must be >= 0, got {percdamp}.")
    w = w.to(torch.float64).clone(memory_format=torch.contiguous_format)
    h = h.to(torch.float64).clone(memory_format=torch.contiguous_format)
    if not torch.isfinite(h).all():
        raise NonFiniteError("The calibration Hessian holds NaN or infinite values.")
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    damp = percdamp * torch.mean(torch.diag(h))
    idx = torch.arange(h.shape[0])
    h[idx, idx] += damp
    try:
        lower = torch.linalg.cholesky(h)
        hinv = torch.cholesky_inverse(lower)
        upper = torch.linalg.cholesky(hinv, upper=True)
    except RuntimeError as exc:  # torch.linalg.LinAlgError derives from RuntimeError
        raise NonFiniteError(
            f"The damped calibration Hessian is not positive definite ({exc}); raise percdamp."
        ) from exc
    return w, upper


def _check_blocksize(blocksize: int) -> None:
    if not isinstance(blocksize, int) or blocksize < 1:
        raise ConfigError(f"blocksize must be a positive integer, got {blocksize!r}.")


def sparsegpt_matrix(
    w: torch.Tensor,
    h: torch.Tensor,
    *,
    sparsity: float = 0.0,
    nm: tuple[int, int] | None = None,
    keep: torch.Tensor | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT on one layer: the reconstructed weights and the keep mask.

    Parameters
    ----------
    w : torch.Tensor
        ``[rows, cols]`` weights (rows = output units).
    h : torch.Tensor
        ``[cols, cols]`` Hessian ``2 X^T X / N``.
    sparsity : float
        Share of weights pruned (unstructured; ignored with ``nm``).
    nm : (int, int), optional
        Keep ``n`` of every ``m`` consecutive weights of each row.
    keep : torch.Tensor, optional
        Existing keep mask (``False`` entries are pruned first and stay pruned).
    blocksize, percdamp
        Lazy-update block size and relative damping.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        float64 weights ``[rows, cols]`` (zero where pruned) and the bool keep mask.
    """
    _check_blocksize(blocksize)
    rows, cols = w.shape
    if nm is not None:
        n, m = nm
        blocksize = max(m, blocksize // m * m)  # groups never straddle blocks
    w, hinv = inverse_hessian_factor(w, h, percdamp)
    keep = torch.ones_like(w, dtype=torch.bool) if keep is None else keep.to(torch.bool).clone()
    pruned = torch.zeros_like(w, dtype=torch.bool)
    total = rows * cols
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        w1 = w[:, i1:i2].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        d = torch.diag(hinv1)
        mask1 = torch.zeros(w1.shape, dtype=torch.bool)  # True = prune
        forced = ~keep[:, i1:i2]
        if nm is None:
            k = round(sparsity * rows * i2) - round(sparsity * rows * i1)
            score = (w1**2 / d.reshape(1, -1) ** 2).masked_fill(forced, -1.0).reshape(-1)
            order = torch.argsort(score, stable=True)[:k]
            mask1.view(-1)[order] = True
            mask1 |= forced
        for i in range(count):
            col = w1[:, i]
            if nm is not None and i % nm[1] == 0:
                m = nm[1]
                score = w1[:, i : i + m] ** 2 / d[i : i + m].reshape(1, -1) ** 2
                score = score.masked_fill(forced[:, i : i + m], -1.0)
                order = torch.argsort(score, dim=1, stable=True)[:, : m - nm[0]]
                mask1[:, i : i + m].scatter_(1, order, True)
                mask1[:, i : i + m] |= forced[:, i : i + m]
            q = col.clone()
            q[mask1[:, i]] = 0.0
            q1[:, i] = q
            err = (col - q) / hinv1[i, i]
            w1[:, i:] -= err.unsqueeze(1) @ hinv1[i, i:].unsqueeze(0)
            err1[:, i] = err
        w[:, i1:i2] = q1
        pruned[:, i1:i2] = mask1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    assert int(pruned.sum()) <= total
    return w, ~pruned


def gptq_matrix(
    w: torch.Tensor,
    h: torch.Tensor,
    fit: Callable[[torch.Tensor], Callable[[torch.Tensor], torch.Tensor]],
    *,
    group_size: int | None = None,
    keep: torch.Tensor | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> torch.Tensor:
    """GPTQ on one layer: the quantised (dequantised float64) weights ``[rows, cols]``.

    Parameters
    ----------
    w, h
        Weights ``[rows, cols]`` and Hessian ``[cols, cols]``.
    fit : callable
        ``fit(W_group [rows, g]) -> q`` returns the function rounding one column ``[rows]`` to
        the group's grid (per row scale and zero point). Without groups it is fitted once on
        the whole (dead-column-zeroed) matrix.
    group_size : int, optional
        Columns per quantisation group (``None``: one group per row).
    keep : torch.Tensor, optional
        Keep mask of a pruned layer: pruned weights are set to 0 (not rounded) and their
        error compensated like any other, so they stay zero.
    blocksize, percdamp
        Lazy-update block size and relative damping.
    """
    _check_blocksize(blocksize)
    rows, cols = w.shape
    w, hinv = inverse_hessian_factor(w, h, percdamp)
    if group_size is not None:
        blocksize = group_size if group_size >= blocksize else blocksize // group_size * group_size
    keep = None if keep is None else keep.to(torch.bool)
    if keep is not None:
        w = w * keep
    quant = fit(w) if group_size is None else None
    out = torch.zeros_like(w)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            c = i1 + i
            if group_size is not None and c % group_size == 0:
                quant = fit(w1[:, i : i + group_size])
            col = w1[:, i]
            assert quant is not None
            q = quant(col)
            if keep is not None:
                q = q * keep[:, c]
            out[:, c] = q
            err = (col - q) / hinv1[i, i]
            w1[:, i:] -= err.unsqueeze(1) @ hinv1[i, i:].unsqueeze(0)
            err1[:, i] = err
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return out
