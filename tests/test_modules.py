"""LowbitLinear / LowbitConv2d against a NumPy reference of the documented formulas.

The reference below is written from the formulas in ``kernels.modules`` / ``quantize``
with NumPy and ``kernels.ref`` only (its own im2col, quantizers and XNOR-Net scales): int8
and binary outputs must equal it bit-exactly (integers and float32 epilogues evaluated in
the same order), int4 weights bit-exactly and int4 outputs within ``ref``'s float bounds.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lowbit.kernels as lk
from lowbit.kernels import modules, ref
from lowbit.kernels.formats import ALIGN, quantize_int4
from lowbit.kernels.modules import LowbitConv2d, LowbitLinear

F32 = np.float32


def seed_of(*key) -> int:
    """A fixed seed per key (crc32, not hash(): str hashes change between processes)."""
    return zlib.crc32(repr(key).encode())


def seeded(*key) -> torch.Generator:
    return torch.Generator().manual_seed(seed_of("lowbit-modules", *key))


def rand(*shape, key=0, scale=1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=seeded(shape, key)) * scale


def float_linear(k, n, bias=True, key=0) -> nn.Linear:
    torch.manual_seed(seed_of("lin", k, n, key))
    return nn.Linear(k, n, bias=bias)


def float_conv(c_in, c_out, kernel, key=0, **kw) -> nn.Conv2d:
    torch.manual_seed(seed_of("conv", c_in, c_out, kernel, key, sorted(kw.items())))
    return nn.Conv2d(c_in, c_out, kernel, **kw)


# --- the NumPy reference ------------------------------------------------------------------

def np_absmax_scales(v: np.ndarray) -> np.ndarray:
    s = (np.abs(v).max(axis=1) / F32(127)).astype(F32)
    return np.where(s == 0, F32(1), s).astype(F32)


def np_quantize_rows(v, s) -> np.ndarray:
    return np.clip(np.rint(v / s[:, None]), -128, 127).astype(np.int8)


def np_static(x, scale, zp) -> np.ndarray:
    lo, hi, dt = (-128, 127, np.int8) if zp == 0 else (0, 255, np.uint8)
    return np.clip(np.rint(x / F32(scale)) + zp, lo, hi).astype(dt)


def np_xnor_scales(v) -> np.ndarray:
    return (np.abs(v).astype(np.float64).sum(axis=1) / v.shape[1]).astype(F32)


def np_requant(acc, a_s, w_s, out_s, out_zp, relu, bias):
    pairs = [lk.quantize_multiplier(float(np.float64(F32(a_s)) * np.float64(s)
                                          / np.float64(F32(out_s)))) for s in w_s]
    mult = np.array([p[0] for p in pairs], np.int32)
    shift = np.array([p[1] for p in pairs], np.int32)
    bias_q = None if bias is None else np.rint(
        bias.astype(np.float64) / (np.float64(F32(a_s)) * w_s.astype(np.float64))).astype(np.int32)
    lo, hi, dt = (-128, 127, np.int8) if out_zp == 0 else (0, 255, np.uint8)
    return ref.requantize(acc, mult, shift, out_zp, out_zp if relu else lo, hi, bias_q, dt)


def np_im2col(xp, kernel, stride, dilation, tap_major=True) -> np.ndarray:
    """Rows [B * OH * OW, kh * kw * C] of an already padded x [B, C, Hp, Wp], K in the
    (kh, kw, c) order of int8 / binary convs (``tap_major``), else (c, kh, kw) as int4's."""
    b, c, hp, wp = xp.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    oh, ow = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    rows = np.empty((b, oh, ow, kh, kw, c), xp.dtype)
    for i in range(kh):
        for j in range(kw):
            y0, x0 = i * dh, j * dw
            win = xp[:, :, y0:y0 + (oh - 1) * sh + 1:sh, x0:x0 + (ow - 1) * sw + 1:sw]
            rows[:, :, :, i, j, :] = win.transpose(0, 2, 3, 1)
    if not tap_major:
        rows = rows.transpose(0, 1, 2, 5, 3, 4)
    return rows.reshape(b * oh * ow, kh * kw * c), (oh, ow)


def gemm_rows(conv_weight: np.ndarray) -> np.ndarray:
    """[out, kh * kw * in / groups]: a conv weight in the modules' K order."""
    return conv_weight.transpose(0, 2, 3, 1).reshape(conv_weight.shape[0], -1)


def np_gemm(fmt, rows, w_nk, bias, opts, valid=None, a_scale=None):
    """The module's GEMM of one group: rows [M, K] (float32, or quantized for static int8 and
    per-sample dynamic int8 with ``a_scale`` [M]), float weights [N, K]; ``valid`` marks
    non-padding entries of conv rows (binary)."""
    if fmt == "int8":
        q, w_s = np_quantize_rows(w_nk, np_absmax_scales(w_nk)), np_absmax_scales(w_nk)
        if a_scale is not None:
            a, a_s, zp = rows, a_scale, 0
        elif opts.get("act_scale") is None:
            a_s = np_absmax_scales(rows)
            a, zp = np_quantize_rows(rows, a_s), 0
        else:
            a, zp = rows, opts.get("act_zero_point", 0)
            a_s = np.full(rows.shape[0], F32(opts["act_scale"]), F32)
        acc = ref.gemm_int8(a, q.T, zp)
        if opts.get("out_scale") is not None:
            return np_requant(acc, opts["act_scale"], w_s, opts["out_scale"],
                              opts.get("out_zero_point", 0), opts.get("relu", False), bias)
        return ref.dequantize(acc, a_s, w_s, bias)
    if fmt == "binary":
        k = w_nk.shape[1]
        signs_w = np.where(w_nk >= 0, 1, -1).astype(np.int64)
        signs_x = np.where(rows >= 0, 1, -1).astype(np.int64)
        if valid is not None:
            signs_x = signs_x * valid
        dot = (signs_x @ signs_w.T).astype(np.int32)
        assert k == rows.shape[1]
        out = ref.binary_scale(dot, np_xnor_scales(w_nk), np_xnor_scales(rows))
        return out if bias is None else out + bias
    raise AssertionError(fmt)


def np_linear(fmt, lin: nn.Linear, x: torch.Tensor, opts) -> np.ndarray:
    w = lin.weight.detach().numpy()
    b = None if lin.bias is None else lin.bias.detach().numpy()
    rows = x.reshape(-1, lin.in_features).numpy()
    if fmt == "int8" and opts.get("act_scale") is not None and rows.dtype == F32:
        rows = np_static(rows, opts["act_scale"], opts.get("act_zero_point", 0))
    return np_gemm(fmt, rows, w, b, opts).reshape(*x.shape[:-1], lin.out_features)


