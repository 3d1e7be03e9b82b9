"""The quantizers of the kernel-backed modules, in NumPy: the exact definitions.

``LowbitLinear`` / ``LowbitConv2d`` run these (activations through the ``lowbit`` torch ops
``quantize_dynamic``, ``quantize_static`` and ``xnor_scales``, weights when they are built);
a simulation that follows them step by step (same dtypes, same operation order) reproduces
the modules' integers exactly. Rounding is to nearest, ties to even (``np.rint``, as
``torch.round``); divisions are IEEE float32 unless float64 is named.

    int8 weights, per output channel j:   s_j = float32(max_k |w_jk|) / 127   (1.0 if 0)
                                          q_jk = clip(rint(w_jk / s_j), -128, 127)
    static activations (scale s, zp):     q = clip(rint(x / s) + zp, qmin, qmax)
                                          int8 [-128, 127] if zp == 0, else uint8 [0, 255],
                                          or a narrower (qmin, qmax) (b-bit activations)
    dynamic activations, per row i:       s_i = max_k |x_ik| / 127   (1.0 if 0), zp = 0
                                          q_ik = clip(rint(x_ik / s_i), -128, 127)
    XNOR-Net scales (Rastegari et al., ECCV 2016), per row r of a matrix [R, K]:
                                          mean_r = float32(float64 sum_k |v_rk| / K)
                                          (alpha: rows of W, per output channel; beta: rows
                                          of the activation matrix, per row / output pixel)
    requantization (int8 output with out_scale, out_zp; ``kernels.epilogue``):
        m_j, shift_j = quantize_multiplier(float64(s_a) * float64(s_j) / float64(out_scale))
        bias_q_j = rint(float64(bias_j) / (float64(s_a) * float64(s_j)))     (int32)
        y = clamp(out_zp + ((sat32(acc + bias_q_j) * m_j + 2^(shift_j - 1)) >> shift_j),
                  qmin, qmax)          qmin = out_zp with a fused ReLU

The float64 sum of the XNOR-Net scales is the one value whose last float64 bit depends on
the summation order (NumPy's pairwise order here); its float32 rounding practically never
does. Single-threaded NumPy on purpose: a few vectorized passes, and no second thread pool
next to the kernels' (torch's OpenMP workers spinning between ops slow the kernels down).

Example:
    >>> q, s = quantize_weight_int8(np.array([[0.5, -1.0], [0.0, 0.0]], np.float32))
    >>> q.tolist(), s.tolist()
    ([[64, -127], [0, 0]], [0.007874015718698502, 1.0])
"""
from __future__ import annotations

import math

import numpy as np

from .epilogue import INT32_MAX, INT32_MIN, quantize_multiplier

F32 = np.dtype(np.float32)
INT8_MAX = np.float32(127)


def _check_float32(name: str, x) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(x).__name__}")
    if x.dtype != F32:
        raise TypeError(f"{name}: expected float32, got {x.dtype}")
    return x


def _check_rows(name: str, x) -> np.ndarray:
    x = _check_float32(name, x)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"{name}: expected a 2-D [rows, K] matrix with K >= 1, got shape "
                         f"{x.shape}")
    return x


def _require_finite(name: str, values: np.ndarray) -> None:
    """``values`` are reductions (max, sum) of ``name``: NaN and infinity propagate to them."""
    if not np.isfinite(values).all():
        raise ValueError(f"{name}: contains NaN or infinity")


