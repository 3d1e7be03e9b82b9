"""gemm_sparse24 against ref.gemm_sparse24 on every usable ISA; the 2:4 format and pruning.

int8 results are compared bit-exactly (and with ref.gemm_int8 on the dense 2:4 matrix, an
independent definition); float32 results within ``ref.sparse24_tolerance``, and exactly on
small integers, where every float32 step is exact.

Blocking (csrc/gemm_sparse24.c): K runs in groups of 4, steps of 8 and blocks of 32 (one
metadata word), N in panels of 64 columns, M in tiles of 5 rows (avx512_vnni int8) or 4
(the others). Activations are read in place when K is a multiple of 32 and packed
otherwise: the named cases cover both, on and around those edges; hypothesis covers shapes
in between.
"""
from __future__ import annotations

import dataclasses
import itertools
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
from lowbit.kernels import (FORMATS, Dequantize, PackedSparse24Weights, Requantize,
                            gemm_sparse24, pack_weights, prune_24, ref)
from lowbit.kernels.format_sparse24 import SPARSE24_PANELS
from lowbit.kernels.formats import ALIGN, aligned_empty
from lowbit.kernels.gemm_sparse24 import max_safe_k, sparse24_cost
from operand_views import operand_views

S8_ISAS = [k.key.isa for k in lk.REGISTRY.kernels("gemm_sparse24", "s8", "sparse24", usable=True)]
F32_ISAS = [k.key.isa for k in lk.REGISTRY.kernels("gemm_sparse24", "f32", "sparse24",
                                                     usable=True)]
ACT_ZP = [("s8", 0), ("s8", -37), ("u8", 0), ("u8", 131)]
ACT_ZP_IDS = [f"{a}-zp{z}" for a, z in ACT_ZP]
ACT_DTYPES = {"s8": np.int8, "u8": np.uint8}
PATTERNS = list(itertools.combinations(range(4), 2))   # the 6 ways to keep 2 of 4


# --- operands ------------------------------------------------------------------------------

def sparse_int8(rng, k: int, n: int, extreme: bool = False) -> np.ndarray:
    """A random 2:4 int8 [K, N] matrix (some groups with fewer than 2 nonzeros)."""
    if extreme:
        w = np.where(rng.integers(0, 2, (k, n)) == 1, 127, -128).astype(np.int8)
    else:
        w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    w = prune_24(w)
    w[rng.random((k, n)) < 0.1] = 0
    return w


def sparse_f32(rng, k: int, n: int) -> np.ndarray:
    w = prune_24(rng.standard_normal((k, n)).astype(np.float32))
    w[rng.random((k, n)) < 0.1] = 0
    return w


def rand_act(rng, m: int, k: int, act: str, extreme: bool = False) -> np.ndarray:
    info = np.iinfo(ACT_DTYPES[act])
    if extreme:
        return np.where(rng.integers(0, 2, (m, k)) == 1, info.max, info.min).astype(info.dtype)
    return rng.integers(info.min, int(info.max) + 1, (m, k), dtype=info.dtype)


def want_s8(a, w24: PackedSparse24Weights, zp: int = 0) -> np.ndarray:
    values, index = w24.kept()
    got = ref.gemm_sparse24(np.ascontiguousarray(a), values, index, zp)
    # an independent definition: the dense product of the same 2:4 matrix
    np.testing.assert_array_equal(got, ref.gemm_int8(np.ascontiguousarray(a), w24.unpack(), zp))
    return got


def check_f32(got, x, w24: PackedSparse24Weights, max_report: int = 6) -> None:
    values, index = w24.kept()
    want = ref.gemm_sparse24(x, values, index)
    tol = ref.sparse24_tolerance(x, values, index)
    assert got.dtype == np.float32 and got.shape == want.shape
    bad = np.argwhere(~(np.abs(got.astype(np.float64) - want) <= tol))
    if bad.size:
        first = [(int(i), int(j), float(got[i, j]), float(want[i, j]), float(tol[i, j]))
                 for i, j in bad[:max_report]]
        pytest.fail(f"{len(bad)} of {got.size} elements outside the bound; first "
                    f"(i, j, got, want, bound): {first}", pytrace=False)


# --- the format ----------------------------------------------------------------------------

def test_format_descriptor():
    fmt = FORMATS["sparse24"]
    assert fmt is SPARSE24_PANELS
    assert (fmt.nr, fmt.group, fmt.kept, fmt.k_block, fmt.index_bits) == (64, 4, 2, 32, 2)
    assert fmt.value_dtypes == ("int8", "float32") and fmt.kept_per_block == 16
    assert fmt.quad(np.int8) == 4 and fmt.quad(np.float32) == 1


