"""gemm_binary against ref.gemm_binary, bit-exactly, on every usable ISA; the binary format.

Blocking (csrc/gemm_binary_frame.inc): K runs in 64-bit words, N in panels of 32 columns,
M in tiles of MR = 6 (avx512) or 4 (avx2, portable). The named cases sit on and around
those edges; hypothesis covers shapes in between.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lowbit.kernels as lk
from lowbit.kernels import (FORMATS, PackedBinaryWeights, gemm_binary, pack_binary_activations,
                            pack_weights, ref)
from lowbit.kernels import native
from lowbit.kernels.formats import ALIGN, BINARY_PANELS, aligned_empty, pack_bits, unpack_bits

BINARY_ISAS = [k.key.isa for k in lk.REGISTRY.kernels("gemm_binary", "b1", "binary",
                                                      usable=True)]
per_isa = pytest.mark.parametrize("isa", BINARY_ISAS, ids=BINARY_ISAS)
FEATURES = set(lk.cpu_features())
# Features of gemm_binary's "avx512" variant: the avx512 ISA's plus VPOPCNTDQ (csrc/gemm_binary.c)
AVX512_NEEDS = {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vpopcntdq"}


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def signs(rng, *shape) -> np.ndarray:
    """Random +-1 int8."""
    return (rng.integers(0, 2, size=shape, dtype=np.int8) * 2 - 1).astype(np.int8)


def operands(rng, m: int, k: int, n: int):
    """(a +-1 [M, K], w +-1 [K, N], a_bits, packed w)."""
    a, w = signs(rng, m, k), signs(rng, k, n)
    return a, w, pack_binary_activations(a), pack_weights(w, "binary")


@functools.lru_cache(maxsize=8)
def case_operands(m: int, k: int, n: int):
    """``operands`` seeded by the shape and the exact product, shared by every ISA's test."""
    a, w, ab, wp = operands(np.random.default_rng([m, k, n]), m, k, n)
    return a, w, ab, wp, want_of(a, w)


