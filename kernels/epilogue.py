"""Fused GEMM epilogues as data (gemmlowp style): what happens to the int32 accumulators.

``Requantize``: int32 -> int8 / uint8 with a fixed-point multiplier and right shift,
per tensor or per output channel, plus bias, zero point and clamp. One rounding:

    v   = saturate_int32(acc + bias)
    out = clamp(zero_point + ((v * multiplier + 2^(shift-1)) >> shift), qmin, qmax)

``>>`` is an arithmetic shift, so ties round toward +infinity (TFLite's single-rounding
mode, XNNPACK's "rndnu"). ``quantize_multiplier`` turns a real scale into (multiplier,
shift) with 2^30 <= multiplier < 2^31, i.e. 31 significant bits.

``Dequantize``: int32 -> float32, ``out = float32(acc) * (a_scale[i] * w_scale[j]) + bias[j]``
with float32 arithmetic in that order (no fused multiply-add), identical in every variant.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1
_OUT_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}


def quantize_multiplier(scale: float) -> tuple[int, int]:
    """(multiplier, shift) with ``scale ~= multiplier * 2**-shift`` and 2^30 <= multiplier < 2^31.

    Valid for 2^-32 <= scale < 2^30 (shift between 1 and 62).
    """
    if not (isinstance(scale, (int, float, np.floating)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite positive number, got {scale!r}")
    frac, exp = math.frexp(float(scale))  # scale = frac * 2**exp, 0.5 <= frac < 1
    multiplier = round(frac * 2 ** 31)
    if multiplier == 2 ** 31:  # frac rounded up to 1.0: renormalize, or at the top of the
        if exp < 30:           # range (shift would reach 0) keep the largest multiplier
            multiplier, exp = 2 ** 30, exp + 1
        else:
            multiplier = 2 ** 31 - 1
    shift = 31 - exp
    if not 1 <= shift <= 62:
        raise ValueError(f"scale {scale!r} is outside the representable range [2^-32, 2^30)")
    return multiplier, shift


def _as_channel_vector(name: str, value, dtype, n: int | None = None) -> np.ndarray:
    arr = np.ascontiguousarray(np.atleast_1d(np.asarray(value)), dtype=dtype)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name}: expected a scalar or a non-empty 1-D per-channel vector, "
                         f"got shape {arr.shape}")
    if n is not None and arr.size not in (1, n):
        raise ValueError(f"{name}: has {arr.size} entries, expected 1 or N={n}")
    return arr


@dataclass(frozen=True, eq=False)
class Requantize:
    """int32 -> int8/uint8 requantization (see module docstring for the exact arithmetic).

    Build it from real scales with ``Requantize.from_scale(scale, zero_point=..., bias=...)``.
    ``multiplier``, ``shift`` and ``bias`` are scalars (per tensor) or [N] (per channel).
    """

    multiplier: np.ndarray
    shift: np.ndarray
    zero_point: int = 0
    qmin: int | None = None
    qmax: int | None = None
    bias: np.ndarray | None = None
    out_dtype: str = "int8"

    def __post_init__(self) -> None:
        if self.out_dtype not in _OUT_RANGES:
            raise ValueError(f"out_dtype: must be 'int8' or 'uint8', got {self.out_dtype!r}")
        lo, hi = _OUT_RANGES[self.out_dtype]
        mult = _as_channel_vector("multiplier", self.multiplier, np.int64)
        shift = _as_channel_vector("shift", self.shift, np.int64)
        if mult.min() <= 0 or mult.max() >= 2 ** 31:
            raise ValueError("multiplier: must lie in (0, 2^31); use Requantize.from_scale(scale)")
        if shift.min() < 1 or shift.max() > 62:
            raise ValueError("shift: must lie in [1, 62]; use Requantize.from_scale(scale)")
        qmin = lo if self.qmin is None else int(self.qmin)
        qmax = hi if self.qmax is None else int(self.qmax)
        if not lo <= qmin <= qmax <= hi:
            raise ValueError(f"qmin, qmax: need {lo} <= qmin <= qmax <= {hi} for {self.out_dtype}, "
                             f"got {qmin}, {qmax}")
        if (not isinstance(self.zero_point, (int, np.integer)) or isinstance(self.zero_point, bool)
                or not lo <= self.zero_point <= hi):
            raise ValueError(f"zero_point: must be an integer in [{lo}, {hi}] for {self.out_dtype}, "
                             f"got {self.zero_point}")
        object.__setattr__(self, "multiplier", mult.astype(np.int32))
        object.__setattr__(self, "shift", shift.astype(np.int32))
        object.__setattr__(self, "qmin", qmin)
        object.__setattr__(self, "qmax", qmax)
        object.__setattr__(self, "zero_point", int(self.zero_point))
        if self.bias is not None:
            bias = _as_channel_vector("bias", self.bias, np.int64)
            if bias.min() < INT32_MIN or bias.max() > INT32_MAX:
                raise ValueError("bias: values must fit in int32")
            object.__setattr__(self, "bias", bias.astype(np.int32))

    @classmethod
    def from_scale(cls, scale, *, zero_point: int = 0, bias=None, out_dtype: str = "int8",
                   qmin: int | None = None, qmax: int | None = None) -> "Requantize":
        """From real scales (``acc * scale`` is the output in quantized units), per tensor or [N]."""
        scales = np.atleast_1d(np.asarray(scale, dtype=np.float64))
        pairs = [quantize_multiplier(float(s)) for s in scales]
        return cls(multiplier=np.array([p[0] for p in pairs]), shift=np.array([p[1] for p in pairs]),
                   zero_point=zero_point, qmin=qmin, qmax=qmax, bias=bias, out_dtype=out_dtype)

    @property
    def np_out_dtype(self) -> np.dtype:
        return np.dtype(self.out_dtype)


@dataclass(frozen=True, eq=False)
class Dequantize:
    """int32 -> float32: ``acc * (a_scale[i] * w_scale[j]) + bias[j]``.

    ``w_scale`` and ``bias`` are scalars or [N]; ``a_scale`` is a scalar or [M] (per row,
    as dynamic per-token quantization produces).
    """

    w_scale: np.ndarray
    a_scale: np.ndarray = 1.0
    bias: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("w_scale", "a_scale"):
            arr = _as_channel_vector(name, getattr(self, name), np.float32)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name}: must be finite")
            object.__setattr__(self, name, arr)
        if self.bias is not None:
            object.__setattr__(self, "bias", _as_channel_vector("bias", self.bias, np.float32))

    @property
    def np_out_dtype(self) -> np.dtype:
        return np.dtype(np.float32)


@dataclass(frozen=True)
class Prepared:
    """An epilogue with every vector expanded to full length for one (M, N) call."""

    kind: int  # 0 int32 out, 1 requantize, 2 dequantize
    out_dtype: np.dtype
    source: Requantize | Dequantize | None = None
    multiplier: np.ndarray | None = None  # int32 [N]
    shift: np.ndarray | None = None       # int32 [N]
    bias: np.ndarray | None = None        # int32 [N] (requantize) or float32 [N] (dequantize)
    a_scale: np.ndarray | None = None     # float32 [M]
    w_scale: np.ndarray | None = None     # float32 [N]


def _expand(name: str, arr: np.ndarray, length: int, what: str) -> np.ndarray:
    if arr.size == length:
        return arr
    if arr.size == 1:
        return np.full(length, arr[0], dtype=arr.dtype)
    raise ValueError(f"epilogue.{name}: has {arr.size} entries, expected 1 or {what}={length}")


def prepare(epilogue: Requantize | Dequantize | None, m: int, n: int) -> Prepared:
    """Check an epilogue against the output shape and expand it for the kernels."""
    if epilogue is None:
        return Prepared(0, np.dtype(np.int32))
    if isinstance(epilogue, Requantize):
        return Prepared(
            1, epilogue.np_out_dtype, epilogue,
            multiplier=_expand("multiplier", epilogue.multiplier, n, "N"),
            shift=_expand("shift", epilogue.shift, n, "N"),
            bias=None if epilogue.bias is None else _expand("bias", epilogue.bias, n, "N"))
    if isinstance(epilogue, Dequantize):
        return Prepared(
            2, epilogue.np_out_dtype, epilogue,
            a_scale=_expand("a_scale", epilogue.a_scale, m, "M"),
            w_scale=_expand("w_scale", epilogue.w_scale, n, "N"),
            bias=None if epilogue.bias is None else _expand("bias", epilogue.bias, n, "N"))
    raise TypeError(f"epilogue: expected Requantize, Dequantize or None, got {type(epilogue).__name__}")
