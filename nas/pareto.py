"""Multi-objective helpers: objectives, Pareto fronts, non-dominated sorting, crowding, and
the hypervolume indicator. Every function takes objective vectors to *minimize*.

* The search objectives: "accuracy" (maximized: its vector entry is -quality), "latency"
  (seconds) and "energy" (pJ), minimized.
* ``pareto_mask`` is ``lowbit.sweep.pareto.pareto_mask`` (imported, not copied).
* ``nondominated_sort`` and ``crowding_distance``: NSGA-II's ranking (Deb, Pratap, Agarwal,
  Meyarivan, "A fast and elitist multiobjective genetic algorithm: NSGA-II", IEEE TEC 2002),
  used by the differential evolution strategy to truncate its population.
* ``hypervolume``: the Lebesgue measure of the region dominated by the points and bounded by
  a reference point (Zitzler & Thiele 1998), exact, by slicing along the last objective
  (Hypervolume by Slicing Objectives, While et al., IEEE TEC 2006); a 2-D base case sweeps
  the points sorted by the first objective. Points not strictly better than the reference in
  every objective add nothing.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from lowbit.sweep.pareto import pareto_mask

__all__ = ["OBJECTIVES", "parse_objectives", "objective_vector", "pareto_mask",
           "nondominated_sort", "crowding_distance", "hypervolume", "normalize"]

OBJECTIVES = ("accuracy", "latency", "energy")
_COLUMN = {"accuracy": "quality", "latency": "latency_s", "energy": "energy_pj"}


def parse_objectives(objectives: str | Sequence[str]) -> tuple[str, ...]:
    """("accuracy", "latency"[, "energy"]) from "accuracy,latency[,energy]" or a sequence."""
    names = tuple(o.strip() for o in (objectives.split(",") if isinstance(objectives, str)
                                      else objectives))
    if names[:2] != ("accuracy", "latency") or len(names) > 3 or (
            len(names) == 3 and names[2] != "energy"):
        raise ValueError(f"objectives: must be accuracy,latency or accuracy,latency,energy; "
                         f"got {','.join(names)!r}")
    return names


def objective_vector(row: Mapping, objectives: Sequence[str]) -> tuple[float, ...] | None:
    """The minimized objective vector of an evaluation row (``quality``, ``latency_s``,
    ``energy_pj``, ``feasible``), None for an infeasible one."""
    if not row["feasible"]:
        return None
    v = tuple(float(row[_COLUMN[o]]) for o in objectives)
    return (-v[0],) + v[1:]


def nondominated_sort(values) -> list[np.ndarray]:
    """Fronts of ``values`` [n, k] (minimized): indices of rank 0 (non-dominated), rank 1 (non-
    dominated once rank 0 is removed), ... each in increasing index order.

    >>> [f.tolist() for f in nondominated_sort([[1, 2], [2, 1], [2, 2], [3, 3]])]
    [[0, 1], [2], [3]]
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"values: must be 2-D [points, objectives], got shape {v.shape}")
    le = (v[:, None, :] <= v[None, :, :]).all(axis=2)
    lt = (v[:, None, :] < v[None, :, :]).any(axis=2)
    dominates = le & lt                       # [i, j]: i dominates j
    count = dominates.sum(axis=0)             # how many points dominate j
    left = np.ones(len(v), dtype=bool)
    fronts = []
    while left.any():
        front = np.flatnonzero(left & (count == 0))
        fronts.append(front)
        left[front] = False
        count = count - dominates[front].sum(axis=0)
    return fronts


def crowding_distance(values) -> np.ndarray:
    """NSGA-II crowding distance of each point of one front [n, k]: per objective, the gap
    between its two neighbours over the objective's range, summed; extremes get infinity."""
    v = np.asarray(values, dtype=np.float64)
    n, k = v.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(k):
        order = np.argsort(v[:, j], kind="stable")
        span = v[order[-1], j] - v[order[0], j]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (v[order[2:], j] - v[order[:-2], j]) / span
    return dist


def _hv(p: np.ndarray, ref: np.ndarray) -> float:
    if len(p) == 0:
        return 0.0
    if p.shape[1] == 1:
        return float(ref[0] - p[:, 0].min())
    if p.shape[1] == 2:
        p = p[np.lexsort((p[:, 1], p[:, 0]))]
        volume, floor = 0.0, ref[1]
        for x, y in p:
            if y < floor:
                volume += (ref[0] - x) * (floor - y)
                floor = y
        return float(volume)
    p = p[np.argsort(p[:, -1], kind="stable")]
    volume = 0.0
    for i in range(len(p)):
        top = p[i + 1, -1] if i + 1 < len(p) else ref[-1]
        if top > p[i, -1]:
            volume += (top - p[i, -1]) * _hv(p[:i + 1, :-1], ref[:-1])
    return float(volume)


def hypervolume(points, reference) -> float:
    """Hypervolume of ``points`` [n, k] (minimized) with respect to ``reference`` [k].

    >>> hypervolume([[1, 2], [2, 1]], [3, 3])
    3.0
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, len(reference))
    ref = np.asarray(reference, dtype=np.float64)
    if not np.isfinite(p).all() or not np.isfinite(ref).all():
        raise ValueError("points, reference: must be finite")
    p = p[(p < ref).all(axis=1)]
    if len(p):
        p = p[pareto_mask(p)]
    return _hv(p, ref)


def normalize(values, ideal, nadir) -> np.ndarray:
    """(values - ideal) / (nadir - ideal) per objective (a zero range divides by 1)."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = np.asarray(ideal, dtype=np.float64), np.asarray(nadir, dtype=np.float64)
    span = np.where(hi > lo, hi - lo, 1.0)
    return (v - lo) / span
