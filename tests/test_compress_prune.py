"""Pruning configs, schedules, N:M masks, masked layers and the unstructured pruners
(``prune`` with LevelConfig / NMConfig), the handler registry and the storage protocol."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from lowbit.compress import (AGPSchedule, ChannelConfig, FineTune, Int8DynamicConfig,
                             KeepMasks, LevelConfig, LinearSchedule, LotteryTicketConfig,
                             MaskedConv2d, MaskedLinear, MovementConfig, NMConfig, OneShot,
                             agp_sparsity, finalize, is_nm, masked_layers, nm_mask, profile,
                             prune, quantize, register_prune_handler, storage_of, to_workload,
                             train)
from lowbit.compress.nm import layer_nm_mask

from prune_helpers import one_thread, seeded  # noqa: F401 (one_thread: autouse fixture)


class SmallCNN(nn.Module):
    """conv (K=9, not a multiple of 4) -> conv (K=72) -> Linear (K=128)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc(nn.functional.max_pool2d(x, 2).flatten(1))


def small_cnn(seed: int = 0) -> SmallCNN:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SmallCNN()


def images(n: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=seeded(seed))


# ------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("make, field", [
    (lambda: LevelConfig(sparsity=1.0), "sparsity"),
    (lambda: LevelConfig(sparsity=-0.1), "sparsity"),
    (lambda: LevelConfig(scope="model"), "scope"),
    (lambda: LevelConfig(criterion="l1"), "criterion"),
    (lambda: LevelConfig(scope="global", layer_sparsity={"fc": 0.5}), "layer_sparsity"),
    (lambda: LevelConfig(layer_sparsity={"fc": 1.5}), "layer_sparsity['fc']"),
    (lambda: NMConfig(n=0, m=4), "n"),
    (lambda: NMConfig(n=2, m=1), "m"),
    (lambda: ChannelConfig(criterion="l3"), "criterion"),
    (lambda: ChannelConfig(min_channels=0), "min_channels"),
    (lambda: MovementConfig(start=0.5, end=0.5), "start, end"),
    (lambda: MovementConfig(update_every=0), "update_every"),
    (lambda: LotteryTicketConfig(rounds=0), "rounds"),
    (lambda: LotteryTicketConfig(rewind_step=-1), "rewind_step"),
    (lambda: FineTune(lr=0), "lr"),
    (lambda: FineTune(optimizer="lamb"), "optimizer"),
    (lambda: LinearSchedule(steps=0), "steps"),
    (lambda: AGPSchedule(initial=1.0), "initial"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_config_errors_name_the_field(make, field, raises_naming):
    with raises_naming(ValueError, field):
        make()


@pytest.mark.parametrize("make, field", [
    (lambda: ChannelConfig(remove=1), "remove"),
    (lambda: LevelConfig(layer_sparsity=[("fc", 0.5)]), "layer_sparsity"),
    (lambda: MovementConfig(finetune={"epochs": 1}), "finetune"),
])
def test_config_type_errors_name_the_field(make, field, raises_naming):
    with raises_naming(TypeError, field):
        make()


def test_configs_are_frozen_and_layer_sparsity_read_only():
    cfg = LevelConfig(layer_sparsity={"fc": 0.25})
    with pytest.raises(AttributeError):
        cfg.sparsity = 0.1
    with pytest.raises(TypeError):
        cfg.layer_sparsity["fc"] = 0.9
    assert cfg == LevelConfig(layer_sparsity={"fc": 0.25})
    assert NMConfig().kind == "2:4" and NMConfig(1, 4).sparsity == 0.75


# ------------------------------------------------------------------------------- schedules
def test_agp_is_zhu_gupta_cubic():
    # s_t = s_f + (s_i - s_f)(1 - t/n)^3
    assert agp_sparsity(0, 4, 0.8) == 0.0
    assert agp_sparsity(4, 4, 0.8) == pytest.approx(0.8)
    assert agp_sparsity(2, 4, 0.8, 0.2) == pytest.approx(0.8 - 0.6 / 8)
    assert agp_sparsity(9, 4, 0.8) == agp_sparsity(4, 4, 0.8)  # clamped after the end
    targets = AGPSchedule(steps=4).targets(0.8)
    assert len(targets) == 4 and targets[-1] == pytest.approx(0.8)
    steps = [b - a for a, b in zip((0.0,) + targets, targets)]
    assert all(x > y for x, y in zip(steps, steps[1:]))  # most weights go early


def test_linear_and_oneshot_schedules(raises_naming):
    assert LinearSchedule(4).targets(0.8) == pytest.approx((0.2, 0.4, 0.6, 0.8))
    assert OneShot().targets(0.5) == (0.5,)
    with raises_naming(ValueError, "initial"):
        AGPSchedule(steps=2, initial=0.6).targets(0.5)


# ------------------------------------------------------------------------------- N:M masks
def test_nm_mask_keeps_largest_n_of_every_m():
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.2, 1.0, 0.0, 2.0, 0.5]])
    assert nm_mask(scores, 2, 4).int().tolist() == [[0, 1, 1, 0, 1, 0, 1, 0]]
    assert nm_mask(scores, 1, 4).int().tolist() == [[0, 1, 0, 0, 0, 0, 1, 0]]
    ties = torch.ones(1, 4)
    assert nm_mask(ties, 2, 4).int().tolist() == [[1, 1, 0, 0]]  # ties: lower index kept


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (4, 8), (1, 2)])
def test_nm_mask_random_exact_pattern(n, m):
    w = torch.randn(6, 3 * m, generator=seeded(n * 10 + m))
    mask = nm_mask(w.abs(), n, m)
    assert is_nm(mask, n, m)
    groups = w.abs().reshape(6, 3, m)
    kept_min = torch.where(mask.reshape(6, 3, m), groups, torch.inf).amin(-1)
    dropped_max = torch.where(~mask.reshape(6, 3, m), groups, -torch.inf).amax(-1)
    assert (kept_min >= dropped_max).all()


