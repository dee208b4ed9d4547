"""Temporary changes to a model that are always undone: forward hooks and frozen parameters.

Every stage that hooks a model (capture, attention transfer in distillation, the bottleneck
feature of subnetwork search) or freezes one (the teacher of a distillation) goes through
these, so the undo is written once:

- :func:`attach_hooks` registers forward and forward-pre hooks on named modules, all or none,
  and returns a :class:`HookSet` that removes exactly those handles: on ``remove()``, or on
  leaving its ``with`` block however it is left (return, exception, ``KeyboardInterrupt``).
  Hooks registered by anyone else stay.
- :func:`frozen` turns ``requires_grad`` off for a block and restores each parameter's own
  flag afterwards, however the block is left.
- :func:`evaluating` runs a block in eval mode (optionally on another device) and restores
  every module's mode and the model's device afterwards.

Like TransformerLens's ``hooks()`` context manager, hooks are named by the dotted module path
(``named_modules()``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from repsim.errors import LayerNotFoundError, did_you_mean

__all__ = ["HookSet", "attach_hooks", "evaluating", "frozen"]

Hook = Callable[..., Any]
"""A forward hook ``f(module, args, output)`` or pre-hook ``f(module, args)`` (with
``with_kwargs=True``: ``f(module, args, kwargs)``), as torch calls them."""

HookSpecs = Mapping[str, Hook] | Sequence[tuple[str, Hook]]


def _pairs(specs: HookSpecs) -> list[tuple[str, Hook]]:
    return list(specs.items()) if isinstance(specs, Mapping) else list(specs)


class HookSet:
    """The handles of hooks registered together; :meth:`remove` takes off exactly these.

    Usable as a context manager: leaving the ``with`` block removes the hooks, however it is
    left. Removing twice is harmless.
    """

    def __init__(self) -> None:
        self.handles: list[RemovableHandle] = []

    def __len__(self) -> int:
        return len(self.handles)

    def remove(self) -> None:
        """Remove every hook of this set (and only those)."""
        while self.handles:
            self.handles.pop().remove()

    def __enter__(self) -> HookSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def attach_hooks(
    model: nn.Module,
    forward: HookSpecs = (),
    pre: HookSpecs = (),
    *,
    with_kwargs: bool = False,
    what: str = "model",
    noun: str = "layer",
) -> HookSet:
    """Register forward hooks and forward-pre hooks on modules of ``model`` named by path.

    Parameters
    ----------
    model : torch.nn.Module
        The model whose ``named_modules()`` the names refer to.
    forward : mapping or sequence of (name, hook)
        ``hook(module, args, output)`` after each forward of module ``name``.
    pre : mapping or sequence of (name, hook)
        ``hook(module, args)`` (``hook(module, args, kwargs)`` with ``with_kwargs``) before it.
    with_kwargs : bool
        Pass the keyword arguments of the call to the pre-hooks too.
    what, noun : str
        How the model and its modules are called in the error message (``"teacher"``,
        ``"module"``).

    Returns
    -------
    HookSet
        The registered handles; use it as a context manager, or call ``remove()``.

    Raises
    ------
    LayerNotFoundError
        When a name is not a module of ``model`` (with the closest names); nothing is then
        left registered.
    """
    modules = dict(model.named_modules())
    hooks = HookSet()
    try:
        for kind, specs in (("forward", forward), ("pre", pre)):
            for name, fn in _pairs(specs):
                module = modules.get(name)
                if module is None:
                    raise LayerNotFoundError(
                        f"The {what} has no {noun} {name!r}." + did_you_mean(name, modules)
                    )
                if kind == "forward":
                    handle = module.register_forward_hook(fn)
                else:
                    handle = module.register_forward_pre_hook(fn, with_kwargs=with_kwargs)
                hooks.handles.append(handle)
    except BaseException:
        hooks.remove()
        raise
    return hooks


@contextlib.contextmanager
def frozen(parameters: nn.Module | Iterable[torch.Tensor]) -> Iterator[None]:
    """Set ``requires_grad=False`` on ``parameters`` for a block; restore each flag after.

    Parameters
    ----------
    parameters : torch.nn.Module or iterable of tensors
        A module (all its parameters) or the parameters themselves.
    """
    params = list(parameters.parameters() if isinstance(parameters, nn.Module) else parameters)
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


@contextlib.contextmanager
def evaluating(model: nn.Module, device: torch.device | None = None) -> Iterator[nn.Module]:
    """Run a block with ``model`` in eval mode (on ``device``); restore both after.

    Every module's own ``training`` flag is restored (not just the root's), and the model goes
    back to the device of its first parameter, however the block is left. A model without
    parameters is not moved.
    """
    modes = {m: m.training for m in model.modules()}
    first = next(iter(model.parameters()), None)
    home = first.device if first is not None else None
    move = device is not None and home is not None and home != device
    try:
        model.eval()
        if move:
            model.to(device)
        yield model
    finally:
        if move:
            model.to(home)
        for m, mode in modes.items():
            m.training = mode
