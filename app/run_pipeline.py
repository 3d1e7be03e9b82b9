"""``lowbit run``: the main job as a pipeline of independent steps.

Steps, in order (each a small function of a ``RunContext``, returning a ``StepResult``):

1. ``step_baseline``: the digits CNN (``get_model``, cached), fp32 accuracy and latency;
2. ``step_compress``: int8 static (KL), int4 weight-only g32, 2:4 + KD, 50% L1 channels + KD
   (then int8 static), XNOR binary + KD; accuracy and latency of each against fp32 torch,
   and the channel-pruned model against the dense int8 one on the kernels at several batches;
3. ``step_bench``: the quick kernel benchmark (``benchrun``) and its speed targets;
4. ``step_simulate``: the zoo nets and the compressed models on the NPU profiles;
5. ``step_roofline``: host (when calibrated), h100-sxm and an NPU; Llama-2-7B decode at
   w16a16 / w8a8 / w4a16.

``run_pipeline`` runs them, catching each step's exception into its ``StepResult`` (status
"failed", the error text), so one failure never loses another step's results. Library code:
progress goes through the ``progress(step, done, total)`` callback, nothing is printed.
"""
from __future__ import annotations

import contextlib
import copy
import json
import statistics
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .run_tables import FAILED, OK, StepResult, Table

Progress = Callable[[str, int, int], None]

LATENCY_BATCH = 64          # images per timed forward pass (one test batch)
PRUNED_LATENCY_BATCHES = (1, 64, 450)  # pruned vs dense on the kernels; 450: the test split
NPU_PROFILES = ("edge-npu-32x32", "tpu-v1", "eyeriss-v1", "gemmini")
ROOFLINE_NPU = "edge-npu-32x32"
ZOO_NETS = ("resnet18", "mobilenetv2", "bert-base")
LLM_PRECISIONS = ("w16a16", "w8a8", "w4a16")
LLM_WORKLOAD = "llama2-7b-decode"


@dataclass(frozen=True)
class Budget:
    """How much work each step does; ``QUICK`` is ``lowbit run --quick``."""

    kd_epochs: int            # distillation epochs after pruning
    binary_epochs: int        # distillation epochs of the binarized model
    latency_repeats: int      # timed forward passes per model (median reported)
    bench_keyword: str | None  # pytest -k subset of the kernel benchmark (None: all)
    zoo: tuple[str, ...]
    profiles: tuple[str, ...]


# The benchmark groups the speed targets read but gemm_int8-512x4096x11008 (the whole quick
# suite takes over 10 minutes on 2 busy cores; that group alone about a minute, and its target
# shows "not measured"); the peak group always runs. -k takes no "%": spmm_csr-10 is 10%.
FULL_BENCH_OMITS = ("gemm_int8-512x4096x11008",)
FULL_BENCH = ("gemm_int8-1x4096x4096 or gemm_int8-16x4096x4096 or gemm_int8-128x4096x4096 or "
              "gemm_int8-1024x1024x1024 or gemm_int8-3136x64x576 or "
              "gemm_binary-1024x1024x4096 or "
              "gemm_w4a16-1x4096x4096 or gemm_w4a16-8x4096x4096 or gemm_w4a16-1x16384x8192 or "
              "gemm_w4a8-1x4096x4096 or gemm_w4a8-8x4096x4096 or gemm_w4a8-1x16384x8192 or "
              "gemm_sparse24-1x4096x4096 or gemm_sparse24-128x4096x4096 or "
              "spmm_csr-10 or bandwidth")
QUICK_BENCH = "gemm_int8-1024x1024x1024"  # plus the peak group (~30 s of the minute)
FULL = Budget(kd_epochs=4, binary_epochs=8, latency_repeats=30, bench_keyword=FULL_BENCH,
              zoo=ZOO_NETS, profiles=NPU_PROFILES)
QUICK = Budget(kd_epochs=1, binary_epochs=2, latency_repeats=7, bench_keyword=QUICK_BENCH,
               zoo=("resnet18",), profiles=NPU_PROFILES[:2])


@dataclass
class Variant:
    """One model of the compression table and how it runs."""

    name: str
    model: object            # torch.nn.Module
    runs_on: str             # what executes its GEMMs
    accuracy: float | None = None
    latency_ms: float | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class RunContext:
    """What the steps share: the output folder, the budget, and the models made so far."""

    out: Path
    budget: Budget
    progress: Progress
    fp32: object = None                                   # the trained digits CNN
    variants: list[Variant] = field(default_factory=list)
    bench_data: dict | None = None                        # pytest-benchmark JSON

    def tick(self, step: str, done: int, total: int) -> None:
        self.progress(step, done, total)


