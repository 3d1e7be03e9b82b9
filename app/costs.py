"""Cost model shared by the kernel registry, the benchmarks and (later) the roofline.

A cost is ``(ops, bytes)``: ops counts a multiply-accumulate as two operations; bytes is the
compulsory traffic: every operand read once and the output written once, the least any
schedule moves between memory and the cores. Pure arithmetic, no imports of the kernels.
"""
from __future__ import annotations


def _nbytes(elements: int, bits: int) -> int:
    return -(-elements * bits // 8)


def gemm_cost(m: int, n: int, k: int, *, a_bits: int = 8, w_bits: int = 8,
              out_bits: int = 32) -> tuple[int, int]:
    """(ops, bytes) of C[M,N] = A[M,K] @ W[K,N] with the given operand widths."""
    if min(m, n, k) < 0:
        raise ValueError(f"shape must be non-negative, got m={m}, n={n}, k={k}")
    ops = 2 * m * n * k
    moved = _nbytes(m * k, a_bits) + _nbytes(k * n, w_bits) + _nbytes(m * n, out_bits)
    return ops, moved
