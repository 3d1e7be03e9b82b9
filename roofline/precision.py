"""Precisions: how wide each operand is, which compute ceiling a layer runs at.

A ``Precision`` is declared data, parsed from a short name:

* uniform: ``fp32``, ``bf16``, ``fp16``, ``fp8``, ``int8``, ``int4``, ``binary``: activations
  and weights at that width, outputs at 32 (fp32), 16 (bf16 / fp16) or 8 bits (the rest:
  requantized activations for the next layer, as an integer pipeline writes them);
* LLM weight / activation formats: ``w16a16`` (fp16), ``w8a8`` (int8 GEMMs, e.g.
  SmoothQuant), ``w4a16`` (4-bit weights with one fp16 scale per group of 128, dequantized to
  fp16 in the GEMM, e.g. AWQ / GPTQ kernels), and any ``wXaY``; outputs are fp16;
* a KV-cache suffix ``-kv8`` / ``-kv4`` (default: 16-bit KV cache), e.g. ``w4a16-kv8``. A
  4- or 8-bit KV cache carries one fp16 scale per group of 64 values.

In LLM workloads the attention matmuls (scores, context) run at fp16 with the KV cache as
their second operand at ``kv_bits``; the projection GEMMs run at the precision's ceiling.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Precision", "parse_precision", "LLM_PRECISIONS", "compute_for_bits"]

LLM_PRECISIONS = ("w16a16", "w8a8", "w4a16")
SCALE_BITS = 16
W_GROUP = 128
KV_GROUP = 64


def compute_for_bits(a_bits: int, w_bits: int) -> str:
    """The ceiling integer operands of these widths run at (the wider operand decides)."""
    bits = max(a_bits, w_bits)
    if bits <= 1:
        return "binary"
    if bits <= 4:
        return "int4"
    if bits <= 8:
        return "int8"
    if bits <= 16:
        return "fp16"
    return "fp32"


@dataclass(frozen=True)
class Precision:
    """Operand widths and the compute ceiling of a precision.

    w_group: weights per fp16 scale (None: no per-group scales). kv_bits / kv_group: the
    KV cache's width and scale group (LLM attention only).
    """

    name: str
    a_bits: int
    w_bits: int
    out_bits: int
    compute: str
    w_group: int | None = None
    kv_bits: int = 16
    kv_group: int | None = None

    def weight_bits(self) -> float:
        """Bits per weight stored, scales included."""
        return self.w_bits + (SCALE_BITS / self.w_group if self.w_group else 0.0)

    def kv_bits_stored(self) -> float:
        return self.kv_bits + (SCALE_BITS / self.kv_group if self.kv_group else 0.0)


_UNIFORM = {
    "fp32": (32, 32, 32, "fp32"),
    "tf32": (32, 32, 32, "tf32"),
    "bf16": (16, 16, 16, "bf16"),
    "fp16": (16, 16, 16, "fp16"),
    "fp8": (8, 8, 8, "fp8"),
    "int8": (8, 8, 8, "int8"),
    "int4": (4, 4, 8, "int4"),
    "binary": (1, 1, 8, "binary"),
}


def parse_precision(name: str | Precision) -> Precision:
    """A ``Precision`` from its name (see the module doc); case-insensitive.

    >>> parse_precision("w4a16-kv8").weight_bits()
    4.125
    """
    if isinstance(name, Precision):
        return name
    if not isinstance(name, str):
        raise TypeError(f"precision must be a string, got {type(name).__name__}")
    text = name.strip().lower()
    kv_bits = 16
    m = re.fullmatch(r"(.+?)[-+_]kv(\d+)", text)
    if m:
        text, kv_bits = m.group(1), int(m.group(2))
        if kv_bits not in (4, 8, 16):
            raise ValueError(f"precision {name!r}: KV cache bits must be 4, 8 or 16")
    kv_group = KV_GROUP if kv_bits < 16 else None
    if text in _UNIFORM:
        a, w, out, comp = _UNIFORM[text]
        return Precision(name.strip().lower(), a, w, out, comp, None, kv_bits, kv_group)
    m = re.fullmatch(r"w(\d+)a(\d+)", text)
    if not m:
        raise ValueError(f"precision: unknown {name!r}; use one of {', '.join(_UNIFORM)}, "
                         f"{', '.join(LLM_PRECISIONS)} or wXaY, optionally with -kv8 / -kv4")
    w, a = int(m.group(1)), int(m.group(2))
    if w < 1 or a < 1 or w > 32 or a > 32:
        raise ValueError(f"precision {name!r}: bit widths must lie in 1..32")
    if a >= 16:
        comp = "fp16" if a == 16 else "fp32"   # weights dequantized to the activations' type
    else:
        comp = compute_for_bits(a, w)
    group = W_GROUP if w < 8 else None       # sub-byte weights carry per-group scales
    return Precision(name.strip().lower(), a, w, 16, comp, group, kv_bits, kv_group)
