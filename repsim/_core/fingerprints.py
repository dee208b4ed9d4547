"""Content fingerprints for models and datasets.

A fingerprint is a hex SHA-256 digest of everything that determines what a model computes or
what a dataset holds. The activation cache keys entries on them, so changed weights, masks,
hooks, inputs, labels or groups can never be served a stale entry.

What the **model** fingerprint covers (:func:`model_fingerprint`):

- the architecture: every module's dotted name, class, ``extra_repr()`` (strides, paddings,
  slopes, ...) and plain-valued attributes (numbers, strings);
- every state-dict entry (parameters, persistent buffers, pruning masks ``weight_orig`` /
  ``weight_mask``, quantised tensors with their scales and zero points, packed parameters,
  extra state) and every non-persistent buffer, by name, dtype, shape and bytes;
- every forward hook and forward pre-hook (per module and global), and a ``forward`` replaced
  on an instance. Pruning hooks are covered by their mask; a hook object (such as
  :class:`repsim.compress.quantize.ActivationFakeQuant`) by its class and attributes. A plain
  function cannot be fingerprinted (its effect is code, not data): with ``strict=True`` the
  fingerprint refuses it with :class:`~repsim.errors.FingerprintError`, unless the function
  carries a ``repsim_fingerprint`` attribute: a string that changes whenever what the hook
  computes changes, or ``""`` for a hook that only observes (counts, logs) and changes no
  output, which is then left out of the fingerprint.

What the **data** fingerprint covers (:class:`DataHasher`): the sample ids, the inputs (dtype,
shape, bytes), the labels and the group labels, each in sample order.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import types
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from repsim.errors import FingerprintError

__all__ = [
    "DataHasher",
    "array_fingerprint",
    "model_fingerprint",
    "state_digest",
    "unwrap_model",
]

_PLAIN = (bool, int, float, complex, str, bytes, type(None))


def _update_array(h: Any, name: str, arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr)
    h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
    h.update(arr.tobytes())


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the module inside ``DataParallel``/``DistributedDataParallel`` wrappers."""
    while isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
        model = model.module
    return model


class _Unhashable(Exception):
    """A value the fingerprint cannot cover (carries a description of it)."""


def _tensor_bytes(t: torch.Tensor) -> tuple[str, bytes]:
    """A header and the exact bytes of a tensor (any dtype, dense, quantised or sparse)."""
    t = t.detach()
    if t.device.type == "meta":
        raise _Unhashable("a tensor on the meta device (it holds no values)")
    t = t.to("cpu")
    if t.is_quantized:
        scheme = t.qscheme()
        if scheme in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            q = f"{scheme}|{t.q_scale()!r}|{t.q_zero_point()}"
        else:
            scales = t.q_per_channel_scales().to(torch.float64).numpy().tobytes().hex()
            zeros = t.q_per_channel_zero_points().to(torch.int64).numpy().tobytes().hex()
            q = f"{scheme}|{t.q_per_channel_axis()}|{scales}|{zeros}"
        head = f"q|{t.dtype}|{tuple(t.shape)}|{q}|"
        t = t.int_repr()
    else:
        if t.layout != torch.strided:
            t = t.to_dense()
        head = f"t|{t.dtype}|{tuple(t.shape)}|"
    flat = t.contiguous().reshape(-1)
    data = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
    return head, data


def _feed(h: Any, label: str, value: Any, depth: int = 0) -> None:
    """Hash ``value`` under ``label``; raise :class:`_Unhashable` for what it cannot cover."""
    if depth > 8:
        raise _Unhashable("a value nested too deeply")
    if isinstance(value, torch.Tensor):
        head, data = _tensor_bytes(value)
        h.update(f"{label}|{head}".encode())
        h.update(data)
    elif isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise _Unhashable("a numpy array of Python objects")
        _update_array(h, label, value)
    elif isinstance(value, enum.Enum):
        h.update(f"{label}|enum|{type(value).__qualname__}.{value.name}\n".encode())
    elif isinstance(value, (*_PLAIN, np.generic)):
        h.update(f"{label}|{type(value).__name__}|{value!r}\n".encode())
    elif isinstance(value, torch.dtype | torch.device | torch.Size | torch.memory_format):
        h.update(f"{label}|{type(value).__name__}|{value}\n".encode())
    elif isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        h.update(f"{label}|{type(value).__name__}|{len(items)}\n".encode())
        for i, item in enumerate(items):
            _feed(h, f"{label}[{i}]", item, depth + 1)
    elif isinstance(value, Mapping):
        h.update(f"{label}|map|{len(value)}\n".encode())
        for key in sorted(value, key=repr):
            _feed(h, f"{label}[{key!r}]", value[key], depth + 1)
    elif type(value).__name__ == "ScriptObject" and hasattr(value, "__getstate__"):
        _feed(h, f"{label}|script", value.__getstate__(), depth + 1)
    else:
        raise _Unhashable(f"a {type(value).__module__}.{type(value).__qualname__} value")


