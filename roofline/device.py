"""Roofline devices: one frozen, validated record per chip (GPU, NPU or CPU).

A device is what the roofline needs and nothing more: a compute ceiling per precision (dense
and, where the hardware has it, 2:4-sparse), optionally per precision and instruction-set
variant (a CPU's VNNI, AVX-512, AVX2, SSE2, ... ceilings: what a kernel using only those
instructions can reach), a list of memory levels from the outermost (DRAM / HBM) inwards
(L2 / LLC / on-chip SRAM, ...), each with its read bandwidth, capacity and energy per byte,
the energy per operation per precision, the board power, and the efficiency U assumed when
no simulator or measurement supplies one.

Files are read by ``lowbit.roofline.profile_io`` only; this module holds the records and
their checks. Every check raises ``DeviceError`` naming the file (when loaded from one) and
the field, as the simulator's ``ProfileError`` does (it is a subclass of it).

Units: ops/s (a multiply-accumulate is 2 ops, as in ``lowbit.costs``), bytes/s, bytes,
picojoules, watts.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from lowbit.simulator.hardware import ProfileError

# Compute precisions a ceiling may be given for. "binary" is 1-bit XNOR-popcount.
PRECISIONS = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4", "binary")
KINDS = ("gpu", "npu", "cpu")
# An ISA variant's name: lower case, digits and underscores (avx512_vnni, sse2_maddwd, neon).
VARIANT_NAME = re.compile(r"[a-z][a-z0-9_]*")

# A precision the device has no ceiling for runs at the first listed one it has (the
# narrow types fall back to wider units; bf16 and fp16 share the tensor cores).
FALLBACK: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "binary": ("int4", "int8", "fp16", "bf16", "fp32"),
    "int4": ("int8", "fp16", "bf16", "fp32"),
    "int8": ("fp16", "bf16", "fp32"),
    "fp8": ("fp16", "bf16", "fp32"),
    "fp16": ("bf16", "fp32"),
    "bf16": ("fp16", "fp32"),
    "tf32": ("fp32",),
    "fp32": ("tf32", "fp64"),
    "fp64": (),
})


class DeviceError(ProfileError):
    """An invalid roofline device; the message names the file (if any) and the field."""


def _fail(where: str | None, fieldname: str, why: str) -> None:
    prefix = f"{where}: " if where else ""
    raise DeviceError(f"{prefix}{fieldname}: {why}")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(where, name, value) -> None:
    if not _number(value) or value <= 0:
        _fail(where, name, f"must be a positive number, got {value!r}")


@dataclass(frozen=True)
class MemoryLevel:
    """One level of the memory hierarchy as the compute units see it.

    bandwidth: bytes/s the level delivers to the level inside it (read bandwidth).
    capacity_bytes: what it holds, the tile budget of the reuse model for the level outside
        it (see ``lowbit.roofline.model``); None for the outermost memory if unknown.
    pj_per_byte: energy of moving one byte out of this level.
    """

    name: str
    bandwidth: float
    capacity_bytes: float | None = None
    pj_per_byte: float = 0.0

    def validate(self, where: str | None, index: int) -> None:
        at = f"memory[{index}]"
        if not isinstance(self.name, str) or not self.name:
            _fail(where, f"{at}.name", "must be a non-empty string")
        _positive(where, f"{at}.bandwidth ({self.name})", self.bandwidth)
        if self.capacity_bytes is not None:
            _positive(where, f"{at}.capacity_bytes ({self.name})", self.capacity_bytes)
        if not _number(self.pj_per_byte) or self.pj_per_byte < 0:
            _fail(where, f"{at}.pj_per_byte ({self.name})",
                  f"must be a non-negative number, got {self.pj_per_byte!r}")


@dataclass(frozen=True)
class Device:
    """A roofline device.

    peak: precision -> dense peak ops/s. sparse_peak: precision -> ops/s with 2:4 weight
    sparsity, counted as the vendors do (dense-equivalent ops, i.e. twice the dense rate).
    memory: levels outermost first (DRAM / HBM, then L2 / SRAM, ...). tile_bytes: the
    working set one core keeps for reuse inside the innermost listed level (GPU: register
    file + shared memory of one SM; CPU: the L1 of one core; NPU: the array's buffers).
    pj_per_op: precision -> energy of one op. efficiency: "default" and optional
    per-precision U in (0, 1], used when no simulator / measurement gives one.
    isa_peak: precision -> ISA variant -> ops/s of that instruction family alone (CPU
    profiles written by calibration); each is at most ``peak`` of its precision, which is
    the best variant's.
    """

    name: str
    kind: str
    peak: Mapping[str, float]
    memory: tuple[MemoryLevel, ...]
    tile_bytes: float
    pj_per_op: Mapping[str, float]
    sparse_peak: Mapping[str, float] = field(default_factory=dict)
    tdp_w: float | None = None
    efficiency: Mapping[str, float] = field(default_factory=lambda: {"default": 1.0})
    isa_peak: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)
    path: str | None = None
    npu: object | None = field(default=None, compare=False, repr=False)  # simulator Profile

    def __post_init__(self) -> None:
        for name in ("peak", "sparse_peak", "pj_per_op", "efficiency", "sources"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        object.__setattr__(self, "isa_peak", MappingProxyType(
            {p: MappingProxyType(dict(t)) if isinstance(t, Mapping) else t
             for p, t in dict(self.isa_peak).items()}))
        object.__setattr__(self, "memory", tuple(self.memory))
        self.validate()

    # ---------------------------------------------------------------------------------------
    def validate(self) -> None:
        where = self.path
        if not isinstance(self.name, str) or not self.name:
            _fail(where, "name", "must be a non-empty string")
        if self.kind not in KINDS:
            _fail(where, "kind", f"must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not self.peak:
            _fail(where, "peak", "needs at least one precision")
        for table in ("peak", "sparse_peak", "pj_per_op"):
            for prec, value in getattr(self, table).items():
                if prec not in PRECISIONS:
                    _fail(where, f"{table}.{prec}",
                          f"unknown precision; known: {', '.join(PRECISIONS)}")
                _positive(where, f"{table}.{prec}", value)
        for prec in self.sparse_peak:
            if prec not in self.peak:
                _fail(where, f"sparse_peak.{prec}", "has no dense peak to go with it")
        self._validate_isa_peak(where)
        if not self.memory:
            _fail(where, "memory", "needs at least one level (the DRAM / HBM)")
        names = [m.name for m in self.memory]
        if len(set(names)) != len(names):
            _fail(where, "memory", f"level names must be unique, got {names}")
        for i, level in enumerate(self.memory):
            if not isinstance(level, MemoryLevel):
                _fail(where, f"memory[{i}]", "must be a MemoryLevel")
            level.validate(where, i)
            if i > 0 and level.capacity_bytes is None:
                _fail(where, f"memory[{i}].capacity_bytes ({level.name})",
                      "required for every level inside the outermost")
        _positive(where, "tile_bytes", self.tile_bytes)
        if self.tdp_w is not None:
            _positive(where, "tdp_w", self.tdp_w)
        if "default" not in self.efficiency:
            _fail(where, "efficiency.default", "missing (required)")
        for key, u in self.efficiency.items():
            if key != "default" and key not in PRECISIONS:
                _fail(where, f"efficiency.{key}", f"unknown precision; known: default, "
                                                  f"{', '.join(PRECISIONS)}")
            if not _number(u) or not 0 < u <= 1:
                _fail(where, f"efficiency.{key}", f"must lie in (0, 1], got {u!r}")

    def _validate_isa_peak(self, where) -> None:
        for prec, table in self.isa_peak.items():
            name = f"isa_peak.{prec}"
            if prec not in PRECISIONS:
                _fail(where, name, f"unknown precision; known: {', '.join(PRECISIONS)}")
            if prec not in self.peak:
                _fail(where, name, "has no peak of its precision to go with it (the best "
                                   "variant's ceiling)")
            if not isinstance(table, Mapping) or not table:
                _fail(where, name, f"must map ISA variants to ops/s, got {table!r}")
            for variant, value in table.items():
                at = f"{name}.{variant}"
                if not isinstance(variant, str) or not VARIANT_NAME.fullmatch(variant):
                    _fail(where, at, "variant names are lower case letters, digits and "
                                     "underscores, starting with a letter")
                _positive(where, at, value)
                if value > self.peak[prec] * (1 + 1e-9):
                    _fail(where, at, f"exceeds the {prec} peak ({value:.6g} > "
                                     f"{self.peak[prec]:.6g} ops/s): that peak must be the "
                                     "best variant's")

    # ---------------------------------------------------------------------------------------
    def isa_peak_ops(self, precision: str, variant: str) -> float:
        """Ops/s of ``precision`` on the instructions of ``variant`` (``isa_peak``)."""
        table = self.isa_peak.get(precision)
        if table is None or variant not in table:
            have = ", ".join(f"{p}.{v}" for p, t in self.isa_peak.items() for v in t) or "none"
            raise ValueError(f"device {self.name!r} has no {precision}.{variant} ceiling "
                             f"(isa_peak: {have})")
        return table[variant]

    def resolve(self, precision: str) -> str:
        """The precision whose ceiling ``precision`` runs at (itself or a listed fallback)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision: unknown {precision!r}; known: {', '.join(PRECISIONS)}")
        if precision in self.peak:
            return precision
        for alt in FALLBACK[precision]:
            if alt in self.peak:
                return alt
        raise ValueError(f"device {self.name!r} has no ceiling for {precision!r} or a "
                         f"fallback ({', '.join(FALLBACK[precision]) or 'none'})")

    def peak_ops(self, precision: str, sparse: bool = False) -> float:
        """Ops/s at ``precision`` (2:4-sparse ceiling when ``sparse`` and the device has it)."""
        p = self.resolve(precision)
        if sparse and p in self.sparse_peak:
            return self.sparse_peak[p]
        return self.peak[p]

    def has_sparse(self, precision: str) -> bool:
        return self.resolve(precision) in self.sparse_peak

    def op_energy_pj(self, precision: str) -> float:
        """pJ per op at ``precision`` (the fallback's; 0 when the device gives none)."""
        p = precision if precision in self.pj_per_op else None
        if p is None:
            for alt in (self.resolve(precision),) + FALLBACK[precision]:
                if alt in self.pj_per_op:
                    p = alt
                    break
        return self.pj_per_op.get(p, 0.0) if p else 0.0

    def efficiency_for(self, precision: str) -> tuple[float, str]:
        """(U, source) the profile gives ``precision``: its own entry, else the default. The
        source is "measured" when the entry's citation starts with "measured" (as the
        calibrated host's do), else "default"."""
        key = precision if precision in self.efficiency else "default"
        measured = self.sources.get(f"efficiency.{key}", "").startswith("measured")
        return self.efficiency[key], "measured" if measured else "default"

    @property
    def dram(self) -> MemoryLevel:
        return self.memory[0]

    @property
    def memory_capacity(self) -> float | None:
        """Bytes of the outermost memory (device DRAM / HBM), None when the profile gives none."""
        return self.memory[0].capacity_bytes

    def ridge_point(self, precision: str, level: int = 0, sparse: bool = False) -> float:
        """Intensity (ops/byte) where the ``level`` memory roof meets the compute ceiling."""
        return self.peak_ops(precision, sparse) / self.memory[level].bandwidth


__all__ = ["Device", "DeviceError", "MemoryLevel", "PRECISIONS", "KINDS", "FALLBACK",
           "VARIANT_NAME"]