def _no_progress(step: str, done: int, total: int) -> None:
    return None


# --------------------------------------------------------------------------------------------
# measurement helpers
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def thread_count(n: int | None):
    """torch and lowbit's kernels on ``n`` threads each (None: as configured), restored
    after. One thread by default in the measurements: on a shared 2-core machine two
    threads per library mostly measure the other processes' load."""
    import torch

    from lowbit import kernels

    before = torch.get_num_threads(), kernels.num_threads()
    if n is not None:
        torch.set_num_threads(n)
        kernels.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        kernels.set_num_threads(before[1])


def median_latencies(models, x, repeats: int, *, threads: int | None = 1) -> list[float]:
    """Median wall time (seconds) of a forward pass on ``x`` of each of ``models``, timed
    interleaved: each of ``repeats`` rounds runs every model once in turn, so a change of
    load on a shared machine slows them alike. Eval mode, no grad, one warm-up pass each
    (packed-weight caches, first-call costs), ``threads`` threads (None: as configured)."""
    import torch

    if repeats < 1:
        raise ValueError(f"repeats: must be >= 1, got {repeats!r}")
    models = list(models)
    times: list[list[float]] = [[] for _ in models]
    with torch.no_grad(), thread_count(threads):
        for model in models:
            model.eval()
            model(x)
        for _ in range(repeats):
            for model, out in zip(models, times):
                t0 = time.perf_counter()
                model(x)
                out.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def median_latency(model, x, repeats: int) -> float:
    """``median_latencies`` of one model, one thread."""
    return median_latencies([model], x, repeats)[0]


def _test_batch(n: int = LATENCY_BATCH):
    from lowbit.compress import load_digits_split

    return load_digits_split().x_test[:n]


def _measure(ctx: RunContext, v: Variant, test_loader, x) -> None:
    from lowbit.compress import evaluate

    v.accuracy = evaluate(v.model, test_loader)
    v.latency_ms = median_latency(v.model, x, ctx.budget.latency_repeats) * 1e3


# --------------------------------------------------------------------------------------------
# step 1: the fp32 baseline
# --------------------------------------------------------------------------------------------
def step_baseline(ctx: RunContext) -> StepResult:
    from lowbit.compress import digits_loaders, get_model

    res = StepResult("baseline", "Digits CNN, fp32")
    ctx.tick(res.name, 0, 2)
    model = get_model("digits-cnn")
    ctx.tick(res.name, 1, 2)
    _, test = digits_loaders()
    base = Variant("fp32", model, "torch fp32")
    _measure(ctx, base, test, _test_batch())
    ctx.fp32 = model
    ctx.variants = [base]
    ctx.tick(res.name, 2, 2)
    res.tables.append(Table("baseline", "fp32 digits CNN",
                            ("model", "test accuracy", f"latency ms (batch {LATENCY_BATCH})"),
                            [("digits-cnn fp32", base.accuracy, base.latency_ms)]))
    return res


# --------------------------------------------------------------------------------------------
# step 2: compression
# --------------------------------------------------------------------------------------------
INT8_RECIPE = "int8-static"   # Int8StaticConfig(calibrator="kl"), calibration_loader(256)
CHANNELS_PIPELINE = f"prune-l1:0.5,distill,{INT8_RECIPE}"


def compress_int8(teacher, budget: Budget):
    from lowbit.compress import compress_pipeline

    return compress_pipeline(teacher, INT8_RECIPE, simulate=False).final.model


def compress_int4(teacher, budget: Budget):
    from lowbit.compress import Int4WeightOnlyConfig, export, quantize

    return export(quantize(copy.deepcopy(teacher), Int4WeightOnlyConfig(group_size=32)))


def compress_nm24(teacher, budget: Budget):
    from lowbit.compress import (Int8StaticConfig, NMConfig, calibration_loader,
                                 distill_finetune, export, finalize, prune, quantize)

    student = prune(copy.deepcopy(teacher), NMConfig(2, 4))
    distill_finetune(teacher, student, epochs=budget.kd_epochs, keep_masks=True)
    # int8 per-channel quantization keeps zeros zero, so the 2:4 pattern survives into the
    # integer weights that export(sparse24=True) puts on gemm_sparse24
    student = quantize(finalize(student), Int8StaticConfig(calibrator="kl"),
                       calibration=calibration_loader(256))
    return export(student, sparse24=True)


