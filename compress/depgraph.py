"""The channel dependency graph of a model, traced with torch.fx: which channels must be
removed together so that structured pruning gives a consistent, smaller dense model.

Every channel of every traced tensor is an *element*; elements that must go together are
merged (union-find) into a *channel class*. Walking the fx graph in execution order:

* a Conv2d (groups=1) or Linear creates one new element per output channel (its *producer*
  rows: weight dim 0 and bias) and reads its input's elements as its *consumer* columns
  (weight dim 1); a Linear after a flatten reads each channel's H*W block (``c*HW + s``);
* BatchNorm and depthwise Conv2d (groups == in_channels, any channel multiplier) are
  per-channel: their channel dim 0 follows their input's elements;
* elementwise ops that map 0 to 0 (ReLU, GELU, SiLU, tanh, dropout, multiplication by a
  number ...) and pooling pass elements through; flatten / view / reshape to [N, C*H*W]
  repeats each element H*W times; ``torch.cat`` along the channel dim concatenates;
* ``+``, ``-`` and ``*`` of two tensors merge their elements pairwise (a residual add:
  channel i of both summands goes together), so does a concatenation along another dim;
* anything else (LayerNorm, softmax, sigmoid, adding a constant, indexing, attention
  reshapes, grouped convolutions, the model's inputs and outputs) *blocks* the elements it
  touches: their classes are never pruned. ``ChannelGraph.notes`` says what blocked what.

Removing a class is exact when the channel is zero in the masked model: structured masking
(``ChannelPlan.zero_``) zeroes a class's producer rows and biases *and* the BatchNorm scale
and shift and depthwise filters and biases it passes through, so the channel carries
exactly 0 into every consumer; physically removing it (``ChannelPlan.remove_``) then leaves
every output unchanged. The shift of a removed channel is therefore dropped, not folded
into the next layer: with zero padding a constant channel's contribution varies at the
borders, so no bias can absorb it exactly; the pruning error includes it and fine-tuning
recovers it.

Tracing uses ``torch.fx.symbolic_trace`` semantics with nn.Conv2d, nn.Linear and BatchNorm
(subclasses included) as leaves; a model fx cannot trace (data-dependent Python control
flow) raises a ValueError saying so. Shapes come from one run of ``example_input`` in eval
mode, without gradients.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

__all__ = ["ChannelGraph", "Use", "trace_channels"]

_BN = nn.modules.batchnorm._BatchNorm
_ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU,
                        nn.SiLU, nn.Mish, nn.Hardswish, nn.Tanh, nn.Softsign, nn.Tanhshrink,
                        nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                        nn.AlphaDropout)
_SPATIAL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
                    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d,
                    nn.AdaptiveMaxPool2d, nn.Upsample, nn.UpsamplingNearest2d)
_ELEMENTWISE_FUNCS = {F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.celu, F.selu,
                      F.gelu, F.silu, F.mish, F.hardswish, torch.tanh, F.tanh, F.softsign,
                      F.dropout, F.dropout1d, F.dropout2d, torch.clone, operator.neg,
                      torch.neg}
_ELEMENTWISE_METHODS = {"relu", "relu_", "tanh", "tanh_", "contiguous", "clone", "neg"}
_SPATIAL_FUNCS = {F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d,
                  F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool1d,
                  F.adaptive_max_pool2d, F.interpolate}
_RESHAPE_FUNCS = {torch.flatten, torch.reshape}
_RESHAPE_METHODS = {"flatten", "view", "reshape"}
_REDUCE_FUNCS = {torch.mean: "mean", torch.sum: "sum", torch.amax: "amax"}
_REDUCE_METHODS = {"mean", "sum", "amax"}
_ADD_FUNCS = {operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub}
_ADD_METHODS = {"add", "add_", "sub", "sub_"}
_MUL_FUNCS = {operator.mul, operator.imul, torch.mul, operator.truediv, operator.itruediv,
              torch.div}
_MUL_METHODS = {"mul", "mul_", "div", "div_"}
_CAT_FUNCS = {torch.cat, torch.concat, torch.concatenate}
_SHAPE_METHODS = {"size", "dim"}


@dataclass(frozen=True, eq=False)
class Use:
    """One way a layer's parameters index channels.

    role "out": weight dim 0 (and bias) of a Conv2d / Linear; "in": weight dim 1 of a
    Conv2d / Linear (a Linear after a flatten: one entry per input feature); "chan": dim 0
    of every per-channel tensor of a BatchNorm or a depthwise Conv2d. ``elems[i]`` is the
    element of index i.
    """

    module: str
    role: str
    elems: np.ndarray


@dataclass
class _Feat:
    """The channel elements of one traced tensor: ``elems[c]`` for channel c of dim ``cdim``."""

    elems: np.ndarray
    cdim: int
    ndim: int


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (nn.Conv2d, nn.Linear, _BN)) or super().is_leaf_module(m, qualname)


_SHAPE_KEY = "lowbit_shape"


class _ShapeRecorder(fx.Interpreter):
    """Runs the graph once and records every tensor-valued node's shape in its meta."""

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            n.meta[_SHAPE_KEY] = tuple(out.shape)
        return out