def test_nm_mask_conv_groups_along_cin_kh_kw():
    w = torch.randn(4, 4, 3, 3, generator=seeded(3))  # K = 36 in (cin, kh, kw) order
    mask = layer_nm_mask(w.abs(), 2, 4)
    assert mask.shape == w.shape
    assert is_nm(mask.reshape(4, -1), 2, 4)
    with pytest.raises(ValueError, match="multiple"):
        nm_mask(torch.ones(2, 6), 2, 4)


# ------------------------------------------------------------------------------- masks
def test_masked_layer_forward_equals_dense_with_zeros():
    model = small_cnn()
    x = images()
    prune(model, LevelConfig(0.6))
    assert all(isinstance(model.get_submodule(n), (MaskedConv2d, MaskedLinear))
               for n in ("conv1", "conv2", "fc"))
    out = model(x)
    dense = small_cnn()
    with torch.no_grad():
        for n, m in masked_layers(model):
            dense.get_submodule(n).weight.copy_(m.masked_weight())
    torch.testing.assert_close(out, dense(x), rtol=0, atol=0)


def test_masked_layer_storage_record_and_workload():
    model = small_cnn()
    prune(model, NMConfig(2, 4), filter_fn=lambda m, n: n != "conv1")
    fc = model.fc
    info = storage_of(fc, "fc")
    assert info.sparsity == 0.5 and info.sparsity_kind == "2:4"
    assert info.bytes == fc.weight.numel() * 4 + fc.bias.numel() * 4 + fc.weight.numel()
    assert info.format == "fp32" and info.weight_bits == 32 and info.act_bits == 32
    p = profile(model, images(1))
    assert p.layer("conv2").sparsity == 0.5 and p.layer("conv1").sparsity == 0.0
    assert p.macs == profile(small_cnn(), images(1)).macs  # masks do not change MACs
    wl = to_workload(model, images(1))
    kinds = {layer.name: layer.sparsity.kind for layer in wl.layers}
    assert kinds["conv2"] == "2:4" and kinds["fc"] == "2:4" and kinds["conv1"] == "dense"
    prune(model, LevelConfig(0.3), filter_fn=lambda m, n: n == "conv1")
    assert storage_of(model.conv1).sparsity_kind == "unstructured"