def compress_channels(teacher, budget: Budget):
    """50% L1 channels (physically smaller) + KD, then int8 static and export: the same
    recipe as ``compress_int8``, so the two run on the kernels the same way."""
    from lowbit.compress import compress_pipeline

    return compress_pipeline(teacher, CHANNELS_PIPELINE, kd_epochs=budget.kd_epochs,
                             simulate=False, reference=False).final.model


def compress_binary(teacher, budget: Budget):
    from lowbit.compress import BinaryConfig, distill_finetune, quantize, use_binary_kernels

    from torch import nn

    student = copy.deepcopy(teacher)
    # XNOR-Net order BN -> sign -> conv: a ReLU before a binary conv would make every sign +1
    student.relu1, student.relu2 = nn.Identity(), nn.Identity()
    quantize(student, BinaryConfig())
    distill_finetune(teacher, student, epochs=budget.binary_epochs, lr=2e-3)
    use_binary_kernels(student.eval())
    return student


INT8_NAME = "int8 static (KL)"
CHANNELS_NAME = "channels 50% L1 + KD, int8"
# name, builder, what runs the GEMMs
COMPRESSIONS = (
    (INT8_NAME, compress_int8, "lowbit gemm_int8 (export, requantization fused between layers)"),
    ("int4 weight-only g32", compress_int4, "lowbit gemm_w4a16 (export; conv1, K=9, in float)"),
    ("2:4 + KD, int8", compress_nm24,
     "lowbit gemm_sparse24 (export(sparse24=True); conv1, K=9, dense int8)"),
    (CHANNELS_NAME, compress_channels,
     "lowbit gemm_int8 (export as int8 static (KL); the smaller dense model)"),
    ("binary XNOR + KD", compress_binary,
     "lowbit gemm_binary (conv2, conv3; ReLU1/2 removed, XNOR-Net BN -> sign -> conv)"),
)


def step_compress(ctx: RunContext) -> StepResult:
    from lowbit.compress import digits_loaders, profile

    res = StepResult("compress", "Compressed digits CNN")
    if ctx.fp32 is None:
        raise RuntimeError("needs the fp32 model of the baseline step, which did not finish")
    _, test = digits_loaders()
    x = _test_batch()
    base = ctx.variants[0]
    base_bytes = profile(ctx.fp32, x[:1]).bytes
    rows = [("fp32", base.runs_on, base.accuracy, base.latency_ms, 1.0, 1.0)]
    errors = []
    for i, (name, build, runs_on) in enumerate(COMPRESSIONS):
        ctx.tick(res.name, i, len(COMPRESSIONS))
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model = build(ctx.fp32, ctx.budget)
            v = Variant(name, model, runs_on,
                        notes=sorted({f"{name}: {w.message}" for w in caught}))
            _measure(ctx, v, test, x)
        except Exception as exc:  # one compression failing keeps the others
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        ctx.variants.append(v)
        res.notes += v.notes
        size = profile(model, x[:1]).bytes
        rows.append((name, runs_on, v.accuracy, v.latency_ms, base.latency_ms / v.latency_ms,
                     base_bytes / size))
    ctx.tick(res.name, len(COMPRESSIONS), len(COMPRESSIONS))
    res.tables.append(Table(
        "compress", "Compressed models: accuracy and latency",
        ("model", "runs on", "test accuracy", f"latency ms (batch {LATENCY_BATCH})",
         "speedup vs fp32", "weight compression"), rows,
        note=(f"Median of {ctx.budget.latency_repeats} forward passes of {LATENCY_BATCH} test "
              f"images after a warm-up, one thread (torch and lowbit); accuracy on the "
              f"{len(test.dataset)}-image digits test split. KD: "
              f"offline distillation from the fp32 model (T=4, lambda=0.5), "
              f"{ctx.budget.kd_epochs} epochs after pruning, {ctx.budget.binary_epochs} for "
              f"binary. Weight compression: fp32 bytes over the model's stored bytes "
              f"(profile(); exported layers count their packed kernel buffers). Shared "
              f"machine: latencies are indicative.")))
    by_name = {v.name: v for v in ctx.variants}
    if CHANNELS_NAME in by_name and INT8_NAME in by_name:
        res.tables.append(pruned_on_kernels(by_name[CHANNELS_NAME], by_name[INT8_NAME],
                                            base.accuracy, ctx.budget.latency_repeats))
    if errors:
        res.status = FAILED
        res.error = "; ".join(errors)
    return res


