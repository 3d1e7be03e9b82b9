"""The fast engine: the same numbers as ``engine_ref`` per fold / per DRAM block.

Fold geometry, SRAM counts and efficiencies are closed forms over NumPy arrays of folds
(``compute``); DRAM blocks are built with NumPy (``memory.plan_memory``) and timed by an
event loop over blocks (``memory.run_events``), never over cycles or addresses.
"""
from __future__ import annotations

from .compute import (GemmProblem, efficiency, fold_plan, segment_length, sram_counts)
from .hardware import Profile
from .memory import feasibility, half_bits, plan_memory, psum_reason, run_events
from .stats import GemmResult


def plan_for(problem: GemmProblem, profile: Profile, dataflow: str, convention: str):
    """The fold plan, or (None, reason) when the mapping cannot run."""
    seg = segment_length(problem, profile.rows, profile.cols, dataflow, convention,
                         half_bits(profile, "ofmap"))
    if seg == 0:
        width = min(profile.cols, problem.n if dataflow == "ws" else problem.m)
        return None, psum_reason(half_bits(profile, "ofmap"), width)
    return fold_plan(problem, profile.rows, profile.cols, dataflow, convention, seg), None


def simulate_gemm(problem: GemmProblem, profile: Profile, dataflow: str,
                  convention: str = "lowbit") -> GemmResult:
    """One GEMM instance on ``profile`` (see ``compute`` and ``memory`` for the model)."""
    plan, reason = plan_for(problem, profile, dataflow, convention)
    if plan is None:
        return GemmResult(False, reason, notes=problem.notes)
    reason = feasibility(plan, problem, profile)
    if reason:
        return GemmResult(False, reason, notes=problem.notes)
    sram = sram_counts(plan, problem)
    eff = efficiency(plan, problem)
    mem = run_events(plan_memory(plan, problem, profile))
    cycles = plan.cycles
    if convention == "scalesim":
        compute = cycles - 1                 # SCALE-Sim's Total Cycles is a 0-based index
        stall = mem.stall_cycles
    else:
        compute, stall = cycles, mem.stall_cycles
    total = compute + stall
    p = problem.red.macs_per_pe
    slots = profile.rows * profile.cols * p
    return GemmResult(
        True, "", folds=plan.folds, compute_cycles=compute, stall_cycles=stall,
        total_cycles=total, macs=problem.effectual_macs,
        sram_ifmap_reads=sram.ifmap_reads, sram_filter_reads=sram.filter_reads,
        sram_ofmap_writes=sram.ofmap_writes, sram_ofmap_reads=sram.ofmap_reads,
        sram_ifmap_bits=sram.ifmap_bits, sram_filter_bits=sram.filter_bits,
        sram_ofmap_write_bits=sram.ofmap_write_bits, sram_ofmap_read_bits=sram.ofmap_read_bits,
        dram_ifmap_reads=mem.dram_reads["ifmap"], dram_filter_reads=mem.dram_reads["filter"],
        dram_ofmap_writes=mem.dram_writes, dram_ifmap_bits=mem.dram_read_bits["ifmap"],
        dram_filter_bits=mem.dram_read_bits["filter"], dram_ofmap_bits=mem.dram_write_bits,
        pe_slots=slots * compute, mapping_efficiency=eff.mapping_efficiency,
        compute_utilization=eff.compute_utilization,
        overall_utilization=problem.effectual_macs / (slots * total) if total else 0.0,
        notes=problem.notes)


__all__ = ["simulate_gemm", "plan_for"]
