"""NumPy references: they define what every optimized kernel must compute.

Integer results of every variant are compared with these for exact equality; float
epilogues (gemm_int8's Dequantize, gemm_binary's alpha/beta scaling) within FLOAT_RTOL /
FLOAT_ATOL. The int4 GEMMs' float sums within the K-dependent bound ``int4_tolerance``
(derived below); gemm_w4a8's int32 group accumulators exactly.
"""
from __future__ import annotations

import numpy as np

from .epilogue import INT32_MAX, INT32_MIN, Prepared
from .formats import unpack_bits

# Float epilogue tolerance against the reference. The C variants use the same float32
# operations in the same order and are in practice bit-identical; the bound is for
# implementations (Numba, future ISAs) that may evaluate products differently.
FLOAT_RTOL = 1e-6
FLOAT_ATOL = 1e-6


def gemm_int8(a: np.ndarray, w_kn: np.ndarray, a_zero_point: int = 0) -> np.ndarray:
    """int32 C = (A - a_zero_point) @ W, exact; raises OverflowError if C leaves int32."""
    acc = (a.astype(np.int64) - a_zero_point) @ w_kn.astype(np.int64)
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise OverflowError("the exact int8 GEMM result does not fit in int32")
    return acc.astype(np.int32)


def requantize_scalar(acc: int, multiplier: int, shift: int, zero_point: int, qmin: int,
                      qmax: int, bias: int = 0) -> int:
    """Requantize one accumulator in Python integers: the definition the kernels follow."""
    v = min(max(acc + bias, INT32_MIN), INT32_MAX)
    r = (v * multiplier + (1 << (shift - 1))) >> shift  # Python >> floors: ties toward +inf
    return min(max(r + zero_point, qmin), qmax)


def requantize(acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, zero_point: int,
               qmin: int, qmax: int, bias: np.ndarray | None, out_dtype) -> np.ndarray:
    """Vectorized ``requantize_scalar`` over an [M, N] int32 array (vectors broadcast over N)."""
    v = acc.astype(np.int64)
    if bias is not None:
        v = v + bias.astype(np.int64)
    v = np.clip(v, INT32_MIN, INT32_MAX)
    s = shift.astype(np.int64)
    r = (v * multiplier.astype(np.int64) + (np.int64(1) << (s - 1))) >> s
    return np.clip(r + zero_point, qmin, qmax).astype(out_dtype)


def dequantize(acc: np.ndarray, a_scale: np.ndarray, w_scale: np.ndarray,
               bias: np.ndarray | None) -> np.ndarray:
    """float32 ``acc * (a_scale[:, None] * w_scale[None, :]) + bias`` in float32 steps."""
    scale = a_scale.astype(np.float32)[:, None] * w_scale.astype(np.float32)[None, :]
    out = acc.astype(np.float32) * scale
    return out + bias.astype(np.float32) if bias is not None else out


def apply_epilogue(acc: np.ndarray, ep: Prepared) -> np.ndarray:
    """Apply a prepared epilogue to int32 accumulators."""
    if ep.kind == 0:
        return acc
    if ep.kind == 1:
        src = ep.source
        return requantize(acc, ep.multiplier, ep.shift, src.zero_point, src.qmin, src.qmax,
                          ep.bias, ep.out_dtype)
    return dequantize(acc, ep.a_scale, ep.w_scale, ep.bias)


def gemm_binary(a_bits: np.ndarray, w_rows: np.ndarray, k: int) -> np.ndarray:
    """int32 dot[i, j] = sum_k a[i, k] * w[j, k] over the +-1 values of the first K bits.

    a_bits: uint64 [M, ceil(K/64)] activation rows, w_rows: uint64 [N, ceil(K/64)] weight
    rows (one per output column), both in the format of ``formats.pack_bits``: bit 1 = +1,
    bit 0 = -1, bits past K ignored. Equal to K - 2 * popcount(a_i XOR w_j) over those bits.
    """
    a = unpack_bits(a_bits, k).astype(np.int64)
    w = unpack_bits(w_rows, k).astype(np.int64)
    return (a @ w.T).astype(np.int32)


