"""Low-rank factorization: ``factorize(model, LowRankConfig(...))`` (truncated SVD).

A weight matrix W [N, K] is replaced by its best rank-r approximation (Eckart-Young):

    W ~ U_r S_r V_r^T = (U_r S_r^1/2) (S_r^1/2 V_r^T) = up @ down

with the singular values split evenly between the two factors (their ranges stay alike,
which helps a later quantization of both).

* ``nn.Linear(K, N)`` -> ``LowRankLinear``: Linear(K, r, bias=False) then Linear(r, N) with
  the original bias; params r (K + N) (+ N), MACs per row r (K + N) instead of K N.
* ``nn.Conv2d(C, N, kh x kw)`` (groups=1) is reshaped to W [N, C kh kw] (im2col order) and
  factorized the same way -> ``LowRankConv2d``: Conv2d(C, r, kh x kw) with the original
  stride, padding, dilation and padding mode, no bias, then a 1x1 Conv2d(r, N) with the
  original bias. Exact for the rank-r weight, since a 1x1 convolution is a per-pixel linear
  map: conv(x, up @ down) = conv1x1(conv(x, down), up). (A Tucker-2 / CP decomposition of the
  4-D kernel is not implemented.)

The rank of each layer comes from the config: a fixed ``rank``, a ``rank_ratio`` of
min(N, K), a ``param_ratio`` (largest r with r (N + K) <= ratio N K) or an ``energy``
threshold (smallest r with sum_{i<r} s_i^2 >= energy * sum s_i^2). A layer whose factors would
not be smaller than the original (r (N + K) >= N K) is left alone (warning).

Both factor layers are plain nn.Linear / nn.Conv2d, so ``profile`` counts their params and
MACs and ``quantize`` can quantize them afterwards. Reference: Denton et al., "Exploiting
Linear Structure Within Convolutional Networks for Efficient Evaluation", NeurIPS 2014 (SVD of
reshaped kernels); Jaderberg et al., BMVC 2014 (a k x k conv to r channels then 1 x 1).

    >>> from lowbit.compress import LowRankConfig, factorize, get_model
    >>> model = factorize(get_model("digits-cnn"), LowRankConfig(param_ratio=0.5),
    ...                   filter_fn=lambda m, name: name in ("conv2", "conv3"))
    >>> model.conv2.rank, model.conv2.full_rank
    (14, 32)
"""
from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .swap import replace_module

__all__ = ["LowRankConfig", "LowRankLinear", "LowRankConv2d", "factorize", "svd_factors",
           "choose_rank", "low_rank_layers"]

FilterFn = Callable[[nn.Module, str], bool]
_SELECTORS = ("rank", "rank_ratio", "param_ratio", "energy")


@dataclass(frozen=True)
class LowRankConfig:
    """How to pick each layer's rank; give exactly one of the four.

    Args:
        rank: a fixed r (capped at min(N, K)).
        rank_ratio: r = max(1, floor(ratio * min(N, K))), ratio in (0, 1].
        param_ratio: the largest r (>= 1) whose two factors hold at most this fraction of
            the layer's N K weights: r = max(1, floor(ratio * N K / (N + K))), in (0, 1].
        energy: the smallest r keeping this fraction of the squared singular values
            (sum_{i<r} s_i^2 / sum s_i^2 >= energy), in (0, 1].

    Example:
        >>> LowRankConfig(rank=8, energy=0.9)
        Traceback (most recent call last):
        ValueError: rank, energy: give exactly one of rank, rank_ratio, param_ratio, energy
    """

    rank: int | None = None
    rank_ratio: float | None = None
    param_ratio: float | None = None
    energy: float | None = None

    def __post_init__(self) -> None:
        given = [n for n in _SELECTORS if getattr(self, n) is not None]
        if len(given) != 1:
            names = ", ".join(given) if given else "rank"
            raise ValueError(f"{names}: give exactly one of {', '.join(_SELECTORS)}")
        if self.rank is not None:
            if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
                raise ValueError(f"rank: must be an integer >= 1, got {self.rank!r}")
            return
        name = given[0]
        value = getattr(self, name)
        if (not isinstance(value, (int, float)) or isinstance(value, bool)
                or not math.isfinite(value) or not 0.0 < value <= 1.0):
            raise ValueError(f"{name}: must be a number in (0, 1], got {value!r}")


