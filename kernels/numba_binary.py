"""Numba binary GEMM over the same packed panels as the C kernels (parallel, cached).

popcount is LLVM's ``ctpop`` intrinsic (the POPCNT instruction, or VPOPCNTQ when LLVM
vectorizes the column loop for a CPU that has it). Threading layer: see numba_gemm.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from . import native
from .numba_tiles import ROWS, task_tile
from .formats import PackedBinaryWeights, tail_mask




@intrinsic
def _popcount(typingctx, x):
    if x != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return types.uint64(types.uint64), codegen


@numba.njit(parallel=True, cache=True, nogil=True)
def _kernel(a, wp, k, pad, out):  # pragma: no cover - compiled
    # wp[p, q, j]: word q of weight column 32p + j; the j loop reads unit-stride words. W's
    # padding bits are 0, so A's add popcount(a_last & pad) to every column of a row.
    m, kw = a.shape
    n_panels, _, nr = wp.shape
    n = out.shape[1]
    row_blocks = (m + ROWS - 1) // ROWS
    for task in numba.prange(n_panels * row_blocks):
        p, i0, i1 = task_tile(task, row_blocks, m)
        acc = np.zeros((ROWS, nr), dtype=np.uint64)
        for q in range(kw):
            wq = wp[p, q]
            for i in range(i0, i1):
                ai = a[i, q]
                row = acc[i - i0]
                for j in range(nr):
                    row[j] += _popcount(ai ^ wq[j])
        c0 = p * nr
        for i in range(i0, i1):
            kk = k + 2 * np.int64(_popcount(a[i, kw - 1] & pad))
            for j in range(min(nr, n - c0)):
                out[i, c0 + j] = np.int32(kk - 2 * np.int64(acc[i - i0, j]))


def gemm_binary_panels(a: np.ndarray, w: PackedBinaryWeights) -> np.ndarray:
    """int32 K - 2 popcount(a XOR w) with W in BINARY_PANELS layout (arguments checked)."""
    out = np.empty((a.shape[0], w.n), dtype=np.int32)
    numba.set_num_threads(min(native.num_threads(), numba.config.NUMBA_NUM_THREADS))
    pad = np.uint64(~tail_mask(w.k) & (2 ** 64 - 1))
    _kernel(a, w.data, np.int64(w.k), pad, out)
    return out
