"""lowbit.sweep: hardware what-if sweeps over the simulator and the roofline (issue 9).

A spec (TOML) names a base hardware profile, overrides of its fields (a grid and / or a list),
workloads and precisions; ``run_sweep`` evaluates every point (the cycle-level simulator and
the roofline on the same profile, workload, precision and dataflow) on a local process pool or
a Dask cluster and commits each point to SQLite as it finishes, so an interrupted sweep
resumes where it stopped. The results export to CSV and to Pareto plots (latency vs energy vs
PE count and SRAM bytes).

    >>> from lowbit.sweep import run_sweep, SweepDB, points_csv
    >>> summary = run_sweep("sweep/examples/edge-npu.toml", "sweeps.sqlite", workers=2)
    >>> with SweepDB("sweeps.sqlite") as db:
    ...     text = points_csv(db.points(summary.sweep_id))

Parts: ``spec`` (the TOML spec), ``overrides`` (overridable profile fields), ``points`` (points
and their hashes), ``evaluate`` (one point, run by workers), ``executors``, ``db`` (schema and
commits), ``columns``, ``runner`` (``run_sweep``), ``pareto``, ``export`` (CSV), ``plots``
(imported on use: matplotlib). SCHEMA.md describes the spec and the database. Depends on
``lowbit.simulator`` and ``lowbit.roofline`` only (and dask, lazily, for the Dask executor).
"""
from __future__ import annotations

import importlib
from pathlib import Path

from .db import DatabaseError, SweepDB
from .evaluate import evaluate_point
from .executors import make_executor, parse_executor
from .export import layers_csv, points_csv
from .pareto import OBJECTIVES, pareto_flags, pareto_groups, pareto_mask, plot_data
from .points import Point, canonical_json, expand, point_hash, point_key
from .runner import SweepSummary, run_sweep
from .spec import SpecError, SweepSpec, load_spec, spec_from_mapping

EXAMPLES_DIR = Path(__file__).resolve().with_name("examples")

__all__ = ["run_sweep", "SweepSummary", "load_spec", "spec_from_mapping", "SweepSpec",
           "SpecError", "expand", "Point", "point_key", "point_hash", "canonical_json",
           "evaluate_point", "make_executor", "parse_executor", "SweepDB", "DatabaseError",
           "points_csv", "layers_csv", "OBJECTIVES", "pareto_mask", "pareto_groups",
           "pareto_flags", "plot_data", "plot_pareto", "plot_group", "EXAMPLES_DIR"]


def __getattr__(name: str):
    if name in ("plot_pareto", "plot_group"):
        value = getattr(importlib.import_module(".plots", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
