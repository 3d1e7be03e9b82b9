"""gemm_int8's fused epilogues on one exported conv layer's shape (group
``epilogue-4096x32x288``: im2col of a 3x3 conv, 32 -> 32 channels, 64x64 pixels).

Each lowbit variant runs three ways: int32 out, ``Requantize`` to int8 (per-channel
multipliers, bias, zero point) and ``Dequantize`` to float32 (per-row and per-column scales,
bias). The difference from the int32 row of the same variant is the epilogue's cost; the
portable C variant keeps the scalar epilogue (the C reference tier), so its rows show the
scalar epilogue's cost, the SIMD variants' rows the vectorized one's. Outputs are checked
against ``ref.apply_epilogue`` before timing. Interleaved passes (lowbit.bench.harness).
"""
from __future__ import annotations

import functools

import numpy as np

from lowbit.bench.config import budget_for
from lowbit.bench.harness import run_group_case
from lowbit.bench.impls import SEED, Impl
from lowbit.costs import gemm_cost
from lowbit.kernels import REGISTRY, Dequantize, Requantize, gemm_int8, pack_weights, ref
from lowbit.kernels.epilogue import prepare

OP = "gemm_int8"
SHAPE = (4096, 32, 288)   # M, N, K
GROUP = "epilogue-{}x{}x{}".format(*SHAPE)
KINDS = ("int32", "requantize", "dequantize")
_OUT_BITS = {"int32": 32, "requantize": 8, "dequantize": 32}


class EpilogueProblem:
    """Seeded int8 operands and one epilogue of each kind for C[M, N] = A[M, K] @ W[K, N]."""

    def __init__(self, m: int, n: int, k: int) -> None:
        rng = np.random.default_rng([SEED, 7, m, n, k])
        self.m, self.n, self.k = m, n, k
        self.a = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
        self.w = pack_weights(rng.integers(-127, 128, size=(k, n), dtype=np.int8))
        self.epilogues = {
            "int32": None,
            "requantize": Requantize.from_scale(rng.uniform(1e-4, 1e-3, n), zero_point=-3,
                                                bias=rng.integers(-5000, 5000, n)),
            "dequantize": Dequantize(w_scale=rng.uniform(1e-3, 1e-2, n),
                                     a_scale=rng.uniform(0.01, 0.1, m),
                                     bias=rng.normal(0, 1, n).astype(np.float32)),
        }

    @functools.cached_property
    def acc(self) -> np.ndarray:
        return gemm_int8(self.a, self.w, isa="ref")

    def check(self, got: np.ndarray, kind: str, name: str) -> None:
        want = ref.apply_epilogue(self.acc, prepare(self.epilogues[kind], self.m, self.n))
        same = (np.array_equal(got, want) if kind != "dequantize" else
                np.allclose(got, want, rtol=ref.FLOAT_RTOL, atol=ref.FLOAT_ATOL))
        if not same or got.dtype != want.dtype:
            raise AssertionError(f"{name} differs from ref.apply_epilogue at {GROUP}; "
                                 f"not benchmarking a wrong kernel")


@functools.lru_cache(maxsize=1)
def problem() -> EpilogueProblem:
    return EpilogueProblem(*SHAPE)


def _impl(isa: str, kind: str) -> Impl:
    name = f"lowbit[{isa}]-{kind}"

    def prepare_call(p: EpilogueProblem):
        a, w, ep = p.a, p.w, p.epilogues[kind]
        out = gemm_int8(a, w, epilogue=ep, isa=isa)
        p.check(out, kind, name)
        return lambda: gemm_int8(a, w, epilogue=ep, out=out, isa=isa)

    def cost(m: int, n: int, k: int) -> tuple[int, int]:
        return gemm_cost(m, n, k, a_bits=8, w_bits=8, out_bits=_OUT_BITS[kind])
    return Impl(name, "lowbit", isa, "int8", prepare_call, cost, OP)


def epilogue_impls() -> list[Impl]:
    """Every usable C variant of gemm_int8 (not Numba or the NumPy ref: they apply the
    epilogue in NumPy after the GEMM) with each epilogue kind, the portable one last."""
    isas = [k.key.isa for k in REGISTRY.kernels(OP, "s8", "int8", usable=True)
            if k.key.isa not in ("ref", "numba")]
    impls = [_impl(isa, kind) for isa in isas for kind in KINDS]
    return sorted(impls, key=lambda impl: impl.isa == "portable")  # stable: scalar last


def case_id(pass_no: int, impl: Impl) -> str:
    """E.g. ``epilogue-4096x32x288-p2-lowbit[avx512_vnni]-requantize``."""
    return f"{GROUP}-p{pass_no}-{impl.name}"


def pytest_generate_tests(metafunc):
    if "pass_no" in metafunc.fixturenames:
        passes = budget_for(metafunc.config.getoption("--lowbit-quick")).passes
        cases = [(p, impl) for p in range(passes) for impl in epilogue_impls()]
        metafunc.parametrize(("pass_no", "impl"), cases, ids=[case_id(*c) for c in cases])


def test_epilogue(benchmark, budget, pass_no, impl):
    run_group_case(benchmark, budget, GROUP, pass_no, impl, problem,
                   lambda p: impl.info(p.m, p.n, p.k))