def want_of(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The +-1 dot product from the unpacked matrices (independent of the bit format);
    float64 BLAS is exact here (|sums| <= K < 2^53) and fast."""
    return (a.astype(np.float64) @ w.astype(np.float64)).astype(np.int32)


# --- the format ------------------------------------------------------------------------------

FMT_SHAPES = [(1, 1), (63, 1), (64, 32), (65, 33), (130, 70), (1, 65), (200, 3), (128, 64)]
FMT_IDS = [f"K{k}-N{n}" for k, n in FMT_SHAPES]


def test_format_descriptor():
    assert FORMATS["binary"] is BINARY_PANELS
    assert (BINARY_PANELS.name, BINARY_PANELS.bits, BINARY_PANELS.nr,
            BINARY_PANELS.word_bits) == ("binary", 1, 32, 64)
    assert "64q + b" in BINARY_PANELS.bit_order and "bit 1 = +1" in BINARY_PANELS.bit_order


@pytest.mark.parametrize("k, n", FMT_SHAPES, ids=FMT_IDS)
def test_nbytes_matches_data_and_formula(k, n):
    wp = pack_weights(signs(np.random.default_rng(k * n), k, n), "binary")
    formula = 8 * _ceil(n, 32) * _ceil(k, 64) * 32
    assert BINARY_PANELS.nbytes(k, n) == formula == wp.data.nbytes == wp.nbytes
    assert wp.data.shape == BINARY_PANELS.packed_shape(k, n) == (_ceil(n, 32), _ceil(k, 64), 32)
    assert wp.data.dtype == np.uint64 and wp.data.flags.c_contiguous
    assert wp.data.ctypes.data % ALIGN == 0
    # 1 bit per value plus padding: K N / 8 bytes up to the word and panel rounding
    assert formula >= k * n / 8


@pytest.mark.parametrize("k, n", FMT_SHAPES, ids=FMT_IDS)
def test_pack_unpack_round_trip(k, n, assert_exact):
    rng = np.random.default_rng(k + 1000 * n)
    w = signs(rng, k, n)
    wp = pack_weights(w, "binary")
    assert isinstance(wp, PackedBinaryWeights) and wp.shape == (k, n) and wp.fmt is BINARY_PANELS
    assert_exact(wp.unpack(), w)
    assert_exact(BINARY_PANELS.unpack(BINARY_PANELS.pack(w), k, n), w)
    assert_exact(unpack_bits(wp.rows(), k), np.ascontiguousarray(w.T))
    nk = pack_weights(np.ascontiguousarray(w.T), "binary", layout="nk")
    assert_exact(nk.data, wp.data)
    a = signs(rng, 3, k)
    assert_exact(unpack_bits(pack_binary_activations(a), k), a)


def test_bit_order_and_sign_rule(assert_exact):
    """bit b of word q is K index 64q + b; x >= 0 (also 0 and -0.0) is +1 (bit 1)."""
    x = np.full((1, 130), -1.0)
    x[0, [0, 5, 63, 64, 129]] = [0.0, 2.5, -0.0, 7.0, 1e-30]
    bits = pack_binary_activations(x)
    assert bits.dtype == np.uint64 and bits.shape == (1, 3)
    assert bits.tolist() == [[(1 << 0) | (1 << 5) | (1 << 63), 1 << 0, 1 << 1]]
    ints = pack_binary_activations(np.array([[3, -1, 0, -128]], np.int8))
    assert ints.tolist() == [[0b101]]


@pytest.mark.parametrize("k, n", FMT_SHAPES, ids=FMT_IDS)
def test_padding_bits_are_zero(k, n):
    """All +1 weights: every bit set except padding (past K, past N)."""
    data = pack_weights(np.ones((k, n)), "binary").data
    p, q, j = np.indices(data.shape)
    valid_cols = 32 * p + j < n
    assert np.all(data[~valid_cols] == 0)
    full = np.uint64(2 ** 64 - 1)
    last = q == data.shape[1] - 1
    assert np.all(data[valid_cols & ~last] == full)
    tail = (1 << (k % 64)) - 1 if k % 64 else 2 ** 64 - 1
    assert np.all(data[valid_cols & last] == np.uint64(tail))
    assert np.all(pack_binary_activations(np.ones((2, k)))[:, -1] == np.uint64(tail))


def test_pack_rejects_bad_input(raises_naming):
    for bad, exc in ((np.ones((3, 4), bool), TypeError), ([[1.0, -1.0]], TypeError),
                     (np.ones((3, 4), np.complex64), TypeError), (np.ones(4), ValueError),
                     (np.array([[1.0, np.nan]]), ValueError), (np.ones((2, 0)), ValueError)):
        with raises_naming(exc, "x"):
            pack_binary_activations(bad)
    for bad, exc in ((np.ones((3, 4), bool), TypeError), (np.ones((0, 4)), ValueError),
                     (np.array([[np.nan]]), ValueError), (np.ones((2, 3, 4)), ValueError)):
        with raises_naming(exc, "w"):
            pack_weights(bad, "binary")
    with raises_naming(ValueError, "layout"):
        pack_weights(np.ones((4, 4)), "binary", layout="KN")


def test_packed_record_checks_its_data(raises_naming):
    wp = pack_weights(np.ones((70, 40)), "binary")
    with raises_naming(ValueError, "w_bits.data"):
        dataclasses.replace(wp, data=wp.data.view(np.int64))
    with raises_naming(ValueError, "w_bits.data"):
        dataclasses.replace(wp, data=wp.data.reshape(-1)[:-32])
    raw = aligned_empty((wp.data.size + 8,), np.uint64)
    mis = raw[1:1 + wp.data.size].reshape(wp.data.shape)
    mis[...] = wp.data
    with raises_naming(ValueError, "w_bits.data"):
        dataclasses.replace(wp, data=mis)
    dirty = wp.data.copy()
    dirty[0, -1, 0] |= np.uint64(1 << 63)  # a padding bit past K = 70
    with raises_naming(ValueError, "w_bits.data"):
        dataclasses.replace(wp, data=dirty)


# --- named edge cases ------------------------------------------------------------------------

EDGE_CASES = [  # id, M, K, N
    ("m_one", 1, 200, 70),
    ("k_one", 7, 1, 40),
    ("k_lt_word", 5, 63, 33),
    ("k_eq_word", 6, 64, 32),
    ("k_gt_word-K65", 4, 65, 20),
    ("k_gt_word-K130", 9, 130, 100),
    ("k_eq_2words", 8, 128, 64),
    ("n_tail-N33", 6, 100, 33),
    ("n_tail-N65", 7, 70, 65),
    ("n_tail-N1", 5, 70, 1),
    ("m_tail-M5", 5, 100, 64),
    ("m_tail-M7", 7, 100, 64),
    ("m_tail-M13", 13, 100, 64),
    ("m_eq_tile-M24", 24, 90, 32),
    # big enough for the thread pool (M N ceil(K/64) >= 2^18)
    ("pool", 67, 2000, 200),
    ("pool-m_one", 1, 8200, 4100),
    ("pool-n_one", 3000, 6000, 1),
]


@per_isa
@pytest.mark.parametrize("case, m, k, n", EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_edge_shapes(isa, case, m, k, n, assert_exact):
    _, _, ab, wp, want = case_operands(m, k, n)
    got = gemm_binary(ab, wp, k, isa=isa)
    assert got.dtype == np.int32 and got.shape == (m, n) and got.flags.c_contiguous
    assert_exact(got, want)


@pytest.mark.parametrize("k", [1, 63, 64, 65, 130])
def test_ref_is_k_minus_twice_popcount_of_xor(k, assert_exact):
    """The reference (a +-1 dot product) equals the XNOR-popcount formula, counted in Python."""
    a, w, ab, wp = operands(np.random.default_rng(k), 3, k, 5)
    rows = wp.rows()
    mask = (1 << k) - 1

    def as_int(words) -> int:
        return sum(int(x) << 64 * q for q, x in enumerate(words))
    pop = [[k - 2 * bin((as_int(ab[i]) ^ as_int(rows[j])) & mask).count("1")
            for j in range(5)] for i in range(3)]
    assert_exact(ref.gemm_binary(ab, rows, k), np.array(pop, np.int32))
    assert_exact(ref.gemm_binary(ab, rows, k), want_of(a, w))


@per_isa
@pytest.mark.parametrize("a_sign, w_sign", [(1, 1), (-1, -1), (1, -1), (-1, 1)],
                         ids=["all_ones", "all_minus_ones", "ones_x_minus_ones",
                              "minus_ones_x_ones"])
@pytest.mark.parametrize("k", [63, 64, 130, 4097])
def test_constant_signs(isa, a_sign, w_sign, k, assert_exact):
    m, n = 7, 33
    ab = pack_binary_activations(np.full((m, k), a_sign, np.int8))
    wp = pack_weights(np.full((k, n), w_sign, np.int8), "binary")
    assert_exact(gemm_binary(ab, wp, k, isa=isa), np.full((m, n), a_sign * w_sign * k, np.int32))


# --- strided and non-contiguous activations --------------------------------------------------

def _strided_views(ab_big: np.ndarray, m: int, kw: int) -> dict[str, np.ndarray]:
    raw = np.zeros(m * kw * 8 + 8, np.uint8)
    misaligned = raw[1:1 + m * kw * 8].view(np.uint64).reshape(m, kw)
    misaligned[...] = ab_big[:m, :kw]
    return {
        "row_strided": ab_big[::2, :kw][:m],
        "row_and_word_offset": ab_big[1::2, 3:3 + kw][:m],
        "word_stride_2": np.ascontiguousarray(np.repeat(ab_big[:m, :kw], 2, axis=1))[:, ::2],
        "transposed": np.ascontiguousarray(ab_big[:m, :kw].T).T,
        "reversed_rows": ab_big[:m, :kw][::-1],
        "broadcast_row": np.broadcast_to(ab_big[0, :kw], (m, kw)),
        "misaligned": misaligned,
    }


VIEW_NAMES = list(_strided_views(np.zeros((40, 40), np.uint64), 3, 2))


@per_isa
@pytest.mark.parametrize("view", VIEW_NAMES)
def test_strided(isa, view, assert_exact):
    m, k, n = 13, 300, 70
    kw = _ceil(k, 64)
    rng = np.random.default_rng(VIEW_NAMES.index(view))
    big = rng.integers(0, 2 ** 64, size=(2 * m + 2, kw + 4), dtype=np.uint64)  # any bits
    a_bits = _strided_views(big, m, kw)[view]
    assert a_bits.shape == (m, kw)
    keep = a_bits.copy()
    wp = pack_weights(signs(rng, k, n), "binary")
    got = gemm_binary(a_bits, wp, k, isa=isa)
    np.testing.assert_array_equal(a_bits, keep)  # the input is not modified
    assert_exact(got, ref.gemm_binary(np.ascontiguousarray(keep), wp.rows(), k))


@per_isa
def test_raw_weight_rows_equal_packed_weights(isa, assert_exact):
    """w_bits as uint64 [N, ceil(K/64)] rows (laid out per call) = the packed record."""
    a, w, ab, wp = operands(np.random.default_rng(3), 9, 200, 45)
    rows = pack_binary_activations(np.ascontiguousarray(w.T))
    assert_exact(gemm_binary(ab, rows, 200, isa=isa), gemm_binary(ab, wp, 200, isa="ref"))
    assert_exact(gemm_binary(ab, rows[::-1][::-1], 200, isa=isa), want_of(a, w))


# --- padding ---------------------------------------------------------------------------------

@per_isa
@pytest.mark.parametrize("k", [1, 63, 65, 100, 130, 191])
def test_padding_garbage_never_changes_results(isa, k, assert_exact):
    """Any bits past K in the activations (and in raw weight rows) are ignored."""
    m, n = 7, 40
    a, w, ab, wp = operands(np.random.default_rng(k), m, k, n)
    want = want_of(a, w)
    pad = np.uint64(~((1 << (k % 64)) - 1) & (2 ** 64 - 1))
    rng = np.random.default_rng(k + 1)
    garbage = rng.integers(0, 2 ** 63, size=m, dtype=np.int64).astype(np.uint64) * 3
    for fill in (pad, garbage):
        dirty = ab.copy()
        dirty[:, -1] |= fill & pad
        assert_exact(gemm_binary(dirty, wp, k, isa=isa), want)
    rows = wp.rows()
    rows[:, -1] |= pad  # raw rows: the padding is cleared when laid out
    assert_exact(gemm_binary(ab, rows, k, isa=isa), want)


@per_isa
@pytest.mark.parametrize("k, extra", [(100, 20), (100, 28), (100, 60), (64, 64), (63, 2)],
                         ids=["same_word", "fills_word", "next_word", "word_to_word",
                              "across_word"])
def test_padding_is_k_offset_consistent(isa, k, extra, assert_exact):
    """The same vectors with `extra` more positions (a = +1 there, w = +1 or -1) give
    results offset by exactly +extra or -extra: nothing of the old padding leaks in."""
    m, n = 6, 35
    a, w, ab, wp = operands(np.random.default_rng(k * extra), m, k, n)
    base = gemm_binary(ab, wp, k, isa=isa)
    assert_exact(base, want_of(a, w))
    a_long = np.concatenate([a, np.ones((m, extra), np.int8)], axis=1)
    for sign in (1, -1):
        w_long = np.concatenate([w, np.full((extra, n), sign, np.int8)], axis=0)
        got = gemm_binary(pack_binary_activations(a_long), pack_weights(w_long, "binary"),
                          k + extra, isa=isa)
        assert_exact(got, base + np.int32(sign * extra))


# --- hypothesis ------------------------------------------------------------------------------

@per_isa
@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 30), n=st.integers(1, 100), k=st.integers(1, 400),
       seed=st.integers(0, 2 ** 32 - 1))
def test_random_shapes(isa, m, n, k, seed):
    a, w, ab, wp = operands(np.random.default_rng(seed), m, k, n)
    got = gemm_binary(ab, wp, k, isa=isa)
    np.testing.assert_array_equal(got, want_of(a, w))
    assert got.dtype == np.int32


# --- the XNOR-Net scaling epilogue -----------------------------------------------------------

SCALINGS = ["alpha", "beta", "alpha_beta", "scalars"]
SCALE_SHAPES = [(13, 130, 70), (70, 2000, 200), (5, 20001, 40)]


@per_isa
@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("m, k, n", SCALE_SHAPES, ids=["small", "pool", "large_k"])
def test_scaling_epilogue(isa, scaling, m, k, n):
    rng = np.random.default_rng(SCALINGS.index(scaling) + m)
    a, w, ab, wp, dot = case_operands(m, k, n)
    alpha = rng.uniform(0.01, 2.0, n).astype(np.float32)
    beta = rng.uniform(0.01, 2.0, m)
    kw = {"alpha": dict(alpha=alpha), "beta": dict(beta=beta),
          "scalars": dict(alpha=0.37, beta=1.5)}.get(scaling, dict(alpha=alpha, beta=beta))
    got = gemm_binary(ab, wp, k, isa=isa, **kw)
    al = None if "alpha" not in kw else np.broadcast_to(np.float32(kw["alpha"]), (n,))
    be = None if "beta" not in kw else np.broadcast_to(np.float32(kw["beta"]), (m,))
    want = ref.binary_scale(dot, al, be)
    assert got.dtype == np.float32 and got.shape == (m, n)
    np.testing.assert_allclose(got, want, rtol=ref.FLOAT_RTOL, atol=ref.FLOAT_ATOL)


def test_scaling_is_dot_times_beta_times_alpha():
    """ref.binary_scale: float32 (dot * beta[i]) * alpha[j], a missing vector is ones."""
    dot = np.array([[3, -5]], np.int32)
    got = ref.binary_scale(dot, np.array([0.5, 2.0], np.float32), np.array([4.0], np.float32))
    assert got.dtype == np.float32 and got.tolist() == [[6.0, -40.0]]
    assert ref.binary_scale(dot, None, None).tolist() == [[3.0, -5.0]]


# --- out= ------------------------------------------------------------------------------------

@per_isa
@pytest.mark.parametrize("scaled", [False, True], ids=["int32", "float32"])
def test_out_argument(isa, scaled):
    m, k, n = 9, 100, 40
    a, w, ab, wp = operands(np.random.default_rng(5), m, k, n)
    dtype = np.float32 if scaled else np.int32
    big = np.full((m + 3, n + 5), 77, dtype)
    out = big[1:1 + m, 2:2 + n]
    kw = dict(alpha=np.linspace(0.5, 1.5, n)) if scaled else {}
    assert gemm_binary(ab, wp, k, out=out, isa=isa, **kw) is out
    want = want_of(a, w)
    if scaled:
        np.testing.assert_allclose(out, ref.binary_scale(want, kw["alpha"], None),
                                   rtol=ref.FLOAT_RTOL, atol=ref.FLOAT_ATOL)
    else:
        np.testing.assert_array_equal(out, want)
    mask = np.ones(big.shape, bool)
    mask[1:1 + m, 2:2 + n] = False
    assert np.all(big[mask] == 77)  # nothing outside the target region was touched


@per_isa
def test_m_zero_returns_empty(isa):
    wp = pack_weights(np.ones((70, 5)), "binary")
    got = gemm_binary(np.zeros((0, 2), np.uint64), wp, 70, isa=isa)
    assert got.shape == (0, 5) and got.dtype == np.int32
    got = gemm_binary(np.zeros((0, 2), np.uint64), wp, 70, alpha=np.ones(5), isa=isa)
    assert got.shape == (0, 5) and got.dtype == np.float32


def test_generic_popcount_path_of_portable(assert_exact):
    """The portable variant's baseline popcount routine (chosen on CPUs without POPCNT)."""
    a, w, ab, wp = operands(np.random.default_rng(6), 11, 300, 70)
    before = native.lib.lb_gemm_binary_force_generic_popcount(1)
    try:
        got = gemm_binary(ab, wp, 300, isa="portable")
    finally:
        native.lib.lb_gemm_binary_force_generic_popcount(before)
    assert_exact(got, want_of(a, w))


# --- dispatch --------------------------------------------------------------------------------

def test_registry_entries_and_support():
    kernels = {k.key.isa: k for k in lk.REGISTRY.kernels("gemm_binary")}
    assert sorted(kernels) == sorted(["avx512", "avx2", "portable", "numba", "ref"])
    assert kernels["avx512"].supported() == (AVX512_NEEDS <= FEATURES)
    assert kernels["avx2"].supported() == ("avx2" in FEATURES)
    assert kernels["portable"].supported() and kernels["ref"].supported()
    isa_ids = {name: i for i, name in enumerate(native.C_ISAS)}
    assert not native.lib.lb_gemm_binary_supported(isa_ids["avx512_vnni"])  # no such variant
    info = lk.dispatch_info()["gemm_binary"]
    assert info["available"] == BINARY_ISAS and info["selected"] == BINARY_ISAS[0]
    assert kernels["avx512"].cost(2, 3, 64) == (2 * 2 * 3 * 64, 2 * 8 + 3 * 8 + 2 * 3 * 4)


@pytest.mark.skipif("avx2" not in FEATURES, reason="CPU lacks AVX2")
def test_disable_avx512_selects_avx2():
    code = textwrap.dedent("""
        import json
        import numpy as np
        import lowbit.kernels as lk
        from lowbit.kernels import native
        rng = np.random.default_rng(1)
        a = rng.integers(0, 2, (70, 1000)) * 2 - 1
        w = rng.integers(0, 2, (1000, 90)) * 2 - 1
        got = lk.gemm_binary(lk.pack_binary_activations(a), lk.pack_weights(w, "binary"), 1000)
        print(json.dumps({"info": lk.dispatch_info()["gemm_binary"],
                          "c_selected": native.C_ISAS[native.lib.lb_gemm_binary_selected()],
                          "exact": bool(np.array_equal(got, a @ w))}))
    """)
    env = {key: v for key, v in os.environ.items() if key != "LOWBIT_DISABLE_ISA"}
    env["LOWBIT_DISABLE_ISA"] = "avx512"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["info"]["selected"] == "avx2" and "avx512" not in res["info"]["available"]
    assert res["c_selected"] == "avx2" and res["exact"]


# --- validation ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small():
    a, w, ab, wp = operands(np.random.default_rng(11), 3, 100, 5)
    return ab, wp


@pytest.mark.parametrize("bad, exc", [
    ([[1, 2]], TypeError),
    (np.ones((3, 2), np.int64), TypeError),
    (np.ones((3, 2), np.float64), TypeError),
    (np.ones((3, 2, 1), np.uint64), ValueError),
    (np.ones(2, np.uint64), ValueError),
    (np.ones((3, 3), np.uint64), ValueError),  # words do not match k = 100
    (np.ones((3, 1), np.uint64), ValueError),
], ids=["list", "int64", "float64", "3d", "1d", "too_many_words", "too_few_words"])
def test_bad_activation(small, bad, exc, raises_naming):
    with raises_naming(exc, "a_bits"):
        gemm_binary(bad, small[1], 100)


def test_word_mismatch_names_k(small, raises_naming):
    with raises_naming(ValueError, "k"):
        gemm_binary(np.ones((3, 3), np.uint64), small[1], 100)


@pytest.mark.parametrize("k, exc", [(0, ValueError), (-64, ValueError), (2 ** 31, ValueError),
                                    (True, TypeError), (100.0, TypeError), ("100", TypeError),
                                    (None, TypeError)],
                         ids=["zero", "negative", "too_big", "bool", "float", "str", "None"])
def test_bad_k(small, k, exc, raises_naming):
    with raises_naming(exc, "k"):
        gemm_binary(small[0], small[1], k)


def test_k_numpy_integer_accepted(small, assert_exact):
    ab, wp = small
    assert_exact(gemm_binary(ab, wp, np.int16(100)), gemm_binary(ab, wp, 100))


def test_bad_weights(small, raises_naming):
    ab, wp = small
    with raises_naming(TypeError, "w_bits"):
        gemm_binary(ab, pack_weights(np.ones((100, 5), np.int8)), 100)  # int8 PackedWeights
    with raises_naming(TypeError, "w_bits"):
        gemm_binary(ab, [[1, 2]], 100)
    with raises_naming(TypeError, "w_bits"):
        gemm_binary(ab, np.ones((5, 2), np.int64), 100)
    with raises_naming(ValueError, "w_bits"):
        gemm_binary(ab, np.ones((5, 3), np.uint64), 100)
    with raises_naming(ValueError, "w_bits"):
        gemm_binary(ab, np.ones((0, 2), np.uint64), 100)
    with raises_naming(ValueError, "w_bits"):  # packed for another K with the same words
        gemm_binary(ab, pack_weights(np.ones((101, 5)), "binary"), 100)


@pytest.mark.parametrize("name, value, exc", [
    ("alpha", np.ones(4), ValueError), ("alpha", np.ones(6), ValueError),
    ("alpha", np.ones((1, 5)), ValueError), ("alpha", [1, 2, np.nan, 4, 5], ValueError),
    ("alpha", np.full(5, np.inf), ValueError), ("alpha", np.full(5, 1e39), ValueError),
    ("alpha", "big", TypeError), ("alpha", np.ones(5, bool), TypeError),
    ("beta", np.ones(5), ValueError), ("beta", [1.0, -np.inf, 1.0], ValueError),
    ("beta", [], ValueError), ("beta", True, TypeError),
], ids=["alpha_short", "alpha_long", "alpha_2d", "alpha_nan", "alpha_inf",
        "alpha_overflows_f32", "alpha_str", "alpha_bool", "beta_len_n", "beta_inf",
        "beta_empty", "beta_bool"])
def test_bad_scales(small, name, value, exc, raises_naming):
    with raises_naming(exc, name):
        gemm_binary(small[0], small[1], 100, **{name: value})


def test_bad_out(small, raises_naming):
    ab, wp = small
    with raises_naming(TypeError, "out"):
        gemm_binary(ab, wp, 100, out=np.zeros((3, 5), np.float32))  # int32 result
    with raises_naming(TypeError, "out"):
        gemm_binary(ab, wp, 100, alpha=1.0, out=np.zeros((3, 5), np.int32))
    with raises_naming(ValueError, "out"):
        gemm_binary(ab, wp, 100, out=np.zeros((5, 3), np.int32))
    with raises_naming(ValueError, "out"):
        gemm_binary(ab, wp, 100, out=np.zeros((3, 10), np.int32)[:, ::2])
    raw = np.zeros(3 * 5 * 4 + 4, np.uint8)
    with raises_naming(ValueError, "out"):
        gemm_binary(ab, wp, 100, out=raw[1:61].view(np.int32).reshape(3, 5))


@pytest.mark.parametrize("name", ["avx512_vnni", "AVX2", "cuda", ""])
def test_bad_isa(small, name, raises_naming):
    with raises_naming(ValueError, "isa"):
        gemm_binary(small[0], small[1], 100, isa=name)


# --- the benchmark group and target ------------------------------------------------------------

def test_bench_group_and_target_are_declared():
    from lowbit import targets
    from lowbit.bench.config import BINARY_OP, BINARY_SHAPES, gemm_group
    from lowbit.bench.impls import pass_order

    assert BINARY_SHAPES == ((1024, 1024, 4096), (128, 4096, 4096), (1, 4096, 4096))
    names = [impl.name for impl in pass_order(BINARY_OP)]
    assert {"numpy_fp32", "lowbit_int8"} <= set(names)
    assert {f"lowbit[{isa}]" for isa in BINARY_ISAS if isa != "ref"} <= set(names)
    assert all(impl.op == BINARY_OP for impl in pass_order(BINARY_OP))
    [target] = [t for t in targets.default_targets() if t.op == BINARY_OP]
    assert target.group == gemm_group(1024, 1024, 4096, op=BINARY_OP) == \
        "gemm_binary-1024x1024x4096"
    assert (target.goal, target.baselines) == (20.0, ("numpy_fp32",))
