"""lowbit.compress.export: the kernel-backed model computes the simulation's integers.

For every config on small models and on the digits CNN / MLP / transformer, each exported
layer's quantized activations and int32 accumulators (``KernelTrace``, from the kernels)
equal the simulation's (``IntegerTrace``) bit for bit, with and without fused
requantization, and the outputs are equal: bit for bit for the int8 formats; for
weight-only int4 the weights and scales are equal bit for bit and the float outputs within
float32 summation bounds (the kernel sums in its own order; ``W4A16_MODEL_RTOL``).
"""
from __future__ import annotations

import copy
import warnings
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lowbit.compress import (Int4WeightOnlyConfig, Int8DynamicConfig, Int8StaticConfig,
                             IntxWeightOnlyConfig, PerChannel, PerGroup, PerTensor, QATConfig,
                             QuantConv2d, QuantLinear, convert, export, export_summary,
                             fuse_requantization, get_model, kernel_module, quantize)
from lowbit.compress.data import calibration_subset, load_digits_split
from lowbit.compress.qfunc import dequantize
from lowbit.kernels import ref
from lowbit.kernels.modules import LowbitConv2d, LowbitLinear

KERNEL = (LowbitLinear, LowbitConv2d)
SIM = (QuantLinear, QuantConv2d)
# weight-only int4: the same dequantized weights, float32 sums in the kernel's order. Per
# layer (same input) the bound is two float32 summation bounds (ref.int4_tolerance); on the
# whole model the differences propagate through later layers: relative to the largest output
W4A16_MODEL_RTOL = 1e-4


def gen(*key) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(repr(key).encode()))


def randn(*shape, key=0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(shape, key))


def seeded_init(model: nn.Module, key) -> nn.Module:
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.randn(p.shape, generator=gen(key, i)) * 0.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen(key, "m")) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen(key, "v")) + 0.5)
    return model.eval()


# --- small models --------------------------------------------------------------------------------

class SmallCNN(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU6(),
                         nn.MaxPool2d(2), nn.Conv2d(16, 32, 1), nn.ReLU(), nn.Flatten(),
                         nn.Dropout(0.1), nn.Linear(32 * 2 * 2, 10))


class Functional(nn.Module):
    """fx-traced chains through functions and methods, and patterns that do not fuse."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc1 = nn.Linear(4 * 64, 32)
        self.fc2 = nn.Linear(32, 32)
        self.fc3 = nn.Linear(32, 8)
        self.gelu = nn.GELU()

    def forward(self, x):
        h = F.relu(self.conv(x))                                # conv -> relu -> view -> fc1
        h = torch.relu(self.fc1(h.view(h.size(0), -1)))        # (a size query aside)
        r = self.fc2(h)
        return self.fc3(self.gelu(r) + r)                       # GELU, two users: not fused


class Untraceable(nn.Module):
    """Data-dependent control flow: fx fails, the nn.Sequential children are searched."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU6(),
                                  nn.Linear(24, 6))

    def forward(self, x):
        if x.sum() > 1e9:
            x = x * 0
        return self.body(x)


SMALL = {  # name: (builder, input shape)
    "cnn": (SmallCNN, (5, 3, 8, 8)),
    "functional": (Functional, (5, 2, 8, 8)),
    "untraceable": (Untraceable, (7, 12)),
    "mlp_3d_input": (lambda: nn.Sequential(nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 5)),
                     (2, 3, 12)),
}

CONFIGS = {
    "int8_static_u8": lambda: Int8StaticConfig(calibrator="minmax"),
    "int8_static_s8_kl": lambda: Int8StaticConfig(calibrator="kl", act_symmetric=True),
    "int8_dynamic": lambda: Int8DynamicConfig(),
    "intx_w4_channel": lambda: IntxWeightOnlyConfig(4, PerChannel(0)),
    "intx_w3_tensor": lambda: IntxWeightOnlyConfig(3, PerTensor()),
    "qat_w4a4": lambda: QATConfig(weight_bits=4, act_bits=4),
    "qat_w8a8_lsq_sym": lambda: QATConfig(weight_bits=8, act_bits=8, learnable=True,
                                          act_symmetric=True),
    "qat_w2a3_tensor": lambda: QATConfig(weight_bits=2, act_bits=3, granularity=PerTensor()),
}


def make_quantized(builder, shape, config_name, key=0) -> tuple[nn.Module, list]:
    model = seeded_init(builder(), (config_name, key))
    batches = [randn(*shape, key=(key, i)) * 2 for i in range(4)]
    config = CONFIGS[config_name]()
    if isinstance(config, QATConfig):
        quantize(model, config)
        model.train()
        with torch.no_grad():
            for b in batches:   # observe ranges (and initialise LSQ scales), no training
                model(b)
        convert(model)
    else:
        quantize(model, config, calibration=batches if isinstance(config, Int8StaticConfig)
                 else None)
    return model.eval(), batches


