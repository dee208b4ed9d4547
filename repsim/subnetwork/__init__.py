"""Bias-free subnetwork search: learnt pruning masks on a frozen vanilla model (BISE-style).

See ``docs/subnetwork.md`` for the method, the exact definitions and their sources.
"""

from repsim.subnetwork.gates import gate, gate_weights, gated_forward, hard_mask, init_gates
from repsim.subnetwork.gates import prunable_parameters as prunable_parameters  # deprecated
from repsim.subnetwork.mi import mutual_information
from repsim.subnetwork.search import (
    SearchResult,
    apply_mask,
    as_mask,
    cell_weights,
    search,
    sparsity_report,
)

__all__ = [
    "SearchResult",
    "apply_mask",
    "as_mask",
    "cell_weights",
    "gate",
    "gate_weights",
    "gated_forward",
    "hard_mask",
    "init_gates",
    "mutual_information",
    "search",
    "sparsity_report",
]
