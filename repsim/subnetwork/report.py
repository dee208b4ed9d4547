"""Compare a vanilla model, its found subnetwork and magnitude pruning at the same sparsity.

For each of the three models the report gives task accuracy on the unbiased and (when given)
the biased test split, accuracy on bias-aligned and bias-conflicting test samples, the accuracy
of a fresh linear bias probe on the bottleneck feature (how much bias information the
representation still carries), sparsity, and, through the shared :mod:`repsim.fairness` and
:mod:`repsim.similarity` stages when they are installed, CEV/SDE of each compressed model against
the vanilla one and per-layer CKA to the vanilla model.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from repsim.compress import Mask, prune
from repsim.compress import prunable_parameters as compress_prunable
from repsim.data.base import GroupedData
from repsim.errors import MaskError
from repsim.subnetwork.gates import capture_input, classifier_name
from repsim.subnetwork.search import _bias_array, apply_mask, cell_weights, sparsity_report
from repsim.train import evaluate


def magnitude_mask(model: nn.Module, names: list[str], sparsity: float) -> Mask:
    """Global magnitude (L1) pruning mask over the parameters ``names`` at ``sparsity``.

    Keeps the ``N - round(sparsity * N)`` weights of largest ``|w|`` over all ``N`` weights of
    the listed parameters (Han et al. 2015; :func:`repsim.compress.prune` with
    ``method="magnitude", scope="global"``, every other prunable layer excluded).
    """
    wanted = {n.rsplit(".", 1)[0] for n in names}
    candidates, _ = compress_prunable(model, exclude_classifier=False)
    exclude = [n for n, _m in candidates if n not in wanted]
    pruned, _ = prune(
        model,
        sparsity,
        method="magnitude",
        scope="global",
        exclude=exclude,
        exclude_classifier=False,
    )
    mask = Mask.from_model(pruned)
    if set(mask) != set(names):
        raise MaskError(f"Magnitude pruning covered {sorted(mask)}, expected {sorted(names)}.")
    return mask


@torch.no_grad()
def bottleneck_features(
    model: nn.Module, data: GroupedData, bottleneck: str | None = None, batch_size: int = 512
) -> np.ndarray:
    """The bottleneck feature (input of the classifier) on ``data``, ``[n, d]`` float64."""
    model.eval()
    name = bottleneck or classifier_name(model)
    out = []
    with capture_input(model, name) as store:
        for start in range(0, len(data), batch_size):
            model(torch.from_numpy(data.x[start : start + batch_size]))
            feats = store.pop()
            out.append(feats.reshape(len(feats), -1).double())
    return torch.cat(out).numpy()


def bias_probe_accuracy(
    train_feats: np.ndarray,
    train_bias: np.ndarray,
    train_y: np.ndarray,
    test_feats: np.ndarray,
    test_bias: np.ndarray,
) -> float:
    """Accuracy of a linear bias probe trained with (class, bias)-balanced weights.

    Multinomial logistic regression on standardised features, trained on the training split
    with the weights of :func:`~repsim.subnetwork.search.cell_weights` (power 1, so class and
    bias are independent in the weighted training set) and scored on ``test``.
    """
    scaler = StandardScaler().fit(train_feats)
    clf = LogisticRegression(max_iter=2000, C=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(
            scaler.transform(train_feats),
            train_bias,
            sample_weight=cell_weights(train_y, train_bias, 1.0),
        )
    return float(np.mean(clf.predict(scaler.transform(test_feats)) == test_bias))


def _group_acc(pred: np.ndarray, y: np.ndarray, groups: np.ndarray, code: int) -> float:
    sel = groups == code
    if not sel.any():
        warnings.warn(f"No test sample in group {code}; its accuracy is NaN.", stacklevel=3)
        return math.nan
    return float(np.mean(pred[sel] == y[sel]))


def compare_subnetwork(
    vanilla: nn.Module,
    mask: Mapping[str, torch.Tensor],
    *,
    train: GroupedData,
    test: GroupedData,
    bias_labels: str,
    biased_test: GroupedData | None = None,
    conflict_attribute: str | None = "bias",
) -> dict[str, Any]:
    """Vanilla vs found subnetwork vs magnitude pruning at the same sparsity.

    Parameters
    ----------
    vanilla : torch.nn.Module
    mask : mapping
        The subnetwork's ``{parameter name: bool tensor}``.
    train : GroupedData
        Training split (fits the bias probes).
    test : GroupedData
        The unbiased test split (for digits-colour, ``test_rho = 0.1``).
    bias_labels : str
        Attribute holding the bias label (``"colour"``, ``"sex"``).
    biased_test : GroupedData, optional
        The same test images with the training bias (e.g. ``test_rho = rho``).
    conflict_attribute : str, optional
        Attribute marking bias-aligned (0) / bias-conflicting (1) samples, when the dataset
        has one.

    Returns
    -------
    dict
        ``rows``: one dict per model with its metrics; ``shift``: CEV/SDE per compressed model
        (classes with an undefined relative change left out, listed in ``classes_used``);
        ``cka``: per-layer CKA to vanilla (mean-pooled activations); ``notes``.
    """
    sparsity = sparsity_report(mask)["overall"]
    models = {
        "vanilla": vanilla,
        "subnetwork": apply_mask(vanilla, mask),
        "magnitude": apply_mask(vanilla, magnitude_mask(vanilla, list(mask), sparsity)),
    }
    b_train = _bias_array(train, bias_labels, "train")
    b_test = _bias_array(test, bias_labels, "test")
    notes: list[str] = []
    rows, preds = [], {}
    for name, model in models.items():
        model.eval()
        ev = evaluate(model, test)
        preds[name] = ev.predictions
        row: dict[str, Any] = {"model": name, "test_acc": ev.accuracy}
        if biased_test is not None:
            row["biased_test_acc"] = evaluate(model, biased_test).accuracy
        if conflict_attribute and conflict_attribute in test.attributes:
            g = np.asarray(test.attributes[conflict_attribute])
            row["aligned_acc"] = _group_acc(ev.predictions, ev.labels, g, 0)
            row["conflicting_acc"] = _group_acc(ev.predictions, ev.labels, g, 1)
        row["bias_probe_acc"] = bias_probe_accuracy(
            bottleneck_features(model, train),
            b_train,
            np.asarray(train.y),
            bottleneck_features(model, test),
            b_test,
        )
        row["bias_chance"] = float(np.bincount(b_test).max() / len(b_test))
        row["sparsity"] = 0.0 if name == "vanilla" else sparsity
        rows.append(row)
    out: dict[str, Any] = {"rows": rows, "notes": notes}
    from repsim.capture import record
    from repsim.fairness import compression_shift
    from repsim.similarity import cka

    out["shift"] = {}
    for name in ("subnetwork", "magnitude"):
        shift = compression_shift(
            y_true=np.asarray(test.y),
            dense_preds=preds["vanilla"],
            compressed_preds=preds[name],
            groups=test.groups,
            on_undefined="drop",
        )
        out["shift"][name] = {
            "cev": float(shift.cev),
            "sde": float(shift.sde),
            "classes_used": list(shift.classes_used),
        }
    layers = [n.rsplit(".", 1)[0] for n in mask]
    caps = {k: record(m, test, layers=layers, reduction="mean") for k, m in models.items()}
    out["cka"] = [
        {
            "layer": layer,
            "model": k,
            "cka": float(cka(np.asarray(caps["vanilla"][layer]), np.asarray(caps[k][layer]))),
        }
        for layer in layers
        for k in ("subnetwork", "magnitude")
    ]
    return out
