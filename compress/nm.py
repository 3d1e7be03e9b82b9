"""N:M semi-structured masks: ``n`` kept of every ``m`` consecutive weights along K.

K is the reduction dimension of the layer's GEMM: ``in_features`` of a Linear, and
(Cin/groups)*Kh*Kw of a Conv2d in the order of ``weight.reshape(Cout, -1)`` (Cin outermost,
then Kh, then Kw: the order of ``F.unfold``'s im2col rows). Every output row is split into
K/m groups; in each, the ``n`` highest scores are kept (ties: the lower index). 2:4 is the
pattern of sparse tensor cores (Mishra et al., arXiv:2104.08378, 2021) and of lowbit's
2:4 kernel.

    >>> w = torch.tensor([[0.1, -0.9, 0.3, 0.2, 1.0, 0.0, -2.0, 0.5]])
    >>> nm_mask(w.abs(), 2, 4).int().tolist()
    [[0, 1, 1, 0, 1, 0, 1, 0]]
"""
from __future__ import annotations

import torch

__all__ = ["nm_mask", "layer_nm_mask", "is_nm", "reduction_length"]


def reduction_length(weight: torch.Tensor) -> int:
    """K of a Linear / Conv weight: the product of every dimension after the first."""
    return weight[0].numel()


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Boolean mask of ``scores`` [rows, K] keeping the ``n`` largest of every ``m`` along K.

    K must be a multiple of ``m``. Ties keep the lower index (a stable sort).
    """
    if scores.dim() != 2:
        raise ValueError(f"scores: must be 2-D [rows, K], got shape {tuple(scores.shape)}")
    if not 1 <= n < m:
        raise ValueError(f"n, m: need 1 <= n < m, got n={n}, m={m}")
    rows, k = scores.shape
    if k % m:
        raise ValueError(f"scores: K={k} is not a multiple of m={m}")
    groups = scores.reshape(rows, k // m, m)
    keep = groups.argsort(dim=-1, descending=True, stable=True)[..., :n]
    mask = torch.zeros(groups.shape, dtype=torch.bool, device=scores.device)
    return mask.scatter_(-1, keep, True).reshape(rows, k)


def layer_nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """``nm_mask`` of a weight-shaped score tensor [Cout, ...], reshaped back to its shape."""
    return nm_mask(scores.reshape(scores.shape[0], -1), n, m).reshape(scores.shape)


def is_nm(mask: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of ``m`` along K of a weight-shaped ``mask`` keeps exactly ``n``."""
    flat = mask.reshape(mask.shape[0], -1)
    if flat.shape[1] % m:
        return False
    return bool((flat.reshape(flat.shape[0], -1, m).sum(-1) == n).all())