def pruned_on_kernels(pruned: Variant, dense: Variant, fp32_accuracy: float,
                      repeats: int) -> Table:
    """The channel-pruned model against the dense one, both exported the same way, on
    lowbit's kernels at ``PRUNED_LATENCY_BATCHES`` (``median_latencies``: interleaved, one
    thread); the note gives accuracies and the MACs share."""
    from lowbit.compress import load_digits_split, profile

    x = load_digits_split().x_test
    rows = []
    for b in PRUNED_LATENCY_BATCHES:
        t_p, t_d = median_latencies([pruned.model, dense.model], x[:b], repeats)
        rows.append((b, t_p * 1e3, t_d * 1e3, t_d / t_p))
    macs_p, macs_d = (profile(v.model, x[:1]).macs for v in (pruned, dense))
    return Table(
        "compress_pruned_kernels",
        f"Structured pruning on lowbit's kernels: {pruned.name} vs {dense.name}",
        ("batch", "pruned ms", "dense ms", "dense / pruned"), rows,
        note=(f"Both models quantized by the same recipe ({INT8_RECIPE}, KL calibration on the "
              f"same 256 images) and exported to gemm_int8; median of {repeats} interleaved "
              f"runs per batch, one thread (torch and lowbit). MACs per image: pruned "
              f"{macs_p:,d} = {macs_p / macs_d:.1%} of dense {macs_d:,d}. Test accuracy: "
              f"pruned {pruned.accuracy:.2%}, dense int8 {dense.accuracy:.2%}, fp32 "
              f"{fp32_accuracy:.2%} (drop {100 * (fp32_accuracy - pruned.accuracy):.2f} pt). "
              f"Shared machine: latencies are indicative."))


# --------------------------------------------------------------------------------------------
# step 3: the kernel benchmark
# --------------------------------------------------------------------------------------------
def step_bench(ctx: RunContext) -> StepResult:
    from . import benchtable, report, targets
    from .benchrun import run_benchmarks

    res = StepResult("bench", "Kernel benchmark (quick budget, the target groups)")
    ctx.tick(res.name, 0, 100)
    data = run_benchmarks(ctx.out / report.BENCH_JSON, ctx.out / report.BENCH_LOG, quick=True,
                          keyword=ctx.budget.bench_keyword,
                          progress=lambda pct: ctx.tick(res.name, pct, 100))
    ctx.bench_data = data
    rep = report.build_report(data)
    (ctx.out / report.REPORT_JSON).write_text(json.dumps(rep, indent=1) + "\n")
    ctx.tick(res.name, 100, 100)
    if rep["peaks"]:
        res.tables.append(Table("bench_peak", "peak", tuple(benchtable.PEAK_HEADERS),
                                [tuple(r) for r in benchtable.peak_rows(rep["peaks"])]))
    if rep.get("bandwidth"):
        res.tables.append(Table("bench_bandwidth", "bandwidth",
                                tuple(benchtable.BANDWIDTH_HEADERS),
                                [tuple(r) for r in benchtable.bandwidth_rows(rep["bandwidth"])]))
    for g in rep["groups"]:
        title = g["name"] if g["m"] is None else f"{g['name']} (M={g['m']} N={g['n']} K={g['k']})"
        res.tables.append(Table(f"bench_{g['name']}".replace("%", "pct"), title,
                                tuple(benchtable.GROUP_HEADERS),
                                [tuple(r) for r in benchtable.group_rows(g)]))
    res.tables.append(Table("bench_targets", "speed targets", tuple(targets.TARGET_HEADERS),
                            [tuple(r) for r in targets.target_rows(rep["targets"])],
                            note=targets.TARGET_NOTE))
    res.notes.append(f"pytest-benchmark JSON: {report.BENCH_JSON}; pytest output: "
                     f"{report.BENCH_LOG}; selection: "
                     f"{ctx.budget.bench_keyword or 'the whole quick suite'}; a target whose "
                     f"group is not selected shows 'not measured'.")
    return res


