"""repsim: layer-wise representation similarity to explain why compression makes models unfair.

The public API, grouped by pipeline stage (see docs/architecture.md for the data flow). Each
stage also lives in its own subpackage (``repsim.data``, ``repsim.capture``,
``repsim.similarity``, ...) and can be called alone. Names are imported on first use, so
``import repsim`` (and the ``repsim`` command's ``--help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from repsim._core import deprecation as _deprecation
from repsim._version import __version__
from repsim.errors import RepsimError, UndefinedMetricWarning

_deprecation.install()

#: Public name -> the module that defines it, in pipeline order.
_API: dict[str, str] = {
    # data
    "GroupedData": "repsim.data",
    "GroupedDataset": "repsim.data",
    "as_grouped": "repsim.data",
    "list_datasets": "repsim.data",
    "load_dataset": "repsim.data",
    # models and layers
    "build_model": "repsim.models",
    "from_builder": "repsim.models",
    "load_model": "repsim.models",
    "save_model": "repsim.models",
    "set_output_rule": "repsim.models",
    "available_layers": "repsim.layers",
    "select_layers": "repsim.layers",
    # training
    "Evaluation": "repsim.train",
    "evaluate": "repsim.train",
    "fit": "repsim.train",
    # compression
    "Mask": "repsim.compress",
    "distill": "repsim.compress",
    "fairgrape_prune": "repsim.compress",
    "prune": "repsim.compress",
    "quantize": "repsim.compress",
    # capture
    "ActivationStore": "repsim.capture",
    "Capture": "repsim.capture",
    "record": "repsim.capture",
    "record_reductions": "repsim.capture",
    # similarity
    "SimilarityTable": "repsim.similarity",
    "cka": "repsim.similarity",
    "compare": "repsim.similarity",
    "mean_cca": "repsim.similarity",
    "measures": "repsim.similarity",
    "procrustes": "repsim.similarity",
    "pwcca": "repsim.similarity",
    "stream_cca": "repsim.similarity",
    "stream_cka": "repsim.similarity",
    "svcca": "repsim.similarity",
    # fairness
    "CompressionShift": "repsim.fairness",
    "Exemplars": "repsim.fairness",
    "GroupMetrics": "repsim.fairness",
    "MetricTable": "repsim.fairness",
    "bias_amplification": "repsim.fairness",
    "compression_shift": "repsim.fairness",
    "exemplars": "repsim.fairness",
    "group_metrics": "repsim.fairness",
    "per_class_test": "repsim.fairness",
    "stream_group_metrics": "repsim.fairness",
    # saliency
    "group_hessian_trace": "repsim.saliency",
    "group_layer_attributions": "repsim.saliency",
    "saliency_mask": "repsim.saliency",
    "salient_removed": "repsim.saliency",
    "weight_saliency": "repsim.saliency",
    # explain
    "Relations": "repsim.explain",
    "relate": "repsim.explain",
    # pipeline
    "run_study": "repsim.pipeline",
}

__all__ = [
    "__version__",
    "RepsimError",
    "UndefinedMetricWarning",
    *_API,
]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'repsim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
