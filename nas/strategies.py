"""Search strategies: grid, random, NSGA-II evolution, differential evolution, and a hybrid of
evolution with local search (seed 000, "搜索策略": grid, random and evolutionary search; the
evolutionary family: genetic algorithms, differential evolution, hybrids of global and local
search).

Every strategy works on genomes (one choice index per axis, ``SearchSpace.axes``) through one
ask / tell interface: ``ask()`` proposes a genome, ``tell(genome, values)`` returns its
objective vector (minimized; None when the hardware profile cannot run the candidate). The
search loop (``lowbit.nas.search``) alternates them, one proposal at a time, and tells a
genome whose candidate was already evaluated its recorded values.

* ``grid``: optuna's ``GridSampler`` over a coarse sub-grid: per axis evenly spaced levels
  (first, last and between), levels added axis by axis while the grid holds at most
  ``budget`` points (one level: the middle choice); exhausted when every point is proposed.
* ``random``: optuna's ``RandomSampler``, uniform over genomes.
* ``evolution``: optuna's ``NSGAIISampler`` (Deb et al. 2002): elitist non-dominated sorting
  with crowding distance, uniform crossover, per-gene random mutation; ``population`` per
  generation.
* ``de``: differential evolution for multiple objectives, DEMO (Robic & Filipic, EMO 2005),
  hand-written because neither optuna nor scipy offers a multi-objective DE over a discrete
  space. Genes are real numbers in [0, n_i) decoded by flooring to choice indices.
  DE/rand/1/bin (Storn & Price 1997): v = x_a + F (x_b - x_c), binomial crossover with rate
  CR (one forced gene), out-of-range genes redrawn uniformly. Selection against the target:
  the trial replaces it if it dominates it, is dropped if dominated, and otherwise joins the
  population; after each pass over the targets the population is cut back to ``population``
  by non-dominated rank, then crowding distance (NSGA-II's truncation).
* ``hybrid``: NSGA-II plus Pareto local search (Paquete, Chiarandini & Stuetzle 2004) in the
  memetic pattern: at the start of every generation after the first, ``local`` of its
  ``population`` slots go to one-step neighbours (one gene moved to the adjacent choice) of
  randomly chosen non-dominated candidates found so far, not yet proposed; they are enqueued
  into the optuna study, so they join the generation and compete in NSGA-II's selection
  (improvements are inherited, Lamarckian).

Determinism: every strategy draws from its own generator seeded with ``seed``; given the same
told values it proposes the same genomes.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from typing import Sequence

import numpy as np

from .pareto import crowding_distance, nondominated_sort
from .space import SearchSpace

__all__ = ["Strategy", "OptunaStrategy", "DEStrategy", "HybridStrategy", "STRATEGIES",
           "make_strategy", "grid_levels", "DEFAULT_POPULATION"]

STRATEGIES = ("grid", "random", "evolution", "de", "hybrid")
DEFAULT_POPULATION = 10

Values = tuple[float, ...] | None


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


class Strategy:
    """The ask / tell interface (see the module doc)."""

    name = ""

    def ask(self) -> tuple[int, ...]:
        raise NotImplementedError

    def tell(self, genome: tuple[int, ...], values: Values) -> None:
        raise NotImplementedError

    @property
    def exhausted(self) -> bool:
        """True when the strategy has nothing new to propose (a finished grid)."""
        return False


@contextlib.contextmanager
def _optuna_quiet():
    """optuna's INFO messages off while a search runs (its verbosity restored after)."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


class OptunaStrategy(Strategy):
    """A strategy driven by an optuna sampler through ``study.ask`` / ``study.tell``; each
    gene is an integer parameter ``suggest_int(axis, 0, n - 1)``."""

    def __init__(self, name: str, space: SearchSpace, sampler, n_objectives: int,
                 limit: int | None = None) -> None:
        import optuna

        self.name = name
        self.space = space
        self._limit = limit
        self._asked = 0
        with _optuna_quiet():
            self.study = optuna.create_study(directions=["minimize"] * n_objectives,
                                             sampler=sampler)
        self._trial = None

    def ask(self) -> tuple[int, ...]:
        if self._trial is not None:
            raise RuntimeError("ask: tell the previous proposal first")
        with _optuna_quiet():
            trial = self.study.ask()
            genome = tuple(trial.suggest_int(a.name, 0, len(a.choices) - 1)
                           for a in self.space.axes)
        self._trial = trial
        self._asked += 1
        return genome

    def tell(self, genome: tuple[int, ...], values: Values) -> None:
        import optuna

        if self._trial is None:
            raise RuntimeError("tell: nothing was asked")
        trial, self._trial = self._trial, None
        with _optuna_quiet():
            if values is None:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                self.study.tell(trial, list(values))

    @property
    def exhausted(self) -> bool:
        return self._limit is not None and self._asked >= self._limit


