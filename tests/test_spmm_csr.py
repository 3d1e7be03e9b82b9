"""spmm_csr against its reference on every usable ISA; the CSR format (CSR_ROWS).

int8 results are compared bit-exactly with ``ref.spmm_csr`` (the exact int32 product);
float32 results within ``ref.spmm_csr_tolerance`` (and exactly where every partial sum is
an exact float32 integer).

Blocking (csrc/spmm_csr*.c): entries in quads of 4 (the VNNI kernel takes a whole quad,
the AVX2 / AVX-512 int8 kernels pairs), columns in strips of 128 (AVX-512, portable) or 64
(AVX2) with masked or scalar column tails, rows cut into tasks of about equal nonzeros for
the thread pool above 2^18 multiply-adds. The named cases sit on those edges; hypothesis
covers shapes and densities in between.
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
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import lowbit.kernels as lk
from lowbit.kernels import FORMATS, PackedCsrWeights, native, pack_csr, pack_weights, ref, spmm_csr
from lowbit.kernels.format_csr import CSR_ROWS, QUAD
from lowbit.kernels.formats import ALIGN, aligned_empty
from lowbit.kernels.spmm_csr import MAX_SAFE_ROW_NNZ, csr_cost

S8_ISAS = [k.key.isa for k in lk.REGISTRY.kernels("spmm_csr", "s8", "csr", usable=True)]
F32_ISAS = [k.key.isa for k in lk.REGISTRY.kernels("spmm_csr", "f32", "csr", usable=True)]
FEATURES = set(lk.cpu_features())
DTYPES = ["int8", "float32"]


# --- operands ------------------------------------------------------------------------------

def sparse(rng, n_out: int, k: int, density: float, dtype: str, extreme: bool = False
           ) -> np.ndarray:
    """A dense [N_out, K] matrix with about ``density`` nonzeros (never an explicit zero
    among them): int8 values in [-128, 127] (extreme: only -128 and 127), float32 normal."""
    keep = rng.random((n_out, k)) < density
    if dtype == "int8":
        if extreme:
            vals = np.where(rng.integers(0, 2, (n_out, k)) == 1, 127, -128)
        else:
            vals = rng.integers(1, 129, (n_out, k)) * rng.choice([-1, 1], (n_out, k))
            vals = np.clip(vals, -128, 127)
        return np.where(keep, vals, 0).astype(np.int8)
    vals = rng.standard_normal((n_out, k)) + np.copysign(0.1, rng.standard_normal((n_out, k)))
    return np.where(keep, vals, 0).astype(np.float32)


def activations(rng, k: int, b: int, dtype: str, extreme: bool = False) -> np.ndarray:
    if dtype == "int8":
        if extreme:
            return np.where(rng.integers(0, 2, (k, b)) == 1, 127, -128).astype(np.int8)
        return rng.integers(-128, 128, (k, b), dtype=np.int8)
    return rng.standard_normal((k, b)).astype(np.float32)


def check(got: np.ndarray, w: PackedCsrWeights, x: np.ndarray, assert_exact) -> None:
    """int8: exactly ref.spmm_csr; float32: within ref.spmm_csr_tolerance of it."""
    x = np.ascontiguousarray(x)
    want = ref.spmm_csr(w.row_ptr, w.col_idx, w.values, w.k, x)
    if w.dtype == np.int8:
        assert_exact(got, want)
        return
    assert got.dtype == np.float32 and got.shape == want.shape
    tol = ref.spmm_csr_tolerance(w.row_ptr, w.col_idx, w.values, w.k, x)
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bad = np.argwhere(~(err <= tol))
    if bad.size:
        first = [(int(i), int(j), float(got[i, j]), float(want[i, j]), float(tol[i, j]))
                 for i, j in bad[:6]]
        pytest.fail(f"{len(bad)} of {got.size} elements outside the bound; first "
                    f"(i, j, got, want, bound): {first}", pytrace=False)


def isa_cases() -> list:
    """(dtype, isa) for every usable variant, ids like ``int8-avx512_vnni``."""
    return [pytest.param(d, isa, id=f"{d}-{isa}") for d, isas in (("int8", S8_ISAS),
                                                                 ("float32", F32_ISAS))
            for isa in isas]


# --- the format ----------------------------------------------------------------------------

def test_format_descriptor():
    assert FORMATS["csr"] is CSR_ROWS
    assert (CSR_ROWS.name, CSR_ROWS.quad, QUAD) == ("csr", 4, 4)
    assert CSR_ROWS.value_dtypes == ("int8", "float32")
    assert (CSR_ROWS.index_dtype, CSR_ROWS.row_ptr_dtype) == ("int32", "int64")
    assert "last index" in CSR_ROWS.padding


def test_docstring_picture():
    """The example of format_csr's module docstring, entry by entry."""
    w = np.zeros((3, 10), np.int8)
    w[0, [1, 4, 7]] = [5, -2, 3]
    w[2, [0, 2, 3, 5, 9]] = [1, 1, 4, 6, 7]
    wc = pack_csr(w)
    assert wc.row_ptr.tolist() == [0, 4, 4, 12]
    assert wc.col_idx.tolist() == [1, 4, 7, 7, 0, 2, 3, 5, 9, 9, 9, 9]
    assert wc.values.tolist() == [5, -2, 3, 0, 1, 1, 4, 6, 7, 0, 0, 0]
    assert (wc.nnz, wc.stored, wc.shape, wc.row_nnz_max) == (8, 12, (3, 10), 5)
    assert wc.row_sum.tolist() == [6, 0, 19] and wc.row_abs_sum_max == 19


