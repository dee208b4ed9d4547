"""Measure how biased a subnetwork is, beside its controls: accuracy, probes, groups, CKA.

For each model (the vanilla model, the found subnetwork, and its controls) on the same test
samples:

- task accuracy on the test split (unbiased for digits-colour), on an optional biased test
  split, and on its **bias-aligned** and **bias-conflicting** samples;
- **bias decodability per layer**: a fresh multinomial logistic regression (standardised
  features, scikit-learn ``LogisticRegression``, C = 1) predicting the bias label from the
  frozen features of each layer, fitted and scored on *disjoint halves* of the test split
  (stratified 2-fold cross-fitting, every sample scored once by the probe that did not see it).
  Fit and score use (class, bias)-cell-balanced weights, so a probe cannot reach above chance by
  reading the class when class and bias are correlated (Adult); on an unbiased split the
  weights are close to 1. ``chance`` is the weighted share of the most common bias value.
  Convolutional maps are mean-pooled over space (:func:`repsim.capture.record`,
  ``reduction="mean"``); the bottleneck is the classifier's input;
- **group metrics** with the bias attribute as groups (:func:`repsim.fairness.group_metrics`):
  worst-group accuracy and the accuracy gap; for binary tasks also the demographic-parity and
  equalized-odds differences;
- **CKA** of each layer to the vanilla model's same layer (linear CKA,
  :func:`repsim.similarity.cka`, on the mean-pooled test activations);
- CEV and SDE of each pruned model against the vanilla one (:func:`repsim.fairness.
  compression_shift`; NaN where a class's change is undefined).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from torch import nn

from repsim.compress import Mask, prune
from repsim.compress import prunable_parameters as compress_prunable
from repsim.data.base import GroupedData
from repsim.errors import MaskError
from repsim.subnetwork.bias import aligned_cells, bias_array, cell_weights, conflicting_samples
from repsim.subnetwork.gates import capture_input, classifier_name
from repsim.subnetwork.search import apply_mask, sparsity_report
from repsim.train import evaluate

BOTTLENECK = "bottleneck"


def magnitude_mask(model: nn.Module, names: list[str], sparsity: float) -> Mask:
    """Global magnitude (L1) pruning mask over the parameters ``names`` at ``sparsity``.

    Keeps the ``N - round(sparsity * N)`` weights of largest ``|w|`` over all ``N`` weights of
    the listed parameters (Han et al. 2015; :func:`repsim.compress.prune` with
    ``method="magnitude", scope="global"``, every other prunable layer excluded). The controls
    of :mod:`repsim.subnetwork.controls` match the per-layer sparsity instead.
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


