"""NumPy references: they define what every optimized kernel must compute.

Integer results of every variant are compared with these for exact equality; float
epilogues (gemm_int8's Dequantize, gemm_binary's alpha/beta scaling) within FLOAT_RTOL /
FLOAT_ATOL.
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
