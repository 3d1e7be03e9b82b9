"""One forward pass, recorded: which modules run, with which shapes, doing which MACs.

Shared by ``metrics.profile`` (per-layer params, bytes, MACs) and ``workload.to_workload``
(simulator layers), so both count the same operations.

**What is counted** (multiply-accumulates, MACs; bias adds are not MACs):

* modules, by their textbook formula, from the shapes seen by forward hooks:
  ``nn.Linear`` (N*in*out, N = all leading dims), ``nn.Conv1d/2d/3d``
  (N*Cout*prod(out size)*(Cin/groups)*prod(kernel)), ``nn.ConvTranspose1d/2d/3d``
  (N*Cin*prod(in size)*(Cout/groups)*prod(kernel)), ``nn.MultiheadAttention`` (q, k, v and
  out projections plus the two attention matmuls), and any module defining
  ``lowbit_storage`` that looks like one of these (``in_features`` / ``out_features``, or
  ``in_channels`` / ``out_channels`` / ``kernel_size``, an int kernel_size meaning a square
  2-D kernel): kernel-backed and quantized modules. Everything inside such a module is
  covered by its formula.
* functions called anywhere else (seen through a ``TorchFunctionMode``): ``torch.matmul`` /
  ``@``, ``mm``, ``bmm``, ``mv``, ``baddbmm``, ``addmm``, ``F.linear``, ``F.conv*d``,
  ``F.conv_transpose*d`` and ``F.scaled_dot_product_attention`` (Q K^T and P V), e.g. the
  attention matmuls of a hand-written transformer. batch*M*N*K for a matmul.

**Not counted** (0 MACs by convention): normalization, activations, softmax, pooling,
residual adds, embeddings, elementwise ops. ``einsum``, ``tensordot``, ``bilinear``,
``addbmm``, ``chain_matmul``/``multi_dot``, ``dot``/``vdot``/``inner``/``outer`` are not
counted and produce a note; so do recurrent modules (``nn.LSTM`` ...) and modules that look
like a Linear/Conv but are neither a torch Linear/Conv nor define ``lowbit_storage`` (e.g.
torch.ao's quantized Linear, whose kernels are invisible to a TorchFunctionMode).

**Ownership.** Every parameter and buffer belongs to one row: a counted module or one that
defines ``lowbit_storage`` owns its whole subtree (its ``lowbit_storage()`` describes all of
its stored bytes); any other module owns its direct parameters and buffers. Ops are
attributed to the row owner of the innermost running module.

**The storage protocol.** A module may define ``lowbit_storage(self) -> dict`` with keys
``format`` (str, e.g. "int8", "int4-g32"), ``bytes`` (int: every stored byte of the module,
weights, bias, scales, zero points, metadata), ``weight_bits`` (bits of one stored weight
value, scales excluded: 8, 4, 1 ...), ``act_bits`` (int: activation width it runs at: 8 for
W8A8, 32 for fp32 activations of a weight-only format) and ``sparsity`` (fraction of zero
weights, in [0, 1)); optionally ``params`` (int: logical weights + biases, when not derivable
from the geometry) and ``sparsity_kind`` ("dense", "2:4" or "unstructured"; default
"unstructured" when sparsity > 0), and, informational only, ``group_size`` and ``scale_dtype``
of a grouped format. ``storage_of`` validates it.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["StorageInfo", "StorageError", "storage_of", "GemmOp", "ConvOp", "MatmulOp",
           "Trace", "trace_model", "SPARSITY_KINDS"]

SPARSITY_KINDS = ("dense", "2:4", "unstructured")
_REQUIRED = ("format", "bytes", "weight_bits", "act_bits", "sparsity")
_OPTIONAL = ("params", "sparsity_kind", "group_size", "scale_dtype")
_MAX_BITS = 64


class StorageError(ValueError):
    """A module's ``lowbit_storage()`` answer is malformed; names the module and the key."""


