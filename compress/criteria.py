"""Pruning criteria: a score per weight (unstructured, N:M) or per channel class (structured).

Higher score = more important = kept. Weight scores (``weight_scores``):

* "magnitude": |w| (Han et al., NeurIPS 2015);
* "taylor": (dL/dw * w)^2 averaged over batches, the squared first-order estimate of the
  loss change when w is zeroed (Molchanov et al., Importance Estimation for Neural Network
  Pruning, CVPR 2019).

Channel scores (``channel_scores``), per class of a ``ChannelGraph``:

* "l1", "l2": the norm of each producer's filter (weight row), the class's mean over its
  producers (Li et al., Pruning Filters for Efficient ConvNets, ICLR 2017);
* "fpgm": sum_j ||F_i - F_j||_2 over the layer's other filters F_j; the filters nearest the
  geometric median have the smallest sum and are the most replaceable (He et al., Filter
  Pruning via Geometric Median, CVPR 2019);
* "slim": |gamma| of the BatchNorm layers the class passes through (Liu et al., Network
  Slimming, ICCV 2017); classes without a BatchNorm are not scored (kept);
* "apoz": 1 - APoZ, the average percentage of zeros of the channel in the input of the
  layers that read it (Hu et al., Network Trimming, arXiv:1607.03250); "mean_activation":
  the mean of that input (NNI's ActivationMeanRank pruner). Both from ``data``;
* "taylor": (sum over every parameter the class masks, producer rows and biases, BatchNorm
  scale and shift, depthwise filters, of dL/dp * p)^2, averaged over batches: the
  first-order loss change of removing the whole channel (Molchanov et al., CVPR 2019).

``data`` is an iterable of input batches or of (inputs, labels) pairs (a DataLoader); the
Taylor criteria need the labels. The model runs in eval mode (BatchNorm statistics are not
updated) and its ``.grad`` fields are left untouched.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from .depgraph import _BN, ChannelGraph
from .training import cross_entropy_loss

__all__ = ["weight_scores", "channel_scores", "filter_norms", "fpgm_scores"]

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def _batches(data: Iterable, need_labels: bool, what: str):
    """Yield (inputs, labels or None) from ``data``; at least one batch."""
    if data is None:
        raise ValueError(f"data: the {what} criterion needs data; pass data=<DataLoader or "
                         f"iterable of batches>")
    n = 0
    for batch in data:
        x, y = (batch[0], batch[1] if len(batch) > 1 else None) \
            if isinstance(batch, (tuple, list)) else (batch, None)
        if need_labels and y is None:
            raise ValueError(f"data: the {what} criterion needs labels; pass (inputs, labels) "
                             f"batches, e.g. a DataLoader of the training split")
        n += 1
        yield x, y
    if n == 0:
        raise ValueError("data: yielded no batch")


class _EvalMode:
    """Eval mode for the body, every module's previous flag restored afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self):
        self.modes = {m: m.training for m in self.model.modules()}
        self.model.eval()

    def __exit__(self, *exc):
        for m, flag in self.modes.items():
            m.training = flag


def _taylor_batches(model: nn.Module, params: list[torch.Tensor], data, loss_fn: LossFn | None):
    """For each batch, dL/dp of ``params`` (a list of tensors, same order)."""
    loss_fn = cross_entropy_loss if loss_fn is None else loss_fn
    with _EvalMode(model), torch.enable_grad():
        for x, y in _batches(data, True, "taylor"):
            loss = loss_fn(model, x, y)
            yield torch.autograd.grad(loss, params, allow_unused=True)


def weight_scores(criterion: str, layers: dict[str, nn.Module], *, model: nn.Module | None = None,
                  data: Iterable | None = None, loss_fn: LossFn | None = None
                  ) -> dict[str, torch.Tensor]:
    """Score of every weight of each layer (name -> module), weight-shaped, float32."""
    if criterion == "magnitude":
        return {n: m.weight.detach().abs().float() for n, m in layers.items()}
    if criterion != "taylor":
        raise ValueError(f"criterion: unknown {criterion!r}; use 'magnitude' or 'taylor'")
    if model is None:
        raise ValueError("model: the taylor criterion needs the whole model to compute a loss")
    names = list(layers)
    weights = [layers[n].weight for n in names]
    sums = [torch.zeros_like(w, dtype=torch.float32) for w in weights]
    count = 0
    for grads in _taylor_batches(model, weights, data, loss_fn):
        for s, g, w in zip(sums, grads, weights):
            if g is not None:
                s += (g * w.detach()).float().square()
        count += 1
    return {n: s / count for n, s in zip(names, sums)}


def filter_norms(weight: torch.Tensor, p: int) -> torch.Tensor:
    """L_p norm of every output row (filter) of a Linear / Conv weight."""
    return weight.detach().reshape(weight.shape[0], -1).float().norm(p=p, dim=1)


