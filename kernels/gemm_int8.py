"""``gemm_int8``: int8/uint8 activations x packed int8 weights -> int32, int8 or float32.

Every argument is checked here, before any C call; the C code assumes it was.
"""
from __future__ import annotations

import functools
import importlib.util

import numpy as np

from lowbit.costs import gemm_cost

from . import native, ref
from .epilogue import INT32_MAX, Dequantize, Prepared, Requantize, prepare
from .formats import INT8_PANELS, PackedWeights
from .registry import REGISTRY, Kernel, KernelKey

OP = "gemm_int8"
ACT_FORMATS = {np.dtype(np.int8): "s8", np.dtype(np.uint8): "u8"}
_ACT_RANGE = {"s8": (-128, 127), "u8": (0, 255)}
_W_ABS_MAX = 128


def max_safe_k(act: str, a_zero_point: int = 0) -> int:
    """Largest K for which no int8 values can overflow the int32 accumulator.

    |sum_k (a - zp) w| <= K * max|a - zp| * 128; e.g. 131071 (2^17 - 1) for int8
    activations with zero point 0, 65793 for uint8.
    """
    lo, hi = _ACT_RANGE[act]
    return INT32_MAX // (max(abs(lo - a_zero_point), abs(hi - a_zero_point)) * _W_ABS_MAX)


_NO_EPILOGUE = prepare(None, 0, 0)


