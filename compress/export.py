"""``export(model)``: run a quantized model on lowbit's kernels.

Every ``QuantLinear`` / ``QuantConv2d`` (from ``quantize``; a QAT model is ``convert``-ed
first) becomes a ``LowbitLinear`` / ``LowbitConv2d`` built with ``from_quantized`` from
exactly the integers and scales the simulation uses, so the kernels compute the same
integers (a grouped or depthwise QuantConv2d becomes a LowbitConv2d with the same
``groups``, one GEMM per channel group):

* int8 activations (``"int8"`` format): weights of 2..8 bits per output channel (or per
  tensor, repeated per channel) as int8 values; dynamic 8-bit activations per row (Linear)
  or per image (Conv2d, ``act_granularity="sample"``); static activations of 2..8 bits with
  their scale, zero point and integer range (``act_range``: e.g. QAT W4A4 runs the int8
  kernel on 4-bit values, exactly). Output: float32 through the Dequantize epilogue, the
  simulation's ``float32(acc) * (s_a * s_w) + bias``, bit for bit.
* weight-only with at most 4 bits (``"int4"``, gemm_w4a16): groups of 32 / 64 / 128 with
  their scales (float16 for ``Int4WeightOnlyConfig``, float32 otherwise), or per-channel /
  per-tensor scales repeated over groups of 128. The weights are the same numbers; the
  float sums run in the kernel's order (within ``kernels.ref.w4a16_tolerance``).
* left as is, with one warning listing them: dynamic activations of fewer than 8 bits,
  weight-only layers of 5..8 bits (no kernel takes float activations with int8 weights),
  and groups the int4 kernels do not take.

**Fused requantization (W8A8 chains)**, ``fuse_requantization``: where a static layer P
feeds a static layer C through ops that commute with quantization, P requantizes its
accumulator straight into C's input integers (the kernels' fixed-point Requantize epilogue,
``out_scale`` = C's scale, ``out_range`` = C's range) and the integer tensor passes on.
Fused patterns (found with torch.fx, or for models fx cannot trace, along the children of
an ``nn.Sequential``): P -> [op -> ...] -> C where each op is ``nn.ReLU``, ``torch.relu`` /
``F.relu`` / ``.relu()`` (folded into the clamp: qmin = zero point; a ReLU module that runs
only there becomes ``nn.Identity``, a function stays: a no-op on the clamped integers),
``nn.ReLU6`` (clamp [zp, zp + rint(6 / s)]; must run only there, becomes ``nn.Identity``),
``nn.MaxPool2d`` (monotone: max of integers), ``nn.Identity``, ``nn.Dropout`` (eval),
``nn.Flatten``, ``torch.flatten`` / ``torch.reshape`` / ``.view`` / ``.reshape`` /
``.flatten`` / ``.contiguous``; every value on the path has one user (shape queries such as
``x.size(0)`` aside) and P runs once. Anything else (a residual add, GELU, a functional
max pool, a second consumer, a dynamic or weight-only neighbour, a csr producer) keeps
float32 between the two layers.

**Channels-last between layers**: a convolution whose output (integer in a fused chain, else
float) reaches the next quantized layer, and only it, through the ops above but ``.view``
returns the GEMM's output as is, channels-last (``LowbitConv2d(channels_last=True)``): no
transposing copy out of it nor into the next convolution, and torch's MaxPool2d runs several
times faster on it. A ``.view`` across channels needs the contiguous layout, so a chain
through one keeps it; so does every other output.

Measured on a shared 2-core Zen 5 (noisy; bench group ``exported-digits-cnn-b*``, one
thread): the exported int8-static digits CNN (fused chains, channels-last between its
convolutions) runs 2.1-2.7x as fast as fp32 torch on 64 or 450 images and 0.8x on one
(per-layer Python overhead); ``export(fuse=False)`` gives the per-layer float path, slower
than the fused chains.

Requantization rounds differently from the simulation's float epilogue followed by the next
layer's quantizer, so ``fuse_requantization`` sets the same requantization on the
simulation layers (``QuantLinear.set_output_quant``): the simulation then computes what the
fused kernels compute, bit for bit (tests compare every layer's integers). Jacob et al.
2018, "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference" (CVPR), section 2.2.

    >>> import torch
    >>> from torch import nn
    >>> from lowbit.compress import Int8StaticConfig, export, quantize
    >>> m = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    >>> batches = [torch.randn(8, 16) for _ in range(4)]
    >>> m = export(quantize(m, Int8StaticConfig(calibrator="minmax"), calibration=batches))
    >>> type(m[0]).__name__, m[0](torch.randn(2, 16)).dtype     # int8 passes to m[2]
    ('LowbitLinear', torch.uint8)
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from lowbit.kernels.formats import INT4_GROUP_SIZES
from lowbit.kernels.modules import LowbitConv2d, LowbitLinear

from .granularity import PerChannel, PerGroup, PerTensor
from .qat import QAT_LAYERS, convert
from .qmodules import QUANT_LAYERS, OutQuant, QuantConv2d, QuantLinear
from .swap import replace_module

__all__ = ["Chain", "ExportedLayer", "ExportSummary", "Unsupported", "export",
           "export_summary", "fuse_requantization", "kernel_module"]

KERNEL_MODULES = (LowbitLinear, LowbitConv2d)
INT4_REPEAT_GROUP = 128  # per-channel scales repeated over groups of this size (any would do)


class Unsupported(ValueError):
    """A quantized layer the kernels cannot run (the message says why)."""


# --- one layer ------------------------------------------------------------------------------

def _int8_options(layer: QuantLinear | QuantConv2d) -> dict:
    act = layer.act
    if act.mode == "dynamic":
        if act.bits != 8:
            raise Unsupported(f"dynamic {act.bits}-bit activations (the kernels' dynamic "
                              f"quantizer is 8-bit, s = max|x| / 127)")
        return {"act_granularity": "sample"} if isinstance(layer, QuantConv2d) else {}
    opts = {"act_scale": float(layer.act_scale), "act_zero_point": int(layer.act_zero_point),
            "act_range": act.spec.qrange}
    out = layer.out_quant
    if out is not None:
        opts.update(out_scale=out.scale, out_zero_point=out.zero_point, out_range=out.qrange,
                    out_clip=out.clip)
    return opts


def _int4_weights(layer) -> tuple[torch.Tensor, dict]:
    """(scales [N, ceil(K / g)], options) of a weight-only layer of <= 4 bits."""
    spec = layer.weight_spec
    g = spec.granularity
    if spec.bits > 4:
        raise Unsupported(f"weight-only {spec.bits}-bit weights (no kernel takes float "
                          f"activations with int8 weights; <= 4 bits run on the int4 kernel)")
    if isinstance(g, PerGroup):
        if g.size not in INT4_GROUP_SIZES:
            raise Unsupported(f"PerGroup({g.size}) weights (the int4 kernels take groups of "
                              f"{', '.join(map(str, INT4_GROUP_SIZES))})")
        return layer.weight_scale, {"group_size": g.size}
    k = layer.weight_q[0].numel()
    groups = -(-k // INT4_REPEAT_GROUP)
    scales = layer._w_scale_vector()[:, None].expand(-1, groups).contiguous()
    return scales, {"group_size": INT4_REPEAT_GROUP}


def kernel_module(layer: QuantLinear | QuantConv2d, fmt: str | None = None
                  ) -> LowbitLinear | LowbitConv2d:
    """The kernel-backed module computing what ``layer`` simulates (see the module doc).

    Args:
        layer: a QuantLinear / QuantConv2d.
        fmt: None to choose ("int8" with quantized activations, "int4" weight-only), or
            "csr" for an int8 layer with float output (sparse weights on spmm_csr), or
            "sparse24" for an int8 layer whose integer weights are 2:4 along K
            (gemm_sparse24; every int8 option, chains included).

    Raises ``Unsupported`` (a ValueError) naming what the kernels cannot run.
    """
    if not isinstance(layer, QUANT_LAYERS):
        raise TypeError(f"layer: expected a QuantLinear or QuantConv2d, got "
                        f"{type(layer).__name__}")
    spec = layer.weight_spec
    if layer.act is not None:
        if not isinstance(spec.granularity, (PerChannel, PerTensor)):
            raise Unsupported(f"{spec.granularity} weights with quantized activations")
        chosen = fmt or "int8"
        if chosen not in ("int8", "csr", "sparse24"):
            raise ValueError(f"fmt: a layer with quantized activations runs as 'int8', "
                             f"'csr' or 'sparse24', got {fmt!r}")
        weight, scales, opts = layer.weight_q, layer._w_scale_vector(), _int8_options(layer)
        if chosen == "csr" and "out_scale" in opts:
            raise ValueError("fmt: 'csr' has float output; this layer requantizes into a "
                             "fused chain (export with csr_density excludes it from fusion)")
    else:
        if fmt not in (None, "int4"):
            raise ValueError(f"fmt: a weight-only layer runs as 'int4', got {fmt!r}")
        chosen = "int4"
        weight = layer.weight_q
        scales, opts = _int4_weights(layer)
    if isinstance(layer, QuantConv2d):
        return LowbitConv2d.from_quantized(chosen, weight, scales, layer.bias,
                                           stride=layer.stride, padding=layer.padding,
                                           dilation=layer.dilation, groups=layer.groups,
                                           **opts)
    return LowbitLinear.from_quantized(chosen, weight, scales, layer.bias, **opts)


def _static_int8(mod: nn.Module) -> bool:
    """A layer the int8 kernel runs with static activations (a chain endpoint)."""
    return (isinstance(mod, QUANT_LAYERS) and mod.act is not None and mod.act.mode == "static"
            and isinstance(mod.weight_spec.granularity, (PerChannel, PerTensor)))


# --- chains -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Chain:
    """A fused W8A8 pair: ``producer`` requantizes into ``consumer``'s input integers;
    ``ops`` the commuting ops between them (fx node or module names); ``bounds`` the
    producer's output clamp (the consumer's range, narrowed by fused ReLU / ReLU6)."""

    producer: str
    consumer: str
    ops: tuple[str, ...]
    bounds: tuple[int, int]


_PASS_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Flatten)
_RELU_FUNCTIONS = (torch.relu, F.relu, torch.nn.functional.relu_, torch.relu_)
_SHAPE_FUNCTIONS = (torch.flatten, torch.reshape)
_SHAPE_METHODS = ("flatten", "view", "reshape", "contiguous")
_QUERY_METHODS = ("size", "dim")


@dataclass
class _Fold:
    """What the ops of one chain do to the producer's output clamp (and whether one is a
    ``.view``, the one fused op that needs a contiguous layout)."""

    relu: bool = False
    relu6: bool = False
    view: bool = False


def _module_step(mod: nn.Module, fold: _Fold) -> bool:
    """Whether ``mod`` commutes with the integer output; records ReLU / ReLU6 in ``fold``."""
    if isinstance(mod, nn.ReLU6):
        fold.relu6 = True
        return True
    if isinstance(mod, nn.ReLU):
        fold.relu = True
        return True
    if isinstance(mod, nn.MaxPool2d):
        return not mod.return_indices
    return isinstance(mod, _PASS_MODULES)


class _Tracer(fx.Tracer):
    """Quantized and kernel-backed layers are leaves (their insides are not data flow)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (*QUANT_LAYERS, *QAT_LAYERS, *KERNEL_MODULES)) or \
            super().is_leaf_module(m, qualname)


