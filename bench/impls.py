"""The competing implementations of one GEMM problem, each prepared outside the timed call.

An ``Impl`` turns a problem of its op into a zero-argument callable that does only the timed
work: weights are packed, converted or quantized once in ``prepare``. ``gemm_int8`` problems
(``Problem``) are seeded int8 activations [M, K] and weights [K, N]; ``gemm_binary`` problems
(``BinaryProblem``) seeded +-1 matrices of the same logical shape, which its baselines run in
fp32 and int8. Every lowbit ISA variant usable here comes from the registry, so a new kernel
is benchmarked without touching this file.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from lowbit.costs import gemm_cost
from lowbit.kernels import (REGISTRY, dispatch_info, gemm_binary, gemm_int8, gemm_sparse24,
                            gemm_w4a8, gemm_w4a16, pack_binary_activations, pack_weights,
                            prune_24, ref)
from lowbit.kernels.gemm_int4 import bf16_to_f32
from lowbit.kernels.peak import read_bandwidth_buffer, run_read
from lowbit.kernels.registry import ISA_RANK

from .config import (BINARY_OP, GEMM_OP, SPARSE24_OP, SPMM_CSR_OP, STREAM_READ, W4_GROUP_SIZE,
                     W4A8_OP, W4A16_OP)

SEED = 20240601


class _Operands:
    """Float32 views of an integer problem's A [M, K] and W [K, N], for the fp32 baselines."""

    a: np.ndarray
    w_kn: np.ndarray

    @functools.cached_property
    def a_f32(self) -> np.ndarray:
        return self.a.astype(np.float32)

    @functools.cached_property
    def w_f32(self) -> np.ndarray:
        return self.w_kn.astype(np.float32)


class Problem(_Operands):
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
    def expected(self) -> np.ndarray:
        """The exact int32 product (torch._int_mm), to check lowbit outside the timing."""
        import torch

        return torch._int_mm(torch.from_numpy(self.a), torch.from_numpy(self.w_kn)).numpy()


@functools.lru_cache(maxsize=1)  # cases run shape by shape; keep one shape's operands alive
def problem(m: int, n: int, k: int) -> Problem:
    return Problem(m, n, k)


class BinaryProblem(_Operands):
    """Seeded +-1 operands of C[M, N] = A[M, K] @ W[K, N]: bit-packed for lowbit's binary
    GEMM, float32 and int8 for the baselines; derived forms are built on first use."""

    def __init__(self, m: int, n: int, k: int) -> None:
        rng = np.random.default_rng([SEED, 1, m, n, k])
        self.m, self.n, self.k = m, n, k
        self.a = (rng.integers(0, 2, size=(m, k), dtype=np.int8) * 2 - 1).astype(np.int8)
        self.w_kn = (rng.integers(0, 2, size=(k, n), dtype=np.int8) * 2 - 1).astype(np.int8)

    @functools.cached_property
    def a_bits(self) -> np.ndarray:
        return pack_binary_activations(self.a)

    @functools.cached_property
    def w_bits(self):
        return pack_weights(self.w_kn, "binary")

    @functools.cached_property
    def w_int8(self):
        return pack_weights(self.w_kn)

    @functools.cached_property
    def expected(self) -> np.ndarray:
        """The exact int32 product: fp32 BLAS sums +-1 exactly while K <= 2^24."""
        assert self.k <= 2 ** 24
        return (self.a_f32 @ self.w_f32).astype(np.int32)


@functools.lru_cache(maxsize=1)
def binary_problem(m: int, n: int, k: int) -> BinaryProblem:
    return BinaryProblem(m, n, k)