def svd_factors(w2d: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(up [N, r], down [r, K]) float32 with up @ down the best rank-r approximation of
    ``w2d`` [N, K], singular values split as S^1/2 on each side (SVD in float64)."""
    u, s, vh = torch.linalg.svd(w2d.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).float(), (root[:, None] * vh[:rank]).float()


def choose_rank(w2d: torch.Tensor, config: LowRankConfig) -> int:
    """The rank ``config`` selects for a weight matrix [N, K] (module doc), in 1..min(N, K)."""
    n, k = w2d.shape
    full = min(n, k)
    if config.rank is not None:
        return min(config.rank, full)
    if config.rank_ratio is not None:
        return max(1, min(full, math.floor(config.rank_ratio * full)))
    if config.param_ratio is not None:
        return max(1, min(full, math.floor(config.param_ratio * n * k / (n + k))))
    s2 = torch.linalg.svdvals(w2d.detach().double()).square()
    total = float(s2.sum())
    if total == 0.0:
        return 1
    kept = torch.cumsum(s2, 0) / total
    # the first r whose kept share reaches the threshold (within float64 rounding)
    return int(torch.searchsorted(kept, torch.tensor(config.energy - 1e-12,
                                                     dtype=torch.float64))) + 1


class LowRankLinear(nn.Sequential):
    """nn.Linear(K, N) as Linear(K, r, bias=False) ``down`` then Linear(r, N) ``up``.

    Example:
        >>> lr = LowRankLinear.from_float(nn.Linear(64, 32), rank=8)
        >>> lr(torch.zeros(2, 64)).shape, lr.rank, lr.full_rank
        (torch.Size([2, 32]), 8, 32)
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True
                 ) -> None:
        super().__init__(OrderedDict([
            ("down", nn.Linear(in_features, rank, bias=False)),
            ("up", nn.Linear(rank, out_features, bias=bias)),
        ]))
        self.rank = rank
        self.full_rank = min(in_features, out_features)

    @classmethod
    def from_float(cls, linear: nn.Linear, rank: int) -> "LowRankLinear":
        """The rank-``rank`` truncated SVD of ``linear`` (module doc)."""
        n, k = linear.weight.shape
        rank = min(rank, n, k)
        up, down = svd_factors(linear.weight, rank)
        new = cls(k, n, rank, bias=linear.bias is not None)
        with torch.no_grad():
            new.down.weight.copy_(down)
            new.up.weight.copy_(up)
            if linear.bias is not None:
                new.up.bias.copy_(linear.bias)
        return new

    def effective_weight(self) -> torch.Tensor:
        """The rank-r weight up @ down [N, K] this layer applies."""
        return self.up.weight @ self.down.weight


