"""One fit/evaluate loop, used by dense training, fine-tuning after pruning and distillation.

Training is seeded and deterministic on CPU: the same model initialisation, data, options and
``seed`` give the same weights and logits bit for bit (on the same machine and thread count).
Shuffling uses a private ``torch.Generator``; dropout draws come from the global generator, which
:func:`fit` seeds inside ``torch.random.fork_rng`` so the caller's RNG state is left untouched.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from repsim._core.fingerprints import unwrap_model
from repsim.data.adapt import as_grouped
from repsim.data.base import GroupedData, input_tensors
from repsim.errors import ConfigError, DataError
from repsim.models.adapters import Inputs, batch_len, inputs_to, model_logits, select_inputs

#: A loss takes the model, an input batch (a tensor, or a dict of tensors for models taking
#: keyword inputs) and its labels and returns a scalar tensor.
LossFn = Callable[[nn.Module, Inputs, torch.Tensor], torch.Tensor]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a ``torch.device``; ``None`` picks CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class Evaluation:
    """A model's outputs on a split, aligned by row with the split's sample order.

    Attributes
    ----------
    logits : numpy.ndarray
        ``[n, n_classes]`` float32.
    predictions : numpy.ndarray
        ``[n]`` argmax of the logits.
    labels, groups, sample_id : numpy.ndarray
        ``[n]``, copied from the data.
    """

    logits: np.ndarray
    predictions: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    sample_id: np.ndarray

    @property
    def accuracy(self) -> float:
        """Share of correct predictions."""
        return float(np.mean(self.predictions == self.labels)) if len(self.labels) else math.nan


@dataclass
class TrainState:
    """What callbacks see: the model, its optimiser, and where training is."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    epoch: int
    step: int
    epochs: int
    steps_per_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    model : torch.nn.Module
        The trained model (the same object that was passed in), in eval mode.
    history : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``train_acc`` and ``val_acc`` when validating.
    test : Evaluation or None
        Outputs on the test split when one was given.
    best_epoch : int
        Epoch whose weights were kept (the last, unless early stopping restored a better one).
    """

    model: nn.Module
    history: list[dict[str, float]]
    test: Evaluation | None
    best_epoch: int

    @property
    def test_logits(self) -> np.ndarray | None:
        """Test logits, or ``None`` when no test split was given."""
        return None if self.test is None else self.test.logits


def cross_entropy_loss(model: nn.Module, x: Inputs, y: torch.Tensor) -> torch.Tensor:
    """The default loss: mean cross-entropy of the model's logits on ``x`` against ``y``.

    The logits are read by the model's output rule (:func:`repsim.models.model_logits`), so
    models returning a tuple or a ``transformers`` ``ModelOutput`` train as they are.
    """
    return F.cross_entropy(model_logits(model, x), y)


def make_optimizer(
    params: Any, name: str, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    """Build ``"adam"``, ``"adamw"`` or ``"sgd"`` (Nesterov momentum)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0
        )
    raise ConfigError(f"Unknown optimizer {name!r}; use 'adam', 'adamw' or 'sgd'.")


def _describe_inputs(data: GroupedData) -> str:
    if data.input_keys:
        fields = {k: tuple(data.x.dtype[k].shape) for k in data.input_keys}
        return f"keyword inputs {fields}"
    return f"inputs of shape {data.input_shape} ({data.x.dtype})"


def _check_fits(model: nn.Module, data: GroupedData, device: torch.device) -> None:
    if len(data) == 0:
        raise DataError(f"{data.name}/{data.split} is empty.")
    with torch.no_grad():
        was_training = model.training
        model.eval()
        try:
            out = model_logits(model, inputs_to(data.inputs(slice(0, 2)), device))
        except (RuntimeError, TypeError, IndexError) as exc:
            raise DataError(
                f"The model cannot take {_describe_inputs(data)} from {data.name}: {exc}"
            ) from exc
        finally:
            model.train(was_training)
    if out.ndim != 2 or out.shape[1] != data.n_classes:
        raise DataError(
            f"The model outputs shape {tuple(out.shape[1:])} but {data.name} has "
            f"{data.n_classes} classes."
        )


