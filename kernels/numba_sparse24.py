"""Numba 2:4 sparse GEMM over the same packed panels as the C kernels (parallel, cached).

Each task is one 64-column panel and a block of rows; per column and kept value it decodes
the K position from the metadata word, (word >> (8 r + 2 s)) & 3 (format_sparse24), and
multiplies the gathered activation into every row: int32 wrapping sums of (a - zp) v for
int8 (exact when the result fits, as the C kernels), float32 sums in K order for float32.
Threading layer: see numba_gemm.
"""
from __future__ import annotations

import weakref

import numba
import numpy as np

from . import native
from .numba_tiles import ROWS, task_tile
from .format_sparse24 import PackedSparse24Weights




@numba.njit(parallel=True, cache=True, nogil=True)
def _kernel(a, values, meta, out):  # pragma: no cover - compiled
    # a [M, 32 B] zero-padded (a - zp as int32, or float32); values [P, B, 16, 64]; the sums
    # accumulate in out's dtype (int32 wraps like the C kernels')
    m = a.shape[0]
    n_panels, n_blocks, nr = meta.shape
    n = out.shape[1]
    row_blocks = (m + ROWS - 1) // ROWS
    for task in numba.prange(n_panels * row_blocks):
        p, i0, i1 = task_tile(task, row_blocks, m)
        acc = np.zeros((ROWS, nr), dtype=out.dtype)
        for b in range(n_blocks):
            for j in range(nr):
                word = meta[p, b, j]
                for u in range(16):
                    s = u >> 2
                    r = u & 3
                    kk = 32 * b + 8 * s + 4 * (r >> 1) + ((word >> np.uint32(8 * r + 2 * s))
                                                          & np.uint32(3))
                    v = values[p, b, u, j]
                    for i in range(i0, i1):
                        acc[i - i0, j] += a[i, kk] * v
        c0 = p * nr
        for i in range(i0, i1):
            for j in range(min(nr, n - c0)):
                out[i, c0 + j] = acc[i - i0, j]


# int8 values in the kernel's order, per packed matrix (built on its first call, dropped
# with it): the C panels interleave 4 kept values per column, the loop above wants them
# [p, b, u, j]. float32 panels already are.
_KEPT_MAJOR: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def kept_major_values(w24: PackedSparse24Weights) -> np.ndarray:
    """w24's values as [panels, blocks, 16 kept, 64 columns] (int8: transposed once, cached)."""
    values = w24.values
    if values.dtype != np.int8:
        return values
    cached = _KEPT_MAJOR.get(w24)
    if cached is None:  # [p, b, s, j, r] -> [p, b, u = 4 s + r, j]
        p, b = w24.meta.shape[:2]
        cached = np.ascontiguousarray(values.transpose(0, 1, 2, 4, 3)).reshape(
            p, b, 16, values.shape[3])
        _KEPT_MAJOR[w24] = cached
    return cached


def gemm_sparse24_panels(a: np.ndarray, w24: PackedSparse24Weights, zp: int,
                         out: np.ndarray) -> None:
    """out = (a - zp) x W for W in SPARSE24_PANELS layout (arguments already checked)."""
    m, k = a.shape
    blocks = w24.meta.shape[1]
    if w24.values.dtype == np.int8:
        padded = np.zeros((m, 32 * blocks), dtype=np.int32)
        padded[:, :k] = a.astype(np.int32) - zp
    else:
        padded = np.zeros((m, 32 * blocks), dtype=np.float32)
        padded[:, :k] = a
    numba.set_num_threads(min(native.num_threads(), numba.config.NUMBA_NUM_THREADS))
    # one compiled signature per dtype: C-contiguous operands
    res = out if out.flags.c_contiguous else np.empty(out.shape, out.dtype)
    _kernel(padded, kept_major_values(w24), w24.meta, res)
    if res is not out:
        out[...] = res
