"""``gemm_binary``: XNOR-Net GEMM of bit-packed +-1 activations and weights.

    dot[i, j] = K - 2 * popcount(a_i XOR w_j)   (= sum_k a[i, k] * w[k, j] over +-1 values)

Every argument is checked here, before any C call; the C code assumes it was.
"""
from __future__ import annotations

import functools
import importlib.util

import numpy as np

from lowbit.costs import gemm_cost

from . import native, ref
from .epilogue import INT32_MAX
from .formats import BINARY_PANELS, PackedBinaryWeights, binary_words
from .gemm_int8 import _check_out, _ptr, _row_pitch
from .registry import REGISTRY, Kernel, KernelKey

OP = "gemm_binary"
ACT = "b1"  # activation format: +-1 bit-packed like the weights (formats.pack_bits)
_WORD = np.dtype(np.uint64)


def _check_k(k) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise TypeError(f"k: expected an integer (the logical K in bits), got {type(k).__name__}")
    if not 1 <= k <= INT32_MAX:
        raise ValueError(f"k: must lie in [1, 2^31 - 1] (the int32 result spans [-k, k]), "
                         f"got {k}")
    return int(k)


def _check_bits(name: str, bits, k: int, rows: str) -> np.ndarray:
    if not isinstance(bits, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(bits).__name__}")
    if bits.dtype != _WORD:
        raise TypeError(f"{name}: dtype must be uint64 (64 bit-packed +-1 values per word), "
                        f"got {bits.dtype}")
    if bits.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D [{rows}, ceil(k/64)] matrix, got shape "
                         f"{bits.shape}")
    if bits.shape[1] != binary_words(k):
        raise ValueError(f"{name}, k: {name} has {bits.shape[1]} words per row, but k={k} "
                         f"needs ceil(k/64) = {binary_words(k)}")
    return bits


def _check_activation(a_bits, k: int) -> np.ndarray:
    a = _check_bits("a_bits", a_bits, k, "M")
    # Rows may be any whole number of words apart (read in place); anything else (words not
    # unit-stride, rows overlapping, data not 8-byte aligned) is copied once, O(M K / 64).
    m, kw = a.shape
    if ((kw > 1 and a.strides[1] != 8) or (m > 1 and (a.strides[0] < 8 * kw
                                                      or a.strides[0] % 8))
            or a.ctypes.data % 8):
        a = np.array(a, dtype=np.uint64, order="C", copy=True)
    return a


def _check_weights(w_bits, k: int) -> PackedBinaryWeights:
    if isinstance(w_bits, PackedBinaryWeights):
        if w_bits.k != k:
            raise ValueError(f"w_bits, k: w_bits was packed with K={w_bits.k}, but k={k}")
        return w_bits
    if isinstance(w_bits, np.ndarray):
        rows = _check_bits("w_bits", w_bits, k, "N")
        if rows.shape[0] < 1:
            raise ValueError(f"w_bits: N must be at least 1, got shape {rows.shape}")
        # Raw rows are laid out into panels on every call (O(N K / 64)); pack once with
        # pack_weights(w, "binary") for repeated calls.
        return PackedBinaryWeights(fmt=BINARY_PANELS, k=k, n=rows.shape[0],
                                   data=BINARY_PANELS.pack_rows(rows, k))
    raise TypeError(f"w_bits: expected PackedBinaryWeights from pack_weights(w, 'binary') or "
                    f"a uint64 [N, ceil(k/64)] array, got {type(w_bits).__name__}")


def _check_scale(name: str, value, length: int, what: str) -> np.ndarray | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, np.ndarray)
                                               and value.dtype == np.bool_):
        raise TypeError(f"{name}: expected real numbers, got a boolean")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a scalar or a 1-D array of real numbers, "
                        f"got {type(value).__name__}") from None
    if arr.ndim == 0:
        arr = np.full(length, arr)
    if arr.ndim != 1 or arr.size != length:
        raise ValueError(f"{name}: expected a scalar or {length} entries ({what}), got shape "
                         f"{arr.shape}")
    with np.errstate(over="ignore"):
        arr32 = arr.astype(np.float32)
    if not np.all(np.isfinite(arr32)):
        raise ValueError(f"{name}: must be finite in float32")
    return np.ascontiguousarray(arr32)


