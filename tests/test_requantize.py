"""The requantization definition (ref.requantize_scalar), its vectorized form, the
fixed-point multiplier, and the Requantize / Dequantize descriptors.

A few tests also push chosen int32 values through every usable gemm_int8 kernel's fused
epilogue: with A = 0 the accumulator is 0 and ``bias`` is exactly the value v requantized.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.kernels import Dequantize, Requantize, gemm_int8, pack_weights, quantize_multiplier, ref
from lowbit.kernels.epilogue import prepare

I32_MIN, I32_MAX = -(2 ** 31), 2 ** 31 - 1
NO_CLAMP = (-(2 ** 80), 2 ** 80)  # qmin, qmax for the scalar definition: clamp nothing


def rq(acc, scale, zp=0, qmin=NO_CLAMP[0], qmax=NO_CLAMP[1], bias=0):
    m, s = quantize_multiplier(scale)
    return ref.requantize_scalar(acc, m, s, zp, qmin, qmax, bias)


def kernel_requantize(isa, v, multiplier, shift, *, zero_point=0, out_dtype="int8",
                      qmin=None, qmax=None):
    """Run int32 values ``v`` [N] through gemm_int8's fused requantize (A = 0, bias = v)."""
    v = np.asarray(v, dtype=np.int64)
    n = v.size
    wp = pack_weights(np.zeros((1, n), np.int8))
    ep = Requantize(multiplier=multiplier, shift=shift, zero_point=zero_point, bias=v,
                    out_dtype=out_dtype, qmin=qmin, qmax=qmax)
    return gemm_int8(np.zeros((1, 1), np.int8), wp, epilogue=ep, isa=isa)[0]


# --- rounding ------------------------------------------------------------------------------

def test_ties_round_toward_positive_infinity():
    # scale 0.5: exact halves round up
    assert quantize_multiplier(0.5) == (2 ** 30, 31)
    assert [rq(a, 0.5) for a in (3, -3, 1, -1, 5, -5, 0)] == [2, -1, 1, 0, 3, -2, 0]
    # scale 0.25: ties at .5 go up; non-ties go to nearest
    accs = [2, -2, 6, -6, 5, -5, 7, -7, 1, -1, 3, -3]
    want = [1, 0, 2, -1, 1, -1, 2, -2, 0, 0, 1, -1]
    assert [rq(a, 0.25) for a in accs] == want
    # the vectorized reference agrees
    m, s = quantize_multiplier(0.25)
    got = ref.requantize(np.array([accs], np.int32), np.array([m]), np.array([s]), 0, -128, 127,
                         None, np.int8)
    assert got.tolist() == [want]


