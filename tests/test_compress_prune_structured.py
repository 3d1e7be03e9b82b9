"""Structured (channel) pruning: the dependency graph, physical removal equal to the masked
model, MACs, coupled groups (residual add, concat, depthwise, reused layers), blocked
channels, and each channel criterion."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lowbit.compress import (ChannelConfig, DigitsCNN, DigitsTransformer, channel_plan,
                             get_model, profile, prune, trace_channels)

from prune_helpers import one_thread, seeded  # noqa: F401 (one_thread: autouse fixture)

# The removed model runs convolutions with fewer channels: float sums in another order.
REMOVE_ATOL = 1e-5


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters (eval-mode outputs)."""
    g = seeded(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.5)
    return model.eval()


def build(cls, seed: int = 0, **kw) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return randomize_bn(cls(**kw), seed)


class ResNetish(nn.Module):
    """Stem, an identity residual block, a strided block with a 1x1 projection shortcut."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(16)
        self.a1 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn_a1 = nn.BatchNorm2d(16)
        self.a2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn_a2 = nn.BatchNorm2d(16)
        self.b1 = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
        self.bn_b1 = nn.BatchNorm2d(32)
        self.b2 = nn.Conv2d(32, 32, 3, padding=1, bias=False)
        self.bn_b2 = nn.BatchNorm2d(32)
        self.short = nn.Conv2d(16, 32, 1, stride=2, bias=False)
        self.bn_s = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        y = F.relu(self.bn_a1(self.a1(x)))
        x = F.relu(self.bn_a2(self.a2(y)) + x)
        y = F.relu(self.bn_b1(self.b1(x)))
        x = F.relu(self.bn_b2(self.b2(y)) + self.bn_s(self.short(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class ConcatNet(nn.Module):
    """Two branches (1x1 and 3x3 conv, with biases, no BN) concatenated, then conv, BN, fc
    on the flattened map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1)
        self.left = nn.Conv2d(8, 6, 1)
        self.right = nn.Conv2d(8, 10, 3, padding=1)
        self.mix = nn.Conv2d(16, 12, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(12)
        self.fc = nn.Linear(12 * 4 * 4, 5)

    def forward(self, x):
        x = F.relu(self.conv0(x))
        x = torch.cat([F.relu(self.left(x)), F.gelu(self.right(x))], dim=1)
        x = F.max_pool2d(F.relu(self.bn(self.mix(x))), 2)
        return self.fc(x.view(x.size(0), -1))


class DepthwiseSeparable(nn.Module):
    """conv-BN-ReLU, depthwise 3x3 with channel multiplier 2 (bias) + BN, pointwise 1x1."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.bn_dw = nn.BatchNorm2d(16)
        self.pw = nn.Conv2d(16, 12, 1)
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        x = F.relu6(self.bn(self.conv(x)))
        x = F.silu(self.bn_dw(self.dw(x)))
        x = F.relu(self.pw(x))
        return self.fc(x.mean((2, 3)))


class SharedConv(nn.Module):
    """One conv applied twice: its input and output channels are the same channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.shared = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(self.shared(torch.relu(self.shared(x))))
        return self.fc(x.mean(dim=(2, 3)))


def x_of(model: nn.Module, n: int = 4, seed: int = 7) -> torch.Tensor:
    c = 1 if isinstance(model, DigitsCNN) else 3
    return torch.randn(n, c, 8, 8, generator=seeded(seed))


def check_remove_equals_zero(model: nn.Module, config: ChannelConfig, **kw):
    """Plan once; the zeroed copy and the removed copy give the same outputs."""
    x = x_of(model)
    plan = channel_plan(model, config, example_input=x[:1], **kw)
    zeroed = plan.zero_(copy.deepcopy(model)).eval()
    removed = plan.remove_(copy.deepcopy(model)).eval()
    with torch.no_grad():
        torch.testing.assert_close(removed(x), zeroed(x), rtol=0, atol=REMOVE_ATOL)
        assert not torch.allclose(zeroed(x), model(x), atol=1e-3)  # pruning did something
    return plan, zeroed, removed


# ------------------------------------------------------------------------------- the models
def test_digits_cnn_remove_equals_masked_and_macs_drop():
    model = build(DigitsCNN)
    plan, _, removed = check_remove_equals_zero(model, ChannelConfig(0.5))
    assert plan.channels() == {"conv1": (32, 16), "conv2": (32, 16), "conv3": (64, 32),
                               "fc": (10, 10)}
    assert type(removed.conv2) is nn.Conv2d
    assert tuple(removed.conv2.weight.shape) == (16, 16, 3, 3)
    assert removed.bn3.num_features == 32 and removed.bn3.running_mean.shape == (32,)
    assert removed.fc.in_features == 32 * 2 * 2  # the flatten's channel x spatial blocks
    x = torch.zeros(1, 1, 8, 8)
    macs = profile(removed, x).macs
    assert macs == 9 * 16 * 64 + 16 * 64 * 16 * 9 + 16 * 32 * 16 * 9 + 128 * 10
    assert macs <= 0.55 * profile(model, x).macs


def test_resnet_residual_add_prunes_summed_channels_together():
    model = build(ResNetish)
    plan, _, removed = check_remove_equals_zero(model, ChannelConfig(0.5))
    groups = plan.channels()
    assert groups["a2+stem"] == (16, 8)       # identity residual: stem and a2 coupled
    assert groups["b2+short"] == (32, 16)     # projection shortcut and b2 coupled
    assert groups["a1"] == (16, 8) and groups["b1"] == (32, 16)
    assert removed.a1.in_channels == 8 and removed.short.in_channels == 8
    assert removed.fc.in_features == 16
    # the kept channel indices of the added convs are the same
    keep_stem = plan.keep(plan.graph.uses[("stem", "out")])
    keep_a2 = plan.keep(plan.graph.uses[("a2", "out")])
    assert (keep_stem == keep_a2).all()


def test_concat_maps_consumer_channels_with_offsets_and_biases():
    model = build(ConcatNet)
    plan, _, removed = check_remove_equals_zero(model, ChannelConfig(0.5))
    assert plan.channels()["left"] == (6, 3) and plan.channels()["right"] == (10, 5)
    keep = plan.keep(plan.graph.uses[("mix", "in")])
    want = list(plan.keep(plan.graph.uses[("left", "out")])) + \
        list(plan.keep(plan.graph.uses[("right", "out")]))
    assert list(keep) == want
    assert removed.mix.in_channels == 8 and removed.left.bias.shape == (3,)
    assert removed.fc.in_features == 6 * 16


def test_depthwise_follows_its_input_channels():
    model = build(DepthwiseSeparable)
    plan, _, removed = check_remove_equals_zero(model, ChannelConfig(0.5))
    assert plan.channels() == {"conv": (8, 4), "pw": (12, 6), "fc": (4, 4)}
    dw = removed.dw
    assert (dw.in_channels, dw.out_channels, dw.groups) == (4, 8, 4)
    assert dw.weight.shape == (8, 1, 3, 3) and dw.bias.shape == (8,)
    assert removed.bn_dw.num_features == 8 and removed.pw.in_channels == 8
    kept = plan.keep(plan.graph.uses[("conv", "out")]).nonzero()[0]
    dw_kept = plan.keep(plan.graph.uses[("dw", "chan")]).nonzero()[0]
    assert list(dw_kept) == [2 * c + j for c in kept for j in (0, 1)]  # multiplier 2


def test_reused_layer_couples_its_inputs_and_outputs():
    model = build(SharedConv)
    plan, _, removed = check_remove_equals_zero(model, ChannelConfig(0.5))
    assert plan.channels()["shared+stem"] == (8, 4)
    assert removed.shared.weight.shape == (4, 4, 3, 3)


def test_linear_mlp_and_zero_channels_prune_exactly():
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh(),
                          nn.Linear(8, 2))
    x = torch.randn(5, 6, generator=seeded(2))
    plan = channel_plan(model, ChannelConfig(0.25), example_input=x)
    plan.zero_()  # the channels are now exactly zero in the original model
    want = model(x)
    plan.remove_()
    assert (model[0].out_features, model[2].in_features, model[2].out_features) == (12, 12, 6)
    torch.testing.assert_close(model(x), want, rtol=0, atol=REMOVE_ATOL)


