"""``spmm_csr``: CSR sparse weights [N_out, K] x dense activations [K, B] -> [N_out, B].

    out[i, c] = sum over the nonzeros (i, k) of W of W[i, k] * x[k, c]
    int8 x int8 -> int32, exact;  float32 x float32 -> float32 (within ref.spmm_csr_tolerance)

Every argument is checked here, before any C call; the C code assumes it was.
"""
from __future__ import annotations

import functools
import importlib.util
import weakref

import numpy as np

from . import native, ref
from .epilogue import INT32_MAX
from .format_csr import CSR_ROWS, PackedCsrWeights
from .gemm_int8 import _check_out, _ptr, _row_pitch
from .registry import REGISTRY, Kernel, KernelKey

OP = "spmm_csr"
# activation format per value dtype: the activations have the weights' dtype
ACT_OF_VALUES = {np.dtype(np.int8): "s8", np.dtype(np.float32): "f32"}
OUT_DTYPE = {"s8": np.dtype(np.int32), "f32": np.dtype(np.float32)}
# |w x| <= 128 * 128 for int8: a row of at most this many nonzeros cannot overflow int32
MAX_SAFE_ROW_NNZ = INT32_MAX // (128 * 128)


def _check_weights(w_csr) -> PackedCsrWeights:
    if not isinstance(w_csr, PackedCsrWeights):
        raise TypeError(f"w_csr: expected PackedCsrWeights from pack_csr or pack_weights(w, "
                        f"'csr'), got {type(w_csr).__name__}")
    return w_csr


