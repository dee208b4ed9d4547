"""Naming and selecting the layers of a model whose activations repsim records.

A layer is named by its ``named_modules()`` dotted path (``"layer1.0.conv2"``), then optional
suffixes, in this order:

- ``":input"``: what the module *receives* rather than what it returns (``"fc:input"`` is the
  penultimate representation fed to the classifier);
- ``":head=h"``: attention head ``h`` (0-based) of a module whose output (or input) is the
  concatenation of ``H`` per-head outputs along its last dimension: the features
  ``[h * d_h, (h + 1) * d_h)`` with ``d_h = D / H``
  (``"bert.encoder.layer.3.attention.self:head=2"``, ``"transformer.h.0.attn.c_proj:input:head=1"``).

**Which modules have heads** (:func:`head_count`):

1. a module with the attribute ``repsim_heads = H`` (an ``int`` you set): its output and its
   input are ``H`` concatenated heads;
2. the *output* of a module with an integer ``num_attention_heads``, ``num_heads``,
   ``n_heads`` or ``n_head`` attribute and no output projection among its children (none
   named ``c_proj``, ``o_proj``, ``out_proj``, ``proj``, ``dense`` or ``output``): the
   HuggingFace ``*SelfAttention`` modules of BERT, RoBERTa, ELECTRA... return the context
   layer, the heads side by side, before the output projection;
3. the *input* (``":input"``) of an output projection, a child named ``c_proj``, ``o_proj``,
   ``out_proj`` or ``proj`` of a module with such an attribute: GPT-2's ``attn.c_proj``,
   LLaMA's ``self_attn.o_proj``, timm ViT's ``attn.proj``.

Attention modules whose output has passed the output projection (GPT-2's ``GPT2Attention``,
timm's ``Attention``, ``torch.nn.MultiheadAttention``) do not qualify: the projection mixes
the heads. ``torch.nn.MultiheadAttention`` calls its ``out_proj`` weights without running the
module, so no hook sees that input either.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence

from torch import nn

from repsim._core.fingerprints import unwrap_model
from repsim.errors import ConfigError, LayerNotFoundError, did_you_mean

INPUT_SUFFIX = ":input"
HEAD_SUFFIX = ":head="

#: Attributes that give a module's number of attention heads.
HEAD_ATTRIBUTES = ("num_attention_heads", "num_heads", "n_heads", "n_head")
#: Child names of an attention module's output projection (mixes the heads).
PROJECTION_NAMES = ("c_proj", "o_proj", "out_proj", "proj")
_MIXING_CHILDREN = (*PROJECTION_NAMES, "dense", "output")

LayerSpec = str | type | Callable[[str, nn.Module], bool]
"""One layer selector: a name, a glob, a module type, or ``f(name, module) -> bool``."""

_GLOB_CHARS = set("*?[")


def available_layers(model: nn.Module, *, inputs: bool = False) -> list[str]:
    """List the layer names of ``model`` in ``named_modules()`` order.

    Parameters
    ----------
    model : torch.nn.Module
        The model; ``DataParallel``/DDP wrappers are unwrapped first.
    inputs : bool
        Also list each module's ``":input"`` name, right after its output name.

    Returns
    -------
    list of str
        Dotted module paths (the root module itself, named ``""``, is left out).
    """
    names = []
    for name, _ in unwrap_model(model).named_modules():
        if not name:
            continue
        names.append(name)
        if inputs:
            names.append(name + INPUT_SUFFIX)
    return names


def parse_layer_name(layer: str) -> tuple[str, bool, int | None]:
    """Split ``"attn.c_proj:input:head=1"`` into ``("attn.c_proj", True, 1)``.

    Returns the module path, whether the name is the module's input, and the head (``None``
    for the whole tensor).

    Raises
    ------
    ConfigError
        A ``":head="`` suffix that is not a non-negative integer.
    """
    head: int | None = None
    base = layer
    if HEAD_SUFFIX in layer:
        base, _, value = layer.rpartition(HEAD_SUFFIX)
        if not value.isdigit():
            raise ConfigError(
                f"Layer {layer!r}: a head suffix reads ':head=<h>' with h a non-negative "
                f"integer (e.g. 'encoder.layer.0.attention.self:head=3'), got {value!r}."
            )
        head = int(value)
    if base.endswith(INPUT_SUFFIX):
        return base[: -len(INPUT_SUFFIX)], True, head
    return base, False, head


def split_layer_name(layer: str) -> tuple[str, bool]:
    """Split ``"block.conv:input"`` into ``("block.conv", True)`` (a head suffix is dropped)."""
    base, is_input, _ = parse_layer_name(layer)
    return base, is_input


def _heads_attribute(module: nn.Module) -> int | None:
    for attr in HEAD_ATTRIBUTES:
        value = getattr(module, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def head_count(model: nn.Module, layer: str) -> int:
    """Number of attention heads the output (or ``":input"``) of a module is made of.

    See the module docstring for which modules qualify and how ``H`` is read.

    Parameters
    ----------
    model : torch.nn.Module
        The model (wrappers unwrapped).
    layer : str
        A module path, optionally suffixed ``":input"`` (a ``":head="`` suffix is ignored).

    Returns
    -------
    int
        ``H``.

    Raises
    ------
    LayerNotFoundError
        The module does not exist.
    ConfigError
        The module's output (input) is not a concatenation of per-head outputs, by the rules
        above; the message names the modules that are.
    """
    model = unwrap_model(model)
    base, is_input, _ = parse_layer_name(layer)
    modules = dict(model.named_modules())
    if base not in modules:
        raise LayerNotFoundError(
            f"The model has no layer {base!r}.{did_you_mean(base, modules)} "
            "List names with repsim.available_layers(model)."
        )
    module = modules[base]
    declared = getattr(module, "repsim_heads", None)
    if isinstance(declared, int) and not isinstance(declared, bool) and declared > 0:
        return declared
    if not is_input:
        heads = _heads_attribute(module)
        children = {name for name, _ in module.named_children()}
        if heads is not None and not children & set(_MIXING_CHILDREN):
            return heads
    else:
        parent_name, _, child = base.rpartition(".")
        parent = modules.get(parent_name) if parent_name else model
        heads = None if parent is None else _heads_attribute(parent)
        if heads is not None and child in PROJECTION_NAMES:
            return heads
    raise ConfigError(
        f"Layer {layer!r} has no per-head outputs repsim can split: heads exist at the output "
        "of an attention module that returns its heads side by side (HF *SelfAttention, e.g. "
        "'encoder.layer.0.attention.self'), at the ':input' of an output projection "
        "('attn.c_proj:input', 'self_attn.o_proj:input', 'attn.proj:input'), or where you set "
        "module.repsim_heads = H."
    )


def default_layers(model: nn.Module) -> list[str]:
    """The layers :func:`select_layers` picks when given ``None``: every leaf module.

    A leaf module has no child modules (``Conv2d``, ``Linear``, ``BatchNorm2d``, ``ReLU``, ...);
    ``nn.Identity``, ``nn.Dropout*`` and ``nn.Flatten`` are skipped since they only repeat their
    input (in eval mode) or reshape it.
    """
    skip = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Flatten)
    return [
        name
        for name, module in unwrap_model(model).named_modules()
        if name and not any(True for _ in module.children()) and not isinstance(module, skip)
    ]


def select_layers(
    model: nn.Module, layers: LayerSpec | Sequence[LayerSpec] | None = None
) -> list[str]:
    """Resolve layer selectors to a list of distinct layer names, in model order.

    Parameters
    ----------
    model : torch.nn.Module
        The model; ``DataParallel``/DDP wrappers are unwrapped first.
    layers : selector, sequence of selectors, or None
        Each selector is one of

        * an exact dotted name, optionally suffixed ``":input"``;
        * a glob (``fnmatch`` rules; ``*`` also matches dots), e.g. ``"layer3.*"`` or
          ``"layer*.?:input"``; a suffix ``":input"`` (or ``":head=h"``) applies to every
          match;
        * a module type (``nn.Conv2d``): every module that is an instance of it;
        * a callable ``f(name, module) -> bool``.

        ``None`` selects :func:`default_layers` (every leaf module).

    Returns
    -------
    list of str
        Layer names, ordered as in ``named_modules()`` (a module's output name before its
        ``":input"`` name, heads in order after the whole tensor), without duplicates.

    Raises
    ------
    LayerNotFoundError
        For a name that is not a module of the model (the message lists close matches), or a
        glob, type or callable that selects nothing.
    ConfigError
        For a selector of another kind, or a ``":head=h"`` on a module without per-head
        outputs (see :func:`head_count`) or beyond its number of heads.
    """
    model = unwrap_model(model)
    modules = {name: m for name, m in model.named_modules() if name}
    if layers is None:
        return default_layers(model)
    if isinstance(layers, str | type) or (callable(layers) and not isinstance(layers, Sequence)):
        specs: Iterable[LayerSpec] = [layers]
    else:
        specs = layers
    chosen: set[str] = set()
    for spec in specs:
        chosen.update(_resolve(spec, modules))
    index = {name: i for i, name in enumerate(modules)}

    def order(layer: str) -> tuple[int, int, int]:
        base, is_input, head = parse_layer_name(layer)
        return index[base], int(is_input), -1 if head is None else head

    for layer in chosen:
        _check_head(model, layer)
    return sorted(chosen, key=order)


def _check_head(model: nn.Module, layer: str) -> None:
    """Raise unless a ``":head=h"`` layer names a head the module has."""
    head = parse_layer_name(layer)[2]
    if head is None:
        return
    heads = head_count(model, layer)
    if head >= heads:
        raise ConfigError(
            f"Layer {layer!r}: the module has {heads} heads, numbered 0 to {heads - 1}."
        )


def _resolve(spec: LayerSpec, modules: dict[str, nn.Module]) -> list[str]:
    if isinstance(spec, str):
        base, is_input, head = parse_layer_name(spec)
        suffix = (INPUT_SUFFIX if is_input else "") + (
            "" if head is None else f"{HEAD_SUFFIX}{head}"
        )
        if _GLOB_CHARS & set(base):
            found = [n + suffix for n in modules if fnmatch.fnmatchcase(n, base)]
            if not found:
                raise LayerNotFoundError(
                    f"Layer pattern {spec!r} matches no module of the model."
                    f"{did_you_mean(base, modules)} List names with repsim.available_layers(model)."
                )
            return found
        if base not in modules:
            raise LayerNotFoundError(
                f"The model has no layer {base!r}.{did_you_mean(base, modules)} "
                "List names with repsim.available_layers(model)."
            )
        return [base + suffix]
    if isinstance(spec, type):
        if not issubclass(spec, nn.Module):
            raise ConfigError(f"Layer type {spec.__name__} is not a torch.nn.Module subclass.")
        found = [n for n, m in modules.items() if isinstance(m, spec)]
        what = f"module of type {spec.__name__}"
    elif callable(spec):
        found = [n for n, m in modules.items() if spec(n, m)]
        what = f"module for which {getattr(spec, '__name__', repr(spec))}(name, module) is true"
    else:
        raise ConfigError(
            f"Cannot select layers with {spec!r}; give a name, a glob, a module type or a "
            "callable f(name, module) -> bool."
        )
    if not found:
        raise LayerNotFoundError(f"The model has no {what}.")
    return found