def test_metadata_and_value_layout():
    """Column 0, block 0: kept value u = 4s + r at values[0, 0, s, 0, r] (int8) and its index
    at bits 8r + 2s of meta[0, 0, 0]."""
    k = 32
    w = np.zeros((k, 2), np.int8)
    kept = {}  # group -> (i0, i1), walking the 6 patterns
    for g in range(8):
        i0, i1 = PATTERNS[g % 6]
        w[4 * g + i0, 0], w[4 * g + i1, 0] = 2 * g + 1, -(2 * g + 2)
        kept[g] = (i0, i1)
    w24 = pack_weights(w, "sparse24")
    word = int(w24.meta[0, 0, 0])
    for s in range(4):
        for r in range(4):
            g, t = 2 * s + r // 2, r % 2
            assert (word >> (8 * r + 2 * s)) & 3 == kept[g][t]
            assert w24.values[0, 0, s, 0, r] == (2 * g + 1 if t == 0 else -(2 * g + 2))
    # (word >> 2s) & 0x03030303: the step's four indices, one per byte
    s = 1
    step = (word >> 2 * s) & 0x03030303
    assert [(step >> 8 * r) & 0xFF for r in range(4)] == [kept[2][0], kept[2][1], kept[3][0],
                                                           kept[3][1]]
    # column 1 is all zero: kept (0, 1) everywhere, value 0; padding columns likewise
    assert int(w24.meta[0, 0, 1]) == sum(1 << (8 * r + 2 * s) for s in range(4) for r in (1, 3))
    assert np.all(w24.values[0, 0, :, 1:, :] == 0)
    wf = pack_weights(w.astype(np.float32), "sparse24")
    assert np.array_equal(wf.meta, w24.meta)
    for u in range(16):
        assert wf.values[0, 0, u, 0] == w24.values[0, 0, u // 4, 0, u % 4]


def test_kept_indices_are_canonical():
    """Nonzeros' positions, completed by the lowest unused ones; always i0 < i1."""
    cols = [[0, 0, 0, 0], [0, 0, 5, 0], [7, 0, 0, 0], [0, 0, 0, -1], [0, 3, 0, 4], [9, 0, 0, 8]]
    w = np.array(cols, np.int8).T  # K = 4, one column per case
    values, index = pack_weights(w, "sparse24").kept()
    assert index[0].T.tolist() == [[0, 1], [0, 2], [0, 1], [0, 3], [1, 3], [0, 3]]
    assert values[0].T.tolist() == [[0, 0], [0, 5], [7, 0], [0, -1], [3, 4], [9, 8]]
    assert values.shape == (8, 2, 6)  # K padded to one block of 32: 8 groups
    assert np.all(values[1:] == 0) and np.all(index[:, 0] < index[:, 1])


BYTE_SHAPES = [(1, 1), (4, 64), (31, 65), (32, 64), (33, 130), (100, 7), (256, 200)]


@pytest.mark.parametrize("dtype", ["int8", "float32"])
@pytest.mark.parametrize("k, n", BYTE_SHAPES, ids=[f"K{k}-N{n}" for k, n in BYTE_SHAPES])
def test_byte_size(k, n, dtype):
    rng = np.random.default_rng(k + n)
    w = sparse_int8(rng, k, n).astype(dtype)
    w24 = pack_weights(w, "sparse24")
    panels, blocks = -(-n // 64), -(-k // 32)
    itemsize = np.dtype(dtype).itemsize
    # per panel and block: 16 kept values and one 32-bit metadata word per column
    formula = panels * blocks * 64 * (16 * itemsize + 4)
    assert SPARSE24_PANELS.nbytes(k, n, dtype) == formula == w24.nbytes
    assert w24.nbytes == w24.values.nbytes + w24.meta.nbytes
    assert w24.values.shape == SPARSE24_PANELS.packed_shape(k, n, dtype)
    assert w24.meta.shape == SPARSE24_PANELS.meta_shape(k, n) == (panels, blocks, 64)
    # exact blocks: half the values plus 2 bits per kept value, 0.625 of dense int8
    dense = 32 * blocks * 64 * panels * itemsize
    assert formula == dense // 2 + dense // (2 * 4 * itemsize)
    for arr in (w24.values, w24.meta):
        assert arr.ctypes.data % ALIGN == 0 and arr.flags.c_contiguous


ROUND_SHAPES = [(1, 1), (3, 5), (4, 64), (5, 65), (30, 3), (32, 64), (37, 70), (64, 1),
                (129, 130)]


@pytest.mark.parametrize("layout", ["kn", "nk"])
@pytest.mark.parametrize("dtype", ["int8", "float32"])
@pytest.mark.parametrize("k, n", ROUND_SHAPES, ids=[f"K{k}-N{n}" for k, n in ROUND_SHAPES])
def test_pack_unpack_round_trip(k, n, dtype, layout, assert_exact):
    rng = np.random.default_rng([k, n])
    w = (sparse_int8(rng, k, n) if dtype == "int8" else sparse_f32(rng, k, n))
    arg = w if layout == "kn" else np.ascontiguousarray(w.T)
    w24 = pack_weights(arg, "sparse24", layout=layout)
    assert isinstance(w24, PackedSparse24Weights) and w24.shape == (k, n)
    assert w24.dtype == np.dtype(dtype)
    assert_exact(w24.unpack(), w)
    values, index = w24.kept()
    assert_exact(SPARSE24_PANELS.expand(values, index, k), w)
    data, meta = SPARSE24_PANELS.pack(values, index)
    assert np.array_equal(data, w24.values) and np.array_equal(meta, w24.meta)
    if dtype == "int8":
        assert_exact(w24.col_sum, w.astype(np.int64).sum(axis=0).astype(np.int32))
        assert w24.col_abs_sum_max == int(np.abs(w.astype(np.int64)).sum(axis=0).max())
    else:
        assert w24.col_sum is None


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 200), n=st.integers(1, 150), seed=st.integers(0, 2 ** 32 - 1))
def test_round_trip_hypothesis(k, n, seed):
    w = sparse_int8(np.random.default_rng(seed), k, n)
    np.testing.assert_array_equal(pack_weights(w, "sparse24").unpack(), w)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 6, 7, 33, 34, 35])