def _check_x(x, w_csr: PackedCsrWeights) -> tuple[np.ndarray, str]:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x: expected a numpy.ndarray, got {type(x).__name__}")
    act = ACT_OF_VALUES[w_csr.dtype]
    if x.dtype != w_csr.dtype:
        raise TypeError(f"x: dtype must be {w_csr.dtype} like the weights' values "
                        f"(int8 x int8 or float32 x float32), got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"x: expected a 2-D [K, B] matrix, got shape {x.shape}")
    if x.shape[0] != w_csr.k:
        raise ValueError(f"w_csr, x: inner dimensions differ: w_csr has K={w_csr.k}, x has "
                         f"K={x.shape[0]}")
    # Rows of x may be any whole number of elements apart (read in place); B must be
    # unit-stride and the data aligned to its elements. Anything else is copied once.
    k, b = x.shape
    size = x.itemsize
    if ((b > 1 and x.strides[1] != size)
            or (k > 1 and (x.strides[0] < b * size or x.strides[0] % size))
            or x.ctypes.data % size):
        x = np.ascontiguousarray(x)
    if act == "f32" and x.size and not np.isfinite(x).all():
        raise ValueError("x: contains NaN or infinity")
    return x, act


def _check_overflow(w_csr: PackedCsrWeights, x: np.ndarray) -> None:
    if w_csr.row_nnz_max <= MAX_SAFE_ROW_NNZ or not x.size:
        return
    # Past the static bound, prove it from the data: |out| <= max|x| * max_i sum |W[i, :]|.
    xmax = max(abs(int(x.min())), abs(int(x.max())))
    bound = xmax * w_csr.row_abs_sum_max
    if bound > INT32_MAX:
        raise ValueError(
            f"w_csr, x: rows of up to {w_csr.row_nnz_max} nonzeros with these values can "
            f"overflow the int32 accumulator (|result| may reach {bound} > 2^31 - 1); split "
            f"K so rows hold at most {MAX_SAFE_ROW_NNZ} nonzeros and add the parts in int64")


def spmm_csr(w_csr: PackedCsrWeights, x: np.ndarray, *, out: np.ndarray | None = None,
             isa: str | None = None) -> np.ndarray:
    """Sparse x dense: ``out = W @ x`` for CSR weights W [N_out, K] and activations x [K, B].

    out[i, c] = sum over the nonzeros W[i, k] of W[i, k] * x[k, c]: int8 weights and
    activations give the exact int32 result; float32 ones a float32 sum, within
    ``ref.spmm_csr_tolerance`` of the float64 reference ``ref.spmm_csr``. Rows are spread
    over the threads by nonzeros. The AVX-512 VNNI variant multiplies four nonzeros of a
    row at once (vpdpbusd on the four x rows interleaved bytewise). Compressed sparse row
    format: Gustavson, "Two fast algorithms for sparse matrices", ACM TOMS 1978.

    Args:
        w_csr: ``pack_csr(w)`` (or ``pack_weights(w, "csr", layout="nk")``), int8 or
            float32 values.
        x: activations [K, B] of the weights' dtype (float32: finite). Rows of x may be
            strided and are read in place; other layouts are copied once.
        out: optional [N_out, B] output, int32 (int8 weights) or float32, C-contiguous or a
            row slice of one.
        isa: run one variant ("avx512_vnni" for int8 only, "avx512", "avx2", "portable",
            "numba", "ref"); default: the best usable
            (``REGISTRY.lookup("spmm_csr", "s8" | "f32", "csr")``).

    Raises ValueError if int8 rows are dense enough that int32 could overflow for these
    values (rows of more than 131071 nonzeros).

    Example:
        >>> w = pack_csr(np.array([[0, 2, 0], [0, 0, 0], [1, 0, -1]], np.int8))
        >>> spmm_csr(w, np.array([[1, 2], [3, 4], [5, 6]], np.int8)).tolist()
        [[6, 8], [0, 0], [-4, -4]]
    """
    w_csr = _check_weights(w_csr)
    x, act = _check_x(x, w_csr)
    if act == "s8":
        _check_overflow(w_csr, x)
    b = x.shape[1]
    out = _check_out(out, w_csr.n_out, b, OUT_DTYPE[act])
    if out.size and out.ctypes.data % out.itemsize:
        raise ValueError(f"out: data must be aligned to its {out.itemsize}-byte elements")
    kernel = REGISTRY.lookup(OP, act, CSR_ROWS.name, isa)
    if b:
        kernel.fn(w_csr, x, out)
    return out


# --- implementations -------------------------------------------------------------------

def _ref_impl(w: PackedCsrWeights, x, out) -> None:
    out[...] = ref.spmm_csr(w.row_ptr, w.col_idx, w.values, w.k, x)


def _numba_impl(w: PackedCsrWeights, x, out) -> None:
    from . import numba_csr  # imported on first use: compiling costs seconds

    numba_csr.spmm_csr(w, x, out)


_C_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _c_weights(w: PackedCsrWeights):
    """The lb_csr_weights struct of w, built once per packed matrix (w owns the arrays)."""
    cw = _C_WEIGHTS.get(w)
    if cw is None:
        cw = native.ffi.new("lb_csr_weights *")
        cw.n_rows, cw.k = w.n_out, w.k
        cw.row_ptr = _ptr(w.row_ptr, "int64_t *")
        cw.col_idx = _ptr(w.col_idx, "int32_t *")
        cw.values = _ptr(w.values, "char *")
        cw.row_sum = _ptr(w.row_sum, "int32_t *")
        cw.f32 = int(w.dtype == np.float32)
        _C_WEIGHTS[w] = cw
    return cw


def _c_impl(isa_id: int):
    def run(w: PackedCsrWeights, x, out) -> None:
        b = x.shape[1]
        rc = native.lib.lb_spmm_csr(isa_id, _c_weights(w), b, _ptr(x, "char *"),
                                    _row_pitch(x, b), _ptr(out, "char *"),
                                    _row_pitch(out, b))
        if rc:
            raise RuntimeError(f"spmm_csr: the C kernel rejected its arguments (code {rc})")
    return run


def csr_cost(n_out: int, k: int, b: int, nnz: int, *, value_bits: int,
             act_bits: int) -> tuple[int, int]:
    """(ops, bytes) of spmm_csr: 2 nnz B ops; bytes: the nonzeros' values and int32 column
    indices, the int64 row pointers, x [K, B] and the 32-bit output [N_out, B]."""
    if min(n_out, k, b, nnz) < 0:
        raise ValueError(f"shape must be non-negative, got n_out={n_out}, k={k}, b={b}, "
                         f"nnz={nnz}")
    moved = (-(-nnz * value_bits // 8) + 4 * nnz + 8 * (n_out + 1)
             + -(-k * b * act_bits // 8) + 4 * n_out * b)
    return 2 * nnz * b, moved


@functools.cache
def _numba_supported() -> bool:
    return importlib.util.find_spec("numba") is not None


def c_supported(isa: str, act: str) -> bool:
    """This CPU can run spmm_csr's C variant ``isa`` for these activations ("avx2" needs FMA
    for float32; "avx512_vnni" exists for int8 only)."""
    return native.lib is not None and bool(
        native.lib.lb_spmm_csr_supported(native.C_ISAS.index(isa), int(act == "f32")))


C_VARIANTS = {"s8": ("portable", "avx2", "avx512", "avx512_vnni"),
              "f32": ("portable", "avx2", "avx512")}


def _register() -> None:
    for act, bits in (("s8", 8), ("f32", 32)):
        cost = functools.partial(csr_cost, value_bits=bits, act_bits=bits)

        def key(isa: str, act=act) -> KernelKey:
            return KernelKey(OP, act, CSR_ROWS.name, isa)
        REGISTRY.register(Kernel(key("ref"), _ref_impl, cost, lambda: True))
        REGISTRY.register(Kernel(key("numba"), _numba_impl, cost, _numba_supported))
        for isa in C_VARIANTS[act]:
            REGISTRY.register(Kernel(key(isa), _c_impl(native.C_ISAS.index(isa)), cost,
                                     lambda isa=isa, act=act: c_supported(isa, act)))


_register()
