"""gemm_int8 against torch and fp32 BLAS, one group per shape (``gemm_int8-MxNxK``).

Interleaved: tests run shape -> pass -> implementation, so every pass times every
implementation of the group back to back (``extra_info["pass"]``) and a vCPU lost for a few
seconds slows all of them alike instead of one; the report compares implementations within a
pass. Inputs are built and weights packed once per shape (``Impl.prepare``, in the first pass
that reaches an implementation), outside the timed call. Rounds per pass come from the budget;
a call of at least ``budget.slow_call`` (portable C, Numba at 512x4096x11008) is timed once, in
that first pass only: later passes skip it.
"""
from __future__ import annotations

import time

import pytest

from lowbit.bench.config import GEMM_SHAPES, budget_for, gemm_group
from lowbit.bench.impls import pass_order, problem


def case_id(shape, pass_no: int, impl) -> str:
    """E.g. ``gemm_int8-1024x1024x1024-p2-lowbit[avx512_vnni]``."""
    return f"{gemm_group(*shape)}-p{pass_no}-{impl.name}"


def pytest_generate_tests(metafunc):
    if "pass_no" not in metafunc.fixturenames:
        return
    passes = budget_for(metafunc.config.getoption("--lowbit-quick")).passes
    cases = [(shape, p, impl) for shape in GEMM_SHAPES for p in range(passes)
             for impl in pass_order()]
    metafunc.parametrize(("shape", "pass_no", "impl"), cases,
                         ids=[case_id(*case) for case in cases])


class _Shape:
    """The prepared calls of the shape being timed (all of its passes), then the next shape's."""

    shape: tuple | None = None
    calls: dict = {}    # impl name -> zero-argument timed call
    seconds: dict = {}  # impl name -> duration of one call, measured when prepared

    @classmethod
    def enter(cls, shape) -> None:
        if shape != cls.shape:
            cls.shape, cls.calls, cls.seconds = shape, {}, {}


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


def test_gemm_int8(benchmark, budget, shape, pass_no, impl):
    m, n, k = shape
    _Shape.enter(shape)
    call = _Shape.calls.get(impl.name)
    if call is None:  # first pass of this implementation at this shape
        call = _Shape.calls[impl.name] = impl.prepare(problem(m, n, k))
        seconds = _Shape.seconds[impl.name] = _call_seconds(call, budget.slow_call)
    else:
        seconds = _Shape.seconds[impl.name]
        if budget.first_pass_only(seconds):
            pytest.skip(f"{seconds:.2f} s per call: timed in its first pass only")
        if seconds < budget.pass_seconds / 4:
            call()  # warm-up: the group's other implementations ran since the last pass
    benchmark.group = gemm_group(m, n, k)
    info = impl.info(m, n, k)
    benchmark.extra_info.update(info)
    benchmark.extra_info.update({"pass": pass_no, "passes": budget.passes})
    benchmark.pedantic(call, rounds=budget.rounds(seconds), iterations=1, warmup_rounds=0)
    median = benchmark.stats.stats.median
    benchmark.extra_info["gops"] = info["ops"] / median / 1e9 if median > 0 else None
