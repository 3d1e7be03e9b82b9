"""Quantization-aware training: FakeQuantize, QATLinear / QATConv2d, and ``convert``.

``FakeQuantize`` quantizes and dequantizes in the forward pass (``qfunc``):

* min/max scales: weights use their current range at every call (``momentum=None``);
  activations keep running min/max buffers updated in training mode,
  r <- (1 - momentum) r + momentum * batch (the first batch sets r), frozen in eval mode;
  backward: straight-through estimator with clipping;
* ``learnable=True``: LSQ (Esser et al. 2020) scale (and zero point for asymmetric
  activations), initialised from the first tensor seen as s = 2 mean|x| / sqrt(Qp) (the
  paper's rule), gradients scaled by 1 / sqrt(N * Qp).

``convert(model)`` replaces every QAT layer by the integer simulation (QuantLinear /
QuantConv2d) with the same scales and zero points, so in eval mode it computes what the fake
quantized model computes, up to float rounding of the final products.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .qfunc import (QuantSpec, fake_quantize, lsq_fake_quantize, qparams, quantize_tensor,
                    tensor_qparams)
from .qmodules import (ActQuant, QuantConv2d, QuantLinear, storage_record,
                       weight_format_name)
from .swap import replace_module


class FakeQuantize(nn.Module):
    """Quantize-dequantize ``x`` as ``spec`` says (see module docstring).

    Args:
        spec: bits, symmetric, granularity.
        momentum: running min/max momentum, or None to use the current tensor's range.
        learnable: LSQ scale (and zero point) parameters instead of min/max.
        param_shape: shape of the scale ([A, G] of the granularity; (1, 1) per tensor).

    Example:
        >>> fq = FakeQuantize(QuantSpec(8, False), momentum=0.1)
        >>> fq(torch.tensor([0.0, 1.0, 2.0])).shape
        torch.Size([3])
        >>> fq.precision
        8
    """

    def __init__(self, spec: QuantSpec, *, momentum: float | None = 0.1,
                 learnable: bool = False, param_shape: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        if momentum is not None and not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum: must lie in (0, 1] or be None, got {momentum!r}")
        self.spec = spec
        self.momentum = momentum
        self.learnable = learnable
        self.register_buffer("running_min", torch.zeros(param_shape))
        self.register_buffer("running_max", torch.zeros(param_shape))
        self.register_buffer("observed", torch.zeros((), dtype=torch.long))
        if learnable:
            self.scale = nn.Parameter(torch.ones(param_shape))
            self.zero_point = None if spec.symmetric else \
                nn.Parameter(torch.zeros(param_shape))

    @property
    def precision(self) -> int:
        return self.spec.bits

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        xb = self.spec.granularity.blocks(x.detach().float())
        lo, hi = xb.amin(dim=2), xb.amax(dim=2)
        if self.observed == 0 or self.momentum is None:
            self.running_min.copy_(lo)
            self.running_max.copy_(hi)
        else:
            m = self.momentum
            self.running_min.mul_(1 - m).add_(lo, alpha=m)
            self.running_max.mul_(1 - m).add_(hi, alpha=m)
        if self.learnable and self.observed == 0:
            qp = self.spec.positive_levels
            s = 2 * xb.abs().mean(dim=2) / math.sqrt(qp)
            s = torch.where(s > 0, s, torch.ones_like(s))
            self.scale.copy_(s)
            if not self.spec.symmetric:
                qmin, qmax = self.spec.qrange
                self.zero_point.copy_(torch.clamp(torch.round(-torch.clamp(lo, max=0) / s),
                                                  qmin, qmax))
        self.observed += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.momentum is None:
            self._observe(x)
        if self.observed == 0:
            raise RuntimeError("FakeQuantize: no range observed yet; run training batches "
                               "(model.train()) before evaluating a QAT model")
        if self.learnable:
            zp = torch.zeros_like(self.scale) if self.zero_point is None else self.zero_point
            return lsq_fake_quantize(x, torch.clamp(self.scale, min=1e-12), zp, self.spec)
        scale, zp = self.qparams()
        return fake_quantize(x, scale, zp, self.spec)

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale float32, zero point int32) the forward pass uses, shaped [A, G]."""
        if self.observed == 0:
            raise RuntimeError("FakeQuantize: no range observed yet; train the QAT model first")
        if self.learnable:
            scale = torch.clamp(self.scale.detach().float(), min=1e-12)
            if self.spec.symmetric:
                return scale, torch.zeros(scale.shape, dtype=torch.int32)
            qmin, qmax = self.spec.qrange
            zp = torch.clamp(torch.round(self.zero_point.detach()), qmin, qmax)
            return scale, zp.to(torch.int32)
        return qparams(self.running_min, self.running_max, self.spec)

    def extra_repr(self) -> str:
        kind = "lsq" if self.learnable else ("current" if self.momentum is None
                                             else f"ema({self.momentum})")
        sym = "s" if self.spec.symmetric else "u"
        return f"{sym}{self.spec.bits} {self.spec.granularity}, range={kind}"


