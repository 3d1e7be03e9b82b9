"""LoRA adapters on a frozen (possibly quantized) model: recovery after compression.

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022 (seed 003): a
frozen layer W0 gets a trainable low-rank update,

    y = W0 x + (alpha / r) * B A dropout(x),     A [r, K], B [N, r]

A starts Kaiming-uniform and B at zero, so the adapted model starts exactly as the base. With
a quantized base (a weight-only int4 ``QuantLinear`` / ``QuantConv2d`` in the kernels'
format, or any other quantized layer) this is QLoRA's recipe (Dettmers et al., "QLoRA",
NeurIPS 2023): the base stays in its integer format, only the float adapters train, and they
learn to correct the quantization error on the task's data.

Convolutions (``LoRAConv2d``) take the usual LoRA-for-conv form (as in Microsoft's loralib
``ConvLoRA`` and PEFT's Conv2d LoRA): A is a convolution with the base's kernel size,
stride, padding, dilation and groups into r channels, B a 1x1 convolution r -> C_out (with
the base's groups, so the update stays within each group and merges into the base's weight
shape). B being pointwise and linear, B(A(x)) is the convolution of x with the kernel
dW[o] = sum_j B[o, j] A[j] (j over o's group), so the merge is exact in real arithmetic.

``merge_lora`` folds the adapters back:

* float base (nn.Linear / nn.Conv2d): W = W0 + (alpha / r) B A, the same function up to
  float32 rounding of the sum;
* quantized base: the update is not representable in the base's integer grid, so merging
  means re-quantizing W = dequant(W0) + (alpha / r) B A into the base's format (``"requantize"``:
  same bits, granularity, int4 layout and activation quantization, new scales); updates
  smaller than half a quantization step round away, so this can lose part of what the
  adapter recovered. ``"keep"`` (the default) leaves the adapter unmerged beside the integer
  base, as QLoRA serves it: one extra rank-r float GEMM (or pair of convolutions) per layer.

    >>> from lowbit.compress import LoRAConfig, apply_lora, get_model
    >>> model = apply_lora(get_model("digits-mlp"), LoRAConfig(rank=4, target_modules=("fc*",)))
    >>> trainable_share(model).share < 0.15
    True
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass

import torch
from torch import nn

from .qmodules import QuantConv2d, QuantLinear
from .swap import replace_module

__all__ = ["LoRAConfig", "LoRAConv2d", "LoRALinear", "LoRAShare", "LORA_LAYERS", "apply_lora",
           "merge_lora", "lora_parameters", "trainable_share", "MERGE_MODES"]

MERGE_MODES = ("keep", "requantize")
LINEAR_BASES = (nn.Linear, QuantLinear)
CONV_BASES = (nn.Conv2d, QuantConv2d)


@dataclass(frozen=True)
class LoRAConfig:
    """LoRA adapters (see the module doc).

    Args:
        rank: r >= 1, the adapter rank (capped at min(N, K) of each layer; a grouped
            convolution's rank is rounded up to a multiple of its groups).
        alpha: the scale numerator; the update is multiplied by alpha / r.
        dropout: dropout probability on the adapter's input, in [0, 1).
        target_modules: ``fnmatch`` patterns over module names (``named_modules()``), e.g.
            ``("*.q", "*.v")`` or ``("conv*", "fc")``; an nn.Linear / QuantLinear or
            nn.Conv2d / QuantConv2d whose name matches any pattern gets an adapter.

    Example:
        >>> LoRAConfig(rank=0)
        Traceback (most recent call last):
        ValueError: rank: must be an integer >= 1, got 0
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("*",)

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise ValueError(f"rank: must be an integer >= 1, got {self.rank!r}")
        if (not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool)
                or not math.isfinite(self.alpha) or self.alpha <= 0):
            raise ValueError(f"alpha: must be a number > 0, got {self.alpha!r}")
        if (not isinstance(self.dropout, (int, float)) or isinstance(self.dropout, bool)
                or not 0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout: must be a number in [0, 1), got {self.dropout!r}")
        pats = self.target_modules
        if isinstance(pats, str) or not isinstance(pats, (tuple, list)) or not pats or \
                not all(isinstance(p, str) and p for p in pats):
            raise ValueError(f"target_modules: must be a non-empty sequence of name patterns, "
                             f"e.g. ('*.q', '*.v'), got {pats!r}")
        object.__setattr__(self, "target_modules", tuple(pats))


class _LoRALayer(nn.Module):
    """What LoRALinear and LoRAConv2d share: the frozen base, the scale, the dropout, the
    forward base(x) + (alpha / r) B(A(dropout(x))) and the merge. Each subclass defines
    ``delta_weight()`` (the update in the base's weight shape) and ``_float_base(weight)``
    (a float layer of the base's geometry and bias holding ``weight``)."""

    def _adapt(self, base: nn.Module, rank: int, alpha: float, dropout: float,
               lora_a: nn.Module, lora_b: nn.Module) -> None:
        for p in base.parameters():
            p.requires_grad_(False)
        self.base = base
        self.rank = rank
        self.alpha = float(alpha)
        self.scaling = self.alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = lora_a
        self.lora_B = lora_b
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_B(self.lora_A(self.dropout(x))) * self.scaling

    def merged(self, mode: str = "keep") -> nn.Module:
        """The base with the update folded in (module doc): a float layer for a float base;
        for a quantized base, ``mode="requantize"`` gives a quantized layer of the same
        format and ``"keep"`` returns this module unchanged."""
        if mode not in MERGE_MODES:
            raise ValueError(f"mode: must be one of {', '.join(map(repr, MERGE_MODES))}, got "
                             f"{mode!r}")
        base = self.base
        with torch.no_grad():
            if not isinstance(base, (QuantLinear, QuantConv2d)):
                return self._float_base(base.weight + self.delta_weight())
            if mode == "keep":
                return self
            return _requantize(base, self._float_base(base.dequantized_weight()
                                                      + self.delta_weight()))


class LoRALinear(_LoRALayer):
    """A frozen linear ``base`` (nn.Linear or QuantLinear) plus (alpha / r) B A dropout(x).

    ``lora_A`` = Linear(K, r, bias=False) (Kaiming-uniform), ``lora_B`` = Linear(r, N,
    bias=False) (zeros); both are plain nn.Linear, so ``profile`` counts their params and
    MACs next to the base's.

    Example:
        >>> lin = LoRALinear(nn.Linear(16, 8), rank=2, alpha=4.0)
        >>> torch.equal(lin(torch.ones(1, 16)), lin.base(torch.ones(1, 16)))   # B = 0
        True
    """

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float = 0.0
                 ) -> None:
        super().__init__()
        if not isinstance(base, LINEAR_BASES):
            raise TypeError(f"base: must be nn.Linear or QuantLinear, got {type(base).__name__}")
        k, n = int(base.in_features), int(base.out_features)
        rank = min(rank, k, n)
        self._adapt(base, rank, alpha, dropout, nn.Linear(k, rank, bias=False),
                    nn.Linear(rank, n, bias=False))

    def delta_weight(self) -> torch.Tensor:
        """(alpha / r) B A, the [N, K] update this adapter adds."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    def _float_base(self, weight: torch.Tensor) -> nn.Linear:
        base = self.base
        out = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
        out.weight.copy_(weight)
        if base.bias is not None:
            out.bias.copy_(base.bias)
        return out


def _conv_geometry(base: nn.Module) -> dict:
    """in / out channels, kernel, stride, padding, dilation, groups, padding mode of an
    nn.Conv2d or a QuantConv2d (zero padding; weight [out, in / groups, kh, kw])."""
    if isinstance(base, QuantConv2d):
        n, c, kh, kw = base.weight_q.shape
        return {"in_channels": c * base.groups, "out_channels": n, "kernel_size": (kh, kw),
                "stride": base.stride, "padding": base.padding, "dilation": base.dilation,
                "groups": base.groups, "padding_mode": "zeros"}
    return {"in_channels": base.in_channels, "out_channels": base.out_channels,
            "kernel_size": base.kernel_size, "stride": base.stride, "padding": base.padding,
            "dilation": base.dilation, "groups": base.groups, "padding_mode": base.padding_mode}


class LoRAConv2d(_LoRALayer):
    """A frozen convolution ``base`` (nn.Conv2d or QuantConv2d) plus (alpha / r) B(A(dropout(x))).

    ``lora_A`` = Conv2d(C_in, r) with the base's kernel size, stride, padding, dilation,
    groups and padding mode (Kaiming-uniform), ``lora_B`` = 1x1 Conv2d(r, C_out) with the
    base's groups (zeros); both without bias. r = min(rank, C_out, C_in / groups * kh * kw)
    per group times the groups (rank rounded up to a multiple of the groups).
    ``delta_weight()`` is the equivalent kernel dW[o] = (alpha / r) sum_j B[o, j] A[j].

    Example:
        >>> conv = LoRAConv2d(nn.Conv2d(3, 8, 3, padding=1), rank=4, alpha=8.0)
        >>> conv.lora_A
        Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
        >>> conv.lora_B
        Conv2d(4, 8, kernel_size=(1, 1), stride=(1, 1), bias=False)
    """

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float = 0.0
                 ) -> None:
        super().__init__()
        if not isinstance(base, CONV_BASES):
            raise TypeError(f"base: must be nn.Conv2d or QuantConv2d, got {type(base).__name__}")
        geo = _conv_geometry(base)
        g = geo["groups"]
        k = geo["in_channels"] // g * math.prod(geo["kernel_size"])
        rank = g * min(-(-rank // g), geo["out_channels"] // g, k)
        self._geometry = geo
        lora_a = nn.Conv2d(geo["in_channels"], rank, geo["kernel_size"], geo["stride"],
                           geo["padding"], geo["dilation"], g, bias=False,
                           padding_mode=geo["padding_mode"])
        lora_b = nn.Conv2d(rank, geo["out_channels"], 1, groups=g, bias=False)
        self._adapt(base, rank, alpha, dropout, lora_a, lora_b)

    def delta_weight(self) -> torch.Tensor:
        """(alpha / r) B A as a kernel [C_out, C_in / groups, kh, kw] (per group: B_g A_g)."""
        g = self._geometry["groups"]
        a = self.lora_A.weight                                # [r, C_in / g, kh, kw]
        b = self.lora_B.weight.reshape(g, -1, self.rank // g)  # [g, C_out / g, r / g]
        a_g = a.reshape(g, self.rank // g, -1)                # [g, r / g, C_in / g * kh * kw]
        return (b @ a_g).reshape(-1, *a.shape[1:]) * self.scaling

    def _float_base(self, weight: torch.Tensor) -> nn.Conv2d:
        geo = self._geometry
        bias = self.base.bias
        out = nn.Conv2d(**geo, bias=bias is not None)
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias)
        return out


LORA_LAYERS = (LoRALinear, LoRAConv2d)


def _requantize(base: QuantLinear | QuantConv2d, layer: nn.Module) -> nn.Module:
    """The float ``layer`` quantized into ``base``'s format (bits, granularity, int4 layout,
    activations)."""
    cls = type(base)
    if base.weight_format == "int4":
        return cls.from_float_int4(layer, base.weight_spec.granularity.size)
    act = base.act
    static = act is not None and act.mode == "static"
    return cls.from_float(layer, base.weight_spec, act=act,
                          act_scale=base.act_scale if static else None,
                          act_zero_point=int(base.act_zero_point) if static else 0)


def apply_lora(model: nn.Module, config: LoRAConfig) -> nn.Module:
    """Freeze every parameter of ``model`` and wrap each targeted layer in a ``LoRALinear``
    (nn.Linear, QuantLinear) or ``LoRAConv2d`` (nn.Conv2d, QuantConv2d); in place. Only the
    adapters train afterwards.

    y = W0 x + (alpha / r) B A dropout(x) on every such layer whose name matches
    ``config.target_modules`` (Hu et al. 2022; QLoRA, Dettmers et al. 2023, on a quantized
    base).

    Returns the model. Example:
        >>> m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4, 2))
        >>> m = apply_lora(m, LoRAConfig(rank=2, target_modules=("0", "2")))
        >>> [type(layer).__name__ for layer in m]
        ['LoRAConv2d', 'Flatten', 'LoRALinear']
    """
    if not isinstance(config, LoRAConfig):
        raise TypeError(f"config: must be a LoRAConfig, got {type(config).__name__}")
    adapted = tuple(f"{n}." for n, m in model.named_modules() if isinstance(m, LORA_LAYERS))
    layers = [(n, m) for n, m in model.named_modules()  # not inside an existing adapter
              if n and isinstance(m, (*LINEAR_BASES, *CONV_BASES)) and not n.startswith(adapted)]
    chosen = [(n, m) for n, m in layers
              if any(fnmatch.fnmatchcase(n, p) for p in config.target_modules)]
    if not chosen:
        names = ", ".join(n for n, _ in layers) or "none"
        raise ValueError(f"target_modules: {config.target_modules!r} match no nn.Linear / "
                         f"QuantLinear / nn.Conv2d / QuantConv2d; the model's layers: {names}")
    for p in model.parameters():
        p.requires_grad_(False)
    for name, mod in chosen:
        cls = LoRALinear if isinstance(mod, LINEAR_BASES) else LoRAConv2d
        replace_module(model, name, cls(mod, config.rank, config.alpha, config.dropout))
    return model


def merge_lora(model: nn.Module, *, quantized: str = "keep") -> nn.Module:
    """Replace every ``LoRALinear`` / ``LoRAConv2d`` by its merged layer; in place (see
    ``merged``).

    Float bases merge exactly (W0 + (alpha / r) B A); quantized bases follow ``quantized``:
    "keep" leaves the adapter unmerged, "requantize" re-quantizes the merged weights into
    the base's format. The merged parameters are trainable again (requires_grad=True).
    """
    if quantized not in MERGE_MODES:
        raise ValueError(f"quantized: must be one of {', '.join(map(repr, MERGE_MODES))}, got "
                         f"{quantized!r}")
    names = [n for n, m in model.named_modules() if isinstance(m, LORA_LAYERS)]
    if not names:
        raise ValueError("merge_lora: the model has no LoRALinear / LoRAConv2d; apply_lora "
                         "first")
    for name in names:
        layer = model.get_submodule(name)
        merged = layer.merged(quantized)
        if merged is not layer:
            replace_module(model, name, merged)
    return model


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapter parameters (lora_A, lora_B) of every LoRA layer in ``model``."""
    return [p for m in model.modules() if isinstance(m, LORA_LAYERS)
            for p in (m.lora_A.weight, m.lora_B.weight)]


@dataclass(frozen=True)
class LoRAShare:
    """Trainable parameters against all logical parameters of a model (``trainable_share``)."""

    trainable: int
    total: int

    @property
    def share(self) -> float:
        return self.trainable / self.total if self.total else 0.0


def _logical_params(module: nn.Module) -> int:
    """Parameters, counting a module with ``lowbit_storage`` (a quantized layer holding its
    weights in buffers) by its logical weights and biases."""
    fn = getattr(module, "lowbit_storage", None)
    if callable(fn):
        params = fn().get("params")
        if params is not None:
            return int(params)
    own = sum(p.numel() for p in module.parameters(recurse=False))
    return own + sum(_logical_params(c) for c in module.children())


def trainable_share(model: nn.Module) -> LoRAShare:
    """(trainable parameters, all logical parameters) of ``model``; quantized layers count
    their logical weights and biases (``lowbit_storage()["params"]``), adapters included.

    Example:
        >>> m = apply_lora(nn.Sequential(nn.Linear(64, 64)), LoRAConfig(rank=4))
        >>> s = trainable_share(m); (s.trainable, s.total)
        (512, 4672)
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return LoRAShare(trainable, _logical_params(model))
