"""Numba spmm_csr over the same quad-padded CSR arrays as the C kernels (parallel, cached).

Rows are spread over the threads (prange); per row, each entry's x row is scaled and added
to a row of accumulators: int32 for int8 (wrapping, so exact whenever the result fits in
int32, which the wrapper checks), float32 for float32. Threading layer: see numba_tiles.
"""
from __future__ import annotations

import numba
import numpy as np

from . import native
from . import numba_tiles  # noqa: F401  (threading layer)
from .format_csr import PackedCsrWeights



@numba.njit(parallel=True, cache=True, nogil=True)
def _spmm(row_ptr, col_idx, values, x, out):  # pragma: no cover - compiled
    n_out = row_ptr.shape[0] - 1
    b = x.shape[1]
    for i in numba.prange(n_out):
        acc = np.zeros_like(out[i])  # int8 products are exact in Numba's int64
        for p in range(row_ptr[i], row_ptr[i + 1]):
            v = values[p]
            xr = x[col_idx[p]]
            for c in range(b):
                acc[c] += v * xr[c]
        out[i, :] = acc


def spmm_csr(w: PackedCsrWeights, x: np.ndarray, out: np.ndarray) -> None:
    """out = W @ x (int8 -> int32, float32 -> float32), into ``out``."""
    numba.set_num_threads(min(native.num_threads(), numba.config.NUMBA_NUM_THREADS))
    _spmm(w.row_ptr, w.col_idx, w.values, x, out)