def _round_clip(q: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """In place on float32 q: clip(rint(q), lo, hi) (= rint(clip(q, lo, hi)): lo, hi are
    integers and rint is monotonic)."""
    np.minimum(q, hi, out=q)  # the ufuncs: np.clip's Python wrapper costs more at small sizes
    np.maximum(q, lo, out=q)
    return np.rint(q, out=q)


def absmax_scales(v: np.ndarray, name: str = "x") -> np.ndarray:
    """Per row of float32 [R, K]: max_k |v_rk| / 127 in float32, 1.0 where that is 0.
    Raises ValueError naming ``name`` if v holds NaN or infinity."""
    v = _check_rows(name, v)
    amax = np.maximum(v.max(axis=1), -v.min(axis=1))  # max |v| without an |v| temporary
    _require_finite(name, amax)
    s = amax / INT8_MAX
    s[s == 0] = 1
    return s


def quantize_rows(v: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """int8 clip(rint(v / scales[:, None]), -128, 127) of float32 v [R, K], scales [R]."""
    return _round_clip(v / scales[:, None], -128, 127).astype(np.int8)


def quantize_dynamic(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic symmetric int8 per row of float32 x [M, K]: (q int8, s float32 [M]), zp 0.

    Example:
        >>> q, s = quantize_dynamic(np.array([[254.0, -1.0, 0.5]], np.float32))
        >>> q.tolist(), s.tolist()
        ([[127, 0, 0]], [2.0])
    """
    s = absmax_scales(x)
    return quantize_rows(x, s), s


def quantize_weight_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8 weights of float32 w [N, K]: (q int8, s float32
    [N]); s_j = max|w_j| / 127 (1.0 for an all-zero row), q = clip(rint(w / s_j), -128, 127)."""
    s = absmax_scales(w, "weight")
    return quantize_rows(w, s), s


def activation_range(zero_point: int, qrange: tuple[int, int] | None = None
                     ) -> tuple[np.dtype, int, int]:
    """(dtype, qmin, qmax) of static activations: by default int8 [-128, 127] if
    zero_point == 0, else uint8 [0, 255]; an explicit ``qrange`` (qmin, qmax) narrows it
    (e.g. b-bit activations in the int8 kernels) and picks uint8 if qmin >= 0, else int8.

    Example:
        >>> activation_range(0, (0, 255))[0], activation_range(3, (0, 15))
        (dtype('uint8'), (dtype('uint8'), 0, 15))
    """
    if qrange is None:
        return (np.dtype(np.int8), -128, 127) if zero_point == 0 else (np.dtype(np.uint8), 0, 255)
    lo, hi = (int(v) for v in qrange)
    dtype, dlo, dhi = (np.dtype(np.uint8), 0, 255) if lo >= 0 else (np.dtype(np.int8), -128, 127)
    if not dlo <= lo <= zero_point <= hi <= dhi:
        raise ValueError(f"qrange: ({lo}, {hi}) with zero point {zero_point} must satisfy "
                         f"qmin <= zero_point <= qmax inside int8 [-128, 127] (qmin < 0) or "
                         f"uint8 [0, 255] (qmin >= 0)")
    return dtype, lo, hi


def quantize_static(x: np.ndarray, scale: float, zero_point: int,
                    qrange: tuple[int, int] | None = None) -> np.ndarray:
    """clip(rint(x / scale) + zero_point, qmin, qmax) of float32 x (any shape), scale a
    float32 number: int8 if zero_point == 0, else uint8, or the dtype and range of
    ``qrange`` (``activation_range``).

    Example:
        >>> quantize_static(np.array([0.5, 1.5, -300.0], np.float32), 1.0, 128).tolist()
        [128, 130, 0]
        >>> quantize_static(np.array([0.5, 1.5, 300.0], np.float32), 1.0, 0, (0, 15)).tolist()
        [0, 2, 15]
    """
    x = _check_float32("x", x)
    if x.size and not (math.isfinite(x.max()) and math.isfinite(x.min())):
        raise ValueError("x: contains NaN or infinity")
    dtype, lo, hi = activation_range(zero_point, qrange)
    # clip(rint(q) + zp, lo, hi) = clip(rint(q), lo - zp, hi - zp) + zp: zp is an integer
    q = _round_clip(x / np.float32(scale), lo - zero_point, hi - zero_point)
    q += np.float32(zero_point)
    return q.astype(dtype)


def xnor_scales(v: np.ndarray, name: str = "x") -> np.ndarray:
    """XNOR-Net's per-row scale of float32 [R, K]: float32(float64 sum_k |v_rk| / K)."""
    v = _check_rows(name, v)
    mean = np.abs(v).sum(axis=1, dtype=np.float64) / v.shape[1]
    _require_finite(name, mean)
    return mean.astype(F32)


def requantize_params(act_scale: float, w_scale: np.ndarray, out_scale: float,
                      bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(multiplier int32 [N], shift int32 [N], bias_q int32 [N] or None) of the requantizing
    epilogue: real scale float64(s_a) * float64(s_j) / float64(out_scale) per channel, bias in
    accumulator units rint(float64(bias_j) / (float64(s_a) * float64(s_j)))."""
    acc_scale = np.float64(act_scale) * np.asarray(w_scale, dtype=F32).astype(np.float64)
    real = acc_scale / np.float64(out_scale)
    pairs = []
    for j, r in enumerate(real):
        try:
            pairs.append(quantize_multiplier(float(r)))
        except ValueError as exc:
            raise ValueError(f"out_scale: channel {j} needs the requantization scale {r:.3g} "
                             f"(act_scale * weight_scale / out_scale), {exc}") from None
    mult = np.array([p[0] for p in pairs], dtype=np.int32)
    shift = np.array([p[1] for p in pairs], dtype=np.int32)
    if bias is None:
        return mult, shift, None
    bias_q = np.rint(np.asarray(bias, dtype=F32).astype(np.float64) / acc_scale)
    if bias_q.size and (bias_q.min() < INT32_MIN or bias_q.max() > INT32_MAX):
        raise ValueError("bias: bias / (act_scale * weight_scale) does not fit in int32")
    return mult, shift, bias_q.astype(np.int32)