def test_k_tail_is_a_zero_padded_group(k, assert_exact):
    """A partial last group (K % 4 != 0) holds its real values and zeros: it must have at
    most 2 nonzeros; its kept values never lie past K."""
    rng = np.random.default_rng(k)
    w = rng.integers(1, 100, (k, 3)).astype(np.int8)
    tail = k % 4
    w = prune_24(w)
    if tail:
        assert np.all(np.count_nonzero(w[k - tail:], axis=0) == min(tail, 2))
    w24 = pack_weights(w, "sparse24")
    assert_exact(w24.unpack(), w)
    values, index = w24.kept()
    pos = 4 * np.arange(values.shape[0])[:, None, None] + index
    assert np.all(values[pos >= k] == 0)
    if tail == 3:
        bad = w.copy()
        bad[k - 3:, 1] = [1, 2, 3]
        with pytest.raises(ValueError, match=rf"column 1, K {k - 3}\.\.{k - 1} has 3 nonzeros"):
            pack_weights(bad, "sparse24")


def test_rejects_a_matrix_that_is_not_2_4_naming_the_first_group():
    w = np.zeros((16, 5), np.float32)
    w[8:11, 3] = 1.0       # column 3, group 2: 3 nonzeros
    w[4:8, 2] = 2.0        # column 2, group 1: 4 nonzeros (the first: lowest column)
    w[0:3, 4] = -1.0
    with pytest.raises(ValueError, match=r"^w: not 2:4 sparse along K: column 2, K 4\.\.7 has "
                                         r"4 nonzeros \(3 such groups in all\)"):
        pack_weights(w, "sparse24")
    # the same matrix as nn.Linear.weight [N, K]: the same column (output channel) named
    with pytest.raises(ValueError, match=r"column 2, K 4\.\.7"):
        pack_weights(np.ascontiguousarray(w.T), "sparse24", layout="nk")
    assert SPARSE24_PANELS.first_violation(prune_24(w)) is None


def test_pack_rejects_bad_input(raises_naming):
    ok = np.zeros((8, 4), np.int8)
    cases = [
        (TypeError, "w", [[0] * 4] * 8),
        (TypeError, "w", np.zeros((8, 4), np.float64)),
        (TypeError, "w", np.zeros((8, 4), np.int16)),
        (TypeError, "w", np.zeros((8, 4), bool)),
        (ValueError, "w", np.zeros(8, np.int8)),
        (ValueError, "w", np.zeros((0, 4), np.int8)),
        (ValueError, "w", np.full((8, 4), np.nan, np.float32)),
        (ValueError, "w", np.ones((8, 4), np.int8)),       # 4 of 4 nonzero
    ]
    for exc, name, w in cases:
        with raises_naming(exc, name):
            pack_weights(w, "sparse24")
    with raises_naming(ValueError, "group_size"):
        pack_weights(ok, "sparse24", group_size=32)
    with raises_naming(ValueError, "layout"):
        pack_weights(ok, "sparse24", layout="kk")


def test_packed_record_checks_its_arrays(raises_naming):
    w24 = pack_weights(sparse_int8(np.random.default_rng(2), 40, 70), "sparse24")
    with raises_naming(ValueError, "w24.values"):
        dataclasses.replace(w24, values=w24.values.view(np.uint8))
    with raises_naming(ValueError, "w24.values"):
        dataclasses.replace(w24, k=100)
    with raises_naming(ValueError, "w24.meta"):
        dataclasses.replace(w24, meta=w24.meta.astype(np.int64))
    with raises_naming(ValueError, "w24.k, w24.n"):
        dataclasses.replace(w24, n=0)
    mis = aligned_empty((w24.meta.size + 1,), np.uint32)[1:].reshape(w24.meta.shape)
    mis[...] = w24.meta
    with raises_naming(ValueError, "w24.meta"):
        dataclasses.replace(w24, meta=mis)
    same = w24.meta.copy()
    same[0, 0, 0] = 0        # indices (0, 0): not increasing
    with raises_naming(ValueError, "w24.meta"):
        dataclasses.replace(w24, meta=same)
    past_n = w24.values.copy()
    past_n[1, 0, 0, 63, 0] = 1   # column 127 > N
    with raises_naming(ValueError, "w24.values"):
        dataclasses.replace(w24, values=past_n)
    past_k = w24.values.copy()   # K = 40: block 1 holds K 32..63; group 3 is K 44..47
    past_k[0, 1, 1, 0, 2] = 1
    with raises_naming(ValueError, "w24.values"):
        dataclasses.replace(w24, values=past_k)
    wf = pack_weights(sparse_f32(np.random.default_rng(3), 8, 4), "sparse24")
    inf = wf.values.copy()
    inf[0, 0, 0, 0] = np.inf
    with raises_naming(ValueError, "w24.values"):
        dataclasses.replace(wf, values=inf)
    with raises_naming(TypeError, "w24.fmt"):
        dataclasses.replace(w24, fmt=FORMATS["int8"])


