"""quantize(model, config) end to end: every config on a small CNN and an attention block,
calibration errors, BatchNorm folding, QAT and convert."""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lowbit.compress import (FakeQuantize, Int4WeightOnlyConfig, Int8DynamicConfig,
                             Int8StaticConfig, IntxWeightOnlyConfig, PerChannel, PerGroup,
                             PerTensor, QATConfig, QATConv2d, QATLinear, QuantConv2d,
                             QuantLinear, QuantSpec, conv_bn_pairs, convert, fold_batchnorm,
                             quantize, register_handler)
from lowbit.compress.qmodules import ActQuant

# SQNR floors (dB) of the quantized model's output against the float model on seeded
# synthetic data (random-weight models); the measured values sit 4-11 dB above these.
SQNR_DB = {
    "int8_dynamic": 40.0,
    "int8_static_minmax": 38.0,
    "int8_static_ema": 36.0,
    "int8_static_percentile": 37.0,
    "int8_static_mse": 38.0,
    "int8_static_kl": 38.0,
    "int4_weight_only_g32": 24.0,
    "int4_weight_only_channel": 21.0,
    "qat_w8a8": 36.0,
}
# convert(QAT model) against the QAT model's eval forward: only float rounding differs
# (float32 matmul of dequantized values vs the exact integer sum scaled once).
CONVERT_RTOL = 1e-5


