"""Models with grouped and depthwise convolutions, shared by ``test_compress_groups.py`` and
the child process of its fallback-ISA test (which rebuilds the architecture by import)."""
from __future__ import annotations

import torch
from torch import nn


class InvertedResidual(nn.Module):
    """MobileNetV2's block (Sandler et al., CVPR 2018): 1x1 expansion (BN, ReLU6), 3x3
    depthwise (BN, ReLU6), 1x1 projection (BN), plus the input when stride 1 and
    cin == cout."""

    def __init__(self, cin: int, cout: int, expand: int, stride: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False),
                                    nn.BatchNorm2d(hidden), nn.ReLU6())
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False),
                                     nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class DepthwiseDigitsNet(nn.Module):
    """A MobileNet-style digits classifier (1 x 8 x 8 input): a 3x3 stem, an inverted
    residual block with its skip connection, a stride-2 block, a grouped 1x1 conv
    (groups=2), global average pooling and a Linear head."""

    def __init__(self, width: int = 16, expand: int = 2, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU6())
        self.block1 = InvertedResidual(width, width, expand, 1)
        self.block2 = InvertedResidual(width, 2 * width, expand, 2)
        self.mix = nn.Sequential(nn.Conv2d(2 * width, 4 * width, 1, groups=2),
                                 nn.BatchNorm2d(4 * width), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mix(self.block2(self.block1(self.stem(x))))
        return self.head(torch.flatten(self.pool(h), 1))
