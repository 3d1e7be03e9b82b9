"""The columns of the results database: names, SQL types and meanings, in one place.

``points``: one row per point (labels from the spec, the hardware it ran on, totals);
``layers``: one row per point and layer. ``sim_`` columns come from the cycle-level simulator
(``lowbit.simulator.simulate``), ``rl_`` columns from the roofline (``lowbit.roofline.analyze``)
on the same profile, workload, precision and dataflow. Units: cycles, bytes, seconds,
picojoules (simulator) and joules (roofline), fractions in [0, 1].
"""
from __future__ import annotations

# Written by the parent from the spec (lowbit.sweep.points.Point.labels).
POINT_LABELS = (
    ("point_hash", "TEXT NOT NULL PRIMARY KEY", "SHA-256 of point_json"),
    ("point_json", "TEXT NOT NULL", "the canonical JSON the hash is taken of"),
    ("profile", "TEXT NOT NULL", "base profile name"),
    ("profile_hash", "TEXT NOT NULL", "digest of the base profile (objects table)"),
    ("overrides", "TEXT NOT NULL", "the point's overrides, canonical JSON"),
    ("workload", "TEXT NOT NULL", "workload name"),
    ("workload_hash", "TEXT NOT NULL", "digest of the workload (objects table)"),
    ("precision", "TEXT NOT NULL", "precision name, or per-layer"),
    ("dataflow", "TEXT NOT NULL", "os, ws or is"),
    ("weight_sparsity", "TEXT NOT NULL", "as-is, dense or 2:4"),
    ("convention", "TEXT NOT NULL", "simulator convention"),
    ("rows", "INTEGER", "array rows"),
    ("cols", "INTEGER", "array columns"),
    ("pe_count", "INTEGER", "rows * cols (silicon-cost proxy)"),
    ("sram_bytes", "INTEGER", "ifmap + filter + ofmap SRAM bytes (silicon-cost proxy)"),
    ("ifmap_sram_bytes", "INTEGER", ""),
    ("filter_sram_bytes", "INTEGER", ""),
    ("ofmap_sram_bytes", "INTEGER", ""),
    ("clock_hz", "REAL", ""),
    ("dram_bandwidth", "REAL", "bytes per cycle"),
    ("dram_latency", "INTEGER", "cycles"),
    ("sparsity_support", "TEXT", "the profile's sparsity: none or 2:4"),
    ("macs_per_pe", "TEXT", "bits:MACs per PE per cycle, widest first"),
)
# Computed by the worker (lowbit.sweep.evaluate.evaluate_point). The simulator's totals are
# NULL for an infeasible point (its layers rows say which layers failed and why); the
# roofline's only when the profile itself is invalid (there are no layers rows then).
POINT_RESULTS = (
    ("feasible", "INTEGER NOT NULL", "1 if the profile is valid and every layer runs"),
    ("reason", "TEXT NOT NULL", "why not, when infeasible"),
    ("sim_total_cycles", "INTEGER", ""),
    ("sim_compute_cycles", "INTEGER", ""),
    ("sim_stall_cycles", "INTEGER", ""),
    ("sim_macs", "INTEGER", ""),
    ("sim_dram_bytes", "INTEGER", ""),
    ("sim_latency_s", "REAL", "total cycles / clock"),
    ("sim_energy_pj", "REAL", ""),
    ("sim_compute_utilization", "REAL", ""),
    ("sim_mapping_efficiency", "REAL", ""),
    ("rl_latency_s", "REAL", "roofline latency"),
    ("rl_energy_j", "REAL", "roofline energy"),
    ("rl_utilization", "REAL", "achieved ops/s over the ceiling"),
    ("rl_memory_bound_layers", "INTEGER", "layers bound by a memory roof"),
    ("seconds", "REAL NOT NULL", "wall time of the evaluation in the worker"),
    ("lowbit_version", "TEXT NOT NULL", "lowbit version of the worker"),
)
POINT_COMMIT = (("finished_at", "REAL NOT NULL", "unix time of the commit"),)
POINT_COLUMNS = POINT_LABELS + POINT_RESULTS + POINT_COMMIT

LAYER_COLUMNS = (
    ("point_hash", "TEXT NOT NULL REFERENCES points(point_hash)", ""),
    ("idx", "INTEGER NOT NULL", "layer position in the workload"),
    ("layer", "TEXT NOT NULL", ""),
    ("kind", "TEXT NOT NULL", "gemm, conv2d or batchedmatmul"),
    ("feasible", "INTEGER NOT NULL", ""),
    ("reason", "TEXT NOT NULL", ""),
    ("sim_total_cycles", "INTEGER", ""),
    ("sim_compute_cycles", "INTEGER", ""),
    ("sim_stall_cycles", "INTEGER", ""),
    ("sim_macs", "INTEGER", ""),
    ("sim_dram_bytes", "INTEGER", ""),
    ("sim_latency_s", "REAL", ""),
    ("sim_energy_pj", "REAL", ""),
    ("sim_compute_utilization", "REAL", ""),
    ("sim_mapping_efficiency", "REAL", ""),
    ("sim_overall_utilization", "REAL", ""),
    ("rl_bound", "TEXT", "compute or memory:<level>"),
    ("rl_precision", "TEXT", "the ceiling the layer runs at"),
    ("rl_latency_s", "REAL", ""),
    ("rl_energy_j", "REAL", ""),
    ("rl_ops", "REAL", ""),
    ("rl_dram_bytes", "REAL", ""),
    ("rl_intensity", "REAL", "ops per DRAM byte"),
    ("rl_utilization", "REAL", ""),
    ("rl_efficiency", "REAL", "U"),
    ("rl_efficiency_source", "TEXT", "simulator, measured, default"),
)


def names(columns) -> tuple[str, ...]:
    return tuple(c[0] for c in columns)
