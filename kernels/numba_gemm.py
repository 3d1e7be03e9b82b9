"""Numba int8 GEMM over the same packed panels as the C kernels (parallel, cached; threading
layer and task split: numba_tiles)."""
from __future__ import annotations

import numba
import numpy as np

from . import native
from .numba_tiles import ROWS, task_tile
from .formats import PackedWeights




@numba.njit(parallel=True, cache=True, nogil=True)
def _kernel(a4, wp32, corr, out):  # pragma: no cover - compiled
    # wp32[p, q, j] holds W[4q .. 4q+3, 64p + j] as one little-endian int32; the four bytes
    # are sign-extended with shifts, so the j loop reads unit-stride int32 lanes (LLVM
    # vectorizes it) instead of int8s four apart.
    m = a4.shape[0]
    n_panels, kq, nr = wp32.shape
    n = out.shape[1]
    row_blocks = (m + ROWS - 1) // ROWS
    s8, s16, s24 = np.int32(8), np.int32(16), np.int32(24)
    for task in numba.prange(n_panels * row_blocks):
        p, i0, i1 = task_tile(task, row_blocks, m)
        acc = np.zeros((ROWS, nr), dtype=np.int32)
        for q in range(kq):
            wq = wp32[p, q]
            for i in range(i0, i1):
                a0 = a4[i, q * 4]
                a1 = a4[i, q * 4 + 1]
                a2 = a4[i, q * 4 + 2]
                a3 = a4[i, q * 4 + 3]
                row = acc[i - i0]
                for j in range(nr):
                    w = wq[j]
                    # Numba widens int32 shifts to int64: truncate before shifting back
                    row[j] += (a0 * (np.int32(w << s24) >> s24) + a1 * (np.int32(w << s16) >> s24)
                               + a2 * (np.int32(w << s8) >> s24) + a3 * (w >> s24))
        c0 = p * nr
        for i in range(i0, i1):
            for j in range(min(nr, n - c0)):
                out[i, c0 + j] = acc[i - i0, j] + corr[c0 + j]


def gemm_int8_panels(a: np.ndarray, w: PackedWeights, a_zero_point: int) -> np.ndarray:
    """int32 (A - a_zero_point) @ W with W in INT8_PANELS layout (arguments already checked)."""
    m, k = a.shape
    kq = w.data.shape[1]
    a4 = np.zeros((m, kq * 4), dtype=np.int32)  # K padded to quads
    a4[:, :k] = a
    # sum_k (a - zp) w = sum_k a w - zp * colsum, in wrapping int32 like the C kernels
    corr = (np.int64(-a_zero_point) * w.col_sum.astype(np.int64)).astype(np.int32)
    out = np.empty((m, w.n), dtype=np.int32)
    numba.set_num_threads(min(native.num_threads(), numba.config.NUMBA_NUM_THREADS))
    _kernel(a4, w.data.view(np.int32)[..., 0], corr, out)
    return out