def test_prune_24_keeps_the_two_largest():
    w = np.array([[1, -5, 3, 2], [4, 4, 4, 4], [0, 0, 0, 1], [-2, 2, 1, -1]], np.int8)
    got = prune_24(w, layout="nk")
    assert got.tolist() == [[0, -5, 3, 0], [4, 4, 0, 0], [0, 0, 0, 1], [-2, 2, 0, 0]]
    assert np.array_equal(prune_24(w.T).T, got)                     # layout "kn"
    # partial last group (K = 6): the 2 largest of its 2 real values
    w6 = np.array([[9, 1, 8, 7, -3, 3]], np.float32)
    assert prune_24(w6, layout="nk").tolist() == [[9, 0, 8, 0, -3, 3]]
    rng = np.random.default_rng(4)
    for dtype in (np.int8, np.float32):
        x = (rng.standard_normal((37, 9)) * 50).astype(dtype)
        p = prune_24(x)
        assert p.dtype == x.dtype and p.shape == x.shape
        assert SPARSE24_PANELS.first_violation(p) is None
        assert np.array_equal(prune_24(p), p)                           # idempotent
        kept = p != 0
        # every kept magnitude is at least every dropped one of its group
        for g in range(0, 37, 4):
            grp = np.abs(x[g:g + 4].astype(np.float64))
            lo = np.where(kept[g:g + 4], grp, np.inf).min(axis=0)
            hi = np.where(kept[g:g + 4] | (x[g:g + 4] == 0), -np.inf, grp).max(axis=0)
            assert np.all(lo >= hi)
    with pytest.raises(ValueError, match="layout"):
        prune_24(w, layout="x")
    with pytest.raises(TypeError, match="w"):
        prune_24(w.astype(np.int32))


# --- named edge cases: int8 ----------------------------------------------------------------

EDGE_CASES = [  # id, M, K, N
    ("m_one", 1, 64, 70),
    ("k_eq_group-K4", 5, 4, 64),
    ("k_lt_group-K1", 3, 1, 20),
    ("k_lt_group-K3", 4, 3, 65),
    ("k_tail-K5", 6, 5, 33),
    ("k_eq_step-K8", 7, 8, 64),
    ("k_eq_block-K32", 6, 32, 128),
    ("k_gt_block-K33", 9, 33, 70),
    ("k_tail-K37", 4, 37, 100),
    ("k_multi_block-K200", 12, 200, 64),
    ("n_tail-N1", 5, 40, 1),
    ("n_tail-N65", 6, 40, 65),
    ("n_tail-N130", 8, 72, 130),
    ("m_tail-M7", 7, 64, 70),
    ("m_tail-M13", 13, 64, 70),
    ("m_eq_tile-M24", 24, 32, 64),
    # big enough for the thread pool (M N K / 2 >= 2^18) and parallel A packing (M K >= 2^16)
    ("pool", 67, 1030, 200),
    ("pool-many_panels", 31, 300, 1000),
    ("pool-m_one", 1, 4099, 600),
    ("pool-n_one", 2000, 301, 1),
    ("pool-k_in_place", 67, 1024, 200),
    ("pool-m_one-k_in_place", 1, 4096, 600),
]
EDGE_IDS = [c[0] for c in EDGE_CASES]


@pytest.mark.parametrize("isa", S8_ISAS)
@pytest.mark.parametrize("act, zp", ACT_ZP, ids=ACT_ZP_IDS)
@pytest.mark.parametrize("case, m, k, n", EDGE_CASES, ids=EDGE_IDS)
def test_edges_int8(case, m, k, n, act, zp, isa, assert_exact):
    rng = np.random.default_rng([EDGE_IDS.index(case), ACT_ZP.index((act, zp))])
    w24 = pack_weights(sparse_int8(rng, k, n), "sparse24")
    a = rand_act(rng, m, k, act)
    got = gemm_sparse24(a, w24, a_zero_point=zp, isa=isa)
    assert got.dtype == np.int32 and got.shape == (m, n) and got.flags.c_contiguous
    assert_exact(got, want_s8(a, w24, zp))


@pytest.mark.parametrize("isa", S8_ISAS)
@pytest.mark.parametrize("act, zp", [("s8", 0), ("u8", 0), ("u8", 255), ("s8", -128)],
                         ids=["s8", "u8", "u8-zp255", "s8-zp-128"])
