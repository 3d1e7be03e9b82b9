"""Which channel classes to remove (``select_channels``) and applying that choice to a model
(``ChannelPlan.zero_`` masks, ``ChannelPlan.remove_`` physically shrinks).

Channel classes of a ``ChannelGraph`` are grouped by the producer layers (Conv2d / Linear
output rows) they hold: the classes of one conv, or of several convs whose outputs are added
in a residual, form one *group* and share one ratio. A class is prunable when it is not
blocked and every producer it belongs to is selected (``filter_fn``); every group keeps at
least ``min_channels`` classes.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .depgraph import _BN, ChannelGraph, Use
from .masks import MaskedLayer

__all__ = ["ChannelGroup", "ChannelPlan", "channel_groups", "select_channels"]


@dataclass(frozen=True)
class ChannelGroup:
    """Channel classes that share producers and one pruning ratio.

    ``layers``: the producer layers (sorted); ``classes``: class ids in trace order;
    ``prunable``: the subset that may be removed.
    """

    layers: tuple[str, ...]
    classes: tuple[int, ...]
    prunable: tuple[int, ...]

    @property
    def name(self) -> str:
        return "+".join(self.layers)


def channel_groups(graph: ChannelGraph, selected: Callable[[str], bool]) -> list[ChannelGroup]:
    """The groups of ``graph`` in trace order; ``selected(layer_name)`` says which producers
    the caller allows to lose channels."""
    producers: dict[int, list[str]] = {}
    for use in graph.uses.values():
        if use.role == "out":
            for c in graph.classes_of(use.elems).tolist():
                names = producers.setdefault(c, [])
                if use.module not in names:
                    names.append(use.module)
    parent: dict[str, str] = {}

    def find(n: str) -> str:
        while parent.setdefault(n, n) != n:
            n = parent[n]
        return n

    for names in producers.values():
        for other in names[1:]:
            ra, rb = find(names[0]), find(other)
            if ra != rb:
                parent[rb] = ra
    members: dict[str, list[int]] = {}
    layers: dict[str, set[str]] = {}
    for c, names in producers.items():
        root = find(names[0])
        members.setdefault(root, []).append(c)
        layers.setdefault(root, set()).update(names)
    groups = []
    for root, classes in members.items():
        prunable = tuple(c for c in classes if c not in graph.blocked_classes
                         and all(selected(n) for n in producers[c]))
        groups.append(ChannelGroup(tuple(sorted(layers[root])), tuple(classes), prunable))
    return groups


def _group_ratio(group: ChannelGroup, sparsity: float,
                 layer_sparsity: Mapping[str, float] | None) -> float:
    named = {layer_sparsity[n] for n in group.layers if layer_sparsity and n in layer_sparsity}
    if len(named) > 1:
        raise ValueError(f"layer_sparsity: layers {', '.join(group.layers)} share their "
                         f"channels (residual add / concatenation) and must have one ratio, "
                         f"got {sorted(named)}")
    return named.pop() if named else sparsity


def select_channels(graph: ChannelGraph, scores: Mapping[int, float], groups: list[ChannelGroup],
                    *, sparsity: float, scope: str = "layer",
                    layer_sparsity: Mapping[str, float] | None = None, min_channels: int = 1,
                    reference: Mapping[tuple[str, ...], int] | None = None) -> ChannelPlan:
    """Choose the classes to remove: the lowest ``scores`` (class id -> score; unscored
    classes are kept) among each group's prunable classes.

    scope "layer": each group removes round(ratio * C0) - (C0 - C) classes, C its classes
    now and C0 its count in ``reference`` (group layers -> channels of the unpruned model,
    for schedules that prune in several steps; default C). scope "global": scores divided by
    their group's mean score, the lowest across the model go until round(sparsity * sum C0)
    are gone. Ties: the earlier class goes first. At least ``min_channels`` stay per group.
    """
    ref = reference or {}
    removed: list[int] = []
    counts: dict[tuple[str, ...], int] = {}
    pool: list[tuple[float, int, int, ChannelGroup]] = []
    order = {c: i for i, c in enumerate(c for g in groups for c in g.classes)}
    for g in groups:
        cand = [c for c in g.prunable if c in scores]
        counts[g.layers] = 0
        if not cand:
            continue
        if scope == "layer":
            base = ref.get(g.layers, len(g.classes))
            want = round(_group_ratio(g, sparsity, layer_sparsity) * base) - (base - len(g.classes))
            n = max(0, min(want, len(cand), len(g.classes) - min_channels))
            chosen = sorted(cand, key=lambda c: (scores[c], order[c]))[:n]
            removed += chosen
            counts[g.layers] = len(chosen)
        else:
            mean = float(np.mean([scores[c] for c in cand]))
            for c in cand:
                pool.append((scores[c] / mean if mean > 0 else scores[c], order[c], c, g))
    if scope == "global" and pool:
        base = sum(ref.get(g.layers, len(g.classes)) for g in groups if g.prunable)
        now = sum(len(g.classes) for g in groups if g.prunable)
        want = round(sparsity * base) - (base - now)
        for _, _, c, g in sorted(pool, key=lambda t: (t[0], t[1])):
            if want <= 0:
                break
            if len(g.classes) - counts[g.layers] > min_channels:
                removed.append(c)
                counts[g.layers] += 1
                want -= 1
    return ChannelPlan(graph, frozenset(removed), tuple(groups), counts)


class ChannelPlan:
    """A choice of channel classes to remove from the model ``graph`` was traced on.

    ``zero_(model)``: the masked model, channels zeroed (producer rows and biases, BatchNorm
    scale and shift, depthwise filters and biases); ``remove_(model)``: the channels
    physically removed from every layer that holds them. Both default to the traced model
    and accept any model with the same module names and shapes (e.g. a deep copy). The two
    give the same outputs (see ``lowbit.compress.depgraph``).
    """

    def __init__(self, graph: ChannelGraph, removed: frozenset[int],
                 groups: tuple[ChannelGroup, ...], counts: Mapping[tuple[str, ...], int]) -> None:
        self.graph = graph
        self.removed = removed
        self.groups = groups
        self.counts = dict(counts)
        self._removed = np.fromiter(removed, dtype=np.int64, count=len(removed))

    def keep(self, use: Use) -> np.ndarray:
        """Boolean per index of ``use``: True where the channel stays."""
        return ~np.isin(self.graph.classes_of(use.elems), self._removed)

    def channels(self) -> dict[str, tuple[int, int]]:
        """Group name -> (channels before, channels after)."""
        return {g.name: (len(g.classes), len(g.classes) - self.counts[g.layers])
                for g in self.groups}

    def table(self) -> str:
        """One line per group: producers, channels before -> after, prunable count."""
        w = max([5] + [len(g.name) for g in self.groups])
        lines = [f"{'group':<{w}} {'before':>7} {'after':>7} {'prunable':>9}"]
        for g in self.groups:
            before, after = len(g.classes), len(g.classes) - self.counts[g.layers]
            lines.append(f"{g.name:<{w}} {before:>7} {after:>7} {len(g.prunable):>9}")
        lines += [f"not pruned: {n}" for n in self.graph.notes]
        return "\n".join(lines)

    def _modules(self, model: nn.Module):
        for (name, role), use in self.graph.uses.items():
            keep = self.keep(use)
            if not keep.all():
                yield name, model.get_submodule(name), role, torch.from_numpy(keep)

    @torch.no_grad()
    def zero_(self, model: nn.Module | None = None) -> nn.Module:
        """Zero the removed channels' parameters in place (see the class doc); returns the model."""
        model = self.graph.model if model is None else model
        for _, mod, role, keep in self._modules(model):
            if role == "in":
                continue  # its input channel is zero: nothing to do
            drop = ~keep
            for p in (mod.weight, mod.bias):
                if p is not None:
                    p[drop] = 0
        return model

    @torch.no_grad()
    def remove_(self, model: nn.Module | None = None) -> nn.Module:
        """Physically remove the channels in place; returns the model.

        Layers keep their class; their tensors and size attributes shrink. An optimizer
        built before this call holds stale tensors: build it after (``train`` does).
        """
        model = self.graph.model if model is None else model
        for name, mod, role, keep in self._modules(model):
            idx = keep.nonzero().flatten()
            if isinstance(mod, _BN):
                _slice(mod, ("weight", "bias", "running_mean", "running_var"), 0, idx)
                mod.num_features = len(idx)
            elif role == "out":
                _slice(mod, ("weight", "bias", "weight_mask"), 0, idx)
                if isinstance(mod, nn.Linear):
                    mod.out_features = len(idx)
                else:
                    mod.out_channels = len(idx)
            elif role == "in":
                if isinstance(mod, MaskedLayer) and ":" in mod.sparsity_kind:
                    raise ValueError(f"layer {name!r} carries a "
                                     f"{mod.sparsity_kind} mask along its input channels; "
                                     f"prune channels before applying N:M masks")
                _slice(mod, ("weight", "weight_mask"), 1, idx)
                if isinstance(mod, nn.Linear):
                    mod.in_features = len(idx)
                else:
                    mod.in_channels = len(idx)
            else:  # depthwise conv: channel multiplier k = out / in stays
                k = mod.out_channels // mod.in_channels
                _slice(mod, ("weight", "bias", "weight_mask"), 0, idx)
                mod.out_channels = len(idx)
                mod.in_channels = mod.groups = len(idx) // k
        return model


def _slice(mod: nn.Module, names: tuple[str, ...], dim: int, idx: torch.Tensor) -> None:
    for name in names:
        t = getattr(mod, name, None)
        if t is None:
            continue
        new = t.index_select(dim, idx.to(t.device)).clone()
        if isinstance(t, nn.Parameter):
            setattr(mod, name, nn.Parameter(new, requires_grad=t.requires_grad))
        else:
            setattr(mod, name, new)