def _data_users(node: fx.Node) -> list[fx.Node]:
    """Users of ``node`` other than shape queries (``x.size(0)``, ``x.dim()``, ``x.shape``)."""
    def query(u: fx.Node) -> bool:
        return ((u.op == "call_method" and u.target in _QUERY_METHODS) or
                (u.op == "call_function" and u.target is getattr and len(u.args) > 1
                 and u.args[1] == "shape"))
    return [u for u in node.users if not query(u)]


def _node_step(node: fx.Node, src: fx.Node, model: nn.Module, calls: dict, fold: _Fold
               ) -> bool:
    """Whether fx ``node`` (fed by ``src``) commutes with the integer output of a chain."""
    if not node.args or node.args[0] is not src or any(
            isinstance(a, fx.Node) and a is src for a in (*node.args[1:],
                                                         *node.kwargs.values())):
        return False
    if node.op == "call_module":
        mod = model.get_submodule(node.target)
        if isinstance(mod, nn.ReLU6) and calls[node.target] != 1:
            return False  # a shared ReLU6 module cannot become Identity
        return _module_step(mod, fold)
    if node.op == "call_function":
        if node.target in _RELU_FUNCTIONS:
            fold.relu = True
            return True
        return node.target in _SHAPE_FUNCTIONS
    if node.op == "call_method":
        if node.target == "relu":
            fold.relu = True
            return True
        fold.view = fold.view or node.target == "view"
        return node.target in _SHAPE_METHODS
    return False


