"""Sweep throughput (issue 9): group ``sweep-resnet18``.

A 1,000-point what-if sweep of ResNet-18 (the zoo's torchvision layout) around the
edge-npu-32x32 profile: 5 array heights x 5 widths x 5 DRAM bandwidths x 2 dataflows x 4
ifmap SRAM sizes, every point run through the fast simulator engine and the roofline, on the
local executor with 2 worker processes, into a fresh SQLite database. One round (the sweep is
long); the timed call is the whole ``run_sweep``: spec expansion, worker start-up, every point
and every commit. ``extra_info``: ``points_per_s`` (the figure quoted), ``ops`` = points (so
"GOP/s" reads as giga points per second), ``bytes`` = the simulated DRAM bytes of all points,
``precision`` = "sim-int8" (no CPU peak applies), ``family`` = lowbit.
"""
from __future__ import annotations

import sqlite3

from lowbit.sweep import run_sweep

GROUP = "sweep-resnet18"
POINTS = 1000
WORKERS = 2
SPEC = """
name = "bench: ResNet-18 on edge-npu-32x32 variants"
profile = "edge-npu-32x32"
workloads = ["resnet18"]
precisions = ["int8"]
[grid]
rows = [16, 24, 32, 48, 64]
cols = [16, 24, 32, 48, 64]
dram.bandwidth = [2.0, 4.25, 8.5, 17.0, 34.0]
dataflow = ["os", "ws"]
ifmap_sram_bytes = [65536, 131072, 262144, 524288]
"""


def test_sweep_resnet18(benchmark, tmp_path):
    spec = tmp_path / "sweep.toml"
    spec.write_text(SPEC)
    db = tmp_path / "sweep.sqlite"
    summaries = []

    def call():
        summaries.append(run_sweep(spec, db, executor="local", workers=WORKERS))

    benchmark.group = GROUP
    benchmark.pedantic(call, rounds=1, iterations=1, warmup_rounds=0)
    summary = summaries[-1]
    assert (summary.total, summary.new, summary.skipped) == (POINTS, POINTS, 0)
    with sqlite3.connect(db) as conn:
        dram, layers = conn.execute("SELECT SUM(sim_dram_bytes), (SELECT COUNT(*) FROM layers) "
                                    "FROM points").fetchone()
    seconds = benchmark.stats.stats.median
    benchmark.extra_info.update({
        "impl": f"lowbit-sweep[local x{WORKERS}]", "family": "lowbit", "precision": "sim-int8",
        "ops": POINTS, "ops_unit": "sweep points", "bytes": max(dram or 0, 1), "pass": 0,
        "points": POINTS, "workers": WORKERS, "layers_rows": layers,
        "infeasible": summary.infeasible, "points_per_s": POINTS / seconds})
