"""Naming and selecting the layers of a model whose activations repsim records.

A layer is named by its ``named_modules()`` dotted path (``"layer1.0.conv2"``). The suffix
``":input"`` names what a module *receives* rather than what it returns
(``"fc:input"`` is the penultimate representation fed to the classifier).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence

from torch import nn

from repsim._core.fingerprints import unwrap_model
from repsim.errors import ConfigError, LayerNotFoundError, did_you_mean

INPUT_SUFFIX = ":input"

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


def split_layer_name(layer: str) -> tuple[str, bool]:
    """Split ``"block.conv:input"`` into ``("block.conv", True)``."""
    if layer.endswith(INPUT_SUFFIX):
        return layer[: -len(INPUT_SUFFIX)], True
    return layer, False


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
          ``"layer*.?:input"``; a suffix ``":input"`` applies to every match;
        * a module type (``nn.Conv2d``): every module that is an instance of it;
        * a callable ``f(name, module) -> bool``.

        ``None`` selects :func:`default_layers` (every leaf module).

    Returns
    -------
    list of str
        Layer names, ordered as in ``named_modules()`` (a module's output name before its
        ``":input"`` name), without duplicates.

    Raises
    ------
    LayerNotFoundError
        For a name that is not a module of the model (the message lists close matches), or a
        glob, type or callable that selects nothing.
    ConfigError
        For a selector of another kind.
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
    order = {}
    for i, name in enumerate(modules):
        order[name] = 2 * i
        order[name + INPUT_SUFFIX] = 2 * i + 1
    return sorted(chosen, key=order.__getitem__)


def _resolve(spec: LayerSpec, modules: dict[str, nn.Module]) -> list[str]:
    if isinstance(spec, str):
        base, is_input = split_layer_name(spec)
        suffix = INPUT_SUFFIX if is_input else ""
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
        return [spec]
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
