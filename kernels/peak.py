"""Peak compute this machine reaches in register-resident loops (csrc/peak.c), all threads.

These are the ceilings kernels are reported against ("% of peak") and, later, the CPU
roofline's compute roofs.
"""
from __future__ import annotations

import time

from . import native

PEAKS = {"int8_vnni": "lb_peak_int8_vnni", "fp32_fma": "lb_peak_fp32_fma"}


def run_peak(kind: str, iters: int) -> float:
    """Run one peak loop of ``iters`` iterations per thread; returns the ops done (0: unsupported)."""
    if kind not in PEAKS:
        raise ValueError(f"kind: unknown peak {kind!r}; known: {', '.join(PEAKS)}")
    if native.lib is None:
        raise RuntimeError(f"the native extension is not built: {native.IMPORT_ERROR}")
    if iters < 1:
        raise ValueError(f"iters: must be positive, got {iters}")
    return float(getattr(native.lib, PEAKS[kind])(iters))


def measure_peak(kind: str, seconds: float = 0.2, repeats: int = 5) -> float:
    """Best-of-``repeats`` ops/s of the peak loop, each run lasting about ``seconds``.

    Returns 0.0 when this CPU lacks the instructions. The best (not the median) run is the
    ceiling: slower runs measure interference, not the core.
    """
    if run_peak(kind, 1) == 0.0:
        return 0.0
    iters = 1 << 10
    while True:  # calibrate the iteration count to the requested duration
        t0 = time.perf_counter()
        run_peak(kind, iters)
        dt = time.perf_counter() - t0
        if dt >= seconds / 4 or iters >= 1 << 40:
            break
        iters *= 4
    iters = max(1, int(iters * seconds / max(dt, 1e-9)))
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        ops = run_peak(kind, iters)
        best = max(best, ops / (time.perf_counter() - t0))
    return best
