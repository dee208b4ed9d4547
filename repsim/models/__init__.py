"""Models: small reference architectures (no torchvision), model I/O, and adapters for user models.

- :mod:`~repsim.models.registry`: :func:`build_model` by name (MLP, CNN, ResNet, VGG).
- :mod:`~repsim.models.io`: :func:`save_model` / :func:`load_model` (safetensors + JSON spec)
  for repsim architectures, importable builders and ``transformers`` models.
- :mod:`~repsim.models.adapters`: call any ``nn.Module`` on a tensor or a dict of tensors and
  read its logits by a declared rule (:func:`set_output_rule`); :func:`from_builder`.
"""

from repsim.models.adapters import (
    OutputRule,
    extract_logits,
    from_builder,
    model_logits,
    output_rule,
    set_output_rule,
)
from repsim.models.cnn import SmallCNN, VGGSmall
from repsim.models.io import load_model, load_state_dict_pruned, save_model
from repsim.models.mlp import MLP
from repsim.models.registry import MODELS, build_model, list_models, model_options
from repsim.models.resnet import BasicBlock, ResNetCIFAR

__all__ = [
    "MLP",
    "MODELS",
    "BasicBlock",
    "OutputRule",
    "ResNetCIFAR",
    "SmallCNN",
    "VGGSmall",
    "build_model",
    "extract_logits",
    "from_builder",
    "list_models",
    "load_model",
    "load_state_dict_pruned",
    "model_logits",
    "model_options",
    "output_rule",
    "save_model",
    "set_output_rule",
]
