"""What each weight format does inside ``LowbitLinear`` / ``LowbitConv2d``.

A module holds G groups (1 for Linear; the conv's ``groups``) of one GEMM each, [K, N] per
group, and lets a ``FormatScheme`` decide its buffers, how float or already-quantized
weights become those buffers, how an input is prepared, and which op multiplies a group.
Packed weights are stored stacked, [G, *packed shape] per array of the format's Packed*
record (``torch_ops.CODECS``); every group's slice stays 64-byte aligned because each packed
array is a whole number of 64-byte panels. Per-output-channel vectors are [G * N].

Two paths compute a call, with the same results: the ``lowbit`` torch ops (``prepare_input``,
``matmul``: traceable, FakeTensor / export / dispatch modes see them), and in plain eager mode
the kernels' NumPy entry points called directly (``eager_plan``, ``eager_input``,
``eager_matmul``), which skips the op dispatch and rebuilds nothing per call: the plan holds
the Packed* records and fixed epilogues made from the module's buffers (validated when made,
remade when a buffer changes), and every per-call argument is still checked by the entry
points. A format without an eager plan runs through the ops only.

A new format is one ``FormatScheme`` subclass and one ``SCHEMES`` entry.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .formats import (ALIGN, BINARY_PANELS, FORMATS, INT4_GROUP_SIZES, INT8_PANELS,
                      SCALE_DTYPES, aligned_empty, pack_weights)
from . import ref
from .format_sparse24 import SPARSE24_PANELS
from .epilogue import Dequantize, Requantize
from .gemm_int4 import gemm_w4a8, gemm_w4a16
from .torch_ops import (CODECS, INT8_KERNELS, int8_epilogue,  # registers the ops
                        packed_to_tensors, static_params_dtype, tensors_to_packed)
from .quantize import (activation_range, quantize_dynamic, quantize_static, quantize_weight_int8,
                       requantize_params, xnor_scales)

FLOAT_INPUTS = (torch.float32, torch.bfloat16, torch.float16)  # widened to float32 exactly
_TORCH_DTYPE = {np.dtype(np.int8): torch.int8, np.dtype(np.uint8): torch.uint8}
_OPS = torch.ops.lowbit


@dataclass(frozen=True, eq=False)
class EagerGroup:
    """One group's GEMM on the eager path: the kernels' Packed* record (NumPy views of the
    module's buffers: the plan lives no longer than they do), the fixed epilogue of static
    int8 activations (else None), and the per-channel weight scales and float bias a
    per-call epilogue takes (dynamic int8; int4's bias)."""

    packed: object
    epilogue: Requantize | Dequantize | None = None
    w_scale: np.ndarray | None = None
    bias: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class EagerPlan:
    """A module's constants for the eager path (``FormatScheme.eager_plan``): its groups,
    the output dtype, and static int8 activations' scale, zero point, range and the dtype of
    integer input."""

    groups: tuple[EagerGroup, ...]
    out_dtype: np.dtype
    act_scale: float | None = None
    zero_point: int = 0
    qrange: tuple[int, int] | None = None
    in_dtype: torch.dtype | None = None


@dataclass(frozen=True)
class GemmGeometry:
    """G GEMMs of [M, K] x [K, N]; ``taps`` kernel positions per input channel (K = C * taps);
    ``zero_padded`` whether the conv pads (the binary format corrects for the padding)."""

    groups: int
    k: int
    n: int
    taps: int = 1
    bias: bool = True
    zero_padded: bool = False

    @property
    def channels(self) -> int:
        return self.groups * self.n


def _aligned_zeros(shape: tuple[int, ...], np_dtype) -> torch.Tensor:
    arr = aligned_empty(shape, np_dtype)
    arr.fill(0)
    # torch has no full uint64 / uint32: carry their bits as int64 / int32
    carrier = {np.dtype(np.uint64): np.int64, np.dtype(np.uint32): np.int32}.get(arr.dtype,
                                                                                 arr.dtype)
    return torch.from_numpy(arr.view(carrier))


def _stack_packed(records: list) -> dict[str, torch.Tensor]:
    """Stack per-group Packed* records into aligned [G, ...] tensors, one per codec array."""
    parts = [packed_to_tensors(r)[0] for r in records]
    codec = CODECS[records[0].fmt.name]
    out = {}
    for i, (name, _) in enumerate(codec.arrays):
        first = parts[0][i]
        arr = aligned_empty((len(parts), *first.shape), first.numpy().dtype)
        for g, p in enumerate(parts):
            arr[g] = p[i].numpy()
        # whole 64-byte panels, so every group's slice of an aligned array stays aligned
        assert name not in codec.aligned or first.numel() * first.element_size() % ALIGN == 0
        out[name] = torch.from_numpy(arr)
    return out


def _add_bias_(out: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """out += bias[None, :] in place (out is an op's fresh float32 result), in NumPy: one
    float32 addition per element, and no torch parallel region next to the kernels."""
    if bias is not None:
        o = out.detach().numpy()
        o += bias.detach().numpy()
    return out


def _as_float_input(x: torch.Tensor) -> torch.Tensor:
    """float32 x (the quantizer ops and the int4 kernels reject NaN and infinity)."""
    if x.dtype not in FLOAT_INPUTS:
        raise TypeError(f"x: expected float32, bfloat16 or float16 input (computed in float32), "
                        f"got {x.dtype}")
    return x.to(torch.float32)


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name}: expected a positive real number, got {value!r}")
    v = float(np.float32(value))
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name}: must be finite and positive in float32, got {value!r}")
    return v


def _zero_point(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= 255:
        raise ValueError(f"{name}: must be 0 (int8) or an integer in [1, 255] (uint8), got "
                         f"{value!r}")
    return int(value)


class FormatScheme:
    """Base: option handling and what every format shares. Subclasses set ``fmt``,
    ``OPTIONS`` (name -> default), ``weight_bits``, ``act_bits`` and ``packed`` (the
    stacked Packed* arrays, in codec order)."""

    fmt: str
    weight_bits: int           # bits of one stored weight value (scales not included)
    act_bits: int              # bits per activation element the GEMM reads
    OPTIONS: dict[str, object] = {}
    packed: tuple[str, ...] = ("weight_data",)
    variable: tuple[str, ...] = ()  # buffers whose length a loaded state_dict sets
    # K order of a conv's GEMM: (kh, kw, c) reads channels-last patches in runs of C (fast);
    # (c, kh, kw) is torch's weight.reshape(out, -1), needed where K groups share a scale
    tap_major: bool = True
    # An eager path: ``eager_plan(mod) -> EagerPlan`` (the constants from mod's buffers,
    # built and validated once per state of them: the module caches it), ``eager_input``
    # and ``eager_matmul``; formats without one run through the torch ops only.
    eager: bool = False

    def __init__(self, **options) -> None:
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            known = ", ".join(self.OPTIONS) or "none"
            raise TypeError(f"{unknown[0]}: not an option of format {self.fmt!r} "
                            f"(options: {known})")
        self.options = {**self.OPTIONS, **options}

    def describe(self, mod) -> str:
        """The options that differ from their defaults (floats as their float32 values),
        with the values a loaded state_dict put into the module's buffers."""
        values = {k: getattr(mod, k).item() if isinstance(getattr(mod, k, None), torch.Tensor)
                  else v for k, v in self.options.items()}
        return ", ".join(f"{k}={str(np.float32(v)) if isinstance(v, float) else repr(v)}"
                         for k, v in values.items() if v != self.OPTIONS[k])

    def meta(self, mod, g: int) -> list[int]:
        return [mod.geometry.k, mod.geometry.n]

    def weights(self, mod, g: int) -> list[torch.Tensor]:
        return [getattr(mod, name)[g] for name in self.packed]

    def packed_record(self, mod, g: int):
        """Group g's weights as the kernels' Packed* record (to inspect the stored integers)."""
        return tensors_to_packed(self.weights(mod, g), self.meta(mod, g), self.fmt)

    def prepare_input(self, mod, x: torch.Tensor) -> tuple[torch.Tensor, float, None]:
        """(input for im2col, value its padding takes, per-sample activation scales or
        None). Float formats: float32, 0, None."""
        return _as_float_input(x), 0, None

    def eager_input(self, plan: EagerPlan, x: torch.Tensor
                    ) -> tuple[np.ndarray, float, np.ndarray | None]:
        """``prepare_input`` on the eager path, as NumPy arrays (x as ``modules._eager``
        admits it: a plain CPU tensor outside autograd)."""
        return _as_float_input(x).numpy(), 0, None

    def storage_extra(self) -> dict:
        """Informational keys of ``lowbit_storage`` (grouped formats: group size, scale dtype)."""
        return {}

    def sparsity(self, mod) -> tuple[float, str]:
        """(fraction of zero weights the format does not store, storage protocol's kind):
        dense formats store and multiply every weight, zeros included."""
        return 0.0, "dense"

    @staticmethod
    def channel(mod, name: str, g: int) -> torch.Tensor | None:
        buf = getattr(mod, name, None)
        if buf is None:
            return None
        n = mod.geometry.n
        return buf[g * n:(g + 1) * n]


# --- integer activations (int8 and csr) ------------------------------------------------------

def _qrange(name: str, value) -> tuple[int, int] | None:
    """An optional (qmin, qmax) option as a tuple of ints."""
    if value is None:
        return None
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected (qmin, qmax), got {value!r}") from None
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in (lo, hi)) \
            or lo > hi:
        raise ValueError(f"{name}: expected integers qmin <= qmax, got {value!r}")
    return int(lo), int(hi)


class IntActivationScheme(FormatScheme):
    """What the formats with int8 / uint8 activations share (``int8``, ``csr``): dynamic
    symmetric activations per GEMM row (or per conv input image, ``act_granularity="sample"``)
    or static ones (``act_scale``, ``act_zero_point``, optional ``act_range`` (qmin, qmax):
    b-bit activations in the int8 kernels, uint8 if qmin >= 0, else int8), and the integer
    operands of a call (``integer_rows``, ``accumulate``: the modules' ``integer_trace``)."""

    OPTIONS = {"act_scale": None, "act_zero_point": 0, "act_range": None,
               "act_granularity": "row"}
    GRANULARITIES = ("row", "sample")  # dynamic scales: per GEMM row, or per conv input image
    act_bits = 8

    def __init__(self, **options) -> None:
        super().__init__(**options)
        o = self.options
        if o["act_scale"] is None:
            if o["act_zero_point"] != 0 or o["act_range"] is not None:
                raise ValueError("act_zero_point, act_range: only with act_scale (static "
                                 "activations); dynamic activations are symmetric int8")
        else:
            o["act_scale"] = _positive("act_scale", o["act_scale"])
            o["act_range"] = _qrange("act_range", o["act_range"])
            if o["act_range"] is None:
                o["act_zero_point"] = _zero_point("act_zero_point", o["act_zero_point"])
            else:
                zp = o["act_zero_point"]
                if isinstance(zp, bool) or not isinstance(zp, (int, np.integer)):
                    raise ValueError(f"act_zero_point: must be an integer, got {zp!r}")
                o["act_zero_point"] = int(zp)
                activation_range(o["act_zero_point"], o["act_range"])  # validates
        if o["act_granularity"] not in self.GRANULARITIES:
            raise ValueError(f"act_granularity: must be one of {self.GRANULARITIES}, got "
                             f"{o['act_granularity']!r}")
        if o["act_granularity"] != "row" and o["act_scale"] is not None:
            raise ValueError("act_granularity: chooses the scales of dynamic activations; a "
                             "static layer (act_scale) has one scale")

    @property
    def static(self) -> bool:
        return self.options["act_scale"] is not None

    def _act_buffers(self) -> dict[str, torch.Tensor]:
        o = self.options
        if not self.static:
            return {}
        return {"act_scale": torch.tensor(o["act_scale"], dtype=torch.float32),
                "act_zero_point": torch.tensor(o["act_zero_point"], dtype=torch.int32)}

    def _dynamic_float_input(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            raise TypeError(f"x: this layer quantizes its activations dynamically, so it "
                            f"takes float input, got {x.dtype}; quantized input needs a "
                            f"layer with act_scale")
        return _as_float_input(x)

    def _static_int_input(self, x: torch.Tensor, dtype: torch.dtype, zp: int) -> None:
        if x.dtype != dtype:
            qrange = self.options["act_range"]
            raise TypeError(f"x: quantized input of this layer is {dtype} (act_zero_point={zp}"
                            f"{'' if qrange is None else f', act_range={qrange}'}), got "
                            f"{x.dtype}")

    def prepare_input(self, mod, x):
        if not self.static:
            xf = self._dynamic_float_input(x)
            if self.options["act_granularity"] == "row":
                return xf, 0, None
            # one scale per image [B, C, H, W]: quantized before im2col, padding 0 = q(0)
            q, s = _OPS.quantize_dynamic(xf.reshape(x.shape[0], math.prod(x.shape[1:])))
            return q.reshape(x.shape), 0, s
        zp, qrange = int(mod.act_zero_point), self.options["act_range"]
        dtype = _TORCH_DTYPE[activation_range(zp, qrange)[0]]
        if x.is_floating_point():
            q = _OPS.quantize_static(_as_float_input(x), float(mod.act_scale), zp,
                                     None if qrange is None else list(qrange))
            return q, zp, None
        self._static_int_input(x, dtype, zp)
        return x, zp, None

    def eager_input(self, plan, x):
        if not self.static:
            xf = self._dynamic_float_input(x).numpy()
            if self.options["act_granularity"] == "row":
                return xf, 0, None
            # one scale per image whatever the order of its values: quantize channels-last
            # input in its memory order, so it stays channels-last (no transposing copy)
            nhwc = xf.transpose(0, 2, 3, 1)
            if nhwc.flags.c_contiguous and not xf.flags.c_contiguous:
                q, s = quantize_dynamic(nhwc.reshape(x.shape[0], math.prod(x.shape[1:])))
                return q.reshape(nhwc.shape).transpose(0, 3, 1, 2), 0, s
            q, s = quantize_dynamic(xf.reshape(x.shape[0], math.prod(x.shape[1:])))
            return q.reshape(xf.shape), 0, s
        zp, qrange = plan.zero_point, plan.qrange
        if x.is_floating_point():
            static_params_dtype(plan.act_scale, zp, qrange)  # the op's checks
            return quantize_static(_as_float_input(x).numpy(), plan.act_scale, zp, qrange), zp, None
        self._static_int_input(x, plan.in_dtype, zp)
        return x.numpy(), zp, None

    def _static_plan(self, mod) -> dict:
        """EagerPlan fields of static activations (read from the buffers, as the ops do)."""
        if not self.static:
            return {}
        zp, qrange = int(mod.act_zero_point), self.options["act_range"]
        return {"act_scale": float(mod.act_scale), "zero_point": zp, "qrange": qrange,
                "in_dtype": _TORCH_DTYPE[activation_range(zp, qrange)[0]]}

    # int8 weights, symmetric per output channel, stacked into the format's buffers by _fill
    def quantize(self, geo: GemmGeometry, w: torch.Tensor, bias):
        q, s = quantize_weight_int8(w.reshape(geo.channels, geo.k).numpy())
        return self._fill(geo, torch.from_numpy(q).reshape(geo.groups, geo.n, geo.k),
                          torch.from_numpy(s), bias)

    def from_integers(self, geo: GemmGeometry, weight, weight_scale, weight_zero_point, bias):
        if weight_zero_point is not None:
            raise ValueError(f"weight_zero_point: {self.fmt} weights are symmetric int8 (no zero point)")
        _int_range("weight", weight, -128, 127)
        scale = _channel_scales("weight_scale", weight_scale, geo.channels)
        return self._fill(geo, weight.to(torch.int8), scale, bias)

    def integer_rows(self, mod, rows, a_scale=None) -> tuple[torch.Tensor, torch.Tensor | None,
                                                             int]:
        """(q [M, K] int8 / uint8, per-row scales float32 [M] of dynamic activations or None
        for static ones (``mod.act_scale``), zero point) of GEMM rows from ``prepare_input``
        (float rows are quantized per row here; ``a_scale``: per-sample scales)."""
        if rows.is_floating_point():
            q, s = _OPS.quantize_dynamic(rows)
            return q, s, 0
        if a_scale is not None:
            return rows, a_scale, 0
        return rows, None, int(mod.act_zero_point)


# --- int8 (W8A8) -------------------------------------------------------------------------

class Int8Scheme(IntActivationScheme):
    """int8 weights per output channel, int8/uint8 activations (dynamic per row, or static),
    float32 out through the Dequantize epilogue or int8/uint8 out through Requantize
    (``out_scale``, ``out_zero_point``; ``out_range`` (qmin, qmax) gives the output the
    dtype and range of a consumer's ``act_range``; ``relu`` or ``out_clip`` (qmin, qmax)
    clamp it further: a fused activation)."""

    fmt = "int8"
    op = "gemm_int8"   # the torch op: gemm_int8's arguments and epilogues
    OPTIONS = {**IntActivationScheme.OPTIONS, "out_scale": None, "out_zero_point": 0,
               "out_range": None, "relu": False, "out_clip": None}
    weight_bits = 8
    packed = ("weight_data", "weight_col_sum")
    eager = True

    def __init__(self, **options) -> None:
        super().__init__(**options)
        o = self.options
        if o["act_scale"] is None and o["out_scale"] is not None:
            raise ValueError("out_scale: int8 output needs static activations (act_scale): "
                             "dynamic activations have one scale per row, the requantizing "
                             "multiplier one per output channel")
        if o["out_scale"] is None:
            if (o["out_zero_point"] != 0 or o["relu"] or o["out_range"] is not None
                    or o["out_clip"] is not None):
                raise ValueError("out_zero_point, out_range, relu, out_clip: only with "
                                 "out_scale (int8 output); apply torch.relu to a float output")
        else:
            o["out_scale"] = _positive("out_scale", o["out_scale"])
            o["out_range"] = _qrange("out_range", o["out_range"])
            o["out_clip"] = _qrange("out_clip", o["out_clip"])
            if o["out_range"] is None:
                o["out_zero_point"] = _zero_point("out_zero_point", o["out_zero_point"])
            else:
                activation_range(o["out_zero_point"], o["out_range"])  # validates
        if not isinstance(o["relu"], bool):
            raise TypeError(f"relu: expected a bool, got {o['relu']!r}")

    @property
    def int8_out(self) -> bool:
        return self.options["out_scale"] is not None

    def packed_zeros(self, geo: GemmGeometry) -> dict[str, torch.Tensor]:
        """The stacked packed arrays, zero, before a state_dict or weights fill them."""
        return {"weight_data": _aligned_zeros((geo.groups, *INT8_PANELS.packed_shape(geo.k,
                                                                                      geo.n)),
                                              np.int8),
                "weight_col_sum": torch.zeros(geo.groups, geo.n, dtype=torch.int32)}

    def allocate(self, geo: GemmGeometry) -> dict[str, torch.Tensor]:
        g, c = geo.groups, geo.channels
        bufs = {**self.packed_zeros(geo),
                "weight_abs_sum_max": torch.zeros(g, dtype=torch.int64),
                "weight_scale": torch.ones(c, dtype=torch.float32), **self._act_buffers()}
        o = self.options
        if self.int8_out:
            bufs["out_scale"] = torch.tensor(o["out_scale"], dtype=torch.float32)
            bufs["out_zero_point"] = torch.tensor(o["out_zero_point"], dtype=torch.int32)
            bufs.update(self._requant(bufs["act_scale"], bufs["weight_scale"], bufs["out_scale"],
                                      torch.zeros(c) if geo.bias else None))
        elif geo.bias:
            bufs["bias"] = torch.zeros(c, dtype=torch.float32)
        return bufs

    @staticmethod
    def _requant(act_scale, w_scale, out_scale, bias) -> dict[str, torch.Tensor]:
        mult, shift, bias_q = requantize_params(float(act_scale), w_scale.numpy(),
                                                float(out_scale),
                                                None if bias is None else bias.numpy())
        bufs = {"requant_multiplier": torch.from_numpy(mult),
                "requant_shift": torch.from_numpy(shift)}
        if bias_q is not None:
            bufs["requant_bias"] = torch.from_numpy(bias_q)
        return bufs

    def _fill(self, geo: GemmGeometry, q: torch.Tensor, scale: torch.Tensor,
              bias: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Buffers from int8 q [G, N, K], scales [G * N] and a float bias [G * N]."""
        records = [pack_weights(q[g].numpy(), self.fmt, layout="nk") for g in range(geo.groups)]
        bufs = {f"weight_{k}": v for k, v in _stack_packed(records).items()}
        bufs["weight_abs_sum_max"] = torch.tensor([r.col_abs_sum_max for r in records],
                                                  dtype=torch.int64)
        bufs["weight_scale"] = scale.to(torch.float32).contiguous()
        o = self.options
        if self.int8_out:
            bufs.update(self._requant(o["act_scale"], bufs["weight_scale"], o["out_scale"], bias))
        elif bias is not None:
            bufs["bias"] = bias
        return bufs

    def meta(self, mod, g: int) -> list[int]:
        return [mod.geometry.k, mod.geometry.n, int(mod.weight_abs_sum_max[g])]

    def accumulate(self, mod, q: torch.Tensor, g: int, zp: int) -> torch.Tensor:
        """int32 [M, N] = (q - zp) @ W_g^T, the kernel without an epilogue."""
        return getattr(_OPS, self.op)(q, self.weights(mod, g), self.meta(mod, g), self.fmt, zp)

    def out_qrange(self, mod) -> tuple[torch.dtype, int, int]:
        """(dtype, qmin, qmax) of the requantized output: ``out_range`` (or the zero
        point's default), clamped by ``relu`` and ``out_clip``."""
        o, ozp = self.options, int(mod.out_zero_point)
        dtype, lo, hi = activation_range(ozp, o["out_range"])
        if o["relu"]:
            lo = max(lo, ozp)
        if o["out_clip"] is not None:
            lo, hi = max(lo, o["out_clip"][0]), min(hi, o["out_clip"][1])
        return _TORCH_DTYPE[dtype], lo, hi

    def matmul(self, mod, rows, g: int, pad_taps=None, a_scale=None) -> torch.Tensor:
        """One group's GEMM; ``a_scale``: the per-row scales of rows quantized per sample."""
        w, meta = self.weights(mod, g), self.meta(mod, g)
        w_scale, bias = self.channel(mod, "weight_scale", g), self.channel(mod, "bias", g)
        rows, a_scale, zp = self.integer_rows(mod, rows, a_scale)
        gemm, fmt = getattr(_OPS, self.op), self.fmt
        if a_scale is not None:       # dynamic: symmetric, zero point 0
            return gemm(rows, w, meta, fmt, 0, "dequantize", a_scale=a_scale, w_scale=w_scale,
                        bias=bias)
        if not self.int8_out:
            return gemm(rows, w, meta, fmt, zp, "dequantize", a_scale=mod.act_scale,
                        w_scale=w_scale, bias=bias)
        return gemm(rows, w, meta, fmt, zp, "requantize", **self._requantize_args(mod, g))

    def _requantize_args(self, mod, g: int) -> dict:
        """The requantize epilogue's op arguments of group g (int8 output)."""
        dtype, qmin, qmax = self.out_qrange(mod)
        return {"multiplier": self.channel(mod, "requant_multiplier", g),
                "shift": self.channel(mod, "requant_shift", g),
                "bias": self.channel(mod, "requant_bias", g),
                "out_zero_point": int(mod.out_zero_point), "qmin": qmin, "qmax": qmax,
                "out_dtype": dtype}

    def eager_plan(self, mod) -> EagerPlan:
        """Per group the Packed* record and, with static activations, the epilogue the op
        would build from the same buffers (``torch_ops.int8_epilogue``)."""
        groups = []
        for g in range(mod.geometry.groups):
            w_scale, bias = self.channel(mod, "weight_scale", g), self.channel(mod, "bias", g)
            if self.int8_out:
                ep = int8_epilogue("requantize", **self._requantize_args(mod, g))
            elif self.static:
                ep = int8_epilogue("dequantize", a_scale=mod.act_scale, w_scale=w_scale,
                                   bias=bias)
            else:
                ep = None  # per-row scales: a Dequantize per call
            groups.append(EagerGroup(self.packed_record(mod, g), ep, w_scale.numpy(),
                                     None if bias is None else bias.numpy()))
        out = (np.dtype(np.float32) if not self.int8_out
               else groups[0].epilogue.np_out_dtype)
        return EagerPlan(tuple(groups), out, **self._static_plan(mod))

    def eager_matmul(self, plan: EagerPlan, rows: np.ndarray, g: int,
                     a_scale: np.ndarray | None = None) -> np.ndarray:
        """``matmul`` on the eager path: NumPy rows in, NumPy out."""
        grp = plan.groups[g]
        if not rows.shape[0]:  # as the op: nothing to compute, and no empty scales
            return np.empty((0, grp.packed.n), plan.out_dtype)
        kernel = INT8_KERNELS[self.fmt]
        if rows.dtype == np.float32:  # dynamic, per row
            rows, a_scale = quantize_dynamic(rows)
        if a_scale is not None:
            ep = Dequantize(w_scale=grp.w_scale, a_scale=a_scale, bias=grp.bias)
            return kernel(rows, grp.packed, a_zero_point=0, epilogue=ep)
        return kernel(rows, grp.packed, a_zero_point=plan.zero_point, epilogue=grp.epilogue)


class Sparse24Scheme(Int8Scheme):
    """int8 weights that satisfy 2:4 along K (two nonzeros in every 4 consecutive K values of
    an output channel, e.g. after ``compress.prune(model, NMConfig(2, 4))``), run by
    ``gemm_sparse24``: int8 everything else, as ``Int8Scheme`` (activations, epilogues,
    int8 output). K runs in torch's ``weight.reshape(out, -1)`` order, the order N:M masks
    are taken in; a weight that is not 2:4 there is rejected naming the first bad group."""

    fmt = "sparse24"
    op = "gemm_sparse24"
    packed = ("weight_values", "weight_meta")
    tap_major = False

    def packed_zeros(self, geo: GemmGeometry) -> dict[str, torch.Tensor]:
        values = SPARSE24_PANELS.packed_shape(geo.k, geo.n, np.dtype(np.int8))
        return {"weight_values": _aligned_zeros((geo.groups, *values), np.int8),
                "weight_meta": _aligned_zeros((geo.groups,
                                               *SPARSE24_PANELS.meta_shape(geo.k, geo.n)),
                                              np.uint32)}

    def meta(self, mod, g: int) -> list[int]:
        return FormatScheme.meta(self, mod, g)  # the record derives its overflow guard

    def sparsity(self, mod) -> tuple[float, str]:
        return 0.5, "2:4"


# --- csr (unstructured sparse int8 weights) ----------------------------------------------------

class CsrScheme(IntActivationScheme):
    """Unstructured sparse int8 weights in CSR (``format_csr``): quantized per output channel
    as ``int8`` (s_j = max|w_j| / 127), only the nonzero integers stored; activations as
    ``int8`` (dynamic or static, int8 / uint8); ``spmm_csr`` gives the exact int32
    accumulator, then the Dequantize arithmetic y = float32(acc) * (s_x[i] * s_j) + bias_j
    (``ref.dequantize``: the same float32 steps as the int8 format, so both give the same
    bits). uint8 activations run as q - 128 in int8, plus (128 - zp) * rowsum(W).

    Groups are stored as [G, ...] arrays, each group's entries padded to the longest group;
    the stored entry count is data-dependent, so the index and value buffers take the
    length of a loaded state_dict (``variable``)."""

    fmt = "csr"
    weight_bits = 8
    packed = ("weight_row_ptr", "weight_col_idx", "weight_values")
    variable = ("weight_col_idx", "weight_values")

    def allocate(self, geo: GemmGeometry) -> dict[str, torch.Tensor]:
        bufs = {"weight_row_ptr": torch.zeros(geo.groups, geo.n + 1, dtype=torch.int64),
                "weight_col_idx": torch.zeros(geo.groups, 0, dtype=torch.int32),
                "weight_values": torch.zeros(geo.groups, 0, dtype=torch.int8),
                "weight_scale": torch.ones(geo.channels, dtype=torch.float32),
                **self._act_buffers()}
        if geo.bias:
            bufs["bias"] = torch.zeros(geo.channels, dtype=torch.float32)
        return bufs

    def _fill(self, geo: GemmGeometry, q: torch.Tensor, scale: torch.Tensor, bias):
        records = [pack_weights(q[g].numpy(), "csr", layout="nk") for g in range(geo.groups)]
        width = max(r.stored for r in records)
        idx = torch.zeros(geo.groups, width, dtype=torch.int32)
        val = torch.zeros(geo.groups, width, dtype=torch.int8)
        for g, r in enumerate(records):
            idx[g, :r.stored] = torch.from_numpy(r.col_idx)
            val[g, :r.stored] = torch.from_numpy(r.values)
        bufs = {"weight_row_ptr": torch.from_numpy(np.stack([r.row_ptr for r in records])),
                "weight_col_idx": idx, "weight_values": val,
                "weight_scale": scale.to(torch.float32).contiguous()}
        if bias is not None:
            bufs["bias"] = bias
        return bufs

    def weights(self, mod, g: int) -> list[torch.Tensor]:
        row_ptr = mod.weight_row_ptr[g]
        stored = int(row_ptr[-1])
        return [row_ptr, mod.weight_col_idx[g, :stored], mod.weight_values[g, :stored]]

    def meta(self, mod, g: int) -> list[int]:
        return [mod.geometry.n, mod.geometry.k]

    def sparsity(self, mod) -> tuple[float, str]:
        nnz = sum(self.packed_record(mod, g).nnz for g in range(mod.geometry.groups))
        geo = mod.geometry
        return 1.0 - nnz / (geo.groups * geo.n * geo.k), "unstructured"

    def accumulate(self, mod, q: torch.Tensor, g: int, zp: int) -> torch.Tensor:
        """int32 [M, N] = (q - zp) @ W_g^T through spmm_csr (W [N, K] x q^T [K, M])."""
        w, meta = self.weights(mod, g), self.meta(mod, g)
        x = q.detach().numpy().T
        offset = 128 if q.dtype == torch.uint8 else 0
        if offset:  # uint8 q as q - 128 in int8: flipping the top bit
            x = (x ^ np.uint8(0x80)).view(np.int8)
        acc = _OPS.spmm_csr(w, meta, self.fmt, torch.from_numpy(np.ascontiguousarray(x)))
        acc = acc.numpy().T
        if offset != zp:
            row_sum = self.packed_record(mod, g).row_sum.astype(np.int64)
            wide = acc.astype(np.int64) + (offset - zp) * row_sum
            if wide.size and (wide.min() < np.iinfo(np.int32).min
                              or wide.max() > np.iinfo(np.int32).max):
                raise ValueError("x: the accumulator (q - zero_point) @ W^T leaves int32; "
                                 "split K")
            return torch.from_numpy(wide.astype(np.int32))
        return torch.from_numpy(np.ascontiguousarray(acc))

    def matmul(self, mod, rows, g: int, pad_taps=None, a_scale=None) -> torch.Tensor:
        rows, a_scale, zp = self.integer_rows(mod, rows, a_scale)
        acc = self.accumulate(mod, rows, g, zp).numpy()
        if a_scale is None:
            a_scale = mod.act_scale.expand(acc.shape[0])
        bias = self.channel(mod, "bias", g)
        return torch.from_numpy(ref.dequantize(
            acc, a_scale.numpy(), self.channel(mod, "weight_scale", g).numpy(),
            None if bias is None else bias.numpy()))


# --- int4 / uint4 (weight-only, or w4a8) ---------------------------------------------------

class Int4Scheme(FormatScheme):
    """Grouped 4-bit weights (``formats.quantize_int4``), float32 / bfloat16 activations
    (gemm_w4a16) or dynamic int8 activations (gemm_w4a8); K zero-padded to a whole group."""

    fmt = "int4"
    OPTIONS = {"group_size": 32, "scale_dtype": "float16", "activations": "float32"}
    ACTIVATIONS = {"float32": 32, "bfloat16": 16, "int8": 8}
    weight_bits = 4
    tap_major = False  # groups run along weight.reshape(out, -1), as lowbit.compress makes them
    eager = True

    def __init__(self, **options) -> None:
        super().__init__(**options)
        o = self.options
        if o["group_size"] not in INT4_GROUP_SIZES or isinstance(o["group_size"], bool):
            raise ValueError(f"group_size: must be one of {INT4_GROUP_SIZES}, got "
                             f"{o['group_size']!r}")
        if o["scale_dtype"] not in SCALE_DTYPES:
            raise ValueError(f"scale_dtype: must be one of {SCALE_DTYPES}, got "
                             f"{o['scale_dtype']!r}")
        if o["activations"] not in self.ACTIVATIONS:
            raise ValueError(f"activations: must be one of {', '.join(self.ACTIVATIONS)}, got "
                             f"{o['activations']!r}")

    @property
    def spec(self):
        return FORMATS[self.fmt]

    @property
    def packed(self) -> tuple[str, ...]:
        zeros = ("weight_zeros",) if self.spec.zero_point else ()
        return ("weight_data", "weight_scales", *zeros)

    @property
    def act_bits(self) -> int:
        return self.ACTIVATIONS[self.options["activations"]]

    def storage_extra(self) -> dict:
        return {"group_size": self.options["group_size"],
                "scale_dtype": self.options["scale_dtype"]}

    def padded_k(self, k: int) -> int:
        gs = self.options["group_size"]
        return -(-k // gs) * gs

    def allocate(self, geo: GemmGeometry) -> dict[str, torch.Tensor]:
        kp, gs = self.padded_k(geo.k), self.options["group_size"]
        gshape = (geo.groups, *self.spec.group_shape(kp, geo.n, gs))
        bufs = {"weight_data": _aligned_zeros((geo.groups, *self.spec.packed_shape(kp, geo.n)),
                                               np.uint8),
                "weight_scales": _aligned_zeros(gshape, self.options["scale_dtype"])}
        if self.spec.zero_point:
            bufs["weight_zeros"] = _aligned_zeros(gshape, np.uint8)
        if geo.bias:
            bufs["bias"] = torch.zeros(geo.channels, dtype=torch.float32)
        return bufs

    def _fill(self, geo, per_group_kwargs, bias) -> dict[str, torch.Tensor]:
        o = self.options
        records = [pack_weights(layout="nk", fmt=self.fmt, group_size=o["group_size"], **kw)
                   for kw in per_group_kwargs]
        bufs = {f"weight_{k}": v for k, v in _stack_packed(records).items()}
        if bias is not None:
            bufs["bias"] = bias
        return bufs

    def quantize(self, geo: GemmGeometry, w: torch.Tensor, bias):
        kp = self.padded_k(geo.k)
        wp = F.pad(w.reshape(geo.groups, geo.n, geo.k), (0, kp - geo.k))  # zeros: same scales
        return self._fill(geo, [{"w": wp[g].numpy(), "scale_dtype": self.options["scale_dtype"]}
                                for g in range(geo.groups)], bias)

    def from_integers(self, geo: GemmGeometry, weight, weight_scale, weight_zero_point, bias):
        spec, gs = self.spec, self.options["group_size"]
        kp = self.padded_k(geo.k)
        lo, hi = spec.value_range
        _int_range("weight", weight, lo, hi)
        gshape = (geo.channels, kp // gs)
        scales = as_tensor("weight_scale", weight_scale)
        if tuple(scales.shape) != gshape:
            raise ValueError(f"weight_scale: expected shape {gshape} ([out_channels, "
                             f"ceil(K / group_size)] with K={geo.k}), got {tuple(scales.shape)}")
        if str(scales.dtype).removeprefix("torch.") != self.options["scale_dtype"]:
            raise TypeError(f"weight_scale: dtype {scales.dtype} differs from scale_dtype="
                            f"{self.options['scale_dtype']!r} (the stored scale dtype)")
        if spec.zero_point:
            if weight_zero_point is None:
                raise ValueError(f"weight_zero_point: uint4 weights need zero points of shape "
                                 f"{gshape}")
            zeros = as_tensor("weight_zero_point", weight_zero_point)
            if tuple(zeros.shape) != gshape:
                raise ValueError(f"weight_zero_point: expected shape {gshape}, got "
                                 f"{tuple(zeros.shape)}")
            _int_range("weight_zero_point", zeros, 0, 15)
            # padded K takes the nibble of value 0 (n = z) in its group
            pad = zeros[:, -1:].to(torch.int16).expand(geo.channels, kp - geo.k)
        elif weight_zero_point is not None:
            raise ValueError("weight_zero_point: symmetric int4 has none; use fmt='uint4'")
        else:
            zeros, pad = None, torch.zeros(geo.channels, kp - geo.k, dtype=torch.int16)
        v = torch.cat([weight.reshape(geo.channels, geo.k).to(torch.int16), pad], dim=1)
        kws = []
        for g in range(geo.groups):
            rows = slice(g * geo.n, (g + 1) * geo.n)
            kw = {"w": v[rows].numpy().astype(np.int8), "scales": scales[rows].numpy()}
            if zeros is not None:
                kw["zero_points"] = zeros[rows].to(torch.uint8).numpy()
            kws.append(kw)
        return self._fill(geo, kws, bias)

    def meta(self, mod, g: int) -> list[int]:
        return [self.padded_k(mod.geometry.k), mod.geometry.n, self.options["group_size"]]

    def matmul(self, mod, rows, g: int, pad_taps=None, a_scale=None) -> torch.Tensor:
        kp = self.padded_k(mod.geometry.k)
        if kp != rows.shape[1]:
            rows = F.pad(rows, (0, kp - rows.shape[1]))
        w, meta, acts = self.weights(mod, g), self.meta(mod, g), self.options["activations"]
        if acts == "int8":
            q, s = _OPS.quantize_dynamic(rows)
            out = _OPS.gemm_w4a8(q, w, meta, self.fmt, s)
        else:
            out = _OPS.gemm_w4a16(rows.to(getattr(torch, acts)), w, meta, self.fmt)
        return _add_bias_(out, self.channel(mod, "bias", g))

    def eager_plan(self, mod) -> EagerPlan:
        groups = []
        for g in range(mod.geometry.groups):
            bias = self.channel(mod, "bias", g)
            groups.append(EagerGroup(self.packed_record(mod, g),
                                     bias=None if bias is None else bias.numpy()))
        return EagerPlan(tuple(groups), np.dtype(np.float32))

    def eager_matmul(self, plan: EagerPlan, rows: np.ndarray, g: int,
                     a_scale: np.ndarray | None = None) -> np.ndarray:
        """``matmul`` on the eager path: float32 NumPy rows in, float32 out."""
        grp = plan.groups[g]
        kp, acts = grp.packed.k, self.options["activations"]
        if not rows.shape[0]:
            return np.empty((0, grp.packed.n), np.float32)
        if kp != rows.shape[1]:  # K zero-padded to a whole group, as in the weights
            padded = np.zeros((rows.shape[0], kp), np.float32)
            padded[:, :rows.shape[1]] = rows
            rows = padded
        if acts == "int8":
            q, s = quantize_dynamic(rows)
            out = gemm_w4a8(q, grp.packed, a_scale=s)
        elif acts == "bfloat16":  # torch's float32 -> bfloat16 rounding, as the op path
            bits = torch.from_numpy(rows).to(torch.bfloat16).view(torch.int16)
            out = gemm_w4a16(bits.numpy().view(np.uint16), grp.packed)
        else:
            out = gemm_w4a16(rows, grp.packed)
        if grp.bias is not None:
            out += grp.bias
        return out


class Uint4Scheme(Int4Scheme):
    """``Int4Scheme`` with asymmetric weights: a zero point per group (``formats.UINT4_PANELS``)."""

    fmt = "uint4"


# --- binary (XNOR-Net) -------------------------------------------------------------------------

class BinaryScheme(FormatScheme):
    """XNOR-Net: sign weights with alpha per output channel, sign activations with beta per
    row (per output pixel for conv), out = dot * beta * alpha + bias (Rastegari et al. 2016).

    Conv zero padding is exact: padded inputs pack as +1 bits, and ``weight_tap_sums``
    (sum over input channels of the sign weights per kernel position) removes them again."""

    fmt = "binary"
    packed = ("weight_data",)
    weight_bits = 1
    act_bits = 1

    def allocate(self, geo: GemmGeometry) -> dict[str, torch.Tensor]:
        packed_shape = BINARY_PANELS.packed_shape(geo.k, geo.n)
        bufs = {"weight_data": _aligned_zeros((geo.groups, *packed_shape), np.uint64),
                "weight_alpha": torch.ones(geo.channels, dtype=torch.float32)}
        if geo.zero_padded:
            bufs["weight_tap_sums"] = torch.zeros(geo.groups, geo.taps, geo.n, dtype=torch.int32)
        if geo.bias:
            bufs["bias"] = torch.zeros(geo.channels, dtype=torch.float32)
        return bufs

    def _fill(self, geo: GemmGeometry, w: torch.Tensor, alpha: torch.Tensor, bias):
        """w [G, N, K] whose signs are the weights (>= 0 is +1)."""
        w_np = w.numpy()
        bufs = {f"weight_{k}": v for k, v in _stack_packed(
            [pack_weights(w_np[g], "binary", layout="nk") for g in range(geo.groups)]).items()}
        bufs["weight_alpha"] = alpha.contiguous()
        if geo.zero_padded:
            signs = torch.where(w >= 0, 1, -1).reshape(geo.groups, geo.n, geo.taps, -1)
            bufs["weight_tap_sums"] = (signs.sum(dim=3, dtype=torch.int32).transpose(1, 2)
                                       .contiguous())
        if bias is not None:
            bufs["bias"] = bias
        return bufs

    def quantize(self, geo: GemmGeometry, w: torch.Tensor, bias):
        alpha = torch.from_numpy(xnor_scales(w.reshape(geo.channels, geo.k).numpy(), "weight"))
        return self._fill(geo, w.reshape(geo.groups, geo.n, geo.k), alpha, bias)

    def from_integers(self, geo: GemmGeometry, weight, weight_scale, weight_zero_point, bias):
        if weight_zero_point is not None:
            raise ValueError("weight_zero_point: binary weights have none")
        if weight.is_complex() or weight.dtype == torch.bool:
            raise TypeError(f"weight: expected real signs (>= 0 is +1), got {weight.dtype}")
        if weight.is_floating_point() and bool(torch.isnan(weight).any()):
            raise ValueError("weight: contains NaN, which has no sign")
        alpha = _channel_scales("weight_scale", weight_scale, geo.channels, allow_zero=True)
        return self._fill(geo, weight.reshape(geo.groups, geo.n, geo.k), alpha, bias)

    def matmul(self, mod, rows, g: int, pad_taps=None, a_scale=None) -> torch.Tensor:
        beta = _OPS.xnor_scales(rows)
        bits = _OPS.pack_binary_activations(rows)
        w, meta = self.weights(mod, g), self.meta(mod, g)
        alpha = self.channel(mod, "weight_alpha", g)
        if pad_taps is None:
            out = _OPS.gemm_binary(bits, w, meta, "binary", alpha, beta)
        else:
            dot = _OPS.gemm_binary(bits, w, meta, "binary").numpy()
            # int32 [L, N]: the +1 bits the padding contributed to each output pixel
            corr = pad_taps @ mod.weight_tap_sums[g].numpy()
            dot = (dot.reshape(-1, *corr.shape) - corr).reshape(dot.shape)
            out = torch.from_numpy(ref.binary_scale(dot, alpha.numpy(), beta.numpy()))
        return _add_bias_(out, self.channel(mod, "bias", g))


SCHEMES: dict[str, type[FormatScheme]] = {
    "int8": Int8Scheme, "int4": Int4Scheme, "uint4": Uint4Scheme, "binary": BinaryScheme,
    "csr": CsrScheme, "sparse24": Sparse24Scheme,
}


def make_scheme(fmt: str, options: dict) -> FormatScheme:
    if fmt not in SCHEMES:
        raise ValueError(f"fmt: unsupported format {fmt!r}; the modules support "
                         f"{', '.join(map(repr, SCHEMES))}")
    return SCHEMES[fmt](**options)


# --- argument helpers ------------------------------------------------------------------------

def as_tensor(name: str, value) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got "
                        f"{type(value).__name__}")
    return value.detach().cpu()


def _int_range(name: str, t: torch.Tensor, lo: int, hi: int) -> None:
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name}: expected integers in [{lo}, {hi}], got dtype {t.dtype}")
    if t.numel() and (int(t.min()) < lo or int(t.max()) > hi):
        raise ValueError(f"{name}: values must lie in [{lo}, {hi}], got [{int(t.min())}, "
                         f"{int(t.max())}]")


def _channel_scales(name: str, value, channels: int, allow_zero: bool = False) -> torch.Tensor:
    s = as_tensor(name, value)
    if not s.is_floating_point():
        raise TypeError(f"{name}: expected float scales, got {s.dtype}")
    s = s.to(torch.float32).reshape(-1)
    if s.numel() != channels:
        raise ValueError(f"{name}: expected {channels} per-output-channel scales, got {s.numel()}")
    bad_sign = (s < 0).any() or (not allow_zero and (s == 0).any())
    if not bool(torch.isfinite(s).all()) or bool(bad_sign):
        sign = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name}: scales must be finite and {sign} in float32")
    return s.contiguous()
