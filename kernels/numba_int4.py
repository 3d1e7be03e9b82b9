"""Numba int4-weight GEMMs over the same packed panels as the C kernels (parallel, cached).

Each task is one 64-column panel and a block of rows; per group it sums the decoded nibbles
times the activations (float32 for w4a16, exact int32 for w4a8) and adds the group's scaled
sum, the zero point applied to the group sum of the activations as in the C kernels.
Threading layer: see numba_gemm.
"""
from __future__ import annotations

import numba
import numpy as np

from . import native
from .numba_tiles import ROWS, task_tile
from .formats import PackedInt4Weights


_KPOS = np.array([0, 4, 1, 5, 2, 6, 3, 7], dtype=np.int64)  # K of the nibble at bits 4i


@numba.njit(parallel=True, cache=True, nogil=True)
def _w4a16(x, words, scales, zeros, bias, kpos, out):  # pragma: no cover - compiled
    # words[p, q, j]: the 8 nibbles of column 64p + j, K block q; v = n - bias - zeros
    m, k = x.shape
    n_panels, kb, nr = words.shape
    groups = scales.shape[1]
    gb = kb // groups
    n = out.shape[1]
    row_blocks = (m + ROWS - 1) // ROWS
    for task in numba.prange(n_panels * row_blocks):
        p, i0, i1 = task_tile(task, row_blocks, m)
        c = np.zeros((ROWS, nr), dtype=np.float32)
        acc = np.empty(nr, dtype=np.float32)
        for g in range(groups):
            for i in range(i0, i1):
                acc[:] = 0
                xs = np.float32(0)
                for q in range(g * gb, (g + 1) * gb):
                    wq = words[p, q]
                    for t in range(8):
                        xv = x[i, 8 * q + kpos[t]]
                        xs += xv
                        sh = np.uint32(4 * t)
                        for j in range(nr):
                            acc[j] += xv * (np.float32((wq[j] >> sh) & np.uint32(15)) - bias)
                for j in range(nr):
                    c[i - i0, j] += scales[p, g, j] * (acc[j] - zeros[p, g, j] * xs)
        c0 = p * nr
        for i in range(i0, i1):
            for j in range(min(nr, n - c0)):
                out[i, c0 + j] = c[i - i0, j]


@numba.njit(parallel=True, cache=True, nogil=True)
def _w4a8(a, words, scales, zeros, a_scale, kpos, out):  # pragma: no cover - compiled
    m, k = a.shape
    n_panels, kb, nr = words.shape
    groups = scales.shape[1]
    gb = kb // groups
    n = out.shape[1]
    row_blocks = (m + ROWS - 1) // ROWS
    for task in numba.prange(n_panels * row_blocks):
        p, i0, i1 = task_tile(task, row_blocks, m)
        c = np.zeros((ROWS, nr), dtype=np.float32)
        acc = np.empty(nr, dtype=np.int32)
        for g in range(groups):
            for i in range(i0, i1):
                acc[:] = 0
                asum = np.int32(0)
                for q in range(g * gb, (g + 1) * gb):
                    wq = words[p, q]
                    for t in range(8):
                        av = np.int32(a[i, 8 * q + kpos[t]])
                        asum += av
                        sh = np.uint32(4 * t)
                        for j in range(nr):
                            acc[j] += av * np.int32((wq[j] >> sh) & np.uint32(15))
                for j in range(nr):
                    # sum a n - z sum a: exact in int32, then scaled in float32
                    exact = acc[j] - np.int32(zeros[p, g, j]) * asum
                    c[i - i0, j] += scales[p, g, j] * np.float32(exact)
        c0 = p * nr
        for i in range(i0, i1):
            s = a_scale[i]
            for j in range(min(nr, n - c0)):
                out[i, c0 + j] = c[i - i0, j] * s


def _operands(w4: PackedInt4Weights):
    words = w4.data.view(np.uint32).reshape(w4.data.shape[:3])
    scales = w4.scales.astype(np.float32)
    return words, scales


def _threads() -> None:
    numba.set_num_threads(min(native.num_threads(), numba.config.NUMBA_NUM_THREADS))


def gemm_w4a16_panels(x: np.ndarray, w4: PackedInt4Weights, out: np.ndarray) -> None:
    """out = x @ W for float32 x (arguments already checked)."""
    words, scales = _operands(w4)
    if w4.zeros is None:  # int4: v = n - 8 decoded directly
        zeros, bias = np.zeros_like(scales), np.float32(8)
    else:
        zeros, bias = w4.zeros.astype(np.float32), np.float32(0)
    _threads()
    # C-contiguous operands only: one compiled signature (strided views would add another)
    res = np.empty(out.shape, np.float32)
    _w4a16(np.ascontiguousarray(x), words, scales, zeros, bias, _KPOS, res)
    out[...] = res


def gemm_w4a8_panels(a: np.ndarray, w4: PackedInt4Weights, a_scale: np.ndarray | None,
                     out: np.ndarray) -> None:
    """out = a_scale * sum_g scale * acc_g for int8 a (arguments already checked)."""
    words, scales = _operands(w4)
    zeros = np.full(scales.shape, 8, np.uint8) if w4.zeros is None else w4.zeros
    ones = np.ones(a.shape[0], np.float32) if a_scale is None else a_scale
    _threads()
    res = np.empty(out.shape, np.float32)
    _w4a8(np.ascontiguousarray(a), words, scales, zeros, ones, _KPOS, res)
    out[...] = res
