"""gemm_sparse24 (activations x 2:4 sparse weights) against lowbit's dense int8 GEMM on the
same 2:4 matrix stored dense (``lowbit_int8_dense``) and NumPy fp32, one group per shape
(``gemm_sparse24-MxNxK``). Every usable lowbit variant runs: int8 (``lowbit[isa]``) and
float32 (``lowbit_f32[isa]``).

ops: each row counts the multiply-adds it executes, so the 2:4 kernels' GOP/s count half the
dense-equivalent 2 M N K; the speedups and targets are ratios of times of the same product.
Interleaved passes (lowbit.bench.harness).
"""
from __future__ import annotations

from lowbit.bench.config import SPARSE24_OP, budget_for
from lowbit.bench.harness import parametrize_cases, run_case


def pytest_generate_tests(metafunc):
    if "pass_no" in metafunc.fixturenames:
        parametrize_cases(metafunc, SPARSE24_OP,
                          budget_for(metafunc.config.getoption("--lowbit-quick")).passes)


def test_gemm_sparse24(benchmark, budget, shape, pass_no, impl):
    run_case(benchmark, budget, shape, pass_no, impl)
