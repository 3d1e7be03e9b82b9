"""gemm_binary (XNOR-Net, +-1 bit-packed) against NumPy fp32 and lowbit's int8 GEMM on the
same logical shape, one group per shape (``gemm_binary-MxNxK``, K in +-1 values).

ops = 2 M N K: a binary multiply-accumulate counts as one MAC, so GOP/s are the effective
rate of the +-1 product and the fp32 / int8 rows compute the very same numbers. Interleaved
passes as for gemm_int8 (lowbit.bench.harness).
"""
from __future__ import annotations

from lowbit.bench.config import BINARY_OP, budget_for
from lowbit.bench.harness import parametrize_cases, run_case


def pytest_generate_tests(metafunc):
    if "pass_no" in metafunc.fixturenames:
        parametrize_cases(metafunc, BINARY_OP,
                          budget_for(metafunc.config.getoption("--lowbit-quick")).passes)


def test_gemm_binary(benchmark, budget, shape, pass_no, impl):
    run_case(benchmark, budget, shape, pass_no, impl)
