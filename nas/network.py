"""The networks of the search spaces: fused inverted-residual (Fused-MBConv) blocks.

A block expands its input with one k x k convolution (C_in -> e C_in channels, BatchNorm,
ReLU) and projects back with a 1x1 convolution (e C_in -> C_out, BatchNorm); with e = 1 the
k x k convolution maps C_in -> C_out directly (BatchNorm, ReLU) and there is no projection.
The input is added back when the stride is 1 and C_in = C_out (MobileNetV2's inverted
residual, Sandler et al., CVPR 2018, in the fused form of EfficientNet-EdgeTPU, Gupta & Akin
2019, and EfficientNetV2, Tan & Le, ICML 2021).

Why fused and not depthwise: a systolic array maps a groups=1 convolution with full columns,
while a depthwise convolution is C one-column GEMMs that leave most of the array idle, and on
digits' 8x8 images the fused block's extra MACs cost little. (``lowbit.compress.quantize``
quantizes grouped convolutions too, so a depthwise space would also be exportable.) The
depthwise MBConv block is not part of the spaces.

Module names (``stem.conv``, ``stages.S.B.spatial.conv``, ``stages.S.B.project.conv``,
``head``) are what ``lowbit.nas.space.layer_names`` lists, without the ``.conv``.

    >>> import torch
    >>> from lowbit.nas import build, get_space
    >>> space = get_space("digits-mbv2")
    >>> model = build(space.decode([1] * len(space.axes)), space)
    >>> model(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .space import Candidate, SearchSpace, get_space

__all__ = ["ConvBN", "FusedMBConv", "NASNet", "build", "NUM_CLASSES"]

NUM_CLASSES = 10
IN_CHANNELS = 1


class ConvBN(nn.Sequential):
    """conv (no bias) -> BatchNorm2d [-> ReLU], "same" padding."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1,
                 relu: bool = True) -> None:
        parts = [("conv", nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)),
                 ("bn", nn.BatchNorm2d(cout))]
        if relu:
            parts.append(("relu", nn.ReLU()))
        super().__init__(OrderedDict(parts))


class FusedMBConv(nn.Module):
    """Fused inverted residual: k x k expansion conv, 1x1 projection (see the module doc)."""

    def __init__(self, cin: int, cout: int, kernel: int, expand: int, stride: int) -> None:
        super().__init__()
        if expand == 1:
            self.spatial = ConvBN(cin, cout, kernel, stride)
            self.project = None
        else:
            self.spatial = ConvBN(cin, cin * expand, kernel, stride)
            self.project = ConvBN(cin * expand, cout, 1, relu=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.spatial(x)
        if self.project is not None:
            y = self.project(y)
        return x + y if self.residual else y


class NASNet(nn.Module):
    """stem (3x3 conv) -> stages of FusedMBConv -> global average pool -> Linear head."""

    def __init__(self, candidate: Candidate, space: SearchSpace) -> None:
        super().__init__()
        channels = space.channels(candidate.width)
        self.stem = ConvBN(IN_CHANNELS, channels[0], 3)
        cin = channels[0]
        stages = []
        for stage, cout, stride in zip(candidate.stages, channels, space.strides):
            blocks = []
            for b in range(stage.depth):
                blocks.append(FusedMBConv(cin, cout, stage.kernel, stage.expand,
                                          stride if b == 0 else 1))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(cin, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(torch.flatten(self.pool(x), 1))


def build(candidate: Candidate, space: SearchSpace | str = "digits-mbv2") -> NASNet:
    """The untrained float network of ``candidate`` (its architecture validated against
    ``space``; both built-in spaces share the architectures).

    Weights come from torch's global generator: seed it (or use
    ``lowbit.compress.deterministic``) for reproducible initial weights. The candidate's bit
    widths are not applied here (``lowbit.nas.evaluate.quantize_candidate`` does that).
    """
    space = get_space(space)
    space.validate(candidate, bits=False)
    return NASNet(candidate, space)
