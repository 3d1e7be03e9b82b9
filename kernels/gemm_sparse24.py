"""``gemm_sparse24``: activations x 2:4 sparse weights (``pack_weights(w, "sparse24")``).

    out[i, j] = sum over groups g, slots t of (a[i, 4g + idx[g, t, j]] - a_zero_point)
                * v[g, t, j]                                  (formats: format_sparse24)

int8 / uint8 activations with int8 weights: exact int32, then an optional Requantize /
Dequantize epilogue fused into the C kernels' store (the one gemm_int8 uses); float32
activations with float32 weights: float32. The kernels gather
the activations by the 2-bit indices inside the microkernel (vpshufb for int8, vpermps for
float32) and never expand the weights to dense. Every argument is checked here, before any
C call; the C code assumes it was.
"""
from __future__ import annotations

import functools
import importlib.util
import weakref

import numpy as np

from lowbit.costs import gemm_cost

from . import native, ref
from .epilogue import INT32_MAX, Dequantize, Prepared, Requantize, prepare
from .format_sparse24 import SPARSE24_PANELS, PackedSparse24Weights
from .gemm_int4 import _check_rc
from .gemm_int8 import _ACT_RANGE, _W_ABS_MAX, _check_out, _ptr, _row_pitch, c_epilogue
from .registry import REGISTRY, Kernel, KernelKey

OP = "gemm_sparse24"
ACT_FORMATS = {np.dtype(np.int8): "s8", np.dtype(np.uint8): "u8", np.dtype(np.float32): "f32"}
_F32 = np.dtype(np.float32)