def np_conv(fmt, conv: nn.Conv2d, x: torch.Tensor, opts, pad4=None) -> np.ndarray:
    x = x.numpy()
    ph, pw = conv.padding if pad4 is None else (None, None)
    top, bottom, left, right = pad4 or (ph, ph, pw, pw)
    # quantize(zero-padded x): the padding of static int8 input is the zero point
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    valid_p = np.pad(np.ones_like(x[:1, :1], dtype=np.int64),
                     ((0, 0), (0, 0), (top, bottom), (left, right)))
    sample_scale = None
    if fmt == "int8" and opts.get("act_scale") is not None:
        xp = np_static(xp, opts["act_scale"], opts.get("act_zero_point", 0))
    elif opts.get("act_granularity") == "sample":  # one scale per image: its max |x| / 127
        sample_scale = np_absmax_scales(x.reshape(x.shape[0], -1))
        xp = np_quantize_rows(xp.reshape(x.shape[0], -1), sample_scale).reshape(xp.shape)
    g = conv.groups
    cg, ng = conv.in_channels // g, conv.out_channels // g
    w = gemm_rows(conv.weight.detach().numpy())
    b = None if conv.bias is None else conv.bias.detach().numpy()
    outs = []
    for gi in range(g):
        rows, (oh, ow) = np_im2col(xp[:, gi * cg:(gi + 1) * cg], conv.kernel_size, conv.stride,
                                   conv.dilation)
        valid, _ = np_im2col(np.repeat(valid_p, cg, axis=1), conv.kernel_size, conv.stride,
                             conv.dilation)
        valid = np.tile(valid, (x.shape[0], 1))
        sl = slice(gi * ng, (gi + 1) * ng)
        a_scale = None if sample_scale is None else np.repeat(sample_scale, oh * ow)
        outs.append(np_gemm(fmt, rows, w[sl], None if b is None else b[sl], opts, valid,
                            a_scale))
    out = np.concatenate(outs, axis=1)
    return out.reshape(x.shape[0], oh, ow, conv.out_channels).transpose(0, 3, 1, 2)


# --- the rounding ---------------------------------------------------------------------------

ROUNDING_VALUES = np.concatenate([
    np.arange(-300, 300, dtype=F32) + F32(0.5),                           # ties: to even
    np.nextafter(np.arange(-300, 300, dtype=F32) + F32(0.5), F32(np.inf)),
    np.nextafter(np.arange(-300, 300, dtype=F32) + F32(0.5), F32(-np.inf)),
    np.array([1e6, -1e6, 3e38, -3e38, 0.0, -0.0, 1e-45, -1e-45, 0.49999997], F32),
])


@pytest.mark.parametrize("zp", [0, 1, 128, 255], ids=["s8", "u8_zp1", "u8_zp128", "u8_zp255"])
def test_quantize_static_rounding_saturation(zp, assert_exact):
    """Ties to even, then the zero point, then the clip to int8 / uint8."""
    from lowbit.kernels.quantize import quantize_static

    lo, hi, dt = (-128, 127, np.int8) if zp == 0 else (0, 255, np.uint8)
    want = np.clip(np.array([round(float(v)) for v in ROUNDING_VALUES]) + zp, lo, hi)  # banker's
    assert_exact(quantize_static(ROUNDING_VALUES, 1.0, zp), want.astype(dt))
    got = torch.ops.lowbit.quantize_static(torch.from_numpy(ROUNDING_VALUES), 1.0, zp)
    assert_exact(got.numpy(), want.astype(dt))


def test_quantize_dynamic_rows(assert_exact):
    from lowbit.kernels.quantize import quantize_dynamic

    x = np.array([[254.0, -1.0, 3.0], [0.0, 0.0, 0.0], [-1.0, 0.5, 0.25]], F32)
    q, s = quantize_dynamic(x)
    assert_exact(s, np.array([2.0, 1.0, F32(1) / F32(127)], F32))    # zero row: scale 1
    assert_exact(q, np.array([[127, 0, 2], [0, 0, 0], [-127, 64, 32]], np.int8))  # 1.5 -> 2
    tq, ts = torch.ops.lowbit.quantize_dynamic(torch.from_numpy(x))
    assert_exact(tq.numpy(), q)
    assert_exact(ts.numpy(), s)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_quantizers_reject_non_finite(bad, raises_naming):
    x = torch.ones(2, 8)
    x[1, 3] = bad
    for call in (lambda: torch.ops.lowbit.quantize_dynamic(x),
                 lambda: torch.ops.lowbit.quantize_static(x, 0.1, 3),
                 lambda: torch.ops.lowbit.xnor_scales(x)):
        with raises_naming(ValueError, "x"):
            call()


# --- Linear: int8 and binary exact ---------------------------------------------------------

INT8_OPTS = {
    "dynamic": {},
    "static_s8": {"act_scale": 0.03},
    "static_u8": {"act_scale": 0.02, "act_zero_point": 131},
    "int8_out": {"act_scale": 0.03, "out_scale": 0.05},
    "int8_out_relu": {"act_scale": 0.03, "out_scale": 0.04, "relu": True},
    "uint8_out_relu": {"act_scale": 0.02, "act_zero_point": 120, "out_scale": 0.01,
                       "out_zero_point": 60, "relu": True},
}
LINEAR_SHAPES = {"m_one": (1, 64, 32), "odd": (7, 37, 19), "k_one": (3, 1, 5),
                 "n_tail": (5, 130, 65), "wide": (2, 300, 3)}


@pytest.mark.parametrize("opts", INT8_OPTS, ids=list(INT8_OPTS))
@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=list(LINEAR_SHAPES))
def test_linear_int8_exact(opts, shape, assert_exact):
    m, k, n = LINEAR_SHAPES[shape]
    lin = float_linear(k, n)
    x = rand(m, k, key=1)
    mod = LowbitLinear.from_float(lin, "int8", **INT8_OPTS[opts])
    assert_exact(mod(x).numpy(), np_linear("int8", lin, x, INT8_OPTS[opts]))


@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=list(LINEAR_SHAPES))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_linear_binary_exact(shape, bias, assert_exact):
    m, k, n = LINEAR_SHAPES[shape]
    lin = float_linear(k, n, bias)
    x = rand(m, k, key=2)
    mod = LowbitLinear.from_float(lin, "binary")
    assert_exact(mod(x).numpy(), np_linear("binary", lin, x, {}))


def test_linear_leading_dims_and_zero_rows(assert_exact):
    lin = float_linear(40, 24)
    x = rand(2, 3, 40, key=3)
    x[0, 1] = 0  # an all-zero row: dynamic scale 1.0, not a division by zero
    mod = LowbitLinear.from_float(lin, "int8")
    y = mod(x)
    assert y.shape == (2, 3, 24)
    assert_exact(y.numpy(), np_linear("int8", lin, x, {}))
    assert mod(torch.zeros(0, 40)).shape == (0, 24)


@settings(max_examples=25)
@given(m=st.integers(1, 9), k=st.integers(1, 200), n=st.integers(1, 80),
       opts=st.sampled_from(sorted(INT8_OPTS)))
def test_linear_int8_hypothesis(m, k, n, opts):
    lin = float_linear(k, n, key=m)
    x = rand(m, k, key=k)
    got = LowbitLinear.from_float(lin, "int8", **INT8_OPTS[opts])(x).numpy()
    np.testing.assert_array_equal(got, np_linear("int8", lin, x, INT8_OPTS[opts]))