def test_general_nm_reports_unstructured_to_the_protocol():
    model = small_cnn()
    prune(model, NMConfig(1, 4), filter_fn=lambda m, n: n == "fc")
    assert model.fc.sparsity_kind == "1:4"
    info = storage_of(model.fc)
    assert info.sparsity_kind == "unstructured" and info.sparsity == 0.75


def test_keep_masks_holds_zeros_against_stale_optimizer_momentum():
    x, y = images(32), torch.arange(32) % 10
    loader = [(x, y)] * 4

    def run(keep: bool) -> torch.Tensor:
        model = small_cnn()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        train(model, loader, epochs=1, lr=0.05, optimizer=opt, schedule="constant")
        prune(model, LevelConfig(0.5))  # the optimizer still holds momentum for fc.weight
        opt.param_groups[0]["params"] = list(model.parameters())
        train(model, loader, epochs=1, lr=0.05, optimizer=opt, schedule="constant",
              callbacks=[KeepMasks(model)] if keep else [])
        return model.fc.weight[~model.fc.weight_mask]

    assert (run(keep=False) != 0).any()  # momentum moves the stored pruned weights
    assert (run(keep=True) == 0).all()


def test_finalize_gives_plain_layers_with_the_zeros():
    model = small_cnn()
    x = images()
    prune(model, LevelConfig(0.5))
    want = model(x)
    finalize(model)
    assert type(model.fc) is nn.Linear and type(model.conv1) is nn.Conv2d
    assert not list(masked_layers(model))
    torch.testing.assert_close(model(x), want, rtol=0, atol=0)
    assert float((model.fc.weight == 0).float().mean()) == pytest.approx(0.5, abs=1e-3)
    assert profile(model, images(1)).layer("fc").sparsity == pytest.approx(0.5, abs=1e-3)


# ------------------------------------------------------------------------------- level
def test_level_layer_scope_prunes_exact_count_of_smallest():
    model = small_cnn()
    ref = {n: m.weight.detach().clone() for n, m in model.named_modules()
           if isinstance(m, (nn.Conv2d, nn.Linear))}
    prune(model, LevelConfig(0.3, layer_sparsity={"conv2": 0.7}))
    for name, w in ref.items():
        mask = model.get_submodule(name).weight_mask
        s = 0.7 if name == "conv2" else 0.3
        assert int((~mask).sum()) == round(s * w.numel())
        assert w.abs()[~mask].max() <= w.abs()[mask].min()


def test_level_global_scope_uses_one_threshold():
    model = small_cnn()
    ws = {n: m.weight.detach().abs().clone() for n, m in model.named_modules()
          if isinstance(m, (nn.Conv2d, nn.Linear))}
    prune(model, LevelConfig(0.5, scope="global"))
    total = sum(w.numel() for w in ws.values())
    pruned = sum(int((~model.get_submodule(n).weight_mask).sum()) for n in ws)
    assert pruned == round(0.5 * total)
    kept_min = min(float(w[model.get_submodule(n).weight_mask].min()) for n, w in ws.items())
    dropped_max = max(float(w[~model.get_submodule(n).weight_mask].max()) for n, w in ws.items())
    assert dropped_max <= kept_min
    sparsities = {n: 1 - float(model.get_submodule(n).weight_mask.float().mean()) for n in ws}
    assert len({round(s, 2) for s in sparsities.values()}) > 1  # not uniform per layer


def test_level_pruning_again_only_grows_the_mask():
    model = small_cnn()
    prune(model, LevelConfig(0.3))
    first = model.fc.weight_mask.clone()
    with torch.no_grad():  # make previously pruned weights large: they must stay pruned
        model.fc.weight[~first] = 100.0
    prune(model, LevelConfig(0.5))
    assert not (model.fc.weight_mask & ~first).any()
    assert int((~model.fc.weight_mask).sum()) == round(0.5 * first.numel())