def _shape(node) -> tuple[int, ...] | None:
    return node.meta.get(_SHAPE_KEY) if isinstance(node, fx.Node) else None


def _default_cdim(ndim: int) -> int:
    """Channel dim of a tensor nothing says more about: 1 for NCHW, else the last."""
    return 1 if ndim == 4 else ndim - 1


class ChannelGraph:
    """Channel classes of ``model`` traced on ``example_input`` (see the module doc).

    Attributes: ``uses`` ((module, role) -> Use, in execution order), ``notes`` (what
    blocked channels), ``modules`` (name -> module of the traced model).
    """

    def __init__(self, model: nn.Module, example_input) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.modules = dict(model.named_modules())
        self.uses: dict[tuple[str, str], Use] = {}
        self.notes: list[str] = []
        self._parent: list[int] = []
        self._blocked: list[int] = []
        self._trace(example_input)
        self._roots = np.array([self.find(e) for e in range(len(self._parent))], dtype=np.int64)
        self.blocked_classes = frozenset(int(self._roots[e]) for e in self._blocked)

    # ------------------------------------------------------------------ union-find
    def _fresh(self, count: int, blocked: bool = False) -> np.ndarray:
        start = len(self._parent)
        self._parent.extend(range(start, start + count))
        if blocked:
            self._blocked.extend(range(start, start + count))
        return np.arange(start, start + count, dtype=np.int64)

    def find(self, e: int) -> int:
        parent = self._parent
        while parent[e] != e:
            parent[e] = parent[parent[e]]
            e = parent[e]
        return e

    def _union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:  # the older element stays the root: classes are named in trace order
                self._parent[max(rx, ry)] = min(rx, ry)

    def classes_of(self, elems: np.ndarray) -> np.ndarray:
        """The channel class (root element) of each element."""
        return self._roots[elems]

    # ------------------------------------------------------------------ tracing
    def _trace(self, example_input) -> None:
        args = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)
        tracer = _Tracer()
        try:
            graph = tracer.trace(self.model)
        except Exception as exc:  # fx raises TraceError, TypeError, NotImplementedError ...
            raise ValueError(
                f"model: structured pruning traces the model with torch.fx, which failed on "
                f"{type(self.model).__name__} ({type(exc).__name__}: {exc}); make forward free "
                f"of data-dependent Python control flow, or use unstructured / N:M pruning, "
                f"which needs no tracing") from exc
        gm = fx.GraphModule(tracer.root, graph)
        modes = {m: m.training for m in self.model.modules()}
        try:
            self.model.eval()
            with torch.no_grad():
                _ShapeRecorder(gm).run(*args)
        except (RuntimeError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"example_input: running {type(self.model).__name__} on it "
                             f"failed ({type(exc).__name__}: {exc}); pass one batch the model "
                             f"accepts") from exc
        finally:
            for m, flag in modes.items():
                m.training = flag
        feats: dict[fx.Node, _Feat | None] = {}
        for node in graph.nodes:
            feats[node] = self._visit(node, feats)

    def _block(self, feats, why: str) -> None:
        hit = False
        for f in feats:
            if isinstance(f, _Feat) and len(f.elems):
                self._blocked.extend(f.elems.tolist())
                hit = True
        if hit and why not in self.notes:
            self.notes.append(why)

    def _blocked_out(self, node, inputs, why: str) -> _Feat | None:
        """Block every input; the output (if a tensor of rank >= 2) is a new blocked tensor."""
        self._block(inputs, why)
        shape = _shape(node)
        if shape is None or len(shape) < 2:
            return None
        cdim = _default_cdim(len(shape))
        return _Feat(self._fresh(shape[cdim], blocked=True), cdim, len(shape))

    def _use(self, name: str, role: str, elems: np.ndarray) -> np.ndarray:
        """Record a use; a module called again merges the new elements with the first call's."""
        key = (name, role)
        if key in self.uses:
            self._union(self.uses[key].elems, elems)
            return self.uses[key].elems
        self.uses[key] = Use(name, role, elems.copy())
        return elems

    def _producer(self, name: str, count: int, cdim: int, ndim: int) -> _Feat:
        key = (name, "out")
        elems = self.uses[key].elems if key in self.uses else self._use(name, "out",
                                                                         self._fresh(count))
        return _Feat(elems, cdim, ndim)

    def _visit(self, node: fx.Node, feats: dict) -> _Feat | None:
        inputs = [feats.get(n) for n in node.all_input_nodes]
        shape = _shape(node)
        if node.op == "placeholder" or node.op == "get_attr":
            return self._blocked_out(node, [], "")
        if node.op == "output":
            self._block(inputs, "the model's outputs")
            return None
        if node.op == "call_module":
            return self._module(node, self.modules[node.target], feats)
        if node.op == "call_method" and node.target in _SHAPE_METHODS:
            return None
        if node.op == "call_function" and node.target is getattr:
            return None
        if not any(isinstance(f, _Feat) for f in inputs):
            # no channel-carrying input (shape arithmetic, constants): a new blocked tensor
            return self._blocked_out(node, [], "") if shape is not None else None
        return self._function(node, feats)

    # ------------------------------------------------------------------ modules
    def _module(self, node: fx.Node, mod: nn.Module, feats: dict) -> _Feat | None:
        name = node.target
        x = feats.get(node.args[0]) if node.args else None
        shape = _shape(node)
        if shape is None:
            return self._blocked_out(node, [feats.get(n) for n in node.all_input_nodes],
                                     f"module {name!r} ({type(mod).__name__})")
        ndim = len(shape)
        if isinstance(mod, nn.Conv2d):
            fits = isinstance(x, _Feat) and x.cdim == 1 and len(x.elems) == mod.in_channels
            if fits and mod.groups == 1:
                self._use(name, "in", x.elems)
                return self._producer(name, mod.out_channels, 1, ndim)
            if fits and mod.groups == mod.in_channels:  # depthwise, channel multiplier k
                elems = np.repeat(x.elems, mod.out_channels // mod.in_channels)
                return _Feat(self._use(name, "chan", elems), 1, ndim)
            why = (f"module {name!r}: grouped convolution (groups={mod.groups}), not pruned"
                   if fits else f"module {name!r}: input channels not traceable")
            return self._blocked_out(node, [x], why)
        if isinstance(mod, nn.Linear):
            if isinstance(x, _Feat) and x.cdim == x.ndim - 1 and len(x.elems) == mod.in_features:
                self._use(name, "in", x.elems)
            else:
                self._block([x], f"module {name!r}: input features not traceable")
            return self._producer(name, mod.out_features, ndim - 1, ndim)
        if isinstance(mod, _BN):
            if isinstance(x, _Feat) and x.cdim == 1 and len(x.elems) == mod.num_features:
                return _Feat(self._use(name, "chan", x.elems), 1, ndim)
            return self._blocked_out(node, [x], f"module {name!r}: BatchNorm input not traceable")
        if isinstance(mod, nn.Flatten):
            return self._reshape(node, x, feats)
        if isinstance(mod, _ELEMENTWISE_MODULES) and isinstance(x, _Feat):
            return _Feat(x.elems, x.cdim, ndim)
        if (isinstance(mod, nn.Hardtanh) and isinstance(x, _Feat)
                and mod.min_val <= 0.0 <= mod.max_val):
            return _Feat(x.elems, x.cdim, ndim)
        if isinstance(mod, _SPATIAL_MODULES) and isinstance(x, _Feat) and x.cdim == 1:
            return _Feat(x.elems, 1, ndim)
        return self._blocked_out(node, [feats.get(n) for n in node.all_input_nodes],
                                 f"module {name!r} ({type(mod).__name__})")

    # ------------------------------------------------------------------ functions
    def _function(self, node: fx.Node, feats: dict) -> _Feat | None:
        t, op = node.target, node.op
        fn = t if op == "call_function" else None
        meth = t if op == "call_method" else None
        x = feats.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        shape = _shape(node)
        inputs = [feats.get(n) for n in node.all_input_nodes]
        what = f"{op} {getattr(t, '__name__', t)}"
        if shape is None:
            return self._blocked_out(node, inputs, what)
        if isinstance(x, _Feat) and (fn in _ELEMENTWISE_FUNCS or meth in _ELEMENTWISE_METHODS):
            return _Feat(x.elems, x.cdim, len(shape)) if len(inputs) == 1 else \
                self._blocked_out(node, inputs, what)
        if isinstance(x, _Feat) and fn in _SPATIAL_FUNCS and x.cdim == 1:
            return _Feat(x.elems, 1, len(shape))
        if fn in _RESHAPE_FUNCS or meth in _RESHAPE_METHODS:
            return self._reshape(node, x, feats)
        if fn in _REDUCE_FUNCS or meth in _REDUCE_METHODS:
            return self._reduce(node, x, feats)
        if fn in _ADD_FUNCS or meth in _ADD_METHODS:
            return self._binary(node, feats, zero_scalar_only=True)
        if fn in _MUL_FUNCS or meth in _MUL_METHODS:
            return self._binary(node, feats, zero_scalar_only=False)
        if fn in _CAT_FUNCS:
            return self._cat(node, feats)
        return self._blocked_out(node, inputs, what)

    def _reshape(self, node: fx.Node, x, feats: dict) -> _Feat | None:
        inputs = [feats.get(n) for n in node.all_input_nodes]
        out, src = _shape(node), _shape(node.args[0]) if node.args else None
        if isinstance(x, _Feat) and out is not None and src is not None:
            if out == src:
                return x
            if x.cdim == 1 and len(src) >= 2 and out == (src[0], math.prod(src[1:])):
                return _Feat(np.repeat(x.elems, math.prod(src[2:])), 1, 2)
        return self._blocked_out(node, inputs, "a reshape other than [N, C, ...] -> "
                                               "[N, C*...]")

    def _reduce(self, node: fx.Node, x, feats: dict) -> _Feat | None:
        inputs = [feats.get(n) for n in node.all_input_nodes]
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        if isinstance(dims, int):
            dims = (dims,)
        if not isinstance(x, _Feat) or not isinstance(dims, (tuple, list)) or not dims:
            return self._blocked_out(node, inputs, "a reduction over all dims")
        dims = {d % x.ndim for d in dims}
        if x.cdim in dims:
            return self._blocked_out(node, inputs, "a reduction over channels")
        cdim = x.cdim if keepdim else x.cdim - sum(d < x.cdim for d in dims)
        return _Feat(x.elems, cdim, len(_shape(node)))

    def _binary(self, node: fx.Node, feats: dict, zero_scalar_only: bool) -> _Feat | None:
        """a + b, a - b (``zero_scalar_only``: a number other than 0 blocks) or a * b, a / b."""
        inputs = [feats.get(n) for n in node.all_input_nodes]
        what = f"{node.op} {getattr(node.target, '__name__', node.target)}"
        operands = list(node.args[:2]) + [node.kwargs[k] for k in ("other",) if k in node.kwargs]
        if len(operands) != 2 or "alpha" in node.kwargs:
            return self._blocked_out(node, inputs, what)
        a, b = (feats.get(o) if isinstance(o, fx.Node) else o for o in operands)
        out = _shape(node)
        if isinstance(a, _Feat) and isinstance(b, _Feat):
            if len(a.elems) == len(b.elems) and a.ndim - a.cdim == b.ndim - b.cdim:
                self._union(a.elems, b.elems)
                return _Feat(a.elems, len(out) - (a.ndim - a.cdim), len(out))
            return self._blocked_out(node, inputs, f"{what} of tensors with different channels")
        feat, other = (a, b) if isinstance(a, _Feat) else (b, a)
        if not isinstance(feat, _Feat):
            return self._blocked_out(node, inputs, what)
        is_number = isinstance(other, (int, float)) and not isinstance(other, bool)
        divisor = node.target in (operator.truediv, operator.itruediv, torch.div, "div",
                                  "div_") and feat is b
        if is_number and not divisor and (not zero_scalar_only or other == 0):
            return _Feat(feat.elems, len(out) - (feat.ndim - feat.cdim), len(out))
        return self._blocked_out(node, inputs, f"{what} with a constant")

    def _cat(self, node: fx.Node, feats: dict) -> _Feat | None:
        parts = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        inputs = [feats.get(n) for n in node.all_input_nodes]
        fs = [feats.get(p) if isinstance(p, fx.Node) else None for p in (parts or ())]
        out = _shape(node)
        if not fs or not all(isinstance(f, _Feat) for f in fs) or \
                len({(f.cdim, f.ndim) for f in fs}) != 1 or not isinstance(dim, int):
            return self._blocked_out(node, inputs, "torch.cat of untraceable tensors")
        cdim, ndim = fs[0].cdim, fs[0].ndim
        if dim % ndim == cdim:
            return _Feat(np.concatenate([f.elems for f in fs]), cdim, len(out))
        if len({len(f.elems) for f in fs}) == 1:  # along another dim: channels go together
            for f in fs[1:]:
                self._union(fs[0].elems, f.elems)
            return _Feat(fs[0].elems, cdim, len(out))
        return self._blocked_out(node, inputs, "torch.cat of tensors with different channels")


def trace_channels(model: nn.Module, example_input) -> ChannelGraph:
    """The ``ChannelGraph`` of ``model`` on ``example_input`` (a tensor or a tuple of args)."""
    return ChannelGraph(model, example_input)
