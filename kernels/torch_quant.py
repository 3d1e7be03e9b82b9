"""The quantization formulas of the kernel-backed modules, in torch (exact definitions).

These are what ``LowbitLinear`` / ``LowbitConv2d`` compute; a simulation that follows them
step by step (same dtypes, same operation order) reproduces the modules' integers exactly.
Rounding is to nearest, ties to even (``torch.round`` = ``np.rint``); divisions are IEEE
float32 unless float64 is named.

    int8 weights, per output channel j:   s_j = float32(max_k |w_jk|) / 127   (1.0 if 0)
                                          q_jk = clip(rint(w_jk / s_j), -128, 127)
    static activations (scale s, zp):     q = clip(rint(x / s) + zp, qmin, qmax)
                                          int8 [-128, 127] if zp == 0, else uint8 [0, 255]
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

Example:
    >>> q, s = quantize_weight_int8(torch.tensor([[0.5, -1.0], [0.0, 0.0]]))
    >>> q.tolist(), s.tolist()
    ([[64, -127], [0, 0]], [0.007874015718698502, 1.0])
"""
from __future__ import annotations

import numpy as np
import torch

from .epilogue import INT32_MAX, INT32_MIN, quantize_multiplier

INT8_MAX = 127.0
# Adding 1.5 * 2^23 to a float32 of magnitude < 2^22 lands in [2^23, 2^24), where the float32
# spacing is 1: IEEE addition rounds to the nearest integer, ties to even; subtracting it
# back is exact. Used instead of torch.round, whose CPU kernel opens a parallel region from
# 2048 elements on (a thread wake-up per call, milliseconds on a loaded machine).
_ROUND_MAGIC = 1.5 * 2 ** 23


def _check_float(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.float32:
        raise TypeError(f"{name}: expected float32, got {x.dtype}")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: contains NaN or infinity")


def absmax_scales(v: torch.Tensor) -> torch.Tensor:
    """Per row of a float32 [R, K] matrix: max_k |v_rk| / 127 in float32, 1.0 where it is 0."""
    s = torch.linalg.vector_norm(v, ord=float("inf"), dim=1) / INT8_MAX  # max |v|: exact
    return torch.where(s == 0, torch.ones_like(s), s)


def round_clip_(q: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """In place on float32 q: clip(rint(q), lo, hi) for integers lo, hi (as rint(clip(q, lo,
    hi)), the same value, so |q| < 2^22 when ``_ROUND_MAGIC`` rounds it)."""
    return q.clamp_(lo, hi).add_(_ROUND_MAGIC).sub_(_ROUND_MAGIC)


def quantize_rows(v: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """int8 clip(rint(v / scales[:, None]), -128, 127)."""
    return round_clip_(v / scales[:, None], -128, 127).to(torch.int8)


def quantize_weight_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 weights: (q int8 [N, K], s float32 [N]).

    s_j = max|w_j| / 127 (1.0 for an all-zero row), q = clip(rint(w / s_j), -128, 127).
    """
    _check_float(w, "weight")
    s = absmax_scales(w)
    return quantize_rows(w, s), s


def quantize_dynamic(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic symmetric int8 per row of x [M, K]: (q int8, s float32 [M]), zero point 0."""
    s = absmax_scales(x)
    return quantize_rows(x, s), s


def activation_range(zero_point: int) -> tuple[torch.dtype, int, int]:
    """(dtype, qmin, qmax) of static activations: int8 if zero_point == 0, else uint8."""
    return (torch.int8, -128, 127) if zero_point == 0 else (torch.uint8, 0, 255)


def quantize_static(x: torch.Tensor, scale: torch.Tensor, zero_point: int) -> torch.Tensor:
    """clip(rint(x / scale) + zero_point, qmin, qmax) as int8 (zp 0) or uint8; scale a 0-d
    float32 tensor (a Python float would be fine too: torch divides in float32 either way)."""
    dtype, lo, hi = activation_range(zero_point)
    # clip(rint(q) + zp, lo, hi) = clip(rint(q), lo - zp, hi - zp) + zp: zp is an integer
    return round_clip_(x / scale, lo - zero_point, hi - zero_point).add_(zero_point).to(dtype)


def xnor_scales(v: torch.Tensor) -> torch.Tensor:
    """XNOR-Net's per-row scale of [R, K]: float32(float64 sum_k |v_rk| / K)."""
    return (v.abs().sum(dim=1, dtype=torch.float64) / v.shape[1]).to(torch.float32)


def requantize_params(act_scale: float, w_scale: np.ndarray, out_scale: float,
                      bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(multiplier int32 [N], shift int32 [N], bias_q int32 [N] or None) of the requantizing
    epilogue: real scale float64(s_a) * float64(s_j) / float64(out_scale) per channel, bias in
    accumulator units rint(float64(bias_j) / (float64(s_a) * float64(s_j)))."""
    acc_scale = np.float64(act_scale) * np.asarray(w_scale, dtype=np.float32).astype(np.float64)
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
    bias_q = np.rint(np.asarray(bias, dtype=np.float32).astype(np.float64) / acc_scale)
    if bias_q.size and (bias_q.min() < INT32_MIN or bias_q.max() > INT32_MAX):
        raise ValueError("bias: bias / (act_scale * weight_scale) does not fit in int32")
    return mult, shift, bias_q.astype(np.int32)
