"""Mixed precision: per-layer sensitivity and a bit width per layer under a budget.

Sensitivity of layer l at k bits: the change of an evaluation metric when only layer l is
quantized to k bits (``config_for_bits(k)``, default weight-only b-bit per channel) and every
other layer stays float: d(l, k) = eval(model with l at k bits) - eval(model) for a loss
(``higher_is_better=False``), or the drop eval(model) - eval(...) for an accuracy.

Assignment (``assign_bits``): choose one width per layer minimising sum_l d(l, k_l) subject
to sum_l cost(l, k_l) <= budget, where the cost is the layer's stored bytes
(``lowbit_storage()["bytes"]``) or a latency from a callback ``latency_fn(name, bits)``.
This is a multiple-choice knapsack; it is solved exactly by dynamic programming over the
layers that keeps the Pareto frontier of (cost, sensitivity) partial assignments (dominated
ones dropped), so costs may be any real numbers. The frontier is at most the number of
distinct partial costs; it stays small for the tens of layers and few widths used here.
(The sensitivity-then-knapsack scheme follows HAWQ-V3, Yao et al. 2021, which solves it as an
integer linear program; with per-layer sensitivities the DP gives the same optimum.)
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .api import FilterFn, QUANTIZABLE, default_filter, quantize
from .configs import IntxWeightOnlyConfig


@dataclass(frozen=True)
class LayerOption:
    """One layer at one bit width: its sensitivity and stored bytes."""

    bits: int
    sensitivity: float
    bytes: int


@dataclass(frozen=True)
class SensitivityTable:
    """Per-layer sensitivities: ``layers[name][bits] -> LayerOption``; ``baseline`` metric."""

    baseline: float
    layers: dict[str, dict[int, LayerOption]]
    higher_is_better: bool = False

    @property
    def bit_options(self) -> list[int]:
        return sorted({b for opts in self.layers.values() for b in opts})

    def to_text(self, chosen: dict[str, int] | None = None) -> str:
        """A fixed-width table: one row per layer, sensitivity per width (and the choice)."""
        bits = self.bit_options
        name_w = max([len("layer")] + [len(n) for n in self.layers])
        head = f"{'layer':<{name_w}}" + "".join(f"{f'd@{b}b':>12}" for b in bits)
        if chosen is not None:
            head += f"{'bits':>6}{'bytes':>12}"
        lines = [head, "-" * len(head)]
        for name, opts in self.layers.items():
            row = f"{name:<{name_w}}" + "".join(
                f"{opts[b].sensitivity:>12.4g}" if b in opts else f"{'-':>12}" for b in bits)
            if chosen is not None:
                row += f"{chosen[name]:>6}{opts[chosen[name]].bytes:>12}"
            lines.append(row)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def layer_sensitivity(model: nn.Module, evaluate: Callable[[nn.Module], float],
                      bits: Sequence[int] = (2, 4, 8), *, filter_fn: FilterFn | None = None,
                      config_for_bits: Callable[[int], object] | None = None,
                      higher_is_better: bool = False) -> SensitivityTable:
    """Sensitivity of each selected layer to each width (see module docstring).

    Args:
        model: the float model (left unchanged; each trial quantizes a deep copy).
        evaluate: ``evaluate(model) -> float``, e.g. the loss on a held-out batch.
        bits: widths to try.
        filter_fn: which Linear / Conv2d layers (``quantize``'s filter; default all).
        config_for_bits: width -> config; default ``IntxWeightOnlyConfig(bits=k)``.
        higher_is_better: True when ``evaluate`` returns an accuracy.

    Example:
        >>> import torch
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
        >>> ref = model(x).detach()
        >>> table = layer_sensitivity(model, lambda m: float(((m(x) - ref) ** 2).mean()),
        ...                           bits=(2, 8))
        >>> sorted(table.layers), table.layers["0"][8].bytes    # 64 weights + 8 scales + 8 bias
        (['0', '2'], 128)
    """
    make = config_for_bits or (lambda k: IntxWeightOnlyConfig(bits=k))
    keep = filter_fn or default_filter
    names = [n for n, m in model.named_modules() if n and isinstance(m, QUANTIZABLE)
             and keep(m, n)]
    if not names:
        raise ValueError("layer_sensitivity: the model has no quantizable layer accepted by "
                         "filter_fn")
    if not bits:
        raise ValueError("bits: give at least one bit width, e.g. bits=(4, 8)")
    sign = -1.0 if higher_is_better else 1.0
    evaluate = torch.no_grad()(evaluate)
    base = float(evaluate(model))
    layers: dict[str, dict[int, LayerOption]] = {}
    for name in names:
        layers[name] = {}
        for k in bits:
            trial = quantize(copy.deepcopy(model), make(k),
                             filter_fn=lambda m, n, name=name: n == name)
            delta = sign * (float(evaluate(trial)) - base)
            nbytes = trial.get_submodule(name).lowbit_storage()["bytes"]
            layers[name][k] = LayerOption(k, delta, nbytes)
    return SensitivityTable(base, layers, higher_is_better)


@dataclass(frozen=True)
class BitAssignment:
    """The chosen width per layer, its totals, and the table it came from."""

    bits: dict[str, int]
    total_sensitivity: float
    total_cost: float
    budget: float
    cost_unit: str
    table: SensitivityTable

    @property
    def total_bytes(self) -> int:
        return sum(self.table.layers[n][b].bytes for n, b in self.bits.items())

    def to_text(self) -> str:
        return (self.table.to_text(self.bits)
                + f"\ntotal sensitivity {self.total_sensitivity:.4g}, {self.cost_unit} "
                  f"{self.total_cost:.6g} of budget {self.budget:.6g} "
                  f"(stored bytes {self.total_bytes})")

    def __str__(self) -> str:
        return self.to_text()

    def apply(self, model: nn.Module, config_for_bits: Callable[[int], object] | None = None
              ) -> nn.Module:
        """Quantize ``model`` in place with the chosen width per layer."""
        make = config_for_bits or (lambda k: IntxWeightOnlyConfig(bits=k))
        for k in sorted(set(self.bits.values())):
            chosen = {n for n, b in self.bits.items() if b == k}
            quantize(model, make(k), filter_fn=lambda m, n, chosen=chosen: n in chosen)
        return model


def pareto_knapsack(options: Sequence[Sequence[tuple[float, float]]], budget: float
                    ) -> tuple[list[int], float, float] | None:
    """Exact multiple-choice knapsack: pick one (cost, value) per group, total cost <= budget,
    least total value. Returns (choice index per group, total cost, total value), or None
    when nothing fits.

    Example:
        >>> pareto_knapsack([[(1, 5.0), (2, 1.0)], [(1, 3.0), (3, 0.0)]], budget=4)
        ([1, 0], 3, 4.0)
    """
    frontier: list[tuple[float, float, tuple[int, ...]]] = [(0, 0.0, ())]
    for group in options:
        cand = [(c + oc, v + ov, ch + (i,)) for c, v, ch in frontier
                for i, (oc, ov) in enumerate(group) if c + oc <= budget]
        cand.sort(key=lambda t: (t[0], t[1]))
        frontier = []
        for c, v, ch in cand:  # keep the states no cheaper state beats
            if not frontier or v < frontier[-1][1]:
                frontier.append((c, v, ch))
        if not frontier:
            return None
    c, v, ch = min(frontier, key=lambda t: (t[1], t[0]))
    return list(ch), c, v


def assign_bits(table: SensitivityTable, *, budget_bytes: int | None = None,
                latency_budget: float | None = None,
                latency_fn: Callable[[str, int], float] | None = None) -> BitAssignment:
    """Least total sensitivity under a byte budget or a latency budget (exact, see module doc).

    Give ``budget_bytes`` (sum of the layers' stored bytes) or ``latency_budget`` with
    ``latency_fn(name, bits) -> seconds``.

    Example:
        >>> import torch
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
        >>> table = layer_sensitivity(model, lambda m: float(m(x).square().mean()), bits=(2, 8))
        >>> plan = assign_bits(table, budget_bytes=150)
        >>> plan.total_bytes <= 150, sorted(set(plan.bits.values())) != [8]
        (True, True)
    """
    if (budget_bytes is None) == (latency_budget is None):
        raise ValueError("assign_bits: give exactly one of budget_bytes= or latency_budget=")
    if latency_budget is not None and latency_fn is None:
        raise ValueError("latency_fn: a latency budget needs latency_fn(name, bits) -> seconds")
    names = list(table.layers)
    if budget_bytes is not None:
        unit, budget = "bytes", budget_bytes
        cost = {(n, b): float(o.bytes) for n in names for b, o in table.layers[n].items()}
    else:
        unit, budget = "latency", latency_budget
        cost = {(n, b): float(latency_fn(n, b)) for n in names for b in table.layers[n]}
    widths = {n: sorted(table.layers[n]) for n in names}
    options = [[(cost[n, b], table.layers[n][b].sensitivity) for b in widths[n]] for n in names]
    best = pareto_knapsack(options, budget)
    if best is None:
        least = sum(min(c for c, _ in group) for group in options)
        raise ValueError(f"budget: {unit} budget {budget:.6g} is below the least achievable "
                         f"{least:.6g} (every layer at its cheapest width); raise the budget")
    choice, total_cost, total_sens = best
    bits = {n: widths[n][i] for n, i in zip(names, choice)}
    return BitAssignment(bits, total_sens, total_cost, budget, unit, table)