def binary_scale(dot: np.ndarray, alpha: np.ndarray | None,
                 beta: np.ndarray | None) -> np.ndarray:
    """XNOR-Net scaling: float32 ``dot * beta[i] * alpha[j]``, left to right in float32
    (a missing vector counts as ones)."""
    out = dot.astype(np.float32)
    if beta is not None:
        out = out * beta.astype(np.float32)[:, None]
    if alpha is not None:
        out = out * alpha.astype(np.float32)[None, :]
    return out


# --- int4 weights (gemm_w4a16, gemm_w4a8) ------------------------------------------------
#
# Float outputs of the int4 kernels are compared with these references within a bound that
# grows with the length of the reduction, because every implementation sums in its own
# order. Each variant evaluates, in float32, sum_k x_k * (n_k - z) * s (w4a16) or
# sum_g s_g * acc_g (w4a8) with at most ``n`` rounding steps on the path of any term, where
# n <= K + 4 for w4a16 (group sums of up to group_size products, the per-group scale and
# zero-point steps, then a sum over K / group_size groups; group_size + K / group_size + 3
# <= K + 4) and n <= K / group_size + 3 for w4a8 (the int32 group sums are exact, then one
# product and one addition per group and the activation scale). By the standard bound for
# recursive summation in any order, |got - exact| <= gamma_n * sum |terms| with
# gamma_n = n u / (1 - n u) <= 1.01 n u for n u < 0.01, u = 2^-24 (float32 unit roundoff),
# where the terms are those an implementation may add: |x_k| (n_k + z) |s| covers both the
# direct form x (n - z) s and the split form s (sum x n - z sum x) that the zero-point
# kernels use. The float64 reference itself is off by far less. INT4_BOUND_SLACK adds that
# 1.01. The absolute part, n * FLT_MIN * (1 + max_g |s|) per column, covers results in the
# subnormal range: each of the n steps may flush a group sum below FLT_MIN to zero (the
# bfloat16 dot-product instruction does) before it is scaled by at most max |s|.
FLOAT32_UNIT_ROUNDOFF = 2.0 ** -24
FLOAT32_MIN_NORMAL = 2.0 ** -126
INT4_BOUND_SLACK = 1.01


def int4_tolerance(n_roundings: int, abs_terms: np.ndarray,
                   scale_max: np.ndarray | float = 1.0) -> np.ndarray:
    """Elementwise bound on |got - reference| for float32 sums (see the comment above)."""
    return (INT4_BOUND_SLACK * n_roundings * FLOAT32_UNIT_ROUNDOFF * abs_terms
            + n_roundings * FLOAT32_MIN_NORMAL * (1.0 + np.asarray(scale_max, np.float64)))


def gemm_w4a16(x: np.ndarray, w_deq: np.ndarray) -> np.ndarray:
    """float32 x @ W for float32 activations [M, K] and dequantized weights W [K, N]
    (``PackedInt4Weights.dequantize()``, exact in float64); the product in float64."""
    return (x.astype(np.float64) @ w_deq).astype(np.float32)


def w4a16_tolerance(x: np.ndarray, nibbles: np.ndarray, zeros: np.ndarray,
                    scales: np.ndarray, group_size: int) -> np.ndarray:
    """The bound of ``int4_tolerance`` for gemm_w4a16: n = K + 4 roundings over the terms
    |x_k| (n_k + z) |s| (nibbles [K, N], zero points and scales [K/group_size, N])."""
    k = x.shape[1]
    z = np.repeat(zeros.astype(np.float64), group_size, axis=0)
    s = np.repeat(np.abs(scales.astype(np.float64)), group_size, axis=0)
    mag = (nibbles.astype(np.float64) + z) * s
    return int4_tolerance(k + 4, np.abs(x.astype(np.float64)) @ mag, s.max(axis=0))