def test_int8_chain_passes_integer_tensors(assert_exact):
    """Layer 1 requantizes to uint8 with ReLU; layer 2 reads it with the same scale / zp."""
    l1, l2 = float_linear(48, 32, key=1), float_linear(32, 10, key=2)
    o1 = {"act_scale": 0.03, "out_scale": 0.02, "out_zero_point": 5, "relu": True}
    o2 = {"act_scale": 0.02, "act_zero_point": 5}
    m1, m2 = LowbitLinear.from_float(l1, "int8", **o1), LowbitLinear.from_float(l2, "int8", **o2)
    x = rand(4, 48, key=4)
    h = m1(x)
    assert h.dtype == torch.uint8 and int(h.min()) >= 5
    want_h = np_linear("int8", l1, x, o1)
    assert_exact(h.numpy(), want_h)
    assert_exact(m2(h).numpy(), np_gemm("int8", want_h, l2.weight.detach().numpy(),
                                        l2.bias.detach().numpy(), o2))


# --- Linear: int4 ---------------------------------------------------------------------------

def np_int4_reference(lin, fmt, opts, x):
    gs = opts.get("group_size", 32)
    k, n = lin.in_features, lin.out_features
    kp = -(-k // gs) * gs
    w_kn = np.zeros((kp, n), F32)
    w_kn[:k] = lin.weight.detach().numpy().T
    nib, sc, z = quantize_int4(w_kn, gs, fmt == "uint4", opts.get("scale_dtype", "float16"))
    xp = np.zeros((x.shape[0], kp), F32)
    xp[:, :k] = x.numpy()
    return nib, sc, z, xp


@pytest.mark.parametrize("fmt", ["int4", "uint4"])
@pytest.mark.parametrize("opts", [{}, {"activations": "bfloat16"}, {"activations": "int8"},
                                  {"group_size": 64, "scale_dtype": "float32"}],
                         ids=["f32", "bf16", "w4a8", "g64_f32scales"])
@pytest.mark.parametrize("shape", [(1, 64, 32), (5, 70, 65), (3, 200, 9)],
                         ids=["m_one", "k_pad_n_tail", "k_pad_wide"])
def test_linear_int4_weights_exact_outputs_bounded(fmt, opts, shape):
    m, k, n = shape
    lin = float_linear(k, n, key=5)
    x = rand(m, k, key=6)
    mod = LowbitLinear.from_float(lin, fmt, **opts)
    y = mod(x).numpy()
    nib, sc, z, xp = np_int4_reference(lin, fmt, opts, x)
    packed = mod.scheme.packed_record(mod, 0)
    np.testing.assert_array_equal(packed.nibbles(), nib)       # the integers, exactly
    np.testing.assert_array_equal(packed.group_scales(), sc)
    if z is not None:
        np.testing.assert_array_equal(packed.zero_points(), z)
    bias = lin.bias.detach().numpy()
    gs = packed.group_size
    acts = opts.get("activations", "float32")
    if acts == "int8":
        a_s = np_absmax_scales(xp)
        a = np_quantize_rows(xp, a_s)
        acc = ref.w4a8_group_acc(a, packed.values(), gs)
        want = ref.w4a8_from_acc(acc, sc, a_s)
        tol = ref.w4a8_tolerance(acc, sc, a_s)
    else:
        if acts == "bfloat16":
            xp = torch.from_numpy(xp).to(torch.bfloat16).float().numpy()
        want = ref.gemm_w4a16(xp, packed.dequantize())
        tol = ref.w4a16_tolerance(xp, nib, packed.zero_points(), sc, gs)
    # + bias is one float32 addition on top of the kernel's result
    err = np.abs(y - bias - want)
    assert np.all(err <= tol + np.abs(y) * 2.0 ** -23), float((err - tol).max())


# --- Conv2d ------------------------------------------------------------------------------------

CONVS = {
    # name: (c_in, c_out, kernel, kwargs, input [B, C, H, W])
    "k3_pad1": (3, 8, 3, {"padding": 1}, (2, 3, 9, 9)),
    "stride2_nonsquare": (3, 5, (3, 2), {"stride": (2, 1), "padding": (1, 0)}, (2, 3, 9, 7)),
    "batch1_odd_channels": (5, 7, 3, {"padding": 2, "stride": 3}, (1, 5, 11, 8)),
    "dilation": (4, 6, 3, {"dilation": 2, "padding": 2}, (2, 4, 10, 10)),
    "one_by_one_stride2": (6, 9, 1, {"stride": 2}, (2, 6, 7, 7)),
    "one_by_one": (6, 9, 1, {}, (1, 6, 5, 4)),
    "valid_big_kernel": (2, 3, (5, 4), {}, (2, 2, 8, 6)),
    "grouped": (6, 9, 3, {"groups": 3, "padding": 1}, (2, 6, 6, 6)),
    "depthwise": (4, 4, 3, {"groups": 4, "padding": 1, "bias": False}, (2, 4, 5, 5)),
    "same_even_kernel": (3, 4, (2, 4), {"padding": "same"}, (1, 3, 6, 7)),
}


def _same_pad(conv) -> tuple[int, int, int, int]:
    pads = []
    for k, d in zip(conv.kernel_size, conv.dilation):
        total = d * (k - 1)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


def _conv_case(name, key=0):
    c_in, c_out, kernel, kw, shape = CONVS[name]
    conv = float_conv(c_in, c_out, kernel, key, **kw)
    pad4 = _same_pad(conv) if conv.padding == "same" else None
    return conv, rand(*shape, key=(name, key)), pad4


CONV_OPTS = {"int8_dynamic": ("int8", {}),
             "int8_dynamic_sample": ("int8", {"act_granularity": "sample"}),
             "int8_static_u8": ("int8", {"act_scale": 0.02, "act_zero_point": 128}),
             "int8_static_s8": ("int8", {"act_scale": 0.03}),
             "int8_out_relu": ("int8", {"act_scale": 0.03, "out_scale": 0.05, "relu": True}),
             "binary": ("binary", {})}


@pytest.mark.parametrize("variant", CONV_OPTS, ids=list(CONV_OPTS))
@pytest.mark.parametrize("name", CONVS, ids=list(CONVS))
def test_conv_exact(variant, name, assert_exact):
    fmt, opts = CONV_OPTS[variant]
    conv, x, pad4 = _conv_case(name)
    mod = LowbitConv2d.from_float(conv, fmt, **opts)
    got = mod(x)
    want = np_conv(fmt, conv, x, opts, pad4)
    assert got.is_contiguous()
    assert_exact(got.numpy(), want)


@pytest.mark.parametrize("fmt", ["int4", "uint4"])
@pytest.mark.parametrize("name", ["k3_pad1", "grouped", "stride2_nonsquare"])
def test_conv_int4_equals_its_gemm(fmt, name):
    """int4 conv = im2col rows through the same module's GEMM (the weights are checked
    exactly by the Linear tests); and close to the float conv."""
    conv, x, _ = _conv_case(name, key=1)
    mod = LowbitConv2d.from_float(conv, fmt)
    got = mod(x)
    xp = np.pad(x.numpy(), ((0, 0), (0, 0), *[(p, p) for p in conv.padding]))
    g, cg = conv.groups, conv.in_channels // conv.groups
    ng = conv.out_channels // g
    for gi in range(g):
        rows, (oh, ow) = np_im2col(xp[:, gi * cg:(gi + 1) * cg], conv.kernel_size, conv.stride,
                                   conv.dilation, tap_major=False)
        want = mod.scheme.matmul(mod, torch.from_numpy(rows), gi)
        part = got[:, gi * ng:(gi + 1) * ng].permute(0, 2, 3, 1).reshape(-1, ng)
        np.testing.assert_array_equal(part.numpy(), want.numpy())
    assert torch.allclose(got, conv(x), atol=0.3)


def test_conv_unbatched_input(assert_exact):
    conv, x, _ = _conv_case("k3_pad1")
    mod = LowbitConv2d.from_float(conv, "int8", act_scale=0.02)
    assert_exact(mod(x[0]).numpy(), mod(x[:1])[0].numpy())


@settings(max_examples=20)
@given(c_in=st.integers(1, 6), c_out=st.integers(1, 7), kh=st.integers(1, 4),
       kw=st.integers(1, 4), stride=st.integers(1, 3), pad=st.integers(0, 2),
       dil=st.integers(1, 2), h=st.integers(4, 9), w=st.integers(4, 9),
       variant=st.sampled_from(sorted(CONV_OPTS)))
def test_conv_hypothesis(c_in, c_out, kh, kw, stride, pad, dil, h, w, variant):
    if h + 2 * pad < dil * (kh - 1) + 1 or w + 2 * pad < dil * (kw - 1) + 1:
        return
    fmt, opts = CONV_OPTS[variant]
    conv = float_conv(c_in, c_out, (kh, kw), key=h * w, stride=stride, padding=pad, dilation=dil)
    x = rand(2, c_in, h, w, key=(kh, kw))
    got = LowbitConv2d.from_float(conv, fmt, **opts)(x).numpy()
    np.testing.assert_array_equal(got, np_conv(fmt, conv, x, opts))


# --- from_quantized: the hand-over path --------------------------------------------------------

def test_from_quantized_int8_equals_from_float(assert_exact):
    lin = float_linear(50, 20)
    opts = {"act_scale": 0.03, "act_zero_point": 7, "out_scale": 0.05, "relu": True}
    ref_mod = LowbitLinear.from_float(lin, "int8", **opts)
    w = lin.weight.detach().numpy()
    q, s = torch.from_numpy(np_quantize_rows(w, np_absmax_scales(w))), torch.from_numpy(
        np_absmax_scales(w))
    mod = LowbitLinear.from_quantized("int8", q, s, lin.bias.detach(), **opts)
    x = rand(6, 50, key=7)
    assert_exact(mod(x).numpy(), ref_mod(x).numpy())
    for name, buf in ref_mod.state_dict().items():
        assert torch.equal(mod.state_dict()[name], buf), name


@pytest.mark.parametrize("fmt", ["int4", "uint4"])
def test_from_quantized_int4_equals_from_float(fmt, assert_exact):
    conv = float_conv(5, 6, 3, padding=1)  # K = 45: padded to 64 with group 32
    ref_mod = LowbitConv2d.from_float(conv, fmt, scale_dtype="float32")
    k = 45
    w_kn = np.zeros((64, 6), F32)
    w_kn[:k] = conv.weight.detach().numpy().reshape(6, -1).T    # groups along (c, kh, kw)
    nib, sc, z = quantize_int4(w_kn, 32, fmt == "uint4", "float32")
    vals = (nib[:k].T.astype(np.int16) - (0 if fmt == "uint4" else 8)).reshape(6, 5, 3, 3)
    kw = {"weight_zero_point": torch.from_numpy(z.T.copy())} if fmt == "uint4" else {}
    mod = LowbitConv2d.from_quantized(fmt, torch.from_numpy(vals.copy()),
                                      torch.from_numpy(sc.T.copy()), conv.bias.detach(),
                                      padding=1, **kw)
    assert mod.scheme.options["scale_dtype"] == "float32"
    x = rand(2, 5, 6, 6, key=8)
    assert_exact(mod(x).numpy(), ref_mod(x).numpy())


def test_from_quantized_binary(assert_exact):
    conv = float_conv(3, 4, 3, padding=1, groups=1)
    w = conv.weight.detach()
    alpha = torch.from_numpy(np_xnor_scales(gemm_rows(w.numpy())))
    mod = LowbitConv2d.from_quantized("binary", torch.where(w >= 0, 1, -1).to(torch.int8), alpha,
                                      conv.bias.detach(), padding=1)
    x = rand(1, 3, 5, 5, key=9)
    assert_exact(mod(x).numpy(), np_conv("binary", conv, x, {}))


# --- state_dict, dtype moves, storage -----------------------------------------------------------

FORMAT_CASES = {"int8_dynamic": ("int8", {}),
                "int8_static_out": ("int8", {"act_scale": 0.02, "out_scale": 0.1}),
                "int4": ("int4", {}), "uint4_w4a8": ("uint4", {"activations": "int8"}),
                "binary": ("binary", {})}


@pytest.mark.parametrize("case", FORMAT_CASES, ids=list(FORMAT_CASES))
def test_state_dict_round_trip(case, tmp_path, assert_exact):
    fmt, opts = FORMAT_CASES[case]
    conv = float_conv(4, 6, 3, padding=1, groups=2)
    mod = LowbitConv2d.from_float(conv, fmt, **opts)
    path = tmp_path / "m.pt"
    torch.save(mod.state_dict(), path)
    fresh = LowbitConv2d(4, 6, 3, padding=1, groups=2, fmt=fmt, **opts)
    fresh.load_state_dict(torch.load(path))
    x = rand(2, 4, 5, 5, key=10)
    assert_exact(fresh(x).numpy(), mod(x).numpy())
    lin = LowbitLinear.from_float(float_linear(40, 12), fmt, **opts)
    fresh_lin = LowbitLinear(40, 12, fmt=fmt, **opts)
    fresh_lin.load_state_dict(lin.state_dict())
    xl = rand(3, 40, key=11)
    assert_exact(fresh_lin(xl).numpy(), lin(xl).numpy())


def test_whole_model_save_and_deepcopy(tmp_path, assert_exact):
    import copy

    model = nn.Sequential(LowbitConv2d.from_float(float_conv(3, 4, 3, padding=1), "binary"),
                          nn.Flatten(),
                          LowbitLinear.from_float(float_linear(100, 5), "int8", act_scale=0.1))
    torch.save(model, tmp_path / "model.pt")
    x = rand(2, 3, 5, 5, key=14)
    for other in (torch.load(tmp_path / "model.pt", weights_only=False), copy.deepcopy(model)):
        assert_exact(other(x).numpy(), model(x).numpy())


def test_misaligned_state_dict_is_realigned_on_load(assert_exact):
    mod = LowbitLinear.from_float(float_linear(64, 70), "int8")
    sd = mod.state_dict()
    shifted = {}
    for name, t in sd.items():
        raw = torch.empty(t.numel() * t.element_size() + ALIGN, dtype=torch.uint8)
        off = (-raw.data_ptr() + 8) % ALIGN  # 8 bytes past a 64-byte boundary
        view = raw[off:off + t.numel() * t.element_size()].view(t.dtype).view(t.shape)
        view.copy_(t)
        shifted[name] = view
    assert shifted["weight_data"].data_ptr() % ALIGN
    fresh = LowbitLinear(64, 70)
    fresh.load_state_dict(shifted, assign=True)
    assert fresh.weight_data.data_ptr() % ALIGN == 0
    x = rand(2, 64, key=12)
    assert_exact(fresh(x).numpy(), mod(x).numpy())


def test_to_dtype_keeps_quantization_buffers_and_casts_output():
    mod = LowbitLinear.from_float(float_linear(64, 16), "int4", activations="bfloat16")
    before = {k: (v.dtype, v.data_ptr()) for k, v in mod.state_dict().items()}
    model = nn.Sequential(mod, nn.ReLU()).to(torch.bfloat16)
    assert {k: (v.dtype, v.data_ptr()) for k, v in mod.state_dict().items()} == before
    x = rand(3, 64, key=13)
    y = model(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, torch.relu(mod(x.to(torch.bfloat16).float()).to(torch.bfloat16)))
    with pytest.raises(RuntimeError, match="CPU"):
        mod.to("meta")


def test_lowbit_storage():
    lin = float_linear(64, 64)
    with torch.no_grad():
        lin.weight[:, :8] = 0   # 8 of 64 weights of every row are zero
    mod = LowbitLinear.from_float(lin, "int8")
    st_ = mod.lowbit_storage()
    assert set(st_) == {"format", "bytes", "weight_bits", "act_bits", "sparsity",
                        "sparsity_kind", "params"}
    assert (st_["format"], st_["weight_bits"], st_["act_bits"]) == ("int8", 8.0, 8)
    # dense: the kernel stores and multiplies the zeros too
    assert (st_["sparsity"], st_["sparsity_kind"], st_["params"]) == (0.0, "dense", 64 * 64 + 64)
    # packed 64 x 64 int8, int32 column sums, int64 abs-sum max, float32 scales and bias
    assert st_["bytes"] == 64 * 64 + 4 * 64 + 8 + 4 * 64 + 4 * 64
    assert st_["bytes"] == sum(t.numel() * t.element_size() for t in mod.state_dict().values())
    static = LowbitLinear.from_float(lin, "int8", act_scale=0.1, act_zero_point=3, out_scale=0.2)
    # + float32 act / out scales, int32 zero points, int32 multipliers, shifts, bias
    assert static.lowbit_storage()["bytes"] == st_["bytes"] - 4 * 64 + 4 * 4 + 3 * 4 * 64
    conv4 = LowbitConv2d.from_float(float_conv(32, 70, 1), "int4")  # K = 32: one group
    s4 = conv4.lowbit_storage()
    assert (s4["format"], s4["weight_bits"], s4["act_bits"]) == ("int4", 4.0, 32)
    assert (s4["group_size"], s4["scale_dtype"], s4["params"]) == (32, "float16", 32 * 70 + 70)
    # two 64-column panels of nibbles, float16 scales, float32 bias
    assert s4["bytes"] == 128 * 32 // 2 + 128 * 2 + 70 * 4
    sb = LowbitLinear.from_float(float_linear(128, 64, bias=False), "binary").lowbit_storage()
    assert (sb["weight_bits"], sb["act_bits"], sb["bytes"]) == (1.0, 1, 64 * 128 // 8 + 64 * 4)
    s48 = LowbitLinear.from_float(float_linear(64, 64), "uint4", activations="int8",
                                  group_size=64).lowbit_storage()
    assert (s48["format"], s48["act_bits"], s48["group_size"]) == ("uint4", 8, 64)


def test_extra_repr():
    mod = LowbitConv2d.from_float(float_conv(3, 8, 3, padding=1), "int8", act_scale=0.1,
                                  act_zero_point=3)
    text = repr(mod)
    assert "fmt='int8'" in text and "act_scale=0.1," in text and "act_zero_point=3" in text
    assert "kernel_size=(3, 3)" in text and "padding=(1, 1)" in text
    fresh = LowbitConv2d(3, 8, 3, padding=1, act_scale=1.0, act_zero_point=1)
    fresh.load_state_dict(mod.state_dict())
    assert "act_scale=0.1, act_zero_point=3" in repr(fresh)   # the loaded values
    assert "fmt='int4', activations='int8'" in repr(
        LowbitLinear.from_float(float_linear(32, 4), "int4", activations="int8"))


# --- errors --------------------------------------------------------------------------------

def test_errors(raises_naming):
    lin = float_linear(32, 8)
    with raises_naming(ValueError, "fmt"):
        LowbitLinear.from_float(lin, "int3")
    with raises_naming(TypeError, "act_sclae"):
        LowbitLinear.from_float(lin, "int8", act_sclae=0.1)
    with raises_naming(TypeError, "act_scale"):
        LowbitLinear.from_float(lin, "binary", act_scale=0.1)
    with raises_naming(ValueError, "out_scale"):
        LowbitLinear.from_float(lin, "int8", out_scale=0.1)
    with raises_naming(ValueError, "relu"):
        LowbitLinear.from_float(lin, "int8", act_scale=0.1, relu=True)
    with raises_naming(ValueError, "act_zero_point"):
        LowbitLinear.from_float(lin, "int8", act_scale=0.1, act_zero_point=-4)
    with raises_naming(ValueError, "act_scale"):
        LowbitLinear.from_float(lin, "int8", act_scale=0.0)
    with raises_naming(ValueError, "group_size"):
        LowbitLinear.from_float(lin, "int4", group_size=16)
    with raises_naming(ValueError, "activations"):
        LowbitLinear.from_float(lin, "int4", activations="float16")
    with raises_naming(ValueError, "act_granularity"):
        LowbitLinear.from_float(lin, "int8", act_granularity="sample")
    with raises_naming(ValueError, "act_granularity"):
        LowbitConv2d(3, 4, 3, act_scale=0.1, act_granularity="sample")
    with raises_naming(ValueError, "act_granularity"):
        LowbitConv2d(3, 4, 3, act_granularity="tensor")
    with raises_naming(TypeError, "module"):
        LowbitLinear.from_float(nn.Conv2d(1, 1, 1), "int8")
    with raises_naming(ValueError, "module.padding_mode"):
        LowbitConv2d.from_float(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), "int8")
    with raises_naming(ValueError, "groups"):
        LowbitConv2d(4, 6, 3, groups=4)
    bad = float_linear(32, 8)
    with torch.no_grad():
        bad.weight[0, 0] = float("nan")
    with raises_naming(ValueError, "module.weight"):
        LowbitLinear.from_float(bad, "int8")

    dyn = LowbitLinear.from_float(lin, "int8")
    static = LowbitLinear.from_float(lin, "int8", act_scale=0.1, act_zero_point=3)
    with raises_naming(TypeError, "x"):
        dyn(torch.zeros(2, 32, dtype=torch.float64))
    with raises_naming(ValueError, "x"):
        dyn(torch.zeros(2, 31))
    with raises_naming(ValueError, "x"):
        dyn(torch.full((2, 32), float("inf")))
    with raises_naming(TypeError, "x"):
        dyn(torch.zeros(2, 32, dtype=torch.int8))
    with raises_naming(TypeError, "x"):
        static(torch.zeros(2, 32, dtype=torch.int8))  # zero point 3: uint8 activations
    conv = LowbitConv2d.from_float(float_conv(3, 4, 5), "binary")
    with raises_naming(ValueError, "x"):
        conv(torch.zeros(1, 3, 4, 4))   # smaller than the kernel
    with raises_naming(ValueError, "x"):
        conv(torch.zeros(1, 2, 8, 8))

    q = torch.zeros(8, 32, dtype=torch.int8)
    with raises_naming(ValueError, "weight"):
        LowbitLinear.from_quantized("int8", q.reshape(8, 32, 1), torch.ones(8))
    with raises_naming(ValueError, "weight_scale"):
        LowbitLinear.from_quantized("int8", q, torch.ones(7))
    with raises_naming(ValueError, "weight_scale"):
        LowbitLinear.from_quantized("int8", q, torch.zeros(8))
    with raises_naming(TypeError, "weight"):
        LowbitLinear.from_quantized("int8", q.float(), torch.ones(8))
    with raises_naming(ValueError, "weight"):
        LowbitLinear.from_quantized("int4", q + 9, torch.ones(8, 1, dtype=torch.float16))
    with raises_naming(ValueError, "weight_zero_point"):
        LowbitLinear.from_quantized("uint4", q, torch.ones(8, 1, dtype=torch.float16))
    with raises_naming(ValueError, "weight_scale"):
        LowbitLinear.from_quantized("int4", q, torch.ones(8, 2, dtype=torch.float16))
    with raises_naming(ValueError, "out_scale"):  # requantization scale out of range
        LowbitLinear.from_quantized("int8", q, torch.ones(8), act_scale=1e6, out_scale=1e-6)


def test_modules_module_is_importable_by_name():
    assert lk.LowbitLinear is LowbitLinear and lk.LowbitConv2d is LowbitConv2d
    assert modules.__all__ == ["KernelTrace", "LowbitConv2d", "LowbitLinear"]


# --- every ISA tier, docstring examples ------------------------------------------------------

ISA_CHILD = """
import sys, torch
from lowbit.kernels.modules import LowbitConv2d, LowbitLinear
saved = torch.load(sys.argv[1])
outs = {}
for name, (cls, cfg, sd, x) in saved.items():
    mod = {"linear": LowbitLinear, "conv": LowbitConv2d}[cls](**cfg)
    mod.load_state_dict(sd)
    outs[name] = mod(x)
torch.save(outs, sys.argv[2])
"""


FALLBACKS = {"portable": "avx512_vnni,avx512,avx2", "numba": "avx512_vnni,avx512,avx2,portable"}


@pytest.mark.slow
@pytest.mark.parametrize("disabled", FALLBACKS.values(), ids=list(FALLBACKS))
def test_modules_exact_on_fallback_isas(disabled, tmp_path):
    """The kernels' fallback tiers give the modules the same outputs, bit for bit."""
    import os
    import subprocess
    import sys

    cases = {
        "lin_int8_dynamic": ("linear", {"in_features": 70, "out_features": 33},
                             LowbitLinear.from_float(float_linear(70, 33), "int8"), rand(5, 70)),
        "lin_int8_requant": ("linear", {"in_features": 70, "out_features": 33, "act_scale": 0.03,
                                        "act_zero_point": 9, "out_scale": 0.05, "relu": True},
                             LowbitLinear.from_float(float_linear(70, 33), "int8", act_scale=0.03,
                                                     act_zero_point=9, out_scale=0.05, relu=True),
                             rand(5, 70)),
        "conv_binary": ("conv", {"in_channels": 3, "out_channels": 5, "kernel_size": 3,
                                 "padding": 1, "fmt": "binary"},
                        LowbitConv2d.from_float(float_conv(3, 5, 3, padding=1), "binary"),
                        rand(2, 3, 6, 6)),
        "lin_w4a8": ("linear", {"in_features": 64, "out_features": 9, "fmt": "int4",
                                "activations": "int8"},
                     LowbitLinear.from_float(float_linear(64, 9), "int4", activations="int8"),
                     rand(3, 64)),
        "lin_csr_u8": ("linear", {"in_features": 70, "out_features": 33, "fmt": "csr",
                                  "act_scale": 0.03, "act_zero_point": 9},
                       LowbitLinear.from_float(pruned(float_linear(70, 33), 0.2), "csr",
                                               act_scale=0.03, act_zero_point=9), rand(5, 70)),
    }
    saved = {k: (cls, cfg, mod.state_dict(), x) for k, (cls, cfg, mod, x) in cases.items()}
    torch.save(saved, tmp_path / "in.pt")
    env = {**os.environ, "LOWBIT_DISABLE_ISA": disabled}
    proc = subprocess.run([sys.executable, "-c", ISA_CHILD, str(tmp_path / "in.pt"),
                           str(tmp_path / "out.pt")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt")
    for name, (_, _, mod, x) in cases.items():
        want = mod(x)
        if name == "lin_w4a8":  # float sums over groups: each tier in its own order
            assert torch.allclose(got[name], want, rtol=1e-5, atol=1e-6), name
        else:
            assert torch.equal(got[name], want), name


@pytest.mark.parametrize("module", ["torch_ops", "quantize", "modules"])
def test_docstring_examples(module):
    import doctest
    import importlib

    mod = importlib.import_module(f"lowbit.kernels.{module}")
    globs = {"np": np, "torch": torch, "pack_weights": lk.pack_weights, **vars(mod)}
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = doctest.DocTestFinder().find(mod, globs=globs)
    assert tests
    for t in tests:
        runner.run(t)
    assert runner.summarize(verbose=False).failed == 0


# --- narrowed activation / output ranges (b-bit values in the int8 kernels) ---------------------

def np_static_range(x, scale, zp, lo, hi) -> np.ndarray:
    dt = np.uint8 if lo >= 0 else np.int8
    return np.clip(np.rint(x / F32(scale)) + zp, lo, hi).astype(dt)


RANGE_CASES = {"u4_zp3": (0.05, 3, (0, 15)), "s4": (0.1, 0, (-8, 7)),
               "u8_zp0": (0.02, 0, (0, 255)), "s8_full": (0.03, 0, (-128, 127))}


@pytest.mark.parametrize("case", RANGE_CASES, ids=list(RANGE_CASES))
def test_quantize_static_qrange(case, assert_exact):
    from lowbit.kernels.quantize import quantize_static

    _, zp, (lo, hi) = RANGE_CASES[case]
    dt = np.uint8 if lo >= 0 else np.int8
    want = np.clip(np.array([round(float(v)) for v in ROUNDING_VALUES]) + zp, lo, hi).astype(dt)
    assert_exact(quantize_static(ROUNDING_VALUES, 1.0, zp, (lo, hi)), want)
    got = torch.ops.lowbit.quantize_static(torch.from_numpy(ROUNDING_VALUES), 1.0, zp, [lo, hi])
    assert_exact(got.numpy(), want)


@pytest.mark.parametrize("case", RANGE_CASES, ids=list(RANGE_CASES))
@pytest.mark.parametrize("shape", ["odd", "n_tail"])
def test_linear_int8_act_range_exact(case, shape, assert_exact):
    scale, zp, qrange = RANGE_CASES[case]
    m, k, n = LINEAR_SHAPES[shape]
    lin = float_linear(k, n, key=21)
    x = rand(m, k, key=22)
    mod = LowbitLinear.from_float(lin, "int8", act_scale=scale, act_zero_point=zp,
                                  act_range=qrange)
    rows = np_static_range(x.numpy(), scale, zp, *qrange)
    want = np_gemm("int8", rows, lin.weight.detach().numpy(), lin.bias.detach().numpy(),
                   {"act_scale": scale, "act_zero_point": zp})
    assert_exact(mod(x).numpy(), want)
    assert_exact(mod(torch.from_numpy(rows)).numpy(), want)    # integer input, same result


@pytest.mark.parametrize("clip", [None, (0, 100), (10, 20)], ids=["range", "clip", "narrow"])
def test_int8_out_range_and_clip(clip, assert_exact):
    """uint8 output with zero point 0 ([0, 255]: a post-ReLU consumer) and a fused clamp."""
    lin = float_linear(48, 20, key=23)
    opts = {"act_scale": 0.03, "out_scale": 0.01, "out_zero_point": 0, "out_range": (0, 255),
            "out_clip": clip}
    mod = LowbitLinear.from_float(lin, "int8", **opts)
    x = rand(6, 48, key=24)
    w = lin.weight.detach().numpy()
    w_s = np_absmax_scales(w)
    rows = np_static(x.numpy(), 0.03, 0)
    acc = ref.gemm_int8(rows, np_quantize_rows(w, w_s).T, 0)
    lo, hi = clip or (0, 255)
    # np_requant's requantization with the clamp [lo, hi] in uint8 (np_requant clips to int8)
    pairs = [lk.quantize_multiplier(float(np.float64(F32(0.03)) * np.float64(s)
                                          / np.float64(F32(0.01)))) for s in w_s]
    bias_q = np.rint(lin.bias.detach().numpy().astype(np.float64)
                     / (np.float64(F32(0.03)) * w_s.astype(np.float64))).astype(np.int32)
    want = ref.requantize(acc, np.array([p[0] for p in pairs], np.int32),
                          np.array([p[1] for p in pairs], np.int32), 0, lo, hi, bias_q, np.uint8)
    got = mod(x)
    assert got.dtype == torch.uint8
    assert_exact(got.numpy(), want)
    if clip is None:
        assert int(want.max()) > 127  # values an int8 output with zero point 0 could not hold
    nxt = LowbitLinear.from_float(float_linear(20, 3), "int8", act_scale=0.01, act_range=(0, 255))
    assert nxt(got).dtype == torch.float32


def test_range_options_are_checked(raises_naming):
    lin = float_linear(8, 4)
    with raises_naming(ValueError, "act_range"):
        LowbitLinear.from_float(lin, "int8", act_range=(0, 15))       # dynamic
    with raises_naming(ValueError, "qrange"):
        LowbitLinear.from_float(lin, "int8", act_scale=0.1, act_zero_point=20, act_range=(0, 15))
    with raises_naming(ValueError, "act_range"):
        LowbitLinear.from_float(lin, "int8", act_scale=0.1, act_range=(5, 1))
    with raises_naming(ValueError, "qrange"):
        LowbitLinear.from_float(lin, "int8", act_scale=0.1, act_range=(-200, 10))
    with raises_naming(ValueError, "out_clip"):
        LowbitLinear.from_float(lin, "int8", act_scale=0.1, out_clip=(0, 5))
    with raises_naming(ValueError, "out_range"):
        LowbitLinear.from_float(lin, "int8", act_scale=0.1, out_scale=0.1, out_range=(0,))
    mod = LowbitLinear.from_float(lin, "int8", act_scale=0.1, act_range=(0, 255))
    with raises_naming(TypeError, "x"):
        mod(torch.zeros(2, 8, dtype=torch.int8))                     # needs uint8


# --- integer_trace: the kernels' integers ---------------------------------------------------------

@pytest.mark.parametrize("opts", ["dynamic", "static_u8", "int8_out_relu"])
def test_linear_integer_trace(opts, assert_exact):
    o = INT8_OPTS[opts]
    lin = float_linear(37, 19, key=25)
    x = rand(2, 3, 37, key=26)
    mod = LowbitLinear.from_float(lin, "int8", **o)
    tr = mod.integer_trace(x)
    rows = x.reshape(-1, 37).numpy()
    w = lin.weight.detach().numpy()
    q_w = np_quantize_rows(w, np_absmax_scales(w))
    if o.get("act_scale") is None:
        a_s = np_absmax_scales(rows)
        a, zp = np_quantize_rows(rows, a_s), 0
        assert_exact(tr.a_scale, a_s)
    else:
        zp = o.get("act_zero_point", 0)
        a = np_static(rows, o["act_scale"], zp)
        assert tr.a_scale is None
    assert_exact(tr.a_q, a)
    assert tr.a_zero_point == zp
    assert_exact(tr.acc, ref.gemm_int8(a, q_w.T, zp))
    assert_exact(tr.out.numpy(), mod(x).numpy())


@pytest.mark.parametrize("variant", ["int8_static_u8", "int8_dynamic_sample", "int8_dynamic"])
@pytest.mark.parametrize("name", ["k3_pad1", "grouped", "stride2_nonsquare"])
def test_conv_integer_trace(variant, name, assert_exact):
    fmt, opts = CONV_OPTS[variant]
    conv, x, _ = _conv_case(name, key=2)
    mod = LowbitConv2d.from_float(conv, fmt, **opts)
    tr = mod.integer_trace(x)
    g, cg, ng = conv.groups, conv.in_channels // conv.groups, conv.out_channels // conv.groups
    xp = np.pad(x.numpy(), ((0, 0), (0, 0), *[(p, p) for p in conv.padding]))
    w = gemm_rows(conv.weight.detach().numpy())
    q_w = np_quantize_rows(w, np_absmax_scales(w))
    zp = opts.get("act_zero_point", 0)
    if variant == "int8_static_u8":
        xp = np_static(xp, opts["act_scale"], zp)
    elif variant == "int8_dynamic_sample":
        s = np_absmax_scales(x.numpy().reshape(x.shape[0], -1))
        xp = np_quantize_rows(xp.reshape(x.shape[0], -1), s).reshape(xp.shape)
    for gi in range(g):
        rows, (oh, ow) = np_im2col(xp[:, gi * cg:(gi + 1) * cg], conv.kernel_size, conv.stride,
                                   conv.dilation)
        if variant == "int8_dynamic":
            a_s = np_absmax_scales(rows)
            rows = np_quantize_rows(rows, a_s)
        k = rows.shape[1]
        assert_exact(tr.a_q[:, gi * k:(gi + 1) * k], rows)
        assert_exact(tr.acc[:, gi * ng:(gi + 1) * ng],
                     ref.gemm_int8(rows, q_w[gi * ng:(gi + 1) * ng].T, zp))
    if variant == "int8_dynamic_sample":
        assert_exact(tr.a_scale, np.repeat(s, oh * ow))
    assert_exact(tr.out.numpy(), mod(x).numpy())


def test_integer_trace_needs_integer_activations(raises_naming):
    mod = LowbitLinear.from_float(float_linear(64, 8), "int4")
    with raises_naming(TypeError, "integer_trace"):
        mod.integer_trace(rand(2, 64))


# --- csr: sparse int8 weights on spmm_csr -------------------------------------------------------

CSR_OPTS = {k: v for k, v in INT8_OPTS.items() if "out_scale" not in v}
CSR_OPTS["static_u8_zp0_range"] = {"act_scale": 0.02, "act_zero_point": 0,
                                   "act_range": (0, 255)}
CSR_OPTS["static_u4"] = {"act_scale": 0.1, "act_zero_point": 4, "act_range": (0, 15)}


def pruned(mod: nn.Module, density: float, key=0) -> nn.Module:
    """Zero a seeded random share (1 - density) of the weights, and one whole output row."""
    with torch.no_grad():
        keep = torch.rand(mod.weight.shape, generator=seeded("prune", key)) < density
        mod.weight.mul_(keep)
        mod.weight[0] = 0
    return mod


def np_range_rows(x, o):
    if o.get("act_range") is not None:
        return np_static_range(x, o["act_scale"], o["act_zero_point"], *o["act_range"])
    return x


@pytest.mark.parametrize("density", [1.0, 0.3, 0.05, 0.0])
@pytest.mark.parametrize("opts", CSR_OPTS, ids=list(CSR_OPTS))
@pytest.mark.parametrize("shape", ["m_one", "odd", "k_one", "n_tail"])
def test_linear_csr_equals_int8(density, opts, shape, assert_exact):
    """csr computes the int8 format's arithmetic on the nonzeros: the same bits."""
    m, k, n = LINEAR_SHAPES[shape]
    lin = pruned(float_linear(k, n, key=27), density, key=shape)
    x = rand(m, k, key=28)
    o = CSR_OPTS[opts]
    mod = LowbitLinear.from_float(lin, "csr", **o)
    if o.get("act_range") is not None:
        rows = np_range_rows(x.numpy(), o)
        want = np_gemm("int8", rows, lin.weight.detach().numpy(), lin.bias.detach().numpy(), o)
    else:
        want = np_linear("int8", lin, x, o)
    assert_exact(mod(x).numpy(), want)
    assert_exact(mod(x).numpy(), LowbitLinear.from_float(lin, "int8", **o)(x).numpy())
    tr, tr8 = mod.integer_trace(x), LowbitLinear.from_float(lin, "int8", **o).integer_trace(x)
    assert_exact(tr.acc, tr8.acc)
    assert_exact(tr.a_q, tr8.a_q)


@settings(max_examples=25)
@given(m=st.integers(1, 9), k=st.integers(1, 150), n=st.integers(1, 40),
       density=st.floats(0.0, 1.0), opts=st.sampled_from(sorted(CSR_OPTS)))
def test_linear_csr_hypothesis(m, k, n, density, opts):
    lin = pruned(float_linear(k, n, key=m), density, key=(k, n))
    x = rand(m, k, key=k)
    o = CSR_OPTS[opts]
    np.testing.assert_array_equal(LowbitLinear.from_float(lin, "csr", **o)(x).numpy(),
                                  LowbitLinear.from_float(lin, "int8", **o)(x).numpy())


CSR_CONV_OPTS = {"dynamic": {}, "sample": {"act_granularity": "sample"},
                 "static_u8": {"act_scale": 0.02, "act_zero_point": 128},
                 "static_s8": {"act_scale": 0.03}}


@pytest.mark.parametrize("opts", CSR_CONV_OPTS, ids=list(CSR_CONV_OPTS))
@pytest.mark.parametrize("name", ["k3_pad1", "stride2_nonsquare", "grouped", "depthwise",
                                  "one_by_one"])
def test_conv_csr_exact(opts, name, assert_exact):
    conv, x, pad4 = _conv_case(name, key=3)
    pruned(conv, 0.4, key=name)
    o = CSR_CONV_OPTS[opts]
    mod = LowbitConv2d.from_float(conv, "csr", **o)
    assert_exact(mod(x).numpy(), np_conv("int8", conv, x, o, pad4))


def test_csr_storage_and_state_dict(tmp_path, assert_exact):
    conv = pruned(float_conv(4, 6, 3, padding=1, groups=2), 0.3, key="sd")
    mod = LowbitConv2d.from_float(conv, "csr", act_scale=0.05, act_zero_point=3)
    groups = [mod.scheme.packed_record(mod, g) for g in range(2)]
    assert groups[0].nnz != groups[1].nnz                   # groups of different lengths
    st_ = mod.lowbit_storage()
    nnz = int((np_quantize_rows(gemm_rows(conv.weight.detach().numpy()),
                                np_absmax_scales(gemm_rows(conv.weight.detach().numpy())))
               != 0).sum())
    assert st_["format"] == "csr" and st_["sparsity_kind"] == "unstructured"
    assert st_["sparsity"] == pytest.approx(1 - nnz / conv.weight.numel())
    assert st_["bytes"] == sum(b.numel() * b.element_size() for b in mod.state_dict().values())
    torch.save(mod.state_dict(), tmp_path / "csr.pt")
    fresh = LowbitConv2d(4, 6, 3, padding=1, groups=2, fmt="csr", act_scale=0.05,
                         act_zero_point=3)
    fresh.load_state_dict(torch.load(tmp_path / "csr.pt"))
    x = rand(2, 4, 5, 5, key=29)
    assert_exact(fresh(x).numpy(), mod(x).numpy())


def test_csr_from_quantized_and_errors(raises_naming, assert_exact):
    lin = pruned(float_linear(30, 12, key=30), 0.2)
    w = lin.weight.detach().numpy()
    s = np_absmax_scales(w)
    q = torch.from_numpy(np_quantize_rows(w, s))
    mod = LowbitLinear.from_quantized("csr", q, torch.from_numpy(s), lin.bias.detach(),
                                      act_scale=0.04)
    x = rand(3, 30, key=31)
    assert_exact(mod(x).numpy(), LowbitLinear.from_float(lin, "csr", act_scale=0.04)(x).numpy())
    with raises_naming(TypeError, "out_scale"):
        LowbitLinear.from_float(lin, "csr", act_scale=0.04, out_scale=0.1)
    with raises_naming(ValueError, "weight_zero_point"):
        LowbitLinear.from_quantized("csr", q, torch.from_numpy(s), weight_zero_point=q)
    with raises_naming(ValueError, "weight"):
        LowbitLinear.from_quantized("csr", q.to(torch.int16) * 3, torch.from_numpy(s))