def fit_probe(
    feats: np.ndarray, bias: np.ndarray, y: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    """A linear bias probe fitted with cell-balanced weights; returns its ``predict``.

    Multinomial logistic regression (C = 1, lbfgs, up to 2000 iterations) on standardised
    features, sample weights :func:`~repsim.subnetwork.bias.cell_weights` (power 1).
    """
    scaler = StandardScaler().fit(feats)
    clf = LogisticRegression(max_iter=2000, C=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if len(np.unique(bias)) < 2:
            value = int(bias[0])
            return lambda f: np.full(len(f), value)
        clf.fit(scaler.transform(feats), bias, sample_weight=cell_weights(y, bias, 1.0))
    return lambda f: clf.predict(scaler.transform(f))


def bias_probe_accuracy(
    train_feats: np.ndarray,
    train_bias: np.ndarray,
    train_y: np.ndarray,
    test_feats: np.ndarray,
    test_bias: np.ndarray,
) -> float:
    """Accuracy on ``test`` of a probe fitted on ``train`` (:func:`fit_probe`), unweighted."""
    predict = fit_probe(train_feats, train_bias, train_y)
    return float(np.mean(predict(test_feats) == test_bias))


def probe_accuracy(
    feats: np.ndarray, bias: np.ndarray, y: np.ndarray, *, folds: int = 2, seed: int = 0
) -> dict[str, float]:
    """Held-out bias-probe accuracy on one split, by stratified ``folds``-fold cross-fitting.

    Each fold's probe (:func:`fit_probe`) is fitted on the other folds and predicts its own
    fold; the accuracy of the pooled held-out predictions is weighted by the cell-balanced
    weights of the whole split, so class information does not count as bias information.

    Returns
    -------
    dict
        ``acc``, ``chance`` (weighted share of the most common bias value) and ``n``.
    """
    feats = np.asarray(feats, dtype=np.float64)
    bias = np.asarray(bias)
    y = np.asarray(y)
    counts = np.bincount(bias)
    n_splits = int(min(folds, counts[counts > 0].min())) if len(bias) else 0
    w = cell_weights(y, bias, 1.0)
    chance = float(max(w[bias == v].sum() for v in np.unique(bias)) / w.sum())
    if n_splits < 2:
        return {"acc": math.nan, "chance": chance, "n": len(bias)}
    pred = np.empty(len(bias), dtype=bias.dtype)
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for tr, te in cv.split(feats, bias):
        pred[te] = fit_probe(feats[tr], bias[tr], y[tr])(feats[te])
    return {"acc": float(np.sum(w * (pred == bias)) / w.sum()), "chance": chance, "n": len(bias)}


def _group_acc(pred: np.ndarray, y: np.ndarray, sel: np.ndarray, what: str) -> float:
    if not sel.any():
        warnings.warn(f"No {what} test sample; its accuracy is NaN.", stacklevel=3)
        return math.nan
    return float(np.mean(pred[sel] == y[sel]))


def _fairness(y: np.ndarray, pred: np.ndarray, groups: np.ndarray, names: Any) -> dict:
    from repsim.fairness import group_metrics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = group_metrics(y_true=y, y_pred=pred, groups=groups, group_names=names)
    keys = ["worst_group_accuracy", "accuracy_difference"]
    if len(gm.labels) == 2:
        keys += ["demographic_parity_difference", "equalized_odds_difference"]
    return {k: float(gm.aggregates.get(k, math.nan)) for k in keys}


def evaluate_models(
    models: Mapping[str, nn.Module],
    *,
    test: GroupedData,
    bias_labels: str,
    conflicting: np.ndarray,
    layers: Sequence[str] = (),
    bottleneck: str | None = None,
    biased_test: GroupedData | None = None,
    reference: str = "vanilla",
    sparsity: Mapping[str, float] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy, bias probes per layer, group metrics and CKA of each model on ``test``.

    Parameters
    ----------
    models : mapping of str to torch.nn.Module
        Must include ``reference`` (the vanilla model).
    test : GroupedData
        The evaluation split.
    bias_labels : str
        Attribute of ``test`` holding the bias label.
    conflicting : array of bool
        Which test samples are bias-conflicting.
    layers : sequence of str
        Modules whose outputs are probed and compared by CKA (plus the bottleneck, always).
    bottleneck : str, optional
        The classifier module whose input is the bottleneck (default: the last linear layer).
    biased_test : GroupedData, optional
        A biased version of the test split (its accuracy is reported as ``biased_test_acc``).
    reference : str
        The model the others are compared with (CKA, CEV/SDE).
    sparsity : mapping, optional
        Sparsity of each model, copied into its row.
    seed : int
        Seeds the probes' fold split.

    Returns
    -------
    dict
        ``rows`` (one per model: accuracies, bottleneck probe, group metrics, sparsity),
        ``probes`` (model, layer, acc, chance), ``cka`` (model, layer, cka vs reference),
        ``shift`` (CEV/SDE per non-reference model).
    """
    from repsim.capture import record
    from repsim.fairness import compression_shift
    from repsim.similarity import cka

    b_test = bias_array(test, bias_labels, "test")
    y = np.asarray(test.y)
    conflicting = np.asarray(conflicting, dtype=bool)
    bn = bottleneck or classifier_name(models[reference])
    names = list(dict.fromkeys([*layers, f"{bn}:input"]))
    rows, preds, caps = [], {}, {}
    probes = []
    for name, model in models.items():
        model.eval()
        ev = evaluate(model, test)
        preds[name] = ev.predictions
        row: dict[str, Any] = {"model": name, "test_acc": ev.accuracy}
        if biased_test is not None:
            row["biased_test_acc"] = evaluate(model, biased_test).accuracy
        row["aligned_acc"] = _group_acc(ev.predictions, ev.labels, ~conflicting, "bias-aligned")
        row["conflicting_acc"] = _group_acc(
            ev.predictions, ev.labels, conflicting, "bias-conflicting"
        )
        cap = record(model, test, layers=names, reduction="mean", progress=False)
        caps[name] = cap
        for layer in names:
            res = probe_accuracy(np.asarray(cap[layer]), b_test, y, seed=seed)
            label = BOTTLENECK if layer == f"{bn}:input" else layer
            probes.append({"model": name, "layer": label, **res})
            if label == BOTTLENECK:
                row["bias_probe_acc"] = res["acc"]
                row["bias_chance"] = res["chance"]
        row.update(_fairness(y, ev.predictions, b_test, None))
        row["sparsity"] = float((sparsity or {}).get(name, 0.0))
        rows.append(row)
    out: dict[str, Any] = {"rows": rows, "probes": probes, "shift": {}, "cka": []}
    for name in models:
        if name == reference:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            shift = compression_shift(
                y_true=y,
                dense_preds=preds[reference],
                compressed_preds=preds[name],
                groups=test.groups,
                on_undefined="drop",
            )
        out["shift"][name] = {
            "cev": float(shift.cev),
            "sde": float(shift.sde),
            "classes_used": list(shift.classes_used),
        }
        for layer in names:
            a = np.asarray(caps[reference][layer], dtype=np.float64)
            b = np.asarray(caps[name][layer], dtype=np.float64)
            value = cka(a, b) if a.std() > 0 and b.std() > 0 else math.nan
            label = BOTTLENECK if layer == f"{bn}:input" else layer
            out["cka"].append({"model": name, "layer": label, "cka": float(value)})
    return out


def conflicting_test_samples(
    train: GroupedData,
    test: GroupedData,
    bias_labels: str,
    conflict_attribute: str | None = None,
) -> np.ndarray:
    """Bias-conflicting test samples: the dataset's own marker, else the training cells.

    The aligned (class, bias) cells are those over-represented in ``train``
    (:func:`repsim.subnetwork.bias.aligned_cells`).
    """
    if conflict_attribute and conflict_attribute in test.attributes:
        return np.asarray(test.attributes[conflict_attribute]).astype(bool)
    b_train = bias_array(train, bias_labels, "train")
    b_test = bias_array(test, bias_labels, "test")
    y_train = np.asarray(train.y)
    c = int(max(y_train.max(), np.asarray(test.y).max())) + 1
    k = int(max(b_train.max(), b_test.max())) + 1
    cells = aligned_cells(y_train, b_train, c, k)
    return conflicting_samples(np.asarray(test.y), b_test, cells)


def compare_subnetwork(
    vanilla: nn.Module,
    mask: Mapping[str, torch.Tensor],
    *,
    train: GroupedData,
    test: GroupedData,
    bias_labels: str,
    biased_test: GroupedData | None = None,
    conflict_attribute: str | None = "bias",
    controls: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    layers: Sequence[str] | None = None,
    bottleneck: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Vanilla vs found subnetwork vs its controls on the same test samples.

    Parameters
    ----------
    vanilla : torch.nn.Module
    mask : mapping
        The subnetwork's ``{parameter name: bool tensor}``.
    train : GroupedData
        Training split (defines the aligned cells when the test split has no marker).
    test : GroupedData
        The evaluation split (for digits-colour the unbiased one, ``test_rho = 0.1``).
    bias_labels : str
        Attribute holding the bias label (``"colour"``, ``"sex"``).
    biased_test : GroupedData, optional
        The same test images with the training bias (e.g. ``test_rho = rho``).
    conflict_attribute : str, optional
        Attribute marking bias-aligned (0) / bias-conflicting (1) samples, when the dataset
        has one.
    controls : mapping of str to mask, optional
        Control masks by name (``{"random": ..., "magnitude": ...}``). Default: global
        magnitude pruning at the mask's overall sparsity (:func:`magnitude_mask`), as
        ``"magnitude"``.
    layers : sequence of str, optional
        Modules probed and compared by CKA (default: the modules of the mask's weights).
    bottleneck : str, optional
        Classifier module whose input is the bottleneck.
    seed : int
        Seeds the probes' folds.

    Returns
    -------
    dict
        See :func:`evaluate_models`.
    """
    sp = sparsity_report(mask)["overall"]
    if controls is None:
        controls = {"magnitude": magnitude_mask(vanilla, list(mask), sp)}
    models = {"vanilla": vanilla, "subnetwork": apply_mask(vanilla, mask)}
    sparsity = {"vanilla": 0.0, "subnetwork": sp}
    for name, m in controls.items():
        models[name] = apply_mask(vanilla, m)
        sparsity[name] = sparsity_report(m)["overall"]
    if layers is None:
        layers = list(dict.fromkeys(n.rsplit(".", 1)[0] for n in mask if n.endswith(".weight")))
    return evaluate_models(
        models,
        test=test,
        bias_labels=bias_labels,
        conflicting=conflicting_test_samples(train, test, bias_labels, conflict_attribute),
        layers=layers,
        bottleneck=bottleneck,
        biased_test=biased_test,
        sparsity=sparsity,
        seed=seed,
    )
