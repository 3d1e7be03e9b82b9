"""Quantization granularity as a type: which elements share one scale / zero point.

Every granularity maps a tensor to a 3-D *block view* ``[A, G, L]``: one (scale, zero point)
per ``(a, g)``, shared by the ``L`` elements of that block. Quantization parameters therefore
always have the shape ``[A, G]`` (``param_shape``), and one quantize primitive
(``lowbit.compress.qfunc``) serves all granularities instead of three copies.

* ``PerTensor()``: ``[1, 1, numel]``.
* ``PerChannel(axis)``: ``[C, 1, numel / C]`` with C = ``x.shape[axis]`` (axis 0: the output
  channels of an nn.Linear / nn.Conv2d weight).
* ``PerGroup(size)``: ``[x.shape[0], R / size, size]`` with R = ``numel / x.shape[0]``: groups
  of ``size`` consecutive elements of each ``x[i]`` in row-major order. For a Linear weight
  [N, K] these are groups along K; for a Conv2d weight [O, I, kh, kw] groups along the
  flattened I * kh * kw reduction, the K of the im2col GEMM (the kernels' int4 grouping).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PerTensor:
    """One scale for the whole tensor."""

    def blocks(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(1, 1, -1)

    def unblocks(self, xb: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        return xb.reshape(shape)

    def param_shape(self, shape: torch.Size) -> tuple[int, int]:
        return (1, 1)


@dataclass(frozen=True)
class PerChannel:
    """One scale per index along ``axis`` (default 0, the output channels of a weight)."""

    axis: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.axis, int) or isinstance(self.axis, bool):
            raise TypeError(f"PerChannel.axis: must be an int, got {self.axis!r}")

    def _axis(self, shape: torch.Size) -> int:
        if not -len(shape) <= self.axis < len(shape):
            raise ValueError(f"PerChannel.axis: {self.axis} is out of range for a tensor of "
                             f"shape {tuple(shape)}; pass PerChannel(axis) with an existing axis")
        return self.axis % len(shape)

    def blocks(self, x: torch.Tensor) -> torch.Tensor:
        xm = x.movedim(self._axis(x.shape), 0)
        return xm.reshape(xm.shape[0], 1, -1)

    def unblocks(self, xb: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        ax = self._axis(shape)
        moved = (shape[ax],) + tuple(s for i, s in enumerate(shape) if i != ax)
        return xb.reshape(moved).movedim(0, ax)

    def param_shape(self, shape: torch.Size) -> tuple[int, int]:
        return (shape[self._axis(shape)], 1)


@dataclass(frozen=True)
class PerGroup:
    """One scale per group of ``size`` consecutive elements of each ``x[i]`` (see module doc)."""

    size: int

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 1:
            raise ValueError(f"PerGroup.size: must be a positive int, got {self.size!r}; "
                             f"e.g. PerGroup(32)")

    def _groups(self, shape: torch.Size) -> int:
        if len(shape) < 2:
            raise ValueError(f"PerGroup({self.size}): needs a tensor of at least 2 dims, got "
                             f"shape {tuple(shape)}")
        row = 1
        for s in shape[1:]:
            row *= s
        if row % self.size:
            raise ValueError(f"PerGroup({self.size}): the {row} elements of each row (shape "
                             f"{tuple(shape)}) are not a multiple of the group size; pick a "
                             f"size that divides {row}")
        return row // self.size

    def blocks(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], self._groups(x.shape), self.size)

    def unblocks(self, xb: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        return xb.reshape(shape)

    def param_shape(self, shape: torch.Size) -> tuple[int, int]:
        return (shape[0], self._groups(shape))


Granularity = PerTensor | PerChannel | PerGroup
GRANULARITIES = (PerTensor, PerChannel, PerGroup)
