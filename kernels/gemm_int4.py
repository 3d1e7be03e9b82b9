"""``gemm_w4a16`` and ``gemm_w4a8``: activations x grouped 4-bit weights (ggml / GPTQ style).

    W[k, j] = (n[k, j] - z[g, j]) * scale[g, j],  g = k // group_size   (formats.INT4_PANELS)
    gemm_w4a16:  out = x @ W                                   float32, dequantized on the fly
    gemm_w4a8:   out[i, j] = a_scale[i] * sum_g scale[g, j] * acc_g[i, j],
                 acc_g[i, j] = sum over k in group g of a[i, k] * (n[k, j] - z[g, j])  (int32)

Every argument is checked here, before any C call; the C code assumes it was.
"""
from __future__ import annotations

import functools
import importlib.util
import weakref

import numpy as np

from lowbit.costs import gemm_cost

from . import native, ref
from .formats import INT4_PANELS, UINT4_PANELS, PackedInt4Weights
from .gemm_binary import _check_scale
from .gemm_int8 import _check_out, _ptr, _row_pitch
from .registry import REGISTRY, Kernel, KernelKey

OP_W4A16 = "gemm_w4a16"
OP_W4A8 = "gemm_w4a8"
W4_FORMATS = (INT4_PANELS.name, UINT4_PANELS.name)
# Activation formats: float32, and bfloat16 given as its uint16 bit patterns (widened exactly
# to float32 before the kernel, so both give the same result for the same values).
W4A16_ACTS = {np.dtype(np.float32): "f32", np.dtype(np.uint16): "bf16"}
W4A8_ACT = "s8"
_F32 = np.dtype(np.float32)


def _check_weights(w4, k: int, arg: str) -> PackedInt4Weights:
    if not isinstance(w4, PackedInt4Weights):
        raise TypeError(f"w4: expected PackedInt4Weights from pack_weights(w, 'int4' or "
                        f"'uint4', group_size=...), got {type(w4).__name__}")
    if w4.k != k:
        raise ValueError(f"{arg}, w4: inner dimensions differ: {arg} has K={k}, w4 has "
                         f"K={w4.k}")
    return w4


