"""The competing implementations of spmm_csr and their problems, one per density.

A ``CsrProblem`` holds seeded int8 CSR weights W [N_out, K] (each entry kept with
probability ``density``, values in +-[1, 127]) and int8 activations x [K, B]
(config.SPMM_CSR_SHAPE), and builds every other form on first use, outside the timed call:
lowbit's packed CSR (int8 and float32), scipy's and torch's float32 CSR, and the dense int8
weights lowbit's GEMM runs. Every implementation computes the same numbers: the int8 rows
exactly, the float32 rows within ``ref.spmm_csr_tolerance`` (checked before timing).

Every row of a group records ops = 2 nnz B, the useful multiply-adds of the sparse product,
so GOP/s compare times; the dense int8 baseline does N_out / nnz * K times more, and its
"% of peak" is not given (precision "dense_int8"). lowbit's rows write into a preallocated
output, as gemm_int8's dense baseline does; scipy and torch allocate theirs (their APIs have
no output argument for this product).
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np

from lowbit.costs import gemm_cost
from lowbit.kernels import REGISTRY, dispatch_info, gemm_int8, pack_csr, pack_weights, ref
from lowbit.kernels import spmm_csr as run_spmm_csr

from .config import GEMM_OP, SPMM_CSR_OP, SPMM_CSR_SHAPE
from .impls import SEED, Impl


class CsrProblem:
    """Seeded operands of out = W @ x for one density; derived forms built on first use."""

    CHECK_ROWS = 64  # float32 rows checked against the reference before timing

    def __init__(self, density: float) -> None:
        n_out, k, b = SPMM_CSR_SHAPE
        rng = np.random.default_rng([SEED, 5, round(density * 1e6)])
        self.density, self.n_out, self.k, self.b = density, n_out, k, b
        keep = rng.random((n_out, k), dtype=np.float32) < density
        vals = rng.integers(1, 128, (n_out, k), dtype=np.int8)
        vals[rng.integers(0, 2, (n_out, k), dtype=np.int8) == 1] *= -1
        self.w = np.where(keep, vals, np.int8(0))
        self.x = rng.integers(-128, 128, (k, b), dtype=np.int8)

    @functools.cached_property
    def csr(self):
        return pack_csr(self.w)

    @property
    def nnz(self) -> int:
        return self.csr.nnz

    @functools.cached_property
    def csr_f32(self):
        return pack_csr(self.w.astype(np.float32))

    @functools.cached_property
    def x_f32(self) -> np.ndarray:
        return self.x.astype(np.float32)

    @functools.cached_property
    def scipy_f32(self):
        return self.csr_f32.to_scipy()

    @functools.cached_property
    def expected(self) -> np.ndarray:
        """The exact int32 product: float64 sums of integers below 2^53 are exact."""
        exact = self.scipy_f32.astype(np.float64) @ self.x.astype(np.float64)
        return exact.astype(np.int32)

    def check_exact(self, got: np.ndarray, name: str) -> None:
        if not np.array_equal(got, self.expected):
            raise AssertionError(f"{name} differs from the exact product at density "
                                 f"{self.density}; not benchmarking a wrong kernel")

    def check_f32(self, got: np.ndarray, name: str) -> None:
        """The first CHECK_ROWS rows within ref.spmm_csr_tolerance of the exact product."""
        r = self.CHECK_ROWS
        w = self.csr_f32
        end = int(w.row_ptr[r])
        tol = ref.spmm_csr_tolerance(w.row_ptr[:r + 1], w.col_idx[:end], w.values[:end],
                                     self.k, self.x_f32)
        err = np.abs(np.asarray(got, np.float64)[:r] - self.expected[:r])
        if not np.all(err <= tol):
            raise AssertionError(f"{name} differs from the reference at density "
                                 f"{self.density}; not benchmarking a wrong kernel")


@functools.lru_cache(maxsize=1)  # densities run one after the other; keep one alive
def csr_problem(density: float) -> CsrProblem:
    return CsrProblem(density)


@dataclass(frozen=True)
class CsrImpl(Impl):
    """An implementation in the spmm_csr groups: ``cost(n_out, k, b, nnz)`` depends on the
    problem's nonzeros, so ``problem_info`` replaces ``Impl.info``."""

    op: str = SPMM_CSR_OP

    def problem_info(self, p: CsrProblem) -> dict:
        ops, nbytes = self.cost(p.n_out, p.k, p.b, p.nnz)
        return {"impl": self.name, "family": self.family, "isa": self.isa,
                "precision": self.precision, "op": self.op, "m": p.b, "n": p.n_out,
                "k": p.k, "ops": ops, "bytes": nbytes, "intensity": ops / nbytes,
                "density": p.density, "nnz": p.nnz}