def sqnr_db(ref: torch.Tensor, got: torch.Tensor) -> float:
    ref, got = ref.detach().double(), got.detach().double()
    return float(10 * torch.log10(ref.square().sum() / (ref - got).square().sum()))


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc1 = nn.Linear(16 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class Attention(nn.Module):
    """A pre-norm transformer block built from nn.Linear (as third-party models are)."""

    def __init__(self, d: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        b, t, d = x.shape
        h = self.norm1(x)
        split = lambda z: z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        att = torch.softmax(split(self.q(h)) @ split(self.k(h)).transpose(-1, -2)
                            / (d // self.heads) ** 0.5, dim=-1)
        x = x + self.o((att @ split(self.v(h))).transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


def _cnn(seed=0) -> TinyCNN:
    torch.manual_seed(seed)
    m = TinyCNN().eval()
    with torch.no_grad():
        for bn in (m.bn1, m.bn2):
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    return m


def _attention(seed=0) -> Attention:
    torch.manual_seed(seed)
    return Attention().eval()


def _images(n, seed):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _tokens(n, seed):
    return torch.randn(n, 6, 64, generator=torch.Generator().manual_seed(seed))


@dataclass
class Case:
    model: nn.Module
    calib: list
    test: torch.Tensor


def _case(kind: str) -> Case:
    if kind == "cnn":
        return Case(_cnn(), [_images(32, s) for s in range(8)], _images(64, 100))
    return Case(_attention(), [_tokens(16, s) for s in range(8)], _tokens(32, 100))


def _quantized_types(model):
    return [type(m) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d,
                                                               QuantLinear, QuantConv2d))]


@pytest.mark.parametrize("kind", ["cnn", "attention"])
def test_int8_dynamic_end_to_end(kind):
    c = _case(kind)
    ref = c.model(c.test)
    q = quantize(copy.deepcopy(c.model), Int8DynamicConfig())
    assert set(_quantized_types(q)) <= {QuantLinear, QuantConv2d}
    assert all(m.act.mode == "dynamic" for m in q.modules() if isinstance(m, QuantLinear))
    assert sqnr_db(ref, q(c.test)) >= SQNR_DB["int8_dynamic"]


@pytest.mark.parametrize("kind", ["cnn", "attention"])
@pytest.mark.parametrize("calibrator", ["minmax", "ema", "percentile", "mse", "kl"])
def test_int8_static_end_to_end(kind, calibrator):
    c = _case(kind)
    ref = c.model(c.test)
    q = quantize(copy.deepcopy(c.model), Int8StaticConfig(calibrator=calibrator),
                 calibration=c.calib)
    layers = [m for m in q.modules() if isinstance(m, (QuantLinear, QuantConv2d))]
    assert layers and all(m.act.mode == "static" and not m.act.symmetric for m in layers)
    assert sqnr_db(ref, q(c.test)) >= SQNR_DB[f"int8_static_{calibrator}"]


def test_int8_static_symmetric_activations():
    c = _case("attention")
    q = quantize(copy.deepcopy(c.model), Int8StaticConfig("minmax", act_symmetric=True),
                 calibration=c.calib)
    assert all(int(m.act_zero_point) == 0 and m.act.symmetric
               for m in q.modules() if isinstance(m, QuantLinear))
    assert sqnr_db(c.model(c.test), q(c.test)) >= SQNR_DB["int8_static_minmax"]


def test_static_accepts_a_dataloader_of_pairs():
    c = _case("cnn")
    x = torch.cat(c.calib)
    loader = DataLoader(TensorDataset(x, torch.zeros(len(x))), batch_size=32)
    a = quantize(copy.deepcopy(c.model), Int8StaticConfig("minmax"), calibration=loader)
    b = quantize(copy.deepcopy(c.model), Int8StaticConfig("minmax"), calibration=c.calib)
    assert torch.equal(a(c.test), b(c.test))


def test_int4_weight_only_end_to_end_skips_layers_with_short_k():
    c = _case("cnn")
    ref = c.model(c.test)
    # K = 1 * 3 * 3 and 8 * 3 * 3 are not multiples of 32: both convolutions stay float
    with pytest.warns(RuntimeWarning, match="conv1, conv2"):
        q = quantize(copy.deepcopy(c.model), Int4WeightOnlyConfig(group_size=32))
    assert isinstance(q.conv1, nn.Conv2d) and isinstance(q.conv2, nn.Conv2d)
    assert isinstance(q.fc1, QuantLinear) and q.fc1.weight_format == "int4"
    assert sqnr_db(ref, q(c.test)) >= SQNR_DB["int4_weight_only_g32"]


@pytest.mark.parametrize("g", [32, 64])
def test_int4_weight_only_attention(g):
    c = _case("attention")
    q = quantize(copy.deepcopy(c.model), Int4WeightOnlyConfig(group_size=g))
    assert all(m.lowbit_storage()["format"] == "int4" for m in q.modules()
               if isinstance(m, QuantLinear))
    assert sqnr_db(c.model(c.test), q(c.test)) >= SQNR_DB["int4_weight_only_g32"]


def test_intx_weight_only_end_to_end():
    c = _case("attention")
    q = quantize(copy.deepcopy(c.model), IntxWeightOnlyConfig(bits=4))
    assert sqnr_db(c.model(c.test), q(c.test)) >= SQNR_DB["int4_weight_only_channel"]
    assert all(m.weight_format == "int4-channel" for m in q.modules()
               if isinstance(m, QuantLinear))


def test_filter_fn_selects_layers():
    c = _case("attention")
    q = quantize(copy.deepcopy(c.model), Int8DynamicConfig(),
                 filter_fn=lambda m, name: name.startswith("mlp"))
    assert isinstance(q.mlp[0], QuantLinear) and isinstance(q.q, nn.Linear)


# -- errors -----------------------------------------------------------------------------------
def test_nan_in_calibration_names_layer_and_batch():
    c = _case("cnn")
    calib = [b.clone() for b in c.calib]
    calib[2][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"'conv1' at calibration batch 2"):
        quantize(copy.deepcopy(c.model), Int8StaticConfig("kl"), calibration=calib)


def test_empty_or_missing_calibration_raises():
    c = _case("cnn")
    with pytest.raises(ValueError, match="yielded no batch"):
        quantize(copy.deepcopy(c.model), Int8StaticConfig(), calibration=[])
    with pytest.raises(ValueError, match="needs calibration data"):
        quantize(copy.deepcopy(c.model), Int8StaticConfig())
    with pytest.raises(ValueError, match="does not use calibration"):
        quantize(copy.deepcopy(c.model), Int8DynamicConfig(), calibration=c.calib)
    with pytest.raises(ValueError, match="does not use calibration"):
        quantize(copy.deepcopy(c.model), QATConfig(), calibration=c.calib)


def test_hooks_are_removed_after_a_failed_calibration():
    c = _case("cnn")
    m = copy.deepcopy(c.model)
    with pytest.raises(ValueError):
        quantize(m, Int8StaticConfig(), calibration=[torch.full((2, 1, 8, 8), float("inf"))])
    assert not m.conv1._forward_pre_hooks and m.training is False


def test_layer_without_input_during_calibration_raises():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.used(x)

    with pytest.raises(ValueError, match="'unused' received no input"):
        quantize(Branchy(), Int8StaticConfig("minmax"), calibration=[torch.ones(2, 4)])


def test_constant_activation_warns_and_runs():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        m[0].bias.fill_(-100.0)  # ReLU output is all zero
    with pytest.warns(RuntimeWarning, match="constant"):
        quantize(m, Int8StaticConfig("minmax"), calibration=[torch.randn(8, 4)])
    assert float(m[2].act_scale) == 1.0
    assert torch.isfinite(m(torch.randn(3, 4))).all()


def test_no_quantizable_layer_raises():
    with pytest.raises(ValueError, match="no quantizable layer"):
        quantize(nn.Sequential(nn.ReLU(), nn.LayerNorm(4)), Int8DynamicConfig())
    with pytest.raises(ValueError, match="no quantizable layer"):
        quantize(_cnn(), Int8DynamicConfig(), filter_fn=lambda m, n: False)
    q = quantize(_cnn(), Int8DynamicConfig())
    with pytest.raises(ValueError, match="no quantizable layer"):
        quantize(q, Int8DynamicConfig())  # already quantized


def test_unknown_config_and_custom_handler():
    @dataclass(frozen=True)
    class Nothing:
        pass

    with pytest.raises(TypeError, match="no handler for Nothing"):
        quantize(_cnn(), Nothing())

    @dataclass(frozen=True)
    class Tag:
        label: str = "x"

    seen = []

    @register_handler(Tag)
    def _tag(model, targets, config, calibration):
        seen.extend(name for name, _ in targets)

    quantize(_cnn(), Tag())
    assert seen == ["conv1", "conv2", "fc1", "fc2"]


def test_unsupported_conv_is_skipped_by_default_and_rejected_when_forced():
    m = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
                      nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 2, 1))
    quantize(m, Int8DynamicConfig())
    assert type(m[0]) is nn.Conv2d and isinstance(m[1], QuantConv2d) and m[1].groups == 4
    m = nn.Sequential(nn.Conv2d(4, 4, 3, padding="same"))
    with pytest.raises(ValueError, match="layer '0'.*padding='same'"):
        quantize(m, Int8DynamicConfig(), filter_fn=lambda mod, n: True)


@pytest.mark.parametrize("bad, match", [
    (lambda: Int8StaticConfig(calibrator="entropy"), "calibrator"),
    (lambda: Int8StaticConfig(percentile=0), "percentile"),
    (lambda: Int8StaticConfig(act_symmetric=1), "act_symmetric"),
    (lambda: Int4WeightOnlyConfig(group_size=16), "32, 64 or 128"),
    (lambda: IntxWeightOnlyConfig(bits=1), "bits"),
    (lambda: IntxWeightOnlyConfig(granularity=PerChannel(1)), "PerChannel\\(0\\)"),
    (lambda: QATConfig(weight_bits=9), "weight_bits"),
    (lambda: QATConfig(act_bits=0), "act_bits"),
    (lambda: QATConfig(granularity=PerGroup(32)), "act_bits=None"),
    (lambda: QATConfig(granularity="channel"), "granularity"),
    (lambda: QATConfig(momentum=2.0), "momentum"),
    (lambda: Int8DynamicConfig(fold_bn="yes"), "fold_bn"),
])
def test_config_validation_says_how_to_fix(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        bad()


# -- BatchNorm folding ------------------------------------------------------------------------
def test_fold_batchnorm_matches_unfolded():
    m = _cnn()
    x = _images(16, 1)
    ref = m(x)
    folded = fold_batchnorm(m)
    assert folded == [("conv1", "bn1"), ("conv2", "bn2")]
    assert isinstance(m.bn1, nn.Identity)
    torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)


def test_fold_batchnorm_sequential_fallback_and_bias_free_conv():
    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(2, 4, 3, bias=False), nn.BatchNorm2d(4),
                                      nn.ReLU())

        def forward(self, x):
            if x.sum() > 1e9:  # data-dependent control flow: torch.fx cannot trace this
                return x
            return self.body(x)

    torch.manual_seed(1)
    m = Untraceable().eval()
    with torch.no_grad():
        m.body[1].running_mean.uniform_(-1, 1)
        m.body[1].running_var.uniform_(0.5, 2)
    x = torch.randn(2, 2, 6, 6)
    ref = m(x)
    assert conv_bn_pairs(m) == [("body.0", "body.1")]
    fold_batchnorm(m)
    assert m.body[0].bias is not None
    torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)