def test_level_taylor_needs_labelled_data_and_ranks_by_g_times_w(raises_naming):
    model = small_cnn()
    x, y = images(32), torch.arange(32) % 10
    with raises_naming(ValueError, "data"):
        prune(small_cnn(), LevelConfig(0.5, criterion="taylor"))
    with pytest.raises(ValueError, match="labels"):
        prune(small_cnn(), LevelConfig(0.5, criterion="taylor"), data=[x])
    batches = [(x[:16], y[:16]), (x[16:], y[16:])]
    want = torch.zeros_like(model.fc.weight)
    for xb, yb in batches:  # (dL/dw * w)^2 averaged over batches, by hand
        g, = torch.autograd.grad(nn.functional.cross_entropy(model(xb), yb), model.fc.weight)
        want += (g * model.fc.weight).detach().square() / len(batches)
    prune(model, LevelConfig(0.25, criterion="taylor"), data=batches,
          filter_fn=lambda m, n: n == "fc")
    mask = model.fc.weight_mask
    assert int((~mask).sum()) == round(0.25 * mask.numel())
    assert want[~mask].max() <= want[mask].min()


def test_level_unknown_layer_sparsity_name(raises_naming):
    with raises_naming(ValueError, "layer_sparsity"):
        prune(small_cnn(), LevelConfig(0.5, layer_sparsity={"conv9": 0.5}))


# ------------------------------------------------------------------------------- N:M
def test_nm_prunes_linear_and_conv_and_skips_k_not_multiple():
    model = small_cnn()
    with pytest.warns(RuntimeWarning, match="conv1"):
        prune(model, NMConfig(2, 4))
    assert type(model.conv1) is nn.Conv2d  # K = 9
    for name in ("conv2", "fc"):
        layer = model.get_submodule(name)
        assert layer.sparsity_kind == "2:4" and is_nm(layer.weight_mask, 2, 4)
        assert (layer.weight[~layer.weight_mask] == 0).all()


def test_nm_without_any_fitting_layer(raises_naming):
    model = nn.Sequential(nn.Linear(6, 3))
    with raises_naming(ValueError, "m"):
        prune(model, NMConfig(2, 4))


# ------------------------------------------------------------------------------- registry
def test_prune_unknown_config_and_empty_selection(raises_naming):
    with raises_naming(TypeError, "config"):
        prune(small_cnn(), object())
    with pytest.raises(ValueError, match="no nn.Linear"):
        prune(small_cnn(), LevelConfig(), filter_fn=lambda m, n: False)


def test_register_prune_handler_for_a_new_config():
    @dataclass(frozen=True)
    class ZeroFirstRow:
        pass

    seen = []

    @register_prune_handler(ZeroFirstRow)
    def handler(model, targets, config, inputs):
        seen.extend(n for n, _ in targets)
        for _, m in targets:
            with torch.no_grad():
                m.weight[0] = 0

    model = prune(small_cnn(), ZeroFirstRow(), filter_fn=lambda m, n: isinstance(m, nn.Linear))
    assert seen == ["fc"] and (model.fc.weight[0] == 0).all()


def test_masked_layer_rejects_bad_mask(raises_naming):
    model = small_cnn()
    from lowbit.compress.masks import mask_layer
    with raises_naming(ValueError, "mask"):
        mask_layer(model, "fc", torch.ones(3, 3, dtype=torch.bool), "unstructured")
    with pytest.raises(TypeError, match="nn.Linear"):
        mask_layer(nn.Sequential(nn.ReLU()), "0", torch.ones(1, dtype=torch.bool), "x")


def test_masking_draws_no_random_numbers():
    model = small_cnn()
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    prune(model, LevelConfig(0.5))
    assert torch.equal(torch.rand(3), want)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        finalize(model)
    assert math.isclose(float((model.conv2.weight == 0).float().mean()), 0.5, abs_tol=1e-3)


def test_pruned_model_quantizes_with_its_zeros():
    """prune -> quantize composes: the integer weights keep the pruned zeros."""
    model = small_cnn()
    prune(model, LevelConfig(0.5))
    masks = {n: m.weight_mask.clone() for n, m in masked_layers(model)}
    quantize(model, Int8DynamicConfig())
    for name, mask in masks.items():
        q = model.get_submodule(name).weight_q
        assert (q.reshape(mask.shape)[~mask] == 0).all(), name
