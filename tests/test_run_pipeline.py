"""`lowbit run`'s pipeline: each step on small inputs, failure isolation, the report files and
the self-contained page. The full `lowbit run` is not run here (minutes)."""
from __future__ import annotations

import csv
import functools
import io
import json
import re

import pytest
import torch
from torch import nn

from lowbit import cli, run_cli, run_pipeline as rp
from lowbit.run_report import write_run_report
from lowbit.run_tables import FAILED, OK, StepResult, Table

TINY = rp.Budget(kd_epochs=1, binary_epochs=1, latency_repeats=2, bench_keyword="peak",
                 zoo=("resnet18",), profiles=("edge-npu-32x32",))


def _ctx(tmp_path, budget=TINY) -> rp.RunContext:
    return rp.RunContext(tmp_path, budget, lambda *a: None)


@pytest.fixture(scope="module")
def baseline_ctx(tmp_path_factory):
    ctx = _ctx(tmp_path_factory.mktemp("base"))
    res = rp.step_baseline(ctx)
    return ctx, res


def _ok_step(ctx):
    res = StepResult("fine", "A fine step")
    res.tables.append(Table("fine", "fine table", ("a", "b"), [("x", 1.5), ("y", None)]))
    return res


def _broken_step(ctx):
    raise RuntimeError("boom in the middle")


# -------------------------------------------------------------------------------- records
def test_table_renders_csv_markdown_and_rejects_ragged_rows():
    t = Table("t", "T", ("name", "value"), [("a|b", 0.123456), ("c", None)])
    assert list(csv.reader(io.StringIO(t.to_csv()))) == [["name", "value"], ["a|b", "0.123456"],
                                                         ["c", ""]]
    assert t.to_markdown().splitlines()[2] == "| a\\|b | 0.1235 |"
    with pytest.raises(ValueError, match="2 headers"):
        Table("t", "T", ("a", "b"), [(1,)])


def test_median_latency_restores_threads_and_rejects_zero_repeats():
    from lowbit import kernels

    before = torch.get_num_threads(), kernels.num_threads()
    assert rp.median_latency(nn.Linear(4, 2), torch.zeros(3, 4), 3) > 0
    assert (torch.get_num_threads(), kernels.num_threads()) == before
    with pytest.raises(ValueError, match="repeats"):
        rp.median_latency(nn.Linear(4, 2), torch.zeros(3, 4), 0)


class _Recorder(nn.Module):
    """Appends (its name, torch threads) to ``log`` on every call."""

    def __init__(self, name, log):
        super().__init__()
        self.name, self.log = name, log

    def forward(self, x):
        self.log.append((self.name, torch.get_num_threads()))
        return x


def test_median_latencies_interleave_models_on_the_given_threads():
    log = []
    a, b = _Recorder("a", log), _Recorder("b", log)
    assert all(t > 0 for t in rp.median_latencies([a, b], torch.zeros(2), 3))
    assert [n for n, _ in log] == ["a", "b"] * 4          # one warm-up each, then rounds
    assert {t for _, t in log} == {1}
    log.clear()
    before = torch.get_num_threads()
    rp.median_latencies([a], torch.zeros(2), 2, threads=None)
    assert {t for _, t in log} == {before} == {torch.get_num_threads()}
    with pytest.raises(ValueError, match="repeats"):
        rp.median_latencies([a, b], torch.zeros(2), 0)


# -------------------------------------------------------------------------------- steps
def test_step_baseline_measures_the_trained_cnn(baseline_ctx):
    ctx, res = baseline_ctx
    assert res.status == OK and ctx.fp32 is not None
    (row,) = res.tables[0].rows
    assert row[0] == "digits-cnn fp32" and 0.9 < row[1] <= 1.0 and row[2] > 0


@pytest.mark.filterwarnings("ignore:.*K not a multiple of:RuntimeWarning")  # conv1: K = 9
@pytest.mark.parametrize("build, kind", [
    (rp.compress_int8, "LowbitConv2d"), (rp.compress_int4, "LowbitConv2d"),
    (rp.compress_nm24, "LowbitConv2d"), (rp.compress_channels, "LowbitConv2d"),
    (rp.compress_binary, "BinaryConv2d")])