def _check_activation(a) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"a: expected a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in ACT_FORMATS:
        raise TypeError(f"a: dtype must be int8 or uint8, got {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"a: expected a 2-D [M, K] matrix, got shape {a.shape}")
    # Rows may be any positive distance apart (the kernel packs A); K must be unit-stride.
    # Anything else (a transposed or reversed view) is copied once, O(M K). Strides of
    # size-one dimensions do not matter.
    m, k = a.shape
    if (k > 1 and a.strides[1] != 1) or (m > 1 and a.strides[0] < k):
        a = np.ascontiguousarray(a)
    return a


def _check_weights(w, k: int) -> PackedWeights:
    if not isinstance(w, PackedWeights):
        raise TypeError(f"w: expected PackedWeights from lowbit.kernels.pack_weights, "
                        f"got {type(w).__name__}")
    if w.fmt is not INT8_PANELS:
        raise ValueError(f"w: gemm_int8 needs weights packed as 'int8', got {w.fmt.name!r}")
    if w.k != k:
        raise ValueError(f"a, w: inner dimensions differ: a has K={k}, w has K={w.k}")
    return w


def _check_overflow(a: np.ndarray, act: str, w: PackedWeights, a_zero_point: int) -> None:
    k = a.shape[1]
    if k <= max_safe_k(act, a_zero_point) or a.size == 0:
        return
    # Past the static bound, prove it from the data: |acc| <= max|a - zp| * max_j sum_k |w|.
    lo, hi = int(a.min()), int(a.max())
    amax = max(abs(lo - a_zero_point), abs(hi - a_zero_point))
    bound = amax * w.col_abs_sum_max
    if bound > INT32_MAX:
        raise ValueError(
            f"a, w: K={k} with these values can overflow the int32 accumulator "
            f"(|result| may reach {bound} > 2^31 - 1); split K into chunks of at most "
            f"{max_safe_k(act, a_zero_point)} and add the partial results in int64")


def _check_out(out, m: int, n: int, dtype: np.dtype) -> np.ndarray:
    if out is None:
        return np.empty((m, n), dtype=dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out: expected a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out: dtype must be {dtype} for this epilogue, got {out.dtype}")
    if out.shape != (m, n):
        raise ValueError(f"out: shape must be {(m, n)}, got {out.shape}")
    if not out.flags.writeable:
        raise ValueError("out: is read-only")
    size = dtype.itemsize
    columns_ok = n <= 1 or out.strides[1] == size
    rows_ok = m <= 1 or (out.strides[0] >= n * size and out.strides[0] % size == 0)
    if out.size and not (columns_ok and rows_ok):
        raise ValueError("out: rows must be unit-stride and not overlap (a C-contiguous "
                         "array or a row slice of one)")
    return out


def _row_pitch(arr: np.ndarray, row_len: int) -> int:
    """Elements between rows; a single row's stride is meaningless, so report row_len."""
    return arr.strides[0] // arr.itemsize if arr.shape[0] > 1 else row_len


def gemm_int8(a: np.ndarray, w: PackedWeights, *, a_zero_point: int = 0,
              epilogue: Requantize | Dequantize | None = None, out: np.ndarray | None = None,
              isa: str | None = None) -> np.ndarray:
    """C = epilogue((A - a_zero_point) @ W), exact in int32.

    Args:
        a: int8 or uint8 activations [M, K]. Rows may be strided; other layouts are copied.
        w: weights packed by ``pack_weights(w_int8, "int8")`` from [K, N] (or [N, K] with
            ``layout="nk"``).
        a_zero_point: subtracted from every activation (asymmetric quantization).
        epilogue: None for int32 output; ``Requantize`` for int8/uint8; ``Dequantize`` for
            float32.
        out: optional output array (C-contiguous, or a row slice of one).
        isa: run one variant ("avx512_vnni", "avx512", "avx2", "portable", "numba", "ref");
            default: the best usable (``dispatch_info()``).

    Raises ValueError if K is large enough that int32 could overflow for these values.

    Example:
        >>> w = pack_weights(np.ones((64, 32), np.int8))
        >>> gemm_int8(np.ones((2, 64), np.int8), w)[0, 0]
        64
    """
    a = _check_activation(a)
    m, k = a.shape
    act = ACT_FORMATS[a.dtype]
    w = _check_weights(w, k)
    lo, hi = _ACT_RANGE[act]
    if (not isinstance(a_zero_point, (int, np.integer)) or isinstance(a_zero_point, bool)
            or not lo <= a_zero_point <= hi):
        raise ValueError(f"a_zero_point: must be an integer in [{lo}, {hi}] for {a.dtype} "
                         f"activations, got {a_zero_point!r}")
    a_zero_point = int(a_zero_point)
    _check_overflow(a, act, w, a_zero_point)
    ep = _NO_EPILOGUE if epilogue is None else prepare(epilogue, m, w.n)
    out = _check_out(out, m, w.n, ep.out_dtype)
    kernel = REGISTRY.lookup(OP, act, w.fmt.name, isa)
    if m:
        kernel.fn(a, w, a_zero_point, ep, out)
    return out


# --- implementations -------------------------------------------------------------------

def _ref_impl(a, w, a_zero_point, ep: Prepared, out) -> None:
    out[...] = ref.apply_epilogue(ref.gemm_int8(a, w.unpack(), a_zero_point), ep)


def _numba_impl(a, w, a_zero_point, ep: Prepared, out) -> None:
    from . import numba_gemm  # imported on first use: compiling costs seconds

    acc = numba_gemm.gemm_int8_panels(a, w, a_zero_point)
    out[...] = ref.apply_epilogue(acc, ep)


def _ptr(arr: np.ndarray | None, ctype: str):
    """A C pointer of type ``ctype`` to arr's data (arr stays alive in the caller)."""
    if arr is None:
        return native.ffi.NULL
    if arr.flags.c_contiguous:  # from_buffer is ~6x cheaper than .ctypes on this hot path
        return native.ffi.from_buffer(ctype.replace("*", "[]"), arr)
    return native.ffi.cast(ctype, arr.ctypes.data)  # row-strided views


def c_epilogue(ep: Prepared):
    """The ``lb_epilogue`` struct of a prepared epilogue (csrc/lowbit_api.h). It points into
    ep's arrays: the caller holds ep until the C call returns."""
    if ep.kind == 0:
        return _C_NO_EPILOGUE
    cep = native.ffi.new("lb_epilogue *")
    cep.kind = ep.kind
    if ep.kind == 1:
        src = ep.source
        cep.multiplier = _ptr(ep.multiplier, "int32_t *")
        cep.shift = _ptr(ep.shift, "int32_t *")
        cep.bias = _ptr(ep.bias, "int32_t *")
        cep.zero_point, cep.qmin, cep.qmax = src.zero_point, src.qmin, src.qmax
        cep.out_unsigned = int(ep.out_dtype == np.uint8)
    else:
        cep.a_scale = _ptr(ep.a_scale, "float *")
        cep.w_scale = _ptr(ep.w_scale, "float *")
        cep.fbias = _ptr(ep.bias, "float *")
    return cep


def _c_impl(isa_id: int):
    def run(a, w, a_zero_point, ep: Prepared, out) -> None:
        m, k = a.shape
        rc = native.lib.lb_gemm_int8(
            isa_id, m, w.n, k, _ptr(a, "uint8_t *"), _row_pitch(a, k), int(a.dtype == np.int8),
            a_zero_point, _ptr(w.data, "int8_t *"), _ptr(w.col_sum, "int32_t *"),
            c_epilogue(ep), _ptr(out, "char *"), _row_pitch(out, w.n))
        if rc == _LB_ENOMEM:
            raise MemoryError("gemm_int8: could not allocate the packed-activation buffer")
        if rc:
            raise RuntimeError(f"gemm_int8: the C kernel rejected its arguments (code {rc})")
    return run


_LB_ENOMEM = -2  # csrc/lowbit.h

# The int32-output epilogue: all zeros, only ever read by C, so one instance serves all calls.
_C_NO_EPILOGUE = native.ffi.new("lb_epilogue *") if native.ffi is not None else None


def _cost(m: int, n: int, k: int) -> tuple[int, int]:
    return gemm_cost(m, n, k, a_bits=8, w_bits=8, out_bits=32)


@functools.cache
def _numba_supported() -> bool:
    return importlib.util.find_spec("numba") is not None


def _register() -> None:
    for act in ("s8", "u8"):
        def key(isa: str) -> KernelKey:
            return KernelKey(OP, act, INT8_PANELS.name, isa)
        REGISTRY.register(Kernel(key("ref"), _ref_impl, _cost, lambda: True))
        REGISTRY.register(Kernel(key("numba"), _numba_impl, _cost, _numba_supported))
        for isa_id, isa in enumerate(native.C_ISAS):
            REGISTRY.register(Kernel(key(isa), _c_impl(isa_id), _cost,
                                     lambda isa=isa: native.c_isa_supported(isa)))


_register()
