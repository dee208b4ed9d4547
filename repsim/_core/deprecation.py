"""Old import paths and argument names keep working, with a :class:`DeprecationWarning`.

repsim 0.2 regrouped the package (see docs/architecture.md). Every module path users imported
from in 0.1 still imports: a finder on ``sys.meta_path`` serves the old name as a thin module
whose attributes resolve, on first access, in the module(s) that now hold them. Renamed
keyword arguments go through :func:`renamed_kwargs`.

The tables below are data, not imports: the new homes are imported by name only when an old
path is used, so no lower layer depends on a higher one.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: Old module path -> the module(s) that now hold its names, searched in order.
MOVED_MODULES: dict[str, tuple[str, ...]] = {
    "repsim.cache": ("repsim.capture.store",),
    "repsim.fingerprints": ("repsim._core.fingerprints",),
    "repsim.shards": ("repsim.capture.shards",),
    "repsim.config": ("repsim.pipeline.config",),
    "repsim.family": ("repsim.pipeline.family",),
    "repsim.study": ("repsim.pipeline.study",),
    "repsim.outofcore": (
        "repsim.similarity.outofcore",
        "repsim.fairness.counts",
        "repsim._core.rows",
    ),
    "repsim.distributed": ("repsim.scale.dask",),
    "repsim.plots": ("repsim.report.exemplar_grid",),
    "repsim.cli_cache": ("repsim.cli.cache",),
    "repsim.cli_compare": ("repsim.pipeline.compare_report", "repsim.cli.compare"),
    "repsim.cli_compress": ("repsim.cli.compress",),
    "repsim.cli_scale": ("repsim.cli.compare",),
    "repsim.cli_subnetwork": ("repsim.pipeline.run_search", "repsim.cli.subnetwork"),
    "repsim.saliency.fairgrape": ("repsim.compress.fairgrape",),
    "repsim.saliency.cli": ("repsim.cli.saliency",),
    "repsim.similarity.cli": ("repsim.cli.similarity",),
}

#: Package -> {old attribute name: module that now holds it}, for names that left a package.
MOVED_NAMES: dict[str, dict[str, str]] = {
    "repsim.saliency": {
        name: "repsim.compress.fairgrape"
        for name in (
            "fairgrape_masks",
            "fairgrape_prune",
            "greedy_select",
            "group_importance",
            "prunable_parameters",
        )
    },
}


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside the import system."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None:
        name = frame.f_code.co_filename
        internal = name.startswith("<frozen importlib") or name == __file__
        if not internal and frame.f_code.co_name != "__getattr__":
            return level
        frame = frame.f_back
        level += 1
    return 2


def _warn(message: str) -> None:
    warnings.warn(message, DeprecationWarning, stacklevel=_caller_stacklevel())


class _MovedModule(types.ModuleType):
    """A module object standing in for an old path: attributes come from the new homes."""

    def __init__(self, name: str, targets: tuple[str, ...]) -> None:
        super().__init__(name, f"Deprecated alias of {', '.join(targets)}.")
        self.__targets__ = targets

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        for target in self.__targets__:
            module = importlib.import_module(target)
            if hasattr(module, attr):
                value = getattr(module, attr)
                setattr(self, attr, value)
                return value
        raise AttributeError(
            f"module {self.__name__!r} (moved to {', '.join(self.__targets__)}) has no "
            f"attribute {attr!r}"
        )

    def __dir__(self) -> list[str]:
        names: set[str] = set(super().__dir__())
        for target in self.__targets__:
            names.update(dir(importlib.import_module(target)))
        return sorted(names)


class _MovedLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _MovedModule(spec.name, MOVED_MODULES[spec.name])

    def exec_module(self, module: types.ModuleType) -> None:
        targets = MOVED_MODULES[module.__name__]
        _warn(
            f"{module.__name__} is deprecated and will be removed in repsim 0.3; import from "
            f"{' or '.join(targets)} instead."
        )


class _MovedFinder(importlib.abc.MetaPathFinder):
    """Serves the module paths of :data:`MOVED_MODULES`."""

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, _MovedLoader(), origin="deprecated")


def install() -> None:
    """Put the finder of old module paths on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())


def moved_attribute(package: str, name: str) -> Any:
    """Resolve ``package.name`` for a name that moved out of ``package`` (with a warning).

    Called from a package's module-level ``__getattr__``; raises ``AttributeError`` for names
    that never lived there.
    """
    target = MOVED_NAMES.get(package, {}).get(name)
    if target is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    _warn(
        f"{package}.{name} is deprecated and will be removed in repsim 0.3; import it from "
        f"{target} instead."
    )
    return getattr(importlib.import_module(target), name)


def renamed_kwargs(
    function: str, kwargs: MutableMapping[str, Any], renames: Mapping[str, str]
) -> None:
    """Move deprecated keyword arguments to their new names in place, with a warning.

    Parameters
    ----------
    function : str
        The public function's name, for the message.
    kwargs : dict
        The call's extra keyword arguments (``**kwargs``); changed in place.
    renames : mapping
        Old name -> new name.

    Raises
    ------
    TypeError
        When both the old and the new name are given, or an unknown keyword remains.
    """
    for old, new in renames.items():
        if old in kwargs:
            if new in kwargs:
                raise TypeError(f"{function}() got both {old!r} (deprecated) and {new!r}.")
            _warn(f"{function}({old}=...) is deprecated; use {new}=... instead.")
            kwargs[new] = kwargs.pop(old)


def renamed_arguments(
    renames: Mapping[str, str], *, convert: Mapping[str, Callable[[Any], Any]] | None = None
) -> Callable[[F], F]:
    """Decorator: the function also takes the old keyword spellings, with a warning.

    ``@renamed_arguments({"by": "groups"})`` lets ``f(by=x)`` mean ``f(groups=x)`` and warn
    (:func:`renamed_kwargs`); the signature shows only the new names. Passing both spellings is
    a ``TypeError``.

    Parameters
    ----------
    renames : mapping
        Old name -> new name.
    convert : mapping, optional
        Old name -> function from an old value to the new one, when the meaning changed with
        the name (``alpha=0.05`` -> ``ci=0.95``).
    """
    conversions = dict(convert or {})

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not renames.keys().isdisjoint(kwargs):
                for old, to_new in conversions.items():
                    if old in kwargs:
                        kwargs[old] = to_new(kwargs[old])
                renamed_kwargs(func.__name__, kwargs, renames)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