def test_each_compression_keeps_the_teacher_and_classifies(baseline_ctx, build, kind):
    from lowbit.compress import digits_loaders, evaluate

    ctx, _ = baseline_ctx
    before = {k: v.clone() for k, v in ctx.fp32.state_dict().items()}
    model = build(ctx.fp32, TINY)
    assert type(model.conv2).__name__ == kind
    assert all(torch.equal(v, ctx.fp32.state_dict()[k]) for k, v in before.items())
    assert evaluate(model, digits_loaders()[1]) > 0.5   # ten classes: chance is 0.1
    if build is rp.compress_nm24:
        storage = model.conv2.lowbit_storage()
        assert (storage["format"], storage["sparsity_kind"]) == ("sparse24", "2:4")
    if build is rp.compress_channels:
        assert model.conv2.out_channels == ctx.fp32.conv2.out_channels // 2


def test_step_compress_times_the_pruned_model_on_the_kernels(baseline_ctx, monkeypatch):
    """The channels + KD row runs on lowbit's kernels, and its table against the dense int8
    model (the same recipe) has one row per batch of PRUNED_LATENCY_BATCHES."""
    ctx, _ = baseline_ctx
    monkeypatch.setattr(rp, "COMPRESSIONS", tuple(c for c in rp.COMPRESSIONS if c[0] in
                                                  (rp.INT8_NAME, rp.CHANNELS_NAME)))
    monkeypatch.setattr(ctx, "variants", ctx.variants[:1])
    res = rp.step_compress(ctx)
    assert res.status == OK, res.error
    rows = {r[0]: r for r in res.tables[0].rows}
    assert rows[rp.CHANNELS_NAME][1].startswith("lowbit gemm_int8")
    pruned = next(v for v in ctx.variants if v.name == rp.CHANNELS_NAME)
    assert type(pruned.model.conv2).__name__ == "LowbitConv2d"
    table = res.tables[1]
    assert table.name == "compress_pruned_kernels"
    assert [r[0] for r in table.rows] == list(rp.PRUNED_LATENCY_BATCHES)
    assert all(r[1] > 0 and r[2] > 0 and r[3] == pytest.approx(r[2] / r[1]) for r in table.rows)
    assert re.search(r"MACs per image: pruned [\d,]+ = 25\.6% of dense 905,728", table.note)


def test_step_compress_without_baseline_fails_clearly(tmp_path):
    res = rp.run_step(rp.step_compress, _ctx(tmp_path))
    assert res.status == FAILED and "baseline" in res.error


def test_step_simulate_zoo_and_digits_models(tmp_path):
    ctx = _ctx(tmp_path)
    ctx.variants = [rp.Variant("fp32", nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), "torch")]
    res = rp.step_simulate(ctx)
    rows = res.tables[0].rows
    assert [r[0] for r in rows] == ["resnet18", "digits-cnn fp32"]
    assert all(r[1] == "edge-npu-32x32" and r[2] > 0 and r[3] > 0 for r in rows)


def test_step_roofline_without_host_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    res = rp.step_roofline(_ctx(tmp_path))
    llm = next(t for t in res.tables if t.name == "roofline_llm")
    assert {(r[0], r[1]) for r in llm.rows} == {(d, p) for d in ("h100-sxm", rp.ROOFLINE_NPU)
                                                for p in rp.LLM_PRECISIONS}
    h100 = {r[1]: r[3] for r in llm.rows if r[0] == "h100-sxm"}
    assert h100["w4a16"] > h100["w8a8"] > h100["w16a16"] > 0   # decode is bandwidth-bound
    assert any("host skipped" in n for n in res.notes)
    assert all(p.is_file() and p.read_bytes()[:4] == b"\x89PNG" for p in res.plots.values())


