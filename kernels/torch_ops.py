"""lowbit's kernels as torch custom ops, namespace ``lowbit``, each with a fake implementation.

    torch.ops.lowbit.gemm_int8(a, w, w_meta, w_format, ...)          lowbit.kernels.gemm_int8
    torch.ops.lowbit.gemm_sparse24(a, w, w_meta, w_format, ...)      lowbit.kernels.gemm_sparse24
    torch.ops.lowbit.gemm_w4a16(x, w, w_meta, w_format)              lowbit.kernels.gemm_w4a16
    torch.ops.lowbit.gemm_w4a8(a, w, w_meta, w_format, a_scale)      lowbit.kernels.gemm_w4a8
    torch.ops.lowbit.gemm_binary(a_bits, w, w_meta, w_format, ...)   lowbit.kernels.gemm_binary
    torch.ops.lowbit.pack_binary_activations(x)                      ... pack_binary_activations
    torch.ops.lowbit.quantize_dynamic(x) -> (q, scale)               lowbit.kernels.quantize
    torch.ops.lowbit.spmm_csr(w, w_meta, w_format, x)                lowbit.kernels.spmm_csr
    torch.ops.lowbit.quantize_static(x, scale, zero_point, qrange)   lowbit.kernels.quantize
    torch.ops.lowbit.xnor_scales(x)                                  lowbit.kernels.quantize

Packed weights cross the op boundary as ``w: Tensor[]`` (the record's arrays, in the order
its ``WeightCodec`` declares), ``w_meta: int[]`` (its integer fields) and ``w_format: str``
(``formats.FORMATS`` name); ``packed_to_tensors`` produces the three from a Packed* record,
zero-copy. uint64 arrays (binary bits) and uint32 ones (2:4 metadata) cross as int64 / int32
tensors of the same bits, since torch's unsigned types are not full dtypes. Inside an op ``tensors_to_packed`` rebuilds the record as NumPy
views of the tensors' memory (no copy), validated once and cached per storage and version;
a tensor that is not 64-byte aligned (the kernels need ``formats.ALIGN``) is copied into an
aligned buffer once and that copy cached. Fake implementations check ranks, dtypes and K
and give the output's shape and dtype, so shapes propagate under FakeTensorMode / export.

A new op is one ``OpDef`` in ``OPS``; a new weight format one ``WeightCodec`` in ``CODECS``.
The ops run on CPU tensors and are inference-only: a backward pass through one raises.

Example:
    >>> import numpy as np, torch
    >>> from lowbit.kernels import pack_weights
    >>> from lowbit.kernels.torch_ops import packed_to_tensors
    >>> w, meta, fmt = packed_to_tensors(pack_weights(np.ones((64, 8), np.int8)))
    >>> torch.ops.lowbit.gemm_int8(torch.ones(2, 64, dtype=torch.int8), w, meta, fmt)[0, :3]
    tensor([64, 64, 64], dtype=torch.int32)
"""
from __future__ import annotations

import ctypes
import functools
import weakref
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import formats, quantize
from .epilogue import Dequantize, Requantize
from .format_csr import PackedCsrWeights
from .format_sparse24 import PackedSparse24Weights
from .formats import (ALIGN, FORMATS, PackedBinaryWeights, PackedInt4Weights, PackedWeights,
                      aligned_empty, binary_words)
from .gemm_binary import gemm_binary as _gemm_binary
from .gemm_int4 import gemm_w4a8 as _gemm_w4a8
from .gemm_int4 import gemm_w4a16 as _gemm_w4a16
from .gemm_int8 import gemm_int8 as _gemm_int8
from .gemm_sparse24 import gemm_sparse24 as _gemm_sparse24
from .spmm_csr import spmm_csr as _spmm_csr

NAMESPACE = "lowbit"

# numpy dtype of an array -> torch dtype of the tensor carrying its bytes (same item size)
_TORCH_CARRIER = {np.dtype(np.int8): torch.int8, np.dtype(np.uint8): torch.uint8,
                  np.dtype(np.int32): torch.int32, np.dtype(np.int64): torch.int64,
                  np.dtype(np.uint64): torch.int64, np.dtype(np.uint32): torch.int32,
                  np.dtype(np.float16): torch.float16,
                  np.dtype(np.float32): torch.float32}