# --- per-layer comparison ---------------------------------------------------------------------

def layer_inputs(model: nn.Module, x: torch.Tensor, kinds) -> tuple[torch.Tensor, dict]:
    """(model output, {layer name: its input}) of one forward pass."""
    seen, hooks = {}, []
    for name, mod in model.named_modules():
        if isinstance(mod, kinds):
            hooks.append(mod.register_forward_pre_hook(
                lambda m, args, name=name: seen.__setitem__(name, args[0])))
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return out, seen


def gemm_rows(t: torch.Tensor) -> np.ndarray:
    """A layer output as GEMM rows [M, N] (conv: (image, oh, ow) rows)."""
    if t.dim() == 4:
        t = t.permute(0, 2, 3, 1)
    return t.reshape(-1, t.shape[-1]).numpy()


def assert_layer_matches(name, sim, kern, x_sim, x_kern, assert_exact) -> None:
    """The kernel module's integers and output equal the simulation layer's."""
    st = sim.integer_trace(x_sim)
    if sim.act is None:  # weight-only: the same integer weights and scales, float sums
        for g in range(st.groups):   # one packed record per conv channel group
            part = st.group(g)
            rec = kern.scheme.packed_record(kern, g)
            n, k = part.w_q.shape
            assert_exact(rec.values()[:k].T, part.w_q)
            scales = rec.group_scales().T
            if isinstance(sim.weight_spec.granularity, PerGroup):
                assert_exact(scales, part.w_scale)
            else:
                w_s = sim._w_scale_vector().numpy()[g * n:(g + 1) * n]
                assert_exact(scales, np.broadcast_to(w_s.reshape(-1, 1), scales.shape))
        # same input to both: each sums float32 products of the same numbers in its own
        # order, so they differ by at most two float32 summation bounds (K + 4 roundings
        # each, ref.int4_tolerance) plus the rounding of the bias addition; the terms are
        # those of the kernel's split form s (sum x n - z sum x), |x| (n + z) s with the
        # nibble n = v + 8 and z = 8 (ref.w4a16_tolerance), and the bias (torch's conv may
        # start its sum from it)
        with torch.no_grad():
            got, want = kern(x_kern).numpy(), sim(x_kern).numpy()
            s_elem = dequantize(torch.ones_like(sim.weight_q), sim.weight_scale.float(),
                                torch.zeros(sim.weight_scale.shape), sim.weight_spec)
            w_abs = (sim.weight_q.double() + 16) * s_elem.double()
            x_abs = x_kern.abs().double()
            b_abs = None if sim.bias is None else sim.bias.abs().double()
            mag = (F.linear(x_abs, w_abs, b_abs) if isinstance(sim, QuantLinear)
                   else sim._conv(x_abs, w_abs, b_abs)).numpy()
        tol = 2 * ref.int4_tolerance(k + 4, mag) + 2.0 ** -23 * np.abs(want)
        assert np.all(np.abs(got - want) <= tol), (name, float(np.max(np.abs(got - want) - tol)))
        return
    kt = kern.integer_trace(x_kern)
    a_q = st.a_q
    if isinstance(sim, QuantConv2d):  # per group, (c, kh, kw) -> the kernel's (kh, kw, c)
        c = sim.weight_q.shape[1]
        a_q = a_q.reshape(len(a_q), sim.groups, c, -1).transpose(0, 1, 3, 2).reshape(
            len(a_q), -1)
    assert_exact(kt.a_q, a_q)
    assert_exact(kt.acc, st.acc)
    assert kt.a_zero_point == st.a_zero_point, name
    if sim.act.mode == "dynamic":
        assert_exact(kt.a_scale, st.a_scale)
    else:
        assert kt.a_scale is None and np.all(st.a_scale == np.float32(sim.act_scale))
    out = gemm_rows(kt.out)
    if st.out_q is None:
        assert_exact(out, st.out)
    else:
        assert_exact(out.astype(np.int32), st.out_q)


def assert_export_matches(sim: nn.Module, exported: nn.Module, x: torch.Tensor,
                          assert_exact, exact: bool = True) -> None:
    y_sim, x_sim = layer_inputs(sim, x, SIM)
    y_exp, x_kern = layer_inputs(exported, x, KERNEL)
    assert set(x_kern) <= set(x_sim) and x_kern, (sorted(x_sim), sorted(x_kern))
    for name in x_kern:
        assert_layer_matches(name, sim.get_submodule(name), exported.get_submodule(name),
                             x_sim[name], x_kern[name], assert_exact)
    if exact:
        assert_exact(y_exp.numpy(), y_sim.numpy())
    else:
        scale = float(y_sim.abs().max())
        np.testing.assert_allclose(y_exp.numpy(), y_sim.numpy(), rtol=W4A16_MODEL_RTOL,
                                   atol=W4A16_MODEL_RTOL * scale)


