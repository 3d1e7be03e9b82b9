"""NASWOT: a zero-cost proxy of a network's accuracy, scored on one batch without training.

Mellor, Turner, Storkey, Crowley, "Neural Architecture Search without Training", ICML 2021.
Each ReLU unit of the untrained network splits the inputs by its sign; image i gets the binary
code c_i (1 where the unit is active) over all units. With N_A units,

    K[i, j] = N_A - hamming(c_i, c_j) = c_i . c_j + (1 - c_i) . (1 - c_j),
    score = log |det K|.

Networks whose units separate the images of a batch into many distinct linear regions
(codes far apart) score high; the paper finds the score correlates with trained accuracy on
NAS-Bench-201 and NDS. The score does not see training, so it ranks architectures, not bit
widths: on a quantized network it reflects the widths only through their rounding of
activations near zero. A singular K (two images with one code) has log |det K| = -inf;
``naswot`` returns ``SINGULAR_SCORE`` then, below every finite score of these networks.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["naswot", "SINGULAR_SCORE"]

SINGULAR_SCORE = -1.0e6  # log |det K| of a singular kernel (the paper's -inf), kept finite


@torch.no_grad()
def naswot(model: nn.Module, images: torch.Tensor) -> float:
    """NASWOT score (see the module doc) of ``model`` on the batch ``images``.

    Every ``nn.ReLU`` module's output is read through a forward hook; the model runs once in
    its current mode (callers choose train or eval) and is not modified.

    Args:
        model: a network with ``nn.ReLU`` modules (functional ReLUs are not seen).
        images: one batch [N, ...]; N >= 2, images distinct.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        >>> score = naswot(net, torch.randn(16, 1, 8, 8))
    """
    if images.dim() < 2 or images.shape[0] < 2:
        raise ValueError(f"images: need a batch of at least 2, got shape {tuple(images.shape)}")
    codes: list[torch.Tensor] = []

    def hook(module, args, out):
        codes.append((out.detach().reshape(out.shape[0], -1) > 0).to(torch.float64))

    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError(f"model: {type(model).__name__} has no nn.ReLU module to read")
    handles = [m.register_forward_hook(hook) for m in relus]
    try:
        model(images)
    finally:
        for h in handles:
            h.remove()
    c = torch.cat(codes, dim=1)
    k = c @ c.T + (1.0 - c) @ (1.0 - c).T
    sign, logabsdet = torch.linalg.slogdet(k)
    value = float(logabsdet)
    return value if sign != 0 and math.isfinite(value) else SINGULAR_SCORE