def test_kernels_round_ties_toward_positive_infinity(isa):
    accs = np.array([3, -3, 1, -1, 5, -5, 0, 2 ** 20 + 1, -(2 ** 20) - 1, 255, -255, 253, -253])
    m, s = quantize_multiplier(0.5)
    got = kernel_requantize(isa, accs, m, s, out_dtype="int8", qmin=-128, qmax=127)
    want = np.clip([(int(a) + 1) // 2 for a in accs], -128, 127)  # floor(a/2 + 1/2)
    np.testing.assert_array_equal(got, want.astype(np.int8))


@pytest.mark.parametrize("k", range(0, 33))
def test_exact_power_of_two_scales(k):
    """Scale 2^-k: multiplier 2^30, and requantize is an arithmetic right shift by k with
    ties toward +infinity, i.e. (acc + 2^(k-1)) >> k (acc itself for k = 0)."""
    mult, shift = quantize_multiplier(2.0 ** -k)
    assert mult == 2 ** 30
    assert shift == 30 + k
    rng = np.random.default_rng(1000 + k)
    accs = np.concatenate([rng.integers(I32_MIN, I32_MAX, 200, dtype=np.int64, endpoint=True),
                           [I32_MIN, I32_MAX, 0, 1, -1],
                           # exact ties (odd multiples of 2^(k-1)) and their neighbours
                           (rng.integers(-2000, 2000, 30) * 2 + 1) * (1 << max(k - 1, 0)),
                           [(1 << k) * 3 + (1 << max(k - 1, 0)) - 1]])
    accs = np.clip(accs, I32_MIN, I32_MAX)
    for a in accs.tolist():
        want = a if k == 0 else (a + (1 << (k - 1))) >> k
        assert ref.requantize_scalar(a, mult, shift, 0, *NO_CLAMP) == want, a
    got = ref.requantize(accs.astype(np.int32)[None, :], np.array([mult]), np.array([shift]), 0,
                         I32_MIN, I32_MAX, None, np.int64)[0]
    want = accs if k == 0 else (accs + (1 << (k - 1))) >> k
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("j", [1, 5, 29])
def test_power_of_two_upscales_are_exact(j):
    mult, shift = quantize_multiplier(2.0 ** j)
    assert (mult, shift) == (2 ** 30, 30 - j)
    for a in (0, 1, -1, 12345, -12345, 3, -3):
        assert ref.requantize_scalar(a, mult, shift, 0, *NO_CLAMP) == a * 2 ** j


def test_kernels_power_of_two_scales(isa):
    rng = np.random.default_rng(7)
    v = rng.integers(-40000, 40000, 64)
    v[:8] = [1, -1, 2, -2, 3, -3, 128 * 3 + 64, -(128 * 3 + 64)]  # ties for k = 7
    for k in (1, 7, 9):
        m, s = quantize_multiplier(2.0 ** -k)
        got = kernel_requantize(isa, v, m, s, out_dtype="int8")
        want = np.clip((v + (1 << (k - 1))) >> k, -128, 127).astype(np.int8)
        np.testing.assert_array_equal(got, want, err_msg=f"k={k}")


# --- saturation ----------------------------------------------------------------------------

def test_saturation_at_qmax():
    m, s = quantize_multiplier(1.0)
    assert ref.requantize_scalar(127, m, s, 0, -128, 127) == 127
    assert ref.requantize_scalar(128, m, s, 0, -128, 127) == 127
    assert ref.requantize_scalar(I32_MAX, m, s, 0, -128, 127) == 127
    assert ref.requantize_scalar(10 ** 6, m, s, 0, 0, 255) == 255
    assert ref.requantize_scalar(50, m, s, 0, -128, 40) == 40     # custom qmax
    assert ref.requantize_scalar(40, m, s, 0, -128, 40) == 40
    assert ref.requantize_scalar(39, m, s, 0, -128, 40) == 39
    # rounding happens before the clamp: 253.5 -> 254 fits, 254.5 -> 255 clamps to 254
    m2, s2 = quantize_multiplier(0.5)
    assert ref.requantize_scalar(507, m2, s2, 0, 0, 254) == 254
    assert ref.requantize_scalar(509, m2, s2, 0, 0, 254) == 254
    assert ref.requantize_scalar(505, m2, s2, 0, 0, 254) == 253
    got = ref.requantize(np.array([[126, 127, 128, I32_MAX]], np.int32), np.array([m]),
                         np.array([s]), 0, -128, 127, None, np.int8)
    assert got.tolist() == [[126, 127, 127, 127]]


def test_saturation_at_qmin():
    m, s = quantize_multiplier(1.0)
    assert ref.requantize_scalar(-128, m, s, 0, -128, 127) == -128
    assert ref.requantize_scalar(-129, m, s, 0, -128, 127) == -128
    assert ref.requantize_scalar(I32_MIN, m, s, 0, -128, 127) == -128
    assert ref.requantize_scalar(-1, m, s, 0, 0, 255) == 0
    assert ref.requantize_scalar(-50, m, s, 0, -40, 127) == -40   # custom qmin
    assert ref.requantize_scalar(-40, m, s, 0, -40, 127) == -40
    assert ref.requantize_scalar(-39, m, s, 0, -40, 127) == -39
    got = ref.requantize(np.array([[-127, -128, -129, I32_MIN]], np.int32), np.array([m]),
                         np.array([s]), 0, -128, 127, None, np.int8)
    assert got.tolist() == [[-127, -128, -128, -128]]


def test_kernels_saturate_at_qmin_and_qmax(isa):
    m, s = quantize_multiplier(1.0)
    v = np.array([I32_MIN, -129, -128, -127, -41, -40, -39, 0, 39, 40, 41, 126, 127, 128, I32_MAX])
    got = kernel_requantize(isa, v, m, s, out_dtype="int8")
    np.testing.assert_array_equal(got, np.clip(v, -128, 127).astype(np.int8))
    got = kernel_requantize(isa, v, m, s, out_dtype="int8", qmin=-40, qmax=40)
    np.testing.assert_array_equal(got, np.clip(v, -40, 40).astype(np.int8))
    got = kernel_requantize(isa, v, m, s, out_dtype="uint8")
    np.testing.assert_array_equal(got, np.clip(v, 0, 255).astype(np.uint8))
    got = kernel_requantize(isa, v, m, s, out_dtype="uint8", zero_point=128, qmin=1, qmax=254)
    np.testing.assert_array_equal(got, np.clip(v + 128, 1, 254).astype(np.uint8))


# --- zero points ---------------------------------------------------------------------------

@pytest.mark.parametrize("zp", [-128, 127])
def test_zero_point_at_int8_limits(zp, raises_naming):
    m, s = quantize_multiplier(1.0)
    for r in (-300, -1, 0, 1, 127, 255, 256, 10 ** 6):
        want = min(max(r + zp, -128), 127)
        assert ref.requantize_scalar(r, m, s, zp, -128, 127) == want
    ep = Requantize.from_scale(1.0, zero_point=zp, out_dtype="int8")
    assert ep.zero_point == zp
    with raises_naming(ValueError, "zero_point"):
        Requantize.from_scale(1.0, zero_point=zp + (1 if zp > 0 else -1), out_dtype="int8")


@pytest.mark.parametrize("zp", [0, 255])
def test_zero_point_at_uint8_limits(zp, raises_naming):
    m, s = quantize_multiplier(1.0)
    for r in (-300, -256, -255, -1, 0, 1, 255, 256):
        want = min(max(r + zp, 0), 255)
        assert ref.requantize_scalar(r, m, s, zp, 0, 255) == want
    ep = Requantize.from_scale(1.0, zero_point=zp, out_dtype="uint8")
    assert ep.zero_point == zp and (ep.qmin, ep.qmax) == (0, 255)
    with raises_naming(ValueError, "zero_point"):
        Requantize.from_scale(1.0, zero_point=zp + (1 if zp > 0 else -1), out_dtype="uint8")


@pytest.mark.parametrize("out_dtype, zp", [("int8", -128), ("int8", 127), ("uint8", 0),
                                           ("uint8", 255)])
def test_kernels_zero_point_limits(isa, out_dtype, zp):
    m, s = quantize_multiplier(0.5)
    v = np.array([I32_MIN, -511, -510, -257, -256, -255, -3, -1, 0, 1, 3, 255, 256, 509, 510,
                  I32_MAX])
    lo, hi = (-128, 127) if out_dtype == "int8" else (0, 255)
    got = kernel_requantize(isa, v, m, s, zero_point=zp, out_dtype=out_dtype)
    want = [ref.requantize_scalar(int(x), m, s, zp, lo, hi) for x in v]
    np.testing.assert_array_equal(got, np.array(want, dtype=out_dtype))


# --- bias ----------------------------------------------------------------------------------

def test_bias_add_saturates_int32():
    m, s = quantize_multiplier(0.5)
    # without saturation these would give 2^30 + 5 and -2^30 - 5
    assert ref.requantize_scalar(I32_MAX, m, s, 0, *NO_CLAMP, bias=10) == 2 ** 30
    assert ref.requantize_scalar(I32_MIN, m, s, 0, *NO_CLAMP, bias=-10) == -(2 ** 30)
    assert ref.requantize_scalar(10, m, s, 0, *NO_CLAMP, bias=I32_MAX) == 2 ** 30
    assert ref.requantize_scalar(-10, m, s, 0, *NO_CLAMP, bias=I32_MIN) == -(2 ** 30)
    # not saturated when the sum fits
    assert ref.requantize_scalar(I32_MAX, m, s, 0, *NO_CLAMP, bias=-10) == (I32_MAX - 10 + 1) // 2
    # vectorized: int32 acc + int32 bias past the int32 range
    acc = np.array([[I32_MAX, I32_MIN, I32_MAX - 3, 100]], np.int32)
    bias = np.array([5, -5, 2, I32_MAX], np.int32)
    got = ref.requantize(acc, np.full(4, m), np.full(4, s), 0, I32_MIN, I32_MAX, bias, np.int64)
    assert got.tolist() == [[2 ** 30, -(2 ** 30), 2 ** 30 - 1, 2 ** 30]]


def test_kernels_bias_add_saturates_int32(isa):
    """acc = 127 * 127 per entry; bias at the int32 limits must saturate, not wrap."""
    n = 6
    wp = pack_weights(np.full((1, n), 127, np.int8))
    a = np.array([[127], [-127]], np.int8)  # acc = +16129 (row 0), -16129 (row 1)
    bias = np.array([I32_MAX, I32_MIN, I32_MAX - 16129, I32_MIN + 16129, 0, -5], np.int64)
    m, s = quantize_multiplier(2.0 ** -24)   # I32_MAX * 2^-24 ~ 128: near the int8 edge
    ep = Requantize(multiplier=m, shift=s, bias=bias, out_dtype="int8")
    got = gemm_int8(a, wp, epilogue=ep, isa=isa)
    acc = np.array([[16129] * n, [-16129] * n])
    want = [[ref.requantize_scalar(int(acc[i, j]), m, s, 0, -128, 127, int(bias[j]))
             for j in range(n)] for i in range(2)]
    np.testing.assert_array_equal(got, np.array(want, np.int8))
    # saturation matters here: a wrapped I32_MAX + 16129 would be very negative
    assert got[0, 0] == 127 and got[1, 1] == -128


# --- quantize_multiplier -------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(scale=st.floats(min_value=2.0 ** -32, max_value=2.0 ** 30 - 1, allow_nan=False,
                       allow_infinity=False)
       | st.sampled_from([2.0 ** -32, 1.0, 0.5, 2.0 ** 29, 2.0 ** 30 - 1, 1 / 3, 0.1]))
