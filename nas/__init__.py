"""lowbit.nas: hardware-aware neural architecture search (issue 9) on the digits images.

A search space of MobileNet-style networks (fused inverted-residual blocks: depth, kernel size
and expansion ratio per stage, a width multiplier) with an optional bit width per layer
(joint architecture + quantization search); five strategies (grid, random, NSGA-II
evolution, multi-objective differential evolution, evolution + Pareto local search); each
candidate evaluated by short deterministic training (or the NASWOT zero-cost proxy), then
quantized with ``lowbit.compress`` and costed by the cycle-level simulator (or the roofline)
on a hardware profile; results in SQLite, so a search resumes; Pareto fronts, hypervolume,
plots, and the export of a candidate to the compression pipeline.

    >>> from lowbit.nas import EvalSettings, NASDB, front_rows, run_search
    >>> s = run_search("digits-mbv2", "evolution", budget=30, db="nas.sqlite",
    ...                settings=EvalSettings(profile="edge-npu-32x32"))
    >>> with NASDB("nas.sqlite") as db:
    ...     for row in front_rows(db.trials(s.search_id), s.objectives):
    ...         print(row["val_accuracy"], row["latency_s"])

Parts: ``space`` (spaces, encoding), ``network`` (``build``), ``proxy`` (NASWOT),
``evaluate`` (one candidate), ``strategies``, ``search`` (``run_search``), ``db``,
``pareto`` (fronts, hypervolume), ``plots`` (imported on use: matplotlib), ``export``,
``compare`` (hypervolume of strategies at equal budget). Depends on ``lowbit.compress``,
``lowbit.simulator``, ``lowbit.roofline``, ``lowbit.sweep`` (Pareto mask, hashing) and optuna.
"""
from __future__ import annotations

import importlib

from .db import DatabaseError, NASDB
from .evaluate import (COSTS, EVALUATORS, EvalSettings, Evaluation, evaluate_candidate,
                       evaluation_key, quantize_candidate, search_data)
from .export import EXPORT_FORMAT, export_model, load_model
from .network import FusedMBConv, NASNet, build
from .pareto import (OBJECTIVES, crowding_distance, hypervolume, nondominated_sort,
                     parse_objectives)
from .proxy import naswot
from .search import SearchSummary, front_rows, run_search
from .space import SPACES, Axis, Candidate, SearchSpace, Stage, get_space, space_names
from .strategies import STRATEGIES, make_strategy

__all__ = ["Axis", "COSTS", "Candidate", "DatabaseError", "EVALUATORS", "EXPORT_FORMAT",
           "EvalSettings", "Evaluation", "FusedMBConv", "NASDB", "NASNet", "OBJECTIVES",
           "SPACES", "STRATEGIES", "SearchSpace", "SearchSummary", "Stage", "build",
           "crowding_distance", "evaluate_candidate", "evaluation_key", "export_model",
           "front_rows", "get_space", "hypervolume", "load_model", "make_strategy", "naswot",
           "nondominated_sort", "parse_objectives", "plot_searches", "quantize_candidate",
           "run_search", "search_data", "space_names"]


def __getattr__(name: str):
    if name == "plot_searches":
        value = importlib.import_module(".plots", __name__).plot_searches
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
