"""``profile``: params, stored size, MACs, FLOPs and OPs of a model, per layer and in total.

The metrics of the compression literature (seed 001, section 2), under one set of conventions:

* **params**: parameters (weights, biases, norm scales and shifts, embeddings), counted once
  even when shared; buffers are not parameters. For a module defining ``lowbit_storage``
  the logical weights and biases of its geometry (in*out + out for a linear), not its
  scales, unless its storage answer gives ``params``.
* **bytes**: what is stored. A module defining ``lowbit_storage`` (quantized, packed,
  sparse, kernel-backed) reports every byte of its subtree itself (weights in their packed
  format, scales, zero points, metadata: "bytes"); every other module stores its own
  parameters and persistent buffers at their dtype's size (fp32: 4 bytes), BatchNorm
  running mean / variance (and its int64 batch counter) included: they are in the
  state_dict and inference needs them.
* **fp32_bytes**: the same layers held in fp32: 4 bytes per parameter (per element of a
  floating buffer; integer buffers at their own size); for ``lowbit_storage`` modules
  4 * params. ``compression_ratio`` = fp32_bytes / bytes over the model.
* **MACs**: multiply-accumulates of convolutions, linear layers and matmuls (attention
  scores and context included) by the textbook formulas, conv N*Cout*Hout*Wout*(Cin/groups)
  *Kh*Kw and linear N*in*out; bias adds, normalization, activations, softmax, pooling and
  residual adds are not counted (``lowbit.compress.trace`` lists what is and is not).
* **OPs** = 2 * MACs (a multiply and an add), the seed's "OPs = MACs x 2", for every layer.
  **FLOPs** = the OPs of layers computing in floating point; a layer whose
  ``lowbit_storage`` has weights and activations of <= 8 bits computes in integers and
  contributes its OPs to ``int_ops`` instead (FLOPs + int_ops = OPs). A weight-only int4
  layer (float activations) counts FLOPs.

    >>> from lowbit.compress import get_model, profile
    >>> p = profile(get_model("digits-cnn"), torch.zeros(1, 1, 8, 8))
    >>> p.macs, p.params, p.bytes, p.compression_ratio
    >>> print(p.table())
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .trace import StorageInfo, Trace, _conv_like, _linear_like, tensors_of, trace_model

__all__ = ["profile", "LayerProfile", "ModelProfile"]

_DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16",
                torch.float64: "fp64"}
FP32_BYTES = 4


@dataclass(frozen=True)
class LayerProfile:
    """One row: a module and everything it owns and computes (see the module doc)."""

    name: str               # module name; "" is the model itself
    kind: str               # module class name
    calls: int              # forward calls seen (0: stored but unused)
    input_shape: tuple      # of the first call
    output_shape: tuple
    params: int
    bytes: int
    fp32_bytes: int
    format: str             # storage format: "fp32", "int8", "int4-g32", ...; "" if nothing stored
    weight_bits: float      # bits of one stored weight value (0: no weights)
    act_bits: int           # activation width it runs at (0: not called)
    sparsity: float         # fraction of zero weights
    macs: int
    flops: int
    ops: int

    @property
    def int_ops(self) -> int:
        """OPs done in integer arithmetic (ops - flops)."""
        return self.ops - self.flops

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"], d["output_shape"] = list(self.input_shape), list(self.output_shape)
        d["int_ops"] = self.int_ops
        return d


@dataclass(frozen=True)
class ModelProfile:
    """``profile``'s answer: rows in module order, totals, and notes on what was not counted."""

    model: str
    input_shape: tuple
    layers: tuple[LayerProfile, ...]
    notes: tuple[str, ...] = ()

    def _sum(self, attr: str) -> int:
        return sum(getattr(r, attr) for r in self.layers)

    @property
    def params(self) -> int:
        return self._sum("params")

    @property
    def bytes(self) -> int:
        return self._sum("bytes")

    @property
    def fp32_bytes(self) -> int:
        return self._sum("fp32_bytes")

    @property
    def macs(self) -> int:
        return self._sum("macs")

    @property
    def flops(self) -> int:
        return self._sum("flops")

    @property
    def ops(self) -> int:
        return self._sum("ops")

    @property
    def int_ops(self) -> int:
        return self.ops - self.flops

    @property
    def compression_ratio(self) -> float:
        """fp32 size of these layers / their stored size (1.0 for an fp32 model)."""
        return self.fp32_bytes / self.bytes if self.bytes else math.inf

    def compression_vs(self, baseline: ModelProfile) -> float:
        """baseline.bytes / self.bytes, e.g. against the uncompressed model's profile."""
        if not isinstance(baseline, ModelProfile):
            raise TypeError(f"baseline: must be a ModelProfile, got {type(baseline).__name__}")
        return baseline.bytes / self.bytes if self.bytes else math.inf

    def layer(self, name: str) -> LayerProfile:
        for r in self.layers:
            if r.name == name:
                return r
        raise KeyError(f"no layer {name!r}; layers: {', '.join(r.name for r in self.layers)}")

    def totals(self) -> dict:
        return {"params": self.params, "bytes": self.bytes, "fp32_bytes": self.fp32_bytes,
                "compression_ratio": self.compression_ratio, "macs": self.macs,
                "flops": self.flops, "ops": self.ops, "int_ops": self.int_ops}

    def to_dict(self) -> dict:
        return {"model": self.model, "input_shape": list(self.input_shape),
                "layers": [r.to_dict() for r in self.layers], "total": self.totals(),
                "notes": list(self.notes)}

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> str:
        """A fixed-width text table: one line per row, a total line, the notes."""
        head = (f"{'layer':<24} {'kind':<18} {'output':<16} {'params':>9} {'bytes':>10} "
                f"{'format':<10} {'W/A bits':>8} {'sparse':>6} {'MACs':>12} {'FLOPs':>12} "
                f"{'OPs':>12}")
        rule = "-" * len(head)
        lines = [f"{self.model}, input {_shape(self.input_shape)}", head, rule]
        for r in self.layers:
            bits = f"{_num(r.weight_bits)}/{r.act_bits}" if r.calls else f"{_num(r.weight_bits)}/-"
            lines.append(
                f"{(r.name or '(model)')[:24]:<24} {r.kind[:18]:<18} "
                f"{_shape(r.output_shape)[:16]:<16} {r.params:>9,d} {r.bytes:>10,d} "
                f"{(r.format or '-')[:10]:<10} {bits:>8} {r.sparsity:>6.1%} {r.macs:>12,d} "
                f"{r.flops:>12,d} {r.ops:>12,d}")
        lines.append(rule)
        lines.append(f"{'total':<24} {'':<18} {'':<16} {self.params:>9,d} {self.bytes:>10,d} "
                     f"{'':<10} {'':>8} {'':>6} {self.macs:>12,d} {self.flops:>12,d} "
                     f"{self.ops:>12,d}")
        lines.append(f"size {self.bytes / 1024:.2f} KiB (fp32 {self.fp32_bytes / 1024:.2f} KiB, "
                     f"compression {self.compression_ratio:.2f}x); integer OPs {self.int_ops:,d}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _shape(shape: tuple) -> str:
    return "[" + ",".join(str(s) for s in shape) + "]" if shape else "-"


def _num(x: float) -> str:
    return f"{x:g}"


def _geometry_params(mod: nn.Module) -> int | None:
    """Logical weights + biases of a linear- or conv-like module from its attributes."""
    bias = getattr(mod, "bias", None) is not None
    if _linear_like(mod, True):
        return int(mod.in_features) * int(mod.out_features) + (int(mod.out_features) if bias else 0)
    if _conv_like(mod, True):
        k = mod.kernel_size
        kernel = math.prod(k) if isinstance(k, (tuple, list)) else int(k) ** 2  # int: square
        cin, cout = int(mod.in_channels), int(mod.out_channels)
        w = cout * (cin // int(getattr(mod, "groups", 1))) * kernel
        return w + (cout if bias else 0)
    return None


def _row(trace: Trace, name: str, seen: set[int]) -> LayerProfile:
    mod = trace.modules[name]
    info: StorageInfo | None = trace.storage[name]
    ops_here = [op for op in trace.ops if op.owner == name]
    macs = sum(op.macs for op in ops_here)
    calls, in_shape, out_shape, in_bits = trace.calls.get(name, (0, (), (), 0))
    owned = [(n, t, is_p) for n, t, is_p in tensors_of(trace, name) if id(t) not in seen]
    seen.update(id(t) for _, t, _ in owned)
    weight = getattr(mod, "weight", None)
    if info is not None:
        params = info.params
        if params is None:
            params = _geometry_params(mod)
        if params is None:
            params = sum(t.numel() for _, t, is_p in owned if is_p)
        nbytes, fp32 = info.bytes, FP32_BYTES * params
        fmt, wbits, abits, sparsity = info.format, info.weight_bits, info.act_bits, info.sparsity
        integer = info.integer
    else:
        params = sum(t.numel() for _, t, is_p in owned if is_p)
        nbytes = sum(t.numel() * t.element_size() for _, t, _ in owned)
        fp32 = sum(t.numel() * (FP32_BYTES if t.is_floating_point() else t.element_size())
                   for _, t, _ in owned)
        floats = [t for _, t, _ in owned if t.is_floating_point()]
        fmt = (_DTYPE_NAMES.get(floats[0].dtype, str(floats[0].dtype).replace("torch.", ""))
               if floats else "")
        has_w = isinstance(weight, torch.Tensor) and weight.numel() > 0
        wbits = float(weight.element_size() * 8) if has_w else 0.0
        with torch.no_grad():
            sparsity = float((weight == 0).sum()) / weight.numel() if has_w else 0.0
        abits = ops_here[0].a_bits if ops_here else in_bits
        integer = False
    return LayerProfile(name=name, kind=type(mod).__name__, calls=calls, input_shape=in_shape,
                        output_shape=out_shape, params=params, bytes=nbytes, fp32_bytes=fp32,
                        format=fmt, weight_bits=wbits, act_bits=abits, sparsity=sparsity,
                        macs=macs, flops=0 if integer else 2 * macs, ops=2 * macs)


def profile(model: nn.Module, example_input) -> ModelProfile:
    """Per-layer and total params, stored bytes, MACs, FLOPs and OPs of ``model``.

    MACs conv = N*Cout*Hout*Wout*(Cin/groups)*Kh*Kw, linear = N*in*out, matmul =
    batch*M*N*K; OPs = 2*MACs; FLOPs = the OPs of floating-point layers; bytes read from
    each layer's storage format (``lowbit_storage``) or its tensors' dtypes. The module doc
    gives every convention; ``lowbit.compress.trace`` what is and is not counted.

    Args:
        model: any ``torch.nn.Module``; run once in eval mode under ``torch.no_grad`` (its
            train/eval flags are restored, nothing is modified).
        example_input: one input tensor, or a tuple of the forward's positional arguments;
            shapes (batch included) determine the MACs.

    Returns a ``ModelProfile``: ``.layers`` (``LayerProfile`` rows: modules that own
    parameters / buffers or do MACs, in ``named_modules`` order), totals as properties
    (``params``, ``bytes``, ``fp32_bytes``, ``compression_ratio``, ``macs``, ``flops``,
    ``ops``, ``int_ops``), ``table()``, ``to_dict()``, ``to_json()``.

    Example::

        >>> p = profile(get_model("digits-cnn"), torch.zeros(1, 1, 8, 8))
        >>> p.layer("conv2").macs        # 1 * 32 * 8 * 8 * 32 * 3 * 3
        589824

    Reference: the metrics of Zhu et al., A Survey on Model Compression for Large Language
    Models (arXiv:2308.07633), as summarized in seed 001 section 2; the conv MAC count as in
    Sze et al., Efficient Processing of Deep Neural Networks, Proc. IEEE 2017.
    """
    trace = trace_model(model, example_input)
    seen: set[int] = set()
    rows = []
    for name in trace.rows:
        row = _row(trace, name, seen)
        if row.params or row.bytes or row.macs:
            rows.append(row)
    first = example_input if isinstance(example_input, torch.Tensor) else example_input[0]
    shape = tuple(first.shape) if isinstance(first, torch.Tensor) else ()
    return ModelProfile(type(model).__name__, shape, tuple(rows), trace.notes)