@dataclass(frozen=True)
class StorageInfo:
    """A validated ``lowbit_storage()`` answer (see the module doc for the keys)."""

    format: str
    bytes: int
    weight_bits: float
    act_bits: int
    sparsity: float
    params: int | None = None
    sparsity_kind: str = "dense"

    @property
    def integer(self) -> bool:
        """True when the layer computes in integers (weights and activations <= 8 bits)."""
        return self.act_bits <= 8 and self.weight_bits <= 8


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def storage_of(module: nn.Module, name: str = "") -> StorageInfo | None:
    """The validated ``lowbit_storage()`` of ``module``, or None if it does not define one.

    Raises ``StorageError`` naming the module and the key for a missing, unknown or
    out-of-range key.
    """
    fn = getattr(module, "lowbit_storage", None)
    if fn is None:
        return None
    where = f"module {name or '(model)'!r} ({type(module).__name__}).lowbit_storage()"
    if not callable(fn):
        raise StorageError(f"{where}: lowbit_storage must be a method")
    info = fn()
    if not isinstance(info, dict):
        raise StorageError(f"{where}: must return a dict, got {type(info).__name__}")
    missing = [k for k in _REQUIRED if k not in info]
    unknown = [k for k in info if k not in _REQUIRED + _OPTIONAL]
    if missing or unknown:
        raise StorageError(f"{where}: missing keys {missing}, unknown keys {unknown}; "
                           f"required {list(_REQUIRED)}, optional {list(_OPTIONAL)}")
    fmt, nbytes, wbits = info["format"], info["bytes"], info["weight_bits"]
    abits, sparsity = info["act_bits"], info["sparsity"]
    if not isinstance(fmt, str) or not fmt:
        raise StorageError(f"{where}: 'format' must be a non-empty string, got {fmt!r}")
    if not _is_int(nbytes) or nbytes < 0:
        raise StorageError(f"{where}: 'bytes' must be an integer >= 0, got {nbytes!r}")
    if not _is_real(wbits) or not 0 < wbits <= _MAX_BITS:
        raise StorageError(f"{where}: 'weight_bits' must be a number in (0, {_MAX_BITS}], "
                           f"got {wbits!r}")
    if not _is_int(abits) or not 1 <= abits <= _MAX_BITS:
        raise StorageError(f"{where}: 'act_bits' must be an integer in 1..{_MAX_BITS}, "
                           f"got {abits!r}")
    if not _is_real(sparsity) or not 0.0 <= sparsity < 1.0:
        raise StorageError(f"{where}: 'sparsity' must be a number in [0, 1), got {sparsity!r}")
    params = info.get("params")
    if params is not None and (not _is_int(params) or params < 0):
        raise StorageError(f"{where}: 'params' must be an integer >= 0, got {params!r}")
    kind = info.get("sparsity_kind", "unstructured" if sparsity > 0 else "dense")
    if kind not in SPARSITY_KINDS:
        raise StorageError(f"{where}: 'sparsity_kind' must be one of {SPARSITY_KINDS}, "
                           f"got {kind!r}")
    if (kind == "dense") != (sparsity == 0) or (kind == "2:4" and sparsity != 0.5):
        raise StorageError(f"{where}: 'sparsity' {sparsity} does not fit 'sparsity_kind' "
                           f"{kind!r} (dense: 0, 2:4: 0.5, unstructured: > 0)")
    return StorageInfo(fmt, int(nbytes), float(wbits), int(abits), float(sparsity),
                       None if params is None else int(params), kind)


# --------------------------------------------------------------------------------------------
# Op records
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GemmOp:
    """A GEMM against weights: out[m, n] = act[m, k] @ W[k, n] (Linear, x @ Parameter)."""

    name: str
    owner: str
    m: int
    n: int
    k: int
    bias: bool
    a_bits: int  # dtype widths seen in the trace
    w_bits: int

    @property
    def macs(self) -> int:
        return self.m * self.n * self.k