def test_extreme_values(isa, act, zp, assert_exact):
    """Activations and weights at the ends of their ranges (-128 / 127, 0 / 255), with zero
    points that make |a - zp| reach 255; results near the int32 limits at the largest K
    for which they fit."""
    rng = np.random.default_rng(7)
    for k, n in ((64, 70), (1000, 65)):
        w24 = pack_weights(sparse_int8(rng, k, n, extreme=True), "sparse24")
        a = rand_act(rng, 9, k, act, extreme=True)
        assert_exact(gemm_sparse24(a, w24, a_zero_point=zp, isa=isa), want_s8(a, w24, zp))
    # |sum| = kept * 128 * 128 with every product -128 * -128: K = 131072 -> 2^30
    k = 4 * 32768
    w = np.zeros((k, 2), np.int8)
    w[0::4], w[1::4] = -128, -128
    a = np.full((1, k), -128, np.int8)
    got = gemm_sparse24(a, pack_weights(w, "sparse24"), isa=isa)
    assert got.tolist() == [[2 ** 30, 2 ** 30]]


@pytest.mark.parametrize("isa", S8_ISAS)
def test_all_index_patterns(isa, assert_exact):
    """Every pair of group patterns (6 x 6) in every slot of a step, each with its own values,
    against activations that are distinct at every K (a wrong gather cannot cancel)."""
    combos = list(itertools.product(range(6), range(6)))       # (pattern of 2s, of 2s + 1)
    n, k = len(combos), 32
    w = np.zeros((k, n), np.int8)
    rng = np.random.default_rng(8)
    for j, (p0, p1) in enumerate(combos):
        for s in range(4):  # rotate the pair through the 4 steps of the block
            for grp, pat in ((2 * s, PATTERNS[(p0 + s) % 6]), (2 * s + 1, PATTERNS[(p1 + s) % 6])):
                for i in pat:
                    w[4 * grp + i, j] = rng.integers(1, 128) * rng.choice([-1, 1])
    w24 = pack_weights(w, "sparse24")
    _, index = w24.kept()
    seen = {(tuple(index[g, :, j])) for g in range(8) for j in range(n)}
    assert seen == set(PATTERNS)
    a = (np.arange(3 * k).reshape(3, k) * 7 % 251 - 125).astype(np.int8)
    assert_exact(gemm_sparse24(a, w24, isa=isa), want_s8(a, w24))


VIEWS = list(operand_views(np.zeros((20, 300), np.float32), 3, 64))
VIEW_K = [64, 70]  # read in place (K % 32 == 0) and packed


@pytest.mark.parametrize("isa", S8_ISAS)
@pytest.mark.parametrize("k", VIEW_K)
@pytest.mark.parametrize("view", VIEWS)
def test_non_contiguous_int8(isa, view, k, assert_exact):
    m, n = 7, 70
    rng = np.random.default_rng([VIEWS.index(view), k])
    w24 = pack_weights(sparse_int8(rng, k, n), "sparse24")
    a = operand_views(rng.integers(-128, 128, (2 * m + 2, 2 * k + 4), dtype=np.int8), m, k)[view]
    keep = a.copy()
    got = gemm_sparse24(a, w24, isa=isa)
    np.testing.assert_array_equal(a, keep)
    assert_exact(got, want_s8(keep, w24))


# --- float32 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("isa", F32_ISAS)
@pytest.mark.parametrize("case, m, k, n", EDGE_CASES, ids=EDGE_IDS)
def test_edges_f32(case, m, k, n, isa):
    rng = np.random.default_rng([EDGE_IDS.index(case), 99])
    w24 = pack_weights(sparse_f32(rng, k, n), "sparse24")
    x = rng.standard_normal((m, k)).astype(np.float32)
    got = gemm_sparse24(x, w24, isa=isa)
    assert got.shape == (m, n) and got.flags.c_contiguous
    check_f32(got, x, w24)


@pytest.mark.parametrize("isa", F32_ISAS)
def test_f32_exact_on_small_integers(isa, assert_exact):
    """Small integers: every product and partial sum is exact in float32, so any order of
    summation gives the reference exactly (all index patterns, K and N tails)."""
    rng = np.random.default_rng(10)
    for m, k, n in ((5, 37, 70), (1, 128, 130), (13, 4, 3)):
        w = prune_24(rng.integers(-20, 21, (k, n)).astype(np.float32))
        w24 = pack_weights(w, "sparse24")
        x = rng.integers(-20, 21, (m, k)).astype(np.float32)
        values, index = w24.kept()
        assert_exact(gemm_sparse24(x, w24, isa=isa), ref.gemm_sparse24(x, values, index))
        assert_exact(gemm_sparse24(x, w24, isa=isa), (x @ w).astype(np.float32))


@pytest.mark.parametrize("isa", F32_ISAS)
@pytest.mark.parametrize("k", VIEW_K)
@pytest.mark.parametrize("view", VIEWS)
def test_non_contiguous_f32(isa, view, k):
    m, n = 7, 70
    rng = np.random.default_rng([VIEWS.index(view), k, 30])
    w24 = pack_weights(sparse_f32(rng, k, n), "sparse24")
    x = operand_views(rng.standard_normal((2 * m + 2, 2 * k + 4)).astype(np.float32), m, k)[view]
    keep = x.copy()
    check_f32(gemm_sparse24(x, w24, isa=isa), np.ascontiguousarray(keep), w24)
    np.testing.assert_array_equal(x, keep)