class W4Problem:
    """Seeded operands of the int4-weight GEMMs: symmetric int4 values v [K, N] with float16
    scales per group of 32 K, float32 activations x and int8 activations a [M, K] with
    per-row scales. Baselines get the same numbers in their own formats (torch's int4 pack
    with bfloat16 activations, int8 weights v for lowbit's int8 GEMM, float32 dequantized
    weights for NumPy); derived forms are built on first use."""

    CHECK_COLS = 256  # columns checked against the reference before timing (cheap at any N)

    def __init__(self, m: int, n: int, k: int) -> None:
        rng = np.random.default_rng([SEED, 4, m, n, k])
        self.m, self.n, self.k, self.g = m, n, k, W4_GROUP_SIZE
        self.v = rng.integers(-8, 8, size=(k, n), dtype=np.int8)
        self.scales = (rng.uniform(0.5, 1.5, (k // self.g, n)) / 64).astype(np.float16)
        self.x = rng.standard_normal((m, k)).astype(np.float32)
        self.a = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
        self.a_scale = rng.uniform(0.01, 0.02, m).astype(np.float32)

    @functools.cached_property
    def w4(self):
        return pack_weights(self.v, "int4", group_size=self.g, scales=self.scales)

    @functools.cached_property
    def x_bf16(self) -> np.ndarray:
        """x rounded to bfloat16 (to nearest even, as torch's .to(torch.bfloat16)), as the
        uint16 bit patterns gemm_w4a16 takes."""
        u = self.x.view(np.uint32).astype(np.uint64)
        return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)

    @functools.cached_property
    def w_int8(self):
        return pack_weights(self.v)

    def dequantized(self, cols=slice(None)) -> np.ndarray:
        s = np.repeat(self.scales[:, cols].astype(np.float32), self.g, axis=0)
        return self.v[:, cols].astype(np.float32) * s

    @functools.cached_property
    def w_f32(self) -> np.ndarray:
        return self.dequantized()

    def check_w4a16(self, got: np.ndarray, name: str, rtol: float = 0.0,
                    x: np.ndarray | None = None) -> None:
        """got's first CHECK_COLS columns against ref.gemm_w4a16 of x (default: self.x)
        within ref.w4a16_tolerance (plus ``rtol`` of the absolute sums, for baselines that
        round to bfloat16)."""
        x = self.x if x is None else x
        c = slice(0, self.CHECK_COLS)
        w = self.dequantized(c).astype(np.float64)
        want = ref.gemm_w4a16(x, w)
        nib = (self.v[:, c].astype(np.int16) + 8).astype(np.uint8)
        tol = ref.w4a16_tolerance(x, nib, np.full((self.k // self.g, nib.shape[1]), 8),
                                  self.scales[:, c], self.g)
        tol = tol + rtol * (np.abs(x.astype(np.float64)) @ np.abs(w))
        bad = np.abs(np.asarray(got, np.float64)[:, c] - want) > tol
        if bad.any():
            raise AssertionError(f"{name} differs from ref.gemm_w4a16 at {self.m}x{self.n}x"
                                 f"{self.k}; not benchmarking a wrong kernel")

    def check_w4a8(self, got: np.ndarray, name: str) -> None:
        c = slice(0, self.CHECK_COLS)
        acc = ref.w4a8_group_acc(self.a, self.v[:, c], self.g)
        want = ref.w4a8_from_acc(acc, self.scales[:, c], self.a_scale)
        tol = ref.w4a8_tolerance(acc, self.scales[:, c], self.a_scale)
        if (np.abs(got[:, c].astype(np.float64) - want) > tol).any():
            raise AssertionError(f"{name} differs from ref.gemm_w4a8 at {self.m}x{self.n}x"
                                 f"{self.k}; not benchmarking a wrong kernel")


@functools.lru_cache(maxsize=1)
def w4_problem(m: int, n: int, k: int) -> W4Problem:
    return W4Problem(m, n, k)


PROBLEMS = {GEMM_OP: problem, BINARY_OP: binary_problem, W4A16_OP: w4_problem,
            W4A8_OP: w4_problem}  # op -> (m, n, k) -> its problem


@dataclass(frozen=True)
class Impl:
    name: str                      # e.g. "lowbit[avx512_vnni]", "torch_int_mm"
    family: str                    # "lowbit" or "baseline"
    isa: str                       # lowbit ISA variant, or the backend of a baseline
    precision: str                 # "int8" or "fp32": the peak it is compared with
    prepare: Callable[[Problem], Callable[[], object]]  # (or BinaryProblem, per op)
    cost: Callable[[int, int, int], tuple[int, int]]  # (m, n, k) -> (ops, bytes)
    op: str = GEMM_OP              # the operation whose groups it competes in

    def info(self, m: int, n: int, k: int) -> dict:
        """The ``extra_info`` every benchmark records."""
        ops, nbytes = self.cost(m, n, k)
        return {"impl": self.name, "family": self.family, "isa": self.isa,
                "precision": self.precision, "op": self.op, "m": m, "n": n, "k": k,
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


# --- gemm_binary ------------------------------------------------------------------------

def _lowbit_binary(isa: str, cost) -> Impl:
    def prepare(p: BinaryProblem):
        # A tiny first call compiles (Numba) or faults in code before any timing.
        gemm_binary(np.zeros((1, 1), np.uint64), np.zeros((8, 1), np.uint64), 8, isa=isa)
        a, wp, k = p.a_bits, p.w_bits, p.k
        if not np.array_equal(gemm_binary(a, wp, k, isa=isa), p.expected):
            raise AssertionError(f"lowbit[{isa}] differs from the fp32 +-1 product at "
                                 f"{p.m}x{p.n}x{p.k}; not benchmarking a wrong kernel")
        return lambda: gemm_binary(a, wp, k, isa=isa)
    return Impl(f"lowbit[{isa}]", "lowbit", isa, "binary", prepare, cost, BINARY_OP)


def _binary_numpy_fp32(p: BinaryProblem):
    a, w = p.a_f32, p.w_f32
    return lambda: a @ w


def _binary_lowbit_int8(p: BinaryProblem):
    a, wp = p.a, p.w_int8
    if not np.array_equal(gemm_int8(a, wp), p.expected):
        raise AssertionError(f"lowbit_int8 differs from the fp32 +-1 product at "
                             f"{p.m}x{p.n}x{p.k}")
    return lambda: gemm_int8(a, wp)


def binary_impls() -> list[Impl]:
    """Every gemm_binary variant usable here except the NumPy ref, then its baselines: NumPy
    fp32 and lowbit's own int8 GEMM (its best variant) on the same +-1 matrices."""
    lowbit = [_lowbit_binary(k.key.isa, k.cost)
              for k in REGISTRY.kernels(BINARY_OP, "b1", "binary", usable=True)
              if k.key.isa != "ref"]
    return lowbit + [
        Impl("numpy_fp32", "baseline", "numpy_blas", "fp32", _binary_numpy_fp32,
             _bits(32, 32, 32), BINARY_OP),
        Impl("lowbit_int8", "baseline", dispatch_info()[GEMM_OP]["selected"], "int8",
             _binary_lowbit_int8, _bits(8, 8, 32), BINARY_OP),
    ]


# --- gemm_w4a16 / gemm_w4a8 -------------------------------------------------------------

def _lowbit_w4(op: str, isa: str, cost, act: str) -> Impl:
    def prepare(p: W4Problem):
        # A tiny first call compiles (Numba) or faults in code before any timing.
        tiny = pack_weights(np.zeros((32, 8), np.int8), "int4",
                            scales=np.ones((1, 8), np.float16))
        if op == W4A16_OP:
            x = p.x if act == "f32" else p.x_bf16
            gemm_w4a16(np.zeros((1, 32), x.dtype), tiny, isa=isa)
            w4 = p.w4
            out = np.empty((p.m, p.n), np.float32)
            p.check_w4a16(gemm_w4a16(x, w4, isa=isa), f"lowbit[{isa}]",
                          x=bf16_to_f32(x) if act == "bf16" else None)
            return lambda: gemm_w4a16(x, w4, out=out, isa=isa)
        gemm_w4a8(np.zeros((1, 32), np.int8), tiny, isa=isa)
        a, w4, a_scale = p.a, p.w4, p.a_scale
        out = np.empty((p.m, p.n), np.float32)
        p.check_w4a8(gemm_w4a8(a, w4, a_scale=a_scale, isa=isa), f"lowbit[{isa}]")
        return lambda: gemm_w4a8(a, w4, a_scale=a_scale, out=out, isa=isa)
    # "w4a16" rows are compared with the fp32 FMA peak, "w4a8" with int8 VNNI; the bfloat16
    # dot product (two MACs per float32 lane) has no peak loop of its own: no % of peak
    precision = "w4a8" if op == W4A8_OP else "w4a16" if act == "f32" else "w4a16_bf16"
    return Impl(f"lowbit[{isa}]", "lowbit", isa, precision, prepare, cost, op)


def _w4_lowbit_variants(op: str) -> list[Impl]:
    """gemm_w4a8: every usable variant. gemm_w4a16: every usable variant on float32
    activations, then those that run bfloat16 only (the vdpbf16ps one, lowbit[avx512_vnni])
    on x rounded to bfloat16, the activations torch_int4_woq runs."""
    if op == W4A8_OP:
        return [_lowbit_w4(op, k.key.isa, k.cost, "s8")
                for k in REGISTRY.kernels(op, "s8", "int4", usable=True) if k.key.isa != "ref"]
    f32 = [k for k in REGISTRY.kernels(op, "f32", "int4", usable=True) if k.key.isa != "ref"]
    names = {k.key.isa for k in f32}
    bf16 = [k for k in REGISTRY.kernels(op, "bf16", "int4", usable=True)
            if k.key.isa not in names and k.key.isa != "ref"]
    return ([_lowbit_w4(op, k.key.isa, k.cost, "bf16") for k in bf16]
            + [_lowbit_w4(op, k.key.isa, k.cost, "f32") for k in f32])


def _torch_int4_woq(p: W4Problem):
    """torch's weight-only int4 CPU kernel (torch 2.13), found by experiment:

    1. ``torch.ops.aten._convert_weight_to_int4pack_for_cpu(w, 2)``: w int32 [N, K] holding
       the nibbles n = v + 8 in [0, 15] (innerKTiles is ignored on CPU) -> uint8 [N, K / 2];
    2. ``torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, group_size, scale_zeros)``:
       x [M, K] and scale_zeros [K / group_size, N, 2] = (scale, zero) in the same dtype;
       W = (n - 8) * scale + zero. Only bfloat16 has a vectorized (AVX-512 / AVX2) kernel;
       float32 and float16 fall back to a scalar loop (about 100x slower), so the baseline
       runs bfloat16 activations and scales (zero = 0: symmetric) and returns bfloat16.
    """
    import torch

    w_nk = torch.from_numpy(np.ascontiguousarray((p.v.astype(np.int32) + 8).T))
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(w_nk, 2)
    del w_nk
    sz = torch.zeros((p.k // p.g, p.n, 2), dtype=torch.float32)
    sz[:, :, 0] = torch.from_numpy(p.scales.astype(np.float32))
    sz = sz.to(torch.bfloat16)  # float16 scales in [1/128, 3/128] round to bfloat16
    x = torch.from_numpy(p.x).to(torch.bfloat16)
    g = p.g

    def call():
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, g, sz)
    # bfloat16 activations, scales and output: about 3 * 2^-8 of the absolute sums
    p.check_w4a16(call().float().numpy(), "torch_int4_woq", rtol=2 ** -6)
    return call


def _w4_lowbit_int8(p: W4Problem):
    a, wp = p.a, p.w_int8
    return lambda: gemm_int8(a, wp)


def _w4_numpy_fp32(p: W4Problem):
    x, w = p.x, p.w_f32
    return lambda: x @ w


def _w4_stream_read(op: str):
    """A read of as many bytes as ``op``'s kernels move at this shape, by both cores
    (``run_read``), from a buffer of its own: the speed of light of that footprint wherever
    it lives (L3 for 4096 x 4096, DRAM for the weights larger than the L3). Timed in the same
    pass as the kernels, so a bandwidth that drifts during a session (this VM's read rate
    moved between about 35 and 70 GB/s from one run to the next) moves both alike."""
    def prepare(p: W4Problem):
        _, nbytes = REGISTRY.lookup(op, "f32" if op == W4A16_OP else "s8", "int4",
                                    "ref").cost(p.m, p.n, p.k)
        buf = read_bandwidth_buffer(-(-nbytes // 256) * 256)
        run_read(buf)
        return lambda: run_read(buf)
    return prepare


def w4_impls(op: str) -> list[Impl]:
    """Every ``op`` variant usable here except the NumPy ref (``_w4_lowbit_variants``),
    then the baselines: torch's int4 weight-only kernel,
    lowbit's own int8 GEMM (its best variant; the int4 values as int8 weights), NumPy
    fp32 on the dequantized weights, and ``stream_read`` (``_w4_stream_read``), the
    bandwidth ceiling of the DRAM target."""
    read_cost = REGISTRY.lookup(op, "f32" if op == W4A16_OP else "s8", "int4", "ref").cost
    return _w4_lowbit_variants(op) + [
        Impl(STREAM_READ, "baseline", "stream", "bytes", _w4_stream_read(op),
             lambda m, n, k: (0, read_cost(m, n, k)[1]), op),
        Impl("torch_int4_woq", "baseline", "torch", "int4", _torch_int4_woq,
             REGISTRY.lookup(W4A16_OP, "bf16", "int4", "ref").cost, op),
        Impl("lowbit_int8", "baseline", dispatch_info()[GEMM_OP]["selected"], "int8",
             _w4_lowbit_int8, _bits(8, 8, 32), op),
        Impl("numpy_fp32", "baseline", "numpy_blas", "fp32", _w4_numpy_fp32,
             _bits(32, 32, 32), op),
    ]


# --- gemm_sparse24 ------------------------------------------------------------------------

class Sparse24Problem(Problem):
    """Seeded int8 operands whose weights are magnitude-pruned to 2:4 (``prune_24``): packed
    as "sparse24" (int8, and float32 for the float kernels) for lowbit's 2:4 kernels, as
    "int8" (the same 2:4 matrix stored dense) for the dense baseline, float32 for NumPy."""

    CHECK_COLS = 256  # float32 columns checked against the reference before timing

    def __init__(self, m: int, n: int, k: int) -> None:
        super().__init__(m, n, k)
        self.w_kn = prune_24(self.w_kn)

    @functools.cached_property
    def w24(self):
        return pack_weights(self.w_kn, "sparse24")

    @functools.cached_property
    def w24_f32(self):
        return pack_weights(self.w_f32, "sparse24")

    def check_f32(self, got: np.ndarray, name: str) -> None:
        c = slice(0, self.CHECK_COLS)
        w = pack_weights(np.ascontiguousarray(self.w_f32[:, c]), "sparse24")
        values, index = w.kept()
        want = ref.gemm_sparse24(self.a_f32, values, index)
        tol = ref.sparse24_tolerance(self.a_f32, values, index)
        if (np.abs(got[:, c].astype(np.float64) - want) > tol).any():
            raise AssertionError(f"{name} differs from ref.gemm_sparse24 at {self.m}x{self.n}x"
                                 f"{self.k}; not benchmarking a wrong kernel")


@functools.lru_cache(maxsize=1)
def sparse24_problem(m: int, n: int, k: int) -> Sparse24Problem:
    return Sparse24Problem(m, n, k)


PROBLEMS[SPARSE24_OP] = sparse24_problem


def _lowbit_sparse24(isa: str, cost, act: str) -> Impl:
    def prepare(p: Sparse24Problem):
        # A tiny first call compiles (Numba) or faults in code before any timing.
        tiny = pack_weights(np.zeros((8, 8), np.int8 if act == "s8" else np.float32),
                            "sparse24")
        gemm_sparse24(np.zeros((1, 8), tiny.dtype), tiny, isa=isa)
        if act == "s8":
            a, w24 = p.a, p.w24
            if not np.array_equal(gemm_sparse24(a, w24, isa=isa), p.expected):
                raise AssertionError(f"lowbit[{isa}] differs from torch._int_mm at "
                                     f"{p.m}x{p.n}x{p.k}; not benchmarking a wrong kernel")
        else:
            a, w24 = p.a_f32, p.w24_f32
            p.check_f32(gemm_sparse24(a, w24, isa=isa), f"lowbit_f32[{isa}]")
        out = np.empty((p.m, p.n), w24.dtype if act == "f32" else np.int32)
        return lambda: gemm_sparse24(a, w24, out=out, isa=isa)
    name = f"lowbit[{isa}]" if act == "s8" else f"lowbit_f32[{isa}]"
    precision = "int8" if act == "s8" else "fp32"
    return Impl(name, "lowbit", isa, precision, prepare, cost, SPARSE24_OP)


def _sparse24_dense_int8(p: Sparse24Problem):
    a, wp = p.a, p.packed  # the 2:4 matrix stored dense
    if not np.array_equal(gemm_int8(a, wp), p.expected):
        raise AssertionError(f"lowbit_int8_dense differs from torch._int_mm at "
                             f"{p.m}x{p.n}x{p.k}")
    return lambda: gemm_int8(a, wp)


def sparse24_impls() -> list[Impl]:
    """Every gemm_sparse24 variant usable here except the NumPy ref, int8 then float32, then
    the baselines: lowbit's own dense int8 GEMM (its best variant) and NumPy fp32 on the
    same 2:4 matrix stored dense."""
    lowbit = [_lowbit_sparse24(k.key.isa, k.cost, act) for act in ("s8", "f32")
              for k in REGISTRY.kernels(SPARSE24_OP, act, "sparse24", usable=True)
              if k.key.isa != "ref"]
    return lowbit + [
        Impl("lowbit_int8_dense", "baseline", dispatch_info()[GEMM_OP]["selected"], "int8",
             _sparse24_dense_int8, _bits(8, 8, 32), SPARSE24_OP),
        Impl("numpy_fp32", "baseline", "numpy_blas", "fp32", _numpy_fp32, _bits(32, 32, 32),
             SPARSE24_OP),
    ]


def all_impls(op: str = GEMM_OP) -> list[Impl]:
    """The implementations competing in the groups of ``op``."""
    if op == BINARY_OP:
        return binary_impls()
    if op == SPARSE24_OP:
        return sparse24_impls()
    if op in (W4A16_OP, W4A8_OP):
        return w4_impls(op)
    if op == SPMM_CSR_OP:  # its own module: the groups are densities, not GEMM shapes
        from .impls_csr import csr_impls
        return csr_impls()
    if op != GEMM_OP:
        raise ValueError(f"op: no benchmark implementations for {op!r}")
    return lowbit_impls() + list(BASELINES)


def _scalar(impl: Impl) -> bool:
    """A lowbit fallback without SIMD (portable C, Numba): never the fastest, often the slowest."""
    return impl.family == "lowbit" and ISA_RANK.index(impl.isa) >= ISA_RANK.index("portable")


def pass_order(op: str = GEMM_OP) -> list[Impl]:
    """``all_impls(op)`` in the order one interleaved pass times them.

    The SIMD lowbit variants, then the int8 baselines, then fp32 BLAS, the scalar lowbit
    fallbacks last: what the speed targets compare runs within about a second in every pass.
    """
    impls = all_impls(op)
    rank = {"lowbit": 0, "bytes": 1, "int4": 1, "int8": 1, "dense_int8": 1, "fp32": 2,
            "scalar": 3}

    def key(item):
        i, impl = item
        kind = "scalar" if _scalar(impl) else impl.family if impl.family == "lowbit" \
            else impl.precision
        return rank.get(kind, len(rank)), i
    return [impl for _, impl in sorted(enumerate(impls), key=key)]