def test_quantize_multiplier_range_and_precision(scale):
    m, s = quantize_multiplier(scale)
    assert isinstance(m, int) and isinstance(s, int)
    assert 2 ** 30 <= m < 2 ** 31
    assert 1 <= s <= 62
    assert abs(m * 2.0 ** -s - scale) / scale < 2.0 ** -30
    # exact rational check too
    from fractions import Fraction
    assert abs(Fraction(m, 2 ** s) - Fraction(scale)) / Fraction(scale) < Fraction(1, 2 ** 30)


def test_quantize_multiplier_boundaries():
    assert quantize_multiplier(2.0 ** -32) == (2 ** 30, 62)
    assert quantize_multiplier(2.0 ** 30 - 1) == (2 ** 31 - 2, 1)
    # a fraction that rounds up to 2^31 becomes 2^30 with one less shift
    m, s = quantize_multiplier(math.nextafter(1.0, 0))
    assert (m, s) == (2 ** 30, 30)
    assert quantize_multiplier(np.float32(0.5)) == (2 ** 30, 31)
    assert quantize_multiplier(1) == (2 ** 30, 30)


@pytest.mark.parametrize("scale", [2.0 ** 30 - 0.5, 2.0 ** 30 - 0.25, math.nextafter(2.0 ** 30, 0)],
                         ids=["2^30-0.5", "2^30-0.25", "nextbelow-2^30"])
