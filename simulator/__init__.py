"""lowbit.simulator: cycle-level systolic-array accelerator simulator (issue 4).

Parts, kept apart (Timeloop style): ``hardware`` (Profile records), ``workload`` (layers),
``compute`` (folds per dataflow and the demand they place on each buffer), ``memory``
(double-buffered SRAM, DRAM channels, stalls), ``energy``, ``stats`` (report records), two
engines (``engine``: fast, per fold / DRAM block; ``engine_ref``: per cycle) and ``api``.

    >>> from lowbit.simulator import simulate
    >>> stats = simulate("resnet18", "edge-npu-32x32", dataflow="os")
    >>> print(stats.total.total_cycles, stats.total.energy_pj)

``convention="scalesim"`` reproduces SCALE-Sim v3.0.0; CONVENTIONS.md lists every difference.
The file readers (``load_profile``, ``load_scalesim_config``, ``load_scalesim_topology``,
``load_workload`` / ``load_workload_json`` / ``save_workload_json`` for lowbit's JSON workload
files, see ``workload_io``) and the network ``zoo`` are imported on first use.
"""
from __future__ import annotations

import importlib

from .api import simulate
from .hardware import DramSpec, EnergyTable, Profile, ProfileError
from .stats import GemmResult, LayerStats, NetworkStats
from .workload import (BatchedMatmul, Conv2d, Gemm, GemmShape, Layer, Sparsity, Workload,
                       WorkloadError)

_LAZY = {
    "load_profile": ("profile_io", "load_profile"),
    "profile_names": ("profile_io", "profile_names"),
    "load_scalesim_config": ("scalesim_io", "load_scalesim_config"),
    "load_scalesim_topology": ("scalesim_io", "load_scalesim_topology"),
    "load_workload": ("workload_io", "load_workload"),
    "load_workload_json": ("workload_io", "load_workload_json"),
    "save_workload_json": ("workload_io", "save_workload_json"),
    "zoo": ("zoo", None),
}

__all__ = ["simulate", "load_profile", "profile_names", "load_scalesim_config",
           "load_scalesim_topology", "load_workload", "load_workload_json",
           "save_workload_json", "zoo", "LayerStats", "NetworkStats", "GemmResult",
           "Profile", "DramSpec", "EnergyTable", "ProfileError", "Workload", "Layer", "Gemm",
           "Conv2d", "BatchedMatmul", "GemmShape", "Sparsity", "WorkloadError"]


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        mod = importlib.import_module(f".{module}", __name__)
        value = mod if attr is None else getattr(mod, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
