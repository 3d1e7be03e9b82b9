"""gemm_int8 against torch and fp32 BLAS, one group per shape (``gemm_int8-MxNxK``).

Interleaved passes (lowbit.bench.harness): each pass times every implementation of the group
back to back; inputs are built and weights packed outside the timed call.
"""
from __future__ import annotations

from lowbit.bench.config import GEMM_OP, budget_for
from lowbit.bench.harness import parametrize_cases, run_case


def pytest_generate_tests(metafunc):
    if "pass_no" in metafunc.fixturenames:
        parametrize_cases(metafunc, GEMM_OP,
                          budget_for(metafunc.config.getoption("--lowbit-quick")).passes)


def test_gemm_int8(benchmark, budget, shape, pass_no, impl):
    run_case(benchmark, budget, shape, pass_no, impl)