def test_quantize_multiplier_accepts_whole_documented_range(scale):
    """The docstring and the error message promise [2^-32, 2^30): every scale below 2^30
    must give 2^30 <= m < 2^31, 1 <= shift <= 62 within 2^-30 relative error."""
    m, s = quantize_multiplier(scale)
    assert 2 ** 30 <= m < 2 ** 31 and 1 <= s <= 62
    assert abs(m * 2.0 ** -s - scale) / scale < 2.0 ** -30


@pytest.mark.parametrize("scale", [0, 0.0, -0.5, -1e-6, float("nan"), float("inf"),
                                   float("-inf"), 2.0 ** 30, 1e20, 2.0 ** -33, 1e-300, 5e-324],
                         ids=["0", "0.0", "-0.5", "-1e-6", "nan", "inf", "-inf", "2^30", "1e20",
                              "2^-33", "1e-300", "denormal"])
def test_quantize_multiplier_rejects(scale):
    with pytest.raises(ValueError, match="scale"):
        quantize_multiplier(scale)


# --- vectorized reference == scalar definition ---------------------------------------------

@st.composite
def requant_case(draw):
    m = draw(st.integers(1, 5))
    n = draw(st.integers(1, 8))
    out_dtype = draw(st.sampled_from(["int8", "uint8"]))
    lo, hi = (-128, 127) if out_dtype == "int8" else (0, 255)
    i32 = st.integers(I32_MIN, I32_MAX)
    acc = np.array(draw(st.lists(st.lists(i32, min_size=n, max_size=n), min_size=m,
                                 max_size=m)), dtype=np.int32)
    per_channel = draw(st.booleans())
    nv = n if per_channel else 1
    mult = np.array(draw(st.lists(st.integers(1, 2 ** 31 - 1), min_size=nv, max_size=nv)))
    shift = np.array(draw(st.lists(st.integers(1, 62), min_size=nv, max_size=nv)))
    bias = draw(st.none() | st.lists(i32, min_size=n, max_size=n).map(
        lambda b: np.array(b, np.int32)))
    zp = draw(st.integers(lo, hi))
    qmin = draw(st.integers(lo, hi))
    qmax = draw(st.integers(qmin, hi))
    return acc, mult, shift, bias, zp, qmin, qmax, out_dtype