def test_tolerance_catches_a_missing_term():
    rng = np.random.default_rng(11)
    w24 = pack_weights(sparse_f32(rng, 256, 8), "sparse24")
    x = rng.standard_normal((2, 256)).astype(np.float32)
    values, index = w24.kept()
    tol = ref.sparse24_tolerance(x, values, index)
    terms = x[0, :, None].astype(np.float64) * w24.unpack()
    j = int(np.argmax(np.abs(terms).max(axis=0)))
    assert np.abs(terms[:, j]).max() > tol[0, j] > 0


# --- hypothesis -----------------------------------------------------------------------------

@pytest.mark.parametrize("isa", S8_ISAS)
@settings(max_examples=15, deadline=None)
@given(m=st.integers(1, 20), k=st.integers(1, 300), n=st.integers(1, 150),
       act_zp=st.sampled_from(ACT_ZP), seed=st.integers(0, 2 ** 32 - 1))
def test_random_shapes_int8(isa, m, k, n, act_zp, seed):
    act, zp = act_zp
    rng = np.random.default_rng(seed)
    w24 = pack_weights(sparse_int8(rng, k, n), "sparse24")
    a = rand_act(rng, m, k, act)
    np.testing.assert_array_equal(gemm_sparse24(a, w24, a_zero_point=zp, isa=isa),
                                  want_s8(a, w24, zp))


@pytest.mark.parametrize("isa", F32_ISAS)
@settings(max_examples=12, deadline=None)
@given(m=st.integers(1, 20), k=st.integers(1, 300), n=st.integers(1, 150),
       seed=st.integers(0, 2 ** 32 - 1))
def test_random_shapes_f32(isa, m, k, n, seed):
    rng = np.random.default_rng(seed)
    w24 = pack_weights(sparse_f32(rng, k, n), "sparse24")
    x = rng.standard_normal((m, k)).astype(np.float32)
    check_f32(gemm_sparse24(x, w24, isa=isa), x, w24)


# --- epilogues, out=, overflow -----------------------------------------------------------------

@pytest.mark.parametrize("isa", S8_ISAS)
def test_epilogues_match_gemm_int8s(isa, assert_exact):
    """Requantize / Dequantize give what gemm_int8 gives on the dense 2:4 matrix."""
    rng = np.random.default_rng(12)
    m, k, n = 9, 100, 70
    w = sparse_int8(rng, k, n)
    w24, wd = pack_weights(w, "sparse24"), pack_weights(w)
    a = rand_act(rng, m, k, "u8")
    eps = [Requantize.from_scale(rng.uniform(1e-5, 1e-3, n), zero_point=3,
                                 bias=rng.integers(-1000, 1000, n)),
           Requantize.from_scale(2e-4, out_dtype="uint8", zero_point=128),
           Dequantize(w_scale=rng.uniform(0.01, 0.1, n), a_scale=rng.uniform(0.01, 0.1, m),
                      bias=rng.standard_normal(n))]
    for ep in eps:
        got = gemm_sparse24(a, w24, a_zero_point=120, epilogue=ep, isa=isa)
        want = lk.gemm_int8(a, wd, a_zero_point=120, epilogue=ep, isa="ref")
        assert_exact(got, want)


@pytest.mark.parametrize("isa", S8_ISAS + [f"f32-{i}" for i in F32_ISAS])
def test_out_argument_and_m_zero(isa, assert_exact):
    f32 = isa.startswith("f32-")
    isa = isa.removeprefix("f32-")
    rng = np.random.default_rng(13)
    m, k, n = 5, 70, 40
    w = sparse_int8(rng, k, n)
    dtype = np.float32 if f32 else np.int32
    w24 = pack_weights(w.astype(np.float32) if f32 else w, "sparse24")
    a = rand_act(rng, m, k, "s8").astype(np.float32 if f32 else np.int8)
    big = np.full((m + 3, n + 5), 77, dtype)
    out = big[1:1 + m, 2:2 + n]
    assert gemm_sparse24(a, w24, out=out, isa=isa) is out
    assert_exact(out, gemm_sparse24(a, w24, isa=isa))
    mask = np.ones(big.shape, bool)
    mask[1:1 + m, 2:2 + n] = False
    assert np.all(big[mask] == 77)
    empty = gemm_sparse24(a[:0], w24, isa=isa)
    assert empty.shape == (0, n) and empty.dtype == dtype


def test_numba_tier_repacks_the_weights_once(assert_exact):
    """The Numba kernel reads int8 values kept-major; that form is built on the first call
    per packed matrix, reused after (also through an epilogue and a row-slice out), and
    dropped with the matrix."""
    import gc
    import weakref

    from lowbit.kernels import numba_sparse24

    rng = np.random.default_rng(14)
    w = sparse_int8(rng, 70, 90)
    w24 = pack_weights(w, "sparse24")
    a = rand_act(rng, 6, 70, "s8")
    assert_exact(gemm_sparse24(a, w24, isa="numba"), want_s8(a, w24))
    cached = numba_sparse24._KEPT_MAJOR[w24]
    assert cached.shape == (2, 3, 16, 64) and cached.flags.c_contiguous
    ep = Requantize.from_scale(1e-3, zero_point=5)
    out = np.zeros((9, 90), np.int8)[2:8]
    gemm_sparse24(a, w24, epilogue=ep, out=out, isa="numba")
    assert_exact(out, lk.gemm_int8(a, pack_weights(w), epilogue=ep, isa="ref"))
    assert numba_sparse24._KEPT_MAJOR[w24] is cached
    wf = pack_weights(w.astype(np.float32), "sparse24")   # float32 panels are read as they are
    assert numba_sparse24.kept_major_values(wf) is wf.values
    gone, held = weakref.ref(w24), len(numba_sparse24._KEPT_MAJOR)
    del w24, cached
    gc.collect()
    assert gone() is None and len(numba_sparse24._KEPT_MAJOR) == held - 1


