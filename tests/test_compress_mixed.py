"""Mixed precision: per-layer sensitivity and the exact bit assignment under a budget."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from lowbit.compress import (Int8DynamicConfig, QuantLinear, assign_bits, layer_sensitivity,
                             pareto_knapsack)


def _brute_force(options, budget):
    best = None
    for choice in itertools.product(*[range(len(g)) for g in options]):
        cost = sum(options[i][c][0] for i, c in enumerate(choice))
        val = sum(options[i][c][1] for i, c in enumerate(choice))
        if cost <= budget and (best is None or val < best[1] - 1e-12):
            best = (cost, val)
    return best


@given(seed=st.integers(0, 2 ** 16), layers=st.integers(1, 5), widths=st.integers(1, 4),
       real_costs=st.booleans())
def test_pareto_knapsack_equals_brute_force(seed, layers, widths, real_costs):
    rng = np.random.default_rng(seed)
    options = [[(float(rng.uniform(0, 10)) if real_costs else int(rng.integers(0, 10)),
                 float(rng.normal())) for _ in range(widths)] for _ in range(layers)]
    budget = float(rng.uniform(0, 10 * layers))
    want = _brute_force(options, budget)
    got = pareto_knapsack(options, budget)
    if want is None:
        assert got is None
        return
    choice, cost, val = got
    assert val == pytest.approx(want[1], abs=1e-9)
    assert cost <= budget
    assert cost == pytest.approx(sum(options[i][c][0] for i, c in enumerate(choice)))


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 10)).eval()


X = torch.randn(128, 32, generator=torch.Generator().manual_seed(1))


def _loss(model):
    with torch.no_grad():
        return float((model(X) - REF).square().mean())


REF = _mlp()(X).detach()


@pytest.fixture(scope="module")
def table():
    return layer_sensitivity(_mlp(), _loss, bits=(2, 4, 8))


def test_sensitivity_table(table):
    assert list(table.layers) == ["0", "2", "4"]
    assert table.baseline == 0.0
    for name, opts in table.layers.items():
        assert sorted(opts) == [2, 4, 8]
        assert opts[2].sensitivity > opts[4].sensitivity > opts[8].sensitivity >= 0
        assert opts[2].bytes < opts[4].bytes < opts[8].bytes
    text = table.to_text()
    assert "d@2b" in text and "d@8b" in text and "\n4 " in text


def test_sensitivity_is_one_layer_at_a_time(table):
    from lowbit.compress import IntxWeightOnlyConfig, quantize
    m = quantize(_mlp(), IntxWeightOnlyConfig(bits=4), filter_fn=lambda mod, n: n == "2")
    assert _loss(m) == pytest.approx(table.layers["2"][4].sensitivity)
    assert isinstance(m[2], QuantLinear) and isinstance(m[0], nn.Linear)


def test_higher_is_better_flips_the_sign():
    t = layer_sensitivity(_mlp(), lambda m: -_loss(m), bits=(2,), higher_is_better=True)
    assert all(o[2].sensitivity > 0 for o in t.layers.values())


def test_budget_extremes(table):
    big = sum(o[8].bytes for o in table.layers.values())
    small = sum(o[2].bytes for o in table.layers.values())
    assert set(assign_bits(table, budget_bytes=big).bits.values()) == {8}
    assert set(assign_bits(table, budget_bytes=small).bits.values()) == {2}
    with pytest.raises(ValueError, match="below the least achievable"):
        assign_bits(table, budget_bytes=small - 1)


def test_assignment_is_optimal_and_applies(table):
    budget = sum(o[4].bytes for o in table.layers.values())
    plan = assign_bits(table, budget_bytes=budget)
    assert plan.total_bytes <= budget
    names = list(table.layers)
    best = min((sum(table.layers[n][b].sensitivity for n, b in zip(names, combo)), combo)
               for combo in itertools.product((2, 4, 8), repeat=len(names))
               if sum(table.layers[n][b].bytes for n, b in zip(names, combo)) <= budget)
    assert plan.total_sensitivity == pytest.approx(best[0])
    m = plan.apply(_mlp())
    for n, b in plan.bits.items():
        assert m.get_submodule(n).weight_spec.bits == b
    assert sum(m.get_submodule(n).lowbit_storage()["bytes"] for n in names) == plan.total_bytes
    text = str(plan)
    assert "total sensitivity" in text and f"budget {budget}" in text


def test_latency_budget(table):
    lat = {2: 1.0, 4: 1.5, 8: 3.0}
    plan = assign_bits(table, latency_budget=6.0, latency_fn=lambda name, b: lat[b])
    assert plan.cost_unit == "latency" and plan.total_cost <= 6.0
    assert sum(lat[b] for b in plan.bits.values()) == plan.total_cost


def test_bad_calls(table):
    with pytest.raises(ValueError, match="exactly one"):
        assign_bits(table)
    with pytest.raises(ValueError, match="latency_fn"):
        assign_bits(table, latency_budget=1.0)
    with pytest.raises(ValueError, match="no quantizable layer"):
        layer_sensitivity(nn.Sequential(nn.ReLU()), _loss)
    with pytest.raises(ValueError, match="at least one bit width"):
        layer_sensitivity(_mlp(), _loss, bits=())


def test_custom_config_for_bits():
    t = layer_sensitivity(_mlp(), _loss, bits=(8,), config_for_bits=lambda k: Int8DynamicConfig())
    assert all(o[8].bytes > 0 for o in t.layers.values())
