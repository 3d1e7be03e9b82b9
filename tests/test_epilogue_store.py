"""The fused epilogue store of gemm_int8 and gemm_sparse24 (csrc/epilogue_store.h), bit for
bit against the NumPy reference ``ref.apply_epilogue`` of the exact int32 product, on every
usable variant of both kernels: the portable scalar store, AVX2 (8 columns a vector) and
AVX-512 (16), and the Numba and ref tiers (which apply the reference epilogue themselves).

Requantized integers and dequantized float32 values are compared exactly (float32 by bit
pattern: the C variants do the reference's float32 operations in its order). Named cases:
shift 1 and 62, bias adds that saturate at the int32 bounds, qmin / qmax clamps, zero points
at the ends of the output range, int8 and uint8 outputs, column tails around 8, 16 and 64
(masked loads and stores: nothing outside ``out``'s block is written) and row tails around
the row tiles (4, 5, 6). Hypothesis draws the epilogue parameters with the shapes.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lowbit.kernels as lk
from lowbit.kernels import Dequantize, Requantize, pack_weights, prune_24, ref
from lowbit.kernels.epilogue import prepare

I32_MIN, I32_MAX = -(2 ** 31), 2 ** 31 - 1
OUT_RANGE = {"int8": (-128, 127), "uint8": (0, 255)}


KERNELS = [(op, k.key.isa) for op, weight in (("gemm_int8", "int8"), ("gemm_sparse24", "sparse24"))
           for k in lk.REGISTRY.kernels(op, "s8", weight, usable=True)]
KERNEL_IDS = [f"{op}-{isa}" for op, isa in KERNELS]
kernels = pytest.mark.parametrize("kernel", KERNELS, ids=KERNEL_IDS)

N_TAILS = [1, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 130]
M_TAILS = [1, 3, 4, 5, 6, 7, 11, 13]


def operands(rng, m: int, k: int, n: int, act: str = "s8", small: bool = False):
    """int8 / uint8 activations and a 2:4 int8 weight matrix (both kernels run it);
    ``small``: values in [-3, 3] (activations [0, 6] for uint8), so accumulators stay small
    and a bias decides where they land."""
    lo, hi = (-128, 127) if act == "s8" else (0, 255)
    if small:
        lo, hi = (-3, 3) if act == "s8" else (0, 6)
    a = rng.integers(lo, hi + 1, (m, k)).astype(np.int8 if act == "s8" else np.uint8)
    w = rng.integers(-3, 4, (k, n)) if small else rng.integers(-128, 128, (k, n))
    return a, prune_24(w.astype(np.int8))


def run(kernel, a, w, zp, ep, out=None):
    op, isa = kernel
    if op == "gemm_int8":
        return lk.gemm_int8(a, pack_weights(w), a_zero_point=zp, epilogue=ep, out=out, isa=isa)
    return lk.gemm_sparse24(a, pack_weights(w, "sparse24"), a_zero_point=zp, epilogue=ep,
                            out=out, isa=isa)


def want_of(a, w, zp, ep):
    return ref.apply_epilogue(ref.gemm_int8(a, w, zp), prepare(ep, a.shape[0], w.shape[1]))


def bits(x: np.ndarray) -> np.ndarray:
    """Integers as they are; float32 as their bit patterns (-0.0 differs from +0.0)."""
    return x.view(np.int32) if x.dtype == np.float32 else x


def check(assert_exact, kernel, a, w, zp, ep, out=None):
    got = run(kernel, a, w, zp, ep, out)
    want = want_of(a, w, zp, ep)
    assert_exact(bits(np.ascontiguousarray(got)), bits(want))
    return got, want


# --- requantize: named parameter regimes -----------------------------------------------------

def _cycle(values, n: int) -> np.ndarray:
    return np.resize(np.asarray(values, np.int64), n)


def _regimes(n: int) -> dict:
    """name -> (Requantize arguments but the zero point and output type; ``clamp``: qmin and
    qmax relative to the zero point), and what makes the regime bite, a predicate of v =
    acc + bias (int64, before saturation) and the unclamped result r (int64)."""
    return {
        # shift 1: tiny multipliers keep the result in range; 2^31 - 1 overflows every int8
        "shift_1": (dict(multiplier=_cycle([1, 2, 3, 2 ** 31 - 1], n), shift=1,
                         bias=_cycle([0, -7, 5, 1], n)),
                    lambda v, r: r.max() > 2 ** 32 and len(np.unique(r[np.abs(r) < 128])) > 9),
        # shift 62: (v * m + 2^61) >> 62 is -1, 0 or 1 even for the largest |v| and m
        "shift_62": (dict(multiplier=2 ** 31 - 1, shift=62,
                          bias=_cycle([I32_MAX, I32_MIN, 2 ** 30, -(2 ** 30), 0], n)),
                     lambda v, r: set(np.unique(r).tolist()) == {-1, 0, 1}),
        # acc + bias past int32: saturates (a wrap would flip the sign); 2^-24 maps the int32
        # bounds to +-128
        "saturate_int32": (dict(multiplier=2 ** 30, shift=54,
                                bias=_cycle([I32_MAX, I32_MIN, I32_MAX - 3, I32_MIN + 3], n)),
                           lambda v, r: bool(np.any(v > I32_MAX) and np.any(v < I32_MIN))),
        # a narrow clamp around the zero point
        "clamp_qmin_qmax": (dict(multiplier=2 ** 30, shift=31, clamp=(-20, 30),
                                 bias=_cycle([-40, -20, 0, 20, 40], n)),
                            lambda v, r: r.min() < -20 and r.max() > 30),
        # per-channel shifts across the range, bias at the bounds
        "shift_sweep": (dict(multiplier=_cycle([2 ** 30, 1518500250, 2 ** 31 - 1, 1], n),
                             shift=_cycle([1, 20, 31, 40, 61, 62], n),
                             bias=_cycle([I32_MAX, 5, I32_MIN, -5, 123456789], n)),
                        lambda v, r: len(np.unique(np.clip(r, -128, 127))) > 3),
        # v * 2^30 / 2^32 = v / 4: ties (v = 4 q + 2) round toward +infinity
        "ties": (dict(multiplier=2 ** 30, shift=32, bias=_cycle([2, -2, 6, -6, 10, -10], n)),
                 lambda v, r: bool(np.any(v % 4 == 2)) and len(np.unique(r)) > 3),
    }


REGIME_NAMES = list(_regimes(4))
# (out_dtype, zero point): both types, their zero-point limits
OUT_ZP = [("int8", 0), ("int8", -128), ("int8", 127), ("uint8", 0), ("uint8", 128),
          ("uint8", 255)]


def _requantize_regime(regime: str, n: int, out_dtype: str, zp: int) -> Requantize:
    kwargs = dict(_regimes(n)[regime][0])
    clamp = kwargs.pop("clamp", None)
    if clamp is not None:
        lo, hi = OUT_RANGE[out_dtype]
        kwargs.update(qmin=max(lo, zp + clamp[0]), qmax=min(hi, zp + clamp[1]))
    return Requantize(**kwargs, zero_point=zp, out_dtype=out_dtype)


def _regime_operands(regime: str):
    rng = np.random.default_rng(REGIME_NAMES.index(regime))
    return operands(rng, 7, 40, 70, "u8", small=True)  # M, K, N: tails of every tile


@pytest.mark.parametrize("regime", REGIME_NAMES)
def test_regimes_reach_their_edge(regime):
    """The regimes' operands do what the regime is named for (the tests below are not
    vacuous): checked on the reference, before the zero point and clamp."""
    a, w = _regime_operands(regime)
    ep = prepare(_requantize_regime(regime, w.shape[1], "int8", 0), *a.shape[:1], w.shape[1])
    acc = ref.gemm_int8(a, w, 2)
    v = acc.astype(np.int64) + ep.bias.astype(np.int64)
    r = ref.requantize(acc, ep.multiplier, ep.shift, 0, -(2 ** 62), 2 ** 62, ep.bias, np.int64)
    assert _regimes(w.shape[1])[regime][1](v, r)


@kernels
@pytest.mark.parametrize("out_dtype, out_zp", OUT_ZP, ids=[f"{d}-zp{z}" for d, z in OUT_ZP])
@pytest.mark.parametrize("regime", REGIME_NAMES)
def test_requantize_regimes(kernel, regime, out_dtype, out_zp, assert_exact):
    a, w = _regime_operands(regime)
    check(assert_exact, kernel, a, w, 2,
          _requantize_regime(regime, w.shape[1], out_dtype, out_zp))


@kernels
@pytest.mark.parametrize("out_dtype", ["int8", "uint8"])
@pytest.mark.parametrize("n", N_TAILS, ids=[f"N{n}" for n in N_TAILS])
def test_requantize_column_tails(kernel, n, out_dtype, assert_exact):
    """The regimes side by side, one per column, at N around the vector widths; out is a
    block of a larger array whose other elements must stay untouched."""
    rng = np.random.default_rng([n, out_dtype == "uint8"])
    m, k = 6, 36
    a, w = operands(rng, m, k, n, "s8", small=True)
    names = [name for name in REGIME_NAMES if name != "clamp_qmin_qmax"]
    full = [{key: np.resize(np.asarray(_regimes(n)[name][0][key], np.int64), n)
             for key in ("multiplier", "shift", "bias")} for name in names]
    col = np.arange(n) % len(names)
    lo, hi = OUT_RANGE[out_dtype]
    ep = Requantize(**{key: np.choose(col, [f[key] for f in full]) for key in full[0]},
                    zero_point=(lo + hi + 1) // 2, out_dtype=out_dtype)
    sentinel = np.full((m + 2, n + 37), 77, out_dtype)
    out = sentinel[1:1 + m, 5:5 + n]
    got, _ = check(assert_exact, kernel, a, w, -1, ep, out)
    assert got is out
    outside = np.ones(sentinel.shape, bool)
    outside[1:1 + m, 5:5 + n] = False
    assert np.all(sentinel[outside] == 77)


@kernels
@pytest.mark.parametrize("m", M_TAILS, ids=[f"M{m}" for m in M_TAILS])
def test_row_tails_every_kind(kernel, m, assert_exact):
    """Row counts around the tiles (4 rows; 6 for int8 VNNI, 5 for 2:4 VNNI), all kinds."""
    rng = np.random.default_rng(m)
    k, n = 45, 21
    a, w = operands(rng, m, k, n, "u8")
    eps = [None,
           Requantize.from_scale(rng.uniform(1e-5, 1e-3, n), zero_point=-9,
                                 bias=rng.integers(-50000, 50000, n)),
           Requantize.from_scale(3e-4, zero_point=140, out_dtype="uint8", qmin=5, qmax=250),
           Dequantize(w_scale=rng.uniform(-1e-2, 1e-2, n), a_scale=rng.uniform(0.1, 2.0, m),
                      bias=rng.normal(0, 3, n)),
           Dequantize(w_scale=0.003, a_scale=rng.uniform(0.1, 2.0, m))]
    for ep in eps:
        check(assert_exact, kernel, a, w, 128, ep)


# --- dequantize ------------------------------------------------------------------------------

DEQ_CASES = ["per_tensor", "per_channel_bias", "negative_scales_zero_acc", "large_acc",
             "extreme_scales"]


def _dequant_case(case: str, rng, m: int, n: int) -> Dequantize:
    if case == "per_tensor":
        return Dequantize(w_scale=0.0173, a_scale=0.5)
    if case == "per_channel_bias":
        return Dequantize(w_scale=rng.uniform(1e-4, 1e-2, n), a_scale=rng.uniform(0.01, 1, m),
                          bias=rng.normal(0, 10, n))
    if case == "negative_scales_zero_acc":  # acc 0 times a negative scale is -0.0 (no bias)
        return Dequantize(w_scale=-rng.uniform(0.1, 1, n), a_scale=rng.uniform(0.1, 1, m))
    if case == "large_acc":  # |acc| > 2^24: the int32 -> float32 conversion rounds
        return Dequantize(w_scale=rng.uniform(0.5, 2, n), a_scale=rng.uniform(0.5, 2, m),
                          bias=rng.normal(0, 1e6, n))
    return Dequantize(w_scale=rng.choice([1e-30, 3e30, -7e-20], n),  # products under- and
                      a_scale=rng.choice([1e-10, 1e9], m))            # overflow float32


@kernels
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # extreme_scales
@pytest.mark.parametrize("n", [16, 17, 70], ids=["N16", "N17", "N70"])
@pytest.mark.parametrize("case", DEQ_CASES)
def test_dequantize_bit_exact(kernel, case, n, assert_exact):
    rng = np.random.default_rng([DEQ_CASES.index(case), n])
    m, k = 9, 2400 if case == "large_acc" else 300   # 2:4 keeps half: 1200 x 127^2 > 2^24
    a, w = operands(rng, m, k, n, "s8")
    if case == "negative_scales_zero_acc":
        w[:, ::3] = 0
    if case == "large_acc":
        a[:] = 127
        w = prune_24(np.where(rng.random((k, n)) < 0.9, 127, 3).astype(np.int8))
    ep = _dequant_case(case, rng, m, n)
    got, want = check(assert_exact, kernel, a, w, 0, ep)
    if case == "negative_scales_zero_acc":
        assert np.any(np.signbit(want) & (want == 0))
    if case == "large_acc":
        assert np.abs(ref.gemm_int8(a, w)).max() > 2 ** 24


# --- hypothesis over the epilogue parameters ------------------------------------------------

INT32 = st.integers(I32_MIN, I32_MAX)
EDGE_INT32 = st.sampled_from([I32_MIN, I32_MIN + 1, -1, 0, 1, I32_MAX - 1, I32_MAX])


@st.composite
def requant_params(draw, n: int):
    """Requantize keyword arguments: raw (multiplier, shift) pairs over their whole range
    (edges weighted) or from real scales, per tensor or per channel, with or without bias."""
    out_dtype = draw(st.sampled_from(["int8", "uint8"]))
    lo, hi = OUT_RANGE[out_dtype]
    per_channel = draw(st.booleans())
    size = n if per_channel else 1
    if draw(st.booleans()):
        mult = draw(st.lists(st.integers(1, 2 ** 31 - 1) | st.sampled_from([1, 2 ** 30,
                                                                             2 ** 31 - 1]),
                             min_size=size, max_size=size))
        shift = draw(st.lists(st.integers(1, 62) | st.sampled_from([1, 2, 31, 61, 62]),
                              min_size=size, max_size=size))
        args = dict(multiplier=mult, shift=shift)
    else:
        exps = draw(st.lists(st.floats(-32, 8), min_size=size, max_size=size))
        args = dict(_from_scale=[2.0 ** e for e in exps])
    bias = draw(st.none() | st.lists(INT32 | EDGE_INT32, min_size=n, max_size=n)
                | st.lists(st.integers(-1000, 1000), min_size=n, max_size=n))
    qmin = draw(st.integers(lo, hi))
    qmax = draw(st.integers(qmin, hi))
    args.update(bias=bias, zero_point=draw(st.integers(lo, hi)), qmin=qmin, qmax=qmax,
                out_dtype=out_dtype)
    return args


def _requantize(args: dict) -> Requantize:
    args = dict(args)
    scales = args.pop("_from_scale", None)
    if scales is not None:
        return Requantize.from_scale(np.array(scales), **args)
    return Requantize(**args)


@st.composite
def shapes(draw):
    return (draw(st.integers(1, 14)), draw(st.integers(1, 80)), draw(st.integers(1, 150)),
            draw(st.sampled_from(["s8", "u8"])), draw(st.integers(0, 2 ** 32 - 1)))


@kernels
@settings(max_examples=30, deadline=None)
@given(shape=shapes(), data=st.data())
def test_requantize_random_parameters(kernel, shape, data, assert_exact):
    m, k, n, act, seed = shape
    rng = np.random.default_rng(seed)
    a, w = operands(rng, m, k, n, act, small=data.draw(st.booleans()))
    zp = data.draw(st.integers(-128, 127) if act == "s8" else st.integers(0, 255))
    check(assert_exact, kernel, a, w, zp, _requantize(data.draw(requant_params(n))))


FINITE_SCALE = st.floats(1e-12, 1e6).flatmap(lambda x: st.sampled_from([x, -x]))


@kernels
@settings(max_examples=20, deadline=None)
@given(shape=shapes(), data=st.data())
def test_dequantize_random_parameters(kernel, shape, data, assert_exact):
    m, k, n, act, seed = shape
    rng = np.random.default_rng(seed)
    a, w = operands(rng, m, k, n, act)
    zp = data.draw(st.integers(-128, 127) if act == "s8" else st.integers(0, 255))
    w_scale = data.draw(st.lists(FINITE_SCALE, min_size=1, max_size=1)
                        | st.lists(FINITE_SCALE, min_size=n, max_size=n))
    a_scale = data.draw(st.lists(FINITE_SCALE, min_size=1, max_size=1)
                        | st.lists(FINITE_SCALE, min_size=m, max_size=m))
    bias = data.draw(st.none() | st.lists(st.floats(-1e6, 1e6, width=32), min_size=n,
                                          max_size=n))
    check(assert_exact, kernel, a, w, zp, Dequantize(w_scale=w_scale, a_scale=a_scale,
                                                     bias=bias))


# --- the C side checks its epilogue argument --------------------------------------------------

def test_sparse24_c_entry_rejects_a_bad_epilogue():
    """lb_gemm_sparse24_s8 returns LB_EINVAL (-1) for an epilogue without its vectors or of
    an unknown kind, before reading anything."""
    from lowbit.kernels import native
    from lowbit.kernels.gemm_sparse24 import _c_weights

    ffi, lib = native.ffi, native.lib
    w24 = pack_weights(prune_24(np.ones((8, 3), np.int8)), "sparse24")
    a = np.ones((2, 8), np.int8)
    out = np.zeros((2, 3), np.int32)
    for kind in (1, 2, 3, -1):
        ep = ffi.new("lb_epilogue *")
        ep.kind = kind
        rc = lib.lb_gemm_sparse24_s8(-1, 2, ffi.from_buffer(a), 8, 1, 0, _c_weights(w24), ep,
                                     ffi.from_buffer(out), 3)
        assert rc == -1, kind
    assert lib.lb_gemm_sparse24_s8(-1, 2, ffi.from_buffer(a), 8, 1, 0, _c_weights(w24),
                                   ffi.NULL, ffi.from_buffer(out), 3) == -1
    assert not out.any()


# --- the benchmark group ---------------------------------------------------------------------

def test_bench_group_runs_every_c_variant_with_each_kind():
    from lowbit.bench import bench_epilogue as be

    assert be.GROUP == "epilogue-4096x32x288"
    c_isas = [isa for op, isa in KERNELS if op == "gemm_int8" and isa not in ("ref", "numba")]
    impls = be.epilogue_impls()
    assert sorted(i.name for i in impls) == sorted(f"lowbit[{isa}]-{kind}" for isa in c_isas
                                                   for kind in be.KINDS)
    assert [i.isa for i in impls][-3:] == ["portable"] * 3   # the scalar baseline last
    problem = be.problem()
    for impl in impls[:3]:  # prepare checks the output against the reference before timing
        impl.prepare(problem)()
    with pytest.raises(AssertionError, match="not benchmarking"):
        problem.check(np.zeros((problem.m, problem.n), np.int8), "requantize", "zeros")
