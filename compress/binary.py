"""Binarization (XNOR-Net): ``quantize(model, BinaryConfig())`` -> BinaryLinear / BinaryConv2d.

Rastegari et al., "XNOR-Net: ImageNet Classification Using Binary Convolutional Neural
Networks", ECCV 2016. Weights and inputs are replaced by their signs, scaled back:

    y[i, j] = (sum_k sign(x[i, k]) sign(W[j, k])) * beta[i] * alpha[j] + bias[j]

* sign(v) = +1 for v >= 0 (zero included) and -1 for v < 0, the rule of the kernels' binary
  format (``lowbit.kernels.formats``: x >= 0 is bit 1);
* alpha[j] = mean_k |W[j, k]|, one per output channel (XNOR-Net eq. 4);
* beta[i] = mean_k |x[i, k]| of the row the dot product reads: per row of x.reshape(-1, K)
  for Linear; for Conv2d per output pixel, the mean of |x| over its C x kh x kw receptive
  field (XNOR-Net's K matrix, K = A * k with A the channel mean of |I| and k a box filter);
  a grouped Conv2d (``groups`` = G) runs one binary GEMM per channel group, K = (C / G) kh kw,
  with a beta per output pixel and group over that group's C / G input channels;
* the integer part sum_k sign * sign = K - 2 popcount(a XOR w) is what
  ``lowbit.kernels.gemm_binary`` computes, and its fused epilogue float32
  ``dot * beta[i] * alpha[j]`` (left to right) is the one used here, so
  ``binary_trace(x)`` feeds the kernel directly and the outputs agree bit for bit.

Convolutions zero-pad *before* binarizing: a padded position holds 0, whose sign is +1 and
whose |x| adds 0 to beta. That is what the im2col rows of the padded input give the binary
kernel (it has no 0 value); XNOR-Net codes that pad the +-1 map with 0 compute a ternary sum
no popcount kernel reproduces.

Training: the float weights stay the trained parameters (BinaryConnect's latent weights);
sign has the straight-through estimator with clipping, d sign(v) / dv = 1 where |v| <= 1,
else 0 (Hubara et al. 2016), and alpha, beta are differentiable functions of W and x, which
gives XNOR-Net's weight gradient (eq. 7: the sign term plus the 1/n term of alpha).

Sign after a ReLU is +1 everywhere: binary layers want zero-centred input (XNOR-Net's block
is BatchNorm -> sign -> conv -> pool), and a training batch whose input to a binary layer
has no negative value gets a warning.

First and last layers stay in floating point by default (``keep_first`` / ``keep_last``; they
may then be quantized to int8 with another config and ``filter_fn``).

    >>> from lowbit.compress import BinaryConfig, quantize
    >>> m = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.Linear(32, 32),
    ...                   nn.BatchNorm1d(32), nn.Linear(32, 4))
    >>> quantize(m, BinaryConfig())[2].lowbit_storage()["weight_bits"]
    1.0
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lowbit.kernels import gemm_binary, pack_binary_activations
from lowbit.kernels.formats import BINARY_PANELS

from .api import _no_calibration, _swap, register_handler

__all__ = ["BinaryConfig", "BinaryLinear", "BinaryConv2d", "BinaryTrace", "sign_ste",
           "binary_signs", "use_binary_kernels", "BINARY_LAYERS"]

STE_CLIP = 1.0  # |v| <= 1 passes the gradient (Hubara et al. 2016; XNOR-Net)


@dataclass(frozen=True)
class BinaryConfig:
    """XNOR-Net binarization of weights and activations (see the module doc).

    Args:
        keep_first: leave the first selected layer (in ``named_modules`` order) in float.
        keep_last: leave the last selected layer in float.

    Example:
        >>> BinaryConfig(keep_first="yes")
        Traceback (most recent call last):
        TypeError: keep_first: must be True or False, got 'yes'
    """

    keep_first: bool = True
    keep_last: bool = True

    def __post_init__(self) -> None:
        for name in ("keep_first", "keep_last"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: must be True or False, got {getattr(self, name)!r}")


def binary_signs(x: torch.Tensor) -> torch.Tensor:
    """+1 where x >= 0 (zero and -0.0 included), -1 where x < 0, in x's dtype."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return binary_signs(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= STE_CLIP).to(grad.dtype)


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """``binary_signs(x)`` with the clipped straight-through gradient (1 where |x| <= 1).

    Example:
        >>> x = torch.tensor([-2.0, -0.5, 0.0, 3.0], requires_grad=True)
        >>> y = sign_ste(x); y.sum().backward(); y.detach(), x.grad
        (tensor([-1., -1.,  1.,  1.]), tensor([0., 1., 1., 0.]))
    """
    return _SignSTE.apply(x)