def test_fold_skips_shared_conv_and_batchnorm_without_conv():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)
            self.bn = nn.BatchNorm2d(2)
            self.bn_in = nn.BatchNorm2d(2)

        def forward(self, x):
            y = self.conv(self.bn_in(x))
            return self.bn(y) + y  # conv output used twice: not foldable

    assert conv_bn_pairs(Shared()) == []


def test_quantize_folds_batchnorm_of_selected_convs_only():
    m = _cnn()
    quantize(m, Int8DynamicConfig(), filter_fn=lambda mod, n: n != "conv2")
    assert isinstance(m.bn1, nn.Identity) and isinstance(m.bn2, nn.BatchNorm2d)
    m = _cnn()
    quantize(m, Int8DynamicConfig(fold_bn=False))
    assert isinstance(m.bn1, nn.BatchNorm2d)


# -- QAT --------------------------------------------------------------------------------------
def _train(model, batches, steps=3, lr=1e-3):
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    for i in range(steps):
        x = batches[i % len(batches)]
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


QAT_CASES = {
    "w8a8_channel_asym": QATConfig(8, 8),
    "w4a4_channel_asym": QATConfig(4, 4),
    "w4a8_tensor_sym": QATConfig(4, 8, granularity=PerTensor(), act_symmetric=True),
    "w3a6_lsq_asym": QATConfig(3, 6, learnable=True),
    "w8a8_lsq_sym": QATConfig(8, 8, learnable=True, act_symmetric=True),
    "w4_group_weight_only": QATConfig(4, None, granularity=PerGroup(8)),
}