_NUMPY_OF = {torch.int8: np.int8, torch.uint8: np.uint8, torch.int32: np.int32,
             torch.int64: np.int64, torch.float16: np.float16, torch.float32: np.float32}


# --- packed weights <-> tensors ------------------------------------------------------------

@dataclass(frozen=True)
class WeightCodec:
    """How one Packed* record crosses the op boundary: its array fields in order, each with
    the numpy dtypes it may hold, its integer fields (``w_meta``), and which arrays the
    kernels need 64-byte aligned (the rest need only be contiguous)."""

    packed_type: type
    arrays: tuple[tuple[str, tuple[np.dtype, ...]], ...]
    meta: tuple[str, ...]
    aligned: tuple[str, ...]

    carriers: tuple[frozenset, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:  # the torch dtypes each array may cross as
        object.__setattr__(self, "carriers", tuple(
            frozenset(_TORCH_CARRIER[d] for d in dtypes) for _, dtypes in self.arrays))

    def describe(self) -> str:
        arrays = ", ".join(name for name, _ in self.arrays)
        return f"w = [{arrays}], w_meta = [{', '.join(self.meta)}]"


_I8, _U8, _I32, _I64, _U64, _U32, _F32 = (
    np.dtype(t) for t in (np.int8, np.uint8, np.int32, np.int64, np.uint64, np.uint32, np.float32))
_SCALES = (np.dtype(np.float16), np.dtype(np.float32))

CODECS: dict[str, WeightCodec] = {
    "int8": WeightCodec(PackedWeights, (("data", (_I8,)), ("col_sum", (_I32,))),
                        ("k", "n", "col_abs_sum_max"), ("data",)),
    "binary": WeightCodec(PackedBinaryWeights, (("data", (_U64,)),), ("k", "n"), ("data",)),
    "int4": WeightCodec(PackedInt4Weights, (("data", (_U8,)), ("scales", _SCALES)),
                        ("k", "n", "group_size"), ("data", "scales")),
    "uint4": WeightCodec(PackedInt4Weights,
                         (("data", (_U8,)), ("scales", _SCALES), ("zeros", (_U8,))),
                         ("k", "n", "group_size"), ("data", "scales", "zeros")),
    "csr": WeightCodec(PackedCsrWeights,
                       (("row_ptr", (_I64,)), ("col_idx", (_I32,)), ("values", (_I8, _F32))),
                       ("n_out", "k"), ()),
    "sparse24": WeightCodec(PackedSparse24Weights, (("values", (_I8,)), ("meta", (_U32,))),
                            ("k", "n"), ("values", "meta")),
}


def packed_to_tensors(packed) -> tuple[list[torch.Tensor], list[int], str]:
    """``(w, w_meta, w_format)`` for the ops from a Packed* record, sharing its memory.

    Example:
        >>> w, meta, fmt = packed_to_tensors(pack_weights(np.ones((64, 8), np.int8)))
        >>> fmt, meta
        ('int8', [64, 8, 64])
    """
    fmt = getattr(getattr(packed, "fmt", None), "name", None)
    codec = CODECS.get(fmt)
    if codec is None or not isinstance(packed, codec.packed_type):
        raise TypeError(f"packed: expected a Packed* record from pack_weights with a format "
                        f"in {', '.join(CODECS)}, got {type(packed).__name__}")
    tensors = []
    for name, _ in codec.arrays:
        arr = getattr(packed, name)
        tensors.append(torch.from_numpy(arr.view(_NUMPY_OF[_TORCH_CARRIER[arr.dtype]])))
    return tensors, [int(getattr(packed, name)) for name in codec.meta], fmt


def _codec(w_format: str, accepted: tuple[str, ...]) -> WeightCodec:
    if w_format not in accepted:
        known = "" if w_format in CODECS else f" (known formats: {', '.join(CODECS)})"
        takes = " or ".join(map(repr, accepted))
        raise ValueError(f"w_format: this op takes weights packed as {takes}, got "
                         f"{w_format!r}{known}")
    return CODECS[w_format]


def _check_weight_args(w, w_meta, w_format: str, accepted: tuple[str, ...]) -> WeightCodec:
    """Checks shared by the real and fake implementations: counts, devices and dtypes."""
    codec = _codec(w_format, accepted)
    if len(w) != len(codec.arrays) or len(w_meta) != len(codec.meta):
        raise ValueError(f"w, w_meta: format {w_format!r} crosses as {codec.describe()}; got "
                         f"{len(w)} tensors and {len(w_meta)} integers (use packed_to_tensors)")
    for i, (t, (name, dtypes)) in enumerate(zip(w, codec.arrays)):
        if t.device.type not in ("cpu", "meta"):
            raise ValueError(f"w: w[{i}] ({name}) is on {t.device}; lowbit's kernels run on CPU")
        if t.dtype not in codec.carriers[i]:
            want = " or ".join(sorted(map(str, codec.carriers[i])))
            raise TypeError(f"w: w[{i}] ({name}) must have dtype {want} for format "
                            f"{w_format!r}, got {t.dtype}")
    return codec


def _numpy_view(t: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """A NumPy view of a contiguous CPU tensor's memory that holds no reference to it (so a
    cache may keep it without keeping the tensor alive; the cache drops it with the storage)."""
    nbytes = t.numel() * t.element_size()
    buf = (ctypes.c_char * nbytes).from_address(t.data_ptr())
    return np.frombuffer(buf, dtype=dtype).reshape(tuple(t.shape))


def _as_array(t: torch.Tensor, name: str, dtypes: tuple[np.dtype, ...],
              aligned: bool) -> np.ndarray:
    if not t.is_contiguous():
        raise ValueError(f"w: {name} must be a contiguous tensor (use packed_to_tensors)")
    dtype = next(d for d in dtypes if _TORCH_CARRIER[d] == t.dtype)
    if not aligned or t.data_ptr() % ALIGN == 0:
        return _numpy_view(t, dtype)
    # Misaligned (e.g. a view into a larger buffer): one aligned copy, cached with the record.
    out = aligned_empty(tuple(t.shape), dtype)
    out[...] = t.detach().numpy().view(dtype)
    return out


def _signature(t: torch.Tensor) -> tuple:
    return (t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype, t._version)


class _PackedCache:
    """Packed* records rebuilt from tensors, kept per storage of w[0] (weakly) and looked up
    by w[0]'s offset; valid while every tensor's storage, offset, shape and version match.
    Inference tensors (made under ``torch.inference_mode``) track no version: their records
    are rebuilt on every call."""

    def __init__(self) -> None:
        self._by_storage: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self, w, w_meta, w_format: str, build: Callable):
        if any(t.is_inference() for t in w):
            # inference tensors have no version counter, so a cached record could go stale
            return build()
        storages = [t.untyped_storage() for t in w]
        slot = self._by_storage.setdefault(storages[0], {})
        key = (w[0].storage_offset(), w_format)
        sig = (tuple(w_meta), tuple(_signature(t) for t in w))
        hit = slot.get(key)
        if hit is not None:
            refs, hit_sig, packed = hit
            if hit_sig == sig and all(r() is s for r, s in zip(refs, storages)):
                return packed
        packed = build()
        slot[key] = (tuple(weakref.ref(s) for s in storages), sig, packed)
        return packed


_CACHE = _PackedCache()


def tensors_to_packed(w: list[torch.Tensor], w_meta: list[int], w_format: str):
    """The Packed* record ``packed_to_tensors`` took apart: NumPy views of the tensors (or
    aligned copies of misaligned ones), validated by the record's constructor; cached."""
    _check_weight_args(w, w_meta, w_format, tuple(CODECS))
    return _packed(w, w_meta, w_format)


def _packed(w, w_meta, w_format: str):
    """``tensors_to_packed`` after ``_check_weight_args`` passed."""
    codec = CODECS[w_format]

    def build():
        fields = {name: _as_array(t, name, dtypes, name in codec.aligned)
                  for t, (name, dtypes) in zip(w, codec.arrays)}
        fields.update(zip(codec.meta, (int(v) for v in w_meta)))
        return codec.packed_type(fmt=FORMATS[w_format], **fields)

    return _CACHE.get(w, w_meta, w_format, build)


# --- activations and outputs -------------------------------------------------------------

def _check_matrix(t, name: str, dtypes: tuple[torch.dtype, ...], k: int | None = None,
                  k_what: str = "K") -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.device.type not in ("cpu", "meta"):
        raise ValueError(f"{name}: is on {t.device}; lowbit's kernels run on CPU")
    if t.dtype not in dtypes:
        raise TypeError(f"{name}: dtype must be {' or '.join(map(str, dtypes))}, got {t.dtype}")
    if t.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D [M, {k_what}] matrix, got shape {tuple(t.shape)}")
    if k is not None and t.shape[1] != k:
        raise ValueError(f"{name}, w_meta: {name} has {t.shape[1]} columns, the weights "
                         f"need {k_what}={k}")


def _np(t: torch.Tensor) -> np.ndarray:
    """Zero-copy NumPy view of a CPU tensor (bfloat16 as its uint16 bit patterns)."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def _np_opt(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else _np(t)


def _meta_kn(w_meta) -> tuple[int, int]:
    return int(w_meta[0]), int(w_meta[1])


# --- gemm_int8 ------------------------------------------------------------------------------

_INT8_ACTS = (torch.int8, torch.uint8)
_REQUANT_OUT = {torch.int8: "int8", torch.uint8: "uint8"}
EPILOGUES = ("none", "dequantize", "requantize")


def _int8_out_dtype(epilogue: str, out_dtype) -> torch.dtype:
    if epilogue == "none":
        return torch.int32
    if epilogue == "dequantize":
        return torch.float32
    if epilogue == "requantize":
        if out_dtype not in _REQUANT_OUT:
            raise ValueError(f"out_dtype: requantize writes torch.int8 or torch.uint8, got "
                             f"{out_dtype}")
        return out_dtype
    raise ValueError(f"epilogue: must be one of {', '.join(map(repr, EPILOGUES))}, got "
                     f"{epilogue!r}")


# gemm_sparse24 (int8 2:4 weights) takes gemm_int8's arguments and epilogues: one pair of
# implementations serves both, keyed by the weight format. The NumPy entry points, by weight
# format (``LowbitLinear`` / ``LowbitConv2d`` call them directly in eager mode).
INT8_KERNELS = {"int8": _gemm_int8, "sparse24": _gemm_sparse24}


def _gemm_int8_out(a, w, w_meta, w_format, epilogue, out_dtype,
                   op_format: str) -> tuple[tuple, torch.dtype]:
    _check_weight_args(w, w_meta, w_format, (op_format,))
    k, n = _meta_kn(w_meta)
    _check_matrix(a, "a", _INT8_ACTS, k)
    return (a.shape[0], n), _int8_out_dtype(epilogue, out_dtype)


def _gemm_int8_fake(a, w, w_meta, w_format, a_zero_point=0, epilogue="none", a_scale=None,
                    w_scale=None, bias=None, multiplier=None, shift=None, out_zero_point=0,
                    qmin=None, qmax=None, out_dtype=None, *, op_format="int8"):
    shape, dtype = _gemm_int8_out(a, w, w_meta, w_format, epilogue, out_dtype, op_format)
    return a.new_empty(shape, dtype=dtype)


_UNUSED = {"dequantize": ("multiplier", "shift"), "requantize": ("a_scale", "w_scale"),
           "none": ("a_scale", "w_scale", "bias", "multiplier", "shift")}


def int8_epilogue(epilogue: str, *, a_scale=None, w_scale=None, bias=None, multiplier=None,
                  shift=None, out_zero_point: int = 0, qmin=None, qmax=None,
                  out_dtype=None) -> Requantize | Dequantize | None:
    """The ``Requantize`` / ``Dequantize`` (validated by its constructor) or None that
    gemm_int8's op arguments describe (tensors, as the op takes them; ``epilogue`` and
    ``out_dtype`` checked by ``_int8_out_dtype`` first)."""
    given = {"a_scale": a_scale, "w_scale": w_scale, "bias": bias, "multiplier": multiplier,
             "shift": shift}
    for name in _UNUSED[epilogue]:
        if given[name] is not None:
            raise ValueError(f"{name}: not a parameter of the {epilogue!r} epilogue")
    if epilogue == "dequantize":
        if w_scale is None:
            raise ValueError("w_scale: the dequantize epilogue needs the weight scales")
        return Dequantize(w_scale=_np(w_scale), a_scale=1.0 if a_scale is None else _np(a_scale),
                          bias=_np_opt(bias))
    if epilogue == "requantize":
        if multiplier is None or shift is None:
            raise ValueError("multiplier, shift: the requantize epilogue needs both "
                             "(Requantize.from_scale / quantize_multiplier make them)")
        return Requantize(multiplier=_np(multiplier), shift=_np(shift),
                          zero_point=out_zero_point, qmin=qmin, qmax=qmax, bias=_np_opt(bias),
                          out_dtype=_REQUANT_OUT[out_dtype])
    return None


def _gemm_int8_impl(a, w, w_meta, w_format, a_zero_point=0, epilogue="none", a_scale=None,
                    w_scale=None, bias=None, multiplier=None, shift=None, out_zero_point=0,
                    qmin=None, qmax=None, out_dtype=None, *, op_format="int8"):
    shape, dtype = _gemm_int8_out(a, w, w_meta, w_format, epilogue, out_dtype, op_format)
    if not shape[0]:  # no rows: nothing to compute (and per-row scales would be empty)
        return torch.empty(shape, dtype=dtype)
    packed = _packed(w, w_meta, w_format)
    ep = int8_epilogue(epilogue, a_scale=a_scale, w_scale=w_scale, bias=bias,
                       multiplier=multiplier, shift=shift, out_zero_point=out_zero_point,
                       qmin=qmin, qmax=qmax, out_dtype=out_dtype)
    kernel = INT8_KERNELS[op_format]
    return torch.from_numpy(kernel(_np(a), packed, a_zero_point=a_zero_point, epilogue=ep))


# --- gemm_w4a16 / gemm_w4a8 ----------------------------------------------------------------

_W4 = ("int4", "uint4")


def _w4_out(act, name, dtypes, w, w_meta, w_format) -> tuple[int, int]:
    _check_weight_args(w, w_meta, w_format, _W4)
    k, n = _meta_kn(w_meta)
    _check_matrix(act, name, dtypes, k)
    return act.shape[0], n


_W4A16_ACTS = (torch.float32, torch.bfloat16)


def _gemm_w4a16_fake(x, w, w_meta, w_format):
    return x.new_empty(_w4_out(x, "x", _W4A16_ACTS, w, w_meta, w_format), dtype=torch.float32)


def _gemm_w4a16_impl(x, w, w_meta, w_format):
    shape = _w4_out(x, "x", _W4A16_ACTS, w, w_meta, w_format)
    if not shape[0]:
        return torch.empty(shape, dtype=torch.float32)
    packed = _packed(w, w_meta, w_format)
    return torch.from_numpy(_gemm_w4a16(_np(x), packed))


def _gemm_w4a8_fake(a, w, w_meta, w_format, a_scale=None):
    return a.new_empty(_w4_out(a, "a", (torch.int8,), w, w_meta, w_format), dtype=torch.float32)


def _gemm_w4a8_impl(a, w, w_meta, w_format, a_scale=None):
    shape = _w4_out(a, "a", (torch.int8,), w, w_meta, w_format)
    if not shape[0]:
        return torch.empty(shape, dtype=torch.float32)
    packed = _packed(w, w_meta, w_format)
    return torch.from_numpy(_gemm_w4a8(_np(a), packed, a_scale=_np_opt(a_scale)))


# --- spmm_csr ---------------------------------------------------------------------------------

_CSR_X = {torch.int8: torch.int32, torch.float32: torch.float32}  # x dtype -> output dtype


def _spmm_csr_out(w, w_meta, w_format, x) -> tuple[tuple[int, int], torch.dtype]:
    _check_weight_args(w, w_meta, w_format, ("csr",))
    n_out, k = int(w_meta[0]), int(w_meta[1])
    if isinstance(x, torch.Tensor) and x.dim() != 2:
        raise ValueError(f"x: expected a 2-D [K, B] matrix, got shape {tuple(x.shape)}")
    _check_matrix(x, "x", (w[2].dtype,))  # int8 x int8 or float32 x float32
    if x.shape[0] != k:
        raise ValueError(f"x, w_meta: x has {x.shape[0]} rows, the weights need K={k} "
                         f"(x is [K, B])")
    return (n_out, x.shape[1]), _CSR_X[x.dtype]


def _spmm_csr_fake(w, w_meta, w_format, x):
    shape, dtype = _spmm_csr_out(w, w_meta, w_format, x)
    return x.new_empty(shape, dtype=dtype)


def _spmm_csr_impl(w, w_meta, w_format, x):
    shape, dtype = _spmm_csr_out(w, w_meta, w_format, x)
    if not shape[1]:
        return torch.empty(shape, dtype=dtype)
    return torch.from_numpy(_spmm_csr(_packed(w, w_meta, w_format), _np(x)))


# --- gemm_binary, pack_binary_activations ----------------------------------------------------

def _gemm_binary_out(a_bits, w, w_meta, w_format, alpha, beta) -> tuple[tuple, torch.dtype]:
    _check_weight_args(w, w_meta, w_format, ("binary",))
    k, n = _meta_kn(w_meta)
    _check_matrix(a_bits, "a_bits", (torch.int64,), binary_words(k), "ceil(K/64)")
    scaled = alpha is not None or beta is not None
    return (a_bits.shape[0], n), torch.float32 if scaled else torch.int32


def _gemm_binary_fake(a_bits, w, w_meta, w_format, alpha=None, beta=None):
    shape, dtype = _gemm_binary_out(a_bits, w, w_meta, w_format, alpha, beta)
    return a_bits.new_empty(shape, dtype=dtype)


def _gemm_binary_impl(a_bits, w, w_meta, w_format, alpha=None, beta=None):
    shape, dtype = _gemm_binary_out(a_bits, w, w_meta, w_format, alpha, beta)
    if not shape[0]:
        return torch.empty(shape, dtype=dtype)
    packed = _packed(w, w_meta, w_format)
    bits = _np(a_bits).view(np.uint64)
    return torch.from_numpy(_gemm_binary(bits, packed, packed.k, alpha=_np_opt(alpha),
                                         beta=_np_opt(beta)))


_SIGN_INPUTS = (torch.float32, torch.float64, torch.float16, torch.int8, torch.uint8,
                torch.int16, torch.int32, torch.int64)


def _packed_bits_shape(x) -> tuple[int, int]:
    _check_matrix(x, "x", _SIGN_INPUTS)
    if x.shape[1] < 1:
        raise ValueError(f"x: K must be at least 1, got shape {tuple(x.shape)}")
    return x.shape[0], binary_words(x.shape[1])


def _pack_binary_activations_fake(x):
    return x.new_empty(_packed_bits_shape(x), dtype=torch.int64)


def _pack_binary_activations_impl(x):
    _packed_bits_shape(x)
    return torch.from_numpy(formats.pack_binary_activations(_np(x)).view(np.int64))


# --- activation quantizers ---------------------------------------------------------------

def _quantize_dynamic_fake(x):
    _check_matrix(x, "x", (torch.float32,))
    return x.new_empty(x.shape, dtype=torch.int8), x.new_empty((x.shape[0],))


def _quantize_dynamic_impl(x):
    _check_matrix(x, "x", (torch.float32,))
    q, s = quantize.quantize_dynamic(_np(x))
    return torch.from_numpy(q), torch.from_numpy(s)


def static_params_dtype(scale: float, zero_point: int, qrange) -> torch.dtype:
    """quantize_static's checks of scale, zero point and range; the output dtype."""
    if not (np.isfinite(np.float32(scale)) and np.float32(scale) > 0):
        raise ValueError(f"scale: must be finite and positive in float32, got {scale!r}")
    if qrange is None:
        if not 0 <= zero_point <= 255:
            raise ValueError(f"zero_point: must be 0 (int8) or in [1, 255] (uint8), got "
                             f"{zero_point}")
    elif len(qrange) != 2:
        raise ValueError(f"qrange: expected [qmin, qmax], got {list(qrange)}")
    dtype = quantize.activation_range(zero_point, None if qrange is None else tuple(qrange))[0]
    return torch.int8 if dtype == np.int8 else torch.uint8