def grid_levels(cardinalities: Sequence[int], budget: int) -> list[list[int]]:
    """Per axis, the choice indices of the coarse grid (see the module doc, ``grid``).

    >>> grid_levels([3, 2, 3], 4)
    [[0, 2], [0, 1], [1]]
    >>> grid_levels([3, 2], 100)
    [[0, 1, 2], [0, 1]]
    """
    if budget < 1:
        raise ValueError(f"budget: must be >= 1, got {budget}")
    counts = [1] * len(cardinalities)
    grown = True
    while grown:
        grown = False
        for i, n in enumerate(cardinalities):
            if counts[i] < n and math.prod(counts) // counts[i] * (counts[i] + 1) <= budget:
                counts[i] += 1
                grown = True
    levels = []
    for n, c in zip(cardinalities, counts):
        if c == 1:
            levels.append([(n - 1) // 2])
        else:
            levels.append(sorted({int(round(x)) for x in np.linspace(0, n - 1, c)}))
    return levels


class HybridStrategy(OptunaStrategy):
    """NSGA-II with Pareto local search (see the module doc, ``hybrid``)."""

    def __init__(self, space: SearchSpace, n_objectives: int, population: int, local: int,
                 seed: int) -> None:
        import optuna

        if not 1 <= local < population:
            raise ValueError(f"local: must be in 1..population-1 ({population - 1}), got {local}")
        sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
        super().__init__("hybrid", space, sampler, n_objectives)
        self.population = population
        self.local = local
        self._rng = np.random.default_rng(seed)
        self._seen: dict[tuple[int, ...], Values] = {}   # canonical genome -> values
        self._told = 0
        self._queued: set[tuple[int, ...]] = set()

    def ask(self) -> tuple[int, ...]:
        if self._told and self._told % self.population == 0 and self._trial is None:
            for genome in self._local_moves():
                self.study.enqueue_trial({a.name: int(g) for a, g in zip(self.space.axes,
                                                                         genome)})
        return super().ask()

    def _local_moves(self) -> list[tuple[int, ...]]:
        """Up to ``local`` unproposed neighbours of random non-dominated candidates."""
        feasible = [(g, v) for g, v in self._seen.items() if v is not None]
        if not feasible:
            return []
        values = np.array([v for _, v in feasible])
        front = [feasible[i][0] for i in nondominated_sort(values)[0]]
        moves: list[tuple[int, ...]] = []
        for i in self._rng.permutation(len(front)):
            options = [n for n in self.space.neighbours(front[i])
                       if self.space.canonical(n) not in self._seen
                       and self.space.canonical(n) not in self._queued]
            if options:
                pick = options[int(self._rng.integers(len(options)))]
                moves.append(pick)
                self._queued.add(self.space.canonical(pick))
            if len(moves) == self.local:
                break
        return moves

    def tell(self, genome: tuple[int, ...], values: Values) -> None:
        super().tell(genome, values)
        self._seen[self.space.canonical(genome)] = values
        self._told += 1


class DEStrategy(Strategy):
    """Multi-objective differential evolution, DEMO/parent (see the module doc, ``de``)."""

    name = "de"

    def __init__(self, space: SearchSpace, population: int, seed: int, f: float = 0.5,
                 cr: float = 0.9) -> None:
        if population < 4:
            raise ValueError(f"population: DE/rand/1 needs at least 4, got {population}")
        if not 0.0 < f <= 2.0:
            raise ValueError(f"f: the differential weight must be in (0, 2], got {f}")
        if not 0.0 <= cr <= 1.0:
            raise ValueError(f"cr: the crossover rate must be in [0, 1], got {cr}")
        self.space = space
        self.size = population
        self.f, self.cr = f, cr
        self._n = np.array(space.cardinalities, dtype=np.float64)
        self._rng = np.random.default_rng(seed)
        self.members: list[tuple[np.ndarray, Values]] = []  # (real genes, values)
        self._target = 0        # index of the next target in this pass
        self._pass_size = 0     # members at the start of the pass (the targets)
        self._pending: np.ndarray | None = None

    def _decode(self, x: np.ndarray) -> tuple[int, ...]:
        return tuple(int(g) for g in np.minimum(np.floor(x), self._n - 1).astype(int))

    def ask(self) -> tuple[int, ...]:
        if self._pending is not None:
            raise RuntimeError("ask: tell the previous proposal first")
        if len(self.members) < self.size and self._pass_size == 0:
            x = self._rng.uniform(0.0, self._n)
        else:
            i = self._target
            others = [j for j in range(self._pass_size) if j != i]
            a, b, c = self._rng.choice(others, size=3, replace=False)
            v = self.members[a][0] + self.f * (self.members[b][0] - self.members[c][0])
            cross = self._rng.random(len(v)) < self.cr
            cross[self._rng.integers(len(v))] = True
            x = np.where(cross, v, self.members[i][0])
            bad = (x < 0) | (x >= self._n)
            x[bad] = self._rng.uniform(0.0, self._n[bad])
        self._pending = x
        return self._decode(x)

    def tell(self, genome: tuple[int, ...], values: Values) -> None:
        if self._pending is None:
            raise RuntimeError("tell: nothing was asked")
        x, self._pending = self._pending, None
        if self._pass_size == 0:  # the initial population
            self.members.append((x, values))
            if len(self.members) == self.size:
                self._pass_size = self.size
            return
        i = self._target
        target = self.members[i][1]
        if values is not None and (target is None or _dominates(values, target)):
            self.members[i] = (x, values)
        elif values is not None and not _dominates(target, values):
            self.members.append((x, values))
        self._target += 1
        if self._target == self._pass_size:
            self._truncate()
            self._target = 0
            self._pass_size = len(self.members)

    def _truncate(self) -> None:
        """Keep ``size`` members: by non-dominated rank, then crowding distance; infeasible
        members last."""
        feasible = [m for m in self.members if m[1] is not None]
        infeasible = [m for m in self.members if m[1] is None]
        kept: list = []
        if feasible:
            values = np.array([m[1] for m in feasible])
            for front in nondominated_sort(values):
                if len(kept) + len(front) <= self.size:
                    kept += [feasible[i] for i in front]
                else:
                    crowd = crowding_distance(values[front])
                    order = np.argsort(-crowd, kind="stable")
                    kept += [feasible[front[j]] for j in order[:self.size - len(kept)]]
                if len(kept) == self.size:
                    break
        self.members = kept + infeasible[:self.size - len(kept)]


def _grid_sampler(grid: dict, seed: int):
    """optuna's GridSampler without its end-of-grid ``study.stop()`` call, which works only
    inside ``study.optimize``; under ask / tell the strategy counts the grid's points itself."""
    import optuna

    class AskTellGridSampler(optuna.samplers.GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            pass

    return AskTellGridSampler(grid, seed=seed)


def make_strategy(name: str, space: SearchSpace, *, budget: int, seed: int,
                  n_objectives: int, population: int = DEFAULT_POPULATION,
                  local: int | None = None) -> Strategy:
    """A fresh strategy by name (``STRATEGIES``); see the module doc for each.

    Args:
        budget: the grid's maximum size (``grid``); the others ignore it.
        seed: seeds the strategy's generator.
        n_objectives: length of the objective vectors told.
        population: per generation (``evolution``, ``hybrid``) or DE population (``de``).
        local: ``hybrid``: local-search slots per generation (default population // 4,
            at least 1).
    """
    import optuna

    if name not in STRATEGIES:
        raise ValueError(f"strategy: must be one of {', '.join(STRATEGIES)}, got {name!r}")
    if not isinstance(population, int) or population < 2:
        raise ValueError(f"population: must be an integer >= 2, got {population!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "grid":
            levels = grid_levels(space.cardinalities, budget)
            grid = {a.name: lv for a, lv in zip(space.axes, levels)}
            return OptunaStrategy("grid", space, _grid_sampler(grid, seed), n_objectives,
                                  limit=math.prod(len(lv) for lv in levels))
        if name == "random":
            return OptunaStrategy("random", space, optuna.samplers.RandomSampler(seed=seed),
                                  n_objectives)
        if name == "evolution":
            sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
            return OptunaStrategy("evolution", space, sampler, n_objectives)
        if name == "de":
            return DEStrategy(space, population, seed)
        return HybridStrategy(space, n_objectives, population,
                              max(1, population // 4) if local is None else local, seed)
