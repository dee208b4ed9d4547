"""Every exception and warning class repsim raises.

Every error repsim raises on bad input derives from :class:`RepsimError`, so callers can catch
one type, and the command line turns any of them into a message and exit code 2. Warnings say
that a value is undefined (NaN) or computed on reduced data; they are never silent.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RepsimError(Exception):
    """Base class of every error repsim raises on bad input or bad state."""


class ConfigError(RepsimError, ValueError):
    """A study or training config is malformed: unknown key, wrong type, missing value."""


class DataError(RepsimError, ValueError):
    """A dataset is unknown, missing, malformed, or its arrays disagree."""


class ModelError(RepsimError, ValueError):
    """A model name is unknown or a model does not fit what it is asked to do."""


class ShapeError(RepsimError, ValueError):
    """Arrays have the wrong number of dimensions or mismatched sizes."""


class NonFiniteError(RepsimError, ValueError):
    """An array (activations, scores) holds NaN or infinite values."""


class LayerNotFoundError(RepsimError, KeyError):
    """A requested layer does not exist in a model."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class SampleOrderError(RepsimError, ValueError):
    """Two captures or prediction sets do not hold the same samples in the same order."""


class CacheError(RepsimError):
    """The activation cache is unusable: a path that is a file, a foreign or corrupt entry."""


class CacheCorruptError(CacheError):
    """A cache entry is damaged (a chunk missing, truncated, flipped or swapped); never served."""


class FingerprintError(CacheError):
    """A model holds state the cache key cannot cover (a hook function); it is not cached."""


class OutputError(RepsimError, OSError):
    """A file cannot be written or read back: read-only or full disk, a damaged file."""


class MaskError(RepsimError, ValueError):
    """A pruning mask does not fit a model (unknown parameter names, wrong shapes)."""


class InsufficientDataError(RepsimError, ValueError):
    """Too few samples (overall, or in a group) for a statistic to be defined."""


class MaskKeyError(MaskError, KeyError):
    """A parameter name the mask has no entry for (a ``KeyError``, so mapping idioms work)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ParameterNotFoundError(LayerNotFoundError):
    """A requested parameter name does not exist in the model (or in a mask/map)."""


class ClusterError(RepsimError):
    """A Dask cluster cannot be reached, or lost workers beyond what retries can cover."""


# ------------------------------------------------------------------------------ warnings


class UndefinedMetricWarning(RuntimeWarning):
    """A metric is undefined (empty group, zero denominator) and was set to NaN."""


class SimilarityWarning(UserWarning):
    """A similarity value is undefined (returned as NaN), ill-posed, or computed on reduced data.

    Raised as a warning, never silently: dropped dead units, CCA with too few samples for the
    kept dimensions, a zero-variance layer, a negative debiased HSIC.
    """


class RelationWarning(UserWarning):
    """A relation statistic is undefined (NaN): too few members or a constant input."""


class PruningWarning(UserWarning):
    """Pruning left a layer pruned to 100 % or with dead outputs (units whose weights are all 0)."""


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return a ``" Did you mean ...?"`` suffix listing the closest of ``choices`` to ``name``.

    Parameters
    ----------
    name : str
        The name the user gave.
    choices : iterable of str
        The valid names.
    n : int
        How many close matches to list at most.

    Returns
    -------
    str
        An empty string when nothing is close, else a sentence starting with a space.
    """
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    if not close:
        return ""
    return " Did you mean " + ", ".join(repr(c) for c in close) + "?"