@pytest.mark.parametrize("kind", ["cnn", "attention"])
@pytest.mark.parametrize("name", list(QAT_CASES), ids=list(QAT_CASES))
def test_convert_equals_qat_forward_at_eval(kind, name):
    c = _case(kind)
    cfg = QAT_CASES[name]
    filt = None
    if isinstance(cfg.granularity, PerGroup) and kind == "cnn":
        filt = lambda m, n: n != "conv1"  # noqa: E731  K = 9 does not split into groups of 8
    q = quantize(copy.deepcopy(c.model), cfg, filter_fn=filt)
    assert any(isinstance(m, (QATLinear, QATConv2d)) for m in q.modules())
    _train(q, c.calib)
    want = q(c.test).detach()
    conv = convert(q)
    assert not any(isinstance(m, (QATLinear, QATConv2d)) for m in conv.modules())
    got = conv(c.test)
    torch.testing.assert_close(got, want, rtol=CONVERT_RTOL, atol=CONVERT_RTOL * want.abs().max())


def test_qat_w8a8_close_to_float_and_trains():
    c = _case("cnn")
    ref = c.model(c.test)
    q = quantize(copy.deepcopy(c.model), QATConfig(8, 8))
    q.train()
    q(c.calib[0])  # observe ranges
    before = [p.detach().clone() for p in q.parameters()]
    _train(q, c.calib, steps=2)
    assert all(not torch.equal(a, b) for a, b in zip(before, q.parameters()))
    assert sqnr_db(ref, q(c.test)) >= SQNR_DB["qat_w8a8"]
    assert sqnr_db(ref, convert(q)(c.test)) >= SQNR_DB["qat_w8a8"]