@dataclass(frozen=True, eq=False)
class BinaryTrace:
    """The binary GEMM of one layer call, as ``gemm_binary`` takes it (numpy arrays).

    Rows i: Linear: rows of x.reshape(-1, K); Conv2d: im2col rows of the zero-padded input
    in (image, oh, ow) order, K in (channel, kh, kw) order.

    a_bits: uint64 [M, G * ceil(K/64)], the signs of the rows (``pack_binary_activations``);
    w_bits: uint64 [N, ceil(K/64)], the signs of the weight rows in the same format (pass
    them to ``gemm_binary`` as raw rows, or ``pack_weights(w_signs, "binary", layout="nk")``);
    k: K; dot: int32 [M, N] = K - 2 popcount(a_i XOR w_j); alpha: float32 [N];
    beta: float32 [M] ([M, G] with groups); bias: float32 [N] or None; out: float32 [M, N],
    the layer's output; groups: G, the conv's channel groups (1 for Linear). With G > 1 each
    group is one GEMM (``group(g)``): the words g W:(g + 1) W of a_bits (W = ceil(K/64), its
    input channels), column g of beta, and the channels g N / G:(g + 1) N / G of the rest.
    """

    a_bits: np.ndarray
    w_bits: np.ndarray
    k: int
    dot: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    bias: np.ndarray | None
    out: np.ndarray
    groups: int = 1

    def group(self, g: int) -> "BinaryTrace":
        """Channel group g's binary GEMM as a one-group BinaryTrace (see the class doc)."""
        if not 0 <= g < self.groups:
            raise ValueError(f"g: must lie in [0, {self.groups}), got {g!r}")
        if self.groups == 1:
            return self
        n, words = self.w_bits.shape[0] // self.groups, self.w_bits.shape[1]
        c = slice(g * n, (g + 1) * n)
        return BinaryTrace(self.a_bits[:, g * words:(g + 1) * words], self.w_bits[c], self.k,
                           self.dot[:, c], self.alpha[c], self.beta[:, g],
                           None if self.bias is None else self.bias[c], self.out[:, c])


def _popcount_dot(a_bits: np.ndarray, w_bits: np.ndarray, k: int) -> np.ndarray:
    """int32 K - 2 popcount(a_i XOR w_j) over the first K bits of each row."""
    a, w = a_bits.copy(), w_bits.copy()
    if k % 64:  # padding bits past K never count
        mask = np.uint64((1 << (k % 64)) - 1)
        a[:, -1] &= mask
        w[:, -1] &= mask
    diff = np.zeros((a.shape[0], w.shape[0]), dtype=np.int64)
    for q in range(a.shape[1]):  # one word of K at a time: [M, N] popcounts
        diff += np.bitwise_count(a[:, q, None] ^ w[None, :, q])
    return (k - 2 * diff).astype(np.int32)


