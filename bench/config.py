"""What the benchmark suite measures and how long it may take: shapes, threads, budgets.

Pure data, no numpy: the report code (``lowbit.benchtable``, ``lowbit.targets``) imports it.
"""
from __future__ import annotations

from dataclasses import dataclass

THREADS = 2  # every implementation (lowbit, torch, numpy's BLAS) runs on this many threads

# Environment pinning every thread pool; numpy's OpenBLAS reads it only when numpy is loaded.
THREAD_ENV = ("LOWBIT_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

# (M, N, K): M rows of activations, N output channels, K reduction.
GEMM_SHAPES = (
    (1, 4096, 4096),      # LLM decode, one token
    (16, 4096, 4096),     # small batch decode
    (128, 4096, 4096),    # prefill chunk
    (512, 4096, 11008),   # LLaMA-7B MLP down-projection (11008 -> 4096), 512 tokens
    (1024, 1024, 1024),   # square
    (3136, 64, 576),      # ResNet 3x3 conv, 56x56x64 -> 64, as a GEMM via im2col
)

GEMM_OP = "gemm_int8"
PEAK_GROUP = "peak"
PEAK_KINDS = ("int8_vnni", "fp32_fma")
PEAK_WHEN = ("first", "last")  # peak loops run at both ends of the session


def gemm_group(m: int, n: int, k: int) -> str:
    """The benchmark group of one GEMM shape, e.g. ``gemm_int8-1024x1024x1024``."""
    return f"{GEMM_OP}-{m}x{n}x{k}"


@dataclass(frozen=True)
class Budget:
    """How many rounds a benchmark gets, from the duration of one call."""

    seconds: float        # target timed time per benchmark
    min_rounds: int       # rounds of a call shorter than ``slow_call``
    max_rounds: int
    slow_call: float      # calls at least this long (portable C, Numba at big shapes): 1 round
    peak_seconds: float   # duration of one peak-loop call
    peak_rounds: int

    def rounds(self, call_seconds: float) -> int:
        if call_seconds >= self.slow_call:
            return 1
        fit = int(self.seconds / max(call_seconds, 1e-9))
        return max(self.min_rounds, min(self.max_rounds, fit))


FULL = Budget(seconds=1.0, min_rounds=3, max_rounds=200, slow_call=1.0,
              peak_seconds=0.3, peak_rounds=5)
QUICK = Budget(seconds=0.25, min_rounds=3, max_rounds=40, slow_call=0.5,
               peak_seconds=0.2, peak_rounds=3)
