"""Peak compute (group ``peak``): the register-resident loops of lowbit.kernels.peak.

The int8 kernels are reported as a fraction of ``int8_vnni``, the fp32 baselines of
``fp32_fma``; the per-ISA loops (vpmaddwd / vpmaddubsw, SSE2, FMA per width, vdpbf16ps,
popcount) are the ceilings of each instruction family, as ``lowbit roofline calibrate``
measures them. One call lasts about ``budget.peak_seconds``. Each loop is measured twice, at
the start of the session (conftest moves those first) and at its end: on a shared machine
interference only lowers a peak, so the report takes the best of both.
"""
from __future__ import annotations

import time

import pytest

from lowbit.bench.config import PEAK_GROUP, PEAK_KINDS, PEAK_WHEN
from lowbit.kernels import num_threads
from lowbit.kernels.peak import PEAKS, run_peak


def _iters_for(kind: str, seconds: float) -> int:
    iters = 1 << 12
    while True:
        t0 = time.perf_counter()
        run_peak(kind, iters)
        dt = time.perf_counter() - t0
        if dt >= seconds / 8 or iters >= 1 << 40:
            return max(1, int(iters * seconds / max(dt, 1e-9)))
        iters *= 4


@pytest.mark.parametrize("when", PEAK_WHEN)
@pytest.mark.parametrize("kind", PEAK_KINDS)
def test_peak(benchmark, budget, kind, when):
    if run_peak(kind, 1) == 0.0:
        pytest.skip(f"this CPU lacks the instructions of the {kind} loop")
    iters = _iters_for(kind, budget.peak_seconds)
    ops = run_peak(kind, iters)  # also the warm-up
    benchmark.group = PEAK_GROUP
    loop = PEAKS[kind]
    benchmark.extra_info.update({"impl": kind, "family": "peak", "isa": kind,
                                 "precision": loop.precision, "variant": loop.variant,
                                 "instructions": loop.instructions, "ops": ops, "iters": iters,
                                 "when": when, "threads": num_threads()})
    benchmark.pedantic(run_peak, args=(kind, iters), rounds=budget.peak_rounds, iterations=1,
                       warmup_rounds=0)
    median = benchmark.stats.stats.median
    benchmark.extra_info["gops"] = ops / median / 1e9 if median > 0 else None
