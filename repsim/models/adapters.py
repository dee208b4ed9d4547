"""Bring your own model: call any ``nn.Module`` and read its logits by a declared rule.

repsim works with any ``torch.nn.Module`` whose ``forward`` takes

- one tensor (``model(x)``: images, features, integer token ids), or
- a dict of tensors passed as keyword arguments (``model(**x)``: ``input_ids``,
  ``attention_mask``, ``token_type_ids``... as HuggingFace ``transformers`` models take them),

and returns logits, a tuple (or list) whose first element holds them, or an object carrying
them: a HuggingFace ``ModelOutput`` (``.logits``) or a dict with a ``"logits"`` key.

**The logits rule** (:class:`OutputRule`, declared once per model with
:func:`set_output_rule`, saved with the model by :func:`repsim.models.save_model`):

1. *Field.* ``logits=None`` (default): a tensor is taken as is; otherwise the ``logits``
   attribute or key; otherwise element 0 of a tuple/list. ``logits="name"`` takes that
   attribute or key, ``logits=i`` element ``i``.
2. *Token.* A 3-D ``[batch, tokens, classes]`` result (a language-model head) is reduced to
   ``[batch, classes]`` by ``token``: ``"last"`` = the last non-pad token of each row (the
   highest position where ``attention_mask`` is 1; the last position without a mask), which
   is the next-token prediction of a causal LM; ``"first"`` = position 0 (BERT's ``[CLS]``);
   ``"mean"`` = mask-aware mean over tokens, ``sum_t m_t z_t / sum_t m_t``. Without a
   declared ``token`` a 3-D result is an error (repsim never guesses a token).
3. *Classes.* ``classes=[i_0, ..., i_{K-1}]`` keeps those columns in that order, e.g. the
   vocabulary ids of the label words when a causal LM is used as a classifier (a
   "verbalizer"); class ``k`` is column ``i_k``.

The rule is stored on the model as the plain attribute ``model.repsim_output`` (a JSON-able
dict), so it survives ``copy.deepcopy`` (pruned and quantised copies) and is written into the
saved model's JSON. Module names are untouched, so capture hooks and masks address the same
layers with or without a rule.

**Builders.** :func:`from_builder` builds a model from an import path such as
``"mypkg.nets:make_resnet"`` plus JSON-able keyword arguments and records both, so
:func:`repsim.models.save_model` can save it as a state dict and
:func:`repsim.models.load_model` rebuild it (never pickled). ``transformers`` is never
imported here; models that come from it are recognised by their class.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from repsim.errors import ConfigError, ModelError

__all__ = [
    "TOKEN_RULES",
    "Inputs",
    "OutputRule",
    "batch_len",
    "call_model",
    "extract_logits",
    "from_builder",
    "import_object",
    "inputs_to",
    "model_logits",
    "output_rule",
    "select_inputs",
    "set_output_rule",
]

#: A batch of model inputs: one tensor, or a dict of tensors passed as keyword arguments.
Inputs = torch.Tensor | Mapping[str, torch.Tensor]

#: Token reductions of a ``[batch, tokens, classes]`` output.
TOKEN_RULES = ("last", "first", "mean")

_ATTR = "repsim_output"


@dataclass(frozen=True)
class OutputRule:
    """How the logits are read from a model's output (see the module docstring).

    Attributes
    ----------
    logits : str, int or None
        Attribute/key name or tuple index of the logits; ``None``: tensor, else ``.logits``
        / ``["logits"]``, else element 0.
    token : {"last", "first", "mean"} or None
        Reduction of a ``[batch, tokens, classes]`` result over tokens.
    classes : tuple of int or None
        Columns kept as the class logits, in order.
    """

    logits: str | int | None = None
    token: str | None = None
    classes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.logits is not None and not isinstance(self.logits, str | int):
            raise ConfigError(
                f"logits must be an attribute/key name, a tuple index or None, got {self.logits!r}."
            )
        if self.token is not None and self.token not in TOKEN_RULES:
            raise ConfigError(
                f"token must be one of {list(TOKEN_RULES)} or None, got {self.token!r}."
            )
        if self.classes is not None:
            try:
                classes = tuple(int(c) for c in self.classes)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"classes must be a sequence of column indices, got {self.classes!r}."
                ) from None
            if not classes or min(classes) < 0:
                raise ConfigError(f"classes must be non-negative column indices, got {classes}.")
            object.__setattr__(self, "classes", classes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy (what is stored on the model and in saved-model JSON)."""
        out = asdict(self)
        if self.classes is not None:
            out["classes"] = list(self.classes)
        return out

    @classmethod
    def from_dict(cls, value: Mapping[str, Any] | None) -> OutputRule:
        """Rebuild a rule from :meth:`to_dict` output (``None``: the default rule)."""
        if value is None:
            return cls()
        if not isinstance(value, Mapping) or set(value) - {"logits", "token", "classes"}:
            raise ModelError(
                f"Not an output rule: {value!r}; expected keys among 'logits', 'token', 'classes'."
            )
        return cls(**dict(value))