def _lowbit(isa: str, act: str, cost) -> CsrImpl:
    def prepare(p: CsrProblem):
        # A tiny first call compiles (Numba) or faults in code before any timing.
        dtype = np.int8 if act == "s8" else np.float32
        run_spmm_csr(pack_csr(np.eye(4, dtype=dtype)), np.ones((4, 2), dtype), isa=isa)
        w, x = (p.csr, p.x) if act == "s8" else (p.csr_f32, p.x_f32)
        out = run_spmm_csr(w, x, isa=isa)
        (p.check_exact if act == "s8" else p.check_f32)(out, f"lowbit[{isa}]")
        return lambda: run_spmm_csr(w, x, out=out, isa=isa)
    if act == "s8":
        return CsrImpl(f"lowbit[{isa}]", "lowbit", isa, "int8", prepare, cost)
    return CsrImpl(f"lowbit_f32[{isa}]", "lowbit", isa, "fp32", prepare, cost)


def _scipy_csr(p: CsrProblem):
    s, x = p.scipy_f32, p.x_f32
    p.check_f32(s @ x, "scipy_csr")
    return lambda: s @ x


def _torch_sparse_csr(p: CsrProblem):
    import torch

    with warnings.catch_warnings():  # torch 2.13: "Sparse CSR tensor support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        w = torch.from_numpy(p.w.astype(np.float32)).to_sparse_csr()  # int64 indices
    x = torch.from_numpy(p.x_f32)
    p.check_f32((w @ x).numpy(), "torch_sparse_csr")
    return lambda: w @ x


def _dense_int8(p: CsrProblem):
    """gemm_int8 computes A [M, K] @ W [K, N]: here out^T = x^T [B, K] @ W^T [K, N_out]."""
    wp = pack_weights(p.w, layout="nk")
    xt = np.ascontiguousarray(p.x.T)
    out_t = gemm_int8(xt, wp)
    p.check_exact(np.ascontiguousarray(out_t.T), "lowbit_int8")
    return lambda: gemm_int8(xt, wp, out=out_t)


def _dense_cost(n_out: int, k: int, b: int, nnz: int) -> tuple[int, int]:
    """Useful ops 2 nnz B (as every row of the group); bytes of the dense int8 GEMM."""
    return 2 * nnz * b, gemm_cost(b, n_out, k, a_bits=8, w_bits=8, out_bits=32)[1]


def csr_impls() -> list[CsrImpl]:
    """Every spmm_csr variant usable here except the NumPy ref, int8 (``lowbit[isa]``) then
    float32 (``lowbit_f32[isa]``), then the baselines: scipy's and torch's float32 CSR
    products and lowbit's dense int8 GEMM (its best variant) on the equivalent dense
    weights."""
    lowbit = [_lowbit(k.key.isa, act, k.cost) for act in ("s8", "f32")
              for k in REGISTRY.kernels(SPMM_CSR_OP, act, "csr", usable=True)
              if k.key.isa != "ref"]
    f32_cost = REGISTRY.lookup(SPMM_CSR_OP, "f32", "csr", "ref").cost
    return lowbit + [
        CsrImpl("scipy_csr", "baseline", "scipy", "fp32", _scipy_csr, f32_cost),
        CsrImpl("torch_sparse_csr", "baseline", "torch", "fp32", _torch_sparse_csr, f32_cost),
        CsrImpl("lowbit_int8", "baseline", dispatch_info()[GEMM_OP]["selected"], "dense_int8",
                _dense_int8, _dense_cost),
    ]