class _QATLayer(nn.Module):
    """Shared parts of QATLinear / QATConv2d: weight + bias of the float layer and two
    FakeQuantize modules."""

    def __init__(self, layer: nn.Linear | nn.Conv2d, weight_spec: QuantSpec,
                 act_spec: QuantSpec | None, *, learnable: bool, momentum: float) -> None:
        super().__init__()
        if not weight_spec.symmetric:
            raise ValueError("weight_spec: weights are quantized symmetrically")
        self.weight = layer.weight
        self.bias = layer.bias
        self.weight_fq = FakeQuantize(
            weight_spec, momentum=None, learnable=learnable,
            param_shape=weight_spec.granularity.param_shape(layer.weight.shape))
        self.act_fq = None if act_spec is None else FakeQuantize(
            act_spec, momentum=momentum, learnable=learnable)

    def _inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xa = x if self.act_fq is None else self.act_fq(x)
        return xa, self.weight_fq(self.weight)

    def _convert_args(self) -> dict:
        """Keyword arguments of the integer layer with this layer's current qparams."""
        spec = self.weight_fq.spec
        if self.weight_fq.learnable:
            w_scale, _ = self.weight_fq.qparams()
        else:  # the current weights' range, as the forward pass uses
            w_scale, _ = tensor_qparams(self.weight, spec)
        zeros = torch.zeros(w_scale.shape, dtype=torch.int32)
        kw = {"weight_q": quantize_tensor(self.weight.detach(), w_scale, zeros, spec),
              "weight_scale": w_scale, "bias": None if self.bias is None else self.bias.detach(),
              "weight_spec": spec}
        if self.act_fq is not None:
            a_spec = self.act_fq.spec
            s, z = self.act_fq.qparams()
            kw.update(act=ActQuant("static", a_spec.bits, a_spec.symmetric),
                      act_scale=s.reshape(()), act_zero_point=int(z.reshape(())))
        return kw

    def lowbit_storage(self) -> dict:
        """Storage of the integer layer ``convert`` makes (see QuantLinear.lowbit_storage)."""
        spec = self.weight_fq.spec
        g = spec.granularity
        act = None if self.act_fq is None else \
            ActQuant("static", self.act_fq.spec.bits, self.act_fq.spec.symmetric)
        scales = torch.empty(g.param_shape(self.weight.shape), dtype=torch.float32)
        return storage_record(weight_format_name(spec), self.weight.numel(), spec.bits, scales,
                        self.bias, act, getattr(g, "size", None))


class QATLinear(_QATLayer):
    """nn.Linear with fake-quantized input and weight (training); ``convert`` -> QuantLinear.

    Example:
        >>> m = QATLinear(nn.Linear(4, 2), QuantSpec(4, True), QuantSpec(4, False))
        >>> m(torch.randn(3, 4)).shape
        torch.Size([3, 2])
    """

    def __init__(self, linear: nn.Linear, weight_spec: QuantSpec, act_spec: QuantSpec | None,
                 *, learnable: bool = False, momentum: float = 0.1) -> None:
        super().__init__(linear, weight_spec, act_spec, learnable=learnable, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xa, w = self._inputs(x)
        return F.linear(xa, w, self.bias)

    def to_quantized(self) -> QuantLinear:
        return QuantLinear(**self._convert_args())


class QATConv2d(_QATLayer):
    """nn.Conv2d (any ``groups``, numeric zero padding) with fake-quantized input and
    weight; ``convert`` -> QuantConv2d.

    Example:
        >>> m = QATConv2d(nn.Conv2d(4, 4, 3, groups=4), QuantSpec(4, True),
        ...               QuantSpec(4, False))
        >>> m(torch.randn(2, 4, 5, 5)).shape
        torch.Size([2, 4, 3, 3])
    """

    def __init__(self, conv: nn.Conv2d, weight_spec: QuantSpec, act_spec: QuantSpec | None,
                 *, learnable: bool = False, momentum: float = 0.1) -> None:
        QuantConv2d.check_supported(conv)
        super().__init__(conv, weight_spec, act_spec, learnable=learnable, momentum=momentum)
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.groups = conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xa, w = self._inputs(x)
        return F.conv2d(xa, w, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def to_quantized(self) -> QuantConv2d:
        return QuantConv2d(stride=self.stride, padding=self.padding, dilation=self.dilation,
                           groups=self.groups, **self._convert_args())


QAT_LAYERS = (QATLinear, QATConv2d)


def convert(model: nn.Module) -> nn.Module:
    """Replace every QATLinear / QATConv2d of ``model`` (in place) by its integer simulation.

    The integer layers use the scales and zero points the fake quantizers use in eval mode;
    returns ``model`` (in eval mode). Raises if the model has no QAT layer.

    Example:
        >>> m = nn.Sequential(QATLinear(nn.Linear(4, 2), QuantSpec(8, True),
        ...                             QuantSpec(8, False)))
        >>> _ = m(torch.randn(5, 4))                # a training step observes the ranges
        >>> type(convert(m)[0]).__name__
        'QuantLinear'
    """
    names = [n for n, m in model.named_modules() if isinstance(m, QAT_LAYERS)]
    if not names:
        raise ValueError("convert: the model has no QAT layer; apply "
                         "quantize(model, QATConfig(...)) and train it first")
    for name in names:
        replace_module(model, name, model.get_submodule(name).to_quantized())
    return model.eval()