def fit(
    model: nn.Module,
    train: GroupedData,
    *,
    test: GroupedData | None = None,
    val: GroupedData | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    scheduler: str | None = "cosine",
    patience: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    loss: LossFn | None = None,
    callbacks: Sequence[Any] = (),
    parameters: Any = None,
    progress: bool | None = None,
) -> FitResult:
    """Train ``model`` on ``train`` and evaluate it on ``test``.

    Parameters
    ----------
    model : torch.nn.Module
        Trained in place.
    train, test, val : GroupedData or a container
        Training split; optional test split (evaluated at the end) and validation split
        (evaluated each epoch, used for early stopping). Anything
        :func:`repsim.data.as_grouped` takes: a ``GroupedData``, a torch ``Dataset`` or
        ``DataLoader`` yielding ``(x, y[, group])`` or dicts, a tuple of arrays. Inputs may be
        integer token ids or dicts of tensors (passed as keyword arguments).
    epochs, batch_size, lr, optimizer, weight_decay, momentum
        Optimisation settings; ``optimizer`` is ``"adam"``, ``"adamw"`` or ``"sgd"``.
    scheduler : {"cosine", None}
        Cosine annealing of the learning rate to 0 over all steps, or a constant rate.
    patience : int, optional
        Stop when validation accuracy has not improved for this many epochs and restore the best
        weights (needs ``val``).
    seed : int
        Seeds shuffling and any randomness in the model (dropout).
    device : str or torch.device, optional
        Default: CUDA when available, else CPU.
    loss : callable, optional
        ``loss(model, x, y) -> scalar``; default cross-entropy of the logits read by the
        model's output rule. ``x`` is a tensor or a dict of tensors. Distillation and other
        objectives plug in here.
    callbacks : sequence
        Objects with any of ``on_epoch_start(state)``, ``on_step_end(state)``,
        ``on_epoch_end(state)`` taking a :class:`TrainState` (gradual pruning uses these).
    parameters : iterable of tensors, optional
        What the optimiser updates (default: all parameters that require grad).
    progress : bool, optional
        Show a tqdm bar; ``None`` shows it only on a terminal.

    Returns
    -------
    FitResult
    """
    if epochs < 0 or batch_size < 1 or lr <= 0:
        raise ConfigError(
            f"epochs must be >= 0, batch_size >= 1 and lr > 0 (got {epochs}, {batch_size}, {lr})."
        )
    if patience is not None and val is None:
        raise ConfigError("Early stopping (patience) needs a validation split (val=...).")
    if scheduler not in (None, "cosine", "none"):
        raise ConfigError(f"Unknown scheduler {scheduler!r}; use 'cosine' or None.")
    train = as_grouped(train, require_groups=False, what="train")
    test = None if test is None else as_grouped(test, require_groups=False, what="test")
    val = None if val is None else as_grouped(val, require_groups=False, what="val")
    dev = resolve_device(device)
    model = unwrap_model(model).to(dev)
    _check_fits(model, train, dev)
    loss_fn = loss or cross_entropy_loss
    x_all, y_all, _ = train.tensors()
    x_all, y_all = inputs_to(x_all, dev), y_all.to(dev)
    n = len(train)
    steps_per_epoch = math.ceil(n / batch_size)
    params = (
        list(parameters)
        if parameters is not None
        else [p for p in model.parameters() if p.requires_grad]
    )
    opt = make_optimizer(params, optimizer, lr, weight_decay, momentum)
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
        if scheduler == "cosine"
        else None
    )
    gen = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    state = TrainState(model, opt, 0, 0, epochs, steps_per_epoch, history)
    best = (-1.0, 0, None)
    bad_epochs = 0

    def call(hook: str) -> None:
        for cb in callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(state)

    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        bar = tqdm(
            range(epochs),
            desc="train",
            disable=None if progress is None else not progress,
            leave=False,
        )
        for epoch in bar:
            state.epoch = epoch
            call("on_epoch_start")
            model.train()
            order = torch.randperm(n, generator=gen).to(dev)
            total, seen = 0.0, 0
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                xb, yb = select_inputs(x_all, idx), y_all[idx]
                opt.zero_grad(set_to_none=True)
                value = loss_fn(model, xb, yb)
                if not torch.isfinite(value):
                    raise FloatingPointError(
                        f"Training loss became {value.item()} at epoch {epoch}; lower lr."
                    )
                value.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                total += float(value.detach()) * len(idx)
                seen += len(idx)
                state.step += 1
                call("on_step_end")
            record = {"epoch": float(epoch), "train_loss": total / max(seen, 1)}
            if val is not None:
                record["val_acc"] = evaluate(model, val, device=dev).accuracy
            history.append(record)
            call("on_epoch_end")
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
            if val is not None:
                if record["val_acc"] > best[0]:
                    best = (record["val_acc"], epoch, copy.deepcopy(model.state_dict()))
                    bad_epochs = 0
                else:
                    bad_epochs += 1
                    if patience is not None and bad_epochs >= patience:
                        break
        bar.close()
    best_epoch = len(history) - 1
    if patience is not None and best[2] is not None:
        model.load_state_dict(best[2])
        best_epoch = best[1]
    model.eval()
    result_test = evaluate(model, test, device=dev) if test is not None else None
    return FitResult(model=model, history=history, test=result_test, best_epoch=best_epoch)


def as_input_tensors(x: Any) -> Inputs:
    """Inputs as tensors, dtypes kept (token ids stay integer).

    A tensor as is, a numpy array by :func:`repsim.data.input_tensors`, a dict of arrays or
    tensors as a dict of tensors.
    """
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, dict) or hasattr(x, "keys"):
        return {
            k: v if isinstance(v, torch.Tensor) else input_tensors(np.asarray(v))
            for k, v in x.items()
        }
    return input_tensors(np.asarray(x))


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    x: Any,
    *,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Logits of ``model`` on inputs ``x`` in eval mode, batch by batch, as float32 numpy.

    ``x`` is an array or tensor, or a dict of them (keyword inputs); logits are read by the
    model's output rule (:func:`repsim.models.model_logits`).
    """
    dev = resolve_device(device)
    model = unwrap_model(model).to(dev)
    was_training = model.training
    model.eval()
    xt = as_input_tensors(x)
    outs = []
    try:
        for start in range(0, batch_len(xt), batch_size):
            batch = select_inputs(xt, slice(start, start + batch_size))
            outs.append(model_logits(model, inputs_to(batch, dev)).float().cpu())
    finally:
        model.train(was_training)
    if not outs:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(outs).numpy()


def evaluate(
    model: nn.Module,
    data: Any,
    *,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> Evaluation:
    """Evaluate ``model`` on ``data``: logits, predictions, labels, groups and sample ids aligned.

    ``data`` is anything :func:`repsim.data.as_grouped` takes (without group labels every
    sample is in group 0, ``"all"``).
    """
    data = as_grouped(data, require_groups=False)
    logits = predict_logits(model, data.x, batch_size=batch_size, device=device)
    return Evaluation(
        logits=logits,
        predictions=logits.argmax(1).astype(np.int64),
        labels=np.asarray(data.y).copy(),
        groups=np.asarray(data.groups).copy(),
        sample_id=np.asarray(data.sample_id).copy(),
    )
