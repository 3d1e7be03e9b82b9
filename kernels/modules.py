"""``LowbitLinear`` and ``LowbitConv2d``: nn.Modules whose GEMMs run on lowbit's kernels.

Each holds packed weights as buffers (``state_dict`` round-trips) and calls the ``lowbit``
torch ops (``kernels.torch_ops``), or in plain eager mode (a CPU tensor outside autograd, no
tracing, compiling or dispatch mode) the kernels' NumPy entry points directly, with the same
results and without the op dispatch or per-call epilogue construction (``module_formats``).
Formats (``module_formats.SCHEMES``):

* ``"int8"`` (W8A8): weights int8 per output channel; activations dynamic (per GEMM row at
  run time; for a conv ``act_granularity="sample"`` takes one scale per input image) or
  static (``act_scale``, ``act_zero_point``: int8 if the zero point is 0, else uint8;
  ``act_range=(qmin, qmax)`` narrows the range, e.g. 4-bit activations, and is uint8 if
  qmin >= 0); float32 out through the Dequantize epilogue, or with ``out_scale`` /
  ``out_zero_point`` (``out_range`` as ``act_range``; ``relu`` / ``out_clip=(qmin, qmax)``
  a fused activation clamp) int8/uint8 out through Requantize, so consecutive W8A8 layers
  pass integer tensors. A static layer also takes integer input, read with its own
  ``act_scale`` / ``act_zero_point`` (give it the producing layer's ``out_*``).
* ``"int4"`` / ``"uint4"``: grouped 4-bit weights (``group_size`` 32/64/128, float16 or
  float32 scales); ``activations="float32"`` / ``"bfloat16"`` (gemm_w4a16, weight-only) or
  ``"int8"`` (gemm_w4a8, dynamic int8 per row).
* ``"binary"`` (XNOR-Net, Rastegari et al., ECCV 2016): sign weights with alpha per output
  channel, sign activations with beta per row (per output pixel for conv).
* ``"csr"``: unstructured sparse int8 weights (quantized per output channel as ``"int8"``,
  the nonzero integers stored in CSR), activations as ``"int8"`` (dynamic or static),
  float32 out with the int8 format's Dequantize arithmetic (``spmm_csr``).

``integer_trace(x)`` (int8 and csr) returns the integer operands and the int32 accumulator
of a call (``KernelTrace``), computed by the same kernels without an epilogue.

Exact arithmetic (``kernels.quantize`` states the formulas; a simulation that follows them
reproduces the integers bit-exactly and the float outputs to the last bit where noted):

    int8:    q_w = clip(rint(w / s_j), -128, 127), s_j = max|w_j| / 127 (1 if 0), float32
             acc = sum_k (q_x[i, k] - zp) * q_w[j, k]                        exact int32
             y   = float32(acc) * (s_x[i] * s_j) + bias_j   float32 in that order (Dequantize)
             y_q = requantized acc (``quantize.requantize_params``) with an int8 output
    int4:    W = formats.quantize_int4 per group of the zero-padded K; y = x @ W + bias with
             the kernel's float32 sums (within ``ref.w4a16_tolerance``), or with int8
             activations y = s_x[i] * sum_g scale[g, j] * acc_g + bias (``ref.w4a8_*``)
    binary:  x_b = +1 if x >= 0 else -1 (the same for w); dot = K - 2 popcount(x_b XOR w_b)
             y = float32(float32(float32(dot) * beta_i) * alpha_j) + bias_j,
             alpha_j = mean_k |w_jk|, beta_i = mean_k |x_ik| (``quantize.xnor_scales``)

A float input may be float32, bfloat16 or float16 (widened to float32 exactly); a float
output takes the input's dtype. Rows are those of the GEMM: a Linear's input rows, a conv's
im2col rows (one per output pixel and group, K = kh * kw * in_channels / groups). int4 /
uint4 convs order K as ``weight.reshape(out_channels, -1)`` (channel, kh, kw): their scale
groups run along it (as ``lowbit.compress`` forms them); int8 and binary convs read (kh, kw,
channel), a faster im2col, which gives the same integers (and XNOR-Net means up to the last
float64 bit of their sum). Conv zero padding is exact in every format: the padding of a
static int8 input holds the zero point, so it equals quantize(zero-padded x); the binary
format removes the +1 bits of padding again.

Example:
    >>> lin = torch.nn.Linear(64, 32)
    >>> q = LowbitLinear.from_float(lin, "int8")              # dynamic int8 activations
    >>> q(torch.randn(4, 64)).shape
    torch.Size([4, 32])
    >>> q.lowbit_storage()["format"]
    'int8'
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .formats import ALIGN, aligned_empty
from .module_formats import (BinaryScheme, EagerPlan, GemmGeometry, IntActivationScheme,
                             as_tensor, make_scheme)

__all__ = ["KernelTrace", "LowbitConv2d", "LowbitLinear"]


@dataclass(frozen=True, eq=False)
class KernelTrace:
    """The integer GEMM of one call of an int8 / csr module (numpy arrays).

    a_q: int8 / uint8 [M, G * K], the rows the kernel multiplied (a Linear: the rows of
    x.reshape(-1, in_features); a conv: im2col rows in (image, oh, ow) order, group g's K in
    columns g * K:(g + 1) * K, in the format's K order (int8 and csr: (kh, kw, channel)));
    a_scale: float32 [M] of dynamic activations, None for static ones (``act_scale``);
    a_zero_point: int; acc: int32 [M, G * N] = (a_q - a_zero_point) @ W^T per group, exact;
    out: the module's output for this input (float, or int8 / uint8 when requantized).
    """

    a_q: np.ndarray
    a_scale: np.ndarray | None
    a_zero_point: int
    acc: np.ndarray
    out: torch.Tensor


def _kernel_trace(mod, parts, out) -> KernelTrace:
    """A KernelTrace from ``parts``: per group (rows, per-sample scales or None)."""
    scheme = mod.scheme
    if not isinstance(scheme, IntActivationScheme):
        raise TypeError(f"integer_trace: format {mod.fmt!r} has no integer activations; "
                        f"only 'int8' and 'csr' layers have an integer GEMM to trace")
    qs, accs, scale, zp = [], [], None, 0
    with torch.no_grad():
        for g, rows, a_scale in parts:
            q, scale, zp = scheme.integer_rows(mod, rows, a_scale)
            qs.append(q.numpy())
            accs.append(scheme.accumulate(mod, q, g, zp).numpy())
    return KernelTrace(np.concatenate(qs, axis=1), None if scale is None else scale.numpy(),
                       zp, np.concatenate(accs, axis=1), out)


def _aligned_copy(t: torch.Tensor) -> torch.Tensor:
    arr = aligned_empty(tuple(t.shape), t.numpy().dtype)
    arr[...] = t.numpy()
    return torch.from_numpy(arr)


def _scale_dtype_from(fmt: str, weight_scale, options: dict) -> None:
    """int4 / uint4 from_quantized: the stored scale dtype defaults to that of the scales."""
    if fmt in ("int4", "uint4") and "scale_dtype" not in options and hasattr(weight_scale, "dtype"):
        options["scale_dtype"] = str(weight_scale.dtype).removeprefix("torch.")


def _realign_after_load(module: "_LowbitModule", incompatible_keys) -> None:
    """Packed weights must start on a 64-byte boundary: re-align any that a state_dict
    loaded with ``assign=True`` put elsewhere (once; the copy replaces the buffer)."""
    for name in module.scheme.packed:
        buf = module._buffers[name]
        if buf.data_ptr() % ALIGN or not buf.is_contiguous():
            module._buffers[name] = _aligned_copy(buf.detach().contiguous())


def _eager(x: torch.Tensor) -> bool:
    """Whether calling the kernels' NumPy entry points directly computes what the ``lowbit``
    torch ops would and nothing needs to see the ops: a plain CPU tensor, no autograd
    recording (the ops' backward raises), and no tracing, compiling, dispatch or function
    mode (FakeTensorMode, torch.export, FlopCounterMode, torch.jit.trace) active."""
    return (type(x) is torch.Tensor and x.is_cpu
            and not (x.requires_grad and torch.is_grad_enabled())
            and not torch._C._len_torch_dispatch_stack()
            and not torch._C._is_torch_function_mode_enabled()
            and not torch.jit.is_tracing() and not torch.compiler.is_compiling())


class _LowbitModule(nn.Module):
    """What LowbitLinear and LowbitConv2d share: the format scheme, buffers, storage report,
    and the eager-path plan cache (``module_formats``: the plan is remade, and so
    revalidated, whenever a buffer is replaced or changed in place)."""

    def _setup(self, fmt: str, geometry: GemmGeometry, options: dict) -> None:
        self.fmt = fmt
        self.scheme = make_scheme(fmt, options)
        self.geometry = geometry
        for name, t in self.scheme.allocate(geometry).items():
            self.register_buffer(name, t)
        self.register_load_state_dict_post_hook(_realign_after_load)

    def _eager_plan(self, x: torch.Tensor) -> EagerPlan | None:
        """The scheme's eager plan for the current buffers, or None: run the torch ops (the
        format has no eager path, or ``x`` / the context needs the ops, see ``_eager``)."""
        if not (self.scheme.eager and _eager(x)):
            return None
        bufs = [b for b in self._buffers.values() if b is not None]
        try:
            key = tuple([(id(b), b._version, b.data_ptr()) for b in bufs])
        except RuntimeError:  # inference tensors track no version to notice a change by
            return self.scheme.eager_plan(self)
        # The cache holds the buffers themselves: their ids stay unique, and the plan's
        # NumPy views of their memory stay valid, for as long as it is kept.
        cached = self.__dict__.get("_plan_cache")
        if cached is not None and cached[0] == key:
            return cached[2]
        plan = self.scheme.eager_plan(self)
        self.__dict__["_plan_cache"] = (key, bufs, plan)
        return plan

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_plan_cache", None)  # remade on first use (copies get their own buffers)
        return state

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Formats whose stored length depends on the data (csr's nonzeros) take the
        # length of the loaded tensors; every other shape must match.
        for name in self.scheme.variable:
            t = state_dict.get(prefix + name)
            old = self._buffers[name]
            if isinstance(t, torch.Tensor) and t.dim() == old.dim() and \
                    t.shape[:-1] == old.shape[:-1] and t.dtype == old.dtype:
                self._buffers[name] = torch.zeros_like(t)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _set_buffers(self, buffers: dict[str, torch.Tensor]) -> None:
        for name, t in buffers.items():
            old = self._buffers[name]
            assert (old.shape == t.shape or name in self.scheme.variable) and \
                old.dtype == t.dtype, (name, old.shape, t.shape)
            self._buffers[name] = t

    @staticmethod
    def _float_weight(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        w = module.weight.detach().to("cpu", torch.float32)
        if not bool(torch.isfinite(w).all()):
            raise ValueError("module.weight: contains NaN or infinity")
        b = module.bias
        return w, None if b is None else b.detach().to("cpu", torch.float32).contiguous()

    def _quantized(self, weight, weight_scale, bias, weight_zero_point) -> None:
        """Fill the buffers from already-quantized weights (``from_quantized``)."""
        geo = self.geometry
        w = as_tensor("weight", weight)
        want = self._weight_shape()
        if tuple(w.shape) != want:
            raise ValueError(f"weight: expected shape {want}, got {tuple(w.shape)}")
        if bias is not None:
            bias = as_tensor("bias", bias)
            if not bias.is_floating_point() or tuple(bias.shape) != (geo.channels,):
                raise ValueError(f"bias: expected a float [{geo.channels}] vector, got "
                                 f"{bias.dtype} {tuple(bias.shape)}")
            bias = bias.to(torch.float32).contiguous()
        self._set_buffers(self.scheme.from_integers(geo, self._gemm_weights(w), weight_scale,
                                                    weight_zero_point, bias))

    def _from_float(self, module: nn.Module) -> None:
        w, b = self._float_weight(module)
        geo = self.geometry
        self._set_buffers(self.scheme.quantize(geo, self._gemm_weights(w).contiguous(), b))

    def _apply(self, fn, recurse=True):
        # Stored quantization parameters keep their dtype (it is part of the format): a
        # model.to(torch.bfloat16) converts the float layers around this one, not these
        # buffers. The kernels run on CPU, so moving to another device is refused.
        moved = {}
        for name, buf in self._buffers.items():
            if buf is None:
                continue
            new = fn(buf)
            if new.device.type != "cpu":
                raise RuntimeError(f"{type(self).__name__}: lowbit's kernels run on CPU; "
                                   f"cannot move to {new.device}")
            moved[name] = new if new.dtype == buf.dtype else buf
        self._buffers.update(moved)
        return self

    @staticmethod
    def _finish(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A float result takes the float input's dtype."""
        if out.is_floating_point() and x.is_floating_point() and x.dtype != out.dtype:
            return out.to(x.dtype)
        return out

    def lowbit_storage(self) -> dict:
        """The storage record ``lowbit.compress.profile`` / ``to_workload`` read (the keys of
        ``lowbit.compress.trace``'s storage protocol).

        ``bytes``: every stored byte (the state_dict: packed weights with their panel
        padding, scales, zero points, per-column sums, bias, activation / output
        quantization parameters, requantization multipliers); ``weight_bits``: bits of one
        stored weight value (8, 4, 1; scales and metadata are in ``bytes``); ``act_bits``:
        what the GEMM reads (8, 1, or 32 / 16 for weight-only int4); ``sparsity`` 0.0 and
        ``sparsity_kind`` "dense" for the dense formats, which store and multiply every
        weight, zeros included; csr: the fraction of zero int8 weights (not stored),
        "unstructured"; ``params``: logical weights and biases; int4 / uint4 add
        ``group_size`` and ``scale_dtype``.
        """
        geo = self.geometry
        nbytes = sum(b.numel() * b.element_size() for b in self._buffers.values()
                     if b is not None)
        params = geo.groups * geo.k * geo.n + (geo.channels if geo.bias else 0)
        sparsity, kind = self.scheme.sparsity(self)
        return {"format": self.fmt, "bytes": int(nbytes),
                "weight_bits": float(self.scheme.weight_bits),
                "act_bits": int(self.scheme.act_bits), "sparsity": float(sparsity),
                "sparsity_kind": kind, "params": int(params), **self.scheme.storage_extra()}

    def _format_repr(self) -> str:
        opts = self.scheme.describe(self)
        return f"fmt={self.fmt!r}" + (f", {opts}" if opts else "")


class LowbitLinear(_LowbitModule):
    """nn.Linear on lowbit's kernels: y = x W^T + b with W stored in ``fmt``.

    Build it with ``from_float`` or ``from_quantized``; ``LowbitLinear(in, out, bias, fmt,
    **options)`` allocates zero weights for ``load_state_dict``. Options per format (see
    the module docstring): int8 ``act_scale``, ``act_zero_point``, ``out_scale``,
    ``out_zero_point``, ``relu``, ``act_range``, ``out_range``, ``out_clip``,
    ``act_granularity``; csr the int8 activation options (``act_*``); int4 / uint4
    ``group_size``, ``scale_dtype``, ``activations``; binary none.

    Example:
        >>> lin = torch.nn.Linear(64, 10)
        >>> q = LowbitLinear.from_float(lin, "int8", act_scale=0.05, out_scale=0.1)
        >>> q(torch.randn(2, 64)).dtype          # requantized int8 output
        torch.int8
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 fmt: str = "int8", **options) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: must be a positive integer, got {v!r}")
        self.in_features, self.out_features = in_features, out_features
        self._setup(fmt, GemmGeometry(1, in_features, out_features, 1, bool(bias)), options)
        if self.scheme.options.get("act_granularity", "row") != "row":
            raise ValueError("act_granularity: 'sample' (one scale per input image) is for "
                             "LowbitConv2d; a Linear quantizes each row of its input")

    def _weight_shape(self) -> tuple[int, ...]:
        return (self.out_features, self.in_features)

    def _gemm_weights(self, w: torch.Tensor) -> torch.Tensor:
        return w.reshape(1, self.out_features, self.in_features)

    @classmethod
    def from_float(cls, module: nn.Linear, fmt: str = "int8", **options) -> "LowbitLinear":
        """Quantize a float nn.Linear with the formulas of ``kernels.quantize`` / the format.

        Args:
            module: an ``nn.Linear`` (its weight is taken in float32).
            fmt: "int8", "int4", "uint4", "binary" or "csr".
            options: the format's options (class docstring).
        """
        if not isinstance(module, nn.Linear):
            raise TypeError(f"module: expected an nn.Linear, got {type(module).__name__}")
        new = cls(module.in_features, module.out_features, module.bias is not None, fmt, **options)
        new._from_float(module)
        return new

    @classmethod
    def from_quantized(cls, fmt: str, weight, weight_scale, bias=None, *,
                       weight_zero_point=None, **options) -> "LowbitLinear":
        """Build from already-quantized weights (what a compression pass simulated).

        Args:
            fmt: "int8": ``weight`` int8 values [out, in], ``weight_scale`` float [out].
                "int4": values v in [-8, 7] [out, in], ``weight_scale`` [out, ceil(in /
                group_size)] float16 or float32 (its dtype is stored; K is zero-padded).
                "uint4": nibbles n in [0, 15], ``weight_zero_point`` [out, ceil(in /
                group_size)] in [0, 15], v = n - z. "binary": signs (>= 0 is +1) [out, in],
                ``weight_scale`` alpha [out]. "csr": int8 values as for "int8" (the
                nonzeros are stored).
            bias: float [out] or None.
            options: the format's options (activation / output quantization parameters).

        Example:
            >>> q = LowbitLinear.from_quantized("int8", torch.ones(3, 8, dtype=torch.int8),
            ...                                 torch.full((3,), 0.5), act_scale=0.25)
            >>> q(torch.ones(1, 8)).tolist()      # 8 * (4 * 1) * (0.25 * 0.5)
            [[4.0, 4.0, 4.0]]
        """
        _scale_dtype_from(fmt, weight_scale, options)
        w_shape = getattr(weight, "shape", None)
        if w_shape is None or len(w_shape) != 2:
            raise ValueError(f"weight: expected a 2-D [out_features, in_features] tensor, got "
                             f"shape {w_shape}")
        new = cls(int(w_shape[1]), int(w_shape[0]), bias is not None, fmt, **options)
        new._quantized(weight, weight_scale, bias, weight_zero_point)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected [..., {self.in_features}], got shape {tuple(x.shape)}")
        plan = self._eager_plan(x)
        if plan is None:
            xin, _, _ = self.scheme.prepare_input(self, x)
            out = self.scheme.matmul(self, xin.reshape(-1, self.in_features), 0)
        else:
            xin, _, _ = self.scheme.eager_input(plan, x)
            out = torch.from_numpy(self.scheme.eager_matmul(
                plan, xin.reshape(-1, self.in_features), 0))
        return self._finish(out.reshape(*x.shape[:-1], self.out_features), x)

    def integer_trace(self, x: torch.Tensor) -> KernelTrace:
        """The integer rows, scales and exact int32 accumulator of ``self(x)`` (int8 / csr
        formats; see ``KernelTrace``), from the same kernels without an epilogue.

        Example:
            >>> q = LowbitLinear.from_float(torch.nn.Linear(8, 4), "int8", act_scale=0.1)
            >>> q.integer_trace(torch.ones(2, 8)).acc.shape
            (2, 4)
        """
        out = self(x)
        xin, _, _ = self.scheme.prepare_input(self, x)
        return _kernel_trace(self, [(0, xin.reshape(-1, self.in_features), None)], out)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.geometry.bias}, {self._format_repr()}")


def _pair(name: str, v, minimum: int) -> tuple[int, int]:
    t = (v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 2 or any(isinstance(e, bool) or not isinstance(e, int) or e < minimum for e in t):
        raise ValueError(f"{name}: expected an integer >= {minimum} or a pair of them, got {v!r}")
    return t


# The conv's data movement runs in NumPy on the tensors' memory: single-threaded copies,
# so no torch parallel region (whose OpenMP workers then spin) sits next to the kernels'
# own thread pool (timed: lower and much steadier latency than the same copies in torch).

def _padded_nhwc(x: np.ndarray, pad, value) -> np.ndarray:
    """x [B, C, H, W] as a contiguous channels-last [B, H + pads, W + pads, C], the padding
    (top, bottom, left, right) filled with ``value``: one transposing copy (a run-by-run copy
    if x is channels-last in memory already; none if that needs no padding)."""
    if not any(pad):
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    b, c, h, w = x.shape
    top, bottom, left, right = pad
    # filling all of it, then copying the interior, is faster than filling four borders
    out = np.full((b, h + top + bottom, w + left + right, c), value, x.dtype)
    out[:, top:top + h, left:left + w] = x.transpose(0, 2, 3, 1)
    return out


def _im2col(xp: np.ndarray, kernel, stride, dilation, out_hw, tap_major: bool = True,
            channels: tuple[int, int] | None = None) -> np.ndarray:
    """Rows [B * OH * OW, K] of a contiguous padded channels-last xp [B, Hp, Wp, C] (any
    dtype; ``channels`` (c0, c1): of its channels c0:c1 only), one copy. K in (kh, kw, c)
    order (``tap_major``): the copy's inner runs are C contiguous elements (timed 10-80x
    faster on int8 than torch's Tensor.unfold in (c, kh, kw) order); else (c, kh, kw),
    torch's weight.reshape order."""
    c0, c1 = channels or (0, xp.shape[3])
    b, c = xp.shape[0], c1 - c0
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    sb, sy, sx, sc = xp.strides
    shape, strides = (b, oh, ow, kh, kw, c), (sb, sy * sh, sx * sw, sy * dh, sx * dw, sc)
    if not tap_major:
        shape, strides = (b, oh, ow, c, kh, kw), (sb, sy * sh, sx * sw, sc, sy * dh, sx * dw)
    # A strided view of xp's buffer (np.ndarray: several times cheaper to make than
    # as_strided), never written through; already contiguous (and then returned as is)
    # only for a 1x1 kernel with stride 1, where the windows do not overlap.
    patches = np.ndarray(shape, xp.dtype, xp, c0 * xp.itemsize, strides)
    return np.ascontiguousarray(patches).reshape(b * oh * ow, kh * kw * c)


class LowbitConv2d(_LowbitModule):
    """nn.Conv2d on lowbit's kernels: im2col, then one GEMM per group (``groups`` > 1, e.g.
    depthwise, runs G small GEMMs: correct in every format, but not a fast path).

    Same formats, options and constructors as ``LowbitLinear``; ``padding`` may be an int,
    a pair, "valid" or "same" (asymmetric "same" padding puts the extra row / column at the
    bottom / right, as torch does); only zero padding (``padding_mode="zeros"``).

    The GEMM computes the output channels-last (one row per output pixel). By default it is
    returned as a contiguous [B, C, H, W] tensor (one transposing copy); ``channels_last=True``
    returns that memory as is, a [B, C, H, W] tensor in ``torch.channels_last`` memory format:
    the same values, no copy, and a consumer conv reads it without transposing (torch's
    MaxPool2d is also much faster on it), but ``.view`` across C, H, W fails on it, as on any
    channels-last tensor. ``lowbit.compress.export`` sets it on convolutions whose output
    reaches the next quantized layer through layout-independent ops only.

    Example:
        >>> conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        >>> q = LowbitConv2d.from_float(conv, "int8", act_scale=0.02, act_zero_point=128)
        >>> q(torch.randn(1, 3, 8, 8)).shape
        torch.Size([1, 8, 8, 8])
    """

    channels_last = False  # the default also for modules pickled before the option existed

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, fmt: str = "int8",
                 channels_last: bool = False, **options) -> None:
        super().__init__()
        if not isinstance(channels_last, bool):
            raise TypeError(f"channels_last: expected a bool, got {channels_last!r}")
        self.channels_last = channels_last
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("groups", groups)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: must be a positive integer, got {v!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups: must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}, got {groups}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _pair("kernel_size", kernel_size, 1)
        self.stride = _pair("stride", stride, 1)
        self.dilation = _pair("dilation", dilation, 1)
        self.padding = padding
        self._pad = self._explicit_padding(padding)
        taps = self.kernel_size[0] * self.kernel_size[1]
        geo = GemmGeometry(groups, in_channels // groups * taps, out_channels // groups, taps,
                           bool(bias), any(self._pad))
        self._setup(fmt, geo, options)

    def _explicit_padding(self, padding) -> tuple[int, int, int, int]:
        """(top, bottom, left, right)."""
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if self.stride != (1, 1):
                raise ValueError("padding: 'same' needs stride 1 (as in torch)")
            pads = []
            for k, d in zip(self.kernel_size, self.dilation):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            return tuple(pads)
        if isinstance(padding, str):
            raise ValueError(f"padding: expected an int, a pair, 'valid' or 'same', got "
                             f"{padding!r}")
        ph, pw = _pair("padding", padding, 0)
        return (ph, ph, pw, pw)

    def _weight_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def _gemm_weights(self, w: torch.Tensor) -> torch.Tensor:
        """[G, N, K] from [out, in / groups, kh, kw], K in the format's im2col order."""
        geo = self.geometry
        if self.scheme.tap_major:
            w = w.permute(0, 2, 3, 1)
        return w.reshape(geo.groups, geo.n, geo.k)

    @classmethod
    def from_float(cls, module: nn.Conv2d, fmt: str = "int8", **options) -> "LowbitConv2d":
        """Quantize a float nn.Conv2d (zero padding only) with the format's formulas."""
        if not isinstance(module, nn.Conv2d):
            raise TypeError(f"module: expected an nn.Conv2d, got {type(module).__name__}")
        if module.padding_mode != "zeros":
            raise ValueError(f"module.padding_mode: only 'zeros' is supported, got "
                             f"{module.padding_mode!r}")
        new = cls(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                  module.padding, module.dilation, module.groups, module.bias is not None, fmt,
                  **options)
        new._from_float(module)
        return new

    @classmethod
    def from_quantized(cls, fmt: str, weight, weight_scale, bias=None, *, stride=1, padding=0,
                       dilation=1, groups: int = 1, weight_zero_point=None,
                       **options) -> "LowbitConv2d":
        """Build from already-quantized weights [out, in / groups, kh, kw]; the scales as in
        ``LowbitLinear.from_quantized`` with K = in / groups * kh * kw. int4 / uint4:
        ``weight_scale`` [out, ceil(K / group_size)] holds in column g the scale of
        ``weight.reshape(out, -1)[:, g * group_size:(g + 1) * group_size]``."""
        _scale_dtype_from(fmt, weight_scale, options)
        w_shape = getattr(weight, "shape", None)
        if w_shape is None or len(w_shape) != 4:
            raise ValueError(f"weight: expected a 4-D [out, in / groups, kh, kw] tensor, got "
                             f"shape {w_shape}")
        out_c, in_g, kh, kw = (int(s) for s in w_shape)
        new = cls(in_g * groups, out_c, (kh, kw), stride, padding, dilation, groups,
                  bias is not None, fmt, **options)
        new._quantized(weight, weight_scale, bias, weight_zero_point)
        return new

    def _out_hw(self, h: int, w: int) -> tuple[int, int]:
        top, bottom, left, right = self._pad
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        return ((h + top + bottom - dh * (kh - 1) - 1) // sh + 1,
                (w + left + right - dw * (kw - 1) - 1) // sw + 1)

    def _pad_taps(self, h: int, w: int, out_hw) -> np.ndarray:
        """int32 [OH * OW, kh * kw]: 1 where the kernel position of an output pixel is padding."""
        mask = _padded_nhwc(np.zeros((1, 1, h, w), np.int32), self._pad, 1)
        return _im2col(mask, self.kernel_size, self.stride, self.dilation, out_hw)

    def _check_input(self, x) -> tuple[int, int]:
        """(OH, OW) of a valid 4-D input x."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected [batch, {self.in_channels}, H, W] or "
                             f"[{self.in_channels}, H, W], got shape {tuple(x.shape)}")
        h, w = x.shape[2:]
        oh, ow = self._out_hw(h, w)
        if oh < 1 or ow < 1:
            raise ValueError(f"x: input {h}x{w} is smaller than the padded kernel "
                             f"(kernel {self.kernel_size}, dilation {self.dilation}, "
                             f"padding {self.padding})")
        return oh, ow

    def _group_rows(self, xp: np.ndarray, out_hw):
        """Yield (group, im2col rows [B * OH * OW, K]) of a padded channels-last input."""
        cg = self.in_channels // self.groups
        for g in range(self.groups):
            yield g, _im2col(xp, self.kernel_size, self.stride, self.dilation, out_hw,
                             self.scheme.tap_major, (g * cg, (g + 1) * cg))

    def _gemm_rows(self, x: torch.Tensor):
        """Yield (group, im2col rows [B * OH * OW, K], per-row scales of per-sample dynamic
        activations or None) of a checked 4-D input, through the torch ops."""
        oh, ow = self._out_hw(*x.shape[2:])
        xin, pad_value, sample_scale = self.scheme.prepare_input(self, x)
        xp = _padded_nhwc(xin.detach().numpy(), self._pad, pad_value)
        a_scale = None if sample_scale is None else sample_scale.repeat_interleave(oh * ow)
        for g, rows in self._group_rows(xp, (oh, ow)):
            yield g, torch.from_numpy(rows), a_scale

    def _eager_parts(self, plan: EagerPlan, x: torch.Tensor, out_hw):
        """Yield each group's GEMM result [B * OH * OW, N / G] (NumPy) on the eager path."""
        xin, pad_value, sample_scale = self.scheme.eager_input(plan, x)
        xp = _padded_nhwc(xin, self._pad, pad_value)
        a_scale = None if sample_scale is None else np.repeat(sample_scale, out_hw[0] * out_hw[1])
        for g, rows in self._group_rows(xp, out_hw):
            yield self.scheme.eager_matmul(plan, rows, g, a_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and x.dim() == 3:
            return self.forward(x.unsqueeze(0)).squeeze(0)
        oh, ow = self._check_input(x)
        b, _, h, w = x.shape
        plan = self._eager_plan(x)
        if plan is not None:
            parts = list(self._eager_parts(plan, x, (oh, ow)))
        else:
            pad_taps = (self._pad_taps(h, w, (oh, ow))
                        if isinstance(self.scheme, BinaryScheme) and any(self._pad) else None)
            parts = [self.scheme.matmul(self, rows, g, pad_taps, a_scale).numpy()
                     for g, rows, a_scale in self._gemm_rows(x)]
        # one GEMM row per output pixel: [B * OH * OW, C_out] is the channels-last output
        out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        nchw = out.reshape(b, oh, ow, self.out_channels).transpose(0, 3, 1, 2)
        if not self.channels_last:
            nchw = np.ascontiguousarray(nchw)
        return self._finish(torch.from_numpy(nchw), x)

    def integer_trace(self, x: torch.Tensor) -> KernelTrace:
        """The integer im2col rows, scales and exact int32 accumulator of ``self(x)`` for a
        4-D input (int8 / csr formats; see ``KernelTrace``: K in (kh, kw, channel) order)."""
        out = self(x)
        self._check_input(x)
        return _kernel_trace(self, self._gemm_rows(x), out)

    def extra_repr(self) -> str:
        layout = ", channels_last=True" if self.channels_last else ""
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.geometry.bias}{layout}, "
                f"{self._format_repr()}")

