"""Pruning that trains: fine_tune with masks, SlimRegularizer, movement pruning, the lottery
ticket procedure (rewinding checked exactly), iterative_prune along schedules, and the
per-layer sensitivity analysis."""
from __future__ import annotations

import copy
import types

import pytest
import torch
from torch import nn

import lowbit.compress.prune_training as pt
from lowbit.compress import (AGPSchedule, ChannelConfig, DigitsCNN, FineTune, LevelConfig,
                             LinearSchedule, LotteryTicketConfig, MovementConfig, NMConfig,
                             PruneSensitivity, SlimRegularizer, calibration_loader,
                             choose_sparsity, evaluate, fine_tune, get_model, iterative_prune,
                             masked_layers, prune, pruning_sensitivity)

from prune_helpers import one_thread, seeded  # noqa: F401 (one_thread: autouse fixture)


def mlp(seed: int = 0) -> nn.Module:
    """A fresh digits MLP (64-128-64-10), the same weights for a seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_model("digits-mlp", pretrained=False)


@pytest.fixture(scope="module")
def small_data():
    """256 training images in 4 batches: one epoch is 4 optimizer steps."""
    return calibration_loader(256, 64)


def layer_sparsity(layer) -> float:
    return 1.0 - float(layer.weight_mask.float().mean())


# ------------------------------------------------------------------------------- fine-tuning
def test_fine_tune_keeps_pruned_weights_zero(small_data, raises_naming):
    model = mlp()
    prune(model, LevelConfig(0.7))
    fine_tune(model, small_data, FineTune(epochs=1, lr=1e-2, weight_decay=0.1,
                                          optimizer="adamw"))
    for _, layer in masked_layers(model):
        assert (layer.weight[~layer.weight_mask] == 0).all()
        assert layer_sparsity(layer) == pytest.approx(0.7, abs=1e-3)
    with raises_naming(TypeError, "finetune"):
        fine_tune(model, small_data, {"epochs": 1})
    with raises_naming(ValueError, "data"):
        fine_tune(model, None)


def test_fine_tune_is_deterministic(small_data):
    a, b = mlp(), mlp()
    for m in (a, b):
        prune(m, NMConfig())
        fine_tune(m, small_data, FineTune(epochs=1, seed=3))
    for (_, la), (_, lb) in zip(masked_layers(a), masked_layers(b)):
        assert torch.equal(la.weight, lb.weight)


# ------------------------------------------------------------------------------- slimming
def test_slim_regularizer_adds_l1_subgradient(raises_naming):
    model = DigitsCNN()
    with torch.no_grad():
        model.bn2.weight.copy_(torch.linspace(-1, 1, 32))
    x, y = torch.randn(8, 1, 8, 8, generator=seeded(0)), torch.arange(8)
    nn.functional.cross_entropy(model(x), y).backward()
    before = model.bn2.weight.grad.clone()
    SlimRegularizer(model, penalty=1e-2).before_step(None)
    torch.testing.assert_close(model.bn2.weight.grad,
                               before + 1e-2 * torch.sign(model.bn2.weight.detach()))
    with raises_naming(ValueError, "model"):
        SlimRegularizer(nn.Linear(2, 2))
    with raises_naming(ValueError, "penalty"):
        SlimRegularizer(model, penalty=0)


def test_slim_training_then_slim_pruning(small_data):
    model = get_model("digits-cnn", pretrained=False)
    fine_tune(model, small_data, FineTune(epochs=1, lr=1e-2),
              callbacks=[SlimRegularizer(model, penalty=1e-3)])
    prune(model, ChannelConfig(0.5, criterion="slim"), data=small_data)
    assert (model.conv1.out_channels, model.conv2.out_channels, model.conv3.out_channels) == \
        (16, 16, 32)


# ------------------------------------------------------------------------------- movement
@pytest.mark.parametrize("make, x_shape", [
    (lambda: nn.Linear(5, 3), (2, 4, 5)),
    (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1, groups=2), (2, 4, 7, 7)),
])
def test_movement_weight_gradient_matches_autograd(make, x_shape):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        mod = make()
    x = torch.randn(*x_shape, generator=seeded(1))
    out = mod(x)
    g = torch.randn(out.shape, generator=seeded(2))
    want, = torch.autograd.grad(out, mod.weight, g)
    torch.testing.assert_close(pt._weight_grad(mod, x, g), want, rtol=1e-5, atol=1e-5)


def test_movement_prunes_weights_moving_toward_zero():
    """Large weights the loss pushes toward 0 go; magnitude pruning would keep them."""
    model = nn.Sequential(nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 3.0, 0.1, 0.1]]))
    data = [(torch.ones(1, 4), torch.zeros(1, 1))] * 4

    def loss(m, x, y):
        return (m(x) - y).square().mean()

    magnitude = prune(copy.deepcopy(model), LevelConfig(0.5))
    prune(model, MovementConfig(0.5, FineTune(epochs=1, lr=1e-6, optimizer="sgd")),
          data=data, loss_fn=loss)
    assert model[0].weight_mask.tolist() == [[False, False, True, True]]
    assert magnitude[0].weight_mask.tolist() == [[True, True, False, False]]


def test_movement_final_sparsity_and_zeros(small_data, raises_naming):
    model = mlp()
    prune(model, MovementConfig(0.6, FineTune(epochs=2, lr=3e-3), update_every=2),
          data=small_data)
    for name, layer in masked_layers(model):
        assert int((~layer.weight_mask).sum()) == round(0.6 * layer.weight.numel()), name
        assert (layer.weight[~layer.weight_mask] == 0).all()
        assert layer.sparsity_kind == "unstructured"
    with raises_naming(ValueError, "data"):
        prune(mlp(), MovementConfig())
    bad = nn.Sequential(nn.Conv2d(1, 2, 3, padding="same"))
    with pytest.raises(ValueError, match="padding"):
        prune(bad, MovementConfig(), data=small_data)


# ------------------------------------------------------------------------------- lottery
def test_lottery_rewinds_surviving_weights(monkeypatch):
    """Fake training (+1 per step on every parameter): at the start of every run after the
    first, the weights are the rewind point's, masked."""
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    starts = []

    def fake_fine_tune(m, data, finetune, loss_fn=None, callbacks=()):
        starts.append({k: v.clone() for k, v in m.state_dict().items()})
        for step in (1, 2, 3):
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(1.0)
            for cb in callbacks:
                cb.after_step(types.SimpleNamespace(step=step))

    monkeypatch.setattr(pt, "fine_tune", fake_fine_tune)
    prune(model, LotteryTicketConfig(0.75, rounds=2, rewind_step=2), data=[None])
    assert len(starts) == 3  # two rounds and the final run
    for start in starts[1:]:
        for key in ("0.weight", "2.weight"):
            mask = start[key.replace("weight", "weight_mask")]
            torch.testing.assert_close(start[key], (init[key] + 2.0) * mask)
        torch.testing.assert_close(start["0.bias"], init["0.bias"] + 2.0)
    keep = [s["0.weight_mask"].sum() + s["2.weight_mask"].sum() for s in starts[1:]]
    assert int(keep[0]) == 80 - round(0.5 * 80) and int(keep[1]) == 80 - round(0.75 * 80)
    assert not (starts[2]["0.weight_mask"] & ~starts[1]["0.weight_mask"]).any()  # monotone