def _feed_attributes(h: Any, name: str, module: nn.Module) -> None:
    """Hash the public instance attributes of a module that hold plain values.

    Numbers, strings, dtypes and containers of them are covered. Tensors held as plain
    attributes are not: a pruned or weight-normed module keeps its derived ``weight`` there,
    recomputed from parameters and buffers (which are covered) on every forward. Attributes
    holding other objects (configs, tokenizers) are not covered either.
    """
    for key, value in sorted(vars(module).items()):
        if (
            key.startswith("_")
            or key == "training"
            or callable(value)
            or isinstance(value, torch.Tensor)
        ):
            continue
        sub = hashlib.sha256()
        try:
            _feed(sub, key, value)
        except _Unhashable:
            continue
        h.update(f"a|{name}|{key}|".encode() + sub.digest())


def _describe(fn: Any) -> str:
    target = fn.func if isinstance(fn, functools.partial) else fn
    target = getattr(target, "__func__", target)
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{getattr(target, '__module__', '?')}.{name}"


def _hook_identity(hook: Any) -> Any:
    """What a hook computes, as hashable data; :class:`_Unhashable` when it cannot be known.

    ``None`` for a hook declared observe-only (``repsim_fingerprint = ""``).
    """
    from torch.nn.utils import prune

    own = getattr(hook, "repsim_fingerprint", None)
    if own is not None:
        own = str(own() if callable(own) else own)
        return None if own == "" else ("declared", _describe(hook), own)
    if isinstance(hook, prune.BasePruningMethod):
        # the pre-hook computes weight_orig * weight_mask; both are in the state dict
        return ("prune", type(hook).__qualname__, getattr(hook, "_tensor_name", ""))
    if isinstance(
        hook,
        types.FunctionType
        | types.MethodType
        | types.BuiltinFunctionType
        | types.BuiltinMethodType
        | functools.partial,
    ):
        raise _Unhashable(f"the function {_describe(hook)}")
    if isinstance(hook, nn.Module):
        raise _Unhashable(f"the module {type(hook).__qualname__} used as a hook")
    cls = type(hook)
    state = {}
    for key, value in sorted(vars(hook).items()) if hasattr(hook, "__dict__") else []:
        if callable(value) and not isinstance(value, torch.Tensor):
            raise _Unhashable(f"{cls.__qualname__} (its attribute {key!r} is a function)")
        state[key] = value
    if not hasattr(hook, "__dict__") and not hasattr(cls, "__slots__"):
        raise _Unhashable(f"a {cls.__qualname__} object")
    for key in getattr(cls, "__slots__", ()):
        if hasattr(hook, key):
            state[key] = getattr(hook, key)
    probe = hashlib.sha256()
    try:
        _feed(probe, "hook", state)
    except _Unhashable as exc:
        raise _Unhashable(f"{cls.__qualname__} (it holds {exc})") from None
    return ("object", f"{cls.__module__}.{cls.__qualname__}", state)


def _feed_hooks(h: Any, where: str, hooks: Mapping[Any, Any], kind: str, strict: bool) -> None:
    for i, hook in enumerate(hooks.values()):
        try:
            identity = _hook_identity(hook)
        except _Unhashable as exc:
            if strict:
                raise FingerprintError(
                    f"cannot cache this model: {where} has a forward {kind} ({exc}) whose effect "
                    "repsim cannot fingerprint, so a cached entry could be served for a model "
                    "that computes something else. Remove the hook before capturing, capture "
                    "without a store (store=None), or give the hook a `repsim_fingerprint` "
                    "attribute: a string that changes whenever what the hook computes changes "
                    '("" for a hook that only observes and changes no output).'
                ) from None
            identity = ("unknown", _describe(hook))
        if identity is not None:
            _feed(h, f"hook|{where}|{kind}|{i}", identity)