@dataclass(frozen=True)
class ConvOp:
    """A convolution (or transposed convolution) with its full geometry."""

    name: str
    owner: str
    batch: int
    in_ch: int
    out_ch: int
    groups: int
    in_size: tuple[int, ...]
    out_size: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...] | str
    dilation: tuple[int, ...]
    transposed: bool
    bias: bool
    a_bits: int
    w_bits: int

    @property
    def macs(self) -> int:
        if self.transposed:
            return (self.batch * self.in_ch * math.prod(self.in_size)
                    * (self.out_ch // self.groups) * math.prod(self.kernel))
        return (self.batch * self.out_ch * math.prod(self.out_size)
                * (self.in_ch // self.groups) * math.prod(self.kernel))


@dataclass(frozen=True)
class MatmulOp:
    """An activation x activation matmul (attention scores / context): batch * M x K x N."""

    name: str
    owner: str
    batch: int
    m: int
    n: int
    k: int
    a_bits: int
    w_bits: int  # the second operand's width

    @property
    def macs(self) -> int:
        return self.batch * self.m * self.n * self.k


Op = GemmOp | ConvOp | MatmulOp


@dataclass(frozen=True)
class Trace:
    """What ``trace_model`` saw.

    owners: every module name -> the name of the row that owns its tensors and ops.
    rows: row-owner names in ``named_modules`` order. storage: owner -> StorageInfo|None.
    calls: module name -> (times called, first input shape, first output shape, first
    input's element width in bits).
    """

    model: nn.Module
    modules: dict[str, nn.Module]
    owners: dict[str, str]
    rows: tuple[str, ...]
    formula: frozenset[str]
    storage: dict[str, StorageInfo | None]
    ops: tuple[Op, ...]
    calls: dict[str, tuple[int, tuple, tuple, int]]
    notes: tuple[str, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------------------------
# Which modules have a formula
# --------------------------------------------------------------------------------------------
def _linear_like(m: nn.Module, has_storage: bool) -> bool:
    return isinstance(m, nn.Linear) or (has_storage and hasattr(m, "in_features")
                                        and hasattr(m, "out_features"))


def _conv_like(m: nn.Module, has_storage: bool) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd) or (
        has_storage and all(hasattr(m, a) for a in ("in_channels", "out_channels", "kernel_size")))


def _looks_countable(m: nn.Module) -> bool:
    return _linear_like(m, True) or _conv_like(m, True)


def _bits(t) -> int:
    return t.element_size() * 8 if isinstance(t, torch.Tensor) else 32


def _tuple(v, nd: int) -> tuple[int, ...]:
    if isinstance(v, numbers.Integral):
        return (v,) * nd
    return tuple(int(x) for x in v)


def _first_tensor(args, kwargs) -> torch.Tensor | None:
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, torch.Tensor):
            return a
    return None


def _arg(args, kwargs, pos: int, name: str, default=None):
    if len(args) > pos:
        return args[pos]
    return kwargs.get(name, default)


# --------------------------------------------------------------------------------------------
# The tracer
# --------------------------------------------------------------------------------------------
_UNCOUNTED_FUNCS = {
    torch.einsum: "einsum", torch.tensordot: "tensordot", F.bilinear: "bilinear",
    torch.addbmm: "addbmm", torch.chain_matmul: "chain_matmul",
    torch.linalg.multi_dot: "multi_dot", torch.dot: "dot", torch.vdot: "vdot",
    torch.inner: "inner", torch.outer: "outer",
    F.multi_head_attention_forward: "multi_head_attention_forward",
}
_MATMULS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm,
            torch.Tensor.mm, torch.bmm, torch.Tensor.bmm, torch.mv, torch.Tensor.mv}
_ADD_MATMULS = {torch.baddbmm, torch.Tensor.baddbmm, torch.addmm, torch.Tensor.addmm}
_CONVS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}
_CONV_TS = {F.conv_transpose1d: 1, F.conv_transpose2d: 2, F.conv_transpose3d: 3}


class _Tracer(TorchFunctionMode):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.modules = dict(model.named_modules())
        self.names = {}
        for n, m in model.named_modules():  # first name of a shared module
            self.names.setdefault(id(m), n)
        self.storage: dict[str, StorageInfo | None] = {}
        self.owners: dict[str, str] = {}
        self.formula: set[str] = set()
        rows = []
        for name, mod in model.named_modules():
            parent = self._owning_ancestor(name)
            if parent is not None:
                self.owners[name] = parent
                continue
            info = storage_of(mod, name)
            counted = (_linear_like(mod, info is not None) or _conv_like(mod, info is not None)
                       or isinstance(mod, nn.MultiheadAttention))
            self.owners[name] = name
            rows.append(name)
            self.storage[name] = info
            if counted:
                self.formula.add(name)
        self.rows = tuple(rows)
        self.stack: list[str] = []
        self.formula_depth = 0
        self.ops: list[Op] = []
        self.op_counts: dict[tuple[str, str], int] = {}
        self.calls: dict[str, list] = {}
        self.uncounted: dict[str, int] = {}
        self.skipped: dict[str, str] = {}  # module name -> why its MACs are not counted

    def _owning_ancestor(self, name: str) -> str | None:
        """The strict ancestor that owns its subtree (a formula or storage module), if any."""
        parts = name.split(".") if name else []
        for i in range(len(parts)):
            anc = ".".join(parts[:i])
            if self.owners.get(anc) == anc and (anc in self.formula
                                               or self.storage.get(anc) is not None):
                return anc
        return None

    # ---------------------------------------------------------------- module hooks
    def pre_hook(self, module: nn.Module, args) -> None:
        name = self.names[id(module)]
        self.stack.append(name)
        if name in self.formula:
            self.formula_depth += 1

    def post_hook(self, module: nn.Module, args, kwargs, output) -> None:
        name = self.stack.pop()
        is_formula = name in self.formula
        if is_formula:
            self.formula_depth -= 1
        first_in = _first_tensor(args, kwargs)
        rec = self.calls.setdefault(name, [0, (), (), 0])
        rec[0] += 1
        if rec[0] == 1 and first_in is not None:
            rec[1], rec[3] = tuple(first_in.shape), _bits(first_in)
        if rec[0] == 1 and isinstance(output, torch.Tensor):
            rec[2] = tuple(output.shape)
        if is_formula and self.formula_depth == 0 and output is not None:
            self._module_ops(name, module, args, kwargs, output, rec[0])
        elif not is_formula and self.owners[name] == name and name not in self.skipped:
            if isinstance(module, nn.RNNBase):
                self.skipped[name] = "recurrent layers are not counted"
            elif (_looks_countable(module) and self.storage.get(name) is None
                  and not list(module.children())):
                self.skipped[name] = ("looks like a linear / conv layer but is not counted: it "
                                      "is not a torch Linear/Conv and defines no lowbit_storage")

    def _module_ops(self, name, module, args, kwargs, output, call: int) -> None:
        label = name or type(module).__name__  # the model itself is a layer
        base = label if call == 1 else f"{label}#{call}"
        x = _first_tensor(args, kwargs)
        if x is None:
            raise TypeError(f"module {name!r}: no tensor input to count MACs from")
        weight = getattr(module, "weight", None)
        w_bits = _bits(weight)
        has_bias = getattr(module, "bias", None) is not None
        if isinstance(module, nn.MultiheadAttention):
            self._mha_ops(base, name, module, args, kwargs)
        elif _conv_like(module, True):
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"module {name!r}: a convolution must return a tensor to count "
                                f"its MACs, got {type(output).__name__}")
            ks = module.kernel_size
            kernel = (int(ks),) * 2 if isinstance(ks, numbers.Integral) else _tuple(ks, 1)
            nd = len(kernel)
            batched = x.dim() == nd + 2
            self.ops.append(ConvOp(
                base, name, x.shape[0] if batched else 1, int(module.in_channels),
                int(module.out_channels), int(getattr(module, "groups", 1)),
                tuple(x.shape[-nd:]), tuple(output.shape[-nd:]), kernel,
                _tuple(getattr(module, "stride", 1), nd),
                (module.padding if isinstance(getattr(module, "padding", 0), str)
                 else _tuple(getattr(module, "padding", 0), nd)),
                _tuple(getattr(module, "dilation", 1), nd), bool(getattr(module, "transposed",
                                                                         False)),
                has_bias, _bits(x), w_bits))
        else:  # linear
            k, n = int(module.in_features), int(module.out_features)
            self.ops.append(GemmOp(base, name, x.numel() // k, n, k, has_bias, _bits(x), w_bits))

    def _mha_ops(self, base, name, mha: nn.MultiheadAttention, args, kwargs) -> None:
        q = _arg(args, kwargs, 0, "query")
        k = _arg(args, kwargs, 1, "key")
        e, h = mha.embed_dim, mha.num_heads
        hd = e // h
        batch = 1 if q.dim() == 2 else q.shape[0 if mha.batch_first else 1]
        tq = q.numel() // e
        lk = k.numel() // mha.kdim // batch
        lk += (mha.bias_k is not None) + bool(mha.add_zero_attn)
        a = _bits(q)
        w = _bits(mha.in_proj_weight if mha.in_proj_weight is not None else mha.q_proj_weight)
        bias = mha.in_proj_bias is not None
        tk = k.numel() // mha.kdim
        self.ops += [
            GemmOp(f"{base}.q_proj", name, tq, e, e, bias, a, w),
            GemmOp(f"{base}.k_proj", name, tk, e, mha.kdim, bias, a, w),
            GemmOp(f"{base}.v_proj", name, tk, e, mha.vdim, bias, a, w),
            MatmulOp(f"{base}.scores", name, batch * h, tq // batch, lk, hd, a, a),
            MatmulOp(f"{base}.context", name, batch * h, tq // batch, hd, lk, a, a),
            GemmOp(f"{base}.out_proj", name, tq, e, e, mha.out_proj.bias is not None, a,
                   _bits(mha.out_proj.weight)),
        ]

    # ---------------------------------------------------------------- functions
    def _op_name(self, owner_mod: str, what: str) -> str:
        key = (owner_mod, what)
        i = self.op_counts.get(key, 0)
        self.op_counts[key] = i + 1
        return f"{owner_mod}.{what}{i}" if owner_mod else f"{what}{i}"

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.formula_depth == 0 and self.stack:
            if func in _MATMULS:
                self._matmul(args[0], args[1], func.__name__.strip("_"))
            elif func in _ADD_MATMULS:
                self._matmul(_arg(args, kwargs, 1, "batch1" if "bmm" in func.__name__ else "mat1"),
                             _arg(args, kwargs, 2, "batch2" if "bmm" in func.__name__ else "mat2"),
                             func.__name__)
            elif func is F.linear:
                self._flinear(args, kwargs)
            elif func in _CONVS or func in _CONV_TS:
                self._fconv(func, args, kwargs, out)
            elif func is F.scaled_dot_product_attention:
                self._sdpa(args, kwargs)
            elif func in _UNCOUNTED_FUNCS:
                fname = _UNCOUNTED_FUNCS[func]
                self.uncounted[fname] = self.uncounted.get(fname, 0) + 1
        return out

    def _where(self) -> tuple[str, str]:
        inner = self.stack[-1]
        return inner, self.owners[inner]

    def _matmul(self, a: torch.Tensor, b: torch.Tensor, what: str) -> None:
        inner, owner = self._where()
        k = a.shape[-1]
        m = a.shape[-2] if a.dim() >= 2 else 1
        n = b.shape[-1] if b.dim() >= 2 else 1
        lead = torch.broadcast_shapes(a.shape[:-2] if a.dim() > 2 else (),
                                      b.shape[:-2] if b.dim() > 2 else ())
        batch = math.prod(lead)
        name = self._op_name(inner, what)
        if isinstance(b, nn.Parameter) and b.dim() <= 2:
            self.ops.append(GemmOp(name, owner, batch * m, n, k, False, _bits(a), _bits(b)))
        elif isinstance(a, nn.Parameter) and a.dim() <= 2:
            self.ops.append(GemmOp(name, owner, batch * n, m, k, False, _bits(b), _bits(a)))
        else:
            self.ops.append(MatmulOp(name, owner, batch, m, n, k, _bits(a), _bits(b)))

    def _flinear(self, args, kwargs) -> None:
        inner, owner = self._where()
        x, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
        bias = _arg(args, kwargs, 2, "bias") is not None
        n, k = (w.shape[0], w.shape[1]) if w.dim() == 2 else (1, w.shape[0])
        self.ops.append(GemmOp(self._op_name(inner, "linear"), owner, x.numel() // k, n, k,
                               bias, _bits(x), _bits(w)))

    def _fconv(self, func, args, kwargs, out) -> None:
        inner, owner = self._where()
        transposed = func in _CONV_TS
        nd = _CONV_TS[func] if transposed else _CONVS[func]
        x, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
        bias = _arg(args, kwargs, 2, "bias") is not None
        stride = _tuple(_arg(args, kwargs, 3, "stride", 1), nd)
        padding = _arg(args, kwargs, 4, "padding", 0)
        padding = padding if isinstance(padding, str) else _tuple(padding, nd)
        if transposed:
            groups = int(_arg(args, kwargs, 6, "groups", 1))
            dilation = _tuple(_arg(args, kwargs, 7, "dilation", 1), nd)
            in_ch, out_ch = w.shape[0], w.shape[1] * groups
        else:
            dilation = _tuple(_arg(args, kwargs, 5, "dilation", 1), nd)
            groups = int(_arg(args, kwargs, 6, "groups", 1))
            in_ch, out_ch = w.shape[1] * groups, w.shape[0]
        batched = x.dim() == nd + 2
        self.ops.append(ConvOp(
            self._op_name(inner, "conv_transpose" if transposed else "conv"), owner,
            x.shape[0] if batched else 1, int(in_ch), int(out_ch), groups,
            tuple(x.shape[-nd:]), tuple(out.shape[-nd:]), tuple(w.shape[2:]), stride, padding,
            dilation, transposed, bias, _bits(x), _bits(w)))

    def _sdpa(self, args, kwargs) -> None:
        inner, owner = self._where()
        q, k, v = (_arg(args, kwargs, i, n) for i, n in enumerate(("query", "key", "value")))
        batch = math.prod(q.shape[:-2])
        lq, e = q.shape[-2], q.shape[-1]
        lk, ev = k.shape[-2], v.shape[-1]
        base = self._op_name(inner, "sdpa")
        self.ops += [MatmulOp(f"{base}.scores", owner, batch, lq, lk, e, _bits(q), _bits(k)),
                     MatmulOp(f"{base}.context", owner, batch, lq, ev, lk, _bits(q), _bits(v))]

    def notes(self) -> tuple[str, ...]:
        out = [f"{fname} ({n} call{'s' if n > 1 else ''}): MACs not counted"
               for fname, n in sorted(self.uncounted.items())]
        out += [f"module {n!r} ({type(self.modules[n]).__name__}): {why}"
                for n, why in self.skipped.items()]
        return tuple(out)


def _as_args(example_input) -> tuple:
    if isinstance(example_input, torch.Tensor):
        return (example_input,)
    if isinstance(example_input, (tuple, list)) and example_input:
        return tuple(example_input)
    raise TypeError(f"example_input: must be a tensor or a non-empty tuple of positional "
                    f"arguments, got {type(example_input).__name__}")


def trace_model(model: nn.Module, example_input) -> Trace:
    """Run ``model(*example_input)`` once in eval mode, without gradients, and record it.

    The model's train/eval flags are restored afterwards and nothing in it is modified
    (BatchNorm statistics are not updated: eval mode).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: must be a torch.nn.Module, got {type(model).__name__}")
    args = _as_args(example_input)
    tracer = _Tracer(model)
    modes = {m: m.training for m in model.modules()}
    handles = []
    try:
        for m in model.modules():
            handles.append(m.register_forward_pre_hook(tracer.pre_hook))
            handles.append(m.register_forward_hook(tracer.post_hook, with_kwargs=True,
                                                   always_call=True))
        model.eval()
        with torch.no_grad(), tracer:
            model(*args)
    finally:
        for h in handles:
            h.remove()
        for m, flag in modes.items():
            m.training = flag
    return Trace(model, dict(model.named_modules()), tracer.owners, tracer.rows,
                 frozenset(tracer.formula), tracer.storage, tuple(tracer.ops),
                 {k: tuple(v) for k, v in tracer.calls.items()}, tracer.notes())


def tensors_of(trace: Trace, row: str) -> Iterable[tuple[str, torch.Tensor, bool]]:
    """(name, tensor, is_parameter) of every parameter and persistent buffer ``row`` owns."""
    mod = trace.modules[row]
    subtree = trace.owners[row] == row and (row in trace.formula
                                            or trace.storage.get(row) is not None)
    for pname, p in mod.named_parameters(recurse=subtree):
        yield pname, p, True
    persistent = set(mod.state_dict(keep_vars=True))
    for bname, b in mod.named_buffers(recurse=subtree):
        if bname in persistent:
            yield bname, b, False
