"""Small convolutional networks: a compact CNN and a small VGG."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn


def _conv_block(layers: OrderedDict, i: int, cin: int, cout: int, batch_norm: bool) -> None:
    layers[f"conv{i}"] = nn.Conv2d(cin, cout, 3, padding=1, bias=not batch_norm)
    if batch_norm:
        layers[f"bn{i}"] = nn.BatchNorm2d(cout)
    layers[f"relu{i}"] = nn.ReLU()


class SmallCNN(nn.Module):
    """Three 3x3 conv layers, pooling, one hidden dense layer and a classifier.

    ``features``: conv1-relu1, conv2-relu2, pool1 (2x2 max), conv3-relu3, pool2 (adaptive
    average to 2x2); then ``flatten``, ``fc`` (hidden), ``relu``, ``classifier``.

    Parameters
    ----------
    input_shape : sequence of int
        ``(C, H, W)`` of one input; H and W at least 2.
    n_classes : int
        Number of output logits.
    width : int
        Channels of the first conv; the next two have ``2 * width``.
    hidden : int
        Width of the dense layer before the classifier.
    batch_norm : bool
        BatchNorm after each conv.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        n_classes: int,
        width: int = 16,
        hidden: int = 64,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        cin = int(input_shape[0])
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        _conv_block(layers, 1, cin, width, batch_norm)
        _conv_block(layers, 2, width, 2 * width, batch_norm)
        layers["pool1"] = nn.MaxPool2d(2)
        _conv_block(layers, 3, 2 * width, 2 * width, batch_norm)
        layers["pool2"] = nn.AdaptiveAvgPool2d(2)
        self.features = nn.Sequential(layers)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2 * width * 4, hidden)
        self.relu = nn.ReLU()
        self.classifier = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, n_classes]`` of a batch."""
        return self.classifier(self.relu(self.fc(self.flatten(self.features(x)))))


class VGGSmall(nn.Module):
    """A small VGG (Simonyan & Zisserman 2015) for 8x8 to 32x32 inputs.

    ``cfg`` lists conv widths with ``"M"`` for a 2x2 max pool; the feature map is then averaged
    to 1x1 (``avgpool``) and fed to ``classifier`` (a single linear layer).

    Parameters
    ----------
    input_shape : sequence of int
        ``(C, H, W)``.
    n_classes : int
        Number of output logits.
    cfg : sequence of int or "M"
        Layer plan; default ``(32, 32, "M", 64, 64, "M", 128)``.
    batch_norm : bool
        BatchNorm after each conv.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        n_classes: int,
        cfg: Sequence[int | str] = (32, 32, "M", 64, 64, "M", 128),
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        cin, i, p = int(input_shape[0]), 0, 0
        for item in cfg:
            if item == "M":
                p += 1
                layers[f"pool{p}"] = nn.MaxPool2d(2)
            else:
                i += 1
                _conv_block(layers, i, cin, int(item), batch_norm)
                cin = int(item)
        self.features = nn.Sequential(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(cin, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, n_classes]`` of a batch."""
        return self.classifier(self.flatten(self.avgpool(self.features(x))))
