"""gemm_w4a16 (float32 activations x grouped int4 weights, dequantized on the fly) against
torch's weight-only int4 kernel, lowbit's int8 GEMM and NumPy fp32 on the same weights, one
group per shape (``gemm_w4a16-MxNxK``).

The int4 weights are symmetric, group size 32, float16 scales; bytes count the 4-bit
weights and the scales (lowbit.kernels.gemm_int4.w4_cost). Interleaved passes as for
gemm_int8 (lowbit.bench.harness).
"""
from __future__ import annotations

from lowbit.bench.config import W4A16_OP, budget_for
from lowbit.bench.harness import parametrize_cases, run_case


def pytest_generate_tests(metafunc):
    if "pass_no" in metafunc.fixturenames:
        parametrize_cases(metafunc, W4A16_OP,
                          budget_for(metafunc.config.getoption("--lowbit-quick")).passes)


def test_gemm_w4a16(benchmark, budget, shape, pass_no, impl):
    run_case(benchmark, budget, shape, pass_no, impl)
