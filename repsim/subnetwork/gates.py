"""Learnable pruning gates on a frozen model: Debiasing Surgeon's soft gates, BISE's step gate.

:func:`step_gate` is BISE's binary gate (``method="bise"``, applied per channel by
:mod:`repsim.subnetwork.channels`); the rest of this module is the weight gate of
``method="surgeon"``, described below.

Each prunable weight ``w`` (a conv or linear weight; biases and normalisation layers are never
pruned) gets a real-valued gate parameter ``m`` of the same shape (``granularity="weight"``) or
one per output channel (``granularity="channel"``). The forward pass uses the effective weight

    w_eff = w * g(m, tau),    g(m, tau) = min(1, 2 * sigmoid(m / tau)),

so ``m >= 0`` keeps the weight whole and ``m < 0`` shrinks it, towards 0 as ``tau -> 0``
(Nahon et al. 2024, "Debiasing Surgeon: Fantastic Weights and How to Find Them", ECCV).
The clamp at 1 has zero derivative where a gate is on, which would freeze every gate at its
initial value; the gradient is therefore passed straight through the clamp (Bengio et al. 2013,
straight-through estimator): ``dg/dm = 2 sigmoid'(m / tau) / tau`` everywhere.

Gates are applied with :func:`torch.func.functional_call`, so the model is not modified: its
module and parameter names stay as they are and its weights are never written.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.func import functional_call

from repsim._core.fingerprints import unwrap_model
from repsim._core.hooks import attach_hooks
from repsim.compress.prunable import classifier_name as _last_linear
from repsim.compress.prunable import prunable_parameters as _compress_prunable
from repsim.errors import ConfigError, ModelError

GRANULARITIES = ("weight", "channel")


class _StraightThroughGate(torch.autograd.Function):
    """``min(1, 2 sigmoid(m / tau))`` forward; derivative of ``2 sigmoid(m / tau)`` backward."""

    @staticmethod
    def forward(ctx, m: torch.Tensor, tau: float) -> torch.Tensor:  # type: ignore[override]
        s = torch.sigmoid(m / tau)
        ctx.save_for_backward(s)
        ctx.tau = tau
        return torch.clamp(2.0 * s, max=1.0)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        (s,) = ctx.saved_tensors
        return grad_out * 2.0 * s * (1.0 - s) / ctx.tau, None


def gate(m: torch.Tensor, tau: float) -> torch.Tensor:
    """The gate value ``g = min(1, 2 sigmoid(m / tau))`` with a straight-through gradient.

    Parameters
    ----------
    m : torch.Tensor
        Real-valued gate parameters.
    tau : float
        Temperature, ``> 0``; as ``tau -> 0`` the gate tends to the step ``1[m >= 0]``.

    Returns
    -------
    torch.Tensor
        Gate values in ``(0, 1]``; the backward pass uses ``dg/dm = 2 s (1 - s) / tau`` with
        ``s = sigmoid(m / tau)``, ignoring the clamp (straight-through estimator).
    """
    if not tau > 0:
        raise ConfigError(f"The gate temperature tau must be > 0, got {tau}.")
    return _StraightThroughGate.apply(m, float(tau))


class _StepGate(torch.autograd.Function):
    """``1[m >= 0]`` forward; derivative of ``sigmoid(m / tau)`` backward (BISE's mask layer)."""

    @staticmethod
    def forward(ctx, m: torch.Tensor, tau: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(m)
        ctx.tau = tau
        return (m >= 0).to(m.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        (m,) = ctx.saved_tensors
        s = torch.sigmoid(m / ctx.tau)
        return grad_out * s * (1.0 - s) / ctx.tau, None


def step_gate(m: torch.Tensor, tau: float) -> torch.Tensor:
    """BISE's binary gate ``1[sigmoid(m / tau) >= 1/2] = 1[m >= 0]`` with a sigmoid gradient.

    The forward pass is always binary, so the network the search trains is the pruned network
    itself; the temperature only shapes the gradient, ``dg/dm = s (1 - s) / tau`` with
    ``s = sigmoid(m / tau)`` (a straight-through estimator through the step, Bengio et al.
    2013). As ``tau`` falls the gradient concentrates on gates near ``m = 0`` and the others
    stop moving. This is the ``MaskLayer`` of the BISE code (``src/components.py``, mode
    ``"masked"``: ``StepFunction(sigmoid(m_i / tau) - 0.5)`` with an identity backward).

    Parameters
    ----------
    m : torch.Tensor
        Gate parameters (one per output channel or neuron).
    tau : float
        Temperature, ``> 0``.

    Returns
    -------
    torch.Tensor
        0/1 values of ``m``'s dtype.
    """
    if not tau > 0:
        raise ConfigError(f"The gate temperature tau must be > 0, got {tau}.")
    return _StepGate.apply(m, float(tau))


def classifier_name(model: nn.Module) -> str:
    """Name of the model's last ``nn.Linear`` module: its input is the bottleneck feature."""
    name = _last_linear(model)
    if name is None:
        raise ModelError(
            "The model has no nn.Linear layer, so it has no classifier whose input could serve "
            "as the bottleneck feature; pass bottleneck=<module name> explicitly."
        )
    return name


def gate_weights(
    model: nn.Module, *, exclude: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """The weights gates attach to, by parameter name.

    The weights gates attach to, by parameter name: the subnetwork view of
    :func:`repsim.compress.prunable_parameters` (so masks from either are interchangeable).

    Parameters
    ----------
    model : torch.nn.Module
    exclude : sequence of str, optional
        Module names (or globs) left unpruned. Default: the classifier (last linear layer), as
        in Debiasing Surgeon, where the mask is learnt on the encoder only. An explicit list
        (even empty) replaces that default.

    Returns
    -------
    dict
        ``{"features.conv1.weight": tensor, ...}`` in ``named_modules`` order
        (``prunable_parameters(...).weights``).

    Raises
    ------
    ModelError
        When no prunable layer is left, or (default ``exclude``) the model has no classifier.
    LayerNotFoundError
        When ``exclude`` names a module the model does not have.
    """
    model = unwrap_model(model)
    if exclude is None:
        classifier_name(model)  # a model without a classifier is a clear error here
    try:
        selected = _compress_prunable(model, exclude=exclude, exclude_classifier=exclude is None)
    except ConfigError as exc:
        raise ModelError(
            "The model has no prunable layer (conv or linear weights outside the excluded "
            f"modules); subnetwork search needs at least one. {exc}"
        ) from None
    return selected.weights


def prunable_parameters(
    model: nn.Module, *, exclude: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """Deprecated alias of :func:`gate_weights`.

    Deprecated alias of :func:`gate_weights` (repsim has one ``prunable_parameters``, in
    :mod:`repsim.compress`, returning :class:`repsim.compress.PrunableParameters`).
    """
    warnings.warn(
        "repsim.subnetwork.prunable_parameters is deprecated and will be removed in repsim "
        "0.3; use repsim.subnetwork.gates.gate_weights(model, exclude=...) or "
        "repsim.compress.prunable_parameters(model, ...).weights instead.",
        DeprecationWarning,
        stacklevel=2,
    )
    return gate_weights(model, exclude=exclude)


def gate_shape(weight: torch.Tensor, granularity: str) -> tuple[int, ...]:
    """Shape of a weight's gate: the weight's own, or ``[out, 1, ...]`` per output channel."""
    if granularity == "weight":
        return tuple(weight.shape)
    if granularity == "channel":
        return (weight.shape[0],) + (1,) * (weight.ndim - 1)
    raise ConfigError(f"Unknown granularity {granularity!r}; use one of {GRANULARITIES}.")


def init_gates(
    weights: dict[str, torch.Tensor], granularity: str = "weight", init: float = 1.0
) -> dict[str, torch.Tensor]:
    """Gate parameters ``m = init`` (``> 0``, so every gate starts on: the full network)."""
    if not init > 0:
        raise ConfigError(f"Gates must start on (init > 0) to keep the full network; got {init}.")
    return {
        name: torch.full(
            gate_shape(w, granularity),
            float(init),
            dtype=w.dtype,
            device=w.device,
            requires_grad=True,
        )
        for name, w in weights.items()
    }


def hard_mask(
    gates: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The binary mask of gates that stay on (``m >= 0``, i.e. gate value 1), weight-shaped."""
    return {
        name: (m.detach() >= 0).expand_as(weights[name]).clone().cpu() for name, m in gates.items()
    }


@contextlib.contextmanager
def capture_input(model: nn.Module, module_name: str) -> Iterator[list[torch.Tensor]]:
    """Record the input of ``module_name`` on each forward; the hook is removed on exit.

    Raises
    ------
    LayerNotFoundError
        When ``module_name`` is not a module of ``model``.
    """
    store: list[torch.Tensor] = []

    def hook(_mod: nn.Module, args: tuple) -> None:
        store.append(args[0])

    with attach_hooks(model, pre=[(module_name, hook)], noun="module"):
        yield store


def gated_forward(
    model: nn.Module,
    x: torch.Tensor,
    gates: dict[str, torch.Tensor] | None,
    tau: float,
    *,
    bottleneck: str | None = None,
    hard: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run ``model`` on ``x`` with gated weights, without touching the model's parameters.

    Parameters
    ----------
    model : torch.nn.Module
    x : torch.Tensor
    gates : dict or None
        Gate parameters by weight name (``None``: the plain model).
    tau : float
        Gate temperature.
    bottleneck : str, optional
        Module whose input to return as well (the bottleneck feature).
    hard : bool
        Use the binary mask ``1[m >= 0]`` instead of the soft gate.

    Returns
    -------
    (torch.Tensor, torch.Tensor or None)
        Logits and the bottleneck feature (flattened to 2-D), or ``None`` without ``bottleneck``.
    """
    # every parameter detached: gradients reach the gates only, never the frozen model
    named = dict(model.named_parameters())
    params: dict[str, torch.Tensor] = {k: v.detach() for k, v in named.items()}
    if gates:
        for name, m in gates.items():
            w = named[name].detach()
            g = (m.detach() >= 0).to(w.dtype) if hard else gate(m, tau)
            params[name] = w * g
    if bottleneck is None:
        return functional_call(model, params, (x,), strict=False), None
    with capture_input(model, bottleneck) as store:
        logits = functional_call(model, params, (x,), strict=False)
    feats = store[-1]
    return logits, feats.reshape(len(feats), -1)