def fpgm_scores(weight: torch.Tensor) -> torch.Tensor:
    """sum_j ||F_i - F_j||_2 for every filter F_i of the weight."""
    flat = weight.detach().reshape(weight.shape[0], -1).double()
    return torch.cdist(flat, flat).sum(dim=1).float()


def _mean_by_class(graph: ChannelGraph, entries: list[tuple[np.ndarray, np.ndarray]]
                   ) -> dict[int, float]:
    """Mean of the per-element values over each class."""
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    for elems, values in entries:
        for c, v in zip(graph.classes_of(elems).tolist(), values.tolist()):
            sums[c] = sums.get(c, 0.0) + v
            counts[c] = counts.get(c, 0) + 1
    return {c: sums[c] / counts[c] for c in sums}


def _activation_scores(graph: ChannelGraph, criterion: str, data) -> dict[int, float]:
    uses = [u for u in graph.uses.values() if u.role == "in"]
    stats: dict[str, list] = {}

    def hook_for(name: str):
        def hook(module, args):
            x = args[0].detach()
            dims = tuple(d for d in range(x.dim()) if d != (1 if isinstance(module, nn.Conv2d)
                                                           else x.dim() - 1))
            value = (x == 0).float() if criterion == "apoz" else x.float()
            rec = stats.setdefault(name, [0.0, 0])
            rec[0] = rec[0] + value.sum(dim=dims)
            rec[1] += x.numel() // x.shape[1 if isinstance(module, nn.Conv2d) else -1]
        return hook

    handles = [graph.modules[u.module].register_forward_pre_hook(hook_for(u.module)) for u in uses]
    try:
        with _EvalMode(graph.model), torch.no_grad():
            for x, _ in _batches(data, False, criterion):
                graph.model(x)
    finally:
        for h in handles:
            h.remove()
    entries = []
    for u in uses:
        total, n = stats.get(u.module, (None, 0))
        if n:
            mean = (total / n).numpy()
            entries.append((u.elems, 1.0 - mean if criterion == "apoz" else mean))
    return _mean_by_class(graph, entries)


def _channel_params(graph: ChannelGraph) -> list[tuple[np.ndarray, torch.Tensor]]:
    """(elems, tensor) of every tensor a class's mask zeroes, its dim 0 indexed by elems."""
    out = []
    for use in graph.uses.values():
        if use.role == "in":
            continue
        mod = graph.modules[use.module]
        for p in (mod.weight, mod.bias):
            if isinstance(p, torch.Tensor) and p.requires_grad:
                out.append((use.elems, p))
    return out


def _taylor_channel_scores(graph: ChannelGraph, data, loss_fn: LossFn | None
                           ) -> dict[int, float]:
    pairs = _channel_params(graph)
    if not pairs:
        raise ValueError("model: no trainable parameter belongs to a prunable channel")
    totals: dict[int, float] = {}
    count = 0
    for grads in _taylor_batches(graph.model, [p for _, p in pairs], data, loss_fn):
        per_class: dict[int, float] = {}
        for (elems, p), g in zip(pairs, grads):
            if g is None:
                continue
            contrib = (g * p.detach()).reshape(p.shape[0], -1).sum(dim=1).double().tolist()
            for c, v in zip(graph.classes_of(elems).tolist(), contrib):
                per_class[c] = per_class.get(c, 0.0) + v
        for c, v in per_class.items():
            totals[c] = totals.get(c, 0.0) + v * v
        count += 1
    return {c: v / count for c, v in totals.items()}


def channel_scores(criterion: str, graph: ChannelGraph, *, data: Iterable | None = None,
                   loss_fn: LossFn | None = None) -> dict[int, float]:
    """Score of every scorable channel class of ``graph`` (class id -> score)."""
    if criterion in ("l1", "l2", "fpgm"):
        entries = []
        for use in graph.uses.values():
            if use.role == "out":
                w = graph.modules[use.module].weight
                vals = fpgm_scores(w) if criterion == "fpgm" else filter_norms(
                    w, 1 if criterion == "l1" else 2)
                entries.append((use.elems, vals.numpy()))
        return _mean_by_class(graph, entries)
    if criterion == "slim":
        entries = [(u.elems, graph.modules[u.module].weight.detach().abs().float().numpy())
                   for u in graph.uses.values()
                   if u.role == "chan" and isinstance(graph.modules[u.module], _BN)
                   and graph.modules[u.module].weight is not None]
        if not entries:
            raise ValueError("criterion: 'slim' ranks channels by BatchNorm scales and the "
                             "model has no affine BatchNorm after a prunable layer; use 'l1'")
        return _mean_by_class(graph, entries)
    if criterion in ("apoz", "mean_activation"):
        return _activation_scores(graph, criterion, data)
    if criterion == "taylor":
        return _taylor_channel_scores(graph, data, loss_fn)
    raise ValueError(f"criterion: unknown {criterion!r}")
