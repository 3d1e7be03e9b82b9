"""``run_search``: one hardware-aware search, resumable through its SQLite database.

The loop asks the strategy for a genome, decodes it, and looks its evaluation up by key
(``evaluation_key``: candidate, settings, hardware profile, code); a candidate this search
already evaluated is told its values again and costs no budget; otherwise the evaluation
comes from the database (any earlier search or run with the same settings) or is computed
(``evaluate_candidate``) and committed with the search's trial row in one transaction. The
budget is the number of distinct candidates a search evaluates.

A search is identified by the SHA-256 of its space, strategy, seed, objectives, strategy
options and evaluation settings (not the budget, except for the grid, whose shape follows
the budget). Strategies are deterministic given the
values they are told, and every value comes back from the database bit for bit, so a rerun
of an interrupted search replays it: it proposes the same candidates, takes the recorded
ones from the database and evaluates only the rest. A rerun with a larger budget continues
the same sequence.
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import lowbit
from lowbit.sweep.points import canonical_json, digest

from .db import NASDB
from .evaluate import (EvalSettings, _cached_code_digest, _hardware, evaluate_candidate,
                       evaluation_key)
from .pareto import objective_vector, pareto_mask, parse_objectives
from .space import Candidate, SearchSpace, get_space
from .strategies import DEFAULT_POPULATION, make_strategy

__all__ = ["run_search", "SearchSummary", "search_key", "front_rows", "PROPOSALS_PER_BUDGET"]

PROPOSALS_PER_BUDGET = 20  # give up when this many proposals per budget unit repeat old ones


@dataclass(frozen=True)
class SearchSummary:
    """What one ``run_search`` call did. ``evaluated``: distinct candidates of the search so
    far; ``new``: evaluated by this call; ``cached``: taken from the database by this call;
    ``eval_seconds``: wall time of this call's new evaluations; ``stopped``: why the search
    ended before the budget ("" when it reached it)."""

    search_id: int
    db: str
    space: str
    strategy: str
    seed: int
    objectives: tuple[str, ...]
    budget: int
    evaluated: int
    new: int
    cached: int
    proposals: int
    seconds: float
    eval_seconds: float
    stopped: str

    @property
    def seconds_per_new(self) -> float | None:
        return self.eval_seconds / self.new if self.new else None


def search_key(space: SearchSpace, strategy: str, seed: int, objectives, options: dict,
               settings: EvalSettings) -> str:
    """A search's identity (see the module doc)."""
    _, hw = _hardware(settings.profile, settings.cost)
    return digest({"v": 1, "space": space.to_dict(), "strategy": strategy, "seed": seed,
                   "objectives": list(objectives), "options": options,
                   "settings": settings.result_fields(), "hardware": hw,
                   "code": _cached_code_digest()})


def _eval_row(key: str, candidate: Candidate, space: SearchSpace, settings: EvalSettings,
              ev) -> dict:
    return {"eval_key": key, "candidate_key": candidate.key(), "space": space.name,
            "candidate": candidate.to_json(), "settings": canonical_json(asdict(settings)),
            **ev.to_dict(), "feasible": int(ev.feasible), "lowbit_version": lowbit.__version__,
            "created_at": time.time()}


def run_search(space: SearchSpace | str = "digits-mbv2", strategy: str = "evolution",
               budget: int = 30, *, objectives="accuracy,latency",
               settings: EvalSettings | None = None, db: str | Path = "nas.sqlite",
               seed: int = 0, population: int = DEFAULT_POPULATION, local: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> SearchSummary:
    """Run (or resume, or extend) a search and record it in ``db``.

    Args:
        space: a ``SearchSpace`` or a built-in name ("digits-mbv2", "digits-mbv2-bits").
        strategy: "grid", "random", "evolution", "de" or "hybrid" (``lowbit.nas.strategies``).
        budget: distinct candidates to evaluate (>= 1).
        objectives: "accuracy,latency" or "accuracy,latency,energy" (or a sequence).
        settings: ``EvalSettings`` (default: short training, edge-npu-32x32 simulator).
        db: the SQLite file (created if missing).
        seed: the strategy's seed (evaluations use ``settings.seed``).
        population, local: strategy options (``make_strategy``).
        progress: ``progress(done, budget)`` after every distinct candidate.

    Example:
        >>> s = run_search("digits-mbv2", "evolution", 20,
        ...                settings=EvalSettings(evaluator="proxy"), db="nas.sqlite")
        >>> with NASDB("nas.sqlite") as d:
        ...     front = front_rows(d.trials(s.search_id), s.objectives)
    """
    space = get_space(space)
    settings = EvalSettings() if settings is None else settings
    objectives = parse_objectives(objectives)
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise ValueError(f"budget: must be an integer >= 1, got {budget!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed: must be a non-negative integer, got {seed!r}")
    options = {"population": population} if strategy in ("evolution", "de", "hybrid") else {}
    if strategy == "grid":
        options = {"grid_budget": budget}  # the grid's shape depends on the budget
    if strategy == "hybrid":
        options["local"] = local
    strat = make_strategy(strategy, space, budget=budget, seed=seed,
                          n_objectives=len(objectives), population=population, local=local)
    key = search_key(space, strategy, seed, objectives, options, settings)
    start = time.perf_counter()
    with NASDB(db) as store:
        search_id = store.register_search(key, {
            "space": space.name, "strategy": strategy, "seed": seed,
            "objectives": ",".join(objectives), "options": json.dumps(options, sort_keys=True),
            "settings": canonical_json(asdict(settings))})
        run_id = store.start_run(search_id, budget, lowbit.__version__)
        values_of: dict[str, tuple | None] = {}
        new = cached = proposals = 0
        eval_seconds = 0.0
        stopped = ""
        while len(values_of) < budget:
            if strat.exhausted:
                stopped = "the grid is exhausted"
                break
            if proposals >= PROPOSALS_PER_BUDGET * budget:
                stopped = (f"{proposals} proposals repeated evaluated candidates; the strategy "
                           f"has converged or the space is exhausted")
                warnings.warn(f"lowbit nas: {stopped}", RuntimeWarning, stacklevel=2)
                break
            genome = strat.ask()
            proposals += 1
            candidate = space.decode(genome)
            ekey = evaluation_key(candidate, space, settings)
            if ekey in values_of:
                strat.tell(genome, values_of[ekey])
                continue
            row = store.evaluation(ekey)
            new_row = None
            if row is None:
                ev = evaluate_candidate(candidate, space, settings)
                eval_seconds += ev.seconds
                row = new_row = _eval_row(ekey, candidate, space, settings, ev)
                new += 1
            else:
                cached += 1
            store.record(search_id, len(values_of), ekey, new_row)
            values_of[ekey] = objective_vector(row, objectives)
            strat.tell(genome, values_of[ekey])
            if progress is not None:
                progress(len(values_of), budget)
        store.finish_run(run_id, new)
    return SearchSummary(search_id, str(db), space.name, strategy, seed, objectives, budget,
                         len(values_of), new, cached, proposals, time.perf_counter() - start,
                         eval_seconds, stopped)


def front_rows(rows: list[dict], objectives) -> list[dict]:
    """The non-dominated feasible rows (``NASDB.trials``), sorted by latency."""
    objectives = parse_objectives(objectives)
    ok = [r for r in rows if r["feasible"]]
    if not ok:
        return []
    mask = pareto_mask([objective_vector(r, objectives) for r in ok])
    return sorted((r for r, m in zip(ok, mask) if m), key=lambda r: (r["latency_s"],
                                                                   -r["quality"]))
