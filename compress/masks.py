"""Weight masks kept during fine-tuning: ``MaskedLinear`` / ``MaskedConv2d``, and ``finalize``.

Unstructured, N:M, movement and lottery-ticket pruning swap each pruned nn.Linear /
nn.Conv2d for a masked subclass holding a boolean buffer ``weight_mask`` (True = kept) and a
``sparsity_kind`` ("unstructured", or the N:M pattern such as "2:4"). The forward uses
W' = W * mask, so a pruned weight contributes nothing and gets no gradient; the stored
pruned weights are zeroed when the mask is set and ``KeepMasks`` (a ``train`` callback)
zeroes them again after every optimizer step, so they stay exactly 0 whatever the
optimizer does (momentum or weight decay from an optimizer built before the pruning).

For export and reports a masked layer exposes ``masked_weight()`` (the dense weight with
zeros, what the 2:4 packer / CSR builder consume), ``weight_mask``, ``sparsity_kind``, and
``lowbit_storage()`` (read by ``profile`` and ``to_workload``): format "fp32" (the dense
masked weights as held now; the packed formats come with the kernel export), bytes = fp32
weights and bias + one byte per mask entry, sparsity = the mask's fraction of zeros, and
``sparsity_kind`` "2:4" for a 2:4 mask (the only N:M pattern of the storage protocol; other
N:M patterns report "unstructured" with their exact sparsity, the layer attribute keeps
e.g. "1:4").

``finalize(model)`` turns every masked layer back into a plain nn.Linear / nn.Conv2d holding
the masked weights (zeros included): the masks are gone, the sparsity stays in the values.

    >>> model = nn.Sequential(nn.Linear(4, 2))
    >>> layer = mask_layer(model, "0", torch.tensor([[1, 0, 1, 0], [0, 1, 1, 0]]).bool(), "2:4")
    >>> layer.lowbit_storage()["sparsity_kind"], int((layer.masked_weight() == 0).sum())
    ('2:4', 4)
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .swap import replace_module

__all__ = ["MaskedLinear", "MaskedConv2d", "MaskedLayer", "mask_layer", "masked_layers",
           "KeepMasks", "finalize", "apply_masks_", "weight_masks", "MASKABLE"]

MASKABLE = (nn.Linear, nn.Conv2d)
_MASK_BYTES_PER_ENTRY = 1  # torch.bool


class MaskedLayer:
    """What MaskedLinear and MaskedConv2d share: the mask, its kind, storage, zeroing."""

    weight: nn.Parameter
    bias: nn.Parameter | None
    weight_mask: torch.Tensor
    sparsity_kind: str

    def _set_mask(self, mask: torch.Tensor, kind: str) -> None:
        if mask.shape != self.weight.shape or mask.dtype != torch.bool:
            raise ValueError(f"mask: must be a bool tensor of the weight's shape "
                             f"{tuple(self.weight.shape)}, got {mask.dtype} "
                             f"{tuple(mask.shape)}")
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"kind: must name the sparsity pattern, e.g. 'unstructured' or "
                             f"'2:4', got {kind!r}")
        self.register_buffer("weight_mask", mask.to(self.weight.device).clone())
        self.sparsity_kind = kind
        self.apply_mask_()

    def masked_weight(self) -> torch.Tensor:
        """The dense weight the forward uses: W * mask (pruned entries exactly 0)."""
        return self.weight * self.weight_mask

    @torch.no_grad()
    def apply_mask_(self) -> None:
        """Zero the stored pruned weights in place."""
        self.weight.mul_(self.weight_mask)

    @property
    def sparsity(self) -> float:
        """Fraction of the weights the mask removes."""
        return 1.0 - float(self.weight_mask.sum()) / self.weight_mask.numel()

    def lowbit_storage(self) -> dict:
        """The storage protocol record (see the module doc)."""
        sparsity = self.sparsity
        if sparsity == 0.0:
            kind = "dense"
        elif self.sparsity_kind == "2:4" and sparsity == 0.5:
            kind = "2:4"
        else:
            kind = "unstructured"
        nbytes = self.weight.numel() * self.weight.element_size()
        if self.bias is not None:
            nbytes += self.bias.numel() * self.bias.element_size()
        nbytes += self.weight_mask.numel() * _MASK_BYTES_PER_ENTRY
        fmt = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(
            self.weight.dtype, str(self.weight.dtype).removeprefix("torch."))
        return {"format": fmt, "bytes": int(nbytes),
                "weight_bits": float(self.weight.element_size() * 8),
                "act_bits": int(self.weight.element_size() * 8), "sparsity": sparsity,
                "sparsity_kind": kind}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sparsity={self.sparsity:.3f} ({self.sparsity_kind})"


class MaskedLinear(MaskedLayer, nn.Linear):
    """nn.Linear whose forward uses ``weight * weight_mask`` (see the module doc)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.masked_weight(), self.bias)


