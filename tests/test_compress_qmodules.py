"""QuantLinear / QuantConv2d: the integer simulation equals lowbit's kernels bit for bit.

Integer operands come from ``integer_trace``; the float32 outputs of the simulation are
compared with gemm_int8 + Dequantize (every usable ISA) for exact equality, and the int4
weight-only format with pack_weights(..., "int4") exactly and gemm_w4a16 within its bound.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from lowbit.compress import ActQuant, PerChannel, PerGroup, PerTensor, QuantConv2d, QuantLinear
from lowbit.compress import QuantSpec
from lowbit.kernels import Dequantize, gemm_int8, gemm_w4a16, pack_weights
from lowbit.kernels import ref

INT8_W = QuantSpec(8, True, PerChannel(0))
ACTS = {
    "dynamic": (ActQuant("dynamic"), None, 0),
    "static_s8": (ActQuant("static", 8, True), 0.037, 0),
    "static_u8": (ActQuant("static", 8, False), 0.021, 97),
    "static_u4": (ActQuant("static", 4, False), 0.3, 3),
}


def _linear(k, n, seed, bias=True):
    torch.manual_seed(seed)
    lin = nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        lin.weight.mul_(torch.linspace(0.1, 3.0, n)[:, None])  # channels of different range
        if n > 1:
            lin.weight[0] = 0.0  # an all-zero channel: scale 1
    return lin


def _kernel_out(tr, isa=None):
    wp = pack_weights(np.ascontiguousarray(tr.w_q), layout="nk")
    acc = gemm_int8(tr.a_q, wp, a_zero_point=tr.a_zero_point, isa=isa)
    ep = Dequantize(w_scale=tr.w_scale, a_scale=tr.a_scale, bias=tr.bias)
    out = gemm_int8(tr.a_q, wp, a_zero_point=tr.a_zero_point, epilogue=ep, isa=isa)
    return acc, out


@pytest.mark.parametrize("act", list(ACTS), ids=list(ACTS))
@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (1, 64, 8), (7, 33, 65), (16, 200, 3)],
                         ids=["k_one", "m_one", "tails", "wide_k"])
def test_linear_matches_gemm_int8_bit_exactly(act, m, k, n, isa):
    spec, s, z = ACTS[act]
    q = QuantLinear.from_float(_linear(k, n, m + k + n), INT8_W, act=spec, act_scale=s,
                               act_zero_point=z)
    g = torch.Generator().manual_seed(k)
    x = torch.randn(m, k, generator=g) * 2
    tr = q.integer_trace(x)
    acc, out = _kernel_out(tr, isa)
    np.testing.assert_array_equal(tr.acc, acc)
    np.testing.assert_array_equal(tr.out, out)
    np.testing.assert_array_equal(q(x).detach().numpy(), out)


def test_linear_weight_formula():
    lin = _linear(40, 6, 0)
    q = QuantLinear.from_float(lin, INT8_W, act=ActQuant("dynamic"))
    w = lin.weight.detach().numpy()
    s = np.abs(w).max(axis=1) / np.float32(127)
    s = np.where(s > 0, s, np.float32(1)).astype(np.float32)
    np.testing.assert_array_equal(q.weight_scale.reshape(-1).numpy(), s)
    np.testing.assert_array_equal(
        q.weight_q.numpy(), np.clip(np.rint(w / s[:, None]), -128, 127).astype(np.int8))
    assert float(q.weight_scale[0]) == 1.0 and int(q.weight_q[0].abs().max()) == 0


def test_linear_extreme_and_noncontiguous_inputs():
    q = QuantLinear.from_float(_linear(48, 10, 1), INT8_W, act=ActQuant("static", 8, False),
                               act_scale=0.05, act_zero_point=128)
    x = torch.randn(48, 9, generator=torch.Generator().manual_seed(2)).T  # transposed view
    x[0, :5] = 1e6   # saturates at 255
    x[1, :5] = -1e6  # saturates at 0
    x[2] = 0.0
    tr = q.integer_trace(x)
    assert tr.a_q.max() == 255 and tr.a_q.min() == 0
    acc, out = _kernel_out(tr)
    np.testing.assert_array_equal(tr.acc, acc)
    np.testing.assert_array_equal(q(x).detach().numpy(), out)


def test_linear_dynamic_on_3d_input_quantizes_each_row():
    q = QuantLinear.from_float(_linear(16, 4, 3), INT8_W, act=ActQuant("dynamic"))
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(3))
    x[1, 2] *= 1000
    y = q(x)
    assert y.shape == (2, 5, 4)
    np.testing.assert_array_equal(y.reshape(10, 4).detach().numpy(),
                                  q.integer_trace(x).out)
    np.testing.assert_array_equal(q(x[0]).detach().numpy(), y[0].detach().numpy())


@given(m=st.integers(1, 6), k=st.integers(1, 80), n=st.integers(1, 20),
       seed=st.integers(0, 2 ** 16), act=st.sampled_from(sorted(ACTS)))
def test_linear_hypothesis_shapes(m, k, n, seed, act):
    spec, s, z = ACTS[act]
    q = QuantLinear.from_float(_linear(k, n, seed), INT8_W, act=spec, act_scale=s,
                               act_zero_point=z)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(seed)) * 3
    tr = q.integer_trace(x)
    acc, out = _kernel_out(tr)
    np.testing.assert_array_equal(tr.acc, acc)
    np.testing.assert_array_equal(tr.out, out)


CONVS = {
    "k3_pad1": dict(kernel_size=3, padding=1),
    "k3_stride2": dict(kernel_size=3, stride=2, padding=1),
    "k1": dict(kernel_size=1),
    "k2_dilation2_pad2": dict(kernel_size=2, dilation=2, padding=2),
    "k3x1_nobias": dict(kernel_size=(3, 1), padding=(1, 0), bias=False),
}


@pytest.mark.parametrize("act", list(ACTS), ids=list(ACTS))
@pytest.mark.parametrize("geo", list(CONVS), ids=list(CONVS))
def test_conv_matches_gemm_int8_bit_exactly(act, geo, isa):
    spec, s, z = ACTS[act]
    torch.manual_seed(5)
    conv = nn.Conv2d(3, 5, **CONVS[geo])
    q = QuantConv2d.from_float(conv, INT8_W, act=spec, act_scale=s, act_zero_point=z)
    x = torch.randn(2, 3, 7, 6, generator=torch.Generator().manual_seed(6))
    x[1] *= 10  # dynamic: each image has its own scale
    tr = q.integer_trace(x)
    y = q(x)
    assert y.shape == conv(x).shape
    acc, out = _kernel_out(tr, isa)
    np.testing.assert_array_equal(tr.acc, acc)
    np.testing.assert_array_equal(tr.out, out)
    np.testing.assert_array_equal(y.permute(0, 2, 3, 1).reshape(-1, 5).detach().numpy(), out)
    if z:
        # zero padding is the zero point in the integer domain
        assert (tr.a_q == z).any()


def test_conv_dynamic_scale_is_per_image():
    torch.manual_seed(7)
    q = QuantConv2d.from_float(nn.Conv2d(2, 3, 3), INT8_W, act=ActQuant("dynamic"))
    x = torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(7))
    tr = q.integer_trace(x)
    rows = tr.a_scale.reshape(2, -1)
    for b in range(2):
        assert np.all(rows[b] == np.float32(np.abs(x[b].numpy()).max() / np.float32(127)))


def test_simulation_is_close_to_float():
    lin = _linear(64, 16, 8)
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(8))
    ref_y = lin(x).detach()
    q = QuantLinear.from_float(lin, INT8_W, act=ActQuant("dynamic"))
    err = (q(x) - ref_y).norm() / ref_y.norm()
    assert err < 0.02


@pytest.mark.parametrize("g", [32, 64, 128])
def test_int4_weight_only_is_the_kernel_format(g):
    lin = _linear(256, 24, g)
    q = QuantLinear.from_float_int4(lin, g)
    w4 = pack_weights(lin.weight.detach().numpy(), "int4", layout="nk", group_size=g)
    np.testing.assert_array_equal(q.weight_q.numpy(), w4.values().T)
    np.testing.assert_array_equal(q.weight_scale.numpy(), w4.group_scales().T)
    assert q.weight_scale.dtype == torch.float16
    x = torch.randn(5, 256, generator=torch.Generator().manual_seed(g))
    got = gemm_w4a16(x.numpy(), w4) + lin.bias.detach().numpy()
    sim = q(x).detach().numpy()
    tol = ref.w4a16_tolerance(x.numpy(), w4.nibbles(), w4.zero_points(), w4.group_scales(), g)
    assert np.all(np.abs(sim - got) <= 2 * tol + 1e-6)
    tr = q.integer_trace(x)
    assert tr.a_q is None and tr.acc is None
    np.testing.assert_array_equal(tr.w_q, w4.values().T)


def test_int4_conv_groups_follow_im2col_k():
    torch.manual_seed(9)
    conv = nn.Conv2d(8, 4, 2)  # K = 8 * 2 * 2 = 32
    q = QuantConv2d.from_float_int4(conv, 32)
    w4 = pack_weights(conv.weight.detach().reshape(4, -1).numpy(), "int4", layout="nk",
                      group_size=32)
    np.testing.assert_array_equal(q.weight_q.reshape(4, -1).numpy(), w4.values().T)
    x = torch.randn(1, 8, 4, 4, generator=torch.Generator().manual_seed(9))
    y = q(x)
    want = nn.functional.conv2d(x, q.dequantized_weight(), conv.bias)
    assert torch.equal(y, want)


@pytest.mark.parametrize("bits", [2, 3, 4, 6])
@pytest.mark.parametrize("gran", [PerTensor(), PerChannel(0), PerGroup(16)], ids=str)
def test_weight_only_b_bit(bits, gran):
    lin = _linear(64, 8, bits)
    q = QuantLinear.from_float(lin, QuantSpec(bits, True, gran))
    lo, hi = QuantSpec(bits).qrange
    assert int(q.weight_q.min()) >= lo and int(q.weight_q.max()) <= hi
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(bits))
    assert torch.equal(q(x), nn.functional.linear(x, q.dequantized_weight(), lin.bias))
    err = (q.dequantized_weight() - lin.weight).abs()
    s = gran.blocks(torch.ones_like(lin.weight)) * q.weight_scale[..., None]
    assert bool((gran.blocks(err) <= s * 0.5 + 1e-6).all())


def test_lowbit_storage_counts_every_byte():
    q = QuantLinear.from_float(_linear(64, 32, 0), INT8_W, act=ActQuant("static", 8, False),
                               act_scale=0.1, act_zero_point=3)
    st_ = q.lowbit_storage()
    assert st_ == {"format": "int8", "bytes": 64 * 32 + 32 * 4 + 32 * 4 + 4 + 4,
                   "weight_bits": 8.0, "act_bits": 8, "sparsity": 0.0, "group_size": None,
                   "scale_dtype": "float32", "params": 64 * 32 + 32}
    q4 = QuantLinear.from_float_int4(_linear(64, 32, 0, bias=False), 32)
    s4 = q4.lowbit_storage()
    assert (s4["format"], s4["bytes"], s4["act_bits"], s4["group_size"], s4["scale_dtype"]) == \
        ("int4", 64 * 32 // 2 + 2 * 32 * 2, 32, 32, "float16")
    w4 = pack_weights(_linear(64, 32, 0).weight.detach().numpy(), "int4", layout="nk")
    assert s4["bytes"] == 64 * 32 // 2 + w4.n_groups * 32 * 2
    q3 = QuantLinear.from_float(_linear(10, 3, 0), QuantSpec(3, True, PerTensor()))
    assert q3.lowbit_storage()["format"] == "int3-tensor"
    assert q3.lowbit_storage()["bytes"] == 12 + 4 + 3 * 4  # ceil(30 * 3 / 8) + scale + bias


@pytest.mark.parametrize("bad, match", [
    (lambda: QuantLinear.from_float(nn.Linear(4, 2), INT8_W, act=ActQuant("static")),
     "act_scale"),
    (lambda: QuantLinear.from_float(nn.Linear(4, 2), INT8_W, act=ActQuant("static", 8, False),
                                    act_scale=0.1, act_zero_point=300), "act_zero_point"),
    (lambda: QuantLinear.from_float(nn.Linear(4, 2), INT8_W, act=ActQuant("static"),
                                    act_scale=0.0), "act_scale"),
    (lambda: QuantLinear.from_float(nn.Linear(4, 2), QuantSpec(8, True, PerGroup(2)),
                                    act=ActQuant("dynamic")), "per-group"),
    (lambda: QuantLinear.from_float(nn.Linear(4, 2), QuantSpec(8, False)), "symmetric"),
    (lambda: QuantConv2d.from_float(nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular"),
                                    INT8_W), "padding_mode='circular'"),
    (lambda: QuantConv2d(torch.zeros(6, 1, 3, 3, dtype=torch.int8), torch.ones(6, 1),
                         None, weight_spec=INT8_W, groups=4), "groups"),
    (lambda: ActQuant("dynamic", 8, False), "symmetric"),
    (lambda: ActQuant("per-token"), "mode"),
])
def test_bad_layer_arguments(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        bad()


def test_state_dict_roundtrip():
    q = QuantLinear.from_float(_linear(8, 4, 0), INT8_W, act=ActQuant("static", 8, False),
                               act_scale=0.1, act_zero_point=3)
    sd = q.state_dict()
    assert {"weight_q", "weight_scale", "bias", "act_scale", "act_zero_point"} <= set(sd)
    q2 = QuantLinear.from_float(_linear(8, 4, 1), INT8_W, act=ActQuant("static", 8, False),
                                act_scale=0.5, act_zero_point=0)
    q2.load_state_dict(sd)
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(q(x), q2(x))