# --------------------------------------------------------------------------------------------
# step 4: the simulator
# --------------------------------------------------------------------------------------------
def _workloads(ctx: RunContext) -> list:
    from lowbit.compress import to_workload
    from lowbit.simulator import zoo

    loads = [zoo.get_workload(n) for n in ctx.budget.zoo]
    x = _test_batch(1)
    for v in ctx.variants:
        loads.append(to_workload(v.model, x, name=f"digits-cnn {v.name}"))
    return loads


def step_simulate(ctx: RunContext) -> StepResult:
    from lowbit.simulator import simulate

    res = StepResult("simulate", "Simulated on the NPU profiles")
    loads = _workloads(ctx)
    if not ctx.variants:
        res.notes.append("no digits models (the baseline step did not finish): zoo nets only")
    pairs = [(w, p) for w in loads for p in ctx.budget.profiles]
    rows = []
    for i, (w, p) in enumerate(pairs):
        ctx.tick(res.name, i, len(pairs))
        s = simulate(w, p).total
        if not s.feasible:
            rows.append((w.name, p, None, None, None, None, f"infeasible: {s.reason}"))
            continue
        rows.append((w.name, p, s.total_cycles, s.latency_s * 1e3, s.energy_pj / 1e6,
                     s.compute_utilization, ""))
    ctx.tick(res.name, len(pairs), len(pairs))
    res.tables.append(Table("simulate", "Whole-network simulation (lowbit convention, each "
                            "profile's first dataflow)",
                            ("workload", "profile", "cycles", "latency ms", "energy uJ",
                             "utilization", "note"), rows,
                            note="digits-cnn rows are the compressed models' to_workload "
                                 "(batch 1, each layer at its stored precision and sparsity)."))
    return res


# --------------------------------------------------------------------------------------------
# step 5: the roofline
# --------------------------------------------------------------------------------------------
def _roofline_devices(res: StepResult) -> list[str]:
    from lowbit.roofline import host_profile_path

    devices = ["h100-sxm", ROOFLINE_NPU]
    if host_profile_path().is_file():
        devices.insert(0, "host")
    else:
        res.notes.append(f"no calibrated host profile at {host_profile_path()}: host skipped "
                         "(run `lowbit roofline calibrate`)")
    return devices


def _kernel_points(ctx: RunContext, device):
    from lowbit.roofline.plots import KernelPoint
    from lowbit.roofline_bench import kernel_bounds

    rows = kernel_bounds(ctx.bench_data, device)
    return [KernelPoint(f"{r['group']} {r['impl']}", r["intensity"], r["measured_ops_s"],
                        r["ops"] / r["bound_s"]) for r in rows if r["bound_s"]]


def step_roofline(ctx: RunContext) -> StepResult:
    from lowbit.roofline import MemoryFitWarning, analyze, get_device
    from lowbit.roofline.plots import plot_breakdown, plot_llm_precisions, plot_roofline
    from lowbit.simulator import zoo

    res = StepResult("roofline", "Roofline")
    devices = _roofline_devices(res)
    jobs = [(d, p) for d in devices for p in LLM_PRECISIONS]
    llm_rows, net_rows = [], []
    for i, (d, p) in enumerate(jobs):
        ctx.tick(res.name, i, len(jobs) + len(devices))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MemoryFitWarning)
            r = analyze(LLM_WORKLOAD, d, p)
        llm_rows.append((d, p, r.llm["tpot_s"] * 1e3, r.llm["tokens_per_s"],
                         len(r.total.memory_bound_layers), len(r.layers),
                         "yes" if r.llm.get("fits") else "no"))
    resnet = zoo.get_workload("resnet18")
    for j, d in enumerate(devices):
        ctx.tick(res.name, len(jobs) + j, len(jobs) + len(devices))
        r = analyze(resnet, d)
        net_rows.append((d, "resnet18", r.total.latency_s * 1e3, r.total.energy_j * 1e3,
                         r.total.utilization, len(r.total.memory_bound_layers), len(r.layers)))
    res.tables.append(Table("roofline_llm", "Llama-2-7B decode (batch 1, context 2048)",
                            ("device", "precision", "ms per token", "tokens/s",
                             "memory-bound layers", "layers", "fits in memory"), llm_rows))
    res.tables.append(Table("roofline_resnet18", "ResNet-18 (its own precisions)",
                            ("device", "workload", "latency ms", "energy mJ", "utilization",
                             "memory-bound layers", "layers"), net_rows))
    # plots: measured kernels on the host (or h100 when no host profile) roofline, breakdown
    plot_dev = get_device(devices[0])
    kernels = _kernel_points(ctx, plot_dev) if ctx.bench_data and devices[0] == "host" else ()
    if not kernels:
        res.notes.append("no measured kernels drawn: they need the benchmark step's data and "
                         "the host profile")
    rn = analyze(resnet, plot_dev)
    path = ctx.out / "roofline.png"
    plot_roofline(plot_dev, results=rn, kernels=kernels, path=path,
                  title=f"resnet18 layers and lowbit kernels on {plot_dev.name}")
    res.plots["Roofline of " + plot_dev.name + (" with the measured kernels" if kernels else "")
              ] = path
    bpath = ctx.out / "breakdown.png"
    plot_breakdown(analyze(resnet, ROOFLINE_NPU), path=bpath)
    res.plots[f"Per-layer latency of resnet18 on {ROOFLINE_NPU}"] = bpath
    lpath = ctx.out / "llm_precisions.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MemoryFitWarning)
        plot_llm_precisions("h100-sxm", LLM_WORKLOAD, LLM_PRECISIONS, path=lpath)
    res.plots["Llama-2-7B decode on h100-sxm at each precision"] = lpath
    ctx.tick(res.name, len(jobs) + len(devices), len(jobs) + len(devices))
    return res