def w4a8_group_acc(a: np.ndarray, values: np.ndarray, group_size: int) -> np.ndarray:
    """The exact int32 group accumulators of gemm_w4a8: acc[g, i, j] = sum over k in group g
    of a[i, k] * v[k, j], v = n - z the integer weights (``PackedInt4Weights.values()``)."""
    m, k = a.shape
    g = k // group_size
    ag = a.astype(np.int64).reshape(m, g, group_size).transpose(1, 0, 2)   # [g, M, gs]
    vg = values.astype(np.int64).reshape(g, group_size, -1)                # [g, gs, N]
    acc = np.matmul(ag, vg)
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise OverflowError("a w4a8 group accumulator does not fit in int32")
    return acc.astype(np.int32)


def w4a8_from_acc(acc: np.ndarray, scales: np.ndarray,
                  a_scale: np.ndarray | None) -> np.ndarray:
    """float32 out[i, j] = a_scale[i] * sum_g acc[g, i, j] * scale[g, j], in float64."""
    out = np.einsum("gij,gj->ij", acc.astype(np.float64), scales.astype(np.float64))
    if a_scale is not None:
        out = out * a_scale.astype(np.float64)[:, None]
    return out.astype(np.float32)


def w4a8_tolerance(acc: np.ndarray, scales: np.ndarray,
                   a_scale: np.ndarray | None) -> np.ndarray:
    """The bound of ``int4_tolerance`` for gemm_w4a8: n = K/group_size + 3 roundings over
    the terms |acc_g s_g a_scale|."""
    terms = np.einsum("gij,gj->ij", np.abs(acc.astype(np.float64)),
                      np.abs(scales.astype(np.float64)))
    if a_scale is not None:
        terms = terms * np.abs(a_scale.astype(np.float64))[:, None]
    return int4_tolerance(acc.shape[0] + 3, terms)


def gemm_w4a8(a: np.ndarray, values: np.ndarray, scales: np.ndarray, group_size: int,
              a_scale: np.ndarray | None = None) -> np.ndarray:
    """float32 gemm_w4a8: ``w4a8_from_acc(w4a8_group_acc(a, v, group_size), scales, a_scale)``."""
    return w4a8_from_acc(w4a8_group_acc(a, values, group_size), scales, a_scale)


# --- CSR sparse x dense (spmm_csr) --------------------------------------------------------
#
# float32 spmm_csr sums, per output element, the products of a row's nonzeros with x in
# float32, each variant in its own order (sequentially per column, with or without FMA).
# With n = row nonzeros + 1 rounding steps on the path of any term, the recursive-summation
# bound gives |got - exact| <= gamma_n sum |w x| <= SPMM_CSR_F32_RTOL_PER_STEP * n *
# sum |w x| (gamma_n <= 1.01 n u for n u < 0.01), plus, for results in the subnormal range,
# at most half the smallest subnormal 2^-149 per step (gradual underflow: nothing is
# flushed), bounded by n * 2^-149. Padding entries add w x = 0 exactly.
SPMM_CSR_F32_RTOL_PER_STEP = 1.01 * FLOAT32_UNIT_ROUNDOFF
FLOAT32_MIN_SUBNORMAL = 2.0 ** -149


def _csr_dense(row_ptr: np.ndarray, col_idx: np.ndarray, values: np.ndarray, k: int,
               wide) -> np.ndarray:
    """The dense [N_out, K] matrix of CSR arrays in dtype ``wide`` (duplicates add up)."""
    n_out = len(row_ptr) - 1
    dense = np.zeros((n_out, k), wide)
    rows = np.repeat(np.arange(n_out), np.diff(row_ptr))
    np.add.at(dense, (rows, col_idx), values.astype(wide))
    return dense


def spmm_csr(row_ptr: np.ndarray, col_idx: np.ndarray, values: np.ndarray, k: int,
             x: np.ndarray) -> np.ndarray:
    """out = W @ x for W [N_out, K] in CSR (row_ptr, col_idx, values; stored zeros add
    nothing) and x [K, B]: int8 values and x give the exact int32 product (OverflowError if
    it leaves int32), float32 the float64 product rounded to float32."""
    if values.dtype == np.int8:
        acc = _csr_dense(row_ptr, col_idx, values, k, np.int64) @ x.astype(np.int64)
        if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
            raise OverflowError("the exact spmm_csr result does not fit in int32")
        return acc.astype(np.int32)
    return (_csr_dense(row_ptr, col_idx, values, k, np.float64)
            @ x.astype(np.float64)).astype(np.float32)


