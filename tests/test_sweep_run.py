"""Running sweeps: results equal the simulator and the roofline called directly, one row per
point and layer, reruns skip finished points, infeasible points are results, a sweep killed
with SIGKILL mid-way and restarted loses and duplicates nothing, the local pool and a Dask
LocalCluster give the same results as the in-process run, CSV export, the CLI, and the
package's dependency rule (no torch, kernels or compress)."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from lowbit.cli import main
from lowbit.roofline import analyze
from lowbit.simulator import load_profile, simulate
from lowbit.simulator.workload import Conv2d, Gemm, Workload
from lowbit.sweep import (DatabaseError, SweepDB, expand, layers_csv, load_spec, make_executor,
                          parse_executor, points_csv, run_sweep)
from lowbit.sweep import runner
from lowbit.sweep.columns import LAYER_COLUMNS, POINT_COLUMNS, names
from lowbit.sweep.export import LAYER_CSV_COLUMNS, POINT_CSV_COLUMNS

TINY = {"format": "lowbit-workload", "version": 1, "name": "tiny", "layers": [
    {"type": "conv2d", "name": "conv", "in_h": 12, "in_w": 12, "in_ch": 8, "out_ch": 16,
     "kernel_h": 3, "kernel_w": 3, "padding": 1},
    {"type": "gemm", "name": "fc", "m": 4, "n": 40, "k": 96}]}
TINY_SPEC = '''
name = "tiny"
profile = "edge-npu-32x32"
workloads = ["tiny.json"]
precisions = ["int8", "int4"]
[grid]
rows = [8, 16]
dram.bandwidth = [2.0, 8.5]
'''
COMPARED = ("point_hash", "feasible", "reason", "sim_total_cycles", "sim_stall_cycles",
            "sim_dram_bytes", "sim_energy_pj", "sim_latency_s", "rl_latency_s", "rl_energy_j")


def _write_spec(tmp_path, text=TINY_SPEC, name="spec.toml"):
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    path = tmp_path / name
    path.write_text(text)
    return path


def _rows(db, sql, *args):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


def _compared(db):
    return _rows(db, f"SELECT {', '.join(COMPARED)} FROM points ORDER BY point_hash")


# --------------------------------------------------------------------------------------------
def test_results_equal_the_simulator_and_roofline_called_directly(tmp_path):
    db = tmp_path / "r.sqlite"
    summary = run_sweep(_write_spec(tmp_path), db, workers=1)
    assert (summary.total, summary.new, summary.skipped, summary.infeasible) == (8, 8, 0, 0)
    base = load_profile("edge-npu-32x32")
    with SweepDB(db) as store:
        rows = store.points(summary.sweep_id)
    assert len(rows) == 8
    for row in rows:
        ov = json.loads(row["overrides"])
        profile = dataclasses.replace(base, rows=ov["rows"], dram=dataclasses.replace(
            base.dram, bandwidth=ov["dram.bandwidth"]))
        bits = {"int8": (8, 8), "int4": (4, 4)}[row["precision"]]
        wl = Workload("tiny", (
            Conv2d("conv", in_h=12, in_w=12, in_ch=8, out_ch=16, kernel_h=3, kernel_w=3,
                   padding=1, a_bits=bits[0], w_bits=bits[1]),
            Gemm("fc", m=4, n=40, k=96, a_bits=bits[0], w_bits=bits[1])))
        sim = simulate(wl, profile).total
        roof = analyze(wl, profile, precision=row["precision"]).total
        assert (row["sim_total_cycles"], row["sim_energy_pj"], row["sim_dram_bytes"]) == (
            sim.total_cycles, sim.energy_pj, sim.dram_bytes)
        assert (row["rl_latency_s"], row["rl_energy_j"]) == (roof.latency_s, roof.energy_j)
        assert (row["rows"], row["cols"], row["pe_count"]) == (ov["rows"], 32, 32 * ov["rows"])
    cycles = {(json.dumps(json.loads(r["overrides"]), sort_keys=True), r["precision"]):
              r["sim_compute_cycles"] for r in rows}
    for (ov, prec), c in cycles.items():  # edge-npu-32x32 runs 2 int4 MACs per PE per cycle
        if prec == "int4":
            assert c < cycles[(ov, "int8")]


def test_one_row_per_point_and_layer_and_the_run_is_recorded(tmp_path):
    db = tmp_path / "r.sqlite"
    spec = _write_spec(tmp_path)
    run_sweep(spec, db, workers=1)
    assert _rows(db, "SELECT COUNT(*), COUNT(DISTINCT point_hash) FROM points") == [(8, 8)]
    assert _rows(db, "SELECT COUNT(*), COUNT(DISTINCT point_hash || '/' || idx) FROM layers") \
        == [(16, 16)]
    assert _rows(db, "SELECT layer FROM layers GROUP BY layer ORDER BY layer") == [("conv",),
                                                                                  ("fc",)]
    [(text, version, finished, new)] = _rows(
        db, "SELECT spec_text, lowbit_version, finished_at, points_new FROM runs")
    assert text == spec.read_text() and version and finished is not None and new == 8
    with sqlite3.connect(db) as conn:
        cols = {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")]
                for t in ("points", "layers")}
    assert cols == {"points": list(names(POINT_COLUMNS)), "layers": list(names(LAYER_COLUMNS))}
    kinds = _rows(db, "SELECT kind FROM objects ORDER BY kind")
    assert kinds == [("profile",), ("workload",)]


def test_rerun_skips_finished_points_and_reports_progress(tmp_path):
    db = tmp_path / "r.sqlite"
    spec = _write_spec(tmp_path)
    calls = []
    run_sweep(spec, db, workers=1, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 8) for i in range(9)]
    before = _rows(db, "SELECT point_hash, finished_at FROM points ORDER BY point_hash")
    calls.clear()
    again = run_sweep(spec, db, workers=1, progress=lambda d, t: calls.append((d, t)))
    assert (again.new, again.skipped, again.sweep_id) == (0, 8, 1)
    assert calls == [(8, 8)]
    assert _rows(db, "SELECT point_hash, finished_at FROM points ORDER BY point_hash") == before
    assert _rows(db, "SELECT COUNT(*) FROM runs") == [(2,)]


def test_missing_points_are_redone_and_only_those(tmp_path):
    db = tmp_path / "r.sqlite"
    spec = _write_spec(tmp_path)
    run_sweep(spec, db, workers=1)
    gone = [h for (h,) in _rows(db, "SELECT point_hash FROM points ORDER BY point_hash")[:3]]
    kept = _rows(db, "SELECT point_hash, finished_at FROM points WHERE point_hash NOT IN "
                     "(?, ?, ?) ORDER BY point_hash", *gone)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM layers WHERE point_hash IN (?, ?, ?)", gone)
        conn.execute("DELETE FROM points WHERE point_hash IN (?, ?, ?)", gone)
    again = run_sweep(spec, db, workers=1)
    assert (again.new, again.skipped) == (3, 5)
    assert set(kept) <= set(_rows(db, "SELECT point_hash, finished_at FROM points"))
    assert _rows(db, "SELECT COUNT(*) FROM layers") == [(16,)]


def test_a_wider_spec_reuses_the_points_it_shares(tmp_path):
    db = tmp_path / "r.sqlite"
    first = run_sweep(_write_spec(tmp_path), db, workers=1)
    wider = _write_spec(tmp_path, TINY_SPEC.replace("[8, 16]", "[8, 16, 32]"), "wider.toml")
    second = run_sweep(wider, db, workers=1)
    assert second.sweep_id != first.sweep_id
    assert (second.total, second.skipped, second.new) == (12, 8, 4)
    with SweepDB(db) as store:
        assert len(store.points(first.sweep_id)) == 8
        assert len(store.points(second.sweep_id)) == len(store.points()) == 12
        every = store.layers()
        assert len(every) == 24
        assert [(r["point_hash"], r["idx"]) for r in every] == [
            (p["point_hash"], i) for p in store.points() for i in (0, 1)]


def test_an_error_stops_the_sweep_but_keeps_what_was_committed(tmp_path, monkeypatch):
    db = tmp_path / "r.sqlite"
    spec = _write_spec(tmp_path)
    real, calls = runner.evaluate_point, []

    def flaky(task):
        calls.append(task["point_hash"])
        if len(calls) == 4:
            raise RuntimeError("worker failed")
        return real(task)

    monkeypatch.setattr(runner, "evaluate_point", flaky)
    with pytest.raises(RuntimeError, match="worker failed"):
        run_sweep(spec, db, workers=1)
    assert _rows(db, "SELECT COUNT(*) FROM points") == [(3,)]
    assert _rows(db, "SELECT finished_at FROM runs") == [(None,)]
    monkeypatch.setattr(runner, "evaluate_point", real)
    assert run_sweep(spec, db, workers=1).new == 5


# --------------------------------------------------------------------------------------------
def test_infeasible_points_are_stored_with_their_reason(tmp_path):
    db = tmp_path / "r.sqlite"
    spec = _write_spec(tmp_path, '''
        profile = "edge-npu-32x32"
        workloads = ["tiny.json"]
        [[overrides]]
        rows = 512
        ifmap_sram_bytes = 256
        [[overrides]]
        ofmap_sram_bytes = 64
        dataflow = "ws"
        [[overrides]]
        rows = 16
        '''.replace("\n        ", "\n"))
    summary = run_sweep(spec, db, workers=1)
    assert (summary.total, summary.infeasible) == (3, 2)
    with SweepDB(db) as store:
        bad_profile, bad_layer, ok = store.points(summary.sweep_id)
        layers = store.layers(summary.sweep_id)
    assert not bad_profile["feasible"]
    assert "invalid profile" in bad_profile["reason"]
    assert "ifmap_sram_bytes" in bad_profile["reason"]
    assert bad_profile["sim_total_cycles"] is None and bad_profile["rl_latency_s"] is None
    assert not bad_layer["feasible"] and "infeasible layers" in bad_layer["reason"]
    assert bad_layer["sim_latency_s"] is None and bad_layer["dataflow"] == "ws"
    assert bad_layer["rl_latency_s"] > 0  # the roofline has no notion of a layer not fitting
    mine = [r for r in layers if r["point_hash"] == bad_layer["point_hash"]]
    assert len(mine) == 2 and all("ofmap buffer too small" in r["reason"] for r in mine)
    assert not [r for r in layers if r["point_hash"] == bad_profile["point_hash"]]
    assert ok["feasible"] and ok["sim_total_cycles"] > 0


def test_weight_sparsity_axis_reaches_the_simulator(tmp_path):
    db = tmp_path / "r.sqlite"
    spec = _write_spec(tmp_path, TINY_SPEC.split("[grid]")[0].replace(
        'precisions = ["int8", "int4"]', 'weight_sparsity = ["dense", "2:4"]'))
    run_sweep(spec, db, workers=1)
    got = dict(_rows(db, "SELECT weight_sparsity, sim_compute_cycles FROM points"))
    assert got["2:4"] < got["dense"]  # edge-npu-32x32 skips 2:4 zeros


# --------------------------------------------------------------------------------------------
KILL_SPEC = '''
profile = "edge-npu-32x32"
workloads = ["resnet18"]
[grid]
rows = [16, 32, 64]
cols = [16, 32, 64]
dram.bandwidth = [2.0, 4.0, 8.0, 16.0]
dataflow = ["os", "ws"]
'''
RESNET18_LAYERS = 21


def test_sigkill_mid_sweep_then_restart_loses_and_duplicates_nothing(tmp_path):
    spec = tmp_path / "kill.toml"
    spec.write_text(KILL_SPEC)
    db = tmp_path / "kill.sqlite"
    total = 72
    proc = subprocess.Popen([sys.executable, "-m", "lowbit", "sweep", str(spec), "--db", str(db),
                             "--workers", "2"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        done, deadline = 0, time.monotonic() + 120
        while done < 5 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
            if db.exists():
                try:
                    done = _rows(db, "SELECT COUNT(*) FROM points")[0][0]
                except sqlite3.OperationalError:  # tables not created yet
                    pass
        assert proc.poll() is None, "the sweep ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        try:  # the workers leave on their own (parent watch); this only cleans up a failure
            time.sleep(1.0)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    after_kill = _rows(db, "SELECT point_hash, finished_at FROM points")
    assert 5 <= len(after_kill) < total
    per_point = _rows(db, "SELECT COUNT(*) FROM layers GROUP BY point_hash")
    assert len(per_point) == len(after_kill)
    assert all(n == RESNET18_LAYERS for (n,) in per_point)  # no half-written point
    assert _rows(db, "SELECT finished_at FROM runs") == [(None,)]

    summary = run_sweep(spec, db, workers=2)
    assert (summary.skipped, summary.new) == (len(after_kill), total - len(after_kill))
    assert _rows(db, "SELECT COUNT(*), COUNT(DISTINCT point_hash) FROM points") == [(total,
                                                                                     total)]
    assert _rows(db, "SELECT COUNT(*), COUNT(DISTINCT point_hash || '/' || idx) FROM layers") \
        == [(total * RESNET18_LAYERS, total * RESNET18_LAYERS)]
    assert set(after_kill) <= set(_rows(db, "SELECT point_hash, finished_at FROM points"))
    assert {p.hash for p in expand(load_spec(spec))} == {
        h for (h,) in _rows(db, "SELECT point_hash FROM points")}


# --------------------------------------------------------------------------------------------
def test_local_pool_gives_the_in_process_results(tmp_path):
    spec = _write_spec(tmp_path)
    run_sweep(spec, tmp_path / "a.sqlite", workers=1)
    summary = run_sweep(spec, tmp_path / "b.sqlite", workers=2)
    assert summary.workers == 2 and summary.new == 8
    assert _compared(tmp_path / "a.sqlite") == _compared(tmp_path / "b.sqlite")


def test_dask_local_cluster_gives_the_in_process_results(tmp_path):
    from distributed import LocalCluster

    spec = _write_spec(tmp_path)
    run_sweep(spec, tmp_path / "a.sqlite", workers=1)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp",
                      dashboard_address=None) as cluster:
        address = cluster.scheduler_address.replace("tcp://", "dask://")
        summary = run_sweep(spec, tmp_path / "d.sqlite", executor=address)
        again = run_sweep(spec, tmp_path / "d.sqlite", executor=address)
    assert (summary.executor, summary.workers, summary.new) == (address, 2, 8)
    assert (again.new, again.skipped) == (0, 8)
    assert _compared(tmp_path / "a.sqlite") == _compared(tmp_path / "d.sqlite")
    assert _rows(tmp_path / "d.sqlite", "SELECT executor FROM runs") == [(address,)] * 2


def test_executor_names_and_worker_counts():
    assert parse_executor("local") == ("local", None)
    assert parse_executor("dask://10.0.0.5:8786") == ("dask", "tcp://10.0.0.5:8786")
    assert parse_executor("dask://sched.example:8786/") == ("dask", "tcp://sched.example:8786")
    for bad in ("dask://nohost", "tcp://a:1", "Local", "dask://:1"):
        with pytest.raises(ValueError, match="executor"):
            parse_executor(bad)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers"):
            make_executor("local", bad)
    with pytest.raises(ValueError, match="workers"):
        make_executor("dask://127.0.0.1:1", 2)
    with make_executor("local", 1) as ex:
        assert list(ex.imap_unordered(abs, [-1, -2])) == [1, 2]


def test_database_errors(tmp_path):
    with pytest.raises(DatabaseError, match="no such sweep database"):
        SweepDB(tmp_path / "none.sqlite", create=False)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(DatabaseError, match="not a sweep database"):
        SweepDB(junk)
    db = tmp_path / "old.sqlite"
    SweepDB(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    with pytest.raises(DatabaseError, match="schema version 0"):
        SweepDB(db)


# --------------------------------------------------------------------------------------------
def test_csv_export_points_and_layers(tmp_path):
    db = tmp_path / "r.sqlite"
    summary = run_sweep(_write_spec(tmp_path), db, workers=1)
    with SweepDB(db) as store:
        points, layers = store.points(summary.sweep_id), store.layers(summary.sweep_id)
    rows = list(csv.DictReader(io.StringIO(points_csv(points))))
    assert list(rows[0]) == list(POINT_CSV_COLUMNS)
    assert [r["point_hash"] for r in rows] == [p["point_hash"] for p in points]
    for r, p in zip(rows, points):
        assert int(r["sim_total_cycles"]) == p["sim_total_cycles"]
        assert float(r["sim_energy_pj"]) == p["sim_energy_pj"]
        assert r["pareto"] in ("0", "1")
    assert {r["pareto"] for r in rows} == {"0", "1"}
    buf = io.StringIO()
    assert layers_csv(points, layers, buf) == 16
    lrows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert list(lrows[0]) == list(LAYER_CSV_COLUMNS)
    assert [(r["point_hash"], r["layer"]) for r in lrows] == [
        (p["point_hash"], name) for p in points for name in ("conv", "fc")]
    assert all(r["workload"] == "tiny" and r["precision"] in ("int8", "int4") for r in lrows)


def test_cli_run_export_and_plot(tmp_path, capsys):
    spec, db = _write_spec(tmp_path), tmp_path / "c.sqlite"
    assert main(["sweep", str(spec), "--db", str(db), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "sweep: 8 points (8 run now, 0 already in" in out and "0 infeasible" in out
    assert main(["sweep", "--db", str(db), "--export", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 8
    layers_out, plots = tmp_path / "layers.csv", tmp_path / "plots"
    assert main(["sweep", str(spec), "--db", str(db), "--workers", "1", "--export", "csv",
                 "--layers", "--out", str(layers_out), "--plot", str(plots)]) == 0
    out = capsys.readouterr().out
    assert "8 run now" not in out and "0 run now, 8 already in" in out
    assert "16 rows" in out
    assert len(list(csv.DictReader(layers_out.open()))) == 16
    assert sorted(p.name for p in plots.iterdir()) == ["pareto-tiny-int4.png",
                                                       "pareto-tiny-int8.png"]


@pytest.mark.parametrize("argv, message", [
    (["sweep"], "give a spec to run"),
    (["sweep", "--db", "{db}", "--layers", "--plot", "x"], "--layers and --out go with"),
    (["sweep", "--db", "{db}", "--export", "csv", "--workers", "2"], "go with a spec"),
    (["sweep", "--db", "{tmp}/missing.sqlite", "--export", "csv"], "no such sweep database"),
    (["sweep", "{tmp}/bad.toml"], "grid.rows[0]: must be a positive integer"),
    (["sweep", "{spec}", "--db", "{db}", "--executor", "spark://x:1"], "executor"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, argv, message):
    spec = _write_spec(tmp_path)
    (tmp_path / "bad.toml").write_text(TINY_SPEC.replace("[8, 16]", "[0, 16]"))
    fill = {"db": str(tmp_path / "c.sqlite"), "tmp": str(tmp_path), "spec": str(spec)}
    assert main([a.format(**fill) for a in argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("lowbit: error:") and message in err


def test_sweeps_import_no_torch_kernels_or_compress(tmp_path):
    spec = _write_spec(tmp_path)
    code = ("import sys\nfrom lowbit.sweep import run_sweep\n"
            f"run_sweep({str(spec)!r}, {str(tmp_path / 'i.sqlite')!r}, workers=1)\n"
            "from lowbit.sweep import plot_pareto, SweepDB\n"
            f"plot_pareto(SweepDB({str(tmp_path / 'i.sqlite')!r}).points(), {str(tmp_path)!r})\n"
            "bad = [m for m in sys.modules if m.split('.')[0] == 'torch' or "
            "m.startswith(('lowbit.kernels', 'lowbit.compress', 'lowbit._native'))]\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
