"""spmm_csr (CSR sparse int8 or float32 weights 4096 x 4096 x dense activations 4096 x 128)
against scipy's and torch's float32 CSR products and lowbit's dense int8 GEMM on the same
matrix, one group per density of nonzeros (``spmm_csr-50%`` ... ``spmm_csr-1%``).

ops = 2 nnz B in every row (lowbit.bench.impls_csr), so GOP/s are the effective rate of the
sparse product. Interleaved passes as for the GEMMs (lowbit.bench.harness).
"""
from __future__ import annotations

from lowbit.bench.config import SPMM_CSR_DENSITIES, SPMM_CSR_OP, budget_for, spmm_csr_group
from lowbit.bench.harness import run_group_case
from lowbit.bench.impls import pass_order
from lowbit.bench.impls_csr import csr_problem


def case_id(density: float, pass_no: int, impl) -> str:
    """E.g. ``spmm_csr-10%-p2-lowbit[avx512_vnni]``."""
    return f"{spmm_csr_group(density)}-p{pass_no}-{impl.name}"


def pytest_generate_tests(metafunc):
    if "pass_no" in metafunc.fixturenames:
        passes = budget_for(metafunc.config.getoption("--lowbit-quick")).passes
        order = pass_order(SPMM_CSR_OP)
        cases = [(d, p, impl) for d in SPMM_CSR_DENSITIES for p in range(passes)
                 for impl in order]
        metafunc.parametrize(("density", "pass_no", "impl"), cases,
                             ids=[case_id(*case) for case in cases])


def test_spmm_csr(benchmark, budget, density, pass_no, impl):
    run_group_case(benchmark, budget, spmm_csr_group(density), pass_no, impl,
                   lambda: csr_problem(density), impl.problem_info)
