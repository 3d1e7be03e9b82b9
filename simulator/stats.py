"""Report records: per-GEMM results, per-layer and per-network stats; dicts, CSV and JSON.

Counts of SRAM / DRAM accesses are in elements (operand words; SCALE-Sim's unit), with the
matching bytes alongside; cycles are array clock cycles; energies are picojoules;
efficiencies are fractions in [0, 1] (SCALE-Sim prints percentages).
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

# Counters two engines must agree on exactly (tests iterate this list).
COUNTERS = ("folds", "compute_cycles", "stall_cycles", "total_cycles", "macs",
            "sram_ifmap_reads", "sram_filter_reads", "sram_ofmap_writes", "sram_ofmap_reads",
            "sram_ifmap_bits", "sram_filter_bits", "sram_ofmap_write_bits", "sram_ofmap_read_bits",
            "dram_ifmap_reads", "dram_filter_reads", "dram_ofmap_writes",
            "dram_ifmap_bits", "dram_filter_bits", "dram_ofmap_bits", "pe_slots")
RATIOS = ("mapping_efficiency", "compute_utilization", "overall_utilization")
ENERGY_PARTS = ("mac", "sram_ifmap", "sram_filter", "sram_ofmap", "dram_ifmap", "dram_filter",
                "dram_ofmap", "leakage")


@dataclass(frozen=True)
class GemmResult:
    """What one engine computes for one GEMM instance (count = 1).

    pe_slots: R * C * (MACs per PE per cycle) * compute cycles, the MAC slots the array had
    while computing (for aggregating utilization). All counters are integers.
    """

    feasible: bool
    reason: str = ""
    folds: int = 0
    compute_cycles: int = 0
    stall_cycles: int = 0
    total_cycles: int = 0
    macs: int = 0
    sram_ifmap_reads: int = 0
    sram_filter_reads: int = 0
    sram_ofmap_writes: int = 0
    sram_ofmap_reads: int = 0
    sram_ifmap_bits: int = 0
    sram_filter_bits: int = 0
    sram_ofmap_write_bits: int = 0
    sram_ofmap_read_bits: int = 0
    dram_ifmap_reads: int = 0
    dram_filter_reads: int = 0
    dram_ofmap_writes: int = 0
    dram_ifmap_bits: int = 0
    dram_filter_bits: int = 0
    dram_ofmap_bits: int = 0
    pe_slots: int = 0
    mapping_efficiency: float = 0.0
    compute_utilization: float = 0.0
    overall_utilization: float = 0.0
    notes: tuple[str, ...] = ()

    def counters(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in COUNTERS}


def _bytes(bits: int) -> int:
    return -(-bits // 8)


@dataclass(frozen=True)
class LayerStats:
    """One layer (or the network total, ``layer == "total"``) on one profile.

    ``gemms``: the (M, N, K, count) GEMMs the layer runs as. ``energy``: pJ per part
    (``ENERGY_PARTS``); ``energy_pj`` their sum. ``latency_s`` = total_cycles / clock.
    An infeasible layer has ``feasible = False``, a ``reason`` and zero counters.
    """

    layer: str
    kind: str
    dataflow: str
    convention: str
    gemms: tuple[tuple[int, int, int, int], ...]
    feasible: bool
    reason: str
    folds: int
    compute_cycles: int
    stall_cycles: int
    total_cycles: int
    macs: int
    sram_ifmap_reads: int
    sram_filter_reads: int
    sram_ofmap_writes: int
    sram_ofmap_reads: int
    dram_ifmap_reads: int
    dram_filter_reads: int
    dram_ofmap_writes: int
    dram_ifmap_bytes: int
    dram_filter_bytes: int
    dram_ofmap_bytes: int
    mapping_efficiency: float
    compute_utilization: float
    overall_utilization: float
    energy: Mapping[str, float]
    energy_pj: float
    latency_s: float
    notes: tuple[str, ...] = ()
    # for exact aggregation; not reported
    sram_bits: tuple[int, int, int, int] = field(default=(0, 0, 0, 0), repr=False)
    pe_slots: int = field(default=0, repr=False)

    @property
    def dram_bytes(self) -> int:
        return self.dram_ifmap_bytes + self.dram_filter_bytes + self.dram_ofmap_bytes

    def to_dict(self) -> dict:
        """Flat JSON-ready dict: counters, ratios, ``energy_<part>_pj`` and notes."""
        out = {
            "layer": self.layer, "kind": self.kind, "dataflow": self.dataflow,
            "convention": self.convention,
            "gemms": [list(g) for g in self.gemms],
            "feasible": self.feasible, "reason": self.reason,
        }
        for k in ("folds", "compute_cycles", "stall_cycles", "total_cycles", "macs",
                  "sram_ifmap_reads", "sram_filter_reads", "sram_ofmap_writes",
                  "sram_ofmap_reads", "dram_ifmap_reads", "dram_filter_reads",
                  "dram_ofmap_writes", "dram_ifmap_bytes", "dram_filter_bytes",
                  "dram_ofmap_bytes"):
            out[k] = getattr(self, k)
        out["dram_bytes"] = self.dram_bytes
        for k in RATIOS:
            out[k] = getattr(self, k)
        out["energy_pj"] = self.energy_pj
        for part in ENERGY_PARTS:
            out[f"energy_{part}_pj"] = self.energy.get(part, 0.0)
        out["latency_s"] = self.latency_s
        out["notes"] = "; ".join(self.notes)
        return out


def _weighted(values, weights) -> float:
    tot = sum(weights)
    return sum(v * w for v, w in zip(values, weights)) / tot if tot else 0.0


def aggregate(name: str, kind: str, parts: list[LayerStats], clock_hz: float) -> LayerStats:
    """Sum layer stats (the network total); ratios weighted as their definitions imply."""
    ok = [p for p in parts if p.feasible]
    bad = [p.layer for p in parts if not p.feasible]
    first = parts[0]

    def tot(k):
        return sum(getattr(p, k) for p in ok)

    energy = {part: sum(p.energy.get(part, 0.0) for p in ok) for part in ENERGY_PARTS}
    total_cycles = tot("total_cycles")
    return LayerStats(
        layer=name, kind=kind, dataflow=first.dataflow, convention=first.convention,
        gemms=tuple(g for p in ok for g in p.gemms), feasible=not bad,
        reason=("infeasible layers: " + ", ".join(bad)) if bad else "",
        folds=tot("folds"), compute_cycles=tot("compute_cycles"),
        stall_cycles=tot("stall_cycles"), total_cycles=total_cycles, macs=tot("macs"),
        sram_ifmap_reads=tot("sram_ifmap_reads"), sram_filter_reads=tot("sram_filter_reads"),
        sram_ofmap_writes=tot("sram_ofmap_writes"), sram_ofmap_reads=tot("sram_ofmap_reads"),
        dram_ifmap_reads=tot("dram_ifmap_reads"), dram_filter_reads=tot("dram_filter_reads"),
        dram_ofmap_writes=tot("dram_ofmap_writes"), dram_ifmap_bytes=tot("dram_ifmap_bytes"),
        dram_filter_bytes=tot("dram_filter_bytes"), dram_ofmap_bytes=tot("dram_ofmap_bytes"),
        mapping_efficiency=_weighted([p.mapping_efficiency for p in ok], [p.folds for p in ok]),
        compute_utilization=_weighted([p.compute_utilization for p in ok],
                                      [p.compute_cycles for p in ok]),
        overall_utilization=_weighted([p.overall_utilization for p in ok],
                                      [p.total_cycles for p in ok]),
        energy=energy, energy_pj=sum(energy.values()), latency_s=total_cycles / clock_hz,
        notes=tuple(dict.fromkeys(n for p in ok for n in p.notes)),
        sram_bits=tuple(sum(p.sram_bits[i] for p in ok) for i in range(4)),
        pe_slots=tot("pe_slots"))


def scale_result(res: GemmResult, count: int) -> GemmResult:
    """``count`` independent instances of one GEMM run back to back (exact aggregate)."""
    if count == 1 or not res.feasible:
        return res
    return replace(res, **{k: getattr(res, k) * count for k in COUNTERS})


@dataclass(frozen=True)
class NetworkStats:
    """A workload on a profile: per-layer stats and their total."""

    workload: str
    profile: str
    dataflow: str
    convention: str
    engine: str
    layers: tuple[LayerStats, ...]
    total: LayerStats

    @property
    def feasible(self) -> bool:
        return self.total.feasible

    def layer(self, name: str) -> LayerStats:
        for s in self.layers:
            if s.layer == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict:
        """``{"workload", "profile", "dataflow", "convention", "engine", "layers", "total"}``."""
        return {"workload": self.workload, "profile": self.profile, "dataflow": self.dataflow,
                "convention": self.convention, "engine": self.engine,
                "layers": [s.to_dict() for s in self.layers], "total": self.total.to_dict()}

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=_json_default)

    def to_csv(self) -> str:
        """One row per layer and a last ``total`` row; list fields joined by spaces."""
        rows = [s.to_dict() for s in self.layers] + [self.total.to_dict()]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            row = dict(row)
            row["gemms"] = " ".join("x".join(map(str, g)) for g in row["gemms"])
            writer.writerow(row)
        return buf.getvalue()

    def write_json(self, path) -> Path:
        path = Path(path)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    def write_csv(self, path) -> Path:
        path = Path(path)
        path.write_text(self.to_csv(), encoding="utf-8")
        return path


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


__all__ = ["GemmResult", "LayerStats", "NetworkStats", "COUNTERS", "RATIOS", "ENERGY_PARTS",
           "aggregate", "scale_result"]
