"""Bias-free subnetwork search: learnt pruning masks on a frozen vanilla model.

``search(model, data, bias_labels=..., method="bise")`` runs BISE (structured gates, De Moura
Matos et al., CVPR 2026); ``method="surgeon"`` the weight-gate search after Debiasing Surgeon
(Nahon et al., ECCV 2024). :mod:`repsim.subnetwork.controls` builds the random and magnitude
controls at equal sparsity and :mod:`repsim.subnetwork.report` measures bias beside them. See
``docs/subnetwork.md`` for the method, the exact definitions and their sources.
"""

from repsim.subnetwork.bias import (
    aligned_cells,
    bise_weights,
    cell_weights,
    conflicting_samples,
)
from repsim.subnetwork.bise import conflicting_mi, search_bise
from repsim.subnetwork.channels import ChannelUnit, channel_units, param_mask
from repsim.subnetwork.controls import magnitude_control, random_control
from repsim.subnetwork.gates import (
    gate,
    gate_weights,
    gated_forward,
    hard_mask,
    init_gates,
    step_gate,
)
from repsim.subnetwork.gates import prunable_parameters as prunable_parameters  # deprecated
from repsim.subnetwork.mi import mutual_information
from repsim.subnetwork.search import (
    SearchResult,
    apply_mask,
    as_mask,
    search,
    search_surgeon,
    sparsity_report,
)

__all__ = [
    "ChannelUnit",
    "SearchResult",
    "aligned_cells",
    "apply_mask",
    "as_mask",
    "bise_weights",
    "cell_weights",
    "channel_units",
    "conflicting_mi",
    "conflicting_samples",
    "gate",
    "gate_weights",
    "gated_forward",
    "hard_mask",
    "init_gates",
    "magnitude_control",
    "mutual_information",
    "param_mask",
    "random_control",
    "search",
    "search_bise",
    "search_surgeon",
    "sparsity_report",
    "step_gate",
]