@settings(max_examples=150, deadline=None)
@given(case=requant_case())
def test_vectorized_requantize_equals_scalar(case):
    acc, mult, shift, bias, zp, qmin, qmax, out_dtype = case
    m, n = acc.shape
    mult_n = np.broadcast_to(mult, (n,))
    shift_n = np.broadcast_to(shift, (n,))
    got = ref.requantize(acc, mult_n, shift_n, zp, qmin, qmax, bias, out_dtype)
    assert got.dtype == np.dtype(out_dtype) and got.shape == (m, n)
    for i in range(m):
        for j in range(n):
            want = ref.requantize_scalar(int(acc[i, j]), int(mult_n[j]), int(shift_n[j]), zp,
                                         qmin, qmax, 0 if bias is None else int(bias[j]))
            assert int(got[i, j]) == want, (i, j)
    # and through the epilogue descriptor and prepare()
    ep = Requantize(multiplier=mult, shift=shift, zero_point=zp, qmin=qmin, qmax=qmax,
                    bias=bias, out_dtype=out_dtype)
    np.testing.assert_array_equal(ref.apply_epilogue(acc, prepare(ep, m, n)), got)


@settings(max_examples=30, deadline=None)
@given(case=requant_case())
def test_kernels_requantize_equals_scalar(isa, case):
    """Every kernel's fused requantize on the drawn values (row 0 of acc fed through bias)."""
    acc, mult, shift, _, zp, qmin, qmax, out_dtype = case
    v = acc[0].astype(np.int64)
    n = v.size
    got = kernel_requantize(isa, v, mult, shift, zero_point=zp, out_dtype=out_dtype,
                            qmin=qmin, qmax=qmax)
    mult_n, shift_n = np.broadcast_to(mult, (n,)), np.broadcast_to(shift, (n,))
    want = [ref.requantize_scalar(int(v[j]), int(mult_n[j]), int(shift_n[j]), zp, qmin, qmax)
            for j in range(n)]
    np.testing.assert_array_equal(got, np.array(want, dtype=out_dtype))


# --- descriptors ---------------------------------------------------------------------------

def test_requantize_from_scale_fields():
    ep = Requantize.from_scale([0.5, 0.25, 3.0], zero_point=3, bias=[1, 2, 3])
    assert ep.multiplier.dtype == np.int32 and ep.shift.dtype == np.int32
    assert ep.multiplier.tolist() == [2 ** 30, 2 ** 30, 3 * 2 ** 29]
    assert ep.shift.tolist() == [31, 32, 29]
    assert ep.bias.dtype == np.int32 and ep.bias.tolist() == [1, 2, 3]
    assert (ep.zero_point, ep.qmin, ep.qmax, ep.out_dtype) == (3, -128, 127, "int8")
    assert ep.np_out_dtype == np.int8
    u = Requantize.from_scale(0.1, out_dtype="uint8")
    assert (u.qmin, u.qmax, u.np_out_dtype) == (0, 255, np.uint8)
    assert u.multiplier.shape == (1,) and u.bias is None
    p = prepare(Requantize.from_scale(0.1, bias=7), 2, 5)
    assert p.kind == 1 and p.multiplier.shape == (5,) and p.bias.tolist() == [7] * 5


def test_dequantize_fields():
    d = Dequantize(w_scale=[0.5, 0.25], a_scale=2.0, bias=[1, 2])
    assert d.w_scale.dtype == np.float32 and d.a_scale.dtype == np.float32
    assert d.bias.dtype == np.float32 and d.np_out_dtype == np.float32
    p = prepare(d, 3, 2)
    assert p.kind == 2 and p.a_scale.tolist() == [2.0] * 3 and p.w_scale.tolist() == [0.5, 0.25]


