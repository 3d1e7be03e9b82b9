"""Built-in models for the digits data set (``lowbit.compress.data``): the architectures.

Every model takes images [N, 1, 8, 8] and returns logits [N, 10]:

* ``DigitsCNN``: three 3x3 conv / BatchNorm / ReLU stages (max-pooling after the second and
  third), then one Linear: the model of the compression targets (issues 7 and 8).
* ``DigitsMLP``: Flatten and three Linear layers with ReLU.
* ``DigitsTransformer``: a pre-norm transformer encoder on the image's 8 rows as 8 tokens of
  8 pixels (Vaswani et al., Attention Is All You Need, NeurIPS 2017; the "rows as tokens"
  reading of ViT, Dosovitskiy et al., ICLR 2021, with 1x8 patches): every projection is an
  ``nn.Linear`` and attention is two ``torch.matmul`` calls, like third-party transformer
  code, so Linear-heavy techniques and attention-matmul counting are exercised.

Layer names are stable (``conv1``, ``bn1``, ``fc``, ``blocks.0.attn.q`` ...) because configs
and reports refer to them. Channel counts keep the reduction length K of every layer after
the first a multiple of 32 (int4 group size), e.g. DigitsCNN: K = 9, 288, 288, 256.
The trained, cached versions come from ``lowbit.compress.zoo.get_model``.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

__all__ = ["DigitsCNN", "DigitsMLP", "DigitsTransformer", "SelfAttention", "EncoderBlock"]

IMAGE_HW = 8
NUM_CLASSES = 10


def _check_widths(name: str, widths, count: int) -> tuple[int, ...]:
    widths = tuple(widths)
    if len(widths) != count or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1
                                       for w in widths):
        raise ValueError(f"{name}: must be {count} positive integers, got {widths!r}")
    return widths


class DigitsCNN(nn.Sequential):
    """conv-bn-relu (8x8) -> conv-bn-relu-maxpool (4x4) -> conv-bn-relu-maxpool (2x2) -> fc.

    Convolutions are 3x3, stride 1, padding 1, without bias (the BatchNorm shift is the bias).

    Args:
        channels: output channels of the three convolutions (default (32, 32, 64)).
        num_classes: outputs of the final Linear.

    >>> DigitsCNN()(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(self, channels=(32, 32, 64), num_classes: int = NUM_CLASSES) -> None:
        c1, c2, c3 = _check_widths("channels", channels, 3)
        (num_classes,) = _check_widths("num_classes", (num_classes,), 1)
        super().__init__(OrderedDict([
            ("conv1", nn.Conv2d(1, c1, 3, padding=1, bias=False)),
            ("bn1", nn.BatchNorm2d(c1)),
            ("relu1", nn.ReLU()),
            ("conv2", nn.Conv2d(c1, c2, 3, padding=1, bias=False)),
            ("bn2", nn.BatchNorm2d(c2)),
            ("relu2", nn.ReLU()),
            ("pool2", nn.MaxPool2d(2)),
            ("conv3", nn.Conv2d(c2, c3, 3, padding=1, bias=False)),
            ("bn3", nn.BatchNorm2d(c3)),
            ("relu3", nn.ReLU()),
            ("pool3", nn.MaxPool2d(2)),
            ("flatten", nn.Flatten()),
            ("fc", nn.Linear(c3 * (IMAGE_HW // 4) ** 2, num_classes)),
        ]))


class DigitsMLP(nn.Sequential):
    """Flatten (64 pixels) -> Linear -> ReLU -> Linear -> ReLU -> Linear.

    Args:
        hidden: widths of the two hidden layers (default (128, 64)).
        num_classes: outputs of the last Linear.
    """

    def __init__(self, hidden=(128, 64), num_classes: int = NUM_CLASSES) -> None:
        h1, h2 = _check_widths("hidden", hidden, 2)
        (num_classes,) = _check_widths("num_classes", (num_classes,), 1)
        super().__init__(OrderedDict([
            ("flatten", nn.Flatten()),
            ("fc1", nn.Linear(IMAGE_HW * IMAGE_HW, h1)),
            ("relu1", nn.ReLU()),
            ("fc2", nn.Linear(h1, h2)),
            ("relu2", nn.ReLU()),
            ("fc3", nn.Linear(h2, num_classes)),
        ]))


class SelfAttention(nn.Module):
    """Multi-head self-attention from four ``nn.Linear`` (q, k, v, out) and two matmuls.

    softmax(Q K^T / sqrt(d_head)) V per head, heads concatenated, then ``out``.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads: must divide dim={dim}, got {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.heads, self.head_dim).transpose(1, 2)  # [B, heads, T, d]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        ctx = torch.matmul(scores.softmax(dim=-1), v)
        return self.out(ctx.transpose(1, 2).reshape(b, n, d))


class EncoderBlock(nn.Module):
    """Pre-norm encoder block: x + attn(norm1(x)), then x + fc2(gelu(fc1(norm2(x))))."""

    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class DigitsTransformer(nn.Module):
    """Rows as tokens: embed (Linear 8 -> dim) + learned positions, encoder blocks, final
    LayerNorm, mean over the 8 tokens, Linear head.

    Args:
        dim: token width (default 32).
        depth: encoder blocks (default 2).
        heads: attention heads (default 4; must divide dim).
        mlp_dim: hidden width of each block's MLP (default 64).
        num_classes: outputs of the head.

    >>> DigitsTransformer()(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(self, dim: int = 32, depth: int = 2, heads: int = 4, mlp_dim: int = 64,
                 num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        dim, depth, heads, mlp_dim, num_classes = _check_widths(
            "dim, depth, heads, mlp_dim, num_classes", (dim, depth, heads, mlp_dim, num_classes), 5)
        self.embed = nn.Linear(IMAGE_HW, dim)
        self.pos = nn.Parameter(torch.zeros(1, IMAGE_HW, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(*(EncoderBlock(dim, heads, mlp_dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, IMAGE_HW, IMAGE_HW):
            raise ValueError(f"x: must be [N, 1, 8, 8] images, got {tuple(x.shape)}")
        tokens = self.embed(x.reshape(x.shape[0], IMAGE_HW, IMAGE_HW)) + self.pos
        return self.head(self.norm(self.blocks(tokens)).mean(dim=1))