def gemm_binary(a_bits: np.ndarray, w_bits, k: int, *, alpha=None, beta=None,
                out: np.ndarray | None = None, isa: str | None = None) -> np.ndarray:
    """XNOR-Net GEMM: int32 ``dot = K - 2 popcount(a XOR w)``, optionally scaled to float32.

    dot[i, j] = sum_k a[i, k] * w[k, j] over +-1 values, exact; with ``alpha`` and/or
    ``beta`` the result is float32 ``dot * beta[i] * alpha[j]`` (XNOR-Net's per-channel
    weight scale alpha and per-row activation scale beta; a missing one is 1), within
    ``ref.FLOAT_RTOL`` of ``ref.binary_scale``. Rastegari et al., "XNOR-Net", ECCV 2016.

    Args:
        a_bits: uint64 [M, ceil(k/64)] activation rows from ``pack_binary_activations``:
            bit b of word q is K index 64q + b, bit 1 = +1, bit 0 = -1. Rows may be strided
            (used in place); other layouts are copied. Bits past k are ignored.
        w_bits: ``pack_weights(w, "binary")`` (the fast path), or a uint64 [N, ceil(k/64)]
            array of weight rows in the activation format, laid out into panels per call.
        k: the logical K (number of +-1 values per row), 1 <= k <= 2^31 - 1.
        alpha: None, a scalar or [N] per output channel; finite in float32.
        beta: None, a scalar or [M] per row; finite in float32.
        out: optional int32 (no scaling) or float32 [M, N] array, C-contiguous or a row
            slice of one.
        isa: run one variant ("avx512" = AVX-512 VPOPCNTDQ, "avx2", "portable", "numba",
            "ref"); default: the best usable (``dispatch_info()["gemm_binary"]``).

    Example:
        >>> a = pack_binary_activations(np.array([[1, -1, 1]]))
        >>> w = pack_weights(np.array([[1], [1], [-1]]), "binary")     # [K, N]
        >>> gemm_binary(a, w, 3)
        array([[-1]], dtype=int32)
    """
    k = _check_k(k)
    a = _check_activation(a_bits, k)
    m = a.shape[0]
    w = _check_weights(w_bits, k)
    alpha = _check_scale("alpha", alpha, w.n, "N, per output channel")
    beta = _check_scale("beta", beta, m, "M, per row")
    scaled = alpha is not None or beta is not None
    out = _check_out(out, m, w.n, np.dtype(np.float32 if scaled else np.int32))
    if out.size and out.ctypes.data % out.itemsize:
        raise ValueError(f"out: data must be aligned to its {out.itemsize}-byte elements")
    kernel = REGISTRY.lookup(OP, ACT, BINARY_PANELS.name, isa)
    if m:
        kernel.fn(a, w, alpha, beta, out)
    return out


# --- implementations -------------------------------------------------------------------

def _finish(dot: np.ndarray, alpha, beta, out: np.ndarray) -> None:
    out[...] = dot if alpha is None and beta is None else ref.binary_scale(dot, alpha, beta)


def _ref_impl(a, w: PackedBinaryWeights, alpha, beta, out) -> None:
    _finish(ref.gemm_binary(a, w.rows(), w.k), alpha, beta, out)


def _numba_impl(a, w: PackedBinaryWeights, alpha, beta, out) -> None:
    from . import numba_binary  # imported on first use: compiling costs seconds

    _finish(numba_binary.gemm_binary_panels(a, w), alpha, beta, out)


_LB_ENOMEM = -2  # csrc/lowbit.h


def _c_impl(isa_id: int):
    def run(a, w: PackedBinaryWeights, alpha, beta, out) -> None:
        m, kw = a.shape
        rc = native.lib.lb_gemm_binary(
            isa_id, m, w.n, w.k, _ptr(a, "uint64_t *"), _row_pitch(a, kw),
            _ptr(w.data, "uint64_t *"), _ptr(alpha, "float *"), _ptr(beta, "float *"),
            _ptr(out, "char *"), _row_pitch(out, w.n))
        if rc == _LB_ENOMEM:
            raise MemoryError("gemm_binary: out of memory")
        if rc:
            raise RuntimeError(f"gemm_binary: the C kernel rejected its arguments (code {rc})")
    return run


def _cost(m: int, n: int, k: int) -> tuple[int, int]:
    """A binary MAC counts as a MAC (2 ops); operands are 1 bit, the int32 output 32."""
    return gemm_cost(m, n, k, a_bits=1, w_bits=1, out_bits=32)


@functools.cache
def _numba_supported() -> bool:
    return importlib.util.find_spec("numba") is not None


def c_supported(isa: str) -> bool:
    """This CPU can run gemm_binary's C variant ``isa`` (for "avx512": VPOPCNTDQ as well)."""
    return native.lib is not None and bool(
        native.lib.lb_gemm_binary_supported(native.C_ISAS.index(isa)))


C_VARIANTS = ("portable", "avx2", "avx512")  # no VNNI variant: popcount has no dot product


def _register() -> None:
    def key(isa: str) -> KernelKey:
        return KernelKey(OP, ACT, BINARY_PANELS.name, isa)
    REGISTRY.register(Kernel(key("ref"), _ref_impl, _cost, lambda: True))
    REGISTRY.register(Kernel(key("numba"), _numba_impl, _cost, _numba_supported))
    for isa in C_VARIANTS:
        REGISTRY.register(Kernel(key(isa), _c_impl(native.C_ISAS.index(isa)), _cost,
                                 lambda isa=isa: c_supported(isa)))


_register()
