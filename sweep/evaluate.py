"""One point, evaluated: the simulator and the roofline on its profile, workload and precision.

``evaluate_point`` runs in a worker (a local process, a Dask worker or the caller itself): it
takes the plain-data task built by ``lowbit.sweep.points.expand`` and returns plain data, the
``points`` result columns and the ``layers`` rows (``lowbit.sweep.columns``). It never touches
the database. A profile the overrides made invalid, or a layer the array cannot run, is a
result with a reason; other errors propagate.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Mapping

import lowbit
from lowbit.roofline import analyze, parse_precision
from lowbit.simulator.api import simulate
from lowbit.simulator.hardware import ProfileError
from lowbit.simulator.profile_io import profile_from_mapping
from lowbit.simulator.workload import BatchedMatmul, Sparsity, Workload
from lowbit.simulator.workload_io import workload_from_dict

from .columns import LAYER_COLUMNS, POINT_RESULTS, names
from .spec import PER_LAYER

__all__ = ["evaluate_point", "apply_precision", "apply_weight_sparsity"]

_SPARSITY = {"dense": Sparsity(), "2:4": Sparsity("2:4", 0.5)}


def apply_precision(workload: Workload, precision: str) -> Workload:
    """Every layer at ``precision``'s operand widths (``per-layer``: unchanged).

    Weight layers take (a_bits, w_bits); activation x activation matmuls take a_bits for
    both operands, as the roofline treats them.
    """
    if precision == PER_LAYER:
        return workload
    prec = parse_precision(precision)
    layers = tuple(dataclasses.replace(
        layer, a_bits=prec.a_bits,
        w_bits=prec.a_bits if isinstance(layer, BatchedMatmul) else prec.w_bits)
        for layer in workload.layers)
    return dataclasses.replace(workload, layers=layers)


def apply_weight_sparsity(workload: Workload, sparsity: str) -> Workload:
    """Every weight layer (not activation matmuls) made ``dense`` or ``2:4``; ``as-is`` keeps."""
    if sparsity == "as-is":
        return workload
    target = _SPARSITY[sparsity]
    layers = tuple(layer if isinstance(layer, BatchedMatmul)
                   else dataclasses.replace(layer, sparsity=target) for layer in workload.layers)
    return dataclasses.replace(workload, layers=layers)


def _empty(cols) -> dict:
    return {c: None for c in names(cols)}


def evaluate_point(task: Mapping[str, Any]) -> dict:
    """Simulate and roofline one point; returns ``{"point_hash", "point": {...}, "layers": [...]}``.

    ``point`` holds the ``columns.POINT_RESULTS`` columns, ``layers`` one dict of
    ``columns.LAYER_COLUMNS`` per layer (none when the profile itself is invalid).
    """
    t0 = time.perf_counter()
    point = _empty(POINT_RESULTS)
    point.update(feasible=0, reason="", lowbit_version=lowbit.__version__)
    layers: list[dict] = []
    try:
        profile = profile_from_mapping(task["profile"])
    except ProfileError as exc:
        point["reason"] = f"invalid profile: {exc}"
    else:
        layers = _run(task, profile, point)
    point["seconds"] = time.perf_counter() - t0
    return {"point_hash": task["point_hash"], "point": point, "layers": layers}


def _run(task, profile, point: dict) -> list[dict]:
    workload = workload_from_dict(task["workload"])
    workload = apply_weight_sparsity(apply_precision(workload, task["precision"]),
                                     task["weight_sparsity"])
    dataflow = task["dataflow"]
    stats = simulate(workload, profile, dataflow=dataflow, convention=task["convention"])
    precision = None if task["precision"] == PER_LAYER else task["precision"]
    # The roofline's U is this simulation's (lowbit convention): hand it over rather than
    # let analyze simulate the same layers again, about half of a point's time.
    simulated = None if task["convention"] != "lowbit" else {
        s.layer: s.compute_utilization for s in stats.layers if s.feasible}
    roof = analyze(workload, profile, precision=precision, dataflow=dataflow,
                   simulated=simulated)
    total = stats.total
    point["feasible"] = int(total.feasible)
    point["reason"] = total.reason
    if total.feasible:
        point.update(
            sim_total_cycles=total.total_cycles, sim_compute_cycles=total.compute_cycles,
            sim_stall_cycles=total.stall_cycles, sim_macs=total.macs,
            sim_dram_bytes=total.dram_bytes, sim_latency_s=total.latency_s,
            sim_energy_pj=total.energy_pj, sim_compute_utilization=total.compute_utilization,
            sim_mapping_efficiency=total.mapping_efficiency)
    point.update(rl_latency_s=roof.total.latency_s, rl_energy_j=roof.total.energy_j,
                 rl_utilization=roof.total.utilization,
                 rl_memory_bound_layers=len(roof.total.memory_bound_layers))
    rows = []
    for idx, s in enumerate(stats.layers):
        row = _empty(LAYER_COLUMNS)
        row.update(point_hash=task["point_hash"], idx=idx, layer=s.layer, kind=s.kind,
                   feasible=int(s.feasible), reason=s.reason)
        if s.feasible:
            row.update(
                sim_total_cycles=s.total_cycles, sim_compute_cycles=s.compute_cycles,
                sim_stall_cycles=s.stall_cycles, sim_macs=s.macs, sim_dram_bytes=s.dram_bytes,
                sim_latency_s=s.latency_s, sim_energy_pj=s.energy_pj,
                sim_compute_utilization=s.compute_utilization,
                sim_mapping_efficiency=s.mapping_efficiency,
                sim_overall_utilization=s.overall_utilization)
        r = roof.layers[idx]
        row.update(rl_bound=r.bound, rl_precision=r.precision, rl_latency_s=r.latency_s,
                   rl_energy_j=r.energy_j, rl_ops=r.ops, rl_dram_bytes=r.bytes,
                   rl_intensity=r.intensity, rl_utilization=r.utilization,
                   rl_efficiency=r.efficiency, rl_efficiency_source=r.efficiency_source)
        rows.append(row)
    return rows