def _fx_chains(model: nn.Module, can_produce, can_consume=_static_int8
               ) -> list[tuple[str, str, list[str], _Fold, list]]:
    """(producer, consumer, op names, fold, names of the ReLU / ReLU6 modules folded into
    the clamp that run only here) of every fusable pair."""
    graph = _Tracer().trace(model)
    calls: dict = {}
    for n in graph.nodes:
        if n.op == "call_module":
            calls[n.target] = calls.get(n.target, 0) + 1
    found = []
    for node in graph.nodes:
        if node.op != "call_module" or calls[node.target] != 1 or \
                not can_produce(node.target, model.get_submodule(node.target)):
            continue
        cur, ops, folded, fold = node, [], [], _Fold()
        while True:
            users = _data_users(cur)
            if len(users) != 1:
                break
            nxt = users[0]
            if nxt.op == "call_module" and can_consume(model.get_submodule(nxt.target)):
                if len(nxt.args) == 1 and nxt.args[0] is cur and not nxt.kwargs:
                    found.append((node.target, nxt.target, ops, fold, folded))
                break
            if not _node_step(nxt, cur, model, calls, fold):
                break
            if nxt.op == "call_module":
                ops.append(nxt.target)
                if isinstance(model.get_submodule(nxt.target), (nn.ReLU, nn.ReLU6)) and \
                        calls[nxt.target] == 1:
                    folded.append(nxt.target)
            else:
                ops.append(nxt.name)
            cur = nxt
    return found


