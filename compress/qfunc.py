"""Uniform (linear) quantization: parameters, quantize / dequantize, and fake quantization.

The one affine quantizer, for every bit width 2..8 and granularity (see ``granularity``):

    q = clip(rint(x / s) + z, qmin, qmax),    x_hat = (q - z) * s

with ``rint`` rounding half to even and ``x / s`` a float32 division, exactly as the
kernel-backed modules compute it (lowbit.kernels.modules), so integer results can be compared
bit for bit. Ranges: symmetric b-bit is signed ``[-2^(b-1), 2^(b-1) - 1]`` with z = 0;
asymmetric b-bit is unsigned ``[0, 2^b - 1]`` with an integer zero point z.

Parameters from a range [lo, hi] (``qparams``), float32 throughout:

* symmetric:  s = max(|lo|, |hi|) / (2^(b-1) - 1), and s = 1 when that is 0;
* asymmetric: lo' = min(lo, 0), hi' = max(hi, 0), s = (hi' - lo') / (2^b - 1) (1 when 0),
  z = clip(rint(-lo' / s), 0, 2^b - 1), so that 0.0 is exactly representable.

Fake quantization (QAT) has two gradients: ``fake_quantize``, the straight-through estimator
with clipping (dx = dy where the value was not clipped, else 0; Bengio et al. 2013), and
``lsq_fake_quantize``, Learned Step Size Quantization (Esser et al. 2020, "Learned Step Size
Quantization", ICLR) with a learnable scale and zero point and the gradient scale
g = 1 / sqrt(N * Qp).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .granularity import GRANULARITIES, Granularity, PerTensor

MIN_BITS, MAX_BITS = 2, 8


@dataclass(frozen=True)
class QuantSpec:
    """What an affine quantizer produces: ``bits`` (2..8), symmetric or not, and granularity.

    Example:
        >>> QuantSpec(4, symmetric=True).qrange
        (-8, 7)
    """

    bits: int = 8
    symmetric: bool = True
    granularity: Granularity = field(default_factory=PerTensor)

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or isinstance(self.bits, bool) or \
                not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError(f"bits: must be an int in [{MIN_BITS}, {MAX_BITS}], got "
                             f"{self.bits!r}")
        if not isinstance(self.symmetric, bool):
            raise TypeError(f"symmetric: must be True or False, got {self.symmetric!r}")
        if not isinstance(self.granularity, GRANULARITIES):
            raise TypeError(f"granularity: must be PerTensor(), PerChannel(axis) or "
                            f"PerGroup(size), got {self.granularity!r}")

    @property
    def precision(self) -> int:
        return self.bits

    @property
    def qrange(self) -> tuple[int, int]:
        if self.symmetric:
            return -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1
        return 0, (1 << self.bits) - 1

    @property
    def int_dtype(self) -> torch.dtype:
        return torch.int8 if self.symmetric else torch.uint8

    @property
    def positive_levels(self) -> int:
        """Qp: the largest positive integer a non-negative value maps to (z = 0)."""
        return self.qrange[1]


def qparams(lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale float32, zero point int32) from a range [lo, hi] (see module docstring).

    Example:
        >>> s, z = qparams(torch.tensor(-1.0), torch.tensor(3.0), QuantSpec(8, False))
        >>> float(s), int(z)
        (0.01568627543747425, 64)
    """
    lo = torch.as_tensor(lo, dtype=torch.float32)
    hi = torch.as_tensor(hi, dtype=torch.float32)
    qmin, qmax = spec.qrange
    if spec.symmetric:
        raw = torch.maximum(lo.abs(), hi.abs()) / qmax
        scale = torch.where(raw > 0, raw, torch.ones_like(raw))
        return scale, torch.zeros(scale.shape, dtype=torch.int32)
    lo = torch.clamp(lo, max=0.0)
    hi = torch.clamp(hi, min=0.0)
    raw = (hi - lo) / (qmax - qmin)
    scale = torch.where(raw > 0, raw, torch.ones_like(raw))
    zp = torch.clamp(torch.round(-lo / scale), qmin, qmax)
    return scale, zp.to(torch.int32)