class _BinaryLayer(nn.Module):
    """Shared parts: the latent float weight and bias, alpha, storage, the kernel switch."""

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None) -> None:
        super().__init__()
        self.weight = weight
        self.bias = bias
        self.use_kernel = False
        self.kernel_isa: str | None = None
        self._warned = False

    @property
    def precision(self) -> int:
        return 1

    def alpha(self) -> torch.Tensor:
        """float32 [N]: mean |W| of each output channel."""
        return self.weight.float().abs().reshape(self.weight.shape[0], -1).mean(dim=1)

    def reduction_size(self) -> int:
        return self.weight[0].numel()

    def _check_input(self, x: torch.Tensor) -> None:
        if (self.training and torch.is_grad_enabled() and not self._warned and x.numel()
                and bool(x.min() >= 0)):
            self._warned = True
            warnings.warn(f"{type(self).__name__}: a training batch has no negative input, so "
                          f"every input sign is +1; put BatchNorm, not ReLU, before binary "
                          f"layers (XNOR-Net: BN -> sign -> conv)", RuntimeWarning,
                          stacklevel=3)

    groups = 1  # channel groups: one binary GEMM each (BinaryConv2d sets its own)

    def _kernel_rows(self, rows: torch.Tensor, beta: torch.Tensor,
                     channels: slice = slice(None)) -> torch.Tensor:
        """float32 rows [M, n] from gemm_binary with the fused alpha / beta epilogue, + bias,
        for the output ``channels`` (one channel group's filters, all by default)."""
        if self.training:
            raise RuntimeError(f"{type(self).__name__}: the kernel path is for inference; call "
                               f"model.eval() (or use_binary_kernels(model, False) to train)")
        k = self.reduction_size()
        w = self.weight.detach().float().reshape(self.weight.shape[0], -1)[channels].numpy()
        out = gemm_binary(pack_binary_activations(rows.detach().float().numpy()),
                          pack_binary_activations(w), k,
                          alpha=self.alpha().detach()[channels].numpy(),
                          beta=beta.detach().reshape(-1).numpy(), isa=self.kernel_isa)
        y = torch.from_numpy(out)
        return y if self.bias is None else y + self.bias.detach().float()[channels]

    def lowbit_storage(self) -> dict:
        """1-bit weights in the kernels' binary panels (padding included, per channel group),
        float32 alpha per output channel and bias; 1-bit activations (beta is computed at run
        time)."""
        n, k = self.weight.shape[0], self.reduction_size()
        nbytes = self.groups * BINARY_PANELS.nbytes(k, n // self.groups) + 4 * n
        params = n * k
        if self.bias is not None:
            nbytes += 4 * n
            params += n
        return {"format": BINARY_PANELS.name, "bytes": int(nbytes), "weight_bits": 1.0,
                "act_bits": 1, "sparsity": 0.0, "params": int(params)}

    def extra_repr(self) -> str:
        return f"xnor, alpha per channel, kernel={'on' if self.use_kernel else 'off'}"


class BinaryLinear(_BinaryLayer):
    """XNOR-Net nn.Linear: y = (sign(x) @ sign(W)^T) * beta * alpha + bias (module doc),
    beta[i] = mean |x[i, :]| per row.

    Example:
        >>> b = BinaryLinear.from_float(nn.Linear(8, 4))
        >>> b(torch.randn(3, 8)).shape
        torch.Size([3, 4])
    """

    @classmethod
    def from_float(cls, linear: nn.Linear) -> "BinaryLinear":
        """Binarize ``linear`` (its weight and bias Parameters become this layer's)."""
        return cls(linear.weight, linear.bias)

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x: last dimension {x.shape[-1]} != in_features "
                             f"{self.in_features}")
        x = x.float()
        self._check_input(x)
        beta = x.abs().mean(dim=-1, keepdim=True)
        if self.use_kernel:
            lead = x.shape[:-1]
            y = self._kernel_rows(x.reshape(-1, self.in_features), beta)
            return y.reshape(*lead, self.out_features)
        dot = F.linear(sign_ste(x), sign_ste(self.weight.float()))
        out = dot * beta * self.alpha()
        return out if self.bias is None else out + self.bias

    @torch.no_grad()
    def binary_trace(self, x: torch.Tensor) -> BinaryTrace:
        """The binary GEMM operands and result for input ``x`` (see ``BinaryTrace``)."""
        rows = x.float().reshape(-1, self.in_features)
        out = self.forward(rows).numpy()
        beta = rows.abs().mean(dim=-1)
        return _trace(self, rows, beta, out)


