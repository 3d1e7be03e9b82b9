"""gemm_int8 against ref.gemm_int8, bit-exactly, on every usable ISA.

Microkernel blocking (csrc/gemm_int8_frame.inc): K runs in quads of 4, N in panels of 64,
M in tiles of MR = 6 (avx512_vnni) or 4 (the others). The named cases sit on and around
those edges; hypothesis covers shapes in between.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.kernels import (Dequantize, PackedWeights, Requantize, gemm_int8, max_safe_k,
                            pack_weights, ref)
from lowbit.kernels.epilogue import prepare
from lowbit.kernels.formats import aligned_empty

I32_MIN, I32_MAX = -(2 ** 31), 2 ** 31 - 1
ACT_DTYPES = {"s8": np.int8, "u8": np.uint8}

# (activation format, a_zero_point): zero and nonzero zero points for both dtypes
ACT_ZP = [("s8", 0), ("s8", -37), ("u8", 0), ("u8", 131)]
ACT_ZP_IDS = [f"{a}-zp{z}" for a, z in ACT_ZP]


def rand_act(rng, m, k, dtype):
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, size=(m, k), dtype=dtype)


def rand_w(rng, k, n):
    return rng.integers(-128, 128, size=(k, n), dtype=np.int8)


def want_of(a, w, zp=0):
    return ref.gemm_int8(np.ascontiguousarray(a), w, zp)


# --- named edge cases ----------------------------------------------------------------------

EDGE_CASES = [  # id, M, K, N
    ("m_one", 1, 37, 70),
    ("m_one-k_big", 1, 515, 130),
    ("k_one", 7, 1, 70),
    ("k_lt_block", 5, 3, 33),
    ("k_eq_block-K4", 6, 4, 64),
    ("k_eq_block-K64", 12, 64, 128),
    ("k_gt_block-K5", 4, 5, 20),
    ("k_gt_block-K67", 9, 67, 100),
    ("n_tail-N65", 6, 16, 65),
    ("n_tail-N130", 8, 20, 130),
    ("n_tail-N1", 5, 9, 1),
    ("m_tail-M7", 7, 33, 70),
    ("m_tail-M13", 13, 33, 70),
    ("m_tail-M5", 5, 33, 70),
    ("m_eq_tile-M24", 24, 10, 64),
    # big enough for the thread pool (M N K >= 2^18) and parallel A packing (M K >= 2^16)
    ("pool", 67, 1030, 200),
    ("pool-many_panels", 31, 300, 1000),
    ("pool-m_one", 1, 4099, 520),
    ("pool-n_one", 2000, 301, 1),
]


@pytest.mark.parametrize("act, zp", ACT_ZP, ids=ACT_ZP_IDS)
@pytest.mark.parametrize("case, m, k, n", EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_edge_shapes(isa, case, m, k, n, act, zp, assert_exact):
    rng = np.random.default_rng([m, k, n, ACT_ZP.index((act, zp))])
    a = rand_act(rng, m, k, ACT_DTYPES[act])
    w = rand_w(rng, k, n)
    got = gemm_int8(a, pack_weights(w), a_zero_point=zp, isa=isa)
    assert got.dtype == np.int32 and got.shape == (m, n) and got.flags.c_contiguous
    assert_exact(got, want_of(a, w, zp))


# --- extreme values ------------------------------------------------------------------------

_PACKED: dict = {}


def _const_packed(k: int, n: int, value: int) -> PackedWeights:
    key = (k, n, value)
    if key not in _PACKED:
        _PACKED[key] = pack_weights(np.full((k, n), value, np.int8))
    return _PACKED[key]


EXTREME = [  # act, zp, activation value, weight value
    ("s8", 0, -128, -128), ("s8", 0, -128, 127), ("s8", 0, 127, -128), ("s8", 0, 127, 127),
    ("u8", 0, 255, -128), ("u8", 0, 255, 127), ("u8", 0, 0, -128),
    ("s8", 127, -128, -128), ("s8", -128, 127, 127), ("u8", 255, 0, -128), ("u8", 128, 255, 127),
]


@pytest.mark.parametrize("act, zp, av, wv", EXTREME,
                         ids=[f"{a}-zp{z}-a{x}-w{y}" for a, z, x, y in EXTREME])
@pytest.mark.parametrize("k_kind", ["mid", "max_safe"])
def test_extreme_values(isa, act, zp, av, wv, k_kind, assert_exact):
    """Constant extreme inputs; K up to the largest K the static guard allows, where the
    exact result sits next to the int32 limit (and VNNI's biased sums wrap internally)."""
    k = 1027 if k_kind == "mid" else max_safe_k(act, zp)
    m, n = 7, 65
    a = np.full((m, k), av, ACT_DTYPES[act])
    got = gemm_int8(a, _const_packed(k, n, wv), a_zero_point=zp, isa=isa)
    value = k * (av - zp) * wv
    assert I32_MIN <= value <= I32_MAX
    assert_exact(got, np.full((m, n), value, np.int32))


def test_extreme_values_random_signs(isa, assert_exact):
    """Random mixes of the extreme values -128 / 127 (and 0 / 255) with a biggish K."""
    rng = np.random.default_rng(42)
    m, k, n = 9, 2051, 70
    for act, vals in (("s8", [-128, 127]), ("u8", [0, 255])):
        a = rng.choice(vals, size=(m, k)).astype(ACT_DTYPES[act])
        w = rng.choice([-128, 127], size=(k, n)).astype(np.int8)
        assert_exact(gemm_int8(a, pack_weights(w), isa=isa), want_of(a, w))


def test_max_safe_k_values():
    assert max_safe_k("s8") == 131071 == 2 ** 17 - 1
    assert max_safe_k("u8") == 65793
    assert max_safe_k("u8", 128) == I32_MAX // (128 * 128)
    assert max_safe_k("s8", 127) == I32_MAX // (255 * 128)


# --- strided and non-contiguous activations ------------------------------------------------

def _strided_views(rng, m, k, dtype):
    big = rand_act(rng, 2 * m, k + 13, dtype)
    wide = rand_act(rng, m, 2 * k, dtype)
    tall = rand_act(rng, k, m, dtype)
    return {
        "row_strided": big[::2, :k],
        "row_and_col_offset": big[1::2, 5:5 + k],
        "inner_stride_2": wide[:, ::2],
        "transposed": tall.T,
        "fortran": np.asfortranarray(rand_act(rng, m, k, dtype)),
        "reversed_rows": big[:m, :k][::-1],
        "reversed_cols": big[:m, :k][:, ::-1],
        "broadcast_row": np.broadcast_to(big[0, :k], (m, k)),
    }


VIEW_NAMES = list(_strided_views(np.random.default_rng(0), 2, 3, np.int8))


@pytest.mark.parametrize("view", VIEW_NAMES)
@pytest.mark.parametrize("act, zp", ACT_ZP, ids=ACT_ZP_IDS)
def test_strided(isa, view, act, zp, assert_exact):
    rng = np.random.default_rng(VIEW_NAMES.index(view) + 100 * ACT_ZP.index((act, zp)))
    m, k, n = 13, 37, 70
    a = _strided_views(rng, m, k, ACT_DTYPES[act])[view]
    assert a.shape == (m, k)
    a_copy = a.copy()
    w = rand_w(rng, k, n)
    got = gemm_int8(a, pack_weights(w), a_zero_point=zp, isa=isa)
    assert_exact(got, want_of(a_copy, w, zp))
    np.testing.assert_array_equal(a, a_copy)  # the input is not modified


def test_strided_large_pool(isa, assert_exact):
    """Row-strided A on the threaded path."""
    rng = np.random.default_rng(5)
    big = rand_act(rng, 2 * 80, 1100, np.int8)
    a = big[::2, 7:7 + 1030]
    w = rand_w(rng, 1030, 130)
    assert_exact(gemm_int8(a, pack_weights(w), isa=isa), want_of(a, w))


# --- int32 overflow guard ------------------------------------------------------------------

K_OVER = 2 ** 17 + 8


def test_k_overflow_guard(isa, assert_exact):
    # all -128 x -128 at K = 2^17 + 8: the result cannot fit int32 -> refuse
    a = np.full((1, K_OVER), -128, np.int8)
    with pytest.raises(ValueError, match="overflow"):
        gemm_int8(a, _const_packed(K_OVER, 2, -128), isa=isa)
    # same K with small values: provably safe from the data -> run, exact
    rng = np.random.default_rng(17)
    a_small = rng.integers(-2, 3, size=(2, K_OVER), dtype=np.int8)
    w_small = rng.integers(-2, 3, size=(K_OVER, 3), dtype=np.int8)
    got = gemm_int8(a_small, pack_weights(w_small), isa=isa)
    assert_exact(got, want_of(a_small, w_small))
    # K = 131071 = max_safe_k: all -128 x -128 runs and equals 131071 * 16384
    k = 131071
    got = gemm_int8(np.full((1, k), -128, np.int8), _const_packed(k, 3, -128), isa=isa)
    assert_exact(got, np.full((1, 3), 131071 * 16384, np.int32))


def test_k_overflow_guard_uint8(isa):
    k = max_safe_k("u8") + 1
    a = np.full((1, k), 255, np.uint8)
    with pytest.raises(ValueError, match="overflow"):
        gemm_int8(a, _const_packed(k, 1, -128), isa=isa)
    # a zero point that brings |a - zp| down makes the same call safe
    got = gemm_int8(a, _const_packed(k, 1, -128), a_zero_point=250, isa=isa)
    assert got.tolist() == [[k * 5 * -128]]


def test_k_overflow_guard_zero_point(isa):
    """Zero points count: a = 0 with zp = 255 is |a - zp| = 255, like a = 255 with zp = 0."""
    k = max_safe_k("u8") + 1
    with pytest.raises(ValueError, match="overflow"):
        gemm_int8(np.zeros((1, k), np.uint8), _const_packed(k, 1, -128), a_zero_point=255,
                  isa=isa)


# --- hypothesis: random shapes, dtypes, zero points ----------------------------------------

@st.composite
def gemm_case(draw):
    m = draw(st.integers(1, 40))
    n = draw(st.integers(1, 200))
    k = draw(st.integers(1, 300))
    act = draw(st.sampled_from(["s8", "u8"]))
    lo, hi = (-128, 127) if act == "s8" else (0, 255)
    zp = draw(st.one_of(st.just(0), st.integers(lo, hi)))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    return m, n, k, act, zp, seed


@settings(max_examples=35, deadline=None)
@given(case=gemm_case())
def test_random_shapes(isa, case):
    m, n, k, act, zp, seed = case
    rng = np.random.default_rng(seed)
    a = rand_act(rng, m, k, ACT_DTYPES[act])
    w = rand_w(rng, k, n)
    got = gemm_int8(a, pack_weights(w), a_zero_point=zp, isa=isa)
    np.testing.assert_array_equal(got, want_of(a, w, zp))
    assert got.dtype == np.int32


# --- epilogues -----------------------------------------------------------------------------

EP_SHAPES = [(13, 70, 130), (64, 300, 192)]  # (M, K, N): tails; threaded


def _requant_variants(rng, n):
    """name -> Requantize; scales chosen so outputs span the range and some saturate."""
    pc = np.exp(rng.uniform(np.log(1e-5), np.log(3e-3), n))
    pc[: n // 4] = 2.0 ** -rng.integers(6, 12, n // 4)   # powers of two: exact ties
    pc[-1] = 1.0                                          # saturates nearly everything
    bias = rng.integers(-200000, 200000, n).astype(np.int32)
    bias[0], bias[1] = I32_MAX, I32_MIN                   # acc + bias saturates int32
    return {
        "per_tensor": Requantize.from_scale(1e-3),
        "per_tensor_pow2_zp": Requantize.from_scale(2.0 ** -9, zero_point=-5),
        "per_channel_bias": Requantize.from_scale(pc, zero_point=3, bias=bias),
        "per_channel_bias_clamp": Requantize.from_scale(pc, zero_point=-128, bias=bias,
                                                        qmin=-100, qmax=100),
        "uint8": Requantize.from_scale(pc, zero_point=128, bias=bias, out_dtype="uint8"),
        "uint8_clamp_zp255": Requantize.from_scale(5e-3, zero_point=255, out_dtype="uint8",
                                                   qmin=10, qmax=200),
        "uint8_zp0_scalar_bias": Requantize.from_scale(5e-4, zero_point=0, bias=-77,
                                                       out_dtype="uint8"),
        # per-channel multipliers with a per-tensor shift, and the reverse
        "mixed_vec_mult_scalar_shift": Requantize(
            multiplier=rng.integers(2 ** 30, 2 ** 31, n), shift=40, zero_point=-7,
            bias=rng.integers(-1000, 1000, n)),
        "mixed_scalar_mult_vec_shift": Requantize(
            multiplier=1518500250, shift=rng.integers(38, 42, n), zero_point=9,
            out_dtype="uint8", qmin=2, qmax=250),
    }


REQUANT_NAMES = list(_requant_variants(np.random.default_rng(0), 8))


@pytest.mark.parametrize("act, zp", [("s8", 0), ("u8", 131)], ids=["s8-zp0", "u8-zp131"])
@pytest.mark.parametrize("shape", EP_SHAPES, ids=[f"M{m}-K{k}-N{n}" for m, k, n in EP_SHAPES])
@pytest.mark.parametrize("variant", REQUANT_NAMES)
def test_requantize_epilogue(isa, variant, shape, act, zp, assert_exact):
    m, k, n = shape
    rng = np.random.default_rng(REQUANT_NAMES.index(variant) * 7 + m)
    a = rand_act(rng, m, k, ACT_DTYPES[act])
    w = rand_w(rng, k, n)
    ep = _requant_variants(rng, n)[variant]
    got = gemm_int8(a, pack_weights(w), a_zero_point=zp, epilogue=ep, isa=isa)
    want = ref.apply_epilogue(want_of(a, w, zp), prepare(ep, m, n))
    assert got.dtype == np.dtype(ep.out_dtype)
    assert_exact(got, want)
    # the test is not vacuous: outputs vary, and some clamp at qmin/qmax
    assert len(np.unique(got)) > 3


@settings(max_examples=25, deadline=None)
@given(case=gemm_case(), data=st.data())
def test_requantize_epilogue_random(isa, case, data):
    m, n, k, act, zp, seed = case
    rng = np.random.default_rng(seed)
    a = rand_act(rng, m, k, ACT_DTYPES[act])
    w = rand_w(rng, k, n)
    out_dtype = data.draw(st.sampled_from(["int8", "uint8"]))
    lo, hi = (-128, 127) if out_dtype == "int8" else (0, 255)
    per_channel = data.draw(st.booleans())
    scale = np.exp(rng.uniform(np.log(1e-6), np.log(1e-1), n if per_channel else 1))
    bias = data.draw(st.none() | st.just(rng.integers(-(2 ** 20), 2 ** 20, n)))
    qmin = data.draw(st.integers(lo, hi))
    qmax = data.draw(st.integers(qmin, hi))
    ep = Requantize.from_scale(scale if per_channel else float(scale[0]),
                               zero_point=data.draw(st.integers(lo, hi)), bias=bias,
                               out_dtype=out_dtype, qmin=qmin, qmax=qmax)
    got = gemm_int8(a, pack_weights(w), a_zero_point=zp, epilogue=ep, isa=isa)
    np.testing.assert_array_equal(got, ref.apply_epilogue(want_of(a, w, zp), prepare(ep, m, n)))
    assert got.dtype == np.dtype(out_dtype)


DEQ_VARIANTS = ["scalar", "w_vec", "w_vec_a_vec", "w_vec_a_vec_bias", "scalar_bias"]


def _dequant(rng, variant, m, n):
    w_s = rng.uniform(1e-4, 1e-2, n).astype(np.float32)
    a_s = rng.uniform(1e-3, 1.0, m).astype(np.float32)
    b = rng.normal(0, 10, n).astype(np.float32)
    return {
        "scalar": Dequantize(w_scale=0.003, a_scale=0.02),
        "w_vec": Dequantize(w_scale=w_s),
        "w_vec_a_vec": Dequantize(w_scale=w_s, a_scale=a_s),
        "w_vec_a_vec_bias": Dequantize(w_scale=w_s, a_scale=a_s, bias=b),
        "scalar_bias": Dequantize(w_scale=0.5, a_scale=0.25, bias=b),
    }[variant]


@pytest.mark.parametrize("act, zp", [("s8", -3), ("u8", 0)], ids=["s8-zp-3", "u8-zp0"])
@pytest.mark.parametrize("shape", EP_SHAPES, ids=[f"M{m}-K{k}-N{n}" for m, k, n in EP_SHAPES])
@pytest.mark.parametrize("variant", DEQ_VARIANTS)
def test_dequantize_epilogue(isa, variant, shape, act, zp):
    m, k, n = shape
    rng = np.random.default_rng(DEQ_VARIANTS.index(variant) + 10 * m)
    a = rand_act(rng, m, k, ACT_DTYPES[act])
    w = rand_w(rng, k, n)
    ep = _dequant(rng, variant, m, n)
    got = gemm_int8(a, pack_weights(w), a_zero_point=zp, epilogue=ep, isa=isa)
    want = ref.apply_epilogue(want_of(a, w, zp), prepare(ep, m, n))
    assert got.dtype == np.float32 and got.shape == (m, n)
    np.testing.assert_allclose(got, want, rtol=ref.FLOAT_RTOL, atol=ref.FLOAT_ATOL)


@pytest.mark.parametrize("act, av, wv", [("s8", 127, 127), ("s8", -128, 127), ("u8", 255, -128)])
def test_dequantize_large_accumulators(isa, act, av, wv):
    """|acc| > 2^24: the int32 -> float32 conversion rounds; every variant must agree."""
    m, k, n = 5, 2053, 70
    a = np.full((m, k), av, ACT_DTYPES[act])
    a[:, ::7] = 1  # not constant, so accumulators are not all equal
    rng = np.random.default_rng(4)
    w = np.full((k, n), wv, np.int8)
    w[rng.integers(0, k, 50), rng.integers(0, n, 50)] = 3
    ep = Dequantize(w_scale=rng.uniform(0.5, 2, n), a_scale=rng.uniform(0.5, 2, m),
                    bias=rng.normal(0, 100, n))
    acc = want_of(a, w)
    assert np.abs(acc).min() > 2 ** 24
    got = gemm_int8(a, pack_weights(w), epilogue=ep, isa=isa)
    want = ref.apply_epilogue(acc, prepare(ep, m, n))
    np.testing.assert_allclose(got, want, rtol=ref.FLOAT_RTOL, atol=ref.FLOAT_ATOL)


# --- out= ----------------------------------------------------------------------------------

def _epilogue_of(kind, n, m):
    return {"int32": None,
            "int8": Requantize.from_scale(1e-3, zero_point=-2),
            "uint8": Requantize.from_scale(np.linspace(5e-4, 2e-3, n), zero_point=100,
                                           out_dtype="uint8"),
            "float32": Dequantize(w_scale=np.linspace(0.1, 0.2, n), a_scale=np.arange(1, m + 1))
            }[kind]


OUT_KINDS = ["int32", "int8", "uint8", "float32"]


@pytest.mark.parametrize("kind", OUT_KINDS)
def test_output_dtype_rule(isa, kind):
    m, k, n = 5, 9, 70
    rng = np.random.default_rng(3)
    a, w = rand_act(rng, m, k, np.int8), rand_w(rng, k, n)
    got = gemm_int8(a, pack_weights(w), epilogue=_epilogue_of(kind, n, m), isa=isa)
    assert got.dtype == np.dtype(kind) and got.shape == (m, n)


@pytest.mark.parametrize("kind", OUT_KINDS)
@pytest.mark.parametrize("where", ["full", "row_slice", "row_col_block"])
@pytest.mark.parametrize("m, k, n", [(7, 37, 70), (40, 500, 150)], ids=["small", "pool"])
def test_out_argument(isa, kind, where, m, k, n, assert_exact):
    rng = np.random.default_rng(OUT_KINDS.index(kind) + m)
    a, w = rand_act(rng, m, k, np.int8), rand_w(rng, k, n)
    ep = _epilogue_of(kind, n, m)
    dtype = np.dtype(kind)
    sentinel = 77
    if where == "full":
        big = np.full((m, n), sentinel, dtype)
        out = big
    elif where == "row_slice":
        big = np.full((m + 5, n), sentinel, dtype)
        out = big[2:2 + m]
    else:
        big = np.full((m + 3, n + 11), sentinel, dtype)
        out = big[1:1 + m, 5:5 + n]
    got = gemm_int8(a, pack_weights(w), epilogue=ep, out=out, isa=isa)
    assert got is out
    want = ref.apply_epilogue(want_of(a, w), prepare(ep, m, n))
    if kind == "float32":
        np.testing.assert_allclose(out, want, rtol=ref.FLOAT_RTOL, atol=ref.FLOAT_ATOL)
    else:
        assert_exact(out, want)
    # nothing outside the target region was touched
    mask = np.ones(big.shape, bool)
    if where == "full":
        mask[:] = False
    elif where == "row_slice":
        mask[2:2 + m] = False
    else:
        mask[1:1 + m, 5:5 + n] = False
    assert np.all(big[mask] == sentinel)


def _out_m1_views(n):
    return {
        "newaxis_of_1d": np.zeros(n, np.int32)[None, :],           # strides (0, 4)
        "transposed_column": np.zeros((n, 1), np.int32).T,          # strides (4, 4)
    }


def _out_n1_views(m):
    return {"transposed_row": np.zeros((1, m), np.int32).T}        # strides (4, 4 m)


@pytest.mark.parametrize("view", list(_out_m1_views(3)) + list(_out_n1_views(3)))
def test_out_c_contiguous_with_size_one_dims(view, assert_exact):
    """numpy calls these C-contiguous (a size-1 dimension's stride is irrelevant), and the
    docstring accepts any C-contiguous ``out``; e.g. ``out=y[None, :]`` for M = 1."""
    rng = np.random.default_rng(12)
    if view in _out_m1_views(3):
        m, n = 1, 70
        out = _out_m1_views(n)[view]
    else:
        m, n = 9, 1
        out = _out_n1_views(m)[view]
    assert out.shape == (m, n) and out.flags.c_contiguous
    a, w = rand_act(rng, m, 33, np.int8), rand_w(rng, 33, n)
    got = gemm_int8(a, pack_weights(w), out=out)  # a wrapper check: the default ISA suffices
    assert got is out
    assert_exact(out, want_of(a, w))


def test_unaligned_out_never_crashes(isa):
    """An int32/float32 ``out`` at an odd address: either rejected (ValueError naming out)
    or written exactly; run in a child so that a fault cannot take down the test run."""
    import subprocess
    import sys
    import textwrap
    code = textwrap.dedent(f"""
        import numpy as np, lowbit.kernels as lk
        from lowbit.kernels import ref
        from lowbit.kernels.epilogue import prepare
        rng = np.random.default_rng(0)
        m, k, n = 37, 300, 517
        a = rng.integers(-128, 128, (m, k), dtype=np.int8)
        w = rng.integers(-128, 128, (k, n), dtype=np.int8)
        wp = lk.pack_weights(w)
        for dt, ep in ((np.int32, None), (np.float32, lk.Dequantize(w_scale=0.5))):
            raw = np.zeros(m * n * 4 + 8, np.uint8)
            out = raw[1:1 + m * n * 4].view(dt).reshape(m, n)
            try:
                lk.gemm_int8(a, wp, out=out, epilogue=ep, isa={isa!r})
            except ValueError as exc:
                assert str(exc).startswith("out"), exc
                continue
            want = ref.apply_epilogue(ref.gemm_int8(a, w), prepare(ep, m, n))
            assert np.array_equal(out, want), dt
        print("OK")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "OK" in proc.stdout, (proc.returncode, proc.stderr[-2000:])


@pytest.mark.parametrize("kind", OUT_KINDS)
def test_m_zero_returns_empty(isa, kind):
    n = 70
    wp = pack_weights(np.ones((9, n), np.int8))
    ep = _epilogue_of(kind, n, 1)
    if kind == "float32":
        ep = Dequantize(w_scale=0.5)
    got = gemm_int8(np.zeros((0, 9), np.int8), wp, epilogue=ep, isa=isa)
    assert got.shape == (0, n) and got.dtype == np.dtype(kind)
    out = np.empty((0, n), np.dtype(kind))
    assert gemm_int8(np.zeros((0, 9), np.uint8), wp, epilogue=ep, out=out, isa=isa) is out


def test_repeated_calls_reuse_packed_weights(isa, assert_exact):
    """One PackedWeights across calls with different M and dtypes; W is not modified."""
    rng = np.random.default_rng(8)
    w = rand_w(rng, 77, 129)
    wp = pack_weights(w)
    data0 = wp.data.copy()
    for m in (1, 6, 7, 33, 2):
        for dt in (np.int8, np.uint8):
            a = rand_act(rng, m, 77, dt)
            assert_exact(gemm_int8(a, wp, isa=isa), want_of(a, w))
    np.testing.assert_array_equal(wp.data, data0)


def test_default_isa_matches_ref(assert_exact):
    rng = np.random.default_rng(9)
    a, w = rand_act(rng, 11, 101, np.uint8), rand_w(rng, 101, 67)
    assert_exact(gemm_int8(a, pack_weights(w), a_zero_point=7), want_of(a, w, 7))


def test_layout_nk_weights(isa, assert_exact):
    rng = np.random.default_rng(10)
    a, w = rand_act(rng, 9, 45, np.int8), rand_w(rng, 45, 70)
    got = gemm_int8(a, pack_weights(np.ascontiguousarray(w.T), layout="nk"), isa=isa)
    assert_exact(got, want_of(a, w))


# --- validation ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(11)
    a = rand_act(rng, 3, 10, np.int8)
    w = rand_w(rng, 10, 5)
    return a, pack_weights(w)


def _misaligned_copy(data: np.ndarray) -> np.ndarray:
    raw = aligned_empty((data.size + 64,), np.int8)
    mis = raw[1:1 + data.size].reshape(data.shape)
    mis[...] = data
    assert mis.flags.c_contiguous and mis.ctypes.data % 64 == 1
    return mis


@pytest.mark.parametrize("bad, exc", [
    ([[1, 2], [3, 4]], TypeError),
    (np.ones((3, 10), np.float32), TypeError),
    (np.ones((3, 10), np.int16), TypeError),
    (np.ones((3, 10), bool), TypeError),
    (np.ones((3, 10, 1), np.int8), ValueError),
    (np.ones((10,), np.int8), ValueError),
    (np.ones((3, 11), np.int8), ValueError),  # K mismatch
    (np.ones((3, 0), np.int8), ValueError),   # K mismatch (empty K)
], ids=["list", "float32", "int16", "bool", "3d", "1d", "k_mismatch", "k_zero"])
def test_bad_activation(small, bad, exc, raises_naming):
    with raises_naming(exc, "a"):
        gemm_int8(bad, small[1])


def test_k_mismatch_names_both(small, raises_naming):
    with raises_naming(ValueError, "w"):
        gemm_int8(np.ones((3, 11), np.int8), small[1])


def test_bad_weights(small, raises_naming):
    a, wp = small
    with raises_naming(TypeError, "w"):
        gemm_int8(a, np.ones((10, 5), np.int8))
    with raises_naming(TypeError, "w"):
        gemm_int8(a, wp.data)
    with raises_naming(ValueError, "w.data"):
        gemm_int8(a, dataclasses.replace(wp, data=_misaligned_copy(wp.data)))
    for wrong_size in (wp.data.reshape(-1)[:-64], aligned_empty((wp.data.size + 256,), np.int8)):
        with raises_naming(ValueError, "w.data"):
            gemm_int8(a, dataclasses.replace(wp, data=wrong_size))
    with raises_naming(ValueError, "w.data"):
        gemm_int8(a, dataclasses.replace(wp, data=wp.data.view(np.uint8)))
    with raises_naming(ValueError, "w.col_sum"):
        gemm_int8(a, dataclasses.replace(wp, col_sum=wp.col_sum.astype(np.int64)))
    with raises_naming(ValueError, "w.col_sum"):
        gemm_int8(a, dataclasses.replace(wp, col_sum=wp.col_sum[:-1]))


@pytest.mark.parametrize("what", ["not_ndarray", "dtype", "dtype_vs_epilogue", "shape",
                                  "shape_transposed", "read_only", "column_strided",
                                  "overlapping_rows"])
def test_bad_out(small, what, raises_naming):
    a, wp = small
    m, n = 3, 5
    ep = None
    if what == "not_ndarray":
        out, exc = [[0] * n] * m, TypeError
    elif what == "dtype":
        out, exc = np.zeros((m, n), np.int64), TypeError
    elif what == "dtype_vs_epilogue":
        out, exc, ep = np.zeros((m, n), np.int32), TypeError, Requantize.from_scale(0.1)
    elif what == "shape":
        out, exc = np.zeros((m, n + 1), np.int32), ValueError
    elif what == "shape_transposed":
        out, exc = np.zeros((n, m), np.int32), ValueError
    elif what == "read_only":
        out, exc = np.zeros((m, n), np.int32), ValueError
        out.flags.writeable = False
    elif what == "column_strided":
        out, exc = np.zeros((m, 2 * n), np.int32)[:, ::2], ValueError
    else:
        base = np.zeros(m * n, np.int32)
        out = np.lib.stride_tricks.as_strided(base, (m, n), (8, 4))
        exc = ValueError
    before = np.array(out, copy=True) if isinstance(out, np.ndarray) else None
    with raises_naming(exc, "out"):
        gemm_int8(a, wp, out=out, epilogue=ep)
    if before is not None:
        np.testing.assert_array_equal(out, before)  # rejected before anything was written


def test_transposed_out_rejected(small, raises_naming):
    """A Fortran-ordered [M, N] out (column-major) has non-unit row stride: rejected."""
    a, wp = small
    with raises_naming(ValueError, "out"):
        gemm_int8(a, wp, out=np.zeros((5, 3), np.int32).T)


@pytest.mark.parametrize("act, zp", [("s8", 128), ("s8", -129), ("u8", -1), ("u8", 256),
                                     ("s8", 1.5), ("s8", 2.0), ("s8", "3"), ("s8", None),
                                     ("u8", np.float64(4.0))],
                         ids=["s8-128", "s8--129", "u8--1", "u8-256", "float", "float_int",
                              "str", "None", "np_float"])
def test_bad_zero_point(small, act, zp, raises_naming):
    a = small[0].astype(ACT_DTYPES[act]) if act == "u8" else small[0]
    with raises_naming(ValueError, "a_zero_point"):
        gemm_int8(a, small[1], a_zero_point=zp)


def test_zero_point_numpy_integer_accepted(small, assert_exact):
    a, wp = small
    assert_exact(gemm_int8(a, wp, a_zero_point=np.int16(-5)),
                 want_of(a, wp.unpack(), -5))


@pytest.mark.parametrize("name", ["avx512vnni", "AVX2_", "cuda", "", "neon"])
def test_unknown_isa(small, name, raises_naming):
    with raises_naming(ValueError, "isa"):
        gemm_int8(small[0], small[1], isa=name)


def test_bad_epilogue(small, raises_naming):
    a, wp = small  # N = 5, M = 3
    with raises_naming(TypeError, "epilogue"):
        gemm_int8(a, wp, epilogue="requantize")
    with raises_naming(ValueError, "epilogue.multiplier"):
        gemm_int8(a, wp, epilogue=Requantize(multiplier=[2 ** 30] * 4, shift=31))
    with raises_naming(ValueError, "epilogue.multiplier"):
        gemm_int8(a, wp, epilogue=Requantize.from_scale([0.1] * 6))
    with raises_naming(ValueError, "epilogue.shift"):
        gemm_int8(a, wp, epilogue=Requantize(multiplier=2 ** 30, shift=[31] * 2))
    with raises_naming(ValueError, "epilogue.bias"):
        gemm_int8(a, wp, epilogue=Requantize.from_scale(0.1, bias=[1, 2, 3]))
    with raises_naming(ValueError, "epilogue.w_scale"):
        gemm_int8(a, wp, epilogue=Dequantize(w_scale=[1.0] * 4))
    with raises_naming(ValueError, "epilogue.a_scale"):
        gemm_int8(a, wp, epilogue=Dequantize(w_scale=1.0, a_scale=[1.0] * 5))