def export_quietly(model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return export(model, **kwargs)


@pytest.mark.parametrize("fuse", [False, True], ids=["per_layer", "fused"])
@pytest.mark.parametrize("config", CONFIGS, ids=list(CONFIGS))
@pytest.mark.parametrize("model", SMALL, ids=list(SMALL))
def test_small_models_bit_exact(model, config, fuse, assert_exact):
    builder, shape = SMALL[model]
    sim, batches = make_quantized(builder, shape, config)
    if fuse:
        fuse_requantization(sim)
    exported = export_quietly(copy.deepcopy(sim), fuse=fuse)
    assert not any(isinstance(m, SIM) for m in exported.modules())
    for b in (*batches[:2], randn(*shape, key="big") * 40):   # and saturating inputs
        assert_export_matches(sim, exported, b, assert_exact, exact="intx" not in config)


def test_qat_model_is_converted_by_export(assert_exact):
    model = seeded_init(SmallCNN(), "qat")
    quantize(model, QATConfig(weight_bits=4, act_bits=4))
    model.train()
    x = randn(6, 3, 8, 8, key="qat") * 2
    with torch.no_grad():
        model(x)
    sim = convert(copy.deepcopy(model))
    fuse_requantization(sim)
    exported = export(model)                 # converts, then fuses
    assert_export_matches(sim, exported, x, assert_exact)
    # 4-bit values in the int8 kernel: activations in [0, 15], weights in [-8, 7]
    tr = exported[3].integer_trace(layer_inputs(exported, x, KERNEL)[1]["3"])
    assert tr.a_q.dtype == np.uint8 and int(tr.a_q.max()) <= 15
    assert int(np.abs(exported[3].scheme.packed_record(exported[3], 0).unpack()).max()) <= 8


# --- which patterns fuse ----------------------------------------------------------------------

def chains_of(builder, shape, config="int8_static_u8"):
    sim, _ = make_quantized(builder, shape, config)
    return sim, [(c.producer, c.consumer, c.ops) for c in fuse_requantization(sim)]


def test_fused_patterns_sequential_cnn():
    sim, chains = chains_of(SmallCNN, (5, 3, 8, 8))
    assert chains == [("0", "3", ("1", "2")), ("3", "6", ("4", "5")),
                      ("6", "10", ("7", "8", "9"))]
    # the folded ReLU / ReLU6 modules became Identity (their clamp is in the requantization)
    assert [type(sim[i]).__name__ for i in (2, 4, 7)] == ["Identity"] * 3
    assert sim[0].out_quant.clip[0] == sim[0].out_quant.zero_point          # ReLU
    relu6 = sim[3].out_quant
    s = sim[6].act_scale
    assert relu6.clip == (relu6.zero_point,
                          relu6.zero_point + int(torch.round(torch.tensor(6.0) / s)))


def test_fused_patterns_functional_and_fallback():
    _, chains = chains_of(Functional, (5, 2, 8, 8))
    # fc2's output has two users (GELU and the residual add): not fused
    assert chains == [("conv", "fc1", ("relu", "view")), ("fc1", "fc2", ("relu_1",))]
    _, chains = chains_of(Untraceable, (7, 12))
    assert chains == [("body.0", "body.2", ("body.1",)), ("body.2", "body.4", ("body.3",))]


def test_no_chain_across_dynamic_or_weight_only_layers():
    for config in ("int8_dynamic", "intx_w4_channel"):
        assert chains_of(SmallCNN, (5, 3, 8, 8), config)[1] == []


def test_relu6_boundary_values_bit_exact(assert_exact):
    """Inputs that put many activations at and past 6 (ReLU6's clamp) and at ties."""
    model = seeded_init(nn.Sequential(nn.Linear(6, 64), nn.ReLU6(), nn.Linear(64, 4)), "r6")
    with torch.no_grad():
        model[0].weight.mul_(8)
    batches = [randn(64, 6, key=("r6", i)) for i in range(3)]
    quantize(model, Int8StaticConfig(calibrator="minmax"), calibration=batches)
    sim = copy.deepcopy(model)
    assert fuse_requantization(sim)
    exported = export(copy.deepcopy(sim))
    h = exported[0](batches[0])
    assert int((h == sim[0].out_quant.clip[1]).sum()) > 50     # many clamped at 6
    for b in batches:
        assert_export_matches(sim, exported, b, assert_exact)


# --- what stays, summary, errors, csr ---------------------------------------------------------

def test_unsupported_layers_stay_with_one_warning():
    model = seeded_init(nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 8)), "w8")
    quantize(model, IntxWeightOnlyConfig(4, PerGroup(16)),     # group 16: not an int4 group
             filter_fn=lambda m, n: n == "2")
    quantize(model, IntxWeightOnlyConfig(8))                   # no w8a16 kernel
    with pytest.warns(RuntimeWarning, match=r"'?0'? \(weight-only 8-bit.*2 \(PerGroup\(16\)"):
        out = export(model)
    assert isinstance(out[0], QuantLinear) and isinstance(out[2], QuantLinear)
    rows = export_summary(out).layers
    assert [(r.name, r.runs_on) for r in rows] == [("0", "simulation"), ("2", "simulation")]


