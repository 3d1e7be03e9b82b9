"""Fold BatchNorm2d into the preceding Conv2d (inference statistics), before quantizing.

With a = gamma / sqrt(running_var + eps) per output channel:

    w' = w * a,    b' = (b - running_mean) * a + beta

so conv'(x) == bn(conv(x)) in eval mode (grouped and depthwise convs too: a scales whole
output channels); the BatchNorm is replaced by nn.Identity. Pairs are
found with torch.fx (a BatchNorm2d whose only input is a Conv2d used nowhere else), and for
models fx cannot trace, as adjacent (Conv2d, BatchNorm2d) entries of an nn.Sequential.
(Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", section 3.2.)
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch
from torch import fx, nn

from .swap import replace_module


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
            and bn.track_running_stats and bn.running_mean is not None
            and bn.num_features == conv.out_channels)


def _fx_pairs(model: nn.Module) -> list[tuple[str, str]]:
    graph = fx.symbolic_trace(model).graph
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not node.args:
            continue
        src = node.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module"):
            continue
        conv, bn = model.get_submodule(src.target), model.get_submodule(node.target)
        if (_foldable(conv, bn) and len(src.users) == 1 and calls[src.target] == 1
                and calls[node.target] == 1):
            pairs.append((src.target, node.target))
    return pairs


def _sequential_pairs(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for prefix, mod in model.named_modules():
        if not isinstance(mod, nn.Sequential):
            continue
        names = list(mod._modules)
        for a, b in zip(names, names[1:]):
            if _foldable(mod._modules[a], mod._modules[b]):
                p = f"{prefix}." if prefix else ""
                pairs.append((p + a, p + b))
    return pairs


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Names (conv, bn) of the foldable Conv2d -> BatchNorm2d pairs in ``model``."""
    try:
        return _fx_pairs(model)
    except Exception:  # noqa: BLE001 - user forward() code can fail tracing in any way
        return _sequential_pairs(model)


@torch.no_grad()
def fold_batchnorm(model: nn.Module, filter_fn: Callable[[nn.Module, str], bool] | None = None
                   ) -> list[tuple[str, str]]:
    """Fold every Conv2d -> BatchNorm2d pair in place; returns the folded (conv, bn) names.

    ``filter_fn(conv, name)`` limits folding to the convolutions it accepts.

    Example:
        >>> m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).eval()
        >>> fold_batchnorm(m)
        [('0', '1')]
        >>> m[1]
        Identity()
    """
    folded = []
    for conv_name, bn_name in conv_bn_pairs(model):
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        if filter_fn is not None and not filter_fn(conv, conv_name):
            continue
        a = bn.running_var.double().add(bn.eps).rsqrt()
        if bn.weight is not None:
            a = a * bn.weight.double()
        b = conv.bias.double() if conv.bias is not None else torch.zeros_like(a)
        b = (b - bn.running_mean.double()) * a
        if bn.bias is not None:
            b = b + bn.bias.double()
        w = conv.weight.double() * a.reshape(-1, 1, 1, 1)
        conv.weight.copy_(w.to(conv.weight.dtype))
        if conv.bias is None:
            conv.bias = nn.Parameter(b.to(conv.weight.dtype))
        else:
            conv.bias.copy_(b.to(conv.bias.dtype))
        replace_module(model, bn_name, nn.Identity())
        folded.append((conv_name, bn_name))
    return folded
