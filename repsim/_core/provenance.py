"""Provenance: the versions and the thread count recorded with every result.

One function, :func:`provenance`, gives what determines the numbers repsim writes: the versions
of repsim, torch, numpy, scipy, scikit-learn, zarr (when installed), Python, and torch's
intra-op thread count. The activation cache stores it in every entry's attrs
(:mod:`repsim.capture.store`); every study report stores it in ``results.json["versions"]``
(:mod:`repsim.pipeline.study`).

A package that is already imported reports its ``__version__``; one that is not is looked up in
the installed distribution's metadata instead of being imported (scikit-learn alone takes
seconds to import, and a capture need not pay for it).
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys

from repsim._version import __version__

__all__ = ["PACKAGES", "provenance"]

#: (distribution name, import name) of every package whose version is recorded, in order.
PACKAGES: tuple[tuple[str, str], ...] = (
    ("torch", "torch"),
    ("numpy", "numpy"),
    ("scipy", "scipy"),
    ("scikit-learn", "sklearn"),
    ("zarr", "zarr"),
)


def _version_of(distribution: str, module: str) -> str | None:
    """The installed version of a package, or ``None``.

    The version of ``module`` (imported) or of ``distribution`` (installed); ``None``
    when neither is available.
    """
    loaded = sys.modules.get(module)
    version = getattr(loaded, "__version__", None) if loaded is not None else None
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance() -> dict[str, str]:
    """Versions and thread count that determine repsim's numbers.

    Returns
    -------
    dict of str to str
        ``repsim``, ``torch``, ``numpy``, ``scipy``, ``scikit-learn``, ``zarr`` (omitted when
        zarr is not installed; so is any other package missing from the environment),
        ``python`` (``platform.python_version()``) and ``threads`` (``torch.get_num_threads()``
        as a string), in that order.

    Examples
    --------
    >>> info = provenance()
    >>> sorted(info)[:3]
    ['numpy', 'python', 'repsim']
    """
    import torch

    out = {"repsim": __version__}
    for distribution, module in PACKAGES:
        version = _version_of(distribution, module)
        if version is not None:
            out[distribution] = version
    out["python"] = platform.python_version()
    out["threads"] = str(torch.get_num_threads())
    return out
