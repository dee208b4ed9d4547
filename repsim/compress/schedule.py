"""Gradual pruning (AGP, Zhu & Gupta 2017) and one-shot pruning followed by fine-tuning.

Both fine-tune with :func:`repsim.train.fit`; AGP prunes from a :class:`GradualPruning` callback.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from repsim.compress.prunable import PruneRecord, check_sparsity
from repsim.compress.prune import prune
from repsim.data.base import GroupedData
from repsim.errors import ConfigError
from repsim.train import FitResult, TrainState, fit


def agp_sparsity(
    step: int, *, initial: float, final: float, start: int, n: int, interval: int
) -> float:
    """Sparsity of the automated gradual pruner at training step ``step``.

    ``s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (n * dt))^3`` for
    ``t_0 <= t <= t_0 + n * dt``; ``s_i`` before ``t_0`` and ``s_f`` after
    (Zhu & Gupta 2017, "To prune, or not to prune: exploring the efficacy of pruning for model
    compression", Eq. 1).
    """
    if n < 1 or interval < 1:
        raise ConfigError(
            f"AGP needs n >= 1 pruning steps and an interval >= 1 (got n={n}, interval={interval})."
        )
    if step <= start:
        return initial
    frac = min(1.0, (step - start) / (n * interval))
    return final + (initial - final) * (1.0 - frac) ** 3


def agp_schedule(
    total_steps: int,
    *,
    initial: float,
    final: float,
    start_fraction: float = 0.0,
    end_fraction: float = 0.5,
    n_prunes: int = 10,
) -> list[tuple[int, float]]:
    """The ``(step, sparsity)`` events of AGP over a run of ``total_steps`` optimiser steps.

    Pruning starts at ``t_0 = round(start_fraction * total_steps)`` and happens ``n_prunes + 1``
    times, every ``dt = (end - t_0) / n_prunes`` steps (``end = round(end_fraction *
    total_steps)``), reaching ``final`` at ``end``; masks stay fixed afterwards. Steps count
    completed optimiser steps, so step 0 prunes before training starts. With fewer steps than
    events, ``dt`` is rounded up to 1 and the last event still reaches ``final``.
    """
    check_sparsity(initial)
    check_sparsity(final)
    if final < initial:
        raise ConfigError(f"AGP final sparsity {final} is below the initial {initial}.")
    if not 0.0 <= start_fraction < end_fraction <= 1.0:
        raise ConfigError(
            "AGP needs 0 <= start_fraction < end_fraction <= 1 (got "
            f"{start_fraction}, {end_fraction})."
        )
    if n_prunes < 1:
        raise ConfigError(f"n_prunes must be >= 1, got {n_prunes}.")
    t0 = round(start_fraction * total_steps)
    end = max(t0 + 1, round(end_fraction * total_steps))
    events: dict[int, float] = {}
    for j in range(n_prunes + 1):
        step = t0 + math.ceil(j * (end - t0) / n_prunes) if j < n_prunes else end
        frac = j / n_prunes
        events[step] = final + (initial - final) * (1.0 - frac) ** 3
    return sorted(events.items())


class GradualPruning:
    """A :func:`repsim.train.fit` callback pruning along the AGP schedule.

    At each event of :func:`agp_schedule` it calls :func:`repsim.compress.prune` in place with
    the event's *total* sparsity (pruning composes, so each call adds only the extra weights).

    Parameters
    ----------
    final : float
        Sparsity reached at ``end_fraction`` of training.
    initial : float
        Sparsity at the first event.
    start_fraction, end_fraction : float
        Where in the run (share of all optimiser steps) pruning starts and ends.
    n_prunes : int
        Number of pruning intervals.
    **prune_options
        ``method``, ``scope``, ``exclude``... passed to :func:`prune`.

    Attributes
    ----------
    events : list of (int, float)
        The schedule, filled in when training starts.
    records : list of PruneRecord
        One per pruning event, in order.
    """

    def __init__(
        self,
        final: float,
        *,
        initial: float = 0.0,
        start_fraction: float = 0.0,
        end_fraction: float = 0.5,
        n_prunes: int = 10,
        **prune_options: Any,
    ) -> None:
        self.final = check_sparsity(final)
        self.initial = check_sparsity(initial)
        self.start_fraction, self.end_fraction = start_fraction, end_fraction
        self.n_prunes = n_prunes
        self.prune_options = prune_options
        self.events: list[tuple[int, float]] = []
        self.records: list[PruneRecord] = []
        self._pending: dict[int, float] = {}
        agp_schedule(
            10,
            initial=self.initial,
            final=self.final,
            start_fraction=start_fraction,
            end_fraction=end_fraction,
            n_prunes=n_prunes,
        )  # validate early

    def _maybe_prune(self, state: TrainState) -> None:
        if not self.events:
            self.events = agp_schedule(
                state.epochs * state.steps_per_epoch,
                initial=self.initial,
                final=self.final,
                start_fraction=self.start_fraction,
                end_fraction=self.end_fraction,
                n_prunes=self.n_prunes,
            )
            self._pending = dict(self.events)
        due = [s for s in self._pending if s <= state.step]
        if not due:
            return
        target = max(self._pending.pop(s) for s in due)
        _, record = prune(state.model, target, inplace=True, **self.prune_options)
        self.records.append(record)

    def on_epoch_start(self, state: TrainState) -> None:
        """Prune if the schedule has a step due (a fit callback)."""
        self._maybe_prune(state)

    def on_step_end(self, state: TrainState) -> None:
        """Prune if the schedule has a step due (a fit callback)."""
        self._maybe_prune(state)

    def finish(self, model: nn.Module) -> PruneRecord:
        """Prune to ``final`` if training ended before the last event (e.g. early stopping)."""
        if self._pending or not self.records:
            _, record = prune(model, self.final, inplace=True, **self.prune_options)
            self.records.append(record)
            self._pending.clear()
        return self.records[-1]


def gradual_prune(
    model: nn.Module,
    train: GroupedData,
    sparsity: float,
    *,
    initial: float = 0.0,
    epochs: int = 5,
    start_fraction: float = 0.0,
    end_fraction: float = 0.5,
    n_prunes: int = 10,
    method: str = "magnitude",
    scope: str | None = None,
    exclude: Sequence[str] | None = None,
    n: int | float = 1,
    dim: int = 0,
    seed: int = 0,
    loss: Callable[..., Any] | None = None,
    **fit_options: Any,
) -> tuple[nn.Module, PruneRecord, FitResult]:
    """AGP: prune gradually to ``sparsity`` while fine-tuning (in place).

    Parameters
    ----------
    model : torch.nn.Module
        The dense (or already pruned) model; modified in place.
    train : GroupedData
        Fine-tuning data.
    sparsity : float
        Final total sparsity.
    initial, start_fraction, end_fraction, n_prunes
        Schedule (see :func:`agp_schedule`).
    epochs : int
        Fine-tuning epochs (>= 1).
    method, scope, exclude, n, dim
        As for :func:`repsim.compress.prune`.
    seed : int
        Seed of training and of random pruning.
    loss : callable, optional
        Training objective (e.g. a :class:`~repsim.compress.distill.DistillationLoss`).
    **fit_options
        Passed to :func:`repsim.train.fit`.

    Returns
    -------
    (model, PruneRecord, FitResult)
        The record is the last pruning event's.
    """
    if epochs < 1:
        raise ConfigError("Gradual pruning needs at least one fine-tuning epoch.")
    cb = GradualPruning(
        sparsity,
        initial=initial,
        start_fraction=start_fraction,
        end_fraction=end_fraction,
        n_prunes=n_prunes,
        method=method,
        scope=scope,
        exclude=exclude,
        n=n,
        dim=dim,
        seed=seed,
    )
    callbacks = list(fit_options.pop("callbacks", ())) + [cb]
    result = fit(
        model, train, epochs=epochs, seed=seed, loss=loss, callbacks=callbacks, **fit_options
    )
    return model, cb.finish(model), result


def one_shot_prune(
    model: nn.Module,
    train: GroupedData | None,
    sparsity: float,
    *,
    epochs: int = 5,
    method: str = "magnitude",
    scope: str | None = None,
    exclude: Sequence[str] | None = None,
    n: int | float = 1,
    dim: int = 0,
    seed: int = 0,
    loss: Callable[..., Any] | None = None,
    **fit_options: Any,
) -> tuple[nn.Module, PruneRecord, FitResult | None]:
    """Prune once to ``sparsity`` and fine-tune for ``epochs`` (0: no fine-tuning).

    Returns a new model (the input is copied), its :class:`PruneRecord`, and the fine-tuning
    :class:`~repsim.train.FitResult` (``None`` when ``epochs == 0``). Masks stay fixed while
    fine-tuning, so the record holds for the returned model.
    """
    pruned, record = prune(
        model, sparsity, method=method, scope=scope, exclude=exclude, n=n, dim=dim, seed=seed
    )
    if epochs == 0:
        return pruned, record, None
    if train is None:
        raise ConfigError("Fine-tuning needs training data (train=...), or pass epochs=0.")
    result = fit(pruned, train, epochs=epochs, seed=seed, loss=loss, **fit_options)
    return pruned, record, result
