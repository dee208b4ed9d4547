"""Which weights each group depends on, and what compression removed.

- :mod:`~repsim.saliency.gradient`: SalUn gradient weight saliency per group, saliency masks.
- :mod:`~repsim.saliency.overlap`: share of each group's salient weights a pruning mask removed
  (vs chance), Jaccard between groups' salient sets.
- :mod:`~repsim.compress.fairgrape`: FairGRAPE group-aware importance and pruning.
- :mod:`~repsim.saliency.curvature`: per-group gradient norm and Hutchinson Hessian trace
  (Tran et al. 2022).
- :mod:`~repsim.saliency.attribution`: captum layer attributions per group and per unit.
- :mod:`~repsim.saliency.plots`: figures.
"""

from repsim.saliency.attribution import attribution_share, group_layer_attributions, pruned_units
from repsim.saliency.curvature import (
    TraceEstimate,
    disparate_impact_predictors,
    group_gradient_norm,
    group_hessian_trace,
)
from repsim.saliency.gradient import (
    ParameterNotFoundError,
    saliency_mask,
    weight_saliency,
)
from repsim.saliency.overlap import (
    jaccard,
    pruning_mask,
    removed_share,
    salient_jaccard,
    salient_removed,
)
from repsim.saliency.plots import plot_saliency_histograms, plot_salient_removed

__all__ = [
    "ParameterNotFoundError",
    "TraceEstimate",
    "attribution_share",
    "disparate_impact_predictors",
    "group_gradient_norm",
    "group_hessian_trace",
    "group_layer_attributions",
    "jaccard",
    "plot_saliency_histograms",
    "plot_salient_removed",
    "pruned_units",
    "pruning_mask",
    "removed_share",
    "saliency_mask",
    "salient_jaccard",
    "salient_removed",
    "weight_saliency",
]


def __getattr__(name: str) -> object:
    from repsim._core.deprecation import moved_attribute

    return moved_attribute(__name__, name)
