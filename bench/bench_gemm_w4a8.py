"""gemm_w4a8 (int8 activations x grouped int4 weights: exact int32 group sums, float32 scales)
against torch's weight-only int4 kernel, lowbit's int8 GEMM and NumPy fp32 on the same
weights, one group per shape (``gemm_w4a8-MxNxK``). Interleaved passes (lowbit.bench.harness).
"""
from __future__ import annotations

from lowbit.bench.config import W4A8_OP, budget_for
from lowbit.bench.harness import parametrize_cases, run_case


def pytest_generate_tests(metafunc):
    if "pass_no" in metafunc.fixturenames:
        parametrize_cases(metafunc, W4A8_OP,
                          budget_for(metafunc.config.getoption("--lowbit-quick")).passes)


def test_gemm_w4a8(benchmark, budget, shape, pass_no, impl):
    run_case(benchmark, budget, shape, pass_no, impl)