def set_output_rule(
    model: nn.Module,
    *,
    logits: str | int | None = None,
    token: str | None = None,
    classes: Sequence[int] | None = None,
) -> nn.Module:
    """Declare how repsim reads ``model``'s logits; returns ``model`` (changed in place).

    Parameters
    ----------
    model : torch.nn.Module
        Any module (the rule is stored as ``model.repsim_output``).
    logits : str, int or None
        Attribute/key name or tuple index of the logits (default: automatic).
    token : {"last", "first", "mean"}, optional
        Token reduction for a ``[batch, tokens, classes]`` output.
    classes : sequence of int, optional
        Columns kept as class logits (e.g. label-word ids of a causal LM).

    Examples
    --------
    A tiny GPT-2 used as a two-class classifier through the ids of two label words:

    >>> set_output_rule(gpt2, token="last", classes=[17, 42])  # doctest: +SKIP
    """
    rule = OutputRule(logits=logits, token=token, classes=None if classes is None else classes)
    setattr(model, _ATTR, rule.to_dict())
    return model


def output_rule(model: nn.Module) -> OutputRule:
    """The rule declared on ``model`` (the default rule when none was)."""
    return OutputRule.from_dict(getattr(model, _ATTR, None))


# ----------------------------------------------------------------------------- inputs


def batch_len(x: Inputs) -> int:
    """Number of samples in a batch of inputs (the first dimension)."""
    if isinstance(x, Mapping):
        if not x:
            raise ConfigError("An input dict needs at least one tensor.")
        return len(next(iter(x.values())))
    return len(x)


def inputs_to(x: Inputs, device: torch.device | str) -> Inputs:
    """Move a tensor or every tensor of an input dict to ``device``."""
    if isinstance(x, Mapping):
        return {k: v.to(device) for k, v in x.items()}
    return x.to(device)


def select_inputs(x: Inputs, index: Any) -> Inputs:
    """Rows ``index`` of a tensor or of every tensor of an input dict."""
    if isinstance(x, Mapping):
        return {k: v[index] for k, v in x.items()}
    return x[index]


def call_model(model: nn.Module, x: Inputs) -> Any:
    """``model(**x)`` for a dict of tensors, ``model(x)`` otherwise."""
    if isinstance(x, Mapping):
        return model(**x)
    return model(x)


def _pick(output: Any, field: str | int | None) -> Any:
    if field is None:
        if isinstance(output, torch.Tensor):
            return output
        if hasattr(output, "logits") and isinstance(output.logits, torch.Tensor):
            return output.logits
        if isinstance(output, Mapping) and "logits" in output:
            return output["logits"]
        if isinstance(output, tuple | list) and output:
            return output[0]
        raise ModelError(
            f"Cannot find logits in a model output of type {type(output).__name__}; expected a "
            "tensor, a tuple whose first element is the logits, or an object with 'logits'. "
            "Declare where they are with repsim.models.set_output_rule(model, logits=...)."
        )
    if isinstance(field, int):
        if not isinstance(output, tuple | list) or not -len(output) <= field < len(output):
            raise ModelError(
                f"The output rule takes element {field} but the model returned "
                f"{type(output).__name__}"
                + (f" of length {len(output)}" if isinstance(output, tuple | list) else "")
                + "."
            )
        return output[field]
    if isinstance(output, Mapping) and field in output:
        return output[field]
    if hasattr(output, field):
        return getattr(output, field)
    raise ModelError(
        f"The output rule takes {field!r} but the model output ({type(output).__name__}) has "
        "no such attribute or key."
    )