def _sequential_chains(model: nn.Module, can_produce, can_consume=_static_int8) -> list:
    """The fx search's result along the children of every nn.Sequential (no fx)."""
    found = []
    for prefix, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        p = f"{prefix}." if prefix else ""
        names = list(seq._modules)
        for i, name in enumerate(names):
            if not can_produce(p + name, seq._modules[name]):
                continue
            ops, folded, fold = [], [], _Fold()
            for other in names[i + 1:]:
                mod = seq._modules[other]
                if can_consume(mod):
                    found.append((p + name, p + other, ops, fold, folded))
                    break
                if not _module_step(mod, fold):
                    break
                ops.append(p + other)
                if isinstance(mod, (nn.ReLU, nn.ReLU6)):
                    folded.append(p + other)
    return found


def _out_quant(consumer, fold: _Fold) -> OutQuant:
    scale = consumer.act_scale.reshape(())
    zp = int(consumer.act_zero_point)
    lo, hi = consumer.act.spec.qrange
    clip_lo, clip_hi = lo, hi
    if fold.relu or fold.relu6:
        clip_lo = zp
    if fold.relu6:  # the consumer quantizes 6.0 as rint(6 / s) + zp (float32 division)
        clip_hi = zp + int(torch.round(torch.tensor(6.0) / scale))
    return OutQuant(float(scale), zp, (lo, hi), (clip_lo, min(clip_hi, hi)))


def fuse_requantization(model: nn.Module, *, exclude=()) -> list[Chain]:
    """Find the W8A8 chains of a quantized model and fuse their requantization, in place.

    Each producer of a chain (see the module doc for the fused patterns) gets an
    ``OutQuant``: it requantizes its accumulator into the consumer's input integers with
    the kernels' fixed-point arithmetic; a ReLU / ReLU6 module on the path that runs only
    there becomes nn.Identity (its clamp is in the requantization). The model still runs in
    torch and now simulates the fused kernels bit for bit; ``export`` builds the int8-output
    kernel modules from it.

    Args:
        model: a model with QuantLinear / QuantConv2d layers (after ``quantize`` or
            ``convert``).
        exclude: layer names that must not become producers.

    Returns the chains fused by this call (a layer that already requantizes keeps its
    ``OutQuant``: a second call finds nothing new).

    Example:
        >>> from lowbit.compress import Int8StaticConfig, quantize
        >>> m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
        >>> m = quantize(m, Int8StaticConfig("minmax"), calibration=[torch.randn(4, 8)])
        >>> [(c.producer, c.consumer, c.ops) for c in fuse_requantization(m)]
        [('0', '2', ('1',))]
    """
    exclude = set(exclude)

    def can_produce(name: str, mod: nn.Module) -> bool:  # fused once: idempotent
        return name not in exclude and _static_int8(mod) and mod.out_quant is None

    try:
        found = _fx_chains(model, can_produce)
    except Exception:  # noqa: BLE001 - user forward() code can fail tracing in any way
        found = _sequential_chains(model, can_produce)
    chains = []
    for producer, consumer, ops, fold, folded in found:
        out = _out_quant(model.get_submodule(consumer), fold)
        try:
            model.get_submodule(producer).set_output_quant(out)
        except ValueError:  # requantization scale outside the kernels' multiplier range
            continue
        for name in folded:
            replace_module(model, name, nn.Identity())
        chains.append(Chain(producer, consumer, tuple(ops), out.bounds))
    return chains


