"""The competing implementations of one GEMM problem, each prepared outside the timed call.

An ``Impl`` turns a ``Problem`` (seeded int8 activations [M, K] and weights [K, N]) into a
zero-argument callable that does only the timed work: weights are packed, converted or
quantized once in ``prepare``. Every lowbit ISA variant usable here comes from the registry,
so a new kernel is benchmarked without touching this file.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from lowbit.costs import gemm_cost
from lowbit.kernels import REGISTRY, gemm_int8, pack_weights
from lowbit.kernels.registry import ISA_RANK

from .config import GEMM_OP

SEED = 20240601


class Problem:
    """Seeded operands of C[M, N] = A[M, K] @ W[K, N]; derived forms are built on first use."""

    def __init__(self, m: int, n: int, k: int) -> None:
        rng = np.random.default_rng([SEED, m, n, k])
        self.m, self.n, self.k = m, n, k
        self.a = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
        self.w_kn = rng.integers(-127, 128, size=(k, n), dtype=np.int8)  # symmetric int8

    @functools.cached_property
    def packed(self):
        return pack_weights(self.w_kn)

    @functools.cached_property
    def a_f32(self) -> np.ndarray:
        return self.a.astype(np.float32)

    @functools.cached_property
    def w_f32(self) -> np.ndarray:
        return self.w_kn.astype(np.float32)

    @functools.cached_property
    def expected(self) -> np.ndarray:
        """The exact int32 product (torch._int_mm), to check lowbit outside the timing."""
        import torch

        return torch._int_mm(torch.from_numpy(self.a), torch.from_numpy(self.w_kn)).numpy()


@functools.lru_cache(maxsize=1)  # cases run shape by shape; keep one shape's operands alive
def problem(m: int, n: int, k: int) -> Problem:
    return Problem(m, n, k)


@dataclass(frozen=True)
class Impl:
    name: str                      # e.g. "lowbit[avx512_vnni]", "torch_int_mm"
    family: str                    # "lowbit" or "baseline"
    isa: str                       # lowbit ISA variant, or the backend of a baseline
    precision: str                 # "int8" or "fp32": the peak it is compared with
    prepare: Callable[[Problem], Callable[[], object]]
    cost: Callable[[int, int, int], tuple[int, int]]  # (m, n, k) -> (ops, bytes)

    def info(self, m: int, n: int, k: int) -> dict:
        """The ``extra_info`` every benchmark records."""
        ops, nbytes = self.cost(m, n, k)
        return {"impl": self.name, "family": self.family, "isa": self.isa,
                "precision": self.precision, "op": GEMM_OP, "m": m, "n": n, "k": k,
                "ops": ops, "bytes": nbytes, "intensity": ops / nbytes}


# --- lowbit ----------------------------------------------------------------------------

def _lowbit(isa: str, cost) -> Impl:
    def prepare(p: Problem):
        # A tiny first call compiles (Numba) or faults in code before any timing.
        gemm_int8(np.zeros((1, 8), np.int8), pack_weights(np.zeros((8, 8), np.int8)), isa=isa)
        a, wp = p.a, p.packed
        out = gemm_int8(a, wp, isa=isa)
        if not np.array_equal(out, p.expected):
            raise AssertionError(f"lowbit[{isa}] differs from torch._int_mm at "
                                 f"{p.m}x{p.n}x{p.k}; not benchmarking a wrong kernel")
        return lambda: gemm_int8(a, wp, isa=isa)
    return Impl(f"lowbit[{isa}]", "lowbit", isa, "int8", prepare, cost)


def lowbit_impls() -> list[Impl]:
    """Every gemm_int8 (int8 x int8) variant usable on this machine except the NumPy ref."""
    return [_lowbit(k.key.isa, k.cost)
            for k in REGISTRY.kernels(GEMM_OP, "s8", "int8", usable=True) if k.key.isa != "ref"]


# --- baselines -------------------------------------------------------------------------

def _torch_int_mm(p: Problem):
    import torch

    a, b = torch.from_numpy(p.a), torch.from_numpy(p.w_kn)
    return lambda: torch._int_mm(a, b)


def _torch_qlinear_dynamic(p: Problem):
    import torch

    torch.backends.quantized.engine = "x86"
    w_nk = torch.from_numpy(np.ascontiguousarray(p.w_kn.T))
    scales = torch.full((p.n,), 0.01, dtype=torch.double)
    zero_points = torch.zeros(p.n, dtype=torch.long)
    with warnings.catch_warnings():  # torch 2.13 deprecates quantized tensors; still the API
        warnings.simplefilter("ignore", UserWarning)
        qw = torch._make_per_channel_quantized_tensor(w_nk, scales, zero_points, 0)
    lin = torch.ao.nn.quantized.dynamic.Linear(p.k, p.n, dtype=torch.qint8)
    lin.set_weight_bias(qw, None)
    x = torch.from_numpy(p.a_f32 * np.float32(0.05))
    return lambda: lin(x)


def _numpy_fp32(p: Problem):
    a, w = p.a_f32, p.w_f32
    return lambda: a @ w


def _torch_fp32(p: Problem):
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(p.a_f32)
    w_nk = torch.from_numpy(np.ascontiguousarray(p.w_f32.T))  # nn.Linear's [N, K] weight
    return lambda: F.linear(x, w_nk)


def _bits(a: int, w: int, out: int):
    return lambda m, n, k: gemm_cost(m, n, k, a_bits=a, w_bits=w, out_bits=out)


BASELINES = (
    Impl("torch_int_mm", "baseline", "torch", "int8", _torch_int_mm, _bits(8, 8, 32)),
    Impl("torch_qlinear_dynamic", "baseline", "torch_x86", "int8", _torch_qlinear_dynamic,
         _bits(32, 8, 32)),
    Impl("numpy_fp32", "baseline", "numpy_blas", "fp32", _numpy_fp32, _bits(32, 32, 32)),
    Impl("torch_fp32", "baseline", "torch", "fp32", _torch_fp32, _bits(32, 32, 32)),
)


def all_impls() -> list[Impl]:
    return lowbit_impls() + list(BASELINES)


def _scalar(impl: Impl) -> bool:
    """A lowbit fallback without SIMD (portable C, Numba): never the fastest, often the slowest."""
    return impl.family == "lowbit" and ISA_RANK.index(impl.isa) >= ISA_RANK.index("portable")


def pass_order() -> list[Impl]:
    """``all_impls`` in the order one interleaved pass times them.

    The SIMD lowbit variants, then the int8 baselines, then fp32 BLAS, the scalar lowbit
    fallbacks last: what the speed targets compare runs within about a second in every pass.
    """
    impls = all_impls()
    rank = {"lowbit": 0, "int8": 1, "fp32": 2, "scalar": 3}

    def key(item):
        i, impl = item
        kind = "scalar" if _scalar(impl) else impl.family if impl.family == "lowbit" \
            else impl.precision
        return rank.get(kind, len(rank)), i
    return [impl for _, impl in sorted(enumerate(impls), key=key)]
