"""gemm_int8 against torch and fp32 BLAS, one group per shape (``gemm_int8-MxNxK``).

Inputs are built and weights packed in ``Impl.prepare``, outside the timed call. Rounds come
from the budget: a call of seconds (portable C, Numba at 512x4096x11008) is timed once.
"""
from __future__ import annotations

import time

import pytest

from lowbit.bench.config import GEMM_SHAPES, gemm_group
from lowbit.bench.impls import all_impls, problem

CASES = [(shape, impl) for shape in GEMM_SHAPES for impl in all_impls()]
IDS = [f"{gemm_group(*shape)}-{impl.name}" for shape, impl in CASES]


def _call_seconds(call, slow: float) -> float:
    """Duration of one call (after ``prepare``'s warm-up); a second sample if it is cheap."""
    t0 = time.perf_counter()
    call()
    dt = time.perf_counter() - t0
    if dt < slow:
        t0 = time.perf_counter()
        call()
        dt = min(dt, time.perf_counter() - t0)
    return dt


@pytest.mark.parametrize(("shape", "impl"), CASES, ids=IDS)
def test_gemm_int8(benchmark, budget, shape, impl):
    m, n, k = shape
    call = impl.prepare(problem(m, n, k))
    rounds = budget.rounds(_call_seconds(call, budget.slow_call))
    benchmark.group = gemm_group(m, n, k)
    info = impl.info(m, n, k)
    benchmark.extra_info.update(info)
    benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=0)
    median = benchmark.stats.stats.median
    benchmark.extra_info["gops"] = info["ops"] / median / 1e9 if median > 0 else None