def test_step_bench_tables_from_saved_json(tmp_path, monkeypatch):
    from test_cli_report import synthetic

    from lowbit import benchrun

    calls = []

    def fake_run(json_path, log_path, *, quick, keyword, progress):
        calls.append((quick, keyword))
        progress(50)
        return synthetic()

    monkeypatch.setattr(benchrun, "run_benchmarks", fake_run)
    ticks = []
    ctx = rp.RunContext(tmp_path, TINY, lambda *a: ticks.append(a))
    res = rp.step_bench(ctx)
    assert calls == [(True, "peak")] and ctx.bench_data == synthetic()
    assert ticks == [("bench", 0, 100), ("bench", 50, 100), ("bench", 100, 100)]
    names = [t.name for t in res.tables]
    assert "bench_peak" in names and "bench_targets" in names
    assert "bench_gemm_int8-1024x1024x1024" in names
    assert json.loads((tmp_path / "report.json").read_text())["groups"]


# -------------------------------------------------------------------------------- pipeline
def test_a_failing_step_keeps_the_others_and_is_reported(tmp_path):
    result = rp.run_pipeline(tmp_path / "out", steps=(_broken_step, _ok_step))
    assert [s.status for s in result.steps] == [FAILED, OK] and not result.ok
    assert "RuntimeError: boom in the middle" in result.steps[0].error
    index = write_run_report(result)
    page, md = index.read_text(), (tmp_path / "out" / "report.md").read_text()
    for text in (page, md):
        assert "boom in the middle" in text and "fine table" in text
    assert (tmp_path / "out" / "fine.csv").read_text() == "a,b\nx,1.5\ny,\n"
    saved = json.loads((tmp_path / "out" / "run.json").read_text())
    assert [s["status"] for s in saved["steps"]] == [FAILED, OK]


def test_cli_run_exit_status_follows_the_steps(tmp_path, monkeypatch, capsys):
    for steps, code in (((_broken_step, _ok_step), 1), ((_ok_step,), 0)):
        monkeypatch.setattr(run_cli, "run_pipeline",
                            functools.partial(rp.run_pipeline, steps=steps))
        out = tmp_path / f"rep{code}"
        assert cli.main(["run", "--quick", "--out", str(out)]) == code
        line = capsys.readouterr().out.strip().splitlines()[-1]
        assert line.startswith("lowbit run: ") and str(out / "index.html") in line
        assert ("1 failed (_broken_step)" in line) == (code == 1)


def test_html_is_self_contained(tmp_path):
    png = tmp_path / "p.png"
    rp.plot_accuracy_latency([rp.Variant("a", None, "x", 0.9, 1.0),
                              rp.Variant("b", None, "x", 0.8, 0.5)], png)
    step = _ok_step(None)
    step.plots["a plot"] = png
    result = rp.RunResult(tmp_path, True, [step], 1.0)
    page = write_run_report(result).read_text()
    refs = re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', page)
    assert refs and all(r.startswith(("data:", "#")) for r in refs)
    assert "data:image/png;base64," in page
    assert not re.search(r"<link|<script|url\(|@import", page)


@pytest.mark.parametrize("budget", [rp.FULL, rp.QUICK], ids=["full", "quick"])
def test_bench_keyword_is_valid_and_full_covers_every_target(budget):
    import subprocess

    from lowbit import targets
    from lowbit.benchrun import bench_env, pytest_command

    cmd = pytest_command(None, quick=True, keyword=budget.bench_keyword,
                         extra=("--collect-only",))
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env=bench_env())
    assert done.returncode == 0, done.stdout[-2000:]
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    groups = {i.split("[", 1)[1].rsplit("-p", 1)[0] for i in ids if "-p" in i}
    if budget is rp.FULL:
        wanted = {t.group for t in targets.default_targets()} - set(rp.FULL_BENCH_OMITS)
        assert wanted <= groups and not set(rp.FULL_BENCH_OMITS) & groups
    else:
        assert groups == {"gemm_int8-1024x1024x1024"}
    assert any("bench_peak.py" in i for i in ids)


def test_bench_progress_reads_pytest_percentages(tmp_path):
    from lowbit.benchrun import _percent_done

    log = tmp_path / "bench.log"
    log.write_text("collecting ...\n")
    assert _percent_done(log) is None
    log.write_text("....... [ 10%]\n....... [ 21%]\n....")
    assert _percent_done(log) == 21