def model_fingerprint(model: nn.Module, length: int = 16, *, strict: bool = False) -> str:
    """Fingerprint a model by its architecture, its full state and its hooks.

    The digest covers every module's dotted name, class, ``extra_repr()`` and plain-valued
    attributes; every state-dict entry (parameters, buffers, pruning masks, quantised tensors
    with scales, packed parameters, extra state) and every non-persistent buffer, by name,
    dtype, shape and bytes; and every forward hook and forward pre-hook (per module and
    global). See the module docstring for how hooks are covered.

    Parameters
    ----------
    model : torch.nn.Module
        The model; ``DataParallel``/DDP wrappers are unwrapped first.
    length : int
        Number of hex characters to return (at most 64).
    strict : bool
        Raise :class:`~repsim.errors.FingerprintError` for state the digest cannot cover (a
        hook function, a ``forward`` replaced on an instance, unhashable extra state), as the
        activation cache needs; otherwise such state contributes only its name.

    Returns
    -------
    str
        Hex digest prefix.

    Raises
    ------
    FingerprintError
        With ``strict``, naming the module and the hook or value that cannot be covered.
    """
    from torch.nn.modules import module as module_globals

    model = unwrap_model(model)
    while type(model).__name__ == "OptimizedModule" and isinstance(
        getattr(model, "_orig_mod", None), nn.Module
    ):  # torch.compile computes what the module it wraps computes
        model = model._orig_mod
    h = hashlib.sha256(b"repsim-model-2\n")
    for name, module in model.named_modules():
        where = f"module {name!r}" if name else "the model"
        cls = type(module)
        h.update(f"m|{name}|{cls.__module__}.{cls.__qualname__}|{module.extra_repr()}\n".encode())
        _feed_attributes(h, name, module)
        if "forward" in vars(module):
            if strict:
                raise FingerprintError(
                    f"cannot cache this model: {where} has its forward replaced on the instance "
                    f"({_describe(vars(module)['forward'])}), which repsim cannot fingerprint. "
                    "Subclass the module instead, or capture without a store (store=None)."
                )
            h.update(f"f|{name}|{_describe(vars(module)['forward'])}\n".encode())
        _feed_hooks(h, where, module._forward_pre_hooks, "pre-hook", strict)
        _feed_hooks(h, where, module._forward_hooks, "hook", strict)
    for kind, hooks in (
        ("pre-hook", getattr(module_globals, "_global_forward_pre_hooks", {})),
        ("hook", getattr(module_globals, "_global_forward_hooks", {})),
    ):
        _feed_hooks(h, "torch (a global module hook)", hooks, kind, strict)
    state = model.state_dict()
    for name, value in state.items():
        try:
            _feed(h, f"p|{name}", value)
        except _Unhashable as exc:
            if strict:
                raise FingerprintError(
                    f"cannot cache this model: its state entry {name!r} holds {exc}, which "
                    "repsim cannot fingerprint. Capture without a store (store=None)."
                ) from None
            h.update(f"p|{name}|{type(value).__qualname__}\n".encode())
    for name, buf in model.named_buffers():
        if name not in state and buf is not None:
            _feed(h, f"b|{name}", buf)
    return h.hexdigest()[:length]


def state_digest(model: nn.Module) -> str:
    """SHA-256 of a model's state dict alone (names, dtypes, shapes, bytes), in hex.

    What a saved model's weights file must reproduce when loaded: a file damaged on disk gives
    another digest. Unlike :func:`model_fingerprint` it ignores hooks and attributes.
    """
    h = hashlib.sha256(b"repsim-state-1\n")
    for name, value in unwrap_model(model).state_dict().items():
        try:
            _feed(h, name, value)
        except _Unhashable:
            h.update(f"{name}|{type(value).__qualname__}\n".encode())
    return h.hexdigest()


def array_fingerprint(*arrays: np.ndarray, length: int = 16) -> str:
    """Fingerprint a sequence of arrays by dtype, shape and bytes (order matters)."""
    h = hashlib.sha256()
    for i, arr in enumerate(arrays):
        _update_array(h, str(i), np.asarray(arr))
    return h.hexdigest()[:length]


class DataHasher:
    """The data fingerprint, fed batch by batch: sample ids, inputs, labels and group labels.

    ``DataHasher(sample_id).update(x, y, groups)`` over consecutive batches (in sample order)
    gives the same digest however the data is batched. Labels and groups are hashed as the
    ``int64`` codes a capture records (``groups=None`` counts as all zeros, as a capture
    records it); inputs by their own dtype, shape and bytes.

    Parameters
    ----------
    sample_id : array-like
        The ``int64`` sample ids, in order.
    """

    VERSION = b"repsim-data-2\n"

    def __init__(self, sample_id: Any) -> None:
        self.sample_id = np.ascontiguousarray(np.asarray(sample_id, dtype=np.int64))
        self.parts = {k: hashlib.sha256() for k in ("x", "y", "groups")}
        self.heads: dict[str, tuple[str, tuple[int, ...]]] = {}
        self.rows = 0

    def _add(self, key: str, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        head = (arr.dtype.str, tuple(int(s) for s in arr.shape[1:]))
        if self.heads.get(key) != head:
            self.heads[key] = head
            self.parts[key].update(f"|{head[0]}|{head[1]}|".encode())
        self.parts[key].update(arr.tobytes())

    def update(self, x: Any, y: Any, groups: Any = None) -> None:
        """Feed the next batch (numpy arrays or CPU tensors)."""
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        n = len(x)
        y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        if groups is None:
            g = np.zeros(n, np.int64)
        else:
            g = groups.detach().cpu().numpy() if isinstance(groups, torch.Tensor) else groups
            g = np.asarray(g).reshape(-1).astype(np.int64)
        self._add("x", x)
        self._add("y", y.reshape(-1).astype(np.int64))
        self._add("groups", g)
        self.rows += n

    def hexdigest(self, length: int = 16) -> str:
        """The fingerprint of everything fed so far."""
        h = hashlib.sha256(self.VERSION)
        _update_array(h, "sample_id", self.sample_id)
        for key, part in self.parts.items():
            h.update(f"{key}|{part.hexdigest()}\n".encode())
        h.update(f"rows|{self.rows}\n".encode())
        return h.hexdigest()[:length]
