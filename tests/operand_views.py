"""Non-contiguous and misaligned views of an activation matrix, named for test ids; shared by
the int4 and 2:4 GEMM tests (the kernels read such operands in place or copy them once)."""
from __future__ import annotations

import numpy as np


def operand_views(big: np.ndarray, m: int, k: int) -> dict[str, np.ndarray]:
    """[m, k] views into ``big`` (at least [2m + 2, 2k + 4]) with the values of big[:m, :k]
    where the layout allows: row strides, offsets, a transpose, reversed rows, a K stride of
    2, and a copy one byte past an aligned boundary."""
    raw = np.zeros(m * k * big.itemsize + big.itemsize, np.uint8)
    misaligned = raw[1:1 + m * k * big.itemsize].view(big.dtype).reshape(m, k)
    misaligned[...] = big[:m, :k]
    return {"row_strided": big[::2, :k][:m], "row_offset": big[1::2, 3:3 + k][:m],
            "transposed": np.ascontiguousarray(big[:m, :k].T).T,
            "reversed_rows": big[:m, :k][::-1], "k_stride_2": big[:m, :2 * k][:, ::2],
            "misaligned": misaligned}
