"""Low-rank factorization: rank selection, the SVD factors (Eckart-Young), exactness of the
two-layer forms, params / MACs from ``profile``, and the digits CNN at half its params."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lowbit.compress import (Int8DynamicConfig, LowRankConfig, LowRankConv2d, LowRankLinear,
                             QuantConv2d, QuantLinear, deterministic, digits_loaders, evaluate,
                             factorize, get_model, low_rank_layers, profile, quantize, train)
from lowbit.compress.lowrank import choose_rank, svd_factors

# float32 forward of the two factor layers against the one layer they replace (full rank)
FACTOR_ATOL = 2e-5


def _matrix_with_singular_values(s, n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
    v, _ = torch.linalg.qr(torch.randn(k, k, dtype=torch.float64, generator=g))
    return (u[:, :len(s)] * torch.tensor(s, dtype=torch.float64)) @ v[:, :len(s)].T


@pytest.mark.parametrize("kwargs, field", [
    ({}, "rank"),
    ({"rank": 2, "energy": 0.9}, "rank"),
    ({"rank": 0}, "rank"),
    ({"rank": 2.0}, "rank"),
    ({"rank_ratio": 0.0}, "rank_ratio"),
    ({"param_ratio": 1.5}, "param_ratio"),
    ({"energy": math.nan}, "energy"),
    ({"energy": True}, "energy"),
])
def test_config_validation(kwargs, field, raises_naming):
    with raises_naming(ValueError, field):
        LowRankConfig(**kwargs)


@pytest.mark.parametrize("config, want", [
    (LowRankConfig(rank=3), 3),
    (LowRankConfig(rank=100), 6),                 # capped at min(N, K)
    (LowRankConfig(rank_ratio=0.5), 3),
    (LowRankConfig(rank_ratio=0.01), 1),
    (LowRankConfig(param_ratio=0.5), 1),          # floor(0.5 * 6 * 10 / 16) = floor(1.875)
    (LowRankConfig(param_ratio=1.0), 3),          # floor(60 / 16)
    (LowRankConfig(energy=0.9), 2),               # (16 + 4) / 21.25 = 0.941
    (LowRankConfig(energy=20 / 21.25), 2),        # exactly on the boundary
    (LowRankConfig(energy=0.95), 3),
    (LowRankConfig(energy=1.0), 4),               # the numerical rank
])
def test_choose_rank(config, want):
    w = _matrix_with_singular_values([4.0, 2.0, 1.0, 0.5], 6, 10)
    assert choose_rank(w, config) == want


def test_choose_rank_of_zero_matrix():
    assert choose_rank(torch.zeros(4, 5), LowRankConfig(energy=0.5)) == 1


@pytest.mark.parametrize("rank", [1, 2, 3, 4])
def test_svd_factors_are_the_best_approximation(rank):
    s = [4.0, 2.0, 1.0, 0.5]
    w = _matrix_with_singular_values(s, 6, 10, seed=rank).float()
    up, down = svd_factors(w, rank)
    assert up.shape == (6, rank) and down.shape == (rank, 10)
    err = torch.linalg.matrix_norm((up @ down - w).double())
    assert float(err) == pytest.approx(math.sqrt(sum(x * x for x in s[rank:])), abs=1e-5)
    # the singular values are split evenly: both factors have the same column / row norms
    torch.testing.assert_close(up.norm(dim=0), down.norm(dim=1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_full_rank_is_the_same_layer(bias):
    torch.manual_seed(0)
    lin = nn.Linear(12, 7, bias=bias)
    lr = LowRankLinear.from_float(lin, rank=7)
    x = torch.randn(5, 3, 12)
    torch.testing.assert_close(lr(x), lin(x), atol=FACTOR_ATOL, rtol=0)
    assert lr.rank == 7 and lr.full_rank == 7 and (lr.up.bias is None) == (not bias)
    torch.testing.assert_close(lr.effective_weight(), lin.weight, atol=FACTOR_ATOL, rtol=0)


@pytest.mark.parametrize("geometry", [
    {"stride": 1, "padding": 1},
    {"stride": 2, "padding": 0, "dilation": 2},
    {"stride": (2, 1), "padding": (1, 2), "padding_mode": "reflect"},
    {"padding": "same"},
], ids=["same_pad", "strided_dilated", "reflect", "str_padding"])
def test_conv_factors_are_a_kxk_then_1x1_conv(geometry):
    torch.manual_seed(1)
    conv = nn.Conv2d(5, 8, 3, **geometry)
    x = torch.randn(2, 5, 9, 9)
    full = LowRankConv2d.from_float(conv, rank=8)
    assert full.down.kernel_size == (3, 3) and full.up.kernel_size == (1, 1)
    torch.testing.assert_close(full(x), conv(x), atol=FACTOR_ATOL, rtol=0)
    low = LowRankConv2d.from_float(conv, rank=3)  # exact for its own rank-3 kernel
    want = F.conv2d(F.pad(x, _pads(conv), mode="reflect") if conv.padding_mode == "reflect"
                    else x, low.effective_weight(), conv.bias, conv.stride,
                    0 if conv.padding_mode == "reflect" else conv.padding, conv.dilation)
    torch.testing.assert_close(low(x), want, atol=FACTOR_ATOL, rtol=0)


def _pads(conv):
    ph, pw = conv.padding
    return (pw, pw, ph, ph)


def test_conv_rank_of_the_reshaped_kernel():
    conv = nn.Conv2d(2, 16, 3)                     # W [16, 18]: rank at most 16
    w2d = conv.weight.reshape(16, -1)
    up, down = svd_factors(w2d, 4)
    lr = LowRankConv2d.from_float(conv, 4)
    torch.testing.assert_close(lr.down.weight.reshape(4, -1), down)
    torch.testing.assert_close(lr.up.weight.reshape(16, 4), up)
    assert lr.full_rank == 16


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 32, 3, padding=1)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.tiny = nn.Linear(32, 2)
        self.fc = nn.Linear(64, 64)

    def forward(self, x):
        h = self.dw(self.conv(x)).mean(dim=(2, 3))
        return self.fc(torch.cat([h, h], dim=1)) + self.tiny(h).sum()


def test_factorize_selects_and_skips():
    torch.manual_seed(2)
    m = Net()
    with pytest.warns(RuntimeWarning, match="tiny"):
        factorize(m, LowRankConfig(rank=2))
    assert low_rank_layers(m) == {"conv": (2, 32), "fc": (2, 64)}
    assert isinstance(m.dw, nn.Conv2d) and isinstance(m.tiny, nn.Linear)  # grouped; no saving
    m2 = Net()
    factorize(m2, LowRankConfig(rank=2), filter_fn=lambda mod, name: name == "fc")
    assert list(low_rank_layers(m2)) == ["fc"]


def test_factorize_errors(raises_naming):
    with raises_naming(TypeError, "config"):
        factorize(Net(), {"rank": 2})
    with pytest.raises(ValueError, match="no selected layer gets smaller"):
        factorize(nn.Sequential(nn.Linear(4, 4)), LowRankConfig(rank=2))
    with pytest.raises(ValueError, match="filter_fn"):
        factorize(Net(), LowRankConfig(rank=2), filter_fn=lambda m, n: False)


def test_profile_counts_the_factors():
    torch.manual_seed(3)
    m = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.Flatten(), nn.Linear(32 * 36, 50))
    factorize(m, LowRankConfig(rank=5))
    p = profile(m, torch.zeros(1, 16, 6, 6))
    k_conv, k_fc = 16 * 9, 32 * 36
    assert p.params == 5 * (k_conv + 32) + 32 + 5 * (k_fc + 50) + 50
    assert p.macs == 36 * 5 * (k_conv + 32) + 5 * (k_fc + 50)


def test_factorized_layers_can_be_quantized():
    torch.manual_seed(4)
    m = factorize(nn.Sequential(nn.Conv2d(8, 16, 3), nn.Flatten(), nn.Linear(16 * 16, 32)),
                  LowRankConfig(rank=3))
    quantize(m, Int8DynamicConfig())
    assert isinstance(m[0].down, QuantConv2d) and isinstance(m[0].up, QuantConv2d)
    assert isinstance(m[2].down, QuantLinear) and isinstance(m[2].up, QuantLinear)
    assert m(torch.randn(2, 8, 6, 6)).shape == (2, 32)


# --------------------------------------------------------------------------- on digits
# conv2 and conv3 hold 90 % of the digits CNN's weights; factors at 44 % of theirs bring the
# model to <= 50 % of its params. Fine-tuning: 3 epochs, batch 64, Adam, lr 2e-3, seed 0.
DIGITS_PARAM_RATIO = 0.44
DIGITS_MAX_DROP = 0.02


def test_digits_cnn_at_half_the_params():
    dense = get_model("digits-cnn")
    _, test_loader = digits_loaders()
    x = torch.zeros(1, 1, 8, 8)
    p_dense, acc_dense = profile(dense, x), evaluate(dense, test_loader)
    model = factorize(copy.deepcopy(dense), LowRankConfig(param_ratio=DIGITS_PARAM_RATIO),
                      filter_fn=lambda m, name: name in ("conv2", "conv3"))
    assert low_rank_layers(model) == {"conv2": (12, 32), "conv3": (23, 64)}
    p = profile(model, x)
    assert p.params <= 0.5 * p_dense.params
    assert p.macs <= 0.45 * p_dense.macs
    acc_truncated = evaluate(model, test_loader)
    with deterministic(0):
        loader, _ = digits_loaders(batch_size=64, seed=0)
        train(model, loader, epochs=3, lr=2e-3)
    acc = evaluate(model, test_loader)
    assert acc >= acc_dense - DIGITS_MAX_DROP, (acc_dense, acc_truncated, acc)
    assert acc > acc_truncated