class MaskedConv2d(MaskedLayer, nn.Conv2d):
    """nn.Conv2d whose forward uses ``weight * weight_mask`` (see the module doc)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.masked_weight(), self.bias)


def _shell(mod: nn.Module, cls: type) -> nn.Module:
    """An uninitialized ``cls`` with ``mod``'s geometry (no RNG draw), sharing its tensors."""
    w = mod.weight
    common = {"bias": mod.bias is not None, "device": w.device, "dtype": w.dtype}
    if issubclass(cls, nn.Linear):
        new = nn.utils.skip_init(cls, mod.in_features, mod.out_features, **common)
    else:
        new = nn.utils.skip_init(cls, mod.in_channels, mod.out_channels, mod.kernel_size,
                                 stride=mod.stride, padding=mod.padding,
                                 dilation=mod.dilation, groups=mod.groups,
                                 padding_mode=mod.padding_mode, **common)
    new.weight = mod.weight
    new.bias = mod.bias
    new.train(mod.training)
    return new


def mask_layer(model: nn.Module, name: str, mask: torch.Tensor, kind: str) -> MaskedLayer:
    """Mask the nn.Linear / nn.Conv2d ``name`` of ``model`` with ``mask`` (True = kept); in place.

    A layer that is already masked keeps both masks (their AND); the kind becomes
    "unstructured" unless both are the same. Returns the masked layer.
    """
    mod = model.get_submodule(name)
    if isinstance(mod, MaskedLayer):
        kind = kind if kind == mod.sparsity_kind else "unstructured"
        mod._set_mask(mask.to(mod.weight_mask.device) & mod.weight_mask, kind)
        return mod
    if not isinstance(mod, MASKABLE):
        raise TypeError(f"layer {name!r}: masks apply to nn.Linear / nn.Conv2d, got "
                        f"{type(mod).__name__}")
    new = _shell(mod, MaskedLinear if isinstance(mod, nn.Linear) else MaskedConv2d)
    new._set_mask(mask, kind)
    replace_module(model, name, new)
    return new


def masked_layers(model: nn.Module) -> Iterator[tuple[str, MaskedLayer]]:
    """(name, layer) of every masked layer of ``model``."""
    for name, mod in model.named_modules():
        if isinstance(mod, MaskedLayer):
            yield name, mod


def apply_masks_(model: nn.Module) -> None:
    """Zero the stored pruned weights of every masked layer of ``model``."""
    for _, mod in masked_layers(model):
        mod.apply_mask_()


class KeepMasks:
    """``train`` callback: re-zero every pruned weight after each optimizer step."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def after_step(self, state) -> None:
        apply_masks_(self.model)


def _lowest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask of a 1-D score vector without its ``k`` lowest (ties: lower index goes)."""
    keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[torch.argsort(flat, stable=True)[:k]] = False
    return keep


def weight_masks(scores: Mapping[str, torch.Tensor], *, sparsity: float, scope: str = "layer",
                 layer_sparsity: Mapping[str, float] | None = None,
                 existing: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Keep-masks removing the lowest-scored weights.

    scope "layer": each layer loses round(s * numel) weights, s = ``layer_sparsity[name]``
    or ``sparsity``; "global": round(sparsity * total) over all layers at once. Weights an
    ``existing`` mask already removes score -inf: they stay removed and count toward s.
    """
    shapes = {n: t.shape for n, t in scores.items()}
    flat = {n: t.detach().float().flatten().clone() for n, t in scores.items()}
    for n, old in (existing or {}).items():
        if n in flat:
            flat[n][~old.flatten().to(flat[n].device)] = -torch.inf
    if scope == "global":
        every = torch.cat(list(flat.values()))
        keep = _lowest(every, round(sparsity * every.numel())).split(
            [t.numel() for t in flat.values()])
        return {n: k.reshape(shapes[n]) for n, k in zip(flat, keep)}
    per = layer_sparsity or {}
    return {n: _lowest(t, round(per.get(n, sparsity) * t.numel())).reshape(shapes[n])
            for n, t in flat.items()}


def finalize(model: nn.Module) -> nn.Module:
    """Replace every masked layer by a plain nn.Linear / nn.Conv2d holding its masked weights.

    In place; returns the model. The zeros stay in the weights (``profile`` still counts them
    as sparsity); the masks, and with them the sparsity kind, are gone.
    """
    for name, mod in list(masked_layers(model)):
        mod.apply_mask_()
        plain = _shell(mod, nn.Linear if isinstance(mod, nn.Linear) else nn.Conv2d)
        replace_module(model, name, plain)
    return model