def absmax_scale(absmax: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric scale ``absmax / (2^(bits-1) - 1)`` in float32, 1.0 where absmax is 0."""
    raw = torch.as_tensor(absmax, dtype=torch.float32) / ((1 << (bits - 1)) - 1)
    return torch.where(raw > 0, raw, torch.ones_like(raw))


def tensor_qparams(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Min/max qparams of ``x`` itself, one per block of ``spec.granularity`` ([A, G])."""
    xb = spec.granularity.blocks(x.detach().float())
    return qparams(xb.amin(dim=2), xb.amax(dim=2), spec)


def _check_params(x: torch.Tensor, scale: torch.Tensor, spec: QuantSpec) -> None:
    want = spec.granularity.param_shape(x.shape)
    if tuple(scale.shape) != tuple(want):
        raise ValueError(f"scale: shape {tuple(scale.shape)} does not match {spec.granularity} "
                         f"for x of shape {tuple(x.shape)}; expected {want}")


def _rounded(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, spec: QuantSpec
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(rint(x / s) + z in block view [A, G, L], z as float [A, G, 1]) before clipping."""
    _check_params(x, scale, spec)
    xb = spec.granularity.blocks(x.float())
    z = torch.as_tensor(zero_point).to(torch.float32).reshape(scale.shape)[..., None]
    return torch.round(xb / scale.float()[..., None]) + z, z


def quantize_tensor(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, spec: QuantSpec
             ) -> torch.Tensor:
    """Integer q = clip(rint(x / s) + z, qmin, qmax) (int8 symmetric, uint8 asymmetric).

    ``scale`` and ``zero_point`` have the shape ``spec.granularity.param_shape(x.shape)``.

    Example:
        >>> quantize_tensor(torch.tensor([0.5, -1.0, 9.0]), torch.tensor([[0.5]]),
        ...                 torch.zeros(1, 1), QuantSpec(4))
        tensor([ 1, -2,  7], dtype=torch.int8)
    """
    qmin, qmax = spec.qrange
    q, _ = _rounded(x, scale, zero_point, spec)
    return spec.granularity.unblocks(torch.clamp(q, qmin, qmax), x.shape).to(spec.int_dtype)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, spec: QuantSpec
               ) -> torch.Tensor:
    """float32 x_hat = (q - z) * s."""
    _check_params(q, scale, spec)
    qb = spec.granularity.blocks(q.to(torch.float32))
    z = torch.as_tensor(zero_point).to(torch.float32).reshape(scale.shape)[..., None]
    return spec.granularity.unblocks((qb - z) * scale.float()[..., None], q.shape)


class _STEFakeQuant(torch.autograd.Function):
    """Forward (clip(rint(x/s) + z) - z) * s; backward: dx = dy inside [qmin, qmax], else 0."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, spec):
        qmin, qmax = spec.qrange
        q, z = _rounded(x, scale, zero_point, spec)
        inside = (q >= qmin) & (q <= qmax)
        ctx.save_for_backward(spec.granularity.unblocks(inside, x.shape))
        out = (torch.clamp(q, qmin, qmax) - z) * scale.float()[..., None]
        return spec.granularity.unblocks(out, x.shape).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside.to(grad.dtype), None, None, None


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                  spec: QuantSpec) -> torch.Tensor:
    """Quantize-dequantize with the clipped straight-through estimator (no gradient to s, z).

    Example:
        >>> x = torch.tensor([0.3, 5.0], requires_grad=True)
        >>> y = fake_quantize(x, torch.tensor([[0.5]]), torch.zeros(1, 1), QuantSpec(4))
        >>> y.sum().backward(); y.detach(), x.grad
        (tensor([0.5000, 3.5000]), tensor([1., 0.]))
    """
    return _STEFakeQuant.apply(x, scale.detach(), torch.as_tensor(zero_point).detach(), spec)


class _LSQFakeQuant(torch.autograd.Function):
    """LSQ (Esser et al. 2020) with an integer-rounded learnable zero point (as torch's
    ``_fake_quantize_learnable_per_tensor_affine``).

    With v = x / s, zr = clip(rint(z), qmin, qmax), q = rint(v) + zr:
      dx = dy where qmin <= q <= qmax, else 0;
      ds = g * sum(dy * (rint(v) - v))  inside,  g * sum(dy * (qmin|qmax - zr)) where clipped;
      dz = g * sum(dy * -s) where clipped, 0 inside.
    """

    @staticmethod
    def forward(ctx, x, scale, zero_point, spec, grad_scale):
        qmin, qmax = spec.qrange
        gran = spec.granularity
        xb = gran.blocks(x.float())
        s = scale.float()[..., None]
        zr = torch.clamp(torch.round(zero_point.float()), qmin, qmax)[..., None]
        v = xb / s
        r = torch.round(v)
        q = r + zr
        low, high = q < qmin, q > qmax
        ctx.save_for_backward(v, r, zr, s, low, high)
        ctx.meta = (spec, x.shape, x.dtype, grad_scale)
        out = (torch.clamp(q, qmin, qmax) - zr) * s
        return gran.unblocks(out, x.shape).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        v, r, zr, s, low, high = ctx.saved_tensors
        spec, shape, dtype, g = ctx.meta
        qmin, qmax = spec.qrange
        gb = spec.granularity.blocks(grad.float())
        inside = ~(low | high)
        dx = spec.granularity.unblocks(gb * inside, shape).to(dtype)
        ds_elem = torch.where(inside, r - v, torch.where(low, qmin - zr, qmax - zr))
        ds = (gb * ds_elem).sum(dim=2) * g
        dz = (gb * torch.where(inside, torch.zeros_like(s), -s)).sum(dim=2) * g
        return dx, ds, dz, None, None


def lsq_grad_scale(n_per_scale: int, spec: QuantSpec) -> float:
    """LSQ's gradient scale g = 1 / sqrt(N * Qp) (N: elements sharing one scale)."""
    return 1.0 / math.sqrt(max(n_per_scale, 1) * spec.positive_levels)


def lsq_fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                      spec: QuantSpec, grad_scale: float | None = None) -> torch.Tensor:
    """Quantize-dequantize with learnable ``scale`` (and ``zero_point``), LSQ gradients.

    ``scale`` / ``zero_point``: float tensors of ``param_shape``, usually nn.Parameters; the
    zero point is rounded and clipped in the forward pass (ignored when symmetric). Default
    ``grad_scale``: ``lsq_grad_scale(elements per scale, spec)``. Esser et al. 2020.

    Example:
        >>> s = torch.tensor([[0.5]], requires_grad=True)
        >>> y = lsq_fake_quantize(torch.tensor([0.3, 5.0]), s, torch.zeros(1, 1), QuantSpec(4))
        >>> y.sum().backward(); abs(float(s.grad) - (1 - 0.6 + 7) / math.sqrt(2 * 7)) < 1e-6
        True
    """
    _check_params(x, scale, spec)
    if grad_scale is None:
        n_scales = scale.numel()
        grad_scale = lsq_grad_scale(x.numel() // n_scales, spec)
    if spec.symmetric:
        zero_point = torch.zeros_like(scale)
    return _LSQFakeQuant.apply(x, scale, zero_point, spec, grad_scale)


def dynamic_quantize_rows(x2d: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric quantization of a float [M, K] matrix: (q int8 [M, K], s float32 [M]).

    s_i = max_k |x[i, k]| / (2^(b-1) - 1) (1.0 when the row is 0), q = clip(rint(x / s_i)).
    """
    spec = QuantSpec(bits, True)
    x2d = x2d.float()
    s = absmax_scale(x2d.abs().amax(dim=1), bits)
    qmin, qmax = spec.qrange
    q = torch.clamp(torch.round(x2d / s[:, None]), qmin, qmax).to(torch.int8)
    return q, s