def _last_positions(mask: torch.Tensor) -> torch.Tensor:
    """Highest position with ``mask == 1`` per row (0 for a row without any)."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, torch.full_like(positions, -1)).amax(1).clamp(min=0)


def extract_logits(
    output: Any,
    rule: OutputRule | None = None,
    *,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Read ``[batch, classes]`` logits from a model output by ``rule``.

    Parameters
    ----------
    output : Any
        What the model's forward returned.
    rule : OutputRule, optional
        The rule (default: :class:`OutputRule()`).
    attention_mask : torch.Tensor, optional
        ``[batch, tokens]``, 1 on real tokens, for ``token="last"``/``"mean"``.

    Raises
    ------
    ModelError
        No logits found, a 3-D result without a token rule, a result that is not 2-D or 3-D,
        or ``classes`` beyond the output width.
    """
    rule = rule or OutputRule()
    z = _pick(output, rule.logits)
    if not isinstance(z, torch.Tensor):
        raise ModelError(
            f"The model's logits should be a tensor, got {type(z).__name__}; declare where they "
            "are with repsim.models.set_output_rule(model, logits=...)."
        )
    if z.ndim == 3:
        if rule.token is None:
            raise ModelError(
                f"The model returns per-token logits of shape {tuple(z.shape)} "
                "([batch, tokens, classes]); declare which token classifies with "
                "repsim.models.set_output_rule(model, token='last' | 'first' | 'mean')."
            )
        mask = attention_mask
        if mask is not None and tuple(mask.shape) != tuple(z.shape[:2]):
            raise ModelError(
                f"attention_mask of shape {tuple(mask.shape)} does not match the per-token "
                f"logits {tuple(z.shape[:2])}."
            )
        if rule.token == "first":
            z = z[:, 0]
        elif rule.token == "last":
            if mask is None:
                z = z[:, -1]
            else:
                z = z[torch.arange(len(z), device=z.device), _last_positions(mask)]
        else:
            if mask is None:
                z = z.mean(1)
            else:
                m = mask.to(z.dtype).unsqueeze(-1)
                z = (z * m).sum(1) / m.sum(1).clamp(min=1)
    elif z.ndim != 2:
        raise ModelError(
            f"Expected logits of shape [batch, classes] (or [batch, tokens, classes] with a "
            f"token rule), got {tuple(z.shape)}."
        )
    if rule.classes is not None:
        if max(rule.classes) >= z.shape[1]:
            raise ModelError(
                f"The output rule keeps columns {list(rule.classes)} but the logits have only "
                f"{z.shape[1]} columns."
            )
        z = z[:, list(rule.classes)]
    return z


def model_logits(model: nn.Module, x: Inputs) -> torch.Tensor:
    """``[batch, classes]`` logits of ``model`` on a batch, by the model's declared rule.

    Calls ``model(**x)`` for a dict (its ``attention_mask``, when present, serves the token
    rule) and ``model(x)`` otherwise, then :func:`extract_logits` with :func:`output_rule`.
    """
    mask = x.get("attention_mask") if isinstance(x, Mapping) else None
    return extract_logits(call_model(model, x), output_rule(model), attention_mask=mask)


# ----------------------------------------------------------------------------- builders


def import_object(path: str) -> Any:
    """The object named by an import path ``"package.module:attribute"`` (dots after ``:``).

    Raises
    ------
    ModelError
        A malformed path, a module that cannot be imported, or a missing attribute.
    """
    if not isinstance(path, str) or path.count(":") != 1:
        raise ModelError(
            f"Expected an import path 'package.module:name' (e.g. 'mypkg.nets:make_resnet'), "
            f"got {path!r}."
        )
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ModelError(f"Import path {path!r} needs both a module and a name: 'module:name'.")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"Cannot import module {module_name!r} of {path!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"{module_name!r} has no attribute {attr!r} (from {path!r}).")
        obj = getattr(obj, part)
    return obj


def check_jsonable(value: Any, what: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` survives a JSON round trip unchanged."""
    try:
        back = json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{what} must be JSON-serialisable (numbers, strings, lists, dicts): {exc}"
        ) from None
    if back != value:
        raise ConfigError(
            f"{what} does not survive JSON unchanged ({value!r} reads back as {back!r}); use "
            "lists instead of tuples and string keys."
        )


def from_builder(
    target: str | Callable[..., nn.Module], /, *, seed: int | None = None, **kwargs: Any
) -> nn.Module:
    """Build a model by calling an importable builder and record how, so it can be saved.

    Parameters
    ----------
    target : str or callable
        ``"package.module:function"`` (or a class), or the callable itself (its
        ``__module__:__qualname__`` must then import back to it).
    seed : int, optional
        Seed of the weight initialisation (the global RNG is left untouched).
    **kwargs
        JSON-serialisable keyword arguments of the builder.

    Returns
    -------
    torch.nn.Module
        The model, with ``model.repsim_spec = {"builder": path, "kwargs": kwargs}`` read by
        :func:`repsim.models.save_model`.

    Raises
    ------
    ModelError
        The builder cannot be imported, or does not return an ``nn.Module``.
    ConfigError
        ``kwargs`` that are not JSON-serialisable.
    """
    if callable(target) and not isinstance(target, str):
        path = f"{target.__module__}:{target.__qualname__}"
        if "<locals>" in path or import_object(path) is not target:
            raise ModelError(
                f"{path} cannot be imported back; define the builder at module level in an "
                "importable module, or pass its import path."
            )
        fn = target
    else:
        path = target
        fn = import_object(path)
    if not callable(fn):
        raise ModelError(f"{path!r} is not callable.")
    check_jsonable(kwargs, f"The keyword arguments of {path}")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = fn(**kwargs)
    if not isinstance(model, nn.Module):
        raise ModelError(f"{path} returned {type(model).__name__}, not a torch.nn.Module.")
    model.repsim_spec = {"builder": path, "kwargs": dict(kwargs)}  # type: ignore[attr-defined]
    return model
