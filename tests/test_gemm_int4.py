"""gemm_w4a16 / gemm_w4a8 against their references on every usable ISA; the int4 formats.

Float outputs are compared with the float64 references within the K-dependent bounds
``ref.w4a16_tolerance`` / ``ref.w4a8_tolerance``; gemm_w4a8's int32 group accumulators are
checked exactly through the reference (``ref.w4a8_group_acc``), and the kernels' integer
part exactly on inputs whose float results are exact (power-of-two scales, small integers).

Blocking (csrc/gemm_w4.c): K runs in blocks of 8 and groups of 32, 64 or 128, N in panels
of 64 columns, M in tiles of 8 rows (M <= 8 is one tile: the GEMV path). The named cases
sit on those edges for every group size, symmetric (int4) and asymmetric (uint4) weights;
hypothesis covers shapes in between.
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
from lowbit.kernels import (FORMATS, PackedInt4Weights, gemm_w4a8, gemm_w4a16, native,
                            pack_weights, ref)
from lowbit.kernels.formats import ALIGN, INT4_PANELS, UINT4_PANELS, aligned_empty
from lowbit.kernels.gemm_int4 import bf16_to_f32
from operand_views import operand_views

W4A16_ISAS = [k.key.isa for k in lk.REGISTRY.kernels("gemm_w4a16", "f32", "int4", usable=True)]
# bfloat16 activations: the same variants, plus the vdpbf16ps one ("avx512_vnni") if usable
W4A16_BF16_ISAS = [k.key.isa for k in lk.REGISTRY.kernels("gemm_w4a16", "bf16", "int4",
                                                           usable=True)]
W4A8_ISAS = [k.key.isa for k in lk.REGISTRY.kernels("gemm_w4a8", "s8", "int4", usable=True)]
FEATURES = set(lk.cpu_features())
FMTS = ["int4", "uint4"]
GROUPS = [32, 64, 128]


# --- operands ------------------------------------------------------------------------------

def quantized(rng, k: int, n: int, fmt: str, group_size: int, scale_dtype="float16",
              extreme: bool = False) -> PackedInt4Weights:
    """Random already-quantized weights (every nibble value likely), random scales."""
    g = k // group_size
    lo, hi = FORMATS[fmt].value_range
    if extreme:  # only the end nibbles: -8 and 7 (int4), 0 and 15 (uint4)
        q = np.where(rng.integers(0, 2, (k, n)) == 1, hi, lo).astype(np.int8)
    else:
        q = rng.integers(lo, hi + 1, size=(k, n), dtype=np.int8)
    scales = rng.uniform(0.5, 2.0, (g, n)) * rng.choice([-1, 1], (g, n))
    zeros = rng.integers(0, 16, (g, n)) if fmt == "uint4" else None
    if extreme and zeros is not None:
        zeros = np.where(rng.integers(0, 2, (g, n)) == 1, 15, 0)
    return pack_weights(q, fmt, group_size=group_size, scales=scales.astype(scale_dtype),
                        zero_points=zeros)


def to_bf16(x: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) of float32 x, truncated."""
    return (np.ascontiguousarray(x, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def check_w4a16(got, x, w4):
    x = bf16_to_f32(x) if x.dtype == np.uint16 else x
    want = ref.gemm_w4a16(x, w4.dequantize())
    tol = ref.w4a16_tolerance(x, w4.nibbles(), w4.zero_points(), w4.group_scales(),
                              w4.group_size)
    _within(got, want, tol)


def check_w4a8(got, a, w4, a_scale=None):
    acc = ref.w4a8_group_acc(a, w4.values(), w4.group_size)
    want = ref.w4a8_from_acc(acc, w4.group_scales(), a_scale)
    _within(got, want, ref.w4a8_tolerance(acc, w4.group_scales(), a_scale))


def _within(got, want, tol, max_report: int = 6):
    assert got.dtype == np.float32 and got.shape == want.shape
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bad = np.argwhere(~(err <= tol))
    if bad.size:
        first = [(int(i), int(j), float(got[i, j]), float(want[i, j]), float(tol[i, j]))
                 for i, j in bad[:max_report]]
        pytest.fail(f"{len(bad)} of {got.size} elements outside the bound; first "
                    f"(i, j, got, want, bound): {first}", pytrace=False)


# --- the format ----------------------------------------------------------------------------

def test_format_descriptors():
    assert FORMATS["int4"] is INT4_PANELS and FORMATS["uint4"] is UINT4_PANELS
    for fmt in (INT4_PANELS, UINT4_PANELS):
        assert (fmt.bits, fmt.nr, fmt.k_block, fmt.group_sizes) == (4, 64, 8, (32, 64, 128))
        assert fmt.scale_dtypes == ("float16", "float32")
        assert "low nibble" in fmt.nibble_order and "high nibble" in fmt.nibble_order
    assert not INT4_PANELS.zero_point and UINT4_PANELS.zero_point
    assert INT4_PANELS.value_range == (-8, 7) and UINT4_PANELS.value_range == (0, 15)


def test_nibble_order():
    """Byte b of the word of column j, K block q: low nibble K 8q + b, high nibble K 8q + b + 4."""
    v = np.array([-8, -7, -6, -5, 4, 5, 6, 7] * 2, np.int8)[:, None]  # K = 16, N = 1
    w4 = pack_weights(np.tile(v, (2, 1)), "int4", group_size=32,
                      scales=np.ones((1, 1), np.float32))
    nib = (v[:8, 0].astype(np.int16) + 8).astype(np.uint8)  # n = v + 8
    word = w4.data[0, 0, 0]  # panel 0, block 0, column 0: four bytes
    assert word.tolist() == [int(nib[b] | nib[b + 4] << 4) for b in range(4)]
    assert word.tolist() == [0xC0, 0xD1, 0xE2, 0xF3]
    # as a 32-bit word, the nibble at bits 4i..4i+3 is K (i even: i/2, odd: 4 + i/2)
    u32 = int(w4.data[0, 0, 0].view("<u4")[0])
    kpos = (0, 4, 1, 5, 2, 6, 3, 7)
    assert [(u32 >> 4 * i) & 15 for i in range(8)] == [int(nib[k]) for k in kpos]
    assert np.all(w4.data[0, 0, 1:] == 0)  # padding columns


BYTE_SHAPES = [(32, 1), (64, 64), (128, 65), (256, 130), (384, 7)]


@pytest.mark.parametrize("scale_dtype", ["float16", "float32"])
@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("k, n", BYTE_SHAPES, ids=[f"K{k}-N{n}" for k, n in BYTE_SHAPES])
def test_byte_size(k, n, fmt, scale_dtype):
    spec = FORMATS[fmt]
    for g in (gs for gs in GROUPS if k % gs == 0):
        w4 = quantized(np.random.default_rng(k + n), k, n, fmt, g, scale_dtype)
        panels, groups = -(-n // 64), k // g
        formula = panels * 64 * (k // 2 + groups * (np.dtype(scale_dtype).itemsize
                                                      + (fmt == "uint4")))
        stored = w4.data.nbytes + w4.scales.nbytes + (0 if w4.zeros is None else w4.zeros.nbytes)
        assert spec.nbytes(k, n, g, scale_dtype) == formula == stored == w4.nbytes
        assert w4.data.shape == spec.packed_shape(k, n) == (panels, k // 8, 64, 4)
        assert w4.scales.shape == spec.group_shape(k, n, g) == (panels, groups, 64)
        # half a byte per weight plus the per-group metadata, up to the panel padding
        assert stored >= k * n / 2


@pytest.mark.parametrize("layout", ["kn", "nk"])
@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("g", GROUPS)
def test_pack_unpack_round_trip(g, fmt, layout, assert_exact):
    rng = np.random.default_rng(g)
    k, n = 2 * g, 70
    w4 = quantized(rng, k, n, fmt, g, "float32")
    q, s, z = w4.unpack(), w4.group_scales(), (w4.zero_points() if fmt == "uint4" else None)
    lo, hi = FORMATS[fmt].value_range
    assert q.dtype == np.int8 and lo <= q.min() and q.max() <= hi
    if layout == "nk":
        again = pack_weights(np.ascontiguousarray(q.T), fmt, layout="nk", group_size=g,
                             scales=np.ascontiguousarray(s.T),
                             zero_points=None if z is None else np.ascontiguousarray(z.T))
    else:
        again = pack_weights(q, fmt, group_size=g, scales=s, zero_points=z)
    for name in ("data", "scales", "zeros"):
        a, b = getattr(w4, name), getattr(again, name)
        assert (a is None and b is None) or np.array_equal(a, b), name
    nib, sc, zp = FORMATS[fmt].unpack(w4.data, w4.scales, w4.zeros, k, n)
    assert_exact(nib, w4.nibbles())
    assert_exact(sc, s)
    assert (zp is None) == (fmt == "int4")
    repacked = FORMATS[fmt].pack(nib, sc, zp)
    assert all((a is None and b is None) or np.array_equal(a, b)
               for a, b in zip(repacked, (w4.data, w4.scales, w4.zeros)))
    values = w4.values().astype(np.int16)
    zp = np.repeat(w4.zero_points().astype(np.int16), g, axis=0)
    assert_exact(values, w4.nibbles().astype(np.int16) - zp)
    np.testing.assert_array_equal(w4.dequantize(),
                                  values * np.repeat(s.astype(np.float64), g, axis=0))
    for arr in (w4.data, w4.scales) + (() if w4.zeros is None else (w4.zeros,)):
        assert arr.ctypes.data % ALIGN == 0 and arr.flags.c_contiguous


def test_padding_is_zero():
    w4 = quantized(np.random.default_rng(1), 64, 70, "uint4", 32)
    assert np.all(w4.data[1, :, 6:] == 0) and np.all(w4.scales[1, :, 6:] == 0)
    assert np.all(w4.zeros[1, :, 6:] == 0)


def test_quantize_symmetric_absmax():
    """int4: s = max|w| / 7 per group and column, v = rint(w / s) (ties to even)."""
    w = np.zeros((32, 3), np.float32)
    w[:, 0] = np.linspace(-7, 7, 32)
    w[0, 1], w[1, 1], w[2, 1] = 3.5, 0.5, 1.5          # s = 0.5: 3.5 / 0.5 = 7, 1 (tie), 3
    w4 = pack_weights(w, "int4", group_size=32, scale_dtype="float32")
    assert w4.group_scales()[0].tolist() == [1.0, 0.5, 0.0]  # an all-zero group: scale 0
    v = w4.values()
    assert v[0, 0] == -7 and v[-1, 0] == 7 and v[:3, 1].tolist() == [7, 1, 3]
    assert np.all(v[:, 2] == 0) and np.all(w4.nibbles()[:, 2] == 8)
    err = np.abs(w4.dequantize() - w)
    assert np.all(err <= np.repeat(w4.group_scales().astype(np.float64), 32, axis=0) / 2 + 1e-12)


def test_quantize_asymmetric_min_max():
    """uint4: range [min(w, 0), max(w, 0)] in 15 steps, z = rint(-lo / s)."""
    w = np.zeros((32, 2), np.float32)
    w[:, 0] = np.linspace(-1.0, 2.0, 32)                # s = 0.2, z = 5
    w[:, 1] = np.linspace(1.0, 3.0, 32)                 # all positive: lo = 0, z = 0
    w4 = pack_weights(w, "uint4", group_size=32, scale_dtype="float32")
    s, z = w4.group_scales()[0], w4.zero_points()[0]
    np.testing.assert_allclose(s, [0.2, 0.2], rtol=1e-7)
    assert z.tolist() == [5, 0]
    n = w4.nibbles()
    assert (n[0, 0], n[-1, 0], n[-1, 1]) == (0, 15, 15)
    err = np.abs(w4.dequantize() - w)
    assert err.max() <= 0.1 + 1e-6


@pytest.mark.parametrize("fmt", FMTS)
def test_quantize_float16_scales_are_used_rounded(fmt):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((128, 40)).astype(np.float32)
    w4 = pack_weights(w, fmt, group_size=64)
    assert w4.scales.dtype == np.float16
    # the dequantized weights are within half a (rounded) scale step of w, plus clipping
    s = np.repeat(np.abs(w4.group_scales().astype(np.float64)), 64, axis=0)
    assert np.all(np.abs(w4.dequantize() - w) <= 0.5 * s * (1 + 1e-3) + 1e-12)


def test_pack_rejects_bad_input(raises_naming):
    w = np.ones((64, 4), np.float32)
    q = np.ones((64, 4), np.int8)
    s = np.ones((2, 4), np.float32)
    cases = [
        (TypeError, "w", dict(w=[[1.0]], fmt="int4")),
        (TypeError, "w", dict(w=np.ones((64, 4), bool), fmt="int4")),
        (ValueError, "w", dict(w=np.ones(64), fmt="int4")),
        (ValueError, "w", dict(w=np.full((64, 4), np.nan), fmt="int4")),
        (ValueError, "w", dict(w=np.full((64, 4), 1e6), fmt="int4")),   # scale > float16 max
        (ValueError, "group_size", dict(w=w, fmt="int4", group_size=16)),
        (TypeError, "group_size", dict(w=w, fmt="int4", group_size=32.0)),
        (ValueError, "group_size", dict(w=np.ones((96, 4)), fmt="int4", group_size=64)),
        (ValueError, "scale_dtype", dict(w=w, fmt="int4", scale_dtype="bfloat16")),
        (ValueError, "scales", dict(w=w, fmt="int4", scales=s)),           # float w + scales
        (ValueError, "scales", dict(w=q, fmt="int4")),                     # missing
        (ValueError, "scales", dict(w=q, fmt="int4", scales=np.ones((4, 2), np.float32))),
        (TypeError, "scales", dict(w=q, fmt="int4", scales=s.astype(np.float64))),
        (ValueError, "scales", dict(w=q, fmt="int4", scales=np.full((2, 4), np.inf, np.float32))),
        (ValueError, "w", dict(w=np.full((64, 4), 8, np.int8), fmt="int4", scales=s)),
        (ValueError, "w", dict(w=np.full((64, 4), -1, np.int8), fmt="uint4", scales=s,
                               zero_points=np.zeros((2, 4), np.int8))),
        (ValueError, "zero_points", dict(w=q, fmt="uint4", scales=s)),
        (ValueError, "zero_points", dict(w=q, fmt="uint4", scales=s,
                                         zero_points=np.full((2, 4), 16))),
        (TypeError, "zero_points", dict(w=q, fmt="uint4", scales=s,
                                        zero_points=np.zeros((2, 4), np.float32))),
        (ValueError, "zero_points", dict(w=q, fmt="int4", scales=s,
                                         zero_points=np.zeros((2, 4), np.int8))),
        (ValueError, "group_size", dict(w=np.ones((4, 4), np.int8), fmt="int8", group_size=32)),
    ]
    for exc, name, kw in cases:
        with raises_naming(exc, name):
            pack_weights(kw.pop("w"), kw.pop("fmt"), **kw)


def test_packed_record_checks_its_arrays(raises_naming):
    w4 = quantized(np.random.default_rng(2), 64, 70, "uint4", 32)
    with raises_naming(ValueError, "w4.data"):
        dataclasses.replace(w4, data=w4.data.view(np.int8))
    with raises_naming(ValueError, "w4.scales"):
        dataclasses.replace(w4, scales=w4.scales.astype(np.float64))
    with raises_naming(ValueError, "w4.zeros"):
        dataclasses.replace(w4, zeros=None)
    bad = w4.zeros.copy()
    bad[0, 0, 0] = 16
    with raises_naming(ValueError, "w4.zeros"):
        dataclasses.replace(w4, zeros=bad)
    raw = aligned_empty((w4.data.size + 1,), np.uint8)
    mis = raw[1:].reshape(w4.data.shape)
    with raises_naming(ValueError, "w4.data"):
        dataclasses.replace(w4, data=mis)
    with raises_naming(ValueError, "group_size"):
        dataclasses.replace(w4, group_size=48)


# --- named edge cases ------------------------------------------------------------------------

EDGE_CASES = [  # id, M, groups, N (K = groups * group_size)
    ("m_one", 1, 3, 70),
    ("m_le_8-M2", 2, 2, 64),
    ("m_le_8-M5", 5, 2, 100),
    ("m_le_8-M8", 8, 2, 64),
    ("k_eq_group", 3, 1, 64),
    ("k_multi_group", 4, 5, 40),
    ("n_tail-N1", 6, 2, 1),
    ("n_tail-N65", 7, 2, 65),
    ("m_tiles-M13", 13, 2, 70),
    ("pool-M40", 40, 4, 200),           # several row tiles per chunk, the thread pool
    ("pool-m_one", 1, 32, 600),
    ("extreme_values", 9, 3, 70),
]
EDGE_IDS = [c[0] for c in EDGE_CASES]


@functools.lru_cache(maxsize=64)
def case_operands(case: str, m: int, groups: int, n: int, fmt: str, g: int):
    rng = np.random.default_rng([EDGE_IDS.index(case), m, groups, n, FMTS.index(fmt), g])
    k = groups * g
    extreme = case == "extreme_values"
    w4 = quantized(rng, k, n, fmt, g, "float16", extreme=extreme)
    if extreme:  # activations at their ends too
        x = np.where(rng.integers(0, 2, (m, k)) == 1, 3.0e4, -3.0e4).astype(np.float32)
        a = np.where(rng.integers(0, 2, (m, k)) == 1, 127, -128).astype(np.int8)
    else:
        x = rng.standard_normal((m, k)).astype(np.float32)
        a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    a_scale = rng.uniform(0.01, 1.0, m).astype(np.float32)
    return w4, x, a, a_scale


@pytest.mark.parametrize("isa", W4A16_ISAS)
@pytest.mark.parametrize("g", GROUPS)
@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("case, m, groups, n", EDGE_CASES, ids=EDGE_IDS)
def test_w4a16_edges(case, m, groups, n, fmt, g, isa):
    w4, x, _, _ = case_operands(case, m, groups, n, fmt, g)
    got = gemm_w4a16(x, w4, isa=isa)
    assert got.shape == (m, n) and got.flags.c_contiguous
    check_w4a16(got, x, w4)


@pytest.mark.parametrize("isa", W4A16_BF16_ISAS)
@pytest.mark.parametrize("g", GROUPS)
@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("case, m, groups, n", EDGE_CASES, ids=EDGE_IDS)
def test_w4a16_bf16_edges(case, m, groups, n, fmt, g, isa):
    w4, x, _, _ = case_operands(case, m, groups, n, fmt, g)
    xb = to_bf16(x)
    check_w4a16(gemm_w4a16(xb, w4, isa=isa), xb, w4)


@pytest.mark.parametrize("isa", W4A8_ISAS)
@pytest.mark.parametrize("g", GROUPS)
@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("case, m, groups, n", EDGE_CASES, ids=EDGE_IDS)
def test_w4a8_edges(case, m, groups, n, fmt, g, isa):
    w4, _, a, a_scale = case_operands(case, m, groups, n, fmt, g)
    check_w4a8(gemm_w4a8(a, w4, isa=isa), a, w4)
    check_w4a8(gemm_w4a8(a, w4, a_scale=a_scale, isa=isa), a, w4, a_scale)


# Each tile height R = 1..8 is its own unrolled microkernel body with its own strip width
# (csrc/gemm_w4_avx512.h: W4A16_ROW_CASES): M = R runs exactly that body, over 3 groups and
# 3 panels (the last of 2 columns), with random and with end-of-range operands.
W4_TILE_ROWS = 8  # LB_W4_MR, csrc/lowbit.h
TILE_HEIGHTS = [(r, kind) for r in range(1, W4_TILE_ROWS + 1) for kind in ("random", "extreme")]
TILE_IDS = [f"R{r}-{kind}" for r, kind in TILE_HEIGHTS]


@functools.lru_cache(maxsize=64)
def tile_operands(r: int, kind: str, fmt: str):
    rng = np.random.default_rng([r, FMTS.index(fmt), kind == "extreme"])
    k, n = 3 * 32, 130
    extreme = kind == "extreme"
    w4 = quantized(rng, k, n, fmt, 32, extreme=extreme)
    if extreme:
        x = np.where(rng.integers(0, 2, (r, k)) == 1, 3.0e4, -3.0e4).astype(np.float32)
        a = np.where(rng.integers(0, 2, (r, k)) == 1, 127, -128).astype(np.int8)
    else:
        x = rng.standard_normal((r, k)).astype(np.float32)
        a = rng.integers(-128, 128, (r, k), dtype=np.int8)
    return w4, x, a


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("r, kind", TILE_HEIGHTS, ids=TILE_IDS)
@pytest.mark.parametrize("op, act, isa", [("w4a16", "f32", i) for i in W4A16_ISAS]
                         + [("w4a16", "bf16", i) for i in W4A16_BF16_ISAS]
                         + [("w4a8", "s8", i) for i in W4A8_ISAS],
                         ids=lambda v: v)
def test_every_tile_height(op, act, isa, r, kind, fmt):
    w4, x, a = tile_operands(r, kind, fmt)
    if op == "w4a8":
        check_w4a8(gemm_w4a8(a, w4, isa=isa), a, w4)
    else:
        x = to_bf16(x) if act == "bf16" else x
        check_w4a16(gemm_w4a16(x, w4, isa=isa), x, w4)


# --- exact integer part ------------------------------------------------------------------------

def test_group_acc_reference_is_exact():
    """ref.w4a8_group_acc against a sum in Python integers."""
    rng = np.random.default_rng(4)
    w4 = quantized(rng, 64, 5, "uint4", 32)
    a = rng.integers(-128, 128, (3, 64), dtype=np.int8)
    acc = ref.w4a8_group_acc(a, w4.values(), 32)
    n, z = w4.nibbles(), w4.zero_points()
    for g in range(2):
        for i in range(3):
            for j in range(5):
                want = sum(int(a[i, k]) * (int(n[k, j]) - int(z[g, j]))
                           for k in range(32 * g, 32 * g + 32))
                assert acc[g, i, j] == want
    assert acc.dtype == np.int32


@pytest.mark.parametrize("isa", W4A8_ISAS)
@pytest.mark.parametrize("fmt", FMTS)
def test_w4a8_integer_part_exact(isa, fmt, assert_exact):
    """Scales that are powers of two and no activation scale: every float step is exact, so
    out = sum_g acc_g * s_g equals the reference's integers exactly (extreme values too)."""
    rng = np.random.default_rng(5)
    k, n, g = 256, 70, 64
    for extreme in (False, True):
        w4 = quantized(rng, k, n, fmt, g, "float32", extreme=extreme)
        w4 = pack_weights(w4.unpack(), fmt, group_size=g,
                          scales=np.exp2(rng.integers(-3, 3, (k // g, n))).astype(np.float32),
                          zero_points=w4.zero_points() if fmt == "uint4" else None)
        a = (np.where(rng.integers(0, 2, (9, k)) == 1, 127, -128) if extreme
             else rng.integers(-128, 128, (9, k))).astype(np.int8)
        acc = ref.w4a8_group_acc(a, w4.values(), g)
        want = ref.w4a8_from_acc(acc, w4.group_scales(), None)
        assert_exact(gemm_w4a8(a, w4, isa=isa), want)


@pytest.mark.parametrize("isa", W4A16_ISAS)
@pytest.mark.parametrize("fmt", FMTS)
def test_w4a16_exact_on_small_integers(isa, fmt, assert_exact):
    """Small integer activations, power-of-two scales: all partial sums are exact."""
    rng = np.random.default_rng(6)
    k, n, g = 128, 65, 32
    w4 = quantized(rng, k, n, fmt, g, "float16")
    w4 = pack_weights(w4.unpack(), fmt, group_size=g,
                      scales=np.exp2(rng.integers(-2, 3, (k // g, n))).astype(np.float16),
                      zero_points=w4.zero_points() if fmt == "uint4" else None)
    x = rng.integers(-20, 21, (5, k)).astype(np.float32)
    assert_exact(gemm_w4a16(x, w4, isa=isa), ref.gemm_w4a16(x, w4.dequantize()))


# --- strided operands, bf16, out= ----------------------------------------------------------------

VIEWS = list(operand_views(np.zeros((20, 300), np.float32), 3, 64))


@pytest.mark.parametrize("isa", W4A16_ISAS)
@pytest.mark.parametrize("view", VIEWS)
def test_w4a16_strided(isa, view):
    m, k, n = 7, 128, 70
    rng = np.random.default_rng(VIEWS.index(view))
    w4 = quantized(rng, k, n, "uint4", 64)
    x = operand_views(rng.standard_normal((2 * m + 2, 2 * k + 4)).astype(np.float32), m, k)[view]
    keep = x.copy()
    got = gemm_w4a16(x, w4, isa=isa)
    np.testing.assert_array_equal(x, keep)
    check_w4a16(got, np.ascontiguousarray(keep), w4)


@pytest.mark.parametrize("isa", W4A8_ISAS)
@pytest.mark.parametrize("view", VIEWS)
def test_w4a8_strided(isa, view):
    m, k, n = 7, 128, 70
    rng = np.random.default_rng(VIEWS.index(view) + 50)
    w4 = quantized(rng, k, n, "int4", 32)
    a = operand_views(rng.integers(-128, 128, (2 * m + 2, 2 * k + 4), dtype=np.int8), m, k)[view]
    keep = a.copy()
    check_w4a8(gemm_w4a8(a, w4, isa=isa), np.ascontiguousarray(keep), w4)


@pytest.mark.parametrize("isa", W4A16_BF16_ISAS)
def test_w4a16_bf16_activations(isa, assert_exact):
    """uint16 bfloat16 bit patterns are widened exactly (bf16_to_f32): the float32 variants
    give the same result as on the widened values, the bfloat16 dot-product one is within
    the bound of the reference."""
    rng = np.random.default_rng(8)
    w4 = quantized(rng, 128, 70, "uint4", 32)
    bits = to_bf16(rng.standard_normal((6, 128)))
    widened = bf16_to_f32(bits)
    assert widened.dtype == np.float32 and np.all(widened.view(np.uint32) & 0xFFFF == 0)
    got = gemm_w4a16(bits, w4, isa=isa)
    check_w4a16(got, bits, w4)
    if isa in W4A16_ISAS:
        assert_exact(got, gemm_w4a16(widened, w4, isa=isa))
    strided = np.repeat(bits, 2, axis=0)[::2]  # row-strided uint16, read in place
    check_w4a16(gemm_w4a16(strided, w4, isa=isa), bits, w4)


@pytest.mark.parametrize("isa", W4A16_BF16_ISAS)
def test_w4a16_bf16_subnormals_count_as_zero(isa, assert_exact):
    rng = np.random.default_rng(12)
    w4 = quantized(rng, 64, 70, "int4", 32)
    bits = to_bf16(rng.standard_normal((3, 64)))
    sub = bits.copy()
    sub[:, ::3] = np.array([0x0001, 0x807F, 0x0040], np.uint16)[:, None]  # subnormals
    zero = bits.copy()
    zero[:, ::3] = np.array([0x0000, 0x8000, 0x0000], np.uint16)[:, None]
    assert np.all(bf16_to_f32(sub) == bf16_to_f32(zero))
    assert_exact(gemm_w4a16(sub, w4, isa=isa), gemm_w4a16(zero, w4, isa=isa))


@pytest.mark.parametrize("op", ["w4a16", "w4a8"])
def test_out_argument_and_m_zero(op):
    rng = np.random.default_rng(9)
    m, k, n = 5, 64, 40
    w4 = quantized(rng, k, n, "int4", 32)
    act = (rng.standard_normal((m, k)).astype(np.float32) if op == "w4a16"
           else rng.integers(-128, 128, (m, k), dtype=np.int8))
    fn = gemm_w4a16 if op == "w4a16" else gemm_w4a8
    big = np.full((m + 3, n + 5), 77.0, np.float32)
    out = big[1:1 + m, 2:2 + n]
    assert fn(act, w4, out=out) is out
    np.testing.assert_array_equal(out, fn(act, w4))
    mask = np.ones(big.shape, bool)
    mask[1:1 + m, 2:2 + n] = False
    assert np.all(big[mask] == 77.0)
    empty = fn(act[:0], w4)
    assert empty.shape == (0, n) and empty.dtype == np.float32


# --- hypothesis --------------------------------------------------------------------------------

@pytest.mark.parametrize("isa", W4A16_ISAS)
@settings(max_examples=12, deadline=None)
@given(m=st.integers(1, 20), groups=st.integers(1, 4), n=st.integers(1, 150),
       g=st.sampled_from(GROUPS), fmt=st.sampled_from(FMTS),
       scale_dtype=st.sampled_from(["float16", "float32"]), seed=st.integers(0, 2 ** 32 - 1))
def test_w4a16_random_shapes(isa, m, groups, n, g, fmt, scale_dtype, seed):
    rng = np.random.default_rng(seed)
    w4 = quantized(rng, groups * g, n, fmt, g, scale_dtype)
    x = rng.standard_normal((m, groups * g)).astype(np.float32)
    check_w4a16(gemm_w4a16(x, w4, isa=isa), x, w4)


@pytest.mark.parametrize("isa", W4A16_BF16_ISAS)
@settings(max_examples=8, deadline=None)
@given(m=st.integers(1, 20), groups=st.integers(1, 4), n=st.integers(1, 150),
       g=st.sampled_from(GROUPS), fmt=st.sampled_from(FMTS), seed=st.integers(0, 2 ** 32 - 1))
def test_w4a16_bf16_random_shapes(isa, m, groups, n, g, fmt, seed):
    rng = np.random.default_rng(seed)
    w4 = quantized(rng, groups * g, n, fmt, g)
    xb = to_bf16(rng.standard_normal((m, groups * g)))
    check_w4a16(gemm_w4a16(xb, w4, isa=isa), xb, w4)


@pytest.mark.parametrize("isa", W4A8_ISAS)
@settings(max_examples=12, deadline=None)
@given(m=st.integers(1, 20), groups=st.integers(1, 4), n=st.integers(1, 150),
       g=st.sampled_from(GROUPS), fmt=st.sampled_from(FMTS),
       scale_dtype=st.sampled_from(["float16", "float32"]), seed=st.integers(0, 2 ** 32 - 1))
def test_w4a8_random_shapes(isa, m, groups, n, g, fmt, scale_dtype, seed):
    rng = np.random.default_rng(seed)
    w4 = quantized(rng, groups * g, n, fmt, g, scale_dtype)
    a = rng.integers(-128, 128, (m, groups * g), dtype=np.int8)
    a_scale = rng.uniform(0.1, 2.0, m).astype(np.float32)
    check_w4a8(gemm_w4a8(a, w4, a_scale=a_scale, isa=isa), a, w4, a_scale)


# --- tolerance ---------------------------------------------------------------------------------

def test_tolerance_bounds_grow_with_k_and_catch_a_missing_term():
    rng = np.random.default_rng(10)
    w4 = quantized(rng, 256, 8, "int4", 32, "float32")
    x = rng.standard_normal((2, 256)).astype(np.float32)
    tol = ref.w4a16_tolerance(x, w4.nibbles(), w4.zero_points(), w4.group_scales(), 32)
    want = ref.gemm_w4a16(x, w4.dequantize())
    # dropping the largest single term must be outside the bound
    terms = x[0, :, None].astype(np.float64) * w4.dequantize()
    j = int(np.argmax(np.abs(terms).max(axis=0)))
    assert np.abs(terms[:, j]).max() > tol[0, j]
    assert np.all(tol > 0) and want.dtype == np.float32
    small = ref.int4_tolerance(10, np.ones(1))[0]
    assert ref.int4_tolerance(1000, np.ones(1))[0] > 90 * small


# --- validation --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(11)
    return quantized(rng, 64, 5, "int4", 32), rng.standard_normal((3, 64)).astype(np.float32)


@pytest.mark.parametrize("bad, exc", [
    ([[1.0] * 64], TypeError), (np.ones((3, 64), np.float64), TypeError),
    (np.ones((3, 64), np.float16), TypeError), (np.ones((3, 64), np.int8), TypeError),
    (np.ones(64, np.float32), ValueError), (np.ones((3, 32), np.float32), ValueError),
    (np.full((3, 64), np.nan, np.float32), ValueError),
    (np.full((3, 64), np.inf, np.float32), ValueError),
    (np.full((3, 64), 0x7FC0, np.uint16), ValueError),   # bfloat16 NaN
    (np.full((3, 64), 0xFF80, np.uint16), ValueError),   # bfloat16 -inf
], ids=["list", "float64", "float16", "int8", "1d", "k_mismatch", "nan", "inf", "bf16_nan",
        "bf16_inf"])
def test_w4a16_bad_x(small, bad, exc, raises_naming):
    with raises_naming(exc, "x"):
        gemm_w4a16(bad, small[0])


@pytest.mark.parametrize("bits", [0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0xFFFF],
                         ids=["inf", "neg_inf", "nan", "nan_low_payload", "neg_nan_all_ones"])
def test_w4a16_bf16_one_non_finite_among_finite(small, bits, raises_naming):
    # the largest finite bfloat16 of both signs pass; one non-finite element anywhere fails
    x = np.full((3, 64), 0x7F7F, np.uint16)
    x[1::2] = 0xFF7F
    assert gemm_w4a16(x, small[0]).shape == (3, small[0].n)
    x[2, 37] = bits
    with raises_naming(ValueError, "x"):
        gemm_w4a16(x, small[0])


@pytest.mark.parametrize("bad, exc", [
    ([[1] * 64], TypeError), (np.ones((3, 64), np.uint8), TypeError),
    (np.ones((3, 64), np.float32), TypeError), (np.ones((3, 2, 64), np.int8), ValueError),
    (np.ones((3, 96), np.int8), ValueError),
], ids=["list", "uint8", "float32", "3d", "k_mismatch"])
def test_w4a8_bad_a(small, bad, exc, raises_naming):
    with raises_naming(exc, "a"):
        gemm_w4a8(bad, small[0])


def test_bad_weights_out_scale_isa(small, raises_naming):
    w4, x = small
    a = np.ones((3, 64), np.int8)
    for fn, act in ((gemm_w4a16, x), (gemm_w4a8, a)):
        with raises_naming(TypeError, "w4"):
            fn(act, pack_weights(np.ones((64, 5), np.int8)))
        with raises_naming(TypeError, "w4"):
            fn(act, np.ones((64, 5), np.int8))
        with raises_naming(TypeError, "out"):
            fn(act, w4, out=np.zeros((3, 5), np.float64))
        with raises_naming(ValueError, "out"):
            fn(act, w4, out=np.zeros((5, 3), np.float32))
        with raises_naming(ValueError, "out"):
            fn(act, w4, out=np.zeros((3, 10), np.float32)[:, ::2])
        for name in ("cuda", "AVX2", ""):
            with raises_naming(ValueError, "isa"):
                fn(act, w4, isa=name)
    with raises_naming(ValueError, "isa"):
        gemm_w4a16(x, w4, isa="avx512_vnni")      # the bfloat16 dot product: not float32
    for value, exc in ((np.ones(4), ValueError), ([1.0, np.nan, 1.0], ValueError),
                       (1e39, ValueError), ("x", TypeError), (True, TypeError)):
        with raises_naming(exc, "a_scale"):
            gemm_w4a8(a, w4, a_scale=value)


# --- dispatch, costs, bandwidth --------------------------------------------------------------

def test_registry_entries_support_and_costs():
    for op, act, isas in (
            ("gemm_w4a16", "f32", ["avx512", "avx2", "portable", "numba", "ref"]),
            ("gemm_w4a16", "bf16", ["avx512_vnni", "avx512", "avx2", "portable", "numba", "ref"]),
            ("gemm_w4a8", "s8", ["avx512_vnni", "avx512", "avx2", "portable", "numba", "ref"])):
        for fmt in FMTS:
            kernels = {k.key.isa: k for k in lk.REGISTRY.kernels(op, act, fmt)}
            assert sorted(kernels) == sorted(isas)
    # dispatch_info reports the ISAs usable for every activation format of the op
    assert lk.dispatch_info()["gemm_w4a16"]["available"] == W4A16_ISAS
    assert lk.dispatch_info()["gemm_w4a8"]["available"] == W4A8_ISAS
    assert lk.dispatch_info()["gemm_w4a8"]["selected"] == W4A8_ISAS[0]
    assert lk.REGISTRY.lookup("gemm_w4a16", "bf16", "int4").key.isa == W4A16_BF16_ISAS[0]
    c16 = lk.REGISTRY.lookup("gemm_w4a16", "f32", "int4", "ref").cost(2, 64, 128)
    # 2 M N K ops; x f32 + 4-bit weights + float16 scale per 32 K per column + f32 out
    assert c16 == (2 * 2 * 64 * 128, 2 * 128 * 4 + 64 * 128 // 2 + 4 * 64 * 2 + 2 * 64 * 4)
    cbf = lk.REGISTRY.lookup("gemm_w4a16", "bf16", "int4", "ref").cost(2, 64, 128)
    assert cbf[1] == c16[1] - 2 * 128 * 2
    c8 = lk.REGISTRY.lookup("gemm_w4a8", "s8", "uint4", "ref").cost(2, 64, 128)
    assert c8 == (2 * 2 * 64 * 128, 2 * 128 + 64 * 128 // 2 + 4 * 64 * 3 + 2 * 64 * 4)
    w4a16 = {k.key.isa: k for k in lk.REGISTRY.kernels("gemm_w4a16", "bf16", "int4")}
    avx512 = {"avx512f", "avx512bw", "avx512dq", "avx512vl"}
    assert w4a16["avx512"].supported() == (avx512 <= FEATURES)
    assert w4a16["avx512_vnni"].supported() == (avx512 | {"avx512_bf16"} <= FEATURES)
    assert w4a16["portable"].supported() and w4a16["ref"].supported()
    vnni = native.C_ISAS.index("avx512_vnni")
    assert bool(native.lib.lb_gemm_w4a16_supported(vnni)) == w4a16["avx512_vnni"].supported()
    assert native.C_ISAS[native.lib.lb_gemm_w4a16_selected(0)] == W4A16_ISAS[0]


@pytest.mark.skipif("avx2" not in FEATURES, reason="CPU lacks AVX2")
def test_disable_avx512_selects_avx2():
    code = textwrap.dedent("""
        import json
        import numpy as np
        import lowbit.kernels as lk
        from lowbit.kernels import native
        rng = np.random.default_rng(1)
        w4 = lk.pack_weights(rng.standard_normal((256, 90)).astype(np.float32), "uint4")
        x = rng.standard_normal((3, 256)).astype(np.float32)
        same = np.allclose(lk.gemm_w4a16(x, w4), lk.gemm_w4a16(x, w4, isa="ref"), rtol=1e-4,
                           atol=1e-4)
        print(json.dumps({"w4a16": lk.dispatch_info()["gemm_w4a16"]["selected"],
                          "bf16": lk.REGISTRY.lookup("gemm_w4a16", "bf16", "int4").key.isa,
                          "c_bf16": native.C_ISAS[native.lib.lb_gemm_w4a16_selected(1)],
                          "w4a8": lk.dispatch_info()["gemm_w4a8"]["selected"],
                          "c": native.C_ISAS[native.lib.lb_gemm_w4a8_selected()],
                          "same": bool(same)}))
    """)
    env = {key: v for key, v in os.environ.items() if key != "LOWBIT_DISABLE_ISA"}
    env["LOWBIT_DISABLE_ISA"] = "avx512_vnni,avx512"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res == {"w4a16": "avx2", "bf16": "avx2", "c_bf16": "avx2", "w4a8": "avx2",
                   "c": "avx2", "same": True}


def test_read_bandwidth_loop():
    from lowbit.kernels.peak import read_bandwidth_buffer, run_read
    buf = read_bandwidth_buffer(1 << 20)
    assert buf.nbytes == 1 << 20 and buf.ctypes.data % 64 == 0
    assert run_read(buf, 3) == 3.0 * (1 << 20)
    with pytest.raises(ValueError, match="passes"):
        run_read(buf, 0)


def test_bench_groups_and_targets_are_declared():
    from lowbit import targets
    from lowbit.bench.config import W4_SHAPES, W4A8_OP, W4A16_OP, gemm_group
    from lowbit.bench.impls import pass_order

    assert W4_SHAPES == ((1, 4096, 4096), (8, 4096, 4096), (128, 4096, 4096),
                         (1, 8192, 8192), (1, 16384, 8192))
    for op, isas in ((W4A16_OP, W4A16_BF16_ISAS), (W4A8_OP, W4A8_ISAS)):
        names = [impl.name for impl in pass_order(op)]
        assert {"torch_int4_woq", "lowbit_int8", "numpy_fp32"} <= set(names)
        assert {f"lowbit[{isa}]" for isa in isas if isa != "ref"} <= set(names)
        mine = [t for t in targets.default_targets() if t.op == op]
        assert {t.group for t in mine} == {gemm_group(1, 4096, 4096, op=op),
                                           gemm_group(8, 4096, 4096, op=op),
                                           gemm_group(1, 16384, 8192, op=op)}
        assert {(t.goal, t.baselines, t.ceiling) for t in mine} == {
            (2.0, ("torch_int4_woq",), None), (0.8, (), "dram_read")}
