"""The benchmark report (lowbit.benchtable, lowbit.targets, lowbit.report) and the CLI.

Reports are built from small synthetic pytest-benchmark JSON dicts: nothing is timed here.
``synthetic()`` is a JSON of the single-pass harness (no ``pass`` in extra_info),
``synthetic_passes()`` one of the interleaved harness (three passes).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lowbit import benchtable, report, targets
from lowbit.bench.config import (BINARY_OP, BINARY_SHAPES, FULL, GEMM_SHAPES, QUICK, STREAM_READ,
                                 W4_SHAPES, W4A8_OP, W4A16_OP, gemm_group)
from lowbit.bench.impls import all_impls, pass_order
from lowbit.benchrun import pytest_command
from lowbit.cli import main

SQUARE = (1024, 1024, 1024)
OPS = 2 * 1024 ** 3  # ops of the square GEMM


def _entry(group, impl, median, *, family="baseline", precision="int8", ops=OPS,
           nbytes=6 * 1024 ** 2, shape=SQUARE, fastest=None, pass_no=None):
    m, n, k = shape
    entry = {"group": group, "name": f"test[{impl}]",
             "extra_info": {"impl": impl, "family": family, "isa": impl, "precision": precision,
                            "ops": ops, "bytes": nbytes, "m": m, "n": n, "k": k},
             "stats": {"median": median, "min": fastest or median, "rounds": 3}}
    if pass_no is not None:
        entry["name"] = f"test[{group}-p{pass_no}-{impl}]"
        entry["extra_info"].update({"pass": pass_no, "passes": 3})
    return entry


def _peak(kind, best_s, median_s, ops):
    return {"group": "peak", "name": f"test_peak[{kind}]",
            "extra_info": {"impl": kind, "family": "peak", "precision": kind[:4], "ops": ops},
            "stats": {"median": median_s, "min": best_s, "rounds": 3}}


def synthetic() -> dict:
    """One square-GEMM group and both peaks; round numbers make every ratio exact."""
    g = gemm_group(*SQUARE)
    return {
        "datetime": "2026-01-01T00:00:00", "machine_info": {
            "cpu": {"brand_raw": "Test CPU"},
            "lowbit": {"version": "0.1.0", "cpu_features": ["avx2"], "threads": 2,
                       "torch_threads": 2, "blas_threads": "2", "blas_threads_pinned": True,
                       "dispatch_info": {"gemm_int8": {"selected": "avx2",
                                                       "available": ["avx2", "ref"]}},
                       "quick": True}},
        "benchmarks": [
            _entry(g, "numpy_fp32", 0.016, precision="fp32"),
            _entry(g, "lowbit[avx2]", 0.004, family="lowbit"),
            _entry(g, "torch_int_mm", 0.003),
            _entry(g, "lowbit[avx512_vnni]", 0.002, family="lowbit"),
            _entry(g, "torch_qlinear_dynamic", 0.0025),
            # int8 peak: OPS / 0.001 s = 2147.48 GOP/s at its best; fp32: a quarter of it
            _peak("int8_vnni", 0.001, 0.002, OPS),
            _peak("int8_vnni", 0.004, 0.008, OPS),  # a second, disturbed run: not the peak
            _peak("fp32_fma", 0.001, 0.001, OPS / 4),
        ],
    }


# Per-pass medians (ms) of the interleaved synthetic run; lowbit[portable] only in pass 0.
PASSES = {
    "lowbit[avx512_vnni]": ("lowbit", "int8", (2.0, 4.0, 2.0)),
    "lowbit[avx2]": ("lowbit", "int8", (4.0, 8.0, 1.5)),  # the fastest lowbit in pass 2
    "torch_int_mm": ("baseline", "int8", (3.0, 3.6, 2.4)),
    "torch_qlinear_dynamic": ("baseline", "int8", (2.5, 5.0, 3.2)),
    "numpy_fp32": ("baseline", "fp32", (16.0, 40.0, 12.0)),
    "lowbit[portable]": ("lowbit", "int8", (40.0,)),
}


def synthetic_passes() -> dict:
    """The square group timed in three interleaved passes (same machine and peaks).

    Per pass, best lowbit vs the better torch int8: 2.5/2.0 (qlinear), 3.6/4.0 (int_mm),
    2.4/1.5 (int_mm, against lowbit[avx2]) = 1.25x, 0.9x, 1.6x: median 1.25x. The ratio of
    the merged medians would instead be 3.0/2.0 = 1.5x.
    """
    data = synthetic()
    g = gemm_group(*SQUARE)
    data["benchmarks"] = [b for b in data["benchmarks"] if b["group"] == "peak"]
    for p in range(3):
        for impl, (family, precision, medians) in PASSES.items():
            if p < len(medians):
                data["benchmarks"].insert(-3, _entry(g, impl, medians[p] / 1e3, family=family,
                                                     precision=precision, pass_no=p))
    return data


def _group(summary, name):
    return next(g for g in summary["groups"] if g["name"] == name)


def test_summary_rates_ratios_and_peak_fractions():
    summary = benchtable.summarize(synthetic())
    assert summary["peaks"]["int8_vnni"]["gops"] == pytest.approx(OPS / 0.001 / 1e9)
    assert summary["peaks"]["int8_vnni"]["median_gops"] == pytest.approx(OPS / 0.002 / 1e9)
    assert summary["peaks"]["int8_vnni"]["runs"] == 2
    group = _group(summary, "gemm_int8-1024x1024x1024")
    assert (group["m"], group["n"], group["k"]) == SQUARE
    assert group["best_lowbit"] == "lowbit[avx512_vnni]"
    rows = {r["impl"]: r for r in group["rows"]}
    assert [r["impl"] for r in group["rows"]] == [  # fastest first
        "lowbit[avx512_vnni]", "torch_qlinear_dynamic", "torch_int_mm", "lowbit[avx2]",
        "numpy_fp32"]
    assert rows["lowbit[avx512_vnni]"]["gops"] == pytest.approx(OPS / 0.002 / 1e9)
    assert rows["lowbit[avx512_vnni]"]["peak_fraction"] == pytest.approx(0.5)
    assert rows["lowbit[avx2]"]["peak_fraction"] == pytest.approx(0.25)
    # fp32 rows are compared with the fp32 peak (a quarter of the int8 one here)
    assert rows["numpy_fp32"]["peak_fraction"] == pytest.approx(0.25)
    assert rows["torch_int_mm"]["lowbit_speedup"] == pytest.approx(1.5)
    assert rows["numpy_fp32"]["lowbit_speedup"] == pytest.approx(8.0)
    assert rows["lowbit[avx512_vnni]"]["lowbit_speedup"] == pytest.approx(1.0)
    assert rows["lowbit[avx2]"]["intensity"] == pytest.approx(OPS / (6 * 1024 ** 2))


def test_summary_of_passes_takes_median_of_pass_medians_and_per_pass_ratios():
    group = _group(benchtable.summarize(synthetic_passes()), "gemm_int8-1024x1024x1024")
    assert group["passes"] == 3
    rows = {r["impl"]: r for r in group["rows"]}
    assert [r["impl"] for r in group["rows"]] == [  # by median of pass medians
        "lowbit[avx512_vnni]", "torch_int_mm", "torch_qlinear_dynamic", "lowbit[avx2]",
        "numpy_fp32", "lowbit[portable]"]
    assert rows["lowbit[avx512_vnni]"]["median_s"] == pytest.approx(0.002)
    assert rows["lowbit[avx2]"]["median_s"] == pytest.approx(0.004)
    assert rows["torch_qlinear_dynamic"]["median_s"] == pytest.approx(0.0032)
    assert rows["lowbit[avx2]"]["min_s"] == pytest.approx(0.0015)
    assert rows["lowbit[avx512_vnni]"]["gops"] == pytest.approx(OPS / 0.002 / 1e9)
    assert rows["lowbit[avx512_vnni]"]["peak_fraction"] == pytest.approx(0.5)
    assert (rows["torch_int_mm"]["passes"], rows["torch_int_mm"]["rounds"]) == (3, 9)
    assert (rows["lowbit[portable]"]["passes"], rows["lowbit[portable]"]["rounds"]) == (1, 3)
    assert [pp["pass"] for pp in rows["torch_int_mm"]["per_pass"]] == [0, 1, 2]
    # the best lowbit: least median overall, but per pass the fastest of that pass
    assert group["best_lowbit"] == "lowbit[avx512_vnni]"
    assert [(b["pass"], b["impl"]) for b in group["per_pass_best"]] == [
        (0, "lowbit[avx512_vnni]"), (1, "lowbit[avx512_vnni]"), (2, "lowbit[avx2]")]
    # speedups within each pass: 3.0/2.0, 3.6/4.0, 2.4/1.5 -> median 1.5, spread 0.9-1.6
    r = rows["torch_int_mm"]
    assert r["lowbit_speedup"] == pytest.approx(1.5)
    assert (r["lowbit_speedup_min"], r["lowbit_speedup_max"]) == (pytest.approx(0.9),
                                                                  pytest.approx(1.6))
    assert rows["lowbit[avx512_vnni]"]["lowbit_speedup"] == pytest.approx(1.0)
    assert rows["lowbit[avx512_vnni]"]["lowbit_speedup_max"] == pytest.approx(2.0 / 1.5)
    assert rows["lowbit[portable]"]["lowbit_speedup"] == pytest.approx(20.0)  # pass 0 only


def test_pass_ratios_pick_the_better_baseline_within_each_pass():
    group = _group(benchtable.summarize(synthetic_passes()), "gemm_int8-1024x1024x1024")
    ratios = benchtable.pass_ratios(group, targets.INT8_BASELINES)
    assert [(p["pass"], p["best_lowbit"], p["baseline"]) for p in ratios] == [
        (0, "lowbit[avx512_vnni]", "torch_qlinear_dynamic"),
        (1, "lowbit[avx512_vnni]", "torch_int_mm"), (2, "lowbit[avx2]", "torch_int_mm")]
    assert [p["ratio"] for p in ratios] == pytest.approx([1.25, 0.9, 1.6])
    assert benchtable.pass_ratios(group, ("no_such_baseline",)) == []


def test_targets_of_passes_are_medians_of_per_pass_ratios_with_spread():
    results = targets.evaluate(benchtable.summarize(synthetic_passes()))
    vs_torch, vs_peak = [r for r in results if r["group"] == "gemm_int8-1024x1024x1024"]
    assert vs_torch["measured"] == pytest.approx(1.25)  # not 3.0 / 2.0 of the medians
    assert (vs_torch["min"], vs_torch["max"]) == (pytest.approx(0.9), pytest.approx(1.6))
    assert vs_torch["passes"] == 3 and vs_torch["status"] == targets.MET
    assert vs_torch["baseline"] == "torch_int_mm"  # 2 of the 3 passes
    assert [p["baseline"] for p in vs_torch["per_pass"]] == [
        "torch_qlinear_dynamic", "torch_int_mm", "torch_int_mm"]
    # peak: ops / fastest lowbit of the pass / ceiling = 1/2, 1/4, 1/1.5
    assert vs_peak["measured"] == pytest.approx(0.5)
    assert (vs_peak["min"], vs_peak["max"]) == (pytest.approx(0.25), pytest.approx(2 / 3))
    assert vs_peak["status"] == targets.MISSED
    # a goal between the per-pass median (1.25x) and the ratio of medians (1.5x) is missed
    strict = targets.Target("strict", SQUARE, 1.3, targets.INT8_BASELINES)
    [result] = targets.evaluate(benchtable.summarize(synthetic_passes()), [strict])
    assert result["status"] == targets.MISSED and result["measured"] == pytest.approx(1.25)
    rows = targets.target_rows(results)
    row = rows[[r["group"] for r in results].index("gemm_int8-1024x1024x1024")]
    assert row[2:] == ("torch_int_mm (2/3)", "1.25x (0.90-1.60)", "3", ">= 1.10x", "met")
    assert rows[results.index(vs_peak)][3:5] == ("50.0% (25.0-66.7)", "3")


def test_single_pass_json_is_pass_zero():
    """A JSON of the old harness (no extra_info["pass"]) is one pass: no spread shown."""
    summary = benchtable.summarize(synthetic())
    group = _group(summary, "gemm_int8-1024x1024x1024")
    assert group["passes"] == 1 and [b["pass"] for b in group["per_pass_best"]] == [0]
    assert all(r["passes"] == 1 and r["lowbit_speedup_min"] == r["lowbit_speedup_max"]
               for r in group["rows"])
    results = targets.evaluate(summary)
    vs_torch = results[[t.group for t in targets.default_targets()].index(group["name"])]
    assert vs_torch["min"] == vs_torch["max"] == pytest.approx(1.25)
    row = targets.target_rows(results)[results.index(vs_torch)]
    assert row[2:5] == ("torch_qlinear_dynamic", "1.25x", "1")


def test_passes_render_with_footnotes_and_per_pass_json(tmp_path):
    saved_report = report.write_report(tmp_path, synthetic_passes())
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved == json.loads(json.dumps(saved_report))
    vs_torch = next(t for t in saved["targets"] if t["group"] == "gemm_int8-1024x1024x1024")
    assert [p["ratio"] for p in vs_torch["per_pass"]] == pytest.approx([1.25, 0.9, 1.6])
    assert saved["groups"][0]["rows"][0]["per_pass"][1] == {
        "pass": 1, "median_s": pytest.approx(0.004), "min_s": pytest.approx(0.004),
        "rounds": 3}
    text = report.render(saved_report)
    line = next(ln for ln in text.splitlines() if ln.startswith("torch_int_mm"))
    assert line.split() == ["torch_int_mm", "3.00", "ms", "715.8", "33.3%", "1.50x", "3",
                            "9"]
    assert "median of an implementation's per-pass medians" in " ".join(text.split())
    assert "1.25x (0.90-1.60)" in text and "Passes per group: 3." in text
    md = (tmp_path / "report.md").read_text()
    assert " 1.25x (0.90-1.60) |" in md and "median over passes" in " ".join(md.split())


def test_summary_without_peak_or_lowbit_gives_none_not_errors():
    data = synthetic()
    data["benchmarks"] = [b for b in data["benchmarks"]
                          if b["group"] != "peak" and b["extra_info"]["family"] != "lowbit"]
    group = benchtable.summarize(data)["groups"][0]
    assert group["best_lowbit"] is None
    assert all(r["peak_fraction"] is None and r["lowbit_speedup"] is None
               for r in group["rows"])


def test_summary_rejects_json_not_written_by_lowbit_bench():
    with pytest.raises(ValueError, match="benchmarks"):
        benchtable.summarize({"machine_info": {}})
    data = synthetic()
    del data["benchmarks"][0]["extra_info"]["ops"]
    with pytest.raises(ValueError, match="lacks extra_info ops"):
        benchtable.summarize(data)


def test_targets_met_missed_and_not_measured():
    results = targets.evaluate(benchtable.summarize(synthetic()))
    by_group = {}
    for r in results:
        by_group.setdefault(r["group"], []).append(r)
    vs_torch, vs_peak = by_group["gemm_int8-1024x1024x1024"]
    # the better torch int8 is torch_qlinear_dynamic: 2.5 ms / 2 ms = 1.25x >= 1.1x
    assert vs_torch["baseline"] == "torch_qlinear_dynamic"
    assert vs_torch["measured"] == pytest.approx(1.25)
    assert vs_torch["goal"] == 1.1 and vs_torch["status"] == targets.MET
    # 50% of the int8 VNNI peak < 75%
    assert vs_peak["measured"] == pytest.approx(0.5) and vs_peak["status"] == targets.MISSED
    unmeasured = [r for r in results if r["group"] != "gemm_int8-1024x1024x1024"]
    assert unmeasured and all(r["status"] == targets.NOT_MEASURED and r["measured"] is None
                              for r in unmeasured)


def test_targets_cover_every_shape_with_the_right_goal():
    goals = {(t.group, t.baselines): t.goal for t in targets.default_targets()}
    for m, n, k in GEMM_SHAPES:
        goal = goals[(gemm_group(m, n, k), targets.INT8_BASELINES)]
        assert goal == (1.1 if m >= 128 else 1.0)
    assert goals[("gemm_int8-128x4096x4096", ("numpy_fp32",))] == 5.0
    assert goals[("gemm_int8-1024x1024x1024", ())] == 0.75


def test_speedup_target_missed_when_torch_is_faster():
    data = synthetic()
    for b in data["benchmarks"]:
        if b["extra_info"]["impl"] == "torch_int_mm":
            b["stats"]["median"] = 0.001  # twice as fast as the best lowbit
    vs_torch = targets.evaluate(benchtable.summarize(data))[
        [t.group for t in targets.default_targets()].index("gemm_int8-1024x1024x1024")]
    assert vs_torch["baseline"] == "torch_int_mm"
    assert vs_torch["measured"] == pytest.approx(0.5)
    assert vs_torch["status"] == targets.MISSED


def test_write_report_folder(tmp_path):
    out = tmp_path / "nested" / "rep"
    data = synthetic()
    written = report.write_report(out, data)
    assert sorted(p.name for p in out.iterdir()) == ["benchmark.json", "report.json",
                                                     "report.md"]
    assert json.loads((out / "benchmark.json").read_text()) == data
    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(json.dumps(written))
    assert set(saved) >= {"machine", "peaks", "groups", "targets", "lowbit_version"}
    assert saved["machine"]["cpu"] == "Test CPU"
    assert saved["machine"]["dispatch_info"]["gemm_int8"]["selected"] == "avx2"
    assert saved["groups"][0]["best_lowbit"] == "lowbit[avx512_vnni]"
    assert len(saved["targets"]) == len(targets.default_targets())
    md = (out / "report.md").read_text()
    for heading in ("# lowbit report", "## Machine", "## peak",
                    "## gemm_int8-1024x1024x1024", "## targets"):
        assert f"\n{heading}" in "\n" + md
    assert "| lowbit[avx512_vnni]" in md and "1.25x" in md and "missed" in md
    assert "| impl " in md and "|:--" in md  # markdown tables


def test_text_render_has_one_table_per_group():
    text = report.render(report.build_report(synthetic()))
    assert "== gemm_int8-1024x1024x1024" in text and "== targets ==" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("torch_int_mm"))
    assert "3.00 ms" in line and "1.50x" in line and "33.3%" in line


def test_rates_above_peak_are_flagged():
    data = synthetic()
    assert "exceed the measured peak" not in report.render(report.build_report(data))
    for b in data["benchmarks"]:
        if b["group"] == "peak":
            b["stats"]["min"] *= 10
    assert "exceed the measured peak" in report.render(report.build_report(data))


def test_prepare_out_dir_refuses_a_regular_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        report.prepare_out_dir(f)


@pytest.mark.parametrize(("seconds", "text"), [(2.5, "2.50 s"), (0.0123, "12.3 ms"),
                                               (0.000123, "123 us"), (5e-8, "50.0 ns")])
def test_fmt_seconds(seconds, text):
    assert benchtable.fmt_seconds(seconds) == text


def test_pytest_command_runs_only_bench_modules():
    cmd = pytest_command("/tmp/x.json", quick=True, keyword="1024x1024x1024")
    assert cmd[1:3] == ["-m", "pytest"]
    assert "python_files=bench_*.py" in cmd and "no:cacheprovider" in cmd
    assert "--lowbit-quick" in cmd
    assert cmd[cmd.index("-k") + 1] == "(1024x1024x1024) or peak"


def test_budget_splits_rounds_over_passes():
    assert (FULL.passes, QUICK.passes) == (5, 3)
    assert FULL.pass_seconds == pytest.approx(FULL.seconds / 5)
    assert FULL.rounds(1e-6) == FULL.max_rounds  # per pass
    assert FULL.rounds(FULL.pass_seconds / 4) == max(FULL.min_rounds, 4)
    assert FULL.rounds(FULL.slow_call) == 1 and FULL.first_pass_only(FULL.slow_call)
    assert not QUICK.first_pass_only(QUICK.slow_call / 2)


def test_pass_order_puts_what_the_targets_compare_first():
    order = [impl.name for impl in pass_order()]
    assert sorted(order) == sorted(impl.name for impl in all_impls())
    assert order.index("torch_int_mm") < order.index("numpy_fp32") < order.index("torch_fp32")
    assert all(order.index(name) > order.index("torch_fp32") for name in order
               if name in ("lowbit[portable]", "lowbit[numba]"))


def test_bench_suite_collects_every_group_interleaved():
    cmd = pytest_command(None, extra=("--collect-only",))
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    names = [impl.name for impl in pass_order()]
    assert {"torch_int_mm", "torch_qlinear_dynamic", "numpy_fp32", "torch_fp32"} < set(names)
    lines = done.stdout.splitlines()
    gemm = [ln.split("[", 1)[1][:-1] for ln in lines if "::test_gemm_int8[" in ln]
    # shape -> pass -> implementation: each pass times the whole group back to back
    assert gemm == [f"{gemm_group(*shape)}-p{p}-{name}" for shape in GEMM_SHAPES
                    for p in range(FULL.passes) for name in names]
    binary = [ln.split("[", 1)[1][:-1] for ln in lines if "::test_gemm_binary[" in ln]
    assert binary == [f"{gemm_group(*shape, op=BINARY_OP)}-p{p}-{impl.name}"
                      for shape in BINARY_SHAPES for p in range(FULL.passes)
                      for impl in pass_order(BINARY_OP)]
    assert lines[0].endswith("test_peak[int8_vnni-first]")  # peaks first and last
    assert "bench_peak.py::test_peak[int8_vnni-last]" in lines
    assert "[gemm_int8-1x4096x4096-lowbit[ref]]" not in done.stdout
    for op in (W4A16_OP, W4A8_OP):
        w4 = [ln.split("[", 1)[1][:-1] for ln in lines if f"::test_{op}[" in ln]
        assert w4 == [f"{gemm_group(*shape, op=op)}-p{p}-{impl.name}" for shape in W4_SHAPES
                      for p in range(FULL.passes) for impl in pass_order(op)]
    # the read bandwidth right after the first peaks and after everything else
    tests = [ln for ln in lines if "::" in ln]
    first = [i for i, ln in enumerate(tests) if "test_peak[" in ln and "-first]" in ln]
    assert tests[len(first)].endswith("test_bandwidth[first]")
    assert tests[-1].endswith("test_bandwidth[last]")


def test_cli_info_exits_zero_and_names_gemm_int8():
    done = subprocess.run([sys.executable, "-m", "lowbit", "info"], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert done.returncode == 0, done.stderr
    assert any(ln.startswith("gemm_int8: selected ") for ln in done.stdout.splitlines())


def test_cli_bench_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--json" in out and "--quick" in out and "-k" in out


def test_cli_run_into_a_regular_file_is_a_one_line_error(tmp_path):
    f = tmp_path / "taken"
    f.write_text("x")
    done = subprocess.run([sys.executable, "-m", "lowbit", "run", "--out", str(f)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lowbit: error: --out:"), done.stderr
    assert f.read_text() == "x"


def test_cli_bench_json_into_a_directory_is_an_error(tmp_path, capsys):
    assert main(["bench", "--json", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a directory" in err


# --- int4 groups and the read bandwidth ------------------------------------------------------

W4_BIG = (1, 16384, 8192)
W4_BYTES = 80_000_000  # bytes of one call at W4_BIG in this synthetic run


def _bandwidth(when, best_s, median_s, nbytes=256 << 20):
    return {"group": "bandwidth", "name": f"test_bandwidth[{when}]",
            "extra_info": {"impl": "dram_read", "family": "bandwidth", "precision": "bytes",
                           "ops": 0, "bytes": nbytes, "when": when},
            "stats": {"median": median_s, "min": best_s, "rounds": 10}}


def synthetic_w4() -> dict:
    """gemm_w4a16 at 1x4096x4096 and 1x16384x8192 in two passes, and two bandwidth runs.

    dram_read: 2^28 bytes in 5 ms at best -> 53.687 GB/s (the later, disturbed run is slower).
    1x16384x8192: lowbit's best 2.0 ms, 1.6 ms -> 40 and 50 GB/s -> 74.5% and 93.1%.
    1x4096x4096: torch 0.33 ms / lowbit 0.15 and 0.11 ms -> 2.2x and 3.0x.
    """
    data = synthetic()
    data["benchmarks"] = [b for b in data["benchmarks"] if b["group"] == "peak"] + [
        _bandwidth("first", 0.005, 0.006), _bandwidth("last", 0.010, 0.011)]
    small, big = gemm_group(1, 4096, 4096, op=W4A16_OP), gemm_group(*W4_BIG, op=W4A16_OP)
    for p, (lb_small, lb_big) in enumerate(((0.15e-3, 2.0e-3), (0.11e-3, 1.6e-3))):
        for group, shape, rows in (
                (small, (1, 4096, 4096), (("lowbit[avx512_vnni]", "lowbit", lb_small),
                                          ("torch_int4_woq", "baseline", 0.33e-3))),
                (big, W4_BIG, (("lowbit[avx512_vnni]", "lowbit", lb_big),
                               ("lowbit[avx512]", "lowbit", 2 * lb_big),
                               ("torch_int4_woq", "baseline", 3.0e-3)))):
            for impl, family, median in rows:
                data["benchmarks"].append(_entry(
                    group, impl, median, family=family, precision="w4a16" if family == "lowbit"
                    else "int4", ops=2 * shape[0] * shape[1] * shape[2], nbytes=W4_BYTES,
                    shape=shape, pass_no=p))
    return data


def test_bandwidth_is_a_ceiling_not_a_group():
    summary = benchtable.summarize(synthetic_w4())
    assert [g["name"] for g in summary["groups"]] == [
        "gemm_w4a16-1x4096x4096", "gemm_w4a16-1x16384x8192"]
    bw = summary["bandwidth"]["dram_read"]
    assert bw["gbps"] == pytest.approx((256 << 20) / 0.005 / 1e9)
    assert bw["median_gbps"] == pytest.approx((256 << 20) / 0.006 / 1e9) and bw["runs"] == 2
    assert benchtable.summarize(synthetic())["bandwidth"] == {}
    rows = {r["impl"]: r for r in _group(summary, "gemm_w4a16-1x16384x8192")["rows"]}
    assert rows["lowbit[avx512]"]["peak_fraction"] is not None  # w4a16: against fp32_fma
    assert rows["torch_int4_woq"]["peak_fraction"] is None


def test_w4_targets_speedup_and_bandwidth_fraction():
    results = {(r["group"], r["name"]): r
               for r in targets.evaluate(benchtable.summarize(synthetic_w4()))}
    vs_torch = results[("gemm_w4a16-1x4096x4096", "best lowbit w4a16 vs torch_int4_woq")]
    assert [p["ratio"] for p in vs_torch["per_pass"]] == pytest.approx([2.2, 3.0])
    assert vs_torch["measured"] == pytest.approx(2.6) and vs_torch["status"] == targets.MET
    bw = results[("gemm_w4a16-1x16384x8192", "best lowbit w4a16 / DRAM read bandwidth")]
    ceiling = (256 << 20) / 0.005 / 1e9
    want = [W4_BYTES / 2.0e-3 / 1e9 / ceiling, W4_BYTES / 1.6e-3 / 1e9 / ceiling]
    assert [p["ratio"] for p in bw["per_pass"]] == pytest.approx(want)
    assert bw["measured"] == pytest.approx(sum(want) / 2) and bw["status"] == targets.MET
    assert bw["baseline"] == "dram_read" and bw["unit"] == "of bandwidth"
    assert [p["best_lowbit"] for p in bw["per_pass"]] == ["lowbit[avx512_vnni]"] * 2
    row = targets.target_rows([bw])[0]
    assert row[2:] == ("dram_read", "83.8% (74.5-93.1)", "2", ">= 80.0%", "met")
    # without a bandwidth measurement the target is not measured
    data = synthetic_w4()
    data["benchmarks"] = [b for b in data["benchmarks"] if b["group"] != "bandwidth"]
    again = {(r["group"], r["name"]): r for r in targets.evaluate(benchtable.summarize(data))}
    assert again[("gemm_w4a16-1x16384x8192", bw["name"])]["status"] == targets.NOT_MEASURED
    w4a8 = [t for t in targets.default_targets() if t.op == W4A8_OP]
    assert len(w4a8) == 3 and {t.group for t in w4a8} >= {gemm_group(*W4_BIG, op=W4A8_OP)}


def test_w4_bandwidth_target_prefers_the_read_timed_in_the_same_pass():
    """stream_read rows (the kernel's byte count read in the same pass) set the ceiling per
    pass: 1.8 ms / 2.0 ms and 1.5 ms / 1.6 ms of the same bytes -> 90% and 93.75%, whatever
    the session-end dram_read loop said."""
    data = synthetic_w4()
    big = gemm_group(*W4_BIG, op=W4A16_OP)
    for p, median in enumerate((1.8e-3, 1.5e-3)):
        data["benchmarks"].append(_entry(big, STREAM_READ, median, family="baseline",
                                         precision="bytes", ops=0, nbytes=W4_BYTES,
                                         shape=W4_BIG, pass_no=p))
    results = {(r["group"], r["name"]): r for r in targets.evaluate(benchtable.summarize(data))}
    bw = results[(big, "best lowbit w4a16 / DRAM read bandwidth")]
    assert [p["ratio"] for p in bw["per_pass"]] == pytest.approx([0.9, 0.9375])
    assert bw["baseline"] == STREAM_READ and bw["status"] == targets.MET


def test_report_renders_the_bandwidth_table(tmp_path):
    saved = report.write_report(tmp_path, synthetic_w4())
    assert saved["bandwidth"]["dram_read"]["runs"] == 2
    text = report.render(saved)
    assert "== bandwidth ==" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("dram_read"))
    assert line.split() == ["dram_read", "53.7", "44.7", "2"]
    md = (tmp_path / "report.md").read_text()
    assert "\n## bandwidth" in md and "| dram_read" in md
    assert "== bandwidth ==" not in report.render(report.build_report(synthetic()))