class BinaryConv2d(_BinaryLayer):
    """XNOR-Net nn.Conv2d (any ``groups``, numeric zero padding): the input is zero-padded,
    then y = conv(sign(x_pad), sign(W)) * beta * alpha + bias, beta per output pixel (and
    channel group) = mean |x_pad| over its receptive field (module doc).

    Example:
        >>> b = BinaryConv2d.from_float(nn.Conv2d(2, 4, 3, padding=1))
        >>> b(torch.randn(1, 2, 5, 5)).shape
        torch.Size([1, 4, 5, 5])
    """

    def __init__(self, weight, bias, *, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                 groups: int = 1) -> None:
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or \
                weight.shape[0] % groups:
            raise ValueError(f"groups: must be a positive int dividing the {weight.shape[0]} "
                             f"output channels, got {groups!r}")
        super().__init__(weight, bias)
        self.stride = tuple(stride)
        self.padding = tuple(padding)
        self.dilation = tuple(dilation)
        self.groups = groups

    @classmethod
    def from_float(cls, conv: nn.Conv2d) -> "BinaryConv2d":
        """Binarize ``conv`` (zero padding given as numbers; any groups)."""
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"Conv2d(padding={conv.padding!r}, padding_mode="
                             f"{conv.padding_mode!r}): only numeric zero padding is binarized; "
                             f"give the padding as numbers or exclude the layer with filter_fn")
        return cls(conv.weight, conv.bias, stride=conv.stride, padding=conv.padding,
                   dilation=conv.dilation, groups=conv.groups)

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1] * self.groups

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @property
    def kernel_size(self) -> tuple[int, int]:
        return tuple(self.weight.shape[2:])

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.padding
        return F.pad(x, (pw, pw, ph, ph)) if ph or pw else x

    def _beta(self, xp: torch.Tensor) -> torch.Tensor:
        """[B, G, Ho, Wo]: mean |x_pad| over each receptive field (C / G x kh x kw values)."""
        box = torch.ones(self.groups, *self.weight.shape[1:], dtype=xp.dtype) / \
            self.reduction_size()
        return F.conv2d(xp.abs(), box, None, self.stride, 0, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected [B, {self.in_channels}, H, W], got "
                             f"{tuple(x.shape)}")
        x = x.float()
        self._check_input(x)
        xp = self._pad(x)
        beta = self._beta(xp)
        if self.use_kernel:
            rows, (b, ho, wo) = self._im2col(xp)
            y = torch.cat([self._kernel_rows(r, beta[:, g], c)
                           for g, (r, c) in enumerate(self._group_parts(rows))], dim=1)
            return y.reshape(b, ho, wo, -1).permute(0, 3, 1, 2)
        dot = F.conv2d(sign_ste(xp), sign_ste(self.weight.float()), None, self.stride, 0,
                       self.dilation, self.groups)
        beta = beta.repeat_interleave(self.out_channels // self.groups, dim=1)
        out = dot * beta * self.alpha().reshape(1, -1, 1, 1)
        return out if self.bias is None else out + self.bias.reshape(1, -1, 1, 1)

    def _group_parts(self, rows: torch.Tensor):
        """(group g's im2col columns, its output channels) for each group g."""
        k, n = self.reduction_size(), self.out_channels // self.groups
        return [(rows[:, g * k:(g + 1) * k], slice(g * n, (g + 1) * n))
                for g in range(self.groups)]

    def _im2col(self, xp: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """im2col rows [B Ho Wo, C kh kw] of the padded input (group g's K = C / G kh kw
        values are the columns g K:(g + 1) K), (B, Ho, Wo)."""
        cols = F.unfold(xp, self.kernel_size, self.dilation, 0, self.stride)  # [B, K, L]
        b = xp.shape[0]
        kh, kw = self.kernel_size
        dh, dw = self.dilation
        sh, sw = self.stride
        ho = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
        wo = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
        return cols.transpose(1, 2).reshape(-1, cols.shape[1]), (b, ho, wo)

    @torch.no_grad()
    def binary_trace(self, x: torch.Tensor) -> BinaryTrace:
        """im2col form of the binary GEMM for input ``x`` [B, C, H, W] (see BinaryTrace)."""
        x = x.float()
        y = self.forward(x)
        out = y.permute(0, 2, 3, 1).reshape(-1, y.shape[1]).numpy()
        xp = self._pad(x)
        rows, _ = self._im2col(xp)
        beta = self._beta(xp).permute(0, 2, 3, 1).reshape(-1, self.groups)
        return _trace(self, rows, beta if self.groups > 1 else beta.reshape(-1), out)


def _trace(layer: _BinaryLayer, rows: torch.Tensor, beta: torch.Tensor, out: np.ndarray
           ) -> BinaryTrace:
    """The BinaryTrace of im2col ``rows`` [M, G K] (see BinaryTrace for the layout)."""
    k, g = layer.reduction_size(), layer.groups
    w = layer.weight.detach().float().reshape(layer.weight.shape[0], -1).numpy()
    a = [pack_binary_activations(rows[:, i * k:(i + 1) * k].numpy()) for i in range(g)]
    w_bits = pack_binary_activations(w)
    n = w.shape[0] // g
    dot = [_popcount_dot(a[i], w_bits[i * n:(i + 1) * n], k) for i in range(g)]
    return BinaryTrace(np.concatenate(a, axis=1), w_bits, k, np.concatenate(dot, axis=1),
                       layer.alpha().detach().numpy().copy(), beta.numpy().copy(),
                       None if layer.bias is None else layer.bias.detach().float().numpy().copy(),
                       out, g)


BINARY_LAYERS = (BinaryLinear, BinaryConv2d)


def use_binary_kernels(model: nn.Module, enabled: bool = True, *, isa: str | None = None
                       ) -> int:
    """Run every binary layer of ``model`` on ``lowbit.kernels.gemm_binary`` (inference only;
    eval mode) or back on torch; ``isa`` forces one kernel variant. Returns how many layers
    were switched."""
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled: must be True or False, got {enabled!r}")
    layers = [m for m in model.modules() if isinstance(m, BINARY_LAYERS)]
    for m in layers:
        m.use_kernel = enabled
        m.kernel_isa = isa
    return len(layers)


@register_handler(BinaryConfig)
def _binary(model, targets, config, calibration) -> None:
    _no_calibration(config, calibration)
    chosen = list(targets)
    if config.keep_first:
        chosen = chosen[1:]
    if config.keep_last:
        chosen = chosen[:-1]
    if not chosen:
        raise ValueError(f"keep_first, keep_last: keeping the first / last of the "
                         f"{len(targets)} selected layer(s) in float leaves none to binarize; "
                         f"set keep_first=False / keep_last=False or select more layers")
    _swap(model, chosen, lambda name, m: (BinaryLinear if isinstance(m, nn.Linear)
                                          else BinaryConv2d).from_float(m))
