"""Energy model: a breakdown in picojoules from the profile's ``EnergyTable``.

* MACs: effectual MACs (2:4-skipped ones excluded) x ``mac_pj`` at the layer's precision,
  max(a_bits, w_bits), taken at the nearest listed precision that is at least as wide (the
  widest listed if none is).
* SRAM: every bit read or written (``sram_*_bits``: operand words at their precision,
  partial sums at 32 bits) x the pJ per byte of a buffer of that operand's size
  (``EnergyTable.sram_pj_per_byte``: log-log interpolation over ``sram_points``).
* DRAM: bytes moved per operand x ``dram_pj_per_byte``.
* Leakage: total cycles (stalls included) x ``leakage_pj_per_cycle``.

The defaults a profile gets are Horowitz's 45 nm figures (ISSCC 2014, "Computing's energy
problem"), see ``profile_io.HOROWITZ_45NM``; a profile's [energy] table overrides them.
"""
from __future__ import annotations

from .compute import GemmProblem
from .hardware import EnergyTable, Profile
from .stats import ENERGY_PARTS, GemmResult


def mac_pj(table: EnergyTable, bits: int) -> float:
    """pJ per MAC for operands of ``bits`` (nearest wider listed precision)."""
    wider = [b for b in table.mac_pj if b >= bits]
    return table.mac_pj[min(wider)] if wider else table.mac_pj[max(table.mac_pj)]


def energy_breakdown(problem: GemmProblem, res: GemmResult, profile: Profile) -> dict[str, float]:
    """pJ per part (``stats.ENERGY_PARTS``) of one GEMM result (any count)."""
    t = profile.energy
    if not res.feasible:
        return {p: 0.0 for p in ENERGY_PARTS}
    sram = {op: t.sram_pj_per_byte(profile.sram_bytes(op)) for op in ("ifmap", "filter", "ofmap")}
    return {
        "mac": res.macs * mac_pj(t, max(problem.a_bits, problem.w_bits)),
        "sram_ifmap": res.sram_ifmap_bits / 8 * sram["ifmap"],
        "sram_filter": res.sram_filter_bits / 8 * sram["filter"],
        "sram_ofmap": (res.sram_ofmap_write_bits + res.sram_ofmap_read_bits) / 8 * sram["ofmap"],
        "dram_ifmap": res.dram_ifmap_bits / 8 * t.dram_pj_per_byte,
        "dram_filter": res.dram_filter_bits / 8 * t.dram_pj_per_byte,
        "dram_ofmap": res.dram_ofmap_bits / 8 * t.dram_pj_per_byte,
        "leakage": res.total_cycles * t.leakage_pj_per_cycle,
    }


__all__ = ["mac_pj", "energy_breakdown"]