def _channels_last_producers(model: nn.Module) -> set[str]:
    """QuantConv2d layers whose output (integer in a fused chain, else float) reaches the
    next quantized layer, and only it, through the chain ops that take any memory layout
    (all but ``.view``): their kernel modules return the GEMM's channels-last output
    without transposing it (``LowbitConv2d(channels_last=True)``)."""
    def conv(name: str, mod: nn.Module) -> bool:
        return isinstance(mod, QuantConv2d)

    def quantized(mod: nn.Module) -> bool:
        return isinstance(mod, QUANT_LAYERS)

    try:
        found = _fx_chains(model, conv, quantized)
    except Exception:  # noqa: BLE001 - as in fuse_requantization
        found = _sequential_chains(model, conv, quantized)
    return {producer for producer, _, _, fold, _ in found if not fold.view}


# --- the model --------------------------------------------------------------------------------

def _int8_density(layer) -> float:
    return float((layer.weight_q != 0).float().mean())


def _is_two_of_four(layer) -> bool:
    """At most 2 nonzeros in every 4 consecutive K values of each output channel, K in
    ``weight.reshape(out, -1)`` order (a K tail shorter than 4 counts as one group)."""
    flat = (layer.weight_q != 0).reshape(layer.weight_q.shape[0], -1)
    pad = -flat.shape[1] % 4
    flat = F.pad(flat, (0, pad)) if pad else flat
    return bool((flat.reshape(flat.shape[0], -1, 4).sum(-1) <= 2).all())


def export(model: nn.Module, *, fuse: bool = True, csr_density: float | None = None,
           sparse24: bool = False) -> nn.Module:
    """Swap the quantized layers of ``model`` for lowbit's kernel-backed modules, in place.

    A model with QAT layers is ``convert``-ed first. With ``fuse`` the W8A8 chains pass
    int8 tensors (``fuse_requantization``); without it every layer has float32 output and
    the result equals the unfused simulation bit for bit (int8 formats). Layers the kernels
    cannot run stay as they are, listed in one ``RuntimeWarning``.

    Args:
        model: a model after ``quantize`` (or a QAT model, trained).
        fuse: fuse requantization between static int8 layers.
        csr_density: run int8 layers whose integer weights have at most this fraction of
            nonzeros on the CSR kernel (``spmm_csr``, float output, never a chain
            producer); None: dense int8 everywhere.
        sparse24: run int8 layers whose integer weights are 2:4 along K (e.g. after
            ``prune(model, NMConfig(2, 4))``) on the 2:4 kernel (``gemm_sparse24``); layers
            ``csr_density`` picked stay on CSR.

    Returns the model (eval mode). Example in the module doc; ``export_summary(model)``
    lists what runs where.
    """
    if csr_density is not None and not 0.0 <= csr_density <= 1.0:
        raise ValueError(f"csr_density: must lie in [0, 1] (fraction of nonzero weights), "
                         f"got {csr_density!r}")
    if any(isinstance(m, QAT_LAYERS) for m in model.modules()):
        convert(model)
    names = [n for n, m in model.named_modules() if isinstance(m, QUANT_LAYERS)]
    if not names:
        raise ValueError("export: the model has no quantized layer; apply "
                         "quantize(model, config) (or QAT and convert) first")
    model.eval()
    sparse = set()
    if csr_density is not None:
        sparse = {n for n in names if model.get_submodule(n).act is not None
                  and _int8_density(model.get_submodule(n)) <= csr_density}
    two_of_four = set()
    if sparse24:
        two_of_four = {n for n in names if n not in sparse
                       and model.get_submodule(n).act is not None
                       and _is_two_of_four(model.get_submodule(n))}
    if fuse:
        fuse_requantization(model, exclude=sparse)
    channels_last = _channels_last_producers(model)
    kept = []
    for name in names:
        layer = model.get_submodule(name)
        fmt = ("csr" if name in sparse and layer.out_quant is None
               else "sparse24" if name in two_of_four else None)
        try:
            new = kernel_module(layer, fmt)
        except Unsupported as e:
            kept.append(f"{name} ({e})")
            continue
        if name in channels_last:
            new.channels_last = True
        replace_module(model, name, new)
    if kept:
        warnings.warn(f"export: left as is, the kernels cannot run: {'; '.join(kept)}",
                      RuntimeWarning, stacklevel=2)
    return model