class LowRankConv2d(nn.Sequential):
    """nn.Conv2d(C, N, k) as Conv2d(C, r, k) ``down`` (stride, padding, dilation of the
    original, no bias) then a 1x1 Conv2d(r, N) ``up`` with the original bias.

    Example:
        >>> lr = LowRankConv2d.from_float(nn.Conv2d(8, 16, 3, padding=1), rank=4)
        >>> lr(torch.zeros(1, 8, 5, 5)).shape
        torch.Size([1, 16, 5, 5])
    """

    def __init__(self, conv: nn.Conv2d, rank: int) -> None:
        if conv.groups != 1:
            raise ValueError(f"Conv2d(groups={conv.groups}): only groups=1 convolutions are "
                             f"factorized; exclude it with filter_fn")
        super().__init__(OrderedDict([
            ("down", nn.Conv2d(conv.in_channels, rank, conv.kernel_size, conv.stride,
                               conv.padding, conv.dilation, bias=False,
                               padding_mode=conv.padding_mode)),
            ("up", nn.Conv2d(rank, conv.out_channels, 1, bias=conv.bias is not None)),
        ]))
        self.rank = rank
        self.full_rank = min(conv.out_channels, conv.weight[0].numel())

    @classmethod
    def from_float(cls, conv: nn.Conv2d, rank: int) -> "LowRankConv2d":
        """The rank-``rank`` truncated SVD of ``conv``'s [N, C kh kw] weight (module doc)."""
        w2d = conv.weight.reshape(conv.out_channels, -1)
        rank = min(rank, *w2d.shape)
        new = cls(conv, rank)
        up, down = svd_factors(w2d, rank)
        with torch.no_grad():
            new.down.weight.copy_(down.reshape(new.down.weight.shape))
            new.up.weight.copy_(up.reshape(new.up.weight.shape))
            if conv.bias is not None:
                new.up.bias.copy_(conv.bias)
        return new

    def effective_weight(self) -> torch.Tensor:
        """The rank-r kernel [N, C, kh, kw] this layer applies."""
        down = self.down.weight
        return (self.up.weight.reshape(-1, self.rank) @ down.reshape(self.rank, -1)
                ).reshape(-1, *down.shape[1:])


def _factorizable(module: nn.Module, name: str) -> bool:
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d)
                                             and module.groups == 1)


def factorize(model: nn.Module, config: LowRankConfig, *, filter_fn: FilterFn | None = None
              ) -> nn.Module:
    """Replace the selected nn.Linear / nn.Conv2d layers by their truncated SVD; in place.

    W [N, K] (a conv's kernel as [N, C kh kw]) ~ (U_r S_r^1/2)(S_r^1/2 V_r^T), r from
    ``config`` (see the module doc). Layers whose factors would hold at least N K weights are
    left alone with a warning.

    Args:
        model: any nn.Module.
        config: a ``LowRankConfig``.
        filter_fn: ``filter_fn(module, name) -> bool`` asked about every nn.Linear and
            groups=1 nn.Conv2d; default: all of them.

    Returns the model. Example:
        >>> m = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        >>> factorize(m, LowRankConfig(rank=8))[0].rank
        8
    """
    if not isinstance(config, LowRankConfig):
        raise TypeError(f"config: must be a LowRankConfig, got {type(config).__name__}")
    keep = (lambda m, n: True) if filter_fn is None else filter_fn
    targets = [(n, m) for n, m in model.named_modules()
               if n and _factorizable(m, n) and keep(m, n)]
    if not targets:
        raise ValueError("factorize: the model has no nn.Linear / groups=1 nn.Conv2d layer "
                         "accepted by filter_fn")
    plan, skipped = [], []
    for name, mod in targets:
        w2d = mod.weight.reshape(mod.weight.shape[0], -1)
        n, k = w2d.shape
        rank = choose_rank(w2d, config)
        (plan if rank * (n + k) < n * k else skipped).append((name, mod, rank))
    if not plan:
        raise ValueError(f"factorize: no selected layer gets smaller at the chosen ranks "
                         f"(r (N + K) >= N K for {', '.join(n for n, _, _ in skipped)}); "
                         f"choose a lower rank or ratio")
    if skipped:
        warnings.warn(f"{config}: left dense, the factors would not be smaller: "
                      f"{', '.join(f'{n} (r={r})' for n, _, r in skipped)}", RuntimeWarning,
                      stacklevel=2)
    for name, mod, rank in plan:
        cls = LowRankLinear if isinstance(mod, nn.Linear) else LowRankConv2d
        replace_module(model, name, cls.from_float(mod, rank))
    return model


def low_rank_layers(model: nn.Module) -> dict[str, tuple[int, int]]:
    """{name: (rank, full rank)} of every LowRankLinear / LowRankConv2d in ``model``."""
    return {n: (m.rank, m.full_rank) for n, m in model.named_modules()
            if isinstance(m, (LowRankLinear, LowRankConv2d))}