def test_remove_false_only_zeroes():
    model = build(DigitsCNN)
    prune(model, ChannelConfig(0.5, remove=False), example_input=torch.zeros(1, 1, 8, 8))
    assert model.conv1.out_channels == 32
    zero_rows = (model.conv1.weight.flatten(1) == 0).all(1)
    assert int(zero_rows.sum()) == 16
    assert (model.bn1.weight[zero_rows] == 0).all() and (model.bn1.bias[zero_rows] == 0).all()


# ------------------------------------------------------------------------------- blocking
def test_output_channels_and_blockers_are_not_pruned():
    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 4, 1)
            self.c2 = nn.Conv2d(4, 4, 1)
            self.c3 = nn.Conv2d(4, 4, 1)
            self.norm = nn.LayerNorm(4)

        def forward(self, x):
            y = torch.sigmoid(self.c1(x))            # sigmoid(0) != 0: c1 blocked
            z = self.c2(y) + 1.0                     # adding a constant: c2 blocked
            return self.norm(self.c3(z).mean((2, 3)))  # LayerNorm mixes channels: c3 blocked

    model = Gated()
    graph = trace_channels(model, torch.zeros(1, 3, 4, 4))
    assert any("sigmoid" in n for n in graph.notes)
    assert any("constant" in n for n in graph.notes)
    assert any("LayerNorm" in n for n in graph.notes)
    with pytest.raises(ValueError, match="no channel"):
        prune(model, ChannelConfig(0.5), example_input=torch.zeros(1, 3, 4, 4))