def _in_place_ok(arr: np.ndarray) -> bool:
    """Rows may be any whole number of elements apart (read in place); K must be unit-stride
    and the data aligned to its elements."""
    m, k = arr.shape
    size = arr.itemsize
    return not ((k > 1 and arr.strides[1] != size)
                or (m > 1 and (arr.strides[0] < k * size or arr.strides[0] % size))
                or arr.ctypes.data % size)


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bit patterns (uint16) to float32, exactly: the bits become the high
    half of the float32. Subnormals (exponent 0) become zero of their sign, as the bfloat16
    dot-product instruction reads them, so every gemm_w4a16 variant sees the same values."""
    wide = bits.astype(np.uint32)
    wide = np.where(wide & 0x7F80, wide, wide & 0x8000) << 16
    return wide.astype(np.uint32).view(np.float32)


def _check_x(x) -> tuple[np.ndarray, str]:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x: expected a numpy.ndarray, got {type(x).__name__}")
    act = W4A16_ACTS.get(x.dtype)
    if act is None:
        raise TypeError(f"x: dtype must be float32, or uint16 holding bfloat16 bit patterns, "
                        f"got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"x: expected a 2-D [M, K] matrix, got shape {x.shape}")
    if not _in_place_ok(x):
        x = np.ascontiguousarray(x)
    if x.size:
        # bfloat16: NaN and infinity have the exponent all ones. One temporary and a max: half
        # the time of a comparison array (8 x 4096: 4 against 8 us, next to about 310 us for
        # the 8 x 4096 x 4096 GEMV on two threads)
        finite = (np.isfinite(x).all() if act == "f32"
                  else int(np.bitwise_and(x, 0x7F80).max()) < 0x7F80)
        if not finite:
            raise ValueError("x: contains NaN or infinity")
    return x, act


def _as_f32(x: np.ndarray) -> np.ndarray:
    """float32 activations for the Python tiers (bfloat16 widened by ``bf16_to_f32``)."""
    return bf16_to_f32(x) if x.dtype == np.uint16 else x


def _check_out_f32(out, m: int, n: int) -> np.ndarray:
    out = _check_out(out, m, n, _F32)
    if out.size and out.ctypes.data % out.itemsize:
        raise ValueError(f"out: data must be aligned to its {out.itemsize}-byte elements")
    return out


def gemm_w4a16(x: np.ndarray, w4: PackedInt4Weights, *, out: np.ndarray | None = None,
               isa: str | None = None) -> np.ndarray:
    """Weight-only int4 GEMM: float32 ``x @ W``, W dequantized on the fly (LLM decode).

    out[i, j] = sum_k x[i, k] * (n[k, j] - z) * scale[k // group_size, j], summed in float32
    (within ``ref.w4a16_tolerance`` of the float64 reference ``ref.gemm_w4a16``). With
    M <= 8 every weight byte is read and decoded once per call for all rows (GEMV path).
    Frantar et al., "GPTQ", ICLR 2023 (the format); ggml's Q4_0 / Q4_1 (the layout idea).

    Args:
        x: activations [M, K]: float32, or uint16 holding bfloat16 bit patterns (values as
            ``bf16_to_f32`` widens them: exact, subnormals count as zero). Finite.
            Row-strided activations are read in place; other layouts are copied. With
            bfloat16 the "avx512_vnni" variant (vdpbf16ps: two products per float32 lane,
            AVX512_BF16) is chosen where the CPU has it; float32 has no such variant.
        w4: ``pack_weights(w, "int4" | "uint4", group_size=...)`` with K rows.
        out: optional float32 [M, N] array (C-contiguous or a row slice of one).
        isa: run one variant ("avx512_vnni" for bfloat16 only, "avx512", "avx2",
            "portable", "numba", "ref"); default: the best usable for the activations
            (``REGISTRY.lookup("gemm_w4a16", "f32" | "bf16", "int4" | "uint4")``).

    Example:
        >>> w4 = pack_weights(np.full((64, 8), 7.0), "int4", group_size=32)  # scale 1, v 7
        >>> print(gemm_w4a16(np.ones((1, 64), np.float32), w4)[0, 0])
        448.0
    """
    x, act = _check_x(x)
    m, k = x.shape
    w4 = _check_weights(w4, k, "x")
    out = _check_out_f32(out, m, w4.n)
    kernel = REGISTRY.lookup(OP_W4A16, act, w4.fmt.name, isa)
    if m:
        kernel.fn(x, w4, out)
    return out


def _check_a(a) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"a: expected a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != np.int8:
        raise TypeError(f"a: dtype must be int8, got {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"a: expected a 2-D [M, K] matrix, got shape {a.shape}")
    return a if _in_place_ok(a) else np.ascontiguousarray(a)


def gemm_w4a8(a: np.ndarray, w4: PackedInt4Weights, *, a_scale=None,
              out: np.ndarray | None = None, isa: str | None = None) -> np.ndarray:
    """int8 activations x int4 weights: exact int32 sums per group, scaled and summed in float.

    acc_g[i, j] = sum over k in group g of a[i, k] * (n[k, j] - z[g, j]) (exact, int32);
    out[i, j] = a_scale[i] * sum_g scale[g, j] * acc_g[i, j] in float32, within
    ``ref.w4a8_tolerance`` of ``ref.w4a8_from_acc(ref.w4a8_group_acc(...))``. The kernels
    unpack nibbles to bytes in registers and multiply-add them with VNNI (vpdpbusd) where
    available. Dettmers et al., "LLM.int8()", and ggml's Q4_0 x Q8_0 dot product.

    Args:
        a: int8 activations [M, K] (row-strided is read in place; other layouts copied).
        w4: ``pack_weights(w, "int4" | "uint4", group_size=...)`` with K rows.
        a_scale: None (1), a scalar or [M] per-row activation scales; finite in float32.
        out: optional float32 [M, N] array (C-contiguous or a row slice of one).
        isa: run one variant ("avx512_vnni", "avx512", "avx2", "portable", "numba", "ref");
            default: the best usable (``dispatch_info()["gemm_w4a8"]``).

    Example:
        >>> w4 = pack_weights(np.full((32, 4), 2, np.int8), "int4", group_size=32,
        ...                   scales=np.full((1, 4), 0.5, np.float32))
        >>> print(gemm_w4a8(np.ones((1, 32), np.int8), w4, a_scale=0.1)[0, 0])
        3.2
    """
    a = _check_a(a)
    m, k = a.shape
    w4 = _check_weights(w4, k, "a")
    a_scale = _check_scale("a_scale", a_scale, m, "M, per row")
    out = _check_out_f32(out, m, w4.n)
    kernel = REGISTRY.lookup(OP_W4A8, W4A8_ACT, w4.fmt.name, isa)
    if m:
        kernel.fn(a, w4, a_scale, out)
    return out


# --- implementations -------------------------------------------------------------------

def _ref_w4a16(x, w4: PackedInt4Weights, out) -> None:
    out[...] = ref.gemm_w4a16(_as_f32(x), w4.dequantize())


def _ref_w4a8(a, w4: PackedInt4Weights, a_scale, out) -> None:
    out[...] = ref.gemm_w4a8(a, w4.values(), w4.group_scales(), w4.group_size, a_scale)


def _numba_w4a16(x, w4: PackedInt4Weights, out) -> None:
    from . import numba_int4  # imported on first use: compiling costs seconds

    numba_int4.gemm_w4a16_panels(_as_f32(x), w4, out)


def _numba_w4a8(a, w4: PackedInt4Weights, a_scale, out) -> None:
    from . import numba_int4

    numba_int4.gemm_w4a8_panels(a, w4, a_scale, out)


_C_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _c_weights(w4: PackedInt4Weights):
    """The lb_w4_weights struct of w4, built once per packed matrix (w4 owns the arrays)."""
    cw = _C_WEIGHTS.get(w4)
    if cw is None:
        cw = native.ffi.new("lb_w4_weights *")
        cw.k, cw.n, cw.group_size = w4.k, w4.n, w4.group_size
        cw.data = _ptr(w4.data, "uint8_t *")
        cw.scales = _ptr(w4.scales, "char *")
        cw.scale_f16 = int(w4.scales.dtype == np.float16)
        cw.zeros = _ptr(w4.zeros, "uint8_t *")
        _C_WEIGHTS[w4] = cw
    return cw


_LB_ENOMEM = -2  # csrc/lowbit.h


def _check_rc(op: str, rc: int) -> None:
    if rc == _LB_ENOMEM:
        raise MemoryError(f"{op}: out of memory")
    if rc:
        raise RuntimeError(f"{op}: the C kernel rejected its arguments (code {rc})")


def _c_w4a16(isa_id: int):
    def run(x, w4: PackedInt4Weights, out) -> None:
        m, k = x.shape
        _check_rc(OP_W4A16, native.lib.lb_gemm_w4a16(
            isa_id, m, _ptr(x, "char *"), _row_pitch(x, k), int(x.dtype == np.uint16),
            _c_weights(w4), _ptr(out, "float *"), _row_pitch(out, w4.n)))
    return run


def _c_w4a8(isa_id: int):
    def run(a, w4: PackedInt4Weights, a_scale, out) -> None:
        m, k = a.shape
        _check_rc(OP_W4A8, native.lib.lb_gemm_w4a8(
            isa_id, m, _ptr(a, "int8_t *"), _row_pitch(a, k), _ptr(a_scale, "float *"),
            _c_weights(w4), _ptr(out, "float *"), _row_pitch(out, w4.n)))
    return run


DEFAULT_COST_GROUP = 32  # the cost model's group size and float16 scales (pack_weights' default)


def w4_cost(m: int, n: int, k: int, *, a_bits: int, zero_point: bool = False,
            group_size: int = DEFAULT_COST_GROUP, scale_bits: int = 16) -> tuple[int, int]:
    """(ops, bytes): 2 M N K ops; activations, 4-bit weights, float32 output, plus one scale
    (and a uint8 zero point for uint4) per group of K per column."""
    ops, moved = gemm_cost(m, n, k, a_bits=a_bits, w_bits=4, out_bits=32)
    per_group_bits = scale_bits + (8 if zero_point else 0)
    return ops, moved + -(-k // group_size) * n * per_group_bits // 8


@functools.cache
def _numba_supported() -> bool:
    return importlib.util.find_spec("numba") is not None


def c_supported(op: str, isa: str) -> bool:
    """This CPU can run ``op``'s C variant ``isa`` ("avx2" also needs FMA and F16C;
    gemm_w4a16's "avx512_vnni" the avx512 features and AVX512_BF16)."""
    if native.lib is None:
        return False
    fn = native.lib.lb_gemm_w4a16_supported if op == OP_W4A16 else native.lib.lb_gemm_w4a8_supported
    return bool(fn(native.C_ISAS.index(isa)))


# Per activation format. gemm_w4a16's "avx512_vnni" is its dot-product variant, vdpbf16ps
# (AVX512_BF16): bfloat16 activations only.
C_VARIANTS = {(OP_W4A16, "f32"): ("portable", "avx2", "avx512"),
              (OP_W4A16, "bf16"): ("portable", "avx2", "avx512", "avx512_vnni"),
              (OP_W4A8, W4A8_ACT): ("portable", "avx2", "avx512", "avx512_vnni")}


def _register() -> None:
    impls = {OP_W4A16: (_ref_w4a16, _numba_w4a16, _c_w4a16, ("f32", "bf16"), 32),
             OP_W4A8: (_ref_w4a8, _numba_w4a8, _c_w4a8, (W4A8_ACT,), 8)}
    for op, (ref_fn, numba_fn, c_fn, acts, a_bits) in impls.items():
        for act in acts:
            for fmt in W4_FORMATS:
                bits = 16 if act == "bf16" else a_bits
                cost = functools.partial(w4_cost, a_bits=bits, zero_point=fmt == "uint4")

                def key(isa: str, op=op, act=act, fmt=fmt) -> KernelKey:
                    return KernelKey(op, act, fmt, isa)
                REGISTRY.register(Kernel(key("ref"), ref_fn, cost, lambda: True))
                REGISTRY.register(Kernel(key("numba"), numba_fn, cost, _numba_supported))
                for isa in C_VARIANTS[(op, act)]:
                    REGISTRY.register(Kernel(key(isa), c_fn(native.C_ISAS.index(isa)), cost,
                                             lambda op=op, isa=isa: c_supported(op, isa)))


_register()