def test_lottery_real_run_and_rewind_step_check(small_data, raises_naming):
    model = mlp()
    prune(model, LotteryTicketConfig(0.8, rounds=2, finetune=FineTune(epochs=1, lr=3e-3)),
          data=small_data)
    total = sum(layer.weight.numel() for _, layer in masked_layers(model))
    pruned = sum(int((~layer.weight_mask).sum()) for _, layer in masked_layers(model))
    assert pruned == round(0.8 * total)
    with raises_naming(ValueError, "rewind_step"):
        prune(mlp(), LotteryTicketConfig(0.5, rounds=1, finetune=FineTune(epochs=1),
                                         rewind_step=99), data=small_data)


# ------------------------------------------------------------------------------- iterative
def test_iterative_level_follows_agp(small_data):
    model = mlp()
    history = iterative_prune(model, LevelConfig(0.8, layer_sparsity={"fc3": 0.4}),
                              small_data, schedule=AGPSchedule(3),
                              finetune=FineTune(epochs=1, lr=3e-3),
                              evaluate_fn=lambda m: evaluate(m, small_data))
    assert [s.sparsity for s in history.steps] == pytest.approx(AGPSchedule(3).targets(0.8))
    assert all(0.0 <= s.metric <= 1.0 for s in history.steps)
    assert layer_sparsity(model.fc1) == pytest.approx(0.8, abs=1e-3)
    assert layer_sparsity(model.fc3) == pytest.approx(0.4, abs=1e-2)
    assert "sparsity" in history.table() and history.model is model