def spmm_csr_tolerance(row_ptr: np.ndarray, col_idx: np.ndarray, values: np.ndarray, k: int,
                       x: np.ndarray) -> np.ndarray:
    """Elementwise bound on |got - ref.spmm_csr| for float32 (see the comment above)."""
    w_abs = _csr_dense(row_ptr, col_idx, np.abs(values), k, np.float64)
    steps = (w_abs != 0).sum(axis=1)[:, None] + 1.0
    return (SPMM_CSR_F32_RTOL_PER_STEP * steps * (w_abs @ np.abs(x.astype(np.float64)))
            + steps * FLOAT32_MIN_SUBNORMAL)


# --- 2:4 sparse weights (gemm_sparse24) ---------------------------------------------------
#
# The reference reads the compressed form (``PackedSparse24Weights.kept()``): kept values
# v[g, t, j] and their indices idx[g, t, j] in [0, 4) within group g (K 4g .. 4g + 3), and
# gathers the activations, as the kernels do; it never builds the dense matrix. Integer
# results are exact; float32 results are compared within ``sparse24_tolerance``: every
# variant sums the kept products of a column in float32 (one rounding per term with FMA, two
# without) in its own order, so the recursive-summation bound of ``int4_tolerance`` applies
# with n = 2 (kept terms) + 1 roundings over the terms |a v|.
_SPARSE24_CHUNK = 1 << 22  # gathered elements per column chunk (bounds the reference's memory)


def _sparse24_sum(a: np.ndarray, values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """sum over g, t of a[i, 4g + idx[g, t, j]] * v[g, t, j] in a's dtype (int64 or float64);
    a [M, K] with K <= 4 G is zero-padded to 4 G."""
    m, k = a.shape
    g, _, n = values.shape
    padded = np.zeros((m, 4 * g), dtype=a.dtype)
    padded[:, :k] = a
    out = np.zeros((m, n), dtype=a.dtype)
    step = max(1, _SPARSE24_CHUNK // max(1, m * g * 2))
    base = 4 * np.arange(g, dtype=np.intp)[:, None, None]
    for c0 in range(0, n, step):
        cols = slice(c0, c0 + step)
        rows = base + index[:, :, cols].astype(np.intp)          # [G, 2, c] K positions
        out[:, cols] = np.einsum("igtc,gtc->ic", padded[:, rows], values[:, :, cols])
    return out


def gemm_sparse24(a: np.ndarray, values: np.ndarray, index: np.ndarray,
                  a_zero_point: int = 0) -> np.ndarray:
    """The 2:4 sparse GEMM from the compressed form:

        out[i, j] = sum over groups g, slots t of (a[i, 4g + idx[g, t, j]] - a_zero_point)
                    * v[g, t, j]

    int8 / uint8 activations with int8 values: exact, int32 (OverflowError if it leaves
    int32); float32 activations and values: float64 sums, returned as float32. Activations
    past K count as zero (the kept values there are zero).
    """
    if values.dtype == np.float32:
        return _sparse24_sum(a.astype(np.float64), values.astype(np.float64), index
                             ).astype(np.float32)
    acc = _sparse24_sum(a.astype(np.int64) - a_zero_point, values.astype(np.int64), index)
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise OverflowError("the exact 2:4 sparse GEMM result does not fit in int32")
    return acc.astype(np.int32)


def sparse24_tolerance(a: np.ndarray, values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Elementwise bound on |got - gemm_sparse24| for float32 (see the comment above)."""
    terms = _sparse24_sum(np.abs(a.astype(np.float64)), np.abs(values.astype(np.float64)),
                          index)
    return int4_tolerance(2 * values.shape[0] + 1, terms)