# --- what runs where --------------------------------------------------------------------------

@dataclass(frozen=True)
class ExportedLayer:
    """One Linear / Conv2d of an exported model: where it runs and how."""

    name: str
    runs_on: str        # "lowbit" (kernel module), "simulation" (kept QuantLayer), "torch fp32"
    fmt: str            # kernel format, the kept layer's weight format, or "fp32"
    activations: str    # "dynamic s8 per row", "static u8 [0, 15] zp 3", "fp32", ...
    output: str         # "fp32", or "u8 [0, 255] zp 0 (requantized)"


@dataclass(frozen=True)
class ExportSummary:
    """``export_summary``'s answer: one row per Linear / Conv2d layer, in module order."""

    layers: tuple[ExportedLayer, ...]

    def table(self) -> str:
        rows = [("layer", "runs on", "format", "activations", "output")]
        rows += [(r.name, r.runs_on, r.fmt, r.activations, r.output) for r in self.layers]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                         for r in rows)


def _qtype(lo: int, hi: int, zp: int) -> str:
    return f"{'u8' if lo >= 0 else 's8'} [{lo}, {hi}] zp {zp}"


def _kernel_row(name: str, mod) -> ExportedLayer:
    scheme = mod.scheme
    o = scheme.options
    if mod.fmt in ("int4", "uint4"):
        acts = o["activations"]
        return ExportedLayer(name, "lowbit", f"{mod.fmt} g{o['group_size']} "
                             f"{o['scale_dtype']}", acts, "fp32")
    if mod.fmt == "binary":
        return ExportedLayer(name, "lowbit", "binary", "sign", "fp32")
    if o["act_scale"] is None:
        acts = f"dynamic s8 per {'image' if o['act_granularity'] == 'sample' else 'row'}"
    else:
        zp = int(mod.act_zero_point)
        lo, hi = o["act_range"] or ((-128, 127) if zp == 0 else (0, 255))
        acts = f"static {_qtype(lo, hi, zp)}"
    out = "fp32"
    if getattr(scheme, "int8_out", False):
        _, lo, hi = scheme.out_qrange(mod)
        out = f"{_qtype(lo, hi, int(mod.out_zero_point))} (requantized)"
    return ExportedLayer(name, "lowbit", mod.fmt, acts, out)


def export_summary(model: nn.Module) -> ExportSummary:
    """Where each Linear / Conv2d of a (partly) exported model runs: lowbit's kernels, the
    torch simulation (a quantized layer left as is) or torch fp32 (never quantized)."""
    rows = []
    for name, mod in model.named_modules():
        if isinstance(mod, KERNEL_MODULES):
            rows.append(_kernel_row(name, mod))
        elif isinstance(mod, QUANT_LAYERS):
            act = "fp32" if mod.act is None else \
                f"{mod.act.mode} {'s' if mod.act.symmetric else 'u'}{mod.act.bits}"
            rows.append(ExportedLayer(name, "simulation", mod.weight_format, act, "fp32"))
        elif isinstance(mod, (nn.Linear, nn.Conv2d)):
            rows.append(ExportedLayer(name, "torch fp32", "fp32", "fp32", "fp32"))
    return ExportSummary(tuple(rows))

