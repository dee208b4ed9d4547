"""Compression-identified exemplars: samples on which dense and compressed populations disagree.

Hooker et al. (2019), "What Do Compressed Deep Neural Networks Forget?", call a sample a
pruning-identified exemplar (PIE) when the modal label of a population of compressed models
differs from the modal label of a population of dense models; Hooker et al. (2020),
"Characterising Bias in Compressed Models", generalise the name to compression-identified
exemplars (CIE) and offer the alternative used here as ``method="taxicab"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from repsim._core.validation import as_vector
from repsim.errors import ConfigError
from repsim.fairness._validate import as_population, encode, encode_groups, safe_div
from repsim.fairness.table import MetricTable


@dataclass
class Exemplars:
    """Result of :func:`exemplars`.

    Attributes
    ----------
    indices : ndarray of int
        Row indices of the exemplars, most divergent first (taxicab distance descending, ties
        by index).
    sample_ids : ndarray
        ``sample_id[indices]`` (the indices themselves without ``sample_id``).
    scores : ndarray of float, shape ``[n]``
        Taxicab distance of every sample (in ``[0, 2]``).
    dense_mode, compressed_mode : ndarray, shape ``[n]``
        Modal label of each population per sample (ties to the smallest label).
    method : str
        ``"modal"`` or ``"taxicab"``.
    summary : dict
        ``n_exemplars``, ``share_of_test``, and with ``y_true``: ``share_of_compressed_errors``
        (share of all compressed models' errors that fall on exemplars),
        ``dense_accuracy_exemplars``/``_rest``, ``compressed_accuracy_exemplars``/``_rest``
        (population means; NaN when a side is empty).
    by_group : MetricTable or None
        With ``groups``: per group ``n``, ``n_exemplars``, ``exemplar_rate`` (share of the group
        flagged), ``share_of_exemplars``, ``share_of_test``, ``over_representation``
        (``share_of_exemplars / share_of_test``).
    """

    indices: np.ndarray
    sample_ids: np.ndarray
    scores: np.ndarray
    dense_mode: np.ndarray
    compressed_mode: np.ndarray
    method: str
    summary: dict[str, float]
    by_group: MetricTable | None

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        s = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.summary.items()
        )
        return f"Exemplars(method={self.method!r}, {s})"


def label_histograms(preds: np.ndarray, k: int) -> np.ndarray:
    """Normalised label histograms ``[n, K]`` of a population's votes.

    Normalised label histograms ``[n, K]``: share of the population's models voting each
    label, from integer-coded predictions ``[n_models, n]``.
    """
    m, n = preds.shape
    flat = np.arange(n)[None, :] * k + preds
    return np.bincount(flat.ravel(), minlength=n * k).reshape(n, k) / m


def modal_labels(hist: np.ndarray) -> np.ndarray:
    """Mode per row of ``hist``; ties go to the smallest label (``argmax`` takes the first)."""
    return np.argmax(hist, axis=1)


def exemplars(
    *,
    dense_preds: Any,
    compressed_preds: Any,
    method: Literal["modal", "taxicab"] = "modal",
    fraction: float = 0.1,
    sample_id: Any = None,
    y_true: Any = None,
    groups: Any = None,
    group_names: Sequence[str] | None = None,
    labels: Sequence[Any] | None = None,
) -> Exemplars:
    """Find compression-identified exemplars (PIE/CIE) of two model populations.

    Parameters
    ----------
    dense_preds, compressed_preds : array-like, ``[n]`` or ``[n_models, n]``
        Predicted labels of the dense and the compressed population.
    method : {"modal", "taxicab"}
        ``"modal"`` (Hooker et al. 2019): exemplar iff ``mode(dense) != mode(compressed)``,
        each mode over the population's votes for the sample, ties broken to the smallest
        label. ``"taxicab"`` (Hooker et al. 2020): score ``d_i = sum_k |h^d_ik - h^c_ik|``, the
        L1 distance between the normalised label histograms ``h`` (share of models voting
        ``k``), and select the top ``ceil(fraction * n)`` samples by ``d_i`` (ties by index),
        keeping only samples with ``d_i > 0``.
    fraction : float
        Share of samples selected by ``"taxicab"``, in (0, 1]; unused by ``"modal"``.
    sample_id : array-like, optional
        Stable sample ids reported in ``sample_ids``.
    y_true : array-like, optional
        True labels: enables the error and accuracy summary.
    groups, group_names : optional
        Group per sample: enables the ``by_group`` composition table.
    labels : sequence, optional
        All class labels (default: those appearing in the predictions and ``y_true``).

    Returns
    -------
    Exemplars
    """
    d_raw = as_population(dense_preds, "dense_preds")
    n = d_raw.shape[1]
    c_raw = as_population(compressed_preds, "compressed_preds", n)
    parts = [d_raw.ravel(), c_raw.ravel()]
    yt_raw = None
    if y_true is not None:
        yt_raw = as_vector(y_true, "y_true", n, against="dense_preds")
        parts.append(yt_raw)
    lab = (
        np.unique(np.concatenate(parts)) if labels is None else np.unique(np.asarray(list(labels)))
    )
    k = len(lab)
    dense = encode(d_raw.ravel(), lab, "dense_preds").reshape(d_raw.shape)
    comp = encode(c_raw.ravel(), lab, "compressed_preds").reshape(c_raw.shape)
    hd = label_histograms(dense, k)
    hc = label_histograms(comp, k)
    scores = np.abs(hd - hc).sum(1)
    mode_d = modal_labels(hd)
    mode_c = modal_labels(hc)
    order = np.lexsort((np.arange(n), -scores))  # score descending, then index
    if method == "modal":
        flagged = mode_d != mode_c
        idx = order[flagged[order]]
    elif method == "taxicab":
        if not 0 < fraction <= 1:
            raise ConfigError(f"fraction must lie in (0, 1], got {fraction!r}.")
        top = order[: int(np.ceil(fraction * n))]
        idx = top[scores[top] > 0]
    else:
        raise ConfigError(f"method must be 'modal' or 'taxicab', got {method!r}.")
    sid = (
        np.arange(n)
        if sample_id is None
        else as_vector(sample_id, "sample_id", n, against="dense_preds")
    )
    is_ex = np.zeros(n, dtype=bool)
    is_ex[idx] = True

    summary: dict[str, float] = {"n_exemplars": int(len(idx)), "share_of_test": len(idx) / n}
    if yt_raw is not None:
        yt = encode(yt_raw, lab, "y_true")
        err_c = comp != yt[None, :]
        correct_d = dense == yt[None, :]
        summary["share_of_compressed_errors"] = float(safe_div(err_c[:, is_ex].sum(), err_c.sum()))
        for name, ok in (("dense", correct_d), ("compressed", ~err_c)):
            summary[f"{name}_accuracy_exemplars"] = (
                float(ok[:, is_ex].mean()) if is_ex.any() else float("nan")
            )
            summary[f"{name}_accuracy_rest"] = (
                float(ok[:, ~is_ex].mean()) if (~is_ex).any() else float("nan")
            )
    by_group = None
    if groups is not None:
        g, names = encode_groups(groups, n, group_names)
        rows = []
        total_ex = max(len(idx), 0)
        for j, name in enumerate(names):
            m = g == j
            n_ex = int(is_ex[m].sum())
            share_ex = n_ex / total_ex if total_ex else float("nan")
            share_test = float(m.sum()) / n
            rows.append(
                {
                    "group": name,
                    "n": int(m.sum()),
                    "n_exemplars": n_ex,
                    "exemplar_rate": n_ex / int(m.sum()),
                    "share_of_exemplars": share_ex,
                    "share_of_test": share_test,
                    "over_representation": share_ex / share_test if total_ex else float("nan"),
                }
            )
        by_group = MetricTable(rows)
    return Exemplars(
        indices=idx.astype(np.int64),
        sample_ids=sid[idx],
        scores=scores,
        dense_mode=lab[mode_d],
        compressed_mode=lab[mode_c],
        method=method,
        summary=summary,
        by_group=by_group,
    )


__all__ = ["Exemplars", "exemplars", "label_histograms", "modal_labels"]