def test_dequantize_reference_is_float32_in_order():
    acc = np.array([[3, -7], [2 ** 24 + 1, 5]], np.int32)
    a_scale = np.array([0.1, 3.0], np.float32)
    w_scale = np.array([0.7, 1e-3], np.float32)
    bias = np.array([0.25, -1.5], np.float32)
    got = ref.dequantize(acc, a_scale, w_scale, bias)
    assert got.dtype == np.float32
    for i in range(2):
        for j in range(2):
            s = np.float32(a_scale[i] * w_scale[j])
            want = np.float32(np.float32(acc[i, j]) * s) + bias[j]
            assert got[i, j] == want


@pytest.mark.parametrize("kwargs, field", [
    (dict(out_dtype="int16"), "out_dtype"),
    (dict(out_dtype="float32"), "out_dtype"),
    (dict(qmin=10, qmax=5), "qmin"),
    (dict(qmin=-129), "qmin"),
    (dict(qmax=128), "qmax"),
    (dict(out_dtype="uint8", qmin=-1), "qmin"),
    (dict(out_dtype="uint8", qmax=256), "qmax"),
    (dict(zero_point=128), "zero_point"),
    (dict(zero_point=-129), "zero_point"),
    (dict(out_dtype="uint8", zero_point=-1), "zero_point"),
    (dict(out_dtype="uint8", zero_point=256), "zero_point"),
    (dict(multiplier=0), "multiplier"),
    (dict(multiplier=-5), "multiplier"),
    (dict(multiplier=2 ** 31), "multiplier"),
    (dict(multiplier=[2 ** 30, 0]), "multiplier"),
    (dict(multiplier=[[2 ** 30]]), "multiplier"),
    (dict(multiplier=[], shift=[]), "multiplier"),
    (dict(shift=0), "shift"),
    (dict(shift=63), "shift"),
    (dict(shift=[31, -1]), "shift"),
    (dict(bias=2 ** 31), "bias"),
    (dict(bias=[0, -(2 ** 31) - 1]), "bias"),
    (dict(bias=[[1, 2]]), "bias"),
], ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={v[k]}" for k in v))
def test_requantize_validation_names_field(kwargs, field, raises_naming):
    args = dict(multiplier=2 ** 30, shift=31)
    args.update(kwargs)
    with raises_naming(ValueError, field):
        Requantize(**args)


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), -1.0, 0.0, [0.5, float("nan")]],
                         ids=["nan", "inf", "neg", "zero", "vec-nan"])
def test_requantize_from_scale_rejects_bad_scales(scale):
    with pytest.raises(ValueError, match="scale"):
        Requantize.from_scale(scale)


@pytest.mark.parametrize("kwargs, field", [
    (dict(w_scale=float("nan")), "w_scale"),
    (dict(w_scale=[1.0, float("inf")]), "w_scale"),
    (dict(w_scale=1.0, a_scale=float("-inf")), "a_scale"),
    (dict(w_scale=1.0, a_scale=[1.0, float("nan")]), "a_scale"),
    (dict(w_scale=[[1.0]]), "w_scale"),
    (dict(w_scale=1.0, a_scale=np.ones((2, 2))), "a_scale"),
    (dict(w_scale=1.0, bias=np.ones((2, 2))), "bias"),
], ids=["w-nan", "w-inf", "a-inf", "a-nan", "w-2d", "a-2d", "bias-2d"])
def test_dequantize_validation_names_field(kwargs, field, raises_naming):
    with raises_naming(ValueError, field):
        Dequantize(**kwargs)


def test_prepare_rejects_wrong_lengths(raises_naming):
    with raises_naming(ValueError, "epilogue.multiplier"):
        prepare(Requantize(multiplier=[2 ** 30] * 3, shift=31), 2, 4)
    with raises_naming(ValueError, "epilogue.shift"):
        prepare(Requantize(multiplier=2 ** 30, shift=[31] * 3), 2, 4)
    with raises_naming(ValueError, "epilogue.bias"):
        prepare(Requantize(multiplier=2 ** 30, shift=31, bias=[1, 2]), 2, 4)
    with raises_naming(ValueError, "epilogue.w_scale"):
        prepare(Dequantize(w_scale=[1.0, 2.0]), 2, 4)
    with raises_naming(ValueError, "epilogue.a_scale"):
        prepare(Dequantize(w_scale=1.0, a_scale=[1.0, 2.0, 3.0]), 2, 4)
    with raises_naming(ValueError, "epilogue.bias"):
        prepare(Dequantize(w_scale=1.0, bias=[1.0, 2.0, 3.0]), 2, 4)
    with raises_naming(TypeError, "epilogue"):
        prepare("requantize", 2, 4)