def test_export_summary_table():
    sim, _ = make_quantized(SmallCNN, (5, 3, 8, 8), "int8_static_u8")
    table = export_summary(export(sim)).table()
    lines = table.splitlines()
    assert lines[0].split() == ["layer", "runs", "on", "format", "activations", "output"]
    assert "u8 [0, 255] zp 0 (requantized)" in lines[1] and lines[-1].endswith("fp32")


def test_export_errors(raises_naming):
    with raises_naming(ValueError, "export"):
        export(nn.Sequential(nn.Linear(4, 4)))
    sim, _ = make_quantized(SmallCNN, (5, 3, 8, 8), "int8_static_u8")
    with raises_naming(ValueError, "csr_density"):
        export(sim, csr_density=1.5)
    with raises_naming(TypeError, "layer"):
        kernel_module(nn.Linear(4, 4))


def test_csr_density_runs_sparse_layers_on_spmm_csr(assert_exact):
    model = seeded_init(nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64),
                                      nn.ReLU(), nn.Linear(64, 5)), "csr")
    with torch.no_grad():  # the middle layer 90% zeros
        model[2].weight.mul_(torch.rand(64, 64, generator=gen("mask")) < 0.1)
    batches = [randn(16, 32, key=("csr", i)) for i in range(3)]
    quantize(model, Int8StaticConfig(calibrator="minmax"), calibration=batches)
    sim = copy.deepcopy(model)
    dense = export(copy.deepcopy(sim))
    sparse = export(copy.deepcopy(sim), csr_density=0.2)
    assert [m.fmt for m in (sparse[0], sparse[2], sparse[4])] == ["int8", "csr", "int8"]
    assert sparse[2].lowbit_storage()["sparsity"] > 0.85
    # a csr layer reads requantized integers (0 -> 2 fuses) but outputs float (2 -> 4 not)
    assert sparse[0].scheme.int8_out and sparse[2](sparse[0](batches[0])).dtype == torch.float32
    sim_csr = copy.deepcopy(sim)
    fuse_requantization(sim_csr, exclude={"2"})
    for b in batches:
        assert_export_matches(sim_csr, sparse, b, assert_exact)
        assert dense(b).shape == sparse(b).shape


# --- the digits models ------------------------------------------------------------------------

DIGITS_CONFIGS = {
    "int8_static_kl": lambda: Int8StaticConfig(calibrator="kl"),
    "int8_static_mse_sym": lambda: Int8StaticConfig(calibrator="mse", act_symmetric=True),
    "int8_dynamic": lambda: Int8DynamicConfig(),
    "int4_g32": lambda: Int4WeightOnlyConfig(32),
    "qat_w4a4": lambda: QATConfig(weight_bits=4, act_bits=4),
}


@pytest.fixture(scope="module")
def digits():
    d = load_digits_split()
    calib, _ = calibration_subset(128)
    return d.x_test[:96], [calib[:64], calib[64:]]


@pytest.mark.parametrize("config", DIGITS_CONFIGS, ids=list(DIGITS_CONFIGS))
@pytest.mark.parametrize("name", ["digits-cnn", "digits-mlp", "digits-transformer"])
def test_digits_models_bit_exact(name, config, digits, assert_exact):
    x, calib = digits
    model = get_model(name)
    cfg = DIGITS_CONFIGS[config]()
    if isinstance(cfg, QATConfig):
        quantize(model, cfg)
        model.train()
        with torch.no_grad():
            for b in calib:
                model(b)
        convert(model)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # int4: conv1 (K=9) stays float
            quantize(model, cfg, calibration=calib if isinstance(cfg, Int8StaticConfig) else None)
    fuse_requantization(model)
    exported = export(copy.deepcopy(model))
    assert_export_matches(model, exported, x, assert_exact, exact=config != "int4_g32")


def test_docstring_examples_run():
    import doctest
    import importlib

    mod = importlib.import_module("lowbit.compress.export")  # the attribute is the function
    assert doctest.testmod(mod, optionflags=doctest.ELLIPSIS).failed == 0
