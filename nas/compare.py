"""Strategies compared at equal budget by the hypervolume of their Pareto fronts.

Each (strategy, seed) search runs with the same budget, space and evaluation settings (one
database, so candidates two searches share are evaluated once). The objective vectors
(minimized: -quality, latency[, energy]) of every candidate of every compared search fix
the normalization: per objective, ideal = the minimum and nadir = the maximum over all of
them; each search's front is normalized to [0, 1] by (v - ideal) / (nadir - ideal) and its
hypervolume taken against the reference point (1.1, ..., 1.1), so a front reaching the
union's extremes still adds volume. Higher is better.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .db import NASDB
from .evaluate import EvalSettings
from .pareto import hypervolume, normalize, objective_vector, parse_objectives
from .search import run_search
from .strategies import DEFAULT_POPULATION

__all__ = ["compare_strategies", "Comparison", "REFERENCE"]

REFERENCE = 1.1  # per normalized objective


@dataclass(frozen=True)
class Comparison:
    """Hypervolume per (strategy, seed), the means, the normalization bounds, timings."""

    budget: int
    objectives: tuple[str, ...]
    hypervolume: dict[str, dict[int, float]]
    ideal: tuple[float, ...]
    nadir: tuple[float, ...]
    new_evaluations: int
    eval_seconds: float

    def mean(self, strategy: str) -> float:
        return float(np.mean(list(self.hypervolume[strategy].values())))

    def table(self) -> str:
        seeds = sorted({s for per in self.hypervolume.values() for s in per})
        head = f"{'strategy':<10}" + "".join(f"{f'seed {s}':>10}" for s in seeds) + f"{'mean':>10}"
        lines = [head, "-" * len(head)]
        for name, per in self.hypervolume.items():
            lines.append(f"{name:<10}" + "".join(f"{per[s]:>10.4f}" for s in seeds)
                         + f"{self.mean(name):>10.4f}")
        return "\n".join(lines)


def compare_strategies(strategies: Sequence[str] = ("random", "evolution"),
                       seeds: Sequence[int] = (0, 1, 2), budget: int = 60, *,
                       space="digits-mbv2", settings: EvalSettings | None = None,
                       db="nas-compare.sqlite", objectives="accuracy,latency",
                       population: int = DEFAULT_POPULATION, progress=None) -> Comparison:
    """Run every (strategy, seed) search (resuming from ``db``) and compare hypervolumes
    (see the module doc). ``progress(strategy, seed, summary)`` after each search."""
    objectives = parse_objectives(objectives)
    vectors: dict[tuple[str, int], np.ndarray] = {}
    new, seconds = 0, 0.0
    for name in strategies:
        for seed in seeds:
            s = run_search(space, name, budget, objectives=objectives, settings=settings,
                           db=db, seed=seed, population=population)
            new += s.new
            seconds += s.eval_seconds
            with NASDB(db) as store:
                rows = store.trials(s.search_id)
            vs = [objective_vector(r, objectives) for r in rows]
            vectors[(name, seed)] = np.array([v for v in vs if v is not None])
            if progress is not None:
                progress(name, seed, s)
    every = np.vstack(list(vectors.values()))
    ideal, nadir = every.min(axis=0), every.max(axis=0)
    ref = [REFERENCE] * len(objectives)
    hv = {name: {seed: hypervolume(normalize(vectors[(name, seed)], ideal, nadir), ref)
                 for seed in seeds} for name in strategies}
    return Comparison(budget, objectives, hv, tuple(ideal.tolist()), tuple(nadir.tolist()),
                      new, seconds)
