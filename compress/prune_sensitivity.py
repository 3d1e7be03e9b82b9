"""Per-layer pruning sensitivity: the metric when only one layer (or one coupled channel
group) is pruned, at several sparsities; and per-layer ratios chosen from it.

Sensitivity analysis as in Han et al. (Learning both Weights and Connections, NeurIPS 2015,
Fig. 6) and Li et al. (Pruning Filters for Efficient ConvNets, ICLR 2017, Fig. 2): prune
each layer alone, measure, and give sensitive layers lower ratios. ``choose_sparsity``
picks, per layer, the largest tried sparsity whose metric drop stays within a budget; the
result is a ``layer_sparsity`` mapping for ``LevelConfig`` / ``ChannelConfig``.

Example::

    table = pruning_sensitivity(model, lambda m: evaluate(m, test_loader), LevelConfig(),
                                sparsities=(0.5, 0.7, 0.9))
    ratios = choose_sparsity(table, max_drop=0.005)      # at most 0.5 pt per layer
    prune(model, LevelConfig(layer_sparsity=ratios))
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .masks import MASKABLE
from .prune_api import (FilterFn, LossFn, _channel_groups, _first_input, default_prune_filter,
                        prune)
from .prune_configs import ChannelConfig, LevelConfig

__all__ = ["PruneSensitivity", "pruning_sensitivity", "choose_sparsity"]


@dataclass(frozen=True)
class PruneSensitivity:
    """``metrics[unit][sparsity]``: the metric with only ``unit`` pruned; ``layers[unit]``:
    the layers a unit prunes (one layer, or a coupled channel group); ``baseline``: the
    unpruned model's metric."""

    baseline: float
    metrics: dict[str, dict[float, float]]
    layers: dict[str, tuple[str, ...]]
    higher_is_better: bool = True

    def drop(self, unit: str, sparsity: float) -> float:
        """How much worse the metric is (positive = worse)."""
        m = self.metrics[unit][sparsity]
        return self.baseline - m if self.higher_is_better else m - self.baseline

    def to_text(self) -> str:
        sparsities = sorted({s for row in self.metrics.values() for s in row})
        w = max([4] + [len(u) for u in self.metrics])
        head = f"{'unit':<{w}}" + "".join(f"{f'@{s:g}':>10}" for s in sparsities)
        lines = [f"baseline {self.baseline:.4f}", head, "-" * len(head)]
        for unit, row in self.metrics.items():
            lines.append(f"{unit:<{w}}" + "".join(
                f"{row[s]:>10.4f}" if s in row else f"{'-':>10}" for s in sparsities))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def pruning_sensitivity(model: nn.Module, evaluate_fn: Callable[[nn.Module], float],
                        config: LevelConfig | ChannelConfig = LevelConfig(),
                        sparsities: Sequence[float] = (0.25, 0.5, 0.75, 0.9), *,
                        filter_fn: FilterFn | None = None, data: Iterable | None = None,
                        example_input=None, loss_fn: LossFn | None = None,
                        higher_is_better: bool = True) -> PruneSensitivity:
    """``evaluate_fn`` of a copy of ``model`` with one unit pruned by ``config`` at each of
    ``sparsities`` (``config.sparsity`` and ``layer_sparsity`` are replaced).

    Units: every selected layer (LevelConfig), or every channel group with prunable channels
    (ChannelConfig: layers coupled by a residual add are one unit). ``model`` is unchanged.

    Returns a ``PruneSensitivity``; ``choose_sparsity`` turns it into per-layer ratios.
    """
    if not isinstance(config, (LevelConfig, ChannelConfig)):
        raise TypeError(f"config: sensitivity analysis takes a LevelConfig or ChannelConfig, "
                        f"got {type(config).__name__}")
    if not sparsities or not all(isinstance(s, (int, float)) and 0.0 <= s < 1.0
                                 for s in sparsities):
        raise ValueError(f"sparsities: give fractions in [0, 1), e.g. (0.5, 0.7, 0.9); got "
                         f"{sparsities!r}")
    keep = default_prune_filter if filter_fn is None else filter_fn
    if isinstance(config, LevelConfig):
        units = {n: (n,) for n, m in model.named_modules()
                 if n and isinstance(m, MASKABLE) and keep(m, n)}
    else:
        _, groups = _channel_groups(model, filter_fn, _first_input(data, example_input))
        units = {g.name: g.layers for g in groups if g.prunable}
    if not units:
        raise ValueError("pruning_sensitivity: no layer to prune is accepted by filter_fn")
    with torch.no_grad():
        baseline = float(evaluate_fn(model))
    metrics: dict[str, dict[float, float]] = {}
    for unit, layers in units.items():
        chosen = set(layers)
        metrics[unit] = {}
        for s in sparsities:
            trial = copy.deepcopy(model)
            cfg = dataclasses.replace(config, sparsity=float(s), layer_sparsity=None,
                                      scope="layer")
            prune(trial, cfg, filter_fn=lambda m, n, chosen=chosen: n in chosen, data=data,
                  example_input=example_input, loss_fn=loss_fn)
            with torch.no_grad():
                metrics[unit][float(s)] = float(evaluate_fn(trial))
    return PruneSensitivity(baseline, metrics, units, higher_is_better)


def choose_sparsity(table: PruneSensitivity, max_drop: float) -> dict[str, float]:
    """Per layer, the largest sparsity of ``table`` whose metric drop is <= ``max_drop``
    (0.0 when none is); a ``layer_sparsity`` mapping (a channel group's ratio is given to
    every layer of the group).

    Example:
        >>> t = PruneSensitivity(0.9, {"a": {0.5: 0.9, 0.9: 0.5}}, {"a": ("a",)})
        >>> choose_sparsity(t, max_drop=0.01)
        {'a': 0.5}
    """
    if not isinstance(max_drop, (int, float)) or isinstance(max_drop, bool) or max_drop < 0:
        raise ValueError(f"max_drop: must be a number >= 0 (metric units), got {max_drop!r}")
    out: dict[str, float] = {}
    for unit, row in table.metrics.items():
        ok = [s for s in row if table.drop(unit, s) <= max_drop]
        for layer in table.layers[unit]:
            out[layer] = max(ok, default=0.0)
    return out
