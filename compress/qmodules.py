"""Quantized layers that simulate the integer kernels exactly: QuantLinear, QuantConv2d.

A layer holds integer weights q_w with float scales s_w (per output channel, per tensor or
per group) and describes how it quantizes its input:

* quantized activations (``ActQuant``, "static" per tensor with scale s_a and zero point z,
  or "dynamic" symmetric per row / per sample computed at run time): the exact integer
  accumulator acc = sum_k (q_a - z) q_w (computed in float64, exact for these magnitudes) and
  the kernels' Dequantize epilogue

      y[i, j] = float32(acc[i, j]) * (s_a[i] * s_w[j]) + bias[j]      (float32 steps, no FMA)

* float activations (weight only, ``act=None``): y = x @ (q_w * s_w)^T + bias in float32.

Weights: b-bit symmetric, s = max|w| / (2^(b-1) - 1) in float32 (1 when 0),
q = clip(rint(w / s), -2^(b-1), 2^(b-1) - 1); the int4 weight-only format is
``lowbit.kernels.formats.quantize_int4`` (groups along K, float16 scales) itself.

Dynamic activations: Linear rows (each row of x.reshape(-1, K)); Conv2d per sample (one scale
per image, so every im2col row of an image, in every channel group, shares it):
s = max|x| / 127 (1 when 0).

Grouped and depthwise Conv2d (``groups`` = G > 1): output channel j belongs to group
g = j // (N / G) and reads input channels g C / G .. (g + 1) C / G - 1, so the im2col GEMM
splits into G GEMMs of K = (C / G) kh kw (the kernels run one per group). Weight scales are
per output channel, per tensor, or per group of consecutive values of each filter's K.

Requantized output (``OutQuant``, set by ``lowbit.compress.fuse_requantization`` on a static
layer that feeds another static layer): the layer computes the kernels' Requantize epilogue
on the exact accumulator, q = clamp(zp + ((sat32(acc + bias_q) m + 2^(shift-1)) >> shift),
qmin, qmax) with (m, shift, bias_q) = ``kernels.quantize.requantize_params`` (Jacob et al.
2018, section 2.2), and outputs float32 (q - zp) * s, which the next layer's quantizer maps
back to q exactly; so the simulation follows a fused W8A8 chain bit for bit.

``integer_trace(x)`` returns the integer GEMM operands and result (``IntegerTrace``) for
comparison with the kernels; ``lowbit_storage()`` the stored format and its byte count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lowbit.kernels import ref as kernel_ref
from lowbit.kernels.formats import quantize_int4
from lowbit.kernels.quantize import requantize_params

from .granularity import PerChannel, PerGroup, PerTensor
from .qfunc import (QuantSpec, dequantize, dynamic_quantize_rows, quantize_tensor,
                    tensor_qparams)

ACT_MODES = ("static", "dynamic")


@dataclass(frozen=True)
class ActQuant:
    """How a layer quantizes its input: ``mode`` "static" (calibrated per-tensor scale and zero
    point) or "dynamic" (symmetric, per row / per sample at run time), ``bits``, ``symmetric``."""

    mode: str = "static"
    bits: int = 8
    symmetric: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ACT_MODES:
            raise ValueError(f"ActQuant.mode: must be 'static' or 'dynamic', got {self.mode!r}")
        if self.mode == "dynamic" and not self.symmetric:
            raise ValueError("ActQuant: dynamic activations are symmetric; pass symmetric=True")
        QuantSpec(self.bits, self.symmetric)  # validates bits

    @property
    def spec(self) -> QuantSpec:
        return QuantSpec(self.bits, self.symmetric, PerTensor())


@dataclass(frozen=True, eq=False)
class IntegerTrace:
    """The integer quantities of one layer call, in GEMM form (numpy arrays).

    Rows i: Linear: rows of x.reshape(-1, K); Conv2d: im2col rows in (image, oh, ow) order
    with K in (channel, kh, kw) order (``F.unfold``). Weight-only layers have no integer
    activations or accumulator (``a_q``, ``a_scale``, ``acc`` are None).

    a_q: int8 / uint8 [M, G * K]; a_scale: float32 [M]; a_zero_point: int;
    w_q: int8 [N, K]; w_scale: float32 [N] with quantized activations, else the stored
    scales ([1, 1] per tensor, [N, 1] per channel, [N, K / size] per group, stored dtype);
    acc: int32 [M, N] = (a_q - a_zero_point) @ w_q.T per channel group; bias: float32 [N] or
    None; out: float32 [M, N], the layer's output rows; out_q: int32 [M, N], the requantized
    integers of a layer with ``OutQuant`` (else None); groups: G, the conv's channel groups
    (1 for Linear). With G > 1, group g's GEMM (``group(g)``) reads the columns
    g K:(g + 1) K of a_q (its input channels' im2col values) and the filters, accumulators
    and outputs of channels g N / G:(g + 1) N / G: the column layout of the kernels'
    ``KernelTrace``.
    """

    a_q: np.ndarray | None
    a_scale: np.ndarray | None
    a_zero_point: int
    w_q: np.ndarray
    w_scale: np.ndarray
    acc: np.ndarray | None
    bias: np.ndarray | None
    out: np.ndarray
    out_q: np.ndarray | None = None
    groups: int = 1

    def group(self, g: int) -> "IntegerTrace":
        """Channel group g's GEMM as a one-group IntegerTrace (see the class doc)."""
        if not 0 <= g < self.groups:
            raise ValueError(f"g: must lie in [0, {self.groups}), got {g!r}")
        n, k = self.w_q.shape[0] // self.groups, self.w_q.shape[1]
        cols = slice(g * n, (g + 1) * n)
        # per-tensor scales ([1, 1] of a weight-only layer) are shared by every group
        w_scale = self.w_scale[cols] if len(self.w_scale) == len(self.w_q) else self.w_scale
        return IntegerTrace(
            None if self.a_q is None else self.a_q[:, g * k:(g + 1) * k], self.a_scale,
            self.a_zero_point, self.w_q[cols], w_scale,
            None if self.acc is None else self.acc[:, cols],
            None if self.bias is None else self.bias[cols], self.out[:, cols],
            None if self.out_q is None else self.out_q[:, cols])


@dataclass(frozen=True)
class OutQuant:
    """The requantized output of a static layer feeding another static layer (see the
    module docstring): ``scale`` and ``zero_point`` are the consumer's activation scale and
    zero point, ``qrange`` its integer range (which sets the dtype, int8 if qmin < 0 else
    uint8), ``clip`` the clamp of fused activations inside it (ReLU: (zp, qmax); ReLU6:
    (zp, zp + rint(6 / scale))).

    Example:
        >>> OutQuant(0.05, 0, (0, 255), (0, 120)).bounds
        (0, 120)
    """

    scale: float
    zero_point: int
    qrange: tuple[int, int]
    clip: tuple[int, int]

    def __post_init__(self) -> None:
        lo, hi = self.qrange
        if not (lo <= self.zero_point <= hi and self.clip[0] <= self.clip[1]):
            raise ValueError(f"OutQuant: need qmin <= zero_point <= qmax and clip lo <= hi, got "
                             f"{self.qrange}, {self.zero_point}, {self.clip}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"OutQuant.scale: must be finite and positive, got {self.scale}")

    @property
    def bounds(self) -> tuple[int, int]:
        """The final clamp: ``qrange`` intersected with ``clip``."""
        return max(self.qrange[0], self.clip[0]), min(self.qrange[1], self.clip[1])


def quantize_weight(w: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """b-bit symmetric weights: (q int8 of w's shape, scale float32 [A, G]), see module doc."""
    if not spec.symmetric:
        raise ValueError("weights are quantized symmetrically; pass a QuantSpec with "
                         "symmetric=True")
    scale, zp = tensor_qparams(w, spec)
    return quantize_tensor(w.detach(), scale, zp, spec), scale


def quantize_weight_int4(w2d: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernels' int4 format (``quantize_int4``): (v int8 [N, K] in [-8, 7], float16
    scales [N, K / group_size]) for a weight matrix [N, K]."""
    nib, scales, _ = quantize_int4(w2d.detach().float().numpy().T, group_size, False, "float16")
    v = nib.astype(np.int16) - 8
    return (torch.from_numpy(np.ascontiguousarray(v.T).astype(np.int8)),
            torch.from_numpy(np.ascontiguousarray(scales.T)))


def storage_record(fmt: str, w_numel: int, weight_bits: int, scales: torch.Tensor,
             bias: torch.Tensor | None, act: ActQuant | None, group_size: int | None) -> dict:
    """The ``lowbit_storage`` record shared by quantized and QAT layers (read by ``profile``).

    bytes: weight values bit-packed (ceil(numel * bits / 8)), their scales in the stored
    dtype, the float32 bias, and static activation parameters (float32 scale, int32 zero
    point when asymmetric).
    """
    nbytes = math.ceil(w_numel * weight_bits / 8) + scales.numel() * scales.element_size()
    if bias is not None:
        nbytes += bias.numel() * 4
    if act is not None and act.mode == "static":
        nbytes += 4 + (0 if act.symmetric else 4)
    params = w_numel + (0 if bias is None else bias.numel())  # logical weights + biases
    return {"format": fmt, "bytes": int(nbytes), "weight_bits": float(weight_bits),
            "act_bits": 32 if act is None else act.bits, "sparsity": 0.0, "params": int(params),
            "group_size": group_size, "scale_dtype": str(scales.dtype).removeprefix("torch.")}


def weight_format_name(spec: QuantSpec) -> str:
    """Format name of b-bit symmetric weights with float32 scales: "int8" (per channel or per
    tensor: the kernels' int8 format), else "int<b>-channel", "int<b>-tensor" or
    "int<b>-g<size>". The kernels' grouped int4 format (float16 scales) is named "int4"."""
    g = spec.granularity
    if spec.bits == 8 and not isinstance(g, PerGroup):
        return "int8"
    kind = {PerChannel: "channel", PerTensor: "tensor"}.get(type(g)) or f"g{g.size}"
    return f"int{spec.bits}-{kind}"


class _QuantLayer(nn.Module):
    """Shared state and arithmetic of QuantLinear / QuantConv2d."""

    def __init__(self, weight_q: torch.Tensor, weight_scale: torch.Tensor,
                 bias: torch.Tensor | None, *, weight_spec: QuantSpec,
                 act: ActQuant | None = None, act_scale: float | torch.Tensor | None = None,
                 act_zero_point: int | torch.Tensor = 0, weight_format: str | None = None
                 ) -> None:
        super().__init__()
        if weight_q.dtype != torch.int8:
            raise TypeError(f"weight_q: must be int8, got {weight_q.dtype}")
        want = weight_spec.granularity.param_shape(weight_q.shape)
        if tuple(weight_scale.shape) != tuple(want):
            raise ValueError(f"weight_scale: expected shape {want} for {weight_spec.granularity}"
                             f", got {tuple(weight_scale.shape)}")
        if act is not None and isinstance(weight_spec.granularity, PerGroup):
            raise ValueError("quantized activations need per-tensor or per-channel weights; "
                             "per-group weights are weight-only here (act=None)")
        if isinstance(weight_spec.granularity, PerChannel) and \
                weight_spec.granularity.axis % weight_q.dim() != 0:
            raise ValueError("weight granularity: per-channel weights are per output channel; "
                             "use PerChannel(0)")
        self.weight_spec = weight_spec
        self.weight_format = weight_format or weight_format_name(weight_spec)
        self.act = act
        self.register_buffer("weight_q", weight_q.contiguous())
        self.register_buffer("weight_scale", weight_scale.detach().clone())
        self.register_buffer("bias", None if bias is None else
                             bias.detach().float().clone())
        if act is not None and act.mode == "static":
            if act_scale is None:
                raise ValueError("act_scale: static activations need a calibrated scale")
            s = torch.as_tensor(act_scale, dtype=torch.float32).reshape(())
            if not (torch.isfinite(s) and s > 0):
                raise ValueError(f"act_scale: must be finite and positive, got {float(s)}")
            qmin, qmax = act.spec.qrange
            z = int(act_zero_point)
            if not qmin <= z <= qmax:
                raise ValueError(f"act_zero_point: must lie in [{qmin}, {qmax}], got {z}")
            self.register_buffer("act_scale", s.clone())
            self.register_buffer("act_zero_point", torch.tensor(z, dtype=torch.int32))
        self.out_quant: OutQuant | None = None

    def set_output_quant(self, out: OutQuant | None) -> None:
        """Requantize the output as ``out`` says (a fused W8A8 chain), or None for float
        output. Only a layer with static activations has the per-channel requantization
        multiplier (its activation scale is a constant)."""
        if out is not None:
            if self.act is None or self.act.mode != "static":
                raise ValueError("out: only a layer with static activations requantizes its "
                                 "output")
            self._requant_params(out)  # raises if the requantization scale is unusable
        self.out_quant = out

    def _requant_params(self, out: OutQuant):
        b = None if self.bias is None else self.bias.numpy()
        return requantize_params(float(self.act_scale), self._w_scale_vector().numpy(),
                                 float(out.scale), b)

    def _requantized(self, acc: torch.Tensor, channel_dim: int
                     ) -> tuple[torch.Tensor, np.ndarray]:
        """(float32 (q - zp) * s, int32 q) of the exact accumulator ``acc`` (float64)."""
        out = self.out_quant
        mult, shift, bias_q = self._requant_params(out)
        acc_last = _as_int32(acc.movedim(channel_dim, -1).to(torch.int64).numpy())
        lo, hi = out.bounds
        q = kernel_ref.requantize(acc_last, mult, shift, out.zero_point, lo, hi, bias_q,
                                  np.int32)
        y = (torch.from_numpy(q - out.zero_point).to(torch.float32)
             * torch.tensor(out.scale, dtype=torch.float32))
        return y.movedim(-1, channel_dim), q

    # -- weights ---------------------------------------------------------------------------
    def dequantized_weight(self) -> torch.Tensor:
        """float32 q_w * s_w in the weight's shape."""
        zeros = torch.zeros(self.weight_scale.shape, dtype=torch.int32)
        return dequantize(self.weight_q, self.weight_scale.float(), zeros, self.weight_spec)

    def _w_scale_vector(self) -> torch.Tensor:
        """float32 [N] per output channel (a per-tensor scale repeated)."""
        n = self.weight_q.shape[0]
        return self.weight_scale.float().reshape(-1).expand(n) if \
            self.weight_scale.numel() == 1 else self.weight_scale.float().reshape(n)

    # -- activations -----------------------------------------------------------------------
    def _static_quantize(self, x: torch.Tensor) -> torch.Tensor:
        s = self.act_scale.reshape(1, 1)
        z = self.act_zero_point.reshape(1, 1)
        return quantize_tensor(x, s, z, self.act.spec)

    def _epilogue(self, acc: torch.Tensor, a_scale: torch.Tensor, channel_dim: int
                  ) -> torch.Tensor:
        """float32(acc) * (a_scale * w_scale) + bias, channels along ``channel_dim``."""
        shape = [1] * acc.dim()
        shape[channel_dim] = -1
        w_s = self._w_scale_vector().reshape(shape)
        out = acc.to(torch.float32) * (a_scale * w_s)
        if self.bias is not None:
            out = out + self.bias.reshape(shape)
        return out

    def lowbit_storage(self) -> dict:
        """Stored format: {"format", "bytes", "weight_bits", "act_bits", "sparsity",
        "params", "group_size", "scale_dtype"} (bytes: every stored byte, see ``storage_record``)."""
        g = self.weight_spec.granularity
        return storage_record(self.weight_format, self.weight_q.numel(), self.weight_spec.bits,
                        self.weight_scale, self.bias, self.act,
                        g.size if isinstance(g, PerGroup) else None)

    def extra_repr(self) -> str:
        act = "float" if self.act is None else \
            f"{self.act.mode} {'s' if self.act.symmetric else 'u'}{self.act.bits}"
        out = "" if self.out_quant is None else \
            f", out=requantized {self.out_quant.bounds} zp={self.out_quant.zero_point}"
        return f"weight={self.weight_format} {self.weight_spec.granularity}, act={act}{out}"


class QuantLinear(_QuantLayer):
    """Integer-simulated nn.Linear (see the module docstring for the exact arithmetic).

    Build with ``QuantLinear.from_float(linear, weight_spec, act=...)``; usually made by
    ``lowbit.compress.quantize``.

    Example:
        >>> lin = nn.Linear(4, 2)
        >>> q = QuantLinear.from_float(lin, QuantSpec(8, True, PerChannel(0)),
        ...                            act=ActQuant("dynamic"))
        >>> q(torch.ones(3, 4)).shape
        torch.Size([3, 2])
    """

    @classmethod
    def from_float(cls, linear: nn.Linear, weight_spec: QuantSpec, *,
                   act: ActQuant | None = None, act_scale=None, act_zero_point=0
                   ) -> "QuantLinear":
        w_q, s = quantize_weight(linear.weight, weight_spec)
        return cls(w_q, s, linear.bias, weight_spec=weight_spec, act=act, act_scale=act_scale,
                   act_zero_point=act_zero_point)

    @classmethod
    def from_float_int4(cls, linear: nn.Linear, group_size: int) -> "QuantLinear":
        """Weight-only int4 in the kernels' format (float16 group scales, ``quantize_int4``)."""
        v, s = quantize_weight_int4(linear.weight, group_size)
        return cls(v, s, linear.bias, weight_spec=QuantSpec(4, True, PerGroup(group_size)),
                   weight_format="int4")

    @property
    def in_features(self) -> int:
        return self.weight_q.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight_q.shape[0]

    def _quantized_rows(self, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(q_a [M, K], a_scale float32 [M, 1], zero point) of the rows x2 [M, K]."""
        if self.act.mode == "dynamic":
            q, s = dynamic_quantize_rows(x2, self.act.bits)
            return q, s[:, None], 0
        q = self._static_quantize(x2)
        return q, self.act_scale.expand(x2.shape[0]).reshape(-1, 1), int(self.act_zero_point)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.act is None:
            return F.linear(x, self.dequantized_weight(), self.bias)
        lead = x.shape[:-1]
        q, a_s, z = self._quantized_rows(x.reshape(-1, self.in_features))
        acc = F.linear(q.double() - z, self.weight_q.double())  # exact: integer sums < 2^53
        y = self._epilogue(acc, a_s, 1) if self.out_quant is None else \
            self._requantized(acc, 1)[0]
        return y.reshape(*lead, self.out_features)

    def integer_trace(self, x: torch.Tensor) -> IntegerTrace:
        """The integer GEMM operands and result for input ``x`` (see ``IntegerTrace``)."""
        x2 = x.float().reshape(-1, self.in_features)
        out = self.forward(x2).detach().numpy()
        w_q = self.weight_q.numpy()
        b = None if self.bias is None else self.bias.numpy()
        if self.act is None:
            return IntegerTrace(None, None, 0, w_q, self.weight_scale.numpy(), None, b, out)
        q, a_s, z = self._quantized_rows(x2)
        a_q = q.numpy()
        acc = (a_q.astype(np.int64) - z) @ w_q.astype(np.int64).T
        out_q = None if self.out_quant is None else \
            self._requantized(torch.from_numpy(acc.astype(np.float64)), 1)[1]
        return IntegerTrace(a_q, a_s.reshape(-1).numpy(), z, w_q,
                            self._w_scale_vector().numpy().copy(), _as_int32(acc), b, out, out_q)


class QuantConv2d(_QuantLayer):
    """Integer-simulated nn.Conv2d (any ``groups``, numeric zero padding); arithmetic as
    QuantLinear with the im2col GEMM, one per channel group (dynamic activations: one scale
    per image).

    Example:
        >>> conv = nn.Conv2d(4, 4, 3, padding=1, groups=4)      # depthwise
        >>> q = QuantConv2d.from_float(conv, QuantSpec(8, True, PerChannel(0)),
        ...                            act=ActQuant("dynamic"))
        >>> q(torch.ones(1, 4, 5, 5)).shape
        torch.Size([1, 4, 5, 5])
    """

    def __init__(self, weight_q, weight_scale, bias, *, stride=1, padding=0, dilation=1,
                 groups: int = 1, **kwargs) -> None:
        if weight_q.dim() != 4:
            raise ValueError(f"weight_q: expected [out, in / groups, kh, kw], got shape "
                             f"{tuple(weight_q.shape)}")
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or \
                weight_q.shape[0] % groups:
            raise ValueError(f"groups: must be a positive int dividing the {weight_q.shape[0]} "
                             f"output channels, got {groups!r}")
        super().__init__(weight_q, weight_scale, bias, **kwargs)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups

    @staticmethod
    def check_supported(conv: nn.Conv2d) -> None:
        """Raise ValueError unless ``conv`` is a zero-padded Conv2d with numeric padding."""
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"Conv2d(padding={conv.padding!r}, padding_mode="
                             f"{conv.padding_mode!r}): only numeric zero padding is quantized; "
                             f"give the padding as numbers or exclude the layer with filter_fn")

    @classmethod
    def _geometry(cls, conv: nn.Conv2d) -> dict:
        cls.check_supported(conv)
        return {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation,
                "groups": conv.groups}

    @classmethod
    def from_float(cls, conv: nn.Conv2d, weight_spec: QuantSpec, *,
                   act: ActQuant | None = None, act_scale=None, act_zero_point=0
                   ) -> "QuantConv2d":
        geo = cls._geometry(conv)
        w_q, s = quantize_weight(conv.weight, weight_spec)
        return cls(w_q, s, conv.bias, weight_spec=weight_spec, act=act, act_scale=act_scale,
                   act_zero_point=act_zero_point, **geo)

    @classmethod
    def from_float_int4(cls, conv: nn.Conv2d, group_size: int) -> "QuantConv2d":
        """Weight-only int4 (groups along the flattened (C / groups) * kh * kw of each
        filter)."""
        geo = cls._geometry(conv)
        v, s = quantize_weight_int4(conv.weight.reshape(conv.out_channels, -1), group_size)
        return cls(v.reshape(conv.weight.shape), s, conv.bias,
                   weight_spec=QuantSpec(4, True, PerGroup(group_size)), weight_format="int4",
                   **geo)

    @property
    def kernel_size(self) -> tuple[int, int]:
        return tuple(self.weight_q.shape[2:])

    def _conv(self, x: torch.Tensor, w: torch.Tensor, bias=None) -> torch.Tensor:
        return F.conv2d(x, w, bias, self.stride, self.padding, self.dilation, self.groups)

    def _quantized_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(q_a, a_scale float32 [B, 1, 1, 1], zero point) of the input images x."""
        if self.act.mode == "dynamic":
            q, s = dynamic_quantize_rows(x.reshape(x.shape[0], -1), self.act.bits)
            return q.reshape(x.shape), s.reshape(-1, 1, 1, 1), 0
        s = self.act_scale.expand(x.shape[0]).reshape(-1, 1, 1, 1)
        return self._static_quantize(x), s, int(self.act_zero_point)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.act is None:
            return self._conv(x, self.dequantized_weight(), self.bias)
        q, a_s, z = self._quantized_input(x)
        # (q - z) is 0 where the float input is 0, so zero padding stays exact.
        acc = self._conv(q.double() - z, self.weight_q.double())
        return self._epilogue(acc, a_s, 1) if self.out_quant is None else \
            self._requantized(acc, 1)[0]

    def integer_trace(self, x: torch.Tensor) -> IntegerTrace:
        """im2col form of the integer GEMMs for input ``x`` [B, C, H, W] (see IntegerTrace:
        with groups, a_q holds every group's columns and acc every group's channels)."""
        x = x.float()
        y = self.forward(x).detach()
        out = y.permute(0, 2, 3, 1).reshape(-1, y.shape[1]).numpy()
        n = self.weight_q.shape[0]
        w_q = self.weight_q.reshape(n, -1).numpy()
        b = None if self.bias is None else self.bias.numpy()
        if self.act is None:
            return IntegerTrace(None, None, 0, w_q, self.weight_scale.numpy(), None, b, out,
                                groups=self.groups)
        q, a_s, z = self._quantized_input(x)
        # F.unfold's K runs (channel, kh, kw) with the channel outermost: group g's K values
        # are the columns g K:(g + 1) K.
        cols = F.unfold(q.double() - z, self.kernel_size, self.dilation, self.padding,
                        self.stride)                                 # [B, G K, L]
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1]) + z   # padding holds z
        a_q = rows.to(q.dtype).numpy()
        a_scale = a_s.reshape(-1, 1).expand(-1, cols.shape[2]).reshape(-1).numpy()
        k, ng = w_q.shape[1], n // self.groups
        a = a_q.astype(np.int64) - z
        w = w_q.astype(np.int64)
        acc = np.concatenate([a[:, g * k:(g + 1) * k] @ w[g * ng:(g + 1) * ng].T
                              for g in range(self.groups)], axis=1)
        out_q = None if self.out_quant is None else \
            self._requantized(torch.from_numpy(acc.astype(np.float64)), 1)[1]
        return IntegerTrace(a_q, a_scale.copy(), z, w_q, self._w_scale_vector().numpy().copy(),
                            _as_int32(acc), b, out, out_q, self.groups)

    def extra_repr(self) -> str:
        geo = "" if self.groups == 1 else f"groups={self.groups}, "
        return geo + super().extra_repr()


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _as_int32(acc: np.ndarray) -> np.ndarray:
    if acc.size and (acc.min() < -(2 ** 31) or acc.max() > 2 ** 31 - 1):
        raise OverflowError("the integer accumulator leaves int32; the kernels would need K "
                            "split (see lowbit.kernels.max_safe_k)")
    return acc.astype(np.int32)


QUANT_LAYERS = (QuantLinear, QuantConv2d)
