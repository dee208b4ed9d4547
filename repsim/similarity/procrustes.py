"""Orthogonal Procrustes distance (Ding, Denain, Steinhardt 2021).

References
----------
Schoenemann (1966). A generalized solution of the orthogonal Procrustes problem. Psychometrika.
Ding, Denain, Steinhardt (2021). Grounding Representation Similarity with Statistical Testing.
NeurIPS.
Williams, Kunz, Kornblith, Linderman (2021). Generalized Shape Metrics on Neural
Representations. NeurIPS. (The angular form.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from repsim._core.validation import as_pair, is_torch
from repsim.similarity._center import center, too_few, warn
from repsim.similarity.cca import svd

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]


def _nuclear_norm_cross(Xc: Any, Yc: Any) -> float:
    """``||X^T Y||_*`` (sum of singular values), through the cheaper of two routes.

    When ``n < d``, each side is replaced by the ``n x n`` triangular factor of a QR of its
    transpose (``X^T = Q R``), which keeps the singular values of ``X^T Y``.
    """
    n = Xc.shape[0]
    lin = torch.linalg if is_torch(Xc) else np.linalg
    if n < min(Xc.shape[1], Yc.shape[1]):
        Xc = lin.qr(Xc.T)[1].T if is_torch(Xc) else np.linalg.qr(Xc.T, mode="r").T
        Yc = lin.qr(Yc.T)[1].T if is_torch(Yc) else np.linalg.qr(Yc.T, mode="r").T
    M = Xc.T @ Yc
    s = lin.svdvals(M) if is_torch(M) else svd(M, compute_uv=False)
    return float(s.sum())


def procrustes(X: Any, Y: Any) -> float:
    """Orthogonal Procrustes distance between centered, unit-Frobenius-norm representations.

    With ``X``, ``Y`` column-centered and scaled to ``||X||_F = ||Y||_F = 1`` (Ding et al. 2021),

    ``d(X, Y) = min_{Q^T Q = I} ||X - Y Q||_F^2 = 2 - 2 ||X^T Y||_*``

    (Schoenemann 1966; ``||.||_*`` is the nuclear norm; when ``d_x != d_y`` the narrower side is
    zero-padded, which leaves the formula unchanged). In ``[0, 2]``; 0 means identical up to
    rotation, reflection, translation and isotropic scaling, so *smaller is more similar*. The
    angular metric of Williams et al. (2021) is ``arccos(||X^T Y||_*) = arccos(1 - d/2)``.

    Parameters
    ----------
    X, Y : array-like
        ``[n, d_x]``, ``[n, d_y]`` activations of the same samples; float64 after centering.

    Returns
    -------
    float
        The squared Procrustes distance; NaN with a warning if a side has zero variance.
    """
    Xm, Ym = as_pair(X, Y, min_n=1, what="Procrustes distance")
    if Xm.shape[0] < 3:  # with 2 samples the distance is 0 by construction
        return too_few("Procrustes distance", Xm.shape[0], 3)
    Xc, Yc = center(Xm), center(Ym)
    nx, ny = float((Xc * Xc).sum()) ** 0.5, float((Yc * Yc).sum()) ** 0.5
    if nx == 0 or ny == 0:
        side = "X" if nx == 0 else "Y"
        warn(
            f"Procrustes distance is undefined: {side} has zero variance (every unit constant); "
            "returning NaN."
        )
        return float("nan")
    nuc = _nuclear_norm_cross(Xc / nx, Yc / ny)
    return float(min(max(2.0 - 2.0 * nuc, 0.0), 2.0))
