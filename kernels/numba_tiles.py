"""What lowbit's Numba kernels share: the threading layer and the split of a GEMM into
(weight panel, row tile) tasks for ``numba.prange``.

Numba's threading layer defaults to the work-queue pool here, unless NUMBA_THREADING_LAYER
says otherwise: its OpenMP layer would load a second OpenMP runtime next to torch's.
"""
from __future__ import annotations

import os

import numba

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

ROWS = 4  # rows per task: one panel strip of 4 rows of accumulators


@numba.njit(inline="always", cache=True)
def task_tile(task, row_blocks, m):  # pragma: no cover - compiled
    """(panel, first row, end row) of task ``task`` when every panel has ``row_blocks``
    tiles of ROWS rows over ``m`` rows."""
    i0 = (task % row_blocks) * ROWS
    return task // row_blocks, i0, min(i0 + ROWS, m)
