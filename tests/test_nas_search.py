"""lowbit.nas strategies and run_search: valid proposals, budget, determinism, SQLite resume
(including a real SIGKILL of a search process).

A synthetic evaluator (deterministic, instant, from the candidate's structure) stands in for
training so that these tests exercise the search machinery quickly; test_nas_evaluate.py
covers the real evaluation.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import lowbit.nas.search as search_mod
from lowbit.nas import NASDB, EvalSettings, Evaluation, get_space, run_search
from lowbit.nas.strategies import STRATEGIES, DEStrategy, make_strategy

SPACE = get_space("digits-mbv2-bits")
PROXY = EvalSettings(evaluator="proxy")


def synthetic(candidate, space, settings) -> Evaluation:
    """Quality grows with size, latency with MACs-like size, fewer bits are faster."""
    size = candidate.width * sum(s.depth * s.expand * s.kernel for s in candidate.stages)
    bits = np.mean([b for _, b in candidate.bits])
    quality = 1.0 - 1.0 / (1.0 + size / 20.0) - 0.01 * (8 - bits)
    latency = 1e-6 * size * bits / 8
    return Evaluation(quality=quality, val_accuracy=quality, test_accuracy=quality,
                      proxy_score=None, latency_s=latency, energy_pj=latency * 1e12,
                      feasible=True, reason="", macs=int(size * 1000), params=1, weight_bytes=1,
                      seconds=0.0)


@pytest.fixture
def fake_eval(monkeypatch):
    calls = []

    def fake(candidate, space, settings):
        calls.append(candidate.key())
        return synthetic(candidate, space, settings)

    monkeypatch.setattr(search_mod, "evaluate_candidate", fake)
    return calls


def drive(strategy, n, space=SPACE):
    """Ask / tell ``n`` times with the synthetic objectives; the genomes asked."""
    asked = []
    for _ in range(n):
        if strategy.exhausted:
            break
        g = strategy.ask()
        asked.append(g)
        ev = synthetic(space.decode(g), space, PROXY)
        strategy.tell(g, (-ev.quality, ev.latency_s))
    return asked


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategies_propose_valid_genomes_deterministically(name):
    runs = [drive(make_strategy(name, SPACE, budget=40, seed=s, n_objectives=2, population=6),
                  40) for s in (3, 3, 4)]
    assert runs[0] == runs[1]
    if name != "grid":  # a seeded grid visits its points in another order, not other points
        assert runs[0] != runs[2]
    for g in runs[0]:
        assert len(g) == len(SPACE.axes)
        assert all(0 <= x < n for x, n in zip(g, SPACE.cardinalities))
        SPACE.validate(SPACE.decode(g))


def test_grid_is_exhausted_after_its_points():
    s = make_strategy("grid", SPACE, budget=16, seed=0, n_objectives=2)
    asked = drive(s, 100)
    assert len(asked) == len(set(asked)) <= 16 and s.exhausted


def test_hybrid_enqueues_neighbours_of_the_front():
    s = make_strategy("hybrid", SPACE, budget=1, seed=0, n_objectives=2, population=6,
                      local=2)
    asked = drive(s, 6)                      # first generation: NSGA-II's random start
    seen = {SPACE.canonical(g) for g in asked}
    nxt = drive(s, 2)                        # the two local moves open generation 2
    for g in nxt:
        assert SPACE.canonical(g) not in seen
        assert any(g in SPACE.neighbours(SPACE.canonical(a)) for a in asked)


def test_de_selection_and_truncation():
    de = DEStrategy(SPACE, population=4, seed=0)
    for v in [(0.0, 4.0), (1.0, 3.0), (2.0, 2.0), (5.0, 5.0)]:   # initial population
        de.tell(de.ask(), v)
    de.tell(de.ask(), (-1.0, 3.0))     # dominates target 0 -> replaces it
    assert de.members[0][1] == (-1.0, 3.0)
    de.tell(de.ask(), (9.0, 9.0))      # dominated by target 1 -> dropped
    de.tell(de.ask(), (3.0, 0.0))      # neither dominates target 2 -> joins
    assert len(de.members) == 5
    de.tell(de.ask(), None)            # infeasible trial never replaces a feasible target
    assert len(de.members) == 4        # end of the pass: truncated; (5, 5) was dominated
    assert (5.0, 5.0) not in [m[1] for m in de.members]


@pytest.mark.parametrize("name", STRATEGIES)
def test_run_search_respects_the_budget(tmp_path, fake_eval, name):
    s = run_search(SPACE, name, 12, settings=PROXY, db=tmp_path / "n.sqlite", seed=1,
                   population=6)
    assert s.evaluated == s.new == len(fake_eval) == len(set(fake_eval)) == 12
    with NASDB(tmp_path / "n.sqlite") as db:
        rows = db.trials(s.search_id)
    assert [r["seq"] for r in rows] == list(range(12))
    assert len({r["candidate_key"] for r in rows}) == 12


def test_run_search_is_deterministic_and_resumes(tmp_path, fake_eval, monkeypatch):
    full = run_search(SPACE, "evolution", 20, settings=PROXY, db=tmp_path / "a.sqlite", seed=2,
                      population=6)
    with NASDB(tmp_path / "a.sqlite") as db:
        want = db.trial_keys(full.search_id)

    # an interruption after 7 evaluations (an exception out of the evaluator)
    def failing(candidate, space, settings):
        if len(fake_eval) == 7:
            raise KeyboardInterrupt
        fake_eval.append(candidate.key())
        return synthetic(candidate, space, settings)

    fake_eval.clear()
    monkeypatch.setattr(search_mod, "evaluate_candidate", failing)
    with pytest.raises(KeyboardInterrupt):
        run_search(SPACE, "evolution", 20, settings=PROXY, db=tmp_path / "b.sqlite", seed=2,
                   population=6)
    monkeypatch.setattr(search_mod, "evaluate_candidate",
                        lambda c, sp, st: fake_eval.append(c.key()) or synthetic(c, sp, st))
    again = run_search(SPACE, "evolution", 20, settings=PROXY, db=tmp_path / "b.sqlite", seed=2,
                       population=6)
    assert (again.cached, again.new) == (7, 13)
    with NASDB(tmp_path / "b.sqlite") as db:
        assert db.trial_keys(again.search_id) == want
        runs = db.runs(again.search_id)
    assert [r["finished_at"] is not None for r in runs] == [False, True]

    # replaying the finished search evaluates nothing; a larger budget extends it
    done = run_search(SPACE, "evolution", 20, settings=PROXY, db=tmp_path / "b.sqlite", seed=2,
                      population=6)
    assert (done.new, done.cached, done.search_id) == (0, 20, again.search_id)
    more = run_search(SPACE, "evolution", 26, settings=PROXY, db=tmp_path / "b.sqlite", seed=2,
                      population=6)
    assert (more.new, more.cached, more.evaluated) == (6, 20, 26)
    with NASDB(tmp_path / "b.sqlite") as db:
        assert db.trial_keys(more.search_id)[:20] == want


def test_a_killed_search_process_resumes_without_loss_or_duplicates(tmp_path, fake_eval):
    """SIGKILL a real search process mid-run, rerun the search, compare with a clean run."""
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import lowbit.nas.search as m
        from test_nas_search import synthetic, SPACE, PROXY
        def slow(c, sp, st):
            time.sleep(0.2)
            return synthetic(c, sp, st)
        m.evaluate_candidate = slow
        m.run_search(SPACE, "de", 16, settings=PROXY, db=sys.argv[1], seed=5, population=6)
    """)
    code = tmp_path / "run.py"
    code.write_text(script)
    killed, clean = tmp_path / "k.sqlite", tmp_path / "c.sqlite"
    proc = subprocess.Popen([sys.executable, str(code), str(killed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if killed.exists():
            try:
                with sqlite3.connect(killed, timeout=5) as c:
                    if c.execute("SELECT COUNT(*) FROM trials").fetchone()[0] >= 5:
                        break
            except sqlite3.OperationalError:  # tables not created yet
                pass
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(killed) as c:
        before = c.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
        assert c.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == before
    assert 5 <= before < 16
    again = run_search(SPACE, "de", 16, settings=PROXY, db=killed, seed=5, population=6)
    assert (again.new, again.cached) == (16 - before, before)
    run_search(SPACE, "de", 16, settings=PROXY, db=clean, seed=5, population=6)
    with NASDB(killed) as a, NASDB(clean) as b:
        assert a.trial_keys(1) == b.trial_keys(1)
        assert a.conn.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == 16