def test_qat_weight_gradient_is_straight_through():
    torch.manual_seed(0)
    lin = nn.Linear(8, 4)
    q = QATLinear(lin, QuantSpec(8, True, PerChannel(0)), None)
    x = torch.randn(5, 8)
    q(x).sum().backward()
    # STE: d/dW of sum(x @ fq(W)^T) is the plain gradient (no weight is clipped by min/max)
    torch.testing.assert_close(q.weight.grad, x.sum(0).expand(4, 8))


def test_fake_quantize_running_min_max_momentum():
    fq = FakeQuantize(QuantSpec(8, False), momentum=0.5)
    fq.train()
    fq(torch.tensor([-1.0, 3.0]))
    fq(torch.tensor([-3.0, 1.0]))
    assert float(fq.running_min) == -2.0 and float(fq.running_max) == 2.0
    fq.eval()
    fq(torch.tensor([-100.0, 100.0]))  # eval: frozen
    assert float(fq.running_min) == -2.0 and int(fq.observed) == 2
    assert fq.precision == 8


def test_fake_quantize_before_any_training_raises():
    fq = FakeQuantize(QuantSpec(8, False)).eval()
    with pytest.raises(RuntimeError, match="no range observed"):
        fq(torch.ones(3))


def test_lsq_scale_learns():
    spec = QuantSpec(4, True)
    fq = FakeQuantize(spec, momentum=0.1, learnable=True).train()
    x = torch.randn(4096, generator=torch.Generator().manual_seed(0))
    fq(x)
    s0 = float(fq.scale.detach())
    assert s0 == pytest.approx(2 * float(x.abs().mean()) / np.sqrt(7), rel=1e-5)
    opt = torch.optim.Adam(fq.parameters(), lr=1e-2)
    first = None
    for _ in range(100):
        loss = (fq(x) - x).square().mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_convert_without_qat_layers_raises():
    with pytest.raises(ValueError, match="no QAT layer"):
        convert(_cnn())


def test_qat_storage_matches_converted():
    c = _case("cnn")
    q = quantize(copy.deepcopy(c.model), QATConfig(4, 4))
    _train(q, c.calib, steps=1)
    before = {n: m.lowbit_storage() for n, m in q.named_modules() if hasattr(m, "weight_fq")}
    convert(q)
    after = {n: q.get_submodule(n).lowbit_storage() for n in before}
    assert before == after


def test_quantized_layers_expose_integer_traces():
    """Hooks on a converted model give each layer's integer trace for its real input."""
    c = _case("cnn")
    q = quantize(copy.deepcopy(c.model), Int8StaticConfig("mse"), calibration=c.calib)
    traces = {}
    hooks = [m.register_forward_pre_hook(
        lambda mod, args, n=n: traces.__setitem__(n, mod.integer_trace(args[0])))
        for n, m in q.named_modules() if isinstance(m, (QuantLinear, QuantConv2d))]
    out = q(c.test[:4])
    for h in hooks:
        h.remove()
    assert set(traces) == {"conv1", "conv2", "fc1", "fc2"}
    np.testing.assert_array_equal(traces["fc2"].out, out.detach().numpy())
    for tr in traces.values():
        acc = (tr.a_q.astype(np.int64) - tr.a_zero_point) @ tr.w_q.astype(np.int64).T
        np.testing.assert_array_equal(tr.acc, acc)


def test_act_quant_spec():
    assert ActQuant("static", 4, False).spec.qrange == (0, 15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ActQuant("dynamic")