def test_overflow_guard(raises_naming):
    assert max_safe_k("s8") == 262140 and max_safe_k("u8") == 131584
    assert max_safe_k("u8", 128) == max_safe_k("s8")
    k = max_safe_k("s8") + 4
    w = np.zeros((k, 1), np.int8)
    w[0::4] = -128
    w[1::4] = -128
    w24 = pack_weights(w, "sparse24")
    with raises_naming(ValueError, "a, w24"):
        gemm_sparse24(np.full((1, k), -128, np.int8), w24)
    small = np.zeros((1, k), np.int8)   # provably safe from the data: runs
    small[0, :4] = 1
    assert gemm_sparse24(small, w24).tolist() == [[-256]]


# --- validation --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(14)
    w = sparse_int8(rng, 64, 5)
    return pack_weights(w, "sparse24"), pack_weights(w.astype(np.float32), "sparse24")


@pytest.mark.parametrize("bad, exc", [
    ([[1] * 64], TypeError), (np.ones((3, 64), np.float64), TypeError),
    (np.ones((3, 64), np.int16), TypeError), (np.ones(64, np.int8), ValueError),
    (np.ones((3, 2, 64), np.int8), ValueError), (np.ones((3, 32), np.int8), ValueError),
], ids=["list", "float64", "int16", "1d", "3d", "k_mismatch"])
def test_bad_activations(small, bad, exc, raises_naming):
    with raises_naming(exc, "a"):
        gemm_sparse24(bad, small[0])


def test_bad_arguments(small, raises_naming):
    w8, wf = small
    a, x = np.ones((3, 64), np.int8), np.ones((3, 64), np.float32)
    with raises_naming(TypeError, "w24"):
        gemm_sparse24(a, pack_weights(np.zeros((64, 5), np.int8)))
    with raises_naming(TypeError, "w24"):
        gemm_sparse24(a, np.zeros((64, 5), np.int8))
    with raises_naming(TypeError, "w24"):
        gemm_sparse24(x, w8)                          # float32 activations, int8 weights
    with raises_naming(TypeError, "w24"):
        gemm_sparse24(a, wf)
    with raises_naming(ValueError, "a"):
        gemm_sparse24(np.full((3, 64), np.nan, np.float32), wf)
    for zp in (-129, 128, 1.5, True, "1"):
        with raises_naming(ValueError, "a_zero_point"):
            gemm_sparse24(a, w8, a_zero_point=zp)
    with raises_naming(ValueError, "a_zero_point"):
        gemm_sparse24(a.view(np.uint8), w8, a_zero_point=256)
    with raises_naming(ValueError, "a_zero_point"):
        gemm_sparse24(x, wf, a_zero_point=3)
    with raises_naming(ValueError, "epilogue"):
        gemm_sparse24(x, wf, epilogue=Dequantize(w_scale=1.0))
    with raises_naming(TypeError, "epilogue"):
        gemm_sparse24(a, w8, epilogue="int8")
    with raises_naming(TypeError, "out"):
        gemm_sparse24(a, w8, out=np.zeros((3, 5), np.float32))
    with raises_naming(ValueError, "out"):
        gemm_sparse24(a, w8, out=np.zeros((5, 3), np.int32))
    with raises_naming(ValueError, "out"):
        gemm_sparse24(a, w8, out=np.zeros((3, 10), np.int32)[:, ::2])
    with raises_naming(ValueError, "out"):
        gemm_sparse24(x, wf, out=np.zeros((3, 5), np.float32)[::-1])
    ro = np.zeros((3, 5), np.int32)
    ro.flags.writeable = False
    with raises_naming(ValueError, "out"):
        gemm_sparse24(a, w8, out=ro)
    for name in ("cuda", "AVX2", ""):
        with raises_naming(ValueError, "isa"):
            gemm_sparse24(a, w8, isa=name)
    with raises_naming(ValueError, "isa"):
        gemm_sparse24(x, wf, isa="avx512_vnni")       # no float32 VNNI variant


# --- dispatch, costs, fallbacks -------------------------------------------------------------

