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

# Binary (XNOR-Net) GEMM: +-1 values, K in bits; the same logical shapes for its baselines.
BINARY_SHAPES = (
    (1024, 1024, 4096),   # square-ish batch, XNOR-Net's target regime
    (128, 4096, 4096),    # prefill chunk
    (1, 4096, 4096),      # one token
)

# int4 weights (grouped, symmetric, group size 32, float16 scales): LLM decode and prefill.
W4_SHAPES = (
    (1, 4096, 4096),      # one token, 7B-class projection
    (8, 4096, 4096),      # a few tokens (the GEMV path's largest M)
    (128, 4096, 4096),    # prefill chunk
    (1, 8192, 8192),      # one token, 70B-class projection (32 MiB of int4 weights)
    (1, 16384, 8192),     # 64 MiB of int4 weights: larger than the 32 MB L3, DRAM-bound
)
W4_GROUP_SIZE = 32

# CSR sparse weights [N_out, K] x dense activations [K, B] (spmm_csr): one group per density
# of nonzeros, ``spmm_csr-<density>`` (e.g. ``spmm_csr-10%``). As a GEMM out^T = x^T W^T it is
# M = B, N = N_out, K: the shape its dense int8 baseline runs.
SPMM_CSR_SHAPE = (4096, 4096, 128)                 # N_out, K, B
SPMM_CSR_DENSITIES = (0.5, 0.2, 0.1, 0.05, 0.01)

# 2:4 sparse weights (gemm_sparse24): int8 weights magnitude-pruned to 2:4, against lowbit's
# dense int8 GEMM on the same (dense-stored) 2:4 matrix and NumPy fp32.
SPARSE24_SHAPES = (
    (1, 4096, 4096),      # one token: the weight stream (8 MiB kept values + 2 MiB indices)
    (128, 4096, 4096),    # prefill chunk: compute-bound
    (1024, 1024, 1024),   # square
)

GEMM_OP = "gemm_int8"
BINARY_OP = "gemm_binary"
W4A16_OP = "gemm_w4a16"
W4A8_OP = "gemm_w4a8"
SPMM_CSR_OP = "spmm_csr"
SHAPES = {GEMM_OP: GEMM_SHAPES, BINARY_OP: BINARY_SHAPES, W4A16_OP: W4_SHAPES,
          W4A8_OP: W4_SHAPES}  # op -> its GEMM groups, in order
SPARSE24_OP = "gemm_sparse24"
SHAPES[SPARSE24_OP] = SPARSE24_SHAPES
PEAK_GROUP = "peak"
# int8_vnni and fp32_fma: the "% of peak" of the int8 kernels and the fp32 baselines; then the
# per-ISA ceilings (lowbit.kernels.peak.PEAKS) the roofline judges each kernel variant against
PEAK_KINDS = ("int8_vnni", "fp32_fma", "int8_avx512_maddwd", "int8_avx512_maddubs",
              "int8_avx2_maddwd", "int8_avx2_maddubs", "int8_sse2_maddwd", "fp32_avx512_fma",
              "fp32_avx2_fma", "fp32_sse2_muladd", "bf16_avx512_bf16", "binary_avx512_vpopcntdq",
              "binary_avx2_lut", "binary_popcnt")
PEAK_WHEN = ("first", "last")  # peak loops run at both ends of the session
# STREAM-like read of a buffer past the L3 by both cores (lowbit.kernels.peak.run_read), at
# both ends of the session: the machine's read bandwidth, reported with the peaks. On this VM
# it is not steady (a 1 GiB read gave 35 GB/s at the start of one session and 70 GB/s at its
# end), so the DRAM targets compare with STREAM_READ, a read of the kernel's own byte count
# timed in the same pass as the kernel (bench/impls.py, the int4 groups).
BANDWIDTH_GROUP = "bandwidth"
BANDWIDTH_KIND = "dram_read"
STREAM_READ = "stream_read"
BANDWIDTH_BYTES = 1 << 30


def gemm_group(m: int, n: int, k: int, op: str = GEMM_OP) -> str:
    """The benchmark group of one GEMM shape of ``op``, e.g. ``gemm_int8-1024x1024x1024``."""
    return f"{op}-{m}x{n}x{k}"


def spmm_csr_group(density: float) -> str:
    """The benchmark group of one spmm_csr density, e.g. ``spmm_csr-10%``."""
    return f"{SPMM_CSR_OP}-{100 * density:g}%"


@dataclass(frozen=True)
class Budget:
    """How a GEMM group is timed: interleaved passes, and rounds from the duration of one call.

    The machine may lose a vCPU for seconds at a time, so the implementations of a group are
    not timed one after the other: the group is split into ``passes`` passes and every pass
    times every implementation back to back, each getting ``seconds / passes`` of rounds.
    """

    seconds: float        # target timed time of one implementation at one shape, all passes
    passes: int           # interleaved passes per GEMM group
    min_rounds: int       # rounds per pass of a call shorter than ``slow_call``
    max_rounds: int       # rounds per pass at most
    slow_call: float      # calls at least this long (portable C, Numba at big shapes): 1 round,
    #                       in the first pass only
    peak_seconds: float   # duration of one peak-loop call
    peak_rounds: int

    @property
    def pass_seconds(self) -> float:
        """Target timed time of one implementation in one pass."""
        return self.seconds / self.passes

    def rounds(self, call_seconds: float) -> int:
        """Rounds of one pass."""
        if call_seconds >= self.slow_call:
            return 1
        fit = int(self.pass_seconds / max(call_seconds, 1e-9))
        return max(self.min_rounds, min(self.max_rounds, fit))

    def first_pass_only(self, call_seconds: float) -> bool:
        """A call this slow is timed once, in the first pass that reaches it."""
        return call_seconds >= self.slow_call


FULL = Budget(seconds=1.0, passes=5, min_rounds=1, max_rounds=100, slow_call=0.5,
              peak_seconds=0.3, peak_rounds=5)
QUICK = Budget(seconds=0.3, passes=3, min_rounds=1, max_rounds=30, slow_call=0.25,
               peak_seconds=0.2, peak_rounds=3)


def budget_for(quick: bool) -> Budget:
    return QUICK if quick else FULL
