"""CIFAR-style ResNet (He et al. 2016, section 4.2): depth 6n+2, three stages."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from repsim.errors import ModelError


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and a shortcut; ``out += shortcut(x)`` then in-place ReLU.

    Layer names inside a block: ``conv1``, ``bn1``, ``relu1``, ``conv2``, ``bn2``, ``shortcut``
    (identity, or 1x1 conv + BN when the shape changes: option B of He et al.), ``relu2``.
    """

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output: two convolutions plus the shortcut, then ReLU."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return self.relu2(out)


class ResNetCIFAR(nn.Module):
    """ResNet-(6n+2) for small images: stem conv, stages ``layer1..3``, average pool, ``fc``.

    Stage ``k`` has ``n`` blocks of ``width * 2**(k-1)`` channels; stages 2 and 3 halve the
    resolution. ResNet-20 is ``depth=20, width=16``. On 28x28 inputs the last stage's maps are
    64x7x7.

    Parameters
    ----------
    input_shape : sequence of int
        ``(C, H, W)``.
    n_classes : int
        Number of output logits.
    depth : int
        Total depth, ``6n + 2`` (8, 14, 20, 32, 44, 56, 110).
    width : int
        Channels of the first stage.
    """

    def __init__(
        self, input_shape: Sequence[int], n_classes: int, depth: int = 20, width: int = 16
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ModelError(
                f"ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, ...), got {depth}."
            )
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(int(input_shape[0]), width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        cin = width
        for stage in range(3):
            cout = width * 2**stage
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(cin, cout, stride=2 if (stage > 0 and b == 0) else 1))
                cin = cout
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, n_classes]`` of a batch."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(self.flatten(self.avgpool(out)))
