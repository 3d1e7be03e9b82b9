"""Hardware profiles: one frozen, validated record per accelerator.

Files are read only by ``lowbit.simulator.profile_io``; this module holds the records and
their checks. Every check raises ``ProfileError`` naming the field (and, when loaded from a
file, the file), so a bad profile is rejected on load, never deep inside the model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

DATAFLOWS = ("os", "ws", "is")
OPERANDS = ("ifmap", "filter", "ofmap")
SPARSITY_SUPPORT = ("none", "2:4")
BANDWIDTH_MODES = ("user", "calc")


class ProfileError(ValueError):
    """An invalid hardware profile; the message names the file (if any) and the field."""


def _fail(where: str | None, fieldname: str, why: str) -> None:
    prefix = f"{where}: " if where else ""
    raise ProfileError(f"{prefix}{fieldname}: {why}")


def _positive(where, name, value, *, integer=False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) if integer else (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))
    if not ok or value <= 0:
        _fail(where, name, f"must be a positive {'integer' if integer else 'number'}, got {value!r}")


@dataclass(frozen=True)
class EnergyTable:
    """Energy per event in picojoules.

    mac_pj: operand precision in bits -> energy of one multiply-accumulate.
    sram_points: (buffer size in bytes, pJ per byte read or written) pairs; the energy per
        byte of a buffer of another size is interpolated log-log between them (clamped).
    dram_pj_per_byte: DRAM access energy per byte moved.
    leakage_pj_per_cycle: static energy of the whole accelerator per clock cycle.
    """

    mac_pj: Mapping[int, float]
    sram_points: tuple[tuple[int, float], ...]
    dram_pj_per_byte: float
    leakage_pj_per_cycle: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mac_pj", MappingProxyType(dict(self.mac_pj)))
        object.__setattr__(self, "sram_points", tuple(sorted(tuple(p) for p in self.sram_points)))

    def validate(self, where: str | None = None) -> None:
        if not self.mac_pj:
            _fail(where, "energy.mac_pj", "needs at least one precision")
        for bits, pj in self.mac_pj.items():
            _positive(where, f"energy.mac_pj[{bits}]", bits, integer=True)
            _positive(where, f"energy.mac_pj[{bits}]", pj)
        if not self.sram_points:
            _fail(where, "energy.sram_points", "needs at least one (bytes, pJ/byte) point")
        for size, pj in self.sram_points:
            _positive(where, "energy.sram_points", size, integer=True)
            _positive(where, "energy.sram_points", pj)
        _positive(where, "energy.dram_pj_per_byte", self.dram_pj_per_byte)
        if not (isinstance(self.leakage_pj_per_cycle, (int, float)) and self.leakage_pj_per_cycle >= 0):
            _fail(where, "energy.leakage_pj_per_cycle", "must be a non-negative number")

    def sram_pj_per_byte(self, size_bytes: int) -> float:
        """pJ per byte for an SRAM of ``size_bytes``: log-log interpolation, clamped at the ends."""
        pts = self.sram_points
        if size_bytes <= pts[0][0]:
            return pts[0][1]
        if size_bytes >= pts[-1][0]:
            return pts[-1][1]
        for (s0, e0), (s1, e1) in zip(pts, pts[1:]):
            if s0 <= size_bytes <= s1:
                t = math.log(size_bytes / s0) / math.log(s1 / s0)
                return math.exp(math.log(e0) + t * math.log(e1 / e0))
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class DramSpec:
    """The off-chip memory as the SRAMs see it.

    bandwidth: bytes per cycle of one channel shared by all operands.
    latency: cycles from a request to its first data.
    ports: per-operand bytes per cycle ("ifmap", "filter", "ofmap") when each buffer has its
        own port (SCALE-Sim's USER mode); None means the single shared channel above.
    """

    bandwidth: float
    latency: int
    ports: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        if self.ports is not None:
            object.__setattr__(self, "ports", MappingProxyType(dict(self.ports)))

    def validate(self, where: str | None = None) -> None:
        _positive(where, "dram.bandwidth", self.bandwidth)
        if not (isinstance(self.latency, int) and not isinstance(self.latency, bool)
                and self.latency >= 0):
            _fail(where, "dram.latency", f"must be a non-negative integer, got {self.latency!r}")
        if self.ports is not None:
            if set(self.ports) != set(OPERANDS):
                _fail(where, "dram.ports", f"must name exactly {', '.join(OPERANDS)}")
            for op, bw in self.ports.items():
                _positive(where, f"dram.ports.{op}", bw)


@dataclass(frozen=True)
class Profile:
    """One accelerator: a rows x cols systolic array, its buffers, memory and energy.

    Buffer sizes are per operand and double-buffered: half is read by the array while the
    other half is filled. ``macs_per_pe`` maps an operand precision in bits to the MACs one PE
    does per cycle at that precision (e.g. {8: 1, 4: 2, 1: 8}); precisions not listed run at
    the nearest wider listed precision's rate. ``sources`` cites where each figure comes from.
    """

    name: str
    rows: int
    cols: int
    dataflows: tuple[str, ...]
    clock_hz: float
    ifmap_sram_bytes: int
    filter_sram_bytes: int
    ofmap_sram_bytes: int
    word_bits: int
    dram: DramSpec
    macs_per_pe: Mapping[int, int]
    energy: EnergyTable
    sparsity: str = "none"
    bandwidth_mode: str = "user"
    sources: Mapping[str, str] = field(default_factory=dict)
    path: str | None = None  # the file it was loaded from, for messages

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataflows", tuple(self.dataflows))
        object.__setattr__(self, "macs_per_pe", MappingProxyType(dict(self.macs_per_pe)))
        object.__setattr__(self, "sources", MappingProxyType(dict(self.sources)))
        self.validate()

    @property
    def dataflow(self) -> str:
        """The default dataflow (the first listed)."""
        return self.dataflows[0]

    @property
    def word_bytes(self) -> float:
        return self.word_bits / 8

    def sram_bytes(self, operand: str) -> int:
        return getattr(self, f"{operand}_sram_bytes")

    def macs_per_cycle(self, bits: int) -> int:
        """MACs per PE per cycle for operands of ``bits`` (nearest wider listed precision)."""
        wider = [b for b in self.macs_per_pe if b >= bits]
        return self.macs_per_pe[min(wider)] if wider else self.macs_per_pe[max(self.macs_per_pe)]

    def validate(self) -> None:
        where = self.path
        if not isinstance(self.name, str) or not self.name:
            _fail(where, "name", "must be a non-empty string")
        _positive(where, "rows", self.rows, integer=True)
        _positive(where, "cols", self.cols, integer=True)
        if not self.dataflows or any(d not in DATAFLOWS for d in self.dataflows):
            _fail(where, "dataflows", f"must be a non-empty list drawn from {', '.join(DATAFLOWS)}, "
                                      f"got {list(self.dataflows)!r}")
        _positive(where, "clock_hz", self.clock_hz)
        _positive(where, "word_bits", self.word_bits, integer=True)
        for op in OPERANDS:
            size = self.sram_bytes(op)
            _positive(where, f"{op}_sram_bytes", size, integer=True)
        # The array must at least be fed one row (or column) of operands per buffer half.
        edge = max(self.rows, self.cols) * self.word_bits / 8
        for op in OPERANDS:
            if self.sram_bytes(op) / 2 < edge:
                _fail(where, f"{op}_sram_bytes",
                      f"{self.sram_bytes(op)} bytes cannot hold one array edge of operands "
                      f"({edge:g} bytes) in each half of its double buffer")
        if not isinstance(self.dram, DramSpec):
            _fail(where, "dram", "missing")
        self.dram.validate(where)
        if not self.macs_per_pe:
            _fail(where, "macs_per_pe", "needs at least one precision")
        for bits, rate in self.macs_per_pe.items():
            _positive(where, f"macs_per_pe[{bits}]", bits, integer=True)
            _positive(where, f"macs_per_pe[{bits}]", rate, integer=True)
        if not isinstance(self.energy, EnergyTable):
            _fail(where, "energy", "missing")
        self.energy.validate(where)
        if self.sparsity not in SPARSITY_SUPPORT:
            _fail(where, "sparsity", f"must be one of {', '.join(SPARSITY_SUPPORT)}, got {self.sparsity!r}")
        if self.bandwidth_mode not in BANDWIDTH_MODES:
            _fail(where, "bandwidth_mode", f"must be one of {', '.join(BANDWIDTH_MODES)}, "
                                           f"got {self.bandwidth_mode!r}")