BYTE_CASES = [(1, 1, 1.0), (3, 10, 0.3), (64, 100, 0.05), (65, 257, 0.5), (40, 7, 0.0),
              (17, 1000, 0.01)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_out, k, density", BYTE_CASES,
                         ids=[f"N{n}-K{k}-d{d}" for n, k, d in BYTE_CASES])
def test_byte_size(n_out, k, density, dtype):
    rng = np.random.default_rng(n_out * 31 + k)
    w = sparse(rng, n_out, k, density, dtype)
    wc = pack_csr(w)
    row_nnz = (w != 0).sum(axis=1)
    stored = int((-(-row_nnz // 4) * 4).sum())
    item = np.dtype(dtype).itemsize
    formula = stored * (item + 4) + 8 * (n_out + 1)
    assert wc.nbytes == formula == CSR_ROWS.nbytes(row_nnz, dtype)
    assert wc.nbytes == wc.values.nbytes + wc.col_idx.nbytes + wc.row_ptr.nbytes
    assert wc.stored == stored and wc.nnz == int(row_nnz.sum())
    assert wc.row_nnz().tolist() == row_nnz.tolist()
    assert wc.density == pytest.approx(row_nnz.sum() / (n_out * k))
    assert 0 <= wc.stored - wc.nnz <= (QUAD - 1) * n_out   # under a quad of padding per row


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["nk", "kn"])
def test_pack_unpack_round_trip(dtype, layout, assert_exact):
    rng = np.random.default_rng(3)
    w = sparse(rng, 37, 150, 0.2, dtype)
    w[5] = 0                                   # an empty row
    given_w = w if layout == "nk" else np.ascontiguousarray(w.T)
    wc = pack_csr(given_w, layout=layout)
    assert wc.shape == (37, 150) and wc.dtype == np.dtype(dtype)
    assert_exact(wc.unpack(), w)
    assert_exact(CSR_ROWS.unpack(*CSR_ROWS.pack(w), 150), w)
    again = pack_weights(given_w, "csr", layout=layout)
    for name in ("row_ptr", "col_idx", "values"):
        np.testing.assert_array_equal(getattr(wc, name), getattr(again, name))
    assert_exact(wc.to_scipy().toarray(), w)
    for arr in (wc.values, wc.col_idx):
        assert arr.ctypes.data % ALIGN == 0 and arr.flags.c_contiguous


def test_padding_layout():
    """Each row: nonzeros with increasing columns, then < 4 entries of value 0 repeating
    the last column; empty rows take no entries."""
    rng = np.random.default_rng(4)
    w = sparse(rng, 50, 90, 0.15, "int8")
    w[[3, 17]] = 0
    wc = pack_csr(w)
    for i in range(50):
        p0, p1 = int(wc.row_ptr[i]), int(wc.row_ptr[i + 1])
        cols = np.flatnonzero(w[i])
        assert (p1 - p0) % 4 == 0 and p1 - p0 == -(-len(cols) // 4) * 4
        r = len(cols)
        assert wc.col_idx[p0:p0 + r].tolist() == cols.tolist()
        assert wc.values[p0:p0 + r].tolist() == w[i, cols].tolist()
        assert np.all(wc.values[p0 + r:p1] == 0)
        assert np.all(wc.col_idx[p0 + r:p1] == (cols[-1] if r else 0))
    assert wc.row_ptr[4] == wc.row_ptr[3] and wc.row_ptr[18] == wc.row_ptr[17]


@pytest.mark.parametrize("kind", ["csr_matrix", "csc_matrix", "coo_matrix", "csr_array",
                                  "coo_array"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_from_scipy(kind, dtype, assert_exact):
    rng = np.random.default_rng(5)
    w = sparse(rng, 30, 70, 0.1, dtype)
    m = getattr(sp, kind)(w)
    assert_exact(pack_csr(m).unpack(), w)
    assert_exact(pack_csr(getattr(sp, kind)(np.ascontiguousarray(w.T)), layout="kn").unpack(), w)
    assert_exact(pack_weights(m, "csr", layout="nk").unpack(), w)


def test_from_scipy_sums_duplicates_and_drops_zeros(raises_naming):
    rows, cols = np.array([0, 0, 1, 1, 2]), np.array([3, 3, 0, 2, 1])
    m = sp.coo_matrix((np.array([100, 20, 5, 0, -7], np.int8), (rows, cols)), shape=(3, 4))
    wc = pack_csr(m)
    assert wc.unpack().tolist() == [[0, 0, 0, 120], [5, 0, 0, 0], [0, -7, 0, 0]]
    assert wc.nnz == 3                                     # the explicit zero is gone
    over = sp.coo_matrix((np.array([100, 100], np.int8), ([0, 0], [1, 1])), shape=(1, 2))
    with raises_naming(ValueError, "w"):                   # 200 does not fit int8
        pack_csr(over)


def test_pack_rejects_bad_input(raises_naming):
    ok = np.eye(4, dtype=np.int8)
    cases = [
        (TypeError, "w", dict(w=[[1, 0], [0, 1]])),
        (TypeError, "w", dict(w=np.eye(4))),                      # float64
        (TypeError, "w", dict(w=np.eye(4, dtype=bool))),
        (TypeError, "w", dict(w=np.eye(4, dtype=np.int16))),
        (TypeError, "w", dict(w=sp.csr_matrix(np.eye(4)))),       # float64 scipy
        (ValueError, "w", dict(w=np.ones(4, np.int8))),
        (ValueError, "w", dict(w=np.ones((0, 4), np.int8))),
        (ValueError, "w", dict(w=np.ones((4, 0), np.int8))),
        (ValueError, "w", dict(w=np.full((2, 2), np.nan, np.float32))),
        (ValueError, "w", dict(w=np.full((2, 2), np.inf, np.float32))),
        (ValueError, "w", dict(w=sp.csr_matrix(np.full((2, 2), np.inf, np.float32)))),
        (ValueError, "layout", dict(w=ok, layout="row")),
    ]
    for exc, name, kw in cases:
        with raises_naming(exc, name):
            pack_csr(kw.pop("w"), **kw)
    with raises_naming(ValueError, "group_size"):
        pack_weights(ok, "csr", group_size=32)


def test_packed_record_checks_its_arrays(raises_naming):
    wc = pack_csr(np.array([[0, 5, 0, 1, 2], [0, 0, 0, 0, 0], [1, 0, -2, 0, 3]], np.int8))
    rp, ci, v = wc.row_ptr, wc.col_idx, wc.values

    def replace(**kw):
        return dataclasses.replace(wc, **kw)
    cases = [
        ("w_csr.row_ptr", dict(row_ptr=rp.astype(np.int32))),
        ("w_csr.row_ptr", dict(row_ptr=rp[:-1])),
        ("w_csr.row_ptr", dict(row_ptr=np.array([0, 4, 0, 8]))),           # decreasing
        ("w_csr.row_ptr", dict(row_ptr=np.array([0, 2, 4, 8]))),           # not whole quads
        ("w_csr.row_ptr", dict(row_ptr=np.array([4, 4, 4, 8]))),           # not from 0
        ("w_csr.col_idx", dict(col_idx=ci.astype(np.int64))),
        ("w_csr.col_idx", dict(col_idx=np.where(ci == 4, 5, ci).astype(np.int32))),  # >= K
        ("w_csr.col_idx", dict(col_idx=np.array([1, 1, 3, 3, 0, 2, 4, 4], np.int32))),
        ("w_csr.col_idx", dict(col_idx=np.array([3, 1, 4, 4, 0, 2, 4, 4], np.int32))),
        ("w_csr.col_idx", dict(col_idx=np.array([1, 3, 4, 0, 0, 2, 4, 4], np.int32))),
        ("w_csr.values", dict(values=v.astype(np.int16))),
        ("w_csr.values", dict(values=np.array([5, 0, 2, 1, 1, -2, 3, 0], np.int8))),
        ("w_csr.values", dict(values=np.array([5, 1, 2, 0, 0, 0, 0, 0], np.int8))),
        ("w_csr.values", dict(values=v[::-1].copy())),
        ("w_csr.col_idx, w_csr.values", dict(col_idx=ci[:4].copy(), values=v[:4].copy())),
        ("w_csr.n_out, w_csr.k", dict(n_out=0)),
        ("w_csr.n_out, w_csr.k", dict(k=True)),
        ("w_csr.row_ptr", dict(n_out=2)),
    ]
    for name, kw in cases:
        with raises_naming(ValueError, name.split(",")[0]):
            replace(**kw)
    fv = pack_csr(np.array([[1.5, 0.0]], np.float32))
    with raises_naming(ValueError, "w_csr.values"):
        dataclasses.replace(fv, values=np.array([np.nan, 0, 0, 0], np.float32))
    with raises_naming(TypeError, "w_csr.fmt"):
        replace(fmt=FORMATS["int8"])
    # a valid record built by hand is accepted and its derived fields recomputed
    same = replace(values=v.copy())
    assert same.nnz == wc.nnz and same.row_sum.tolist() == [8, 0, 2]


@settings(max_examples=30, deadline=None)
@given(n_out=st.integers(1, 40), k=st.integers(1, 200),
       density=st.sampled_from([0.0, 0.01, 0.1, 0.5, 1.0]), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2 ** 32 - 1))
def test_round_trip_hypothesis(n_out, k, density, dtype, seed):
    w = sparse(np.random.default_rng(seed), n_out, k, density, dtype)
    wc = pack_csr(w)
    np.testing.assert_array_equal(wc.unpack(), w)
    assert wc.nbytes == CSR_ROWS.nbytes((w != 0).sum(axis=1), dtype)


# --- named edge cases ------------------------------------------------------------------------

EDGE_CASES = [  # id, N_out, K, B, density
    ("empty_rows", 30, 64, 40, 0.3),           # every third row emptied below
    ("all_zero", 12, 50, 33, 0.0),
    ("dense_row", 9, 300, 70, 0.05),           # row 4 fully dense
    ("b_one", 25, 130, 1, 0.3),
    ("b_tail-B17", 20, 90, 17, 0.3),           # tails of 16-column vectors
    ("b_tail-B65", 20, 90, 65, 0.3),           # one past a 64-column strip (AVX2)
    ("b_tail-B129", 20, 90, 129, 0.3),         # one past a 128-column strip
    ("b_200", 11, 70, 200, 0.3),
    ("k_one", 13, 1, 37, 0.7),
    ("n_one", 1, 500, 130, 0.4),
    ("quad_tails", 40, 40, 24, 0.09),          # rows of 1-3 nonzeros: mostly padding
    ("extreme_values", 17, 200, 130, 0.8),
    ("pool", 300, 900, 64, 0.2),               # > 2^18 multiply-adds: the thread pool
    ("pool_skewed", 257, 3000, 48, 0.005),     # one dense row among very sparse ones
]
EDGE_IDS = [c[0] for c in EDGE_CASES]


@functools.lru_cache(maxsize=64)
def edge_operands(case: str, n_out: int, k: int, b: int, density: float, dtype: str):
    rng = np.random.default_rng([EDGE_IDS.index(case), n_out, k, b, DTYPES.index(dtype)])
    extreme = case == "extreme_values"
    w = sparse(rng, n_out, k, density, dtype, extreme=extreme)
    if case == "empty_rows":
        w[::3] = 0
    if case == "dense_row":
        w[4] = sparse(rng, 1, k, 1.0, dtype)[0]
    if case == "pool_skewed":
        w[100] = sparse(rng, 1, k, 1.0, dtype)[0]
    return pack_csr(w), activations(rng, k, b, dtype, extreme=extreme)


@pytest.mark.parametrize("dtype, isa", isa_cases())
@pytest.mark.parametrize("case, n_out, k, b, density", EDGE_CASES, ids=EDGE_IDS)
def test_edges(case, n_out, k, b, density, dtype, isa, assert_exact):
    wc, x = edge_operands(case, n_out, k, b, density, dtype)
    got = spmm_csr(wc, x, isa=isa)
    assert got.shape == (n_out, b) and got.flags.c_contiguous
    check(got, wc, x, assert_exact)
    if case == "all_zero":
        assert not got.any()


@pytest.mark.parametrize("isa", F32_ISAS)
def test_f32_exact_on_small_integers(isa, assert_exact):
    """Small integers: every partial sum is an exact float32, so any order gives the
    reference exactly."""
    rng = np.random.default_rng(6)
    w = np.where(rng.random((33, 260)) < 0.3, rng.integers(-9, 10, (33, 260)), 0)
    wc = pack_csr(w.astype(np.float32))
    x = rng.integers(-20, 21, (260, 150)).astype(np.float32)
    assert_exact(spmm_csr(wc, x, isa=isa), ref.spmm_csr(wc.row_ptr, wc.col_idx, wc.values,
                                                         260, x))


# --- int32 accumulator overflow -----------------------------------------------------------------

@pytest.mark.parametrize("isa", S8_ISAS)
def test_k_overflow_edge_is_exact(isa, assert_exact):
    """A row of MAX_SAFE_ROW_NNZ = 131071 nonzeros of 127 times x = 127 gives 2113977919,
    just below 2^31: exact on every variant, though the VNNI kernel's offset sums
    (x + 128) w wrap past 2^31 on the way."""
    k = MAX_SAFE_ROW_NNZ
    assert k == 131071
    w = np.zeros((2, k), np.int8)
    w[0] = 127
    w[1, ::2] = -128
    wc = pack_csr(w)
    x = np.full((k, 3), 127, np.int8)
    x[:, 1] = -128
    got = spmm_csr(wc, x, isa=isa)
    assert got[0, 0] == 127 * 127 * k
    assert_exact(got, ref.spmm_csr(wc.row_ptr, wc.col_idx, wc.values, k, x))


def test_k_overflow_is_rejected(raises_naming):
    k = MAX_SAFE_ROW_NNZ + 1
    wc = pack_csr(np.full((1, k), -128, np.int8))
    with raises_naming(ValueError, "w_csr"):
        spmm_csr(wc, np.full((k, 2), -128, np.int8))
    with pytest.raises(OverflowError):
        ref.spmm_csr(wc.row_ptr, wc.col_idx, wc.values, k, np.full((k, 2), -128, np.int8))
    # past the static bound, small values are proven safe from the data and run
    small = pack_csr(np.full((1, k), 3, np.int8))
    assert spmm_csr(small, np.full((k, 2), -5, np.int8))[0, 0] == -15 * k


# --- strided operands, out=, B = 0 --------------------------------------------------------------

def _views(big: np.ndarray, k: int, b: int) -> dict[str, np.ndarray]:
    raw = np.zeros(k * b * big.itemsize + big.itemsize, np.uint8)
    misaligned = raw[1:1 + k * b * big.itemsize].view(big.dtype).reshape(k, b)
    misaligned[...] = big[:k, :b]
    return {"row_strided": big[::2, :b][:k], "row_offset": big[1::2, 3:3 + b][:k],
            "transposed": np.ascontiguousarray(big[:k, :b].T).T,
            "reversed_rows": big[:k, :b][::-1], "b_stride_2": big[:k, :2 * b][:, ::2],
            "reversed_cols": big[:k, :b][:, ::-1], "misaligned": misaligned}


VIEWS = list(_views(np.zeros((300, 300), np.float32), 50, 70))


@pytest.mark.parametrize("dtype, isa", isa_cases())
@pytest.mark.parametrize("view", VIEWS)
def test_strided_x(view, dtype, isa, assert_exact):
    rng = np.random.default_rng(VIEWS.index(view))
    k, b = 50, 70
    wc = pack_csr(sparse(rng, 23, k, 0.3, dtype))
    x = _views(activations(rng, 2 * k + 2, 2 * b + 4, dtype), k, b)[view]
    if view == "misaligned" and dtype == "int8":
        assert x.ctypes.data % 2 == 1       # int8 has no alignment to lose: read in place
    keep = x.copy()
    got = spmm_csr(wc, x, isa=isa)
    np.testing.assert_array_equal(x, keep)
    check(got, wc, keep, assert_exact)


@pytest.mark.parametrize("dtype, isa", isa_cases())
@pytest.mark.parametrize("offset, pitch", [(1, 0), (16, 0), (0, 4), (0, 0)],
                         ids=["addr_plus_1_elem", "addr_plus_16_bytes", "pitch_plus_4",
                              "line_aligned"])
def test_x_rows_off_cache_lines(offset, pitch, dtype, isa, assert_exact):
    """x rows that do not start on 64-byte lines are copied to line-aligned rows by the
    vector variants when the rows are reused (spmm_csr.c); the result is the same."""
    rng = np.random.default_rng(offset + 7 * pitch)
    k, b = 40, 75
    item = np.dtype(dtype).itemsize
    wc = pack_csr(sparse(rng, 50, k, 0.5, dtype))
    assert wc.stored >= 4 * k and b * item >= 64           # the copy pays: it is taken
    ld = -(-b * item // 64) * 64 // item + pitch           # elements between rows
    start = offset * item if offset == 1 else offset       # bytes off a 64-byte boundary
    raw = aligned_empty((k * ld * item + 128,), np.uint8)
    x = raw[start:start + k * ld * item].view(dtype).reshape(k, ld)[:, :b]
    x[...] = activations(rng, k, b, dtype)
    off_lines = x.ctypes.data % 64 != 0 or (ld * item) % 64 != 0
    assert off_lines == ((offset, pitch) != (0, 0))
    check(spmm_csr(wc, x, isa=isa), wc, x, assert_exact)


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_argument_and_b_zero(dtype):
    rng = np.random.default_rng(9)
    wc = pack_csr(sparse(rng, 6, 40, 0.3, dtype))
    x = activations(rng, 40, 9, dtype)
    out_dtype = np.int32 if dtype == "int8" else np.float32
    big = np.full((10, 15), 77, out_dtype)
    out = big[2:8, 3:12]
    assert spmm_csr(wc, x, out=out) is out
    np.testing.assert_array_equal(out, spmm_csr(wc, x))
    mask = np.ones(big.shape, bool)
    mask[2:8, 3:12] = False
    assert np.all(big[mask] == 77)
    empty = spmm_csr(wc, x[:, :0])
    assert empty.shape == (6, 0) and empty.dtype == out_dtype


# --- hypothesis --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, isa", isa_cases())
@settings(max_examples=15, deadline=None)
@given(n_out=st.integers(1, 40), k=st.integers(1, 300), b=st.integers(1, 300),
       density=st.sampled_from([0.0, 0.02, 0.1, 0.3, 0.7, 1.0]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_random_shapes(dtype, isa, n_out, k, b, density, seed, assert_exact):
    rng = np.random.default_rng(seed)
    wc = pack_csr(sparse(rng, n_out, k, density, dtype))
    x = activations(rng, k, b, dtype)
    check(spmm_csr(wc, x, isa=isa), wc, x, assert_exact)


# --- tolerance ---------------------------------------------------------------------------------

def test_tolerance_catches_a_missing_term():
    rng = np.random.default_rng(10)
    wc = pack_csr(sparse(rng, 4, 300, 0.5, "float32"))
    x = activations(rng, 300, 5, "float32")
    tol = ref.spmm_csr_tolerance(wc.row_ptr, wc.col_idx, wc.values, 300, x)
    w = wc.unpack().astype(np.float64)
    terms = w[0, :, None] * x.astype(np.float64)       # [K, B] products of row 0
    assert np.all(np.abs(terms).max(axis=0) > tol[0])   # dropping the largest is caught
    assert np.all(tol > 0)
    assert ref.SPMM_CSR_F32_RTOL_PER_STEP == 1.01 * 2.0 ** -24


# --- validation --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(11)
    return (pack_csr(sparse(rng, 5, 64, 0.3, "int8")),
            pack_csr(sparse(rng, 5, 64, 0.3, "float32")))


@pytest.mark.parametrize("bad, exc, which", [
    ([[1] * 3] * 64, TypeError, "int8"), (np.ones((64, 3), np.uint8), TypeError, "int8"),
    (np.ones((64, 3), np.float32), TypeError, "int8"),
    (np.ones((64, 3), np.int8), TypeError, "float32"),
    (np.ones((64, 3), np.float64), TypeError, "float32"),
    (np.ones(64, np.int8), ValueError, "int8"), (np.ones((2, 64, 3), np.int8), ValueError, "int8"),
    (np.full((64, 3), np.nan, np.float32), ValueError, "float32"),
    (np.full((64, 3), -np.inf, np.float32), ValueError, "float32"),
], ids=["list", "uint8", "f32_for_int8", "int8_for_f32", "float64", "1d", "3d", "nan", "inf"])
def test_bad_x(small, bad, exc, which, raises_naming):
    with raises_naming(exc, "x"):
        spmm_csr(small[DTYPES.index(which)], bad)


def test_bad_weights_out_isa(small, raises_naming):
    w8, wf = small
    x8 = np.ones((64, 3), np.int8)
    with raises_naming(ValueError, "w_csr"):                   # K mismatch names both
        spmm_csr(w8, np.ones((63, 3), np.int8))
    for bad in (np.ones((5, 64), np.int8), pack_weights(np.ones((64, 5), np.int8)),
                pack_weights(np.ones((64, 5), np.int8)).data):
        with raises_naming(TypeError, "w_csr"):
            spmm_csr(bad, x8)
    with raises_naming(TypeError, "out"):
        spmm_csr(w8, x8, out=np.zeros((5, 3), np.float32))
    with raises_naming(TypeError, "out"):
        spmm_csr(wf, x8.astype(np.float32), out=np.zeros((5, 3), np.int32))
    with raises_naming(ValueError, "out"):
        spmm_csr(w8, x8, out=np.zeros((3, 5), np.int32))
    with raises_naming(ValueError, "out"):
        spmm_csr(w8, x8, out=np.zeros((5, 6), np.int32)[:, ::2])
    with raises_naming(ValueError, "out"):
        ro = np.zeros((5, 3), np.int32)
        ro.flags.writeable = False
        spmm_csr(w8, x8, out=ro)
    raw = np.zeros(5 * 3 * 4 + 1, np.uint8)
    with raises_naming(ValueError, "out"):
        spmm_csr(w8, x8, out=raw[1:].view(np.int32).reshape(5, 3))
    for name in ("cuda", "AVX2", ""):
        with raises_naming(ValueError, "isa"):
            spmm_csr(w8, x8, isa=name)
    with raises_naming(ValueError, "isa"):                     # no float32 VNNI variant
        spmm_csr(wf, x8.astype(np.float32), isa="avx512_vnni")


# --- registry, costs, dispatch -----------------------------------------------------------------

def test_registry_entries_support_and_costs():
    for act, isas in (("s8", ["avx512_vnni", "avx512", "avx2", "portable", "numba", "ref"]),
                      ("f32", ["avx512", "avx2", "portable", "numba", "ref"])):
        kernels = {k.key.isa: k for k in lk.REGISTRY.kernels("spmm_csr", act, "csr")}
        assert sorted(kernels) == sorted(isas)
    assert S8_ISAS[-1] == F32_ISAS[-1] == "ref"
    info = lk.dispatch_info()["spmm_csr"]
    assert info["available"] == [isa for isa in F32_ISAS if isa in S8_ISAS]
    assert lk.REGISTRY.lookup("spmm_csr", "s8", "csr").key.isa == S8_ISAS[0]
    avx512 = {"avx512f", "avx512bw", "avx512dq", "avx512vl"}
    s8 = {k.key.isa: k for k in lk.REGISTRY.kernels("spmm_csr", "s8", "csr")}
    assert s8["avx512_vnni"].supported() == (avx512 | {"avx512_vnni"} <= FEATURES)
    assert s8["avx2"].supported() == ("avx2" in FEATURES)
    for f32, isas in ((0, S8_ISAS), (1, F32_ISAS)):
        c_best = next((isa for isa in isas if isa in native.C_ISAS), "portable")
        assert native.C_ISAS[native.lib.lb_spmm_csr_selected(f32)] == c_best
    assert not native.lib.lb_spmm_csr_supported(native.C_ISAS.index("avx512_vnni"), 1)
    # ops = 2 nnz B; bytes = values + int32 indices + int64 row pointers + x + int32 out
    c8 = s8["ref"].cost(4096, 4096, 128, 1000)
    assert c8 == (2 * 1000 * 128, 1000 + 4 * 1000 + 8 * 4097 + 4096 * 128 + 4 * 4096 * 128)
    cf = lk.REGISTRY.lookup("spmm_csr", "f32", "csr", "ref").cost(4096, 4096, 128, 1000)
    assert cf == (2 * 1000 * 128, 4000 + 4000 + 8 * 4097 + 4 * 4096 * 128 + 4 * 4096 * 128)
    assert csr_cost(3, 5, 7, 0, value_bits=8, act_bits=8)[0] == 0
    with pytest.raises(ValueError, match="shape"):
        csr_cost(3, 5, -1, 2, value_bits=8, act_bits=8)


# (LOWBIT_DISABLE_ISA, selected int8 variant, selected float32 variant) on a CPU with every
# feature; on others the expectations are filtered to what the CPU has.
DISABLE_STEPS = [
    ("", "avx512_vnni", "avx512"),
    ("avx512_vnni", "avx512", "avx512"),
    ("avx512_vnni,avx512", "avx2", "avx2"),
    ("avx512_vnni,avx512,avx2", "portable", "portable"),
    ("avx512_vnni,avx512,avx2,portable", "numba", "numba"),
    ("avx512_vnni,avx512,avx2,portable,numba", "ref", "ref"),
]

PROBE = textwrap.dedent("""
    import json
    import numpy as np
    import lowbit.kernels as lk
    from lowbit.kernels import ref
    rng = np.random.default_rng(1)
    same = {}
    for dtype in ("int8", "float32"):
        w = np.where(rng.random((70, 300)) < 0.2, rng.integers(-128, 128, (70, 300)), 0)
        wc = lk.pack_csr(w.astype(dtype))
        x = rng.integers(-128, 128, (300, 150)).astype(dtype)
        want = ref.spmm_csr(wc.row_ptr, wc.col_idx, wc.values, 300, x)
        same[dtype] = bool(np.array_equal(lk.spmm_csr(wc, x), want))  # small ints: exact
    print(json.dumps({"s8": lk.REGISTRY.lookup("spmm_csr", "s8", "csr").key.isa,
                      "f32": lk.REGISTRY.lookup("spmm_csr", "f32", "csr").key.isa,
                      "same": same}))
""")


@pytest.mark.parametrize("disabled, want_s8, want_f32", DISABLE_STEPS,
                         ids=[d or "none" for d, _, _ in DISABLE_STEPS])
def test_disable_isa_reaches_every_variant(disabled, want_s8, want_f32):
    """Each LOWBIT_DISABLE_ISA step falls back to the next variant, which gives the
    reference's results (in a fresh interpreter: the variable is read at import)."""
    def best(isas, off):
        return next(isa for isa in isas if isa not in off)
    off = set(filter(None, disabled.split(",")))
    # what this CPU can run, whatever is disabled here: the registry's supported() view
    can = {act: [k.key.isa for k in lk.REGISTRY.kernels("spmm_csr", act, "csr")
                 if k.supported()] for act in ("s8", "f32")}
    want = {"s8": best(can["s8"], off), "f32": best(can["f32"], off)}
    if "avx512_vnni" in can["s8"] and "avx2" in can["f32"]:
        assert (want["s8"], want["f32"]) == (want_s8, want_f32)
    env = {key: v for key, v in os.environ.items() if key != "LOWBIT_DISABLE_ISA"}
    env["LOWBIT_DISABLE_ISA"] = disabled
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res == {"s8": want["s8"], "f32": want["f32"],
                   "same": {"int8": True, "float32": True}}


# --- benchmark groups, target and the CSR / dense crossover in the report -------------------

def test_bench_groups_and_target_are_declared():
    from lowbit import targets
    from lowbit.bench.config import (SPMM_CSR_DENSITIES, SPMM_CSR_OP, SPMM_CSR_SHAPE,
                                     spmm_csr_group)
    from lowbit.bench.impls import pass_order

    assert SPMM_CSR_SHAPE == (4096, 4096, 128)
    assert SPMM_CSR_DENSITIES == (0.5, 0.2, 0.1, 0.05, 0.01)
    assert [spmm_csr_group(d) for d in SPMM_CSR_DENSITIES] == [
        "spmm_csr-50%", "spmm_csr-20%", "spmm_csr-10%", "spmm_csr-5%", "spmm_csr-1%"]
    names = [impl.name for impl in pass_order(SPMM_CSR_OP)]
    assert {"scipy_csr", "torch_sparse_csr", "lowbit_int8"} <= set(names)
    assert {f"lowbit[{isa}]" for isa in S8_ISAS if isa != "ref"} <= set(names)
    assert {f"lowbit_f32[{isa}]" for isa in F32_ISAS if isa != "ref"} <= set(names)
    assert not any(name.endswith("[ref]") for name in names)
    # the SIMD variants first, the scalar fallbacks (portable C, Numba) last
    simd = [n for n in names if n.startswith("lowbit") and "portable" not in n
            and "numba" not in n and n != "lowbit_int8"]
    assert names[:len(simd)] == simd
    mine = [t for t in targets.default_targets() if t.op == SPMM_CSR_OP]
    assert [(t.group, t.goal, t.baselines) for t in mine] == [
        ("spmm_csr-10%", 2.0, ("scipy_csr",))]


def _csr_json(per_density: dict) -> dict:
    """A pytest-benchmark JSON of spmm_csr groups: {density: {impl: per-pass medians}}."""
    from lowbit.bench.config import spmm_csr_group
    entries = []
    for density, impls in per_density.items():
        for impl, medians in impls.items():
            family = "lowbit" if impl.startswith("lowbit[") else "baseline"
            for p, median in enumerate(medians):
                entries.append({
                    "group": spmm_csr_group(density), "name": f"t[{impl}-p{p}]",
                    "extra_info": {"impl": impl, "family": family, "isa": impl,
                                   "precision": "int8", "ops": 1e9, "bytes": 1e8, "m": 128,
                                   "n": 4096, "k": 4096, "pass": p, "passes": len(medians)},
                    "stats": {"median": median, "min": median, "rounds": 3}})
    return {"benchmarks": entries}


def test_crossover_and_target_in_the_report():
    from lowbit import benchtable, report, targets

    data = _csr_json({
        0.5: {"lowbit[avx512_vnni]": (4.0, 5.0, 4.0), "lowbit_int8": (2.0, 2.0, 2.0),
              "scipy_csr": (40.0, 40.0, 40.0)},
        0.2: {"lowbit[avx512_vnni]": (2.0, 3.0, 2.5), "lowbit[avx2]": (1.9, 9.0, 9.0),
              "lowbit_int8": (2.0, 2.0, 2.0)},
        0.1: {"lowbit[avx512_vnni]": (1.0, 1.0, 1.0), "lowbit_int8": (2.0, 2.0, 2.0),
              "scipy_csr": (5.0, 1.5, 3.0)},
        0.01: {"lowbit[avx512_vnni]": (0.1, 0.1, 0.1), "lowbit_int8": (2.0, 2.0, 2.0)}})
    summary = benchtable.summarize(data)
    assert [g["name"] for g in summary["groups"]] == [
        "spmm_csr-50%", "spmm_csr-20%", "spmm_csr-10%", "spmm_csr-1%"]   # density order
    cross = targets.csr_crossover(summary)
    assert [r["density"] for r in cross["densities"]] == [0.5, 0.2, 0.1, 0.01]
    # 20%: per pass 2 / 1.9, 2 / 3, 2 / 2.5 (the fastest lowbit variant of each pass)
    assert cross["densities"][1]["speedup"] == pytest.approx(0.8)
    assert cross["faster_at"] == [0.1, 0.01]
    text = targets.crossover_text(cross)
    assert "50% 0.50x" in text and "10% 2.00x" in text and "1% 20.00x" in text
    assert "CSR beats dense int8 at 10% density and below; dense int8 is faster from 20%." in text
    target = next(r for r in targets.evaluate(summary) if r["group"] == "spmm_csr-10%")
    assert target["measured"] == pytest.approx(3.0) and target["status"] == targets.MET
    rendered = report.render(report.build_report(data), machine_section=False)
    assert "== spmm_csr-10%  (M=128 N=4096 K=4096" in rendered
    assert "dense int8 is faster from 20%" in rendered.replace("\n", " ")


@pytest.mark.parametrize("speedups, verdict", [
    ({0.5: 0.5, 0.1: 0.9}, "CSR is slower than dense int8 at every density measured."),
    ({0.5: 1.5, 0.1: 3.0}, "CSR beats dense int8 at every density measured."),
    ({0.5: 1.5, 0.2: 0.9, 0.1: 3.0},
     "CSR beats dense int8 at 50%, 10% density, not at 20%."),
], ids=["never", "always", "not_monotone"])
def test_crossover_verdicts(speedups, verdict):
    from lowbit import benchtable, targets

    data = _csr_json({d: {"lowbit[avx512_vnni]": (1.0,), "lowbit_int8": (s,)}
                      for d, s in speedups.items()})
    assert targets.crossover_text(targets.csr_crossover(benchtable.summarize(data))) \
        .endswith(verdict)
    assert targets.crossover_text(targets.csr_crossover({"groups": []})) is None
