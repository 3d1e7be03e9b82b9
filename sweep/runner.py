"""``run_sweep``: every point of a spec through the simulator and the roofline, into SQLite."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

import lowbit

from .db import SweepDB
from .evaluate import evaluate_point
from .executors import make_executor
from .points import digest, expand, profile_mapping, workload_mapping
from .spec import SweepSpec, load_spec

__all__ = ["SweepSummary", "run_sweep"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SweepSummary:
    """What a ``run_sweep`` call did.

    total: the sweep's distinct points; skipped: already in the database; new: evaluated and
    committed now; infeasible: of all the sweep's points; seconds: wall time of this call
    (executor start-up included); points_per_s: new / seconds.
    """

    sweep_id: int
    run_id: int
    total: int
    skipped: int
    new: int
    infeasible: int
    seconds: float
    executor: str
    workers: int | None
    db: str

    @property
    def points_per_s(self) -> float:
        return self.new / self.seconds if self.seconds > 0 else 0.0


def run_sweep(spec: SweepSpec | str | os.PathLike, db: str | os.PathLike = "sweeps.sqlite", *,
              executor: str = "local", workers: int | None = None,
              progress: Progress | None = None) -> SweepSummary:
    """Run every point of ``spec`` not yet in ``db``, committing each point as it finishes.

    Args:
        spec: a ``SweepSpec`` or the path of a spec TOML file (``lowbit.sweep.spec``).
        db: the SQLite results database (created if missing; ``lowbit.sweep.db``).
        executor: "local" (a process pool) or "dask://HOST:PORT" (``lowbit.sweep.executors``).
        workers: local processes (default: the CPUs available; 1 = in this process).
        progress: called as ``progress(done, total)`` once before the first point (done =
            points already in the database) and after every committed point.

    Returns a ``SweepSummary``. Points whose profile is invalid or whose layers do not fit
    the array are stored as infeasible results with the reason. If the sweep stops (an
    error, Ctrl-C, a kill), the points committed so far stay; rerunning skips them.

    Example::

        >>> from lowbit.sweep import run_sweep
        >>> s = run_sweep("sweep/examples/edge-npu.toml", "sweeps.sqlite", workers=2)
        >>> s.new, s.points_per_s
    """
    t0 = time.perf_counter()
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    points = expand(spec)
    base = profile_mapping(spec.base)
    objects = [(digest(base), "profile", base)]
    for _, wl in spec.workloads:
        mapping = workload_mapping(wl)
        objects.append((digest(mapping), "workload", mapping))
    with SweepDB(db) as store:
        sweep_id = store.register(spec.name, points, objects)
        done = store.finished(sweep_id)
        todo = [p for p in points if p.hash not in done]
        with make_executor(executor, workers) as ex:
            run_id = store.start_run(sweep_id, spec.path, spec.text, lowbit.__version__,
                                     executor, ex.workers)
            labels = {p.hash: p.labels for p in todo}
            count = len(points) - len(todo)
            if progress:
                progress(count, len(points))
            new = 0
            for result in ex.imap_unordered(evaluate_point, (p.task for p in todo)):
                new += store.write(labels.pop(result["point_hash"]), result)
                count += 1
                if progress:
                    progress(count, len(points))
        store.finish_run(run_id, new)
        infeasible = store.infeasible(sweep_id)
        return SweepSummary(sweep_id=sweep_id, run_id=run_id, total=len(points),
                            skipped=len(points) - len(todo), new=new, infeasible=infeasible,
                            seconds=time.perf_counter() - t0, executor=executor,
                            workers=ex.workers, db=str(db))