def _static_dtype(x, scale: float, zero_point: int, qrange) -> torch.dtype:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        raise TypeError(f"x: expected a float32 tensor, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    return static_params_dtype(scale, zero_point, qrange)


def _quantize_static_fake(x, scale, zero_point, qrange=None):
    return x.new_empty(x.shape, dtype=_static_dtype(x, scale, zero_point, qrange))


def _quantize_static_impl(x, scale, zero_point, qrange=None):
    _static_dtype(x, scale, zero_point, qrange)
    return torch.from_numpy(quantize.quantize_static(
        _np(x), scale, zero_point, None if qrange is None else tuple(qrange)))


def _xnor_scales_fake(x):
    _check_matrix(x, "x", (torch.float32,))
    return x.new_empty((x.shape[0],))


def _xnor_scales_impl(x):
    _check_matrix(x, "x", (torch.float32,))
    return torch.from_numpy(quantize.xnor_scales(_np(x)))


# --- the table ------------------------------------------------------------------------------

@dataclass(frozen=True)
class OpDef:
    """One custom op: its schema (without the namespace), CPU implementation and fake."""

    name: str
    schema: str
    impl: Callable
    fake: Callable


_W_ARGS = "Tensor[] w, int[] w_meta, str w_format"

OPS: tuple[OpDef, ...] = (
    OpDef("gemm_int8",
          f"gemm_int8(Tensor a, {_W_ARGS}, int a_zero_point=0, str epilogue='none', "
          "Tensor? a_scale=None, Tensor? w_scale=None, Tensor? bias=None, "
          "Tensor? multiplier=None, Tensor? shift=None, int out_zero_point=0, int? qmin=None, "
          "int? qmax=None, ScalarType? out_dtype=None) -> Tensor",
          _gemm_int8_impl, _gemm_int8_fake),
    OpDef("gemm_sparse24",
          f"gemm_sparse24(Tensor a, {_W_ARGS}, int a_zero_point=0, str epilogue='none', "
          "Tensor? a_scale=None, Tensor? w_scale=None, Tensor? bias=None, "
          "Tensor? multiplier=None, Tensor? shift=None, int out_zero_point=0, int? qmin=None, "
          "int? qmax=None, ScalarType? out_dtype=None) -> Tensor",
          functools.partial(_gemm_int8_impl, op_format="sparse24"),
          functools.partial(_gemm_int8_fake, op_format="sparse24")),
    OpDef("gemm_w4a16", f"gemm_w4a16(Tensor x, {_W_ARGS}) -> Tensor",
          _gemm_w4a16_impl, _gemm_w4a16_fake),
    OpDef("gemm_w4a8", f"gemm_w4a8(Tensor a, {_W_ARGS}, Tensor? a_scale=None) -> Tensor",
          _gemm_w4a8_impl, _gemm_w4a8_fake),
    OpDef("gemm_binary",
          f"gemm_binary(Tensor a_bits, {_W_ARGS}, Tensor? alpha=None, Tensor? beta=None) -> Tensor",
          _gemm_binary_impl, _gemm_binary_fake),
    OpDef("pack_binary_activations", "pack_binary_activations(Tensor x) -> Tensor",
          _pack_binary_activations_impl, _pack_binary_activations_fake),
    OpDef("quantize_dynamic", "quantize_dynamic(Tensor x) -> (Tensor, Tensor)",
          _quantize_dynamic_impl, _quantize_dynamic_fake),
    OpDef("spmm_csr", f"spmm_csr({_W_ARGS}, Tensor x) -> Tensor", _spmm_csr_impl,
          _spmm_csr_fake),
    OpDef("quantize_static",
          "quantize_static(Tensor x, float scale, int zero_point, int[]? qrange=None) -> Tensor",
          _quantize_static_impl, _quantize_static_fake),
    OpDef("xnor_scales", "xnor_scales(Tensor x) -> Tensor", _xnor_scales_impl,
          _xnor_scales_fake),
)


def _no_gradient(name: str) -> Callable:
    def backward(ctx, *grads):
        raise RuntimeError(f"{NAMESPACE}::{name} has no gradient: lowbit's kernels are "
                           f"inference-only (train with fake quantization, then export)")
    return backward


def _register() -> torch.library.Library:
    lib = torch.library.Library(NAMESPACE, "DEF")
    for op in OPS:
        qualname = f"{NAMESPACE}::{op.name}"
        lib.define(op.schema)
        lib.impl(op.name, op.impl, "CPU")
        torch.library.register_fake(qualname, op.fake, lib=lib)
        torch.library.register_autograd(qualname, _no_gradient(op.name), lib=lib)
    return lib


_LIB = _register()  # keeps the registrations alive for the life of the process