def test_iterative_channels_reach_the_final_count(small_data):
    model = get_model("digits-cnn", pretrained=False)
    history = iterative_prune(model, ChannelConfig(0.5), small_data,
                              schedule=LinearSchedule(2), finetune=FineTune(epochs=1))
    assert len(history.steps) == 2
    assert (model.conv1.out_channels, model.conv2.out_channels, model.conv3.out_channels) == \
        (16, 16, 32)
    assert model.fc.in_features == 32 * 4


def test_iterative_rejects_fixed_pattern_configs(small_data, raises_naming):
    with raises_naming(TypeError, "config"):
        iterative_prune(mlp(), NMConfig(), small_data)
    with raises_naming(ValueError, "config"):
        iterative_prune(mlp(), ChannelConfig(remove=False), small_data)
    with raises_naming(TypeError, "schedule"):
        iterative_prune(mlp(), LevelConfig(), small_data, schedule=(0.2, 0.5))


# ------------------------------------------------------------------------------- sensitivity
def test_sensitivity_per_layer_and_per_channel_group():
    model = get_model("digits-cnn")
    x, _ = next(iter(calibration_loader(128, 128)))
    ref = model(x).argmax(1)

    def agreement(m):
        return float((m(x).argmax(1) == ref).float().mean())

    table = pruning_sensitivity(model, agreement, LevelConfig(), sparsities=(0.0, 0.5, 0.95))
    assert set(table.metrics) == {"conv1", "conv2", "conv3", "fc"}
    assert table.baseline == 1.0 and all(row[0.0] == 1.0 for row in table.metrics.values())
    ratios = choose_sparsity(table, max_drop=0.02)
    assert set(ratios) == set(table.metrics) and all(r in (0.0, 0.5, 0.95)
                                                     for r in ratios.values())
    assert "baseline" in table.to_text()
    groups = pruning_sensitivity(model, agreement, ChannelConfig(), sparsities=(0.5,),
                                 example_input=x[:1])
    assert set(groups.metrics) == {"conv1", "conv2", "conv3"}  # fc's outputs are not prunable
    assert model.conv1.out_channels == 32 and type(model.fc) is nn.Linear  # untouched


def test_choose_sparsity_spreads_group_ratio_and_checks_budget(raises_naming):
    table = PruneSensitivity(0.9, {"a+b": {0.25: 0.9, 0.5: 0.85}, "c": {0.25: 0.5}},
                             {"a+b": ("a", "b"), "c": ("c",)})
    assert choose_sparsity(table, 0.01) == {"a": 0.25, "b": 0.25, "c": 0.0}
    assert choose_sparsity(table, 0.06) == {"a": 0.5, "b": 0.5, "c": 0.0}
    with raises_naming(ValueError, "max_drop"):
        choose_sparsity(table, -1)
