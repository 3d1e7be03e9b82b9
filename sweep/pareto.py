"""Pareto sets of a sweep: latency, energy and silicon cost, all minimized.

Objectives (``OBJECTIVES``): the simulator's latency and energy, and two silicon-cost proxies,
the PE count (rows x cols) and the on-chip SRAM bytes (ifmap + filter + ofmap). A point is in
the Pareto set when no other point of its group is at least as good in every objective and
better in one (points with equal objective vectors are all kept). Points are compared within a
group of the same workload (by content), precision, weight sparsity and simulator convention:
the hardware is what varies. Infeasible points belong to no Pareto set.

Everything here reads database rows; nothing times or simulates anything.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

__all__ = ["OBJECTIVES", "GROUP_BY", "ParetoGroup", "pareto_mask", "pareto_groups",
           "pareto_flags", "plot_data"]

OBJECTIVES = ("sim_latency_s", "sim_energy_pj", "pe_count", "sram_bytes")
GROUP_BY = ("workload_hash", "precision", "weight_sparsity", "convention")


def pareto_mask(values) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` [n points, k objectives], all
    minimized: row i is kept unless some row j has v[j] <= v[i] everywhere and < somewhere.

    >>> pareto_mask([[1, 2], [2, 1], [2, 2], [1, 2]]).tolist()
    [True, True, False, True]
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"values: must be 2-D [points, objectives], got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("values: must be finite")
    keep = np.ones(len(v), dtype=bool)
    for i in range(len(v)):
        dominated = (v <= v[i]).all(axis=1) & (v < v[i]).any(axis=1)
        keep[i] = not dominated.any()
    return keep


@dataclass(frozen=True)
class ParetoGroup:
    """The feasible points of one (workload, precision, weight sparsity, convention) group,
    sorted by the objectives (then hash), with their Pareto mask; ``infeasible`` counts the
    group's infeasible points."""

    workload: str
    workload_hash: str
    precision: str
    weight_sparsity: str
    convention: str
    rows: tuple[Mapping, ...]
    pareto: np.ndarray
    infeasible: int

    @property
    def title(self) -> str:
        extra = "".join(f", {x}" for x, default in ((self.weight_sparsity, "as-is"),
                                                   (self.convention, "lowbit")) if x != default)
        return f"{self.workload}, {self.precision}{extra}"


def pareto_groups(rows: Sequence[Mapping]) -> list[ParetoGroup]:
    """Group point rows (``SweepDB.points()``) and mark each group's Pareto set."""
    groups: dict[tuple, list] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in GROUP_BY), []).append(row)
    out = []
    for key, members in groups.items():
        ok = sorted((r for r in members if r["feasible"]),
                    key=lambda r: (*(r[o] for o in OBJECTIVES), r["point_hash"]))
        mask = (pareto_mask([[r[o] for o in OBJECTIVES] for r in ok]) if ok
                else np.zeros(0, dtype=bool))
        first = members[0]
        out.append(ParetoGroup(first["workload"], first["workload_hash"], first["precision"],
                               first["weight_sparsity"], first["convention"], tuple(ok), mask,
                               len(members) - len(ok)))
    return out


def pareto_flags(rows: Sequence[Mapping]) -> dict[str, bool]:
    """point_hash -> in its group's Pareto set (feasible points only)."""
    return {r["point_hash"]: bool(m) for g in pareto_groups(rows)
            for r, m in zip(g.rows, g.pareto)}


def _label(row: Mapping) -> str:
    overrides = json.loads(row["overrides"])
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in overrides.items()) or "base"


def plot_data(group: ParetoGroup) -> dict:
    """What a Pareto plot of ``group`` draws, as plain lists (points in the group's order):
    latency (ms), energy (mJ), PE count, SRAM bytes, Pareto flag, point hash and a label of
    the point's overrides; plus the title and the count of infeasible points."""
    rows = group.rows
    return {
        "title": group.title,
        "latency_ms": [r["sim_latency_s"] * 1e3 for r in rows],
        "energy_mj": [r["sim_energy_pj"] * 1e-9 for r in rows],
        "pe_count": [r["pe_count"] for r in rows],
        "sram_bytes": [r["sram_bytes"] for r in rows],
        "pareto": [bool(m) for m in group.pareto],
        "point_hash": [r["point_hash"] for r in rows],
        "label": [_label(r) for r in rows],
        "infeasible": group.infeasible,
    }
