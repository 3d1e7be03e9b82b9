"""Peak compute this machine reaches in register-resident loops (csrc/peak.c), all threads.

These are the ceilings kernels are reported against ("% of peak") and the CPU roofline's
compute roofs: one loop per instruction idiom a kernel variant uses (``PEAKS``), so each
variant can be judged against the ceiling of the instructions it actually issues (the host
profile's ``isa_peak_tops``, written by ``lowbit roofline calibrate``). ``run_read`` is the
memory ceiling: a STREAM-like read of a buffer by all kernel threads (past the L3: the DRAM
read bandwidth of the weight-streaming int4 GEMV).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from . import native


@dataclass(frozen=True)
class PeakLoop:
    """One register-resident loop: the ceiling of ``precision`` on one instruction idiom.

    variant: its name in a host profile's ``isa_peak_tops.<precision>`` table; None for
    ``fp32_fma``, which runs the widest FMA the CPU has (the benchmarks' fp32 "% of peak").
    """

    kind: str
    precision: str
    variant: str | None
    instructions: str

    @property
    def function(self) -> str:
        return f"lb_peak_{self.kind}"


PEAKS = {loop.kind: loop for loop in (
    PeakLoop("int8_vnni", "int8", "avx512_vnni", "vpdpbusd zmm"),
    PeakLoop("fp32_fma", "fp32", None, "vfmadd231ps zmm (ymm without AVX-512F)"),
    PeakLoop("int8_avx512_maddwd", "int8", "avx512_maddwd", "vpmaddwd + vpaddd zmm"),
    PeakLoop("int8_avx512_maddubs", "int8", "avx512_maddubs", "vpmaddubsw + vpmaddwd + vpaddd zmm"),
    PeakLoop("int8_avx2_maddwd", "int8", "avx2_maddwd", "vpmaddwd + vpaddd ymm"),
    PeakLoop("int8_avx2_maddubs", "int8", "avx2_maddubs", "vpmaddubsw + vpmaddwd + vpaddd ymm"),
    PeakLoop("int8_sse2_maddwd", "int8", "sse2_maddwd", "movdqa + pmaddwd + paddd xmm"),
    PeakLoop("fp32_avx512_fma", "fp32", "avx512_fma", "vfmadd231ps zmm"),
    PeakLoop("fp32_avx2_fma", "fp32", "avx2_fma", "vfmadd231ps ymm"),
    PeakLoop("fp32_sse2_muladd", "fp32", "sse2_muladd", "movaps + mulps + addps xmm"),
    PeakLoop("bf16_avx512_bf16", "bf16", "avx512_bf16", "vdpbf16ps zmm"),
    PeakLoop("binary_avx512_vpopcntdq", "binary", "avx512_vpopcntdq",
             "vpxorq + vpopcntq + vpaddq zmm"),
    PeakLoop("binary_avx2_lut", "binary", "avx2_lut",
             "vpxor, vpsrlw, 2 vpand, 2 vpshufb (nibble lookup), 2 vpaddb ymm"),
    PeakLoop("binary_popcnt", "binary", "popcnt", "mov + xor + popcnt + add r64"),
)}


def ceiling_loops() -> tuple[PeakLoop, ...]:
    """The loops with a profile variant: what ``lowbit roofline calibrate`` measures."""
    return tuple(loop for loop in PEAKS.values() if loop.variant is not None)


def run_peak(kind: str, iters: int) -> float:
    """Run one peak loop of ``iters`` iterations per pool thread (``iters * num_threads()``
    in all, claimed in chunks by the threads, as the kernels claim tiles); returns the ops
    done (0 when this CPU lacks its instructions). The caller times the call."""
    if kind not in PEAKS:
        raise ValueError(f"kind: unknown peak {kind!r}; known: {', '.join(PEAKS)}")
    if native.lib is None:
        raise RuntimeError(f"the native extension is not built: {native.IMPORT_ERROR}")
    if iters < 1:
        raise ValueError(f"iters: must be positive, got {iters}")
    return float(getattr(native.lib, PEAKS[kind].function)(iters))


def best_rate(run, seconds: float, repeats: int, limit: int = 1 << 40) -> float:
    """The best work / second of ``repeats`` timed calls ``run(n)`` (each returns the work it
    did), with ``n`` grown until a call lasts at least ``seconds / 2``.

    Shorter calls are not counted: they may measure waking the pool's threads more than the
    loop. A call stretched by another process taking a core counts, but only the best call
    is kept: interference only ever lowers a rate.
    """
    n, best, counted = 1, 0.0, 0
    while counted < repeats:
        t0 = time.perf_counter()
        work = run(n)
        dt = time.perf_counter() - t0
        if dt < seconds / 2 and n < limit:
            n = min(limit, max(2 * n, int(n * seconds / max(dt, 1e-9))))
            continue
        best = max(best, work / dt)
        counted += 1
    return best


def measure_peak(kind: str, seconds: float = 0.2, repeats: int = 5) -> float:
    """Best-of-``repeats`` ops/s of the peak loop, each run lasting about ``seconds``
    (``best_rate``).

    Returns 0.0 when this CPU lacks the instructions. The best (not the median) run is the
    ceiling: slower runs measure interference, not the core.
    """
    if run_peak(kind, 1) == 0.0:
        return 0.0
    return best_rate(lambda iters: run_peak(kind, iters), seconds, repeats)


# --- read bandwidth ----------------------------------------------------------------------

READ_BUFFER_BYTES = 256 << 20  # well past the 32 MB L3 of the machines we target


def read_bandwidth_buffer(nbytes: int = READ_BUFFER_BYTES) -> "np.ndarray":
    """A 64-byte-aligned uint8 buffer for ``run_read``, written once (pages faulted in)."""
    import numpy as np

    from .formats import aligned_empty

    if nbytes < 256 or nbytes % 256:
        raise ValueError(f"nbytes: must be a positive multiple of 256, got {nbytes}")
    buf = aligned_empty((nbytes,), np.uint8)
    buf[...] = 1
    return buf


def run_read(buf, passes: int = 1) -> float:
    """Read ``buf`` ``passes`` times on all kernel threads (csrc/peak.c lb_read_bandwidth:
    1 MiB chunks claimed dynamically, 64-byte loads); returns the bytes read. The caller
    times the call: bytes / seconds is the STREAM-like read bandwidth of both cores."""
    if native.lib is None:
        raise RuntimeError(f"the native extension is not built: {native.IMPORT_ERROR}")
    if not isinstance(passes, int) or passes < 1:
        raise ValueError(f"passes: must be a positive integer, got {passes!r}")
    if buf.nbytes % 256 or buf.ctypes.data % 64 or not buf.flags.c_contiguous:
        raise ValueError("buf: must be a contiguous, 64-byte-aligned buffer of a multiple of "
                         "256 bytes; use read_bandwidth_buffer")
    return float(native.lib.lb_read_bandwidth(native.ffi.from_buffer(buf), buf.nbytes, passes))


def measure_read_bandwidth(nbytes: int = READ_BUFFER_BYTES, repeats: int = 5) -> float:
    """Best-of-``repeats`` bytes/s of ``run_read`` over a buffer of ``nbytes``."""
    buf = read_bandwidth_buffer(nbytes)
    run_read(buf)
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = run_read(buf)
        best = max(best, done / (time.perf_counter() - t0))
    return best