def max_safe_k(act: str, a_zero_point: int = 0) -> int:
    """Largest K for which no int8 values can overflow the int32 accumulator: a column sums
    2 ceil(K/4) products of at most max|a - zp| * 128, e.g. 262142 for int8 activations
    with zero point 0 (twice gemm_int8's: half the products)."""
    lo, hi = _ACT_RANGE[act]
    kept = INT32_MAX // (max(abs(lo - a_zero_point), abs(hi - a_zero_point)) * _W_ABS_MAX)
    return 4 * (kept // 2)


def _check_a(a) -> tuple[np.ndarray, str]:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"a: expected a numpy.ndarray, got {type(a).__name__}")
    act = ACT_FORMATS.get(a.dtype)
    if act is None:
        raise TypeError(f"a: dtype must be int8, uint8 or float32, got {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"a: expected a 2-D [M, K] matrix, got shape {a.shape}")
    # Rows may be any whole number of elements apart (the kernels copy them into packed tiles,
    # so no alignment is needed); K must be unit-stride. Anything else is copied once.
    m, k = a.shape
    size = a.itemsize
    if (k > 1 and a.strides[1] != size) or (m > 1 and (a.strides[0] < k * size
                                                       or a.strides[0] % size)):
        a = np.ascontiguousarray(a)
    if act == "f32" and a.size and not np.isfinite(a).all():
        raise ValueError("a: contains NaN or infinity")
    return a, act


def _check_weights(w24, k: int, act: str) -> PackedSparse24Weights:
    if not isinstance(w24, PackedSparse24Weights):
        raise TypeError(f"w24: expected PackedSparse24Weights from pack_weights(w, "
                        f"'sparse24'), got {type(w24).__name__}")
    if w24.k != k:
        raise ValueError(f"a, w24: inner dimensions differ: a has K={k}, w24 has K={w24.k}")
    want = _F32 if act == "f32" else np.dtype(np.int8)
    if w24.dtype != want:
        raise TypeError(f"w24: {'float32' if act == 'f32' else 'int8 / uint8'} activations "
                        f"need {want} weights, got {w24.dtype} (pack w.astype(np.{want}))")
    return w24


def _check_zero_point(a_zero_point, act: str) -> int:
    if act == "f32":
        if not (isinstance(a_zero_point, (int, np.integer)) and a_zero_point == 0):
            raise ValueError(f"a_zero_point: only for int8 / uint8 activations, got "
                             f"{a_zero_point!r}")
        return 0
    lo, hi = _ACT_RANGE[act]
    if (not isinstance(a_zero_point, (int, np.integer)) or isinstance(a_zero_point, bool)
            or not lo <= a_zero_point <= hi):
        raise ValueError(f"a_zero_point: must be an integer in [{lo}, {hi}] for {act} "
                         f"activations, got {a_zero_point!r}")
    return int(a_zero_point)


def _check_overflow(a: np.ndarray, act: str, w24: PackedSparse24Weights, zp: int) -> None:
    k = a.shape[1]
    if k <= max_safe_k(act, zp) or a.size == 0:
        return
    # Past the static bound, prove it from the data: |acc| <= max|a - zp| * max_j sum_k |w|.
    amax = max(abs(int(a.min()) - zp), abs(int(a.max()) - zp))
    bound = amax * w24.col_abs_sum_max
    if bound > INT32_MAX:
        raise ValueError(
            f"a, w24: K={k} with these values can overflow the int32 accumulator "
            f"(|result| may reach {bound} > 2^31 - 1); split K into chunks of at most "
            f"{max_safe_k(act, zp)} and add the partial results in int64")


def _check_out_aligned(out, m: int, n: int, dtype: np.dtype) -> np.ndarray:
    out = _check_out(out, m, n, dtype)
    if out.size and not out.flags.aligned:
        raise ValueError(f"out: data must be aligned to its {out.itemsize}-byte elements")
    return out


_NO_EPILOGUE = prepare(None, 0, 0)


def gemm_sparse24(a: np.ndarray, w24: PackedSparse24Weights, *, a_zero_point: int = 0,
                  epilogue: Requantize | Dequantize | None = None,
                  out: np.ndarray | None = None, isa: str | None = None) -> np.ndarray:
    """Activations x 2:4 sparse weights: C = epilogue((A - a_zero_point) @ W) with W given
    by its kept values and 2-bit indices.

    out[i, j] = sum over groups g, slots t of (a[i, 4g + idx[g,t,j]] - zp) v[g, t, j]: half
    the multiply-adds of the dense product, the activations gathered by the indices inside
    the kernels (vpshufb + vpdpbusd for int8, vpermps + FMA for float32). Mishra et al.,
    "Accelerating Sparse Deep Neural Networks", arXiv:2104.08378 (the 2:4 format).

    Args:
        a: activations [M, K]: int8 or uint8 with int8 weights (exact int32 result), or
            float32 with float32 weights (float32 sums, within ``ref.sparse24_tolerance`` of
            the float64 reference; finite). Row-strided is read in place; other layouts are
            copied.
        w24: ``pack_weights(w, "sparse24")`` of a 2:4 [K, N] matrix (``layout="nk"`` for
            [N, K]); ``prune_24`` makes one.
        a_zero_point: int8 / uint8 only: subtracted from every activation.
        epilogue: int8 / uint8 only: None (int32), ``Requantize`` (int8 / uint8) or
            ``Dequantize`` (float32), applied to the int32 result exactly as gemm_int8's:
            fused into the C variants' store; the Numba and ref variants apply
            ``ref.apply_epilogue`` to their int32 result.
        out: optional output array (C-contiguous, or a row slice of one).
        isa: one variant ("avx512_vnni" int8 only, "avx512", "avx2", "portable", "numba",
            "ref"); default: the best usable for the activations.

    Raises ValueError if K is large enough that int32 could overflow for these values.

    Example:
        >>> w = np.zeros((8, 3), np.int8); w[1] = 2; w[6] = -1
        >>> gemm_sparse24(np.arange(8, dtype=np.int8)[None], pack_weights(w, "sparse24"))
        array([[-4, -4, -4]], dtype=int32)
    """
    a, act = _check_a(a)
    m, k = a.shape
    w24 = _check_weights(w24, k, act)
    zp = _check_zero_point(a_zero_point, act)
    if act == "f32":
        if epilogue is not None:
            raise ValueError("epilogue: only for int8 / uint8 activations (float32 results "
                             "need none)")
        ep = _NO_EPILOGUE
        out = _check_out_aligned(out, m, w24.n, _F32)
    else:
        _check_overflow(a, act, w24, zp)
        ep = _NO_EPILOGUE if epilogue is None else prepare(epilogue, m, w24.n)
        out = _check_out_aligned(out, m, w24.n, ep.out_dtype)
    kernel = REGISTRY.lookup(OP, act, SPARSE24_PANELS.name, isa)
    if m:
        kernel.fn(a, w24, zp, ep, out)
    return out


# --- implementations -------------------------------------------------------------------

# Each implementation takes the prepared epilogue (int32 out for float32 activations) and
# writes ``out``; the ref and Numba ones apply the epilogue to their sums in NumPy.

def _ref_impl(a, w24: PackedSparse24Weights, zp: int, ep: Prepared, out) -> None:
    values, index = w24.kept()
    out[...] = ref.apply_epilogue(ref.gemm_sparse24(a, values, index, zp), ep)


def _numba_impl(a, w24: PackedSparse24Weights, zp: int, ep: Prepared, out) -> None:
    from . import numba_sparse24  # imported on first use: compiling costs seconds

    if ep.kind == 0:
        numba_sparse24.gemm_sparse24_panels(a, w24, zp, out)
    else:
        acc = np.empty(out.shape, np.int32)
        numba_sparse24.gemm_sparse24_panels(a, w24, zp, acc)
        out[...] = ref.apply_epilogue(acc, ep)


_C_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _c_weights(w24: PackedSparse24Weights):
    """The lb_s24_weights struct of w24, built once per packed matrix (w24 owns the arrays)."""
    cw = _C_WEIGHTS.get(w24)
    if cw is None:
        cw = native.ffi.new("lb_s24_weights *")
        cw.k, cw.n, cw.f32 = w24.k, w24.n, int(w24.dtype == _F32)
        cw.values = _ptr(w24.values, "char *")
        cw.meta = _ptr(w24.meta, "uint32_t *")
        cw.col_sum = _ptr(w24.col_sum, "int32_t *")
        _C_WEIGHTS[w24] = cw
    return cw


def _c_impl(isa_id: int):
    def run(a, w24: PackedSparse24Weights, zp: int, ep: Prepared, out) -> None:
        m, k = a.shape
        lib = native.lib
        if a.dtype == _F32:
            rc = lib.lb_gemm_sparse24_f32(isa_id, m, _ptr(a, "float *"), _row_pitch(a, k),
                                          _c_weights(w24), _ptr(out, "float *"),
                                          _row_pitch(out, w24.n))
        else:
            rc = lib.lb_gemm_sparse24_s8(isa_id, m, _ptr(a, "uint8_t *"), _row_pitch(a, k),
                                         int(a.dtype == np.int8), zp, _c_weights(w24),
                                         c_epilogue(ep), _ptr(out, "char *"),
                                         _row_pitch(out, w24.n))
        _check_rc(OP, rc)
    return run


def sparse24_cost(m: int, n: int, k: int, *, a_bits: int, value_bits: int,
                  out_bits: int) -> tuple[int, int]:
    """(ops, bytes) of the 2:4 GEMM. ops = 2 M N kept with kept = 2 ceil(K/4) the values it
    multiplies per column: the executed multiply-adds, half the dense-equivalent 2 M N K
    (so GOP/s compare with the dense kernels' at half the work). bytes = activations,
    kept values, their 2-bit indices and the output."""
    kept = 2 * -(-k // 4)
    _, moved = gemm_cost(m, n, k, a_bits=a_bits, w_bits=0, out_bits=out_bits)
    weights = -(-n * kept * (value_bits + SPARSE24_PANELS.index_bits) // 8)
    return 2 * m * n * kept, moved + weights


@functools.cache
def _numba_supported() -> bool:
    return importlib.util.find_spec("numba") is not None


def c_supported(isa: str, act: str) -> bool:
    """This CPU can run the C variant ``isa`` for activations ``act`` ("avx2" float32 also
    needs FMA; there is no float32 "avx512_vnni")."""
    return native.lib is not None and bool(native.lib.lb_gemm_sparse24_supported(
        native.C_ISAS.index(isa), int(act == "f32")))


C_VARIANTS = {"s8": native.C_ISAS, "u8": native.C_ISAS,
              "f32": ("portable", "avx2", "avx512")}


def _register() -> None:
    for act, isas in C_VARIANTS.items():
        bits = 32 if act == "f32" else 8
        cost = functools.partial(sparse24_cost, a_bits=bits, value_bits=bits, out_bits=32)

        def key(isa: str, act=act) -> KernelKey:
            return KernelKey(OP, act, SPARSE24_PANELS.name, isa)
        REGISTRY.register(Kernel(key("ref"), _ref_impl, cost, lambda: True))
        REGISTRY.register(Kernel(key("numba"), _numba_impl, cost, _numba_supported))
        for isa in isas:
            REGISTRY.register(Kernel(key(isa), _c_impl(native.C_ISAS.index(isa)), cost,
                                     lambda isa=isa, act=act: c_supported(isa, act)))


_register()