# --------------------------------------------------------------------------------------------
# the accuracy-vs-latency plot, and the runner
# --------------------------------------------------------------------------------------------
def plot_accuracy_latency(variants: list[Variant], path: Path) -> Path:
    """Scatter of test accuracy against measured latency, one point per model (legend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = "osD^vP*X"
    for i, v in enumerate(variants):  # a legend, not annotations: close points overlap
        ax.scatter([v.latency_ms], [v.accuracy * 100], s=40, marker=markers[i % len(markers)],
                   label=f"{v.name}: {v.accuracy:.1%}, {v.latency_ms:.2f} ms")
    ax.legend(fontsize="small")
    ax.set_xlabel(f"latency ms (batch {LATENCY_BATCH}, median)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Compressed digits CNN: accuracy vs latency")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
    return path


STEPS = (step_baseline, step_compress, step_bench, step_simulate, step_roofline)


@dataclass
class RunResult:
    out: Path
    quick: bool
    steps: list[StepResult]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(s.status != FAILED for s in self.steps)


def run_step(step, ctx: RunContext) -> StepResult:
    """Run one step; an exception becomes a failed StepResult carrying the error text."""
    t0 = time.perf_counter()
    name = step.__name__.removeprefix("step_")
    try:
        res = step(ctx)
    except Exception as exc:
        last = traceback.extract_tb(exc.__traceback__)[-1]
        res = StepResult(name, name, FAILED,
                         error=f"{type(exc).__name__}: {exc} (at {Path(last.filename).name}:"
                               f"{last.lineno})")
    res.seconds = time.perf_counter() - t0
    return res


def run_pipeline(out: str | Path, *, quick: bool = False, progress: Progress | None = None,
                 steps=STEPS) -> RunResult:
    """Run ``steps`` in order into the folder ``out`` (created); returns every step's result.

    ``progress(step, done, total)`` is called as each step advances. Nothing raises from a
    step: a failure is recorded in its ``StepResult`` and later steps still run.
    """
    from .report import prepare_out_dir

    t0 = time.perf_counter()
    ctx = RunContext(prepare_out_dir(out), QUICK if quick else FULL, progress or _no_progress)
    results = [run_step(s, ctx) for s in steps]
    compress = next((r for r in results if r.name == "compress" and r.tables), None)
    if compress is not None and ctx.variants:
        try:
            path = plot_accuracy_latency(ctx.variants, ctx.out / "accuracy_latency.png")
            compress.plots["Accuracy vs latency of the compressed models"] = path
        except Exception as exc:
            compress.notes.append(f"accuracy-vs-latency plot failed: {type(exc).__name__}: {exc}")
    return RunResult(ctx.out, quick, results, time.perf_counter() - t0)


__all__ = ["Budget", "FULL", "QUICK", "RunContext", "RunResult", "Variant", "STEPS",
           "median_latency", "median_latencies", "plot_accuracy_latency", "pruned_on_kernels",
           "thread_count", "run_pipeline", "run_step",
           "step_baseline", "step_compress", "step_bench", "step_simulate", "step_roofline",
           "OK", "FAILED"]
