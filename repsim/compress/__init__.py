"""Compression: pruning (magnitude, random, structured, FairGRAPE), masks, quantisation, distillation.

Every function returns a new model (unless asked to work in place) and a record of what it did.
"""

from repsim.compress.distill import (
    DistillationLoss,
    attention_map,
    attention_transfer_loss,
    distill,
    kd_loss,
)
from repsim.compress.fairgrape import (
    fairgrape_masks,
    fairgrape_prune,
    greedy_select,
    group_importance,
)
from repsim.compress.mask import Mask, bake
from repsim.compress.prunable import (
    PrunableParameters,
    PruneRecord,
    classifier_name,
    prunable_parameters,
    pruned_parameters,
)
from repsim.compress.prune import prune
from repsim.compress.quantize import QuantRecord, quantize, quantize_tensor, torch_int8_dynamic
from repsim.compress.schedule import (
    GradualPruning,
    agp_schedule,
    agp_sparsity,
    gradual_prune,
    one_shot_prune,
)

__all__ = [
    "DistillationLoss",
    "GradualPruning",
    "Mask",
    "PrunableParameters",
    "PruneRecord",
    "QuantRecord",
    "agp_schedule",
    "agp_sparsity",
    "attention_map",
    "attention_transfer_loss",
    "bake",
    "classifier_name",
    "distill",
    "fairgrape_masks",
    "fairgrape_prune",
    "gradual_prune",
    "greedy_select",
    "group_importance",
    "kd_loss",
    "one_shot_prune",
    "prunable_parameters",
    "prune",
    "pruned_parameters",
    "quantize",
    "quantize_tensor",
    "torch_int8_dynamic",
]