def test_registry_entries_and_costs():
    for act, isas in (("s8", ["avx512_vnni", "avx512", "avx2", "portable", "numba", "ref"]),
                      ("u8", ["avx512_vnni", "avx512", "avx2", "portable", "numba", "ref"]),
                      ("f32", ["avx512", "avx2", "portable", "numba", "ref"])):
        assert [k.key.isa for k in lk.REGISTRY.kernels("gemm_sparse24", act, "sparse24")] == isas
    assert lk.REGISTRY.lookup("gemm_sparse24", "s8", "sparse24").key.isa == S8_ISAS[0]
    assert lk.REGISTRY.lookup("gemm_sparse24", "f32", "sparse24").key.isa == F32_ISAS[0]
    # ops: the executed multiply-adds, 2 M N K/2; bytes: activations, K/2 kept values and
    # their 2-bit indices per column, output
    c8 = lk.REGISTRY.lookup("gemm_sparse24", "s8", "sparse24", "ref").cost(2, 64, 128)
    assert c8 == (2 * 64 * 128, 2 * 128 + 64 * 64 + 64 * 64 * 2 // 8 + 2 * 64 * 4)
    cf = lk.REGISTRY.lookup("gemm_sparse24", "f32", "sparse24", "ref").cost(2, 64, 128)
    assert cf == (2 * 64 * 128, 2 * 128 * 4 + 64 * 64 * 4 + 64 * 64 * 2 // 8 + 2 * 64 * 4)
    assert sparse24_cost(1, 1, 5, a_bits=8, value_bits=8, out_bits=32)[0] == 2 * 4  # K tail
    features = set(lk.cpu_features())
    avx512 = {"avx512f", "avx512bw", "avx512dq", "avx512vl"}
    s8 = {k.key.isa: k for k in lk.REGISTRY.kernels("gemm_sparse24", "s8", "sparse24")}
    assert s8["avx512_vnni"].supported() == (avx512 | {"avx512_vnni", "avx512_vbmi"} <= features)
    assert s8["avx512"].supported() == (avx512 <= features)
    assert s8["portable"].supported()


DISABLE_CASES = [("avx512_vnni", "avx512", "avx512"), ("avx512_vnni,avx512", "avx2", "avx2"),
                 ("avx512_vnni,avx512,avx2", "portable", "portable"),
                 ("avx512_vnni,avx512,avx2,portable", "portable", "portable")]


@pytest.mark.skipif(not {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni",
                         "avx512_vbmi"} <= set(lk.cpu_features()),
                    reason="needs every C variant usable")
@pytest.mark.parametrize("disabled, s8, f32", DISABLE_CASES, ids=[c[0] for c in DISABLE_CASES])
def test_disable_isa_falls_back(disabled, s8, f32):
    """LOWBIT_DISABLE_ISA reaches each fallback: the registry and the C side's own choice
    agree, and the default path stays exact (int8) / within the bound (float32)."""
    code = textwrap.dedent("""
        import json
        import numpy as np
        import lowbit.kernels as lk
        from lowbit.kernels import native, ref
        rng = np.random.default_rng(1)
        w = lk.prune_24(rng.integers(-128, 128, (300, 90)).astype(np.int8))
        a = rng.integers(-128, 128, (13, 300)).astype(np.int8)
        w24 = lk.pack_weights(w, "sparse24")
        exact = np.array_equal(lk.gemm_sparse24(a, w24), ref.gemm_int8(a, w))
        wf = lk.pack_weights(w.astype(np.float32), "sparse24")
        x = a.astype(np.float32)
        close = np.array_equal(lk.gemm_sparse24(x, wf), (x @ w.astype(np.float32)))
        print(json.dumps({
            "s8": lk.REGISTRY.lookup("gemm_sparse24", "s8", "sparse24").key.isa,
            "f32": lk.REGISTRY.lookup("gemm_sparse24", "f32", "sparse24").key.isa,
            "c_s8": native.C_ISAS[native.lib.lb_gemm_sparse24_selected(0)],
            "c_f32": native.C_ISAS[native.lib.lb_gemm_sparse24_selected(1)],
            "exact": bool(exact), "f32_exact": bool(close)}))
    """)
    env = {key: v for key, v in os.environ.items() if key != "LOWBIT_DISABLE_ISA"}
    env["LOWBIT_DISABLE_ISA"] = disabled
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    # "portable" disabled too: the registry falls to Numba, the C side keeps its floor
    want_py = "numba" if "portable" in disabled.split(",") else s8
    assert res == {"s8": want_py, "f32": "numba" if want_py == "numba" else f32,
                   "c_s8": s8, "c_f32": f32, "exact": True, "f32_exact": True}


def test_bench_groups_and_targets_are_declared():
    from lowbit import targets
    from lowbit.bench.config import SPARSE24_OP, SPARSE24_SHAPES, gemm_group
    from lowbit.bench.impls import pass_order

    assert SPARSE24_SHAPES == ((1, 4096, 4096), (128, 4096, 4096), (1024, 1024, 1024))
    names = [impl.name for impl in pass_order(SPARSE24_OP)]
    assert {"lowbit_int8_dense", "numpy_fp32"} <= set(names)
    assert {f"lowbit[{isa}]" for isa in S8_ISAS if isa != "ref"} <= set(names)
    assert {f"lowbit_f32[{isa}]" for isa in F32_ISAS if isa != "ref"} <= set(names)
    mine = [t for t in targets.default_targets() if t.op == SPARSE24_OP]
    assert {(t.group, t.goal, t.baselines) for t in mine} == {
        (gemm_group(1, 4096, 4096, op=SPARSE24_OP), 1.6, ("lowbit_int8_dense",)),
        (gemm_group(128, 4096, 4096, op=SPARSE24_OP), 1.3, ("lowbit_int8_dense",))}