def test_grouped_convolution_blocks_its_channels():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=2),
                          nn.ReLU(), nn.Conv2d(8, 4, 1), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    plan = channel_plan(model, ChannelConfig(0.5), example_input=torch.zeros(1, 3, 6, 6))
    before_after = plan.channels()
    assert before_after["0"] == (8, 8) and "2" not in before_after  # around groups=2
    assert before_after["4"] == (4, 2)
    assert any("groups=2" in n for n in plan.graph.notes)


def test_untraceable_model_raises_clear_error(raises_naming):
    with pytest.raises(ValueError, match="torch.fx"):
        prune(DigitsTransformer(), ChannelConfig(0.5), example_input=torch.zeros(1, 1, 8, 8))
    with raises_naming(ValueError, "example_input"):
        prune(build(DigitsCNN), ChannelConfig(0.5), example_input=torch.zeros(1, 3, 8, 8))


def test_structured_needs_an_input_and_filter_limits_producers(raises_naming):
    with raises_naming(ValueError, "example_input"):
        prune(build(DigitsCNN), ChannelConfig(0.5))
    model = build(DigitsCNN)
    plan = channel_plan(model, ChannelConfig(0.5), filter_fn=lambda m, n: n == "conv2",
                        example_input=torch.zeros(1, 1, 8, 8))
    assert plan.channels()["conv1"] == (32, 32) and plan.channels()["conv2"] == (32, 16)


def test_layer_sparsity_and_coupled_conflict(raises_naming):
    x = torch.zeros(1, 3, 8, 8)
    plan = channel_plan(build(ResNetish), ChannelConfig(0.5, layer_sparsity={"b1": 0.25}),
                        example_input=x)
    assert plan.channels()["b1"] == (32, 24) and plan.channels()["a1"] == (16, 8)
    with raises_naming(ValueError, "layer_sparsity"):
        channel_plan(build(ResNetish), ChannelConfig(layer_sparsity={"stem": 0.5, "a2": 0.25}),
                     example_input=x)
    with raises_naming(ValueError, "layer_sparsity"):
        channel_plan(build(ResNetish), ChannelConfig(layer_sparsity={"bn0": 0.5}),
                     example_input=x)


def test_min_channels_and_global_scope():
    x = torch.zeros(1, 1, 8, 8)
    plan = channel_plan(build(DigitsCNN), ChannelConfig(0.95, min_channels=4), example_input=x)
    assert plan.channels()["conv1"] == (32, 4)
    plan = channel_plan(build(DigitsCNN), ChannelConfig(0.5, scope="global"), example_input=x)
    counts = plan.channels()
    removed = sum(b - a for b, a in counts.values())
    assert removed == round(0.5 * (32 + 32 + 64))
    assert len({a / b for n, (b, a) in counts.items() if n != "fc"}) > 1  # not uniform


# ------------------------------------------------------------------------------- criteria
def _kept_rows(model, plan, layer):
    return plan.keep(plan.graph.uses[(layer, "out")]).nonzero()[0].tolist()


