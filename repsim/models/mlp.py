"""Multi-layer perceptron for tabular data (and flattened images)."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """Fully connected network: ``flatten -> [fc_i -> relu_i (-> drop_i)]* -> classifier``.

    Layer names: ``features.fc1``, ``features.relu1``, ..., ``classifier``.

    Parameters
    ----------
    input_shape : sequence of int
        Shape of one input (flattened inside the model).
    n_classes : int
        Number of output logits.
    hidden : sequence of int
        Width of each hidden layer.
    dropout : float
        Dropout probability after each hidden ReLU (0: no dropout module).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        n_classes: int,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        in_features = int(math.prod(input_shape))
        self.flatten = nn.Flatten()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        prev = in_features
        for i, width in enumerate(hidden, start=1):
            layers[f"fc{i}"] = nn.Linear(prev, int(width))
            layers[f"relu{i}"] = nn.ReLU()
            if dropout > 0:
                layers[f"drop{i}"] = nn.Dropout(dropout)
            prev = int(width)
        self.features = nn.Sequential(layers)
        self.classifier = nn.Linear(prev, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, n_classes]`` of a batch."""
        return self.classifier(self.features(self.flatten(x)))
