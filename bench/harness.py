"""The interleaved timing shared by the GEMM benchmark modules (bench_gemm_<op>.py).

Tests run op -> shape -> pass -> implementation, so every pass times every implementation
of a group back to back (``extra_info["pass"]``) and a vCPU lost for a few seconds slows all
of them alike instead of one; the report compares implementations within a pass. Inputs are
built and weights packed once per shape (``Impl.prepare``, in the first pass that reaches an
implementation), outside the timed call. Rounds per pass come from the budget; a call of at
least ``budget.slow_call`` (portable C, Numba at the largest shapes) is timed once, in that
first pass only: later passes skip it. ``run_group_case`` does the same for groups that are
not one GEMM shape (spmm_csr: one group per density).
"""
from __future__ import annotations

import time

import pytest

from .config import SHAPES, gemm_group
from .impls import PROBLEMS, pass_order


def case_id(op: str, shape, pass_no: int, impl) -> str:
    """E.g. ``gemm_int8-1024x1024x1024-p2-lowbit[avx512_vnni]``."""
    return f"{gemm_group(*shape, op=op)}-p{pass_no}-{impl.name}"


def parametrize_cases(metafunc, op: str, passes: int) -> None:
    """Parametrize (shape, pass_no, impl) over the groups of ``op``, interleaved."""
    order = pass_order(op)
    cases = [(shape, p, impl) for shape in SHAPES[op] for p in range(passes) for impl in order]
    metafunc.parametrize(("shape", "pass_no", "impl"), cases,
                         ids=[case_id(op, *case) for case in cases])


class _Group:
    """The prepared calls of the group being timed (all of its passes), then the next one's."""

    key: tuple | None = None
    calls: dict = {}    # impl name -> zero-argument timed call
    seconds: dict = {}  # impl name -> duration of one call, measured when prepared

    @classmethod
    def enter(cls, key) -> None:
        if key != cls.key:
            cls.key, cls.calls, cls.seconds = key, {}, {}


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


def run_case(benchmark, budget, shape, pass_no: int, impl) -> None:
    """Time one implementation in one pass of its group (``impl.op`` at ``shape``)."""
    m, n, k = shape
    run_group_case(benchmark, budget, gemm_group(m, n, k, op=impl.op), pass_no, impl,
                   lambda: PROBLEMS[impl.op](m, n, k), lambda problem: impl.info(m, n, k))


def run_group_case(benchmark, budget, group: str, pass_no: int, impl, make_problem,
                   info) -> None:
    """Time ``impl`` in one pass of ``group``. ``make_problem()`` gives the group's operands
    (asked on the implementation's first pass), ``info(problem)`` its extra_info."""
    _Group.enter((impl.op, group))
    call = _Group.calls.get(impl.name)
    if call is None:  # first pass of this implementation in this group
        call = _Group.calls[impl.name] = impl.prepare(make_problem())
        seconds = _Group.seconds[impl.name] = _call_seconds(call, budget.slow_call)
    else:
        seconds = _Group.seconds[impl.name]
        if budget.first_pass_only(seconds):
            pytest.skip(f"{seconds:.2f} s per call: timed in its first pass only")
        if seconds < budget.pass_seconds / 4:
            call()  # warm-up: the group's other implementations ran since the last pass
    benchmark.group = group
    extra = info(make_problem())
    benchmark.extra_info.update(extra)
    benchmark.extra_info.update({"pass": pass_no, "passes": budget.passes})
    benchmark.pedantic(call, rounds=budget.rounds(seconds), iterations=1, warmup_rounds=0)
    median = benchmark.stats.stats.median
    benchmark.extra_info["gops"] = extra["ops"] / median / 1e9 if median > 0 else None