def test_l1_l2_drop_smallest_filters():
    model = build(DigitsCNN)
    with torch.no_grad():
        model.conv2.weight.mul_(0.01)
        model.conv2.weight[[3, 5, 7, 11]] *= 1000  # the four largest filters
    for crit in ("l1", "l2"):
        plan = channel_plan(model, ChannelConfig(0.875, criterion=crit),
                            filter_fn=lambda m, n: n == "conv2",
                            example_input=torch.zeros(1, 1, 8, 8))
        assert _kept_rows(model, plan, "conv2") == [3, 5, 7, 11]


def test_fpgm_drops_the_filters_nearest_the_geometric_median():
    conv = nn.Conv2d(1, 6, 1, bias=False)
    model = nn.Sequential(conv, nn.ReLU(), nn.Conv2d(6, 2, 1))
    with torch.no_grad():  # 1x1 filters on one input: points on a line
        conv.weight.copy_(torch.tensor([-10.0, -1.0, 0.0, 0.5, 2.0, 9.0]).view(6, 1, 1, 1))
    plan = channel_plan(model, ChannelConfig(0.5, criterion="fpgm"),
                        filter_fn=lambda m, n: n == "0", example_input=torch.zeros(1, 1, 2, 2))
    assert _kept_rows(model, plan, "0") == [0, 4, 5]  # the outermost three stay


def test_slim_ranks_by_batchnorm_scale():
    model = build(DigitsCNN)
    with torch.no_grad():
        model.bn1.weight.copy_(torch.linspace(1.0, 0.1, 32))
    plan = channel_plan(model, ChannelConfig(0.25, criterion="slim"),
                        filter_fn=lambda m, n: n == "conv1",
                        example_input=torch.zeros(1, 1, 8, 8))
    assert _kept_rows(model, plan, "conv1") == list(range(24))
    with pytest.raises(ValueError, match="BatchNorm"):
        channel_plan(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)),
                     ChannelConfig(criterion="slim"), example_input=torch.zeros(1, 3))


def test_apoz_and_mean_activation_use_calibration_data(raises_naming):
    model = nn.Sequential(nn.Conv2d(3, 6, 1), nn.ReLU(), nn.Conv2d(6, 2, 1))
    with torch.no_grad():
        model[0].bias.copy_(torch.tensor([0.0, -100.0, 0.0, 0.0, -100.0, 5.0]))
    data = [torch.randn(8, 3, 4, 4, generator=seeded(i)) for i in range(2)]
    sel = dict(filter_fn=lambda m, n: n == "0", data=data)
    plan = channel_plan(model, ChannelConfig(2 / 6, criterion="apoz"), **sel)
    assert _kept_rows(model, plan, "0") == [0, 2, 3, 5]  # 1 and 4 are always zero
    plan = channel_plan(model, ChannelConfig(5 / 6, criterion="mean_activation"), **sel)
    assert _kept_rows(model, plan, "0") == [5]  # the largest mean activation
    with raises_naming(ValueError, "data"):
        channel_plan(model, ChannelConfig(criterion="apoz"), example_input=data[0])


def test_taylor_scores_the_whole_channel():
    model = build(DigitsCNN)
    with torch.no_grad():  # channel 4 of conv1 contributes nothing: sum of g * p is 0
        model.conv1.weight[4] = 0
        model.bn1.weight[4] = 0
        model.bn1.bias[4] = 0
    x = torch.randn(16, 1, 8, 8, generator=seeded(1))
    y = torch.arange(16) % 10
    plan = channel_plan(model, ChannelConfig(1 / 32, criterion="taylor"), data=[(x, y)],
                        filter_fn=lambda m, n: n == "conv1")
    assert 4 not in _kept_rows(model, plan, "conv1")
    grads_before = [p.grad for p in model.parameters()]
    assert all(g is None for g in grads_before)  # .grad untouched


def test_pretrained_digits_cnn_prunes_without_touching_the_original():
    model = get_model("digits-cnn")
    before = copy.deepcopy(model.state_dict())
    plan = channel_plan(model, ChannelConfig(0.5), example_input=torch.zeros(1, 1, 8, 8))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert "not pruned: the model's outputs" in plan.table()
