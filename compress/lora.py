"""LoRA adapters on a frozen (possibly quantized) model: recovery after compression.

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022 (seed 003): a
frozen layer W0 gets a trainable low-rank update,

    y = W0 x + (alpha / r) * B A dropout(x),     A [r, K], B [N, r]

A starts Kaiming-uniform and B at zero, so the adapted model starts exactly as the base. With
a quantized base (a weight-only int4 ``QuantLinear`` in the kernels' format, or any other
``QuantLinear``) this is QLoRA's recipe (Dettmers et al., "QLoRA", NeurIPS 2023): the base
stays in its integer format, only the float adapters train, and they learn to correct the
quantization error on the task's data.

``merge_lora`` folds the adapters back:

* float base (nn.Linear): W = W0 + (alpha / r) B A, the same function up to float32 rounding
  of the sum;
* quantized base: the update is not representable in the base's integer grid, so merging
  means re-quantizing W = dequant(W0) + (alpha / r) B A into the base's format (``"requantize"``:
  same bits, group size and activation quantization, new scales); updates smaller than half
  a quantization step round away, so this can lose part of what the adapter recovered.
  ``"keep"`` (the default) leaves the adapter unmerged beside the integer base, as QLoRA
  serves it: one extra rank-r float GEMM per layer.

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

from .qmodules import QuantLinear
from .swap import replace_module

__all__ = ["LoRAConfig", "LoRALinear", "LoRAShare", "apply_lora", "merge_lora",
           "lora_parameters", "trainable_share", "MERGE_MODES"]

MERGE_MODES = ("keep", "requantize")


@dataclass(frozen=True)
class LoRAConfig:
    """LoRA adapters (see the module doc).

    Args:
        rank: r >= 1, the adapter rank (capped at min(N, K) of each layer).
        alpha: the scale numerator; the update is multiplied by alpha / r.
        dropout: dropout probability on the adapter's input, in [0, 1).
        target_modules: ``fnmatch`` patterns over module names (``named_modules()``), e.g.
            ``("*.q", "*.v")`` or ``("fc*",)``; a nn.Linear or QuantLinear whose name matches
            any pattern gets an adapter.

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


def _features(base: nn.Module) -> tuple[int, int]:
    return int(base.in_features), int(base.out_features)


class LoRALinear(nn.Module):
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
        if not isinstance(base, (nn.Linear, QuantLinear)):
            raise TypeError(f"base: must be nn.Linear or QuantLinear, got {type(base).__name__}")
        k, n = _features(base)
        rank = min(rank, k, n)
        for p in base.parameters():
            p.requires_grad_(False)
        self.base = base
        self.rank = rank
        self.alpha = float(alpha)
        self.scaling = self.alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(k, rank, bias=False)
        self.lora_B = nn.Linear(rank, n, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_B(self.lora_A(self.dropout(x))) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """(alpha / r) B A, the [N, K] update this adapter adds."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    def merged(self, mode: str = "keep") -> nn.Module:
        """The base with the update folded in (module doc): an nn.Linear for a float base; for
        a QuantLinear base, ``mode="requantize"`` gives a QuantLinear of the same format and
        ``"keep"`` returns this module unchanged."""
        if mode not in MERGE_MODES:
            raise ValueError(f"mode: must be one of {', '.join(map(repr, MERGE_MODES))}, got "
                             f"{mode!r}")
        base = self.base
        with torch.no_grad():
            if isinstance(base, nn.Linear):
                out = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
                out.weight.copy_(base.weight + self.delta_weight())
                if base.bias is not None:
                    out.bias.copy_(base.bias)
                return out
            if mode == "keep":
                return self
            return _requantize(base, base.dequantized_weight() + self.delta_weight())


def _requantize(base: QuantLinear, weight: torch.Tensor) -> QuantLinear:
    """A QuantLinear of ``base``'s format (bits, granularity, int4 layout, activations) for
    the float ``weight``."""
    lin = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if base.bias is not None:
            lin.bias.copy_(base.bias)
    if base.weight_format == "int4":
        return QuantLinear.from_float_int4(lin, base.weight_spec.granularity.size)
    act = base.act
    static = act is not None and act.mode == "static"
    return QuantLinear.from_float(lin, base.weight_spec, act=act,
                                  act_scale=base.act_scale if static else None,
                                  act_zero_point=int(base.act_zero_point) if static else 0)


def apply_lora(model: nn.Module, config: LoRAConfig) -> nn.Module:
    """Freeze every parameter of ``model`` and wrap each targeted linear layer in a
    ``LoRALinear``; in place. Only the adapters train afterwards.

    y = W0 x + (alpha / r) B A dropout(x) on every nn.Linear / QuantLinear whose name matches
    ``config.target_modules`` (Hu et al. 2022; QLoRA, Dettmers et al. 2023, on a quantized
    base).

    Returns the model. Example:
        >>> m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> type(apply_lora(m, LoRAConfig(rank=2, target_modules=("0",)))[0]).__name__
        'LoRALinear'
    """
    if not isinstance(config, LoRAConfig):
        raise TypeError(f"config: must be a LoRAConfig, got {type(config).__name__}")
    adapted = tuple(f"{n}." for n, m in model.named_modules() if isinstance(m, LoRALinear))
    linears = [(n, m) for n, m in model.named_modules()  # not inside an existing adapter
               if n and isinstance(m, (nn.Linear, QuantLinear)) and not n.startswith(adapted)]
    chosen = [(n, m) for n, m in linears
              if any(fnmatch.fnmatchcase(n, p) for p in config.target_modules)]
    if not chosen:
        names = ", ".join(n for n, _ in linears) or "none"
        raise ValueError(f"target_modules: {config.target_modules!r} match no nn.Linear / "
                         f"QuantLinear; the model's linear layers: {names}")
    for p in model.parameters():
        p.requires_grad_(False)
    for name, mod in chosen:
        replace_module(model, name, LoRALinear(mod, config.rank, config.alpha, config.dropout))
    return model


def merge_lora(model: nn.Module, *, quantized: str = "keep") -> nn.Module:
    """Replace every ``LoRALinear`` by its merged layer; in place (see ``LoRALinear.merged``).

    Float bases merge exactly (W0 + (alpha / r) B A); quantized bases follow ``quantized``:
    "keep" leaves the adapter unmerged, "requantize" re-quantizes the merged weights into
    the base's format. The merged parameters are trainable again (requires_grad=True).
    """
    if quantized not in MERGE_MODES:
        raise ValueError(f"quantized: must be one of {', '.join(map(repr, MERGE_MODES))}, got "
                         f"{quantized!r}")
    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    if not names:
        raise ValueError("merge_lora: the model has no LoRALinear; apply_lora first")
    for name in names:
        layer = model.get_submodule(name)
        merged = layer.merged(quantized)
        if merged is not layer:
            replace_module(model, name, merged)
    return model


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapter parameters (lora_A, lora_B) of every LoRALinear in ``model``."""
    return [p for m in model.modules() if isinstance(m, LoRALinear)
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
