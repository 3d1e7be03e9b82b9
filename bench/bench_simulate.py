"""Simulator speed (issue 4): groups ``simulate-resnet18`` and ``simulate-layer``.

* ``simulate-resnet18``: SCALE-Sim's ResNet-18 topology (the 21 rows of its
  topologies/conv_nets/Resnet18.csv: unpadded, 224x224 stem 7x7/2, 1x1 shortcuts, FC
  512->1000; recreated from ../shared/refs/scalesim-v3.md) on 32x32, os, SCALE-Sim's default
  config (configs/scale.cfg: 64 kB SRAMs, CALC mode), whole network in-process with the memory
  model on. Target: <= 0.5 s (SCALE-Sim 3.0.0 took 358 s on a machine of this workplace).
  Variants: the lowbit and scalesim conventions, and the same config with SCALE-Sim's USER
  bandwidth (10 words/cycle per buffer, 1-cycle latency) so that DRAM timing is exercised.
* ``simulate-layer``: one conv 3x3 56x56x64 -> 64 (unpadded: 54x54 outputs, as SCALE-Sim runs
  it) on 32x32 os, timed in lowbit's fast engine, in lowbit's per-cycle reference engine, and,
  when ``LOWBIT_SCALESIM_PYTHON`` names a Python with scalesim 3.0.0 (and numpy 1.26), in
  SCALE-Sim in a subprocess in the same run. The SCALE-Sim row records its in-process time,
  checks that compat mode's compute cycles equal SCALE-Sim's and reports the speed-up over the
  fast engine (target >= 500x).

Self-contained: inputs are built outside the timed calls; nothing else in bench/ is used.
``extra_info`` carries the report's fields: ``ops`` = simulated cycles (so "GOP/s" reads as
giga simulated cycles per second), ``bytes`` = the simulated workload's DRAM bytes,
``precision`` = "sim-int8" (simulated int8 operands; no CPU peak applies), ``family`` =
lowbit or scalesim.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import textwrap
import time

import pytest

from lowbit.simulator import DramSpec, EnergyTable, Profile, simulate
from lowbit.simulator.scalesim_io import scalesim_conv, scalesim_resnet18

GROUP_NET = "simulate-resnet18"
GROUP_LAYER = "simulate-layer"
TARGET_RESNET18_SECONDS = 0.5
TARGET_LAYER_SPEEDUP = 500.0
SCALESIM_ENV = "LOWBIT_SCALESIM_PYTHON"

LAYER = ("conv3x3_56x56x64", 56, 56, 3, 3, 64, 64, 1)


def scale_cfg_profile() -> Profile:
    """SCALE-Sim's configs/scale.cfg: 32x32, 64 kB ifmap / filter / ofmap, CALC."""
    try:
        from lowbit.simulator import load_profile
        return dataclasses.replace(load_profile("scalesim-default"), dataflows=("os", "ws", "is"))
    except (ImportError, FileNotFoundError, ValueError):
        return Profile(name="scalesim-default", rows=32, cols=32, dataflows=("os", "ws", "is"),
                       clock_hz=1e9, ifmap_sram_bytes=65536, filter_sram_bytes=65536,
                       ofmap_sram_bytes=65536, word_bits=8, dram=DramSpec(1048576.0, 1),
                       macs_per_pe={8: 1},
                       energy=EnergyTable({8: 0.23}, ((8192, 1.25), (1 << 20, 12.5)), 243.75),
                       bandwidth_mode="calc")


def user_bandwidth(profile: Profile) -> Profile:
    """The same config in SCALE-Sim's USER mode: 10 words/cycle per buffer, latency 1."""
    ports = {"ifmap": 10.0, "filter": 10.0, "ofmap": 10.0}
    return dataclasses.replace(profile, bandwidth_mode="user", dram=DramSpec(30.0, 1, ports))


def _rounds(request, seconds: float) -> int:
    quick = request.config.getoption("--lowbit-quick", default=False)
    target = 0.3 if quick else 1.0
    return max(3, min(50, int(target / max(seconds, 1e-6))))


def _report_fields(total) -> dict:
    """The fields lowbit's benchmark report needs (see the module docstring)."""
    return {"precision": "sim-int8", "ops": total.total_cycles, "ops_unit": "simulated cycles",
            "bytes": max(total.dram_bytes, 1), "pass": 0}


def _timed(call) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = call()
    return time.perf_counter() - t0, out


RESNET_VARIANTS = {
    # id: (convention, profile transform)
    "lowbit": ("lowbit", lambda p: p),
    "scalesim-convention": ("scalesim", lambda p: p),
    "lowbit-user-bandwidth": ("lowbit", user_bandwidth),
}


@pytest.mark.parametrize("variant", list(RESNET_VARIANTS))
def test_simulate_resnet18(benchmark, request, variant):
    convention, transform = RESNET_VARIANTS[variant]
    workload = scalesim_resnet18()
    profile = transform(scale_cfg_profile())

    def call():
        return simulate(workload, profile, dataflow="os", convention=convention)

    seconds, stats = _timed(call)   # warm-up (imports, first NumPy calls)
    benchmark.group = GROUP_NET
    benchmark.extra_info.update(_report_fields(stats.total))
    benchmark.extra_info.update({
        "impl": f"lowbit-fast[{variant}]", "family": "lowbit", "engine": "fast",
        "convention": convention, "layers": len(workload.layers),
        "bandwidth_mode": profile.bandwidth_mode,
        "simulated_cycles": stats.total.total_cycles, "stall_cycles": stats.total.stall_cycles,
        "target_seconds": TARGET_RESNET18_SECONDS})
    benchmark.pedantic(call, rounds=_rounds(request, seconds), iterations=1, warmup_rounds=0)
    median = benchmark.stats.stats.median
    benchmark.extra_info["simulated_cycles_per_s"] = stats.total.total_cycles / median
    benchmark.extra_info["meets_target"] = median <= TARGET_RESNET18_SECONDS
    if convention == "scalesim":
        assert stats.total.total_cycles == 1_718_353    # SCALE-Sim 3.0.0's sum of Total Cycles


_LAYER_RESULTS: dict = {}


@pytest.mark.parametrize("engine, convention", [("fast", "scalesim"), ("fast", "lowbit"),
                                                ("reference", "scalesim"),
                                                ("reference", "lowbit")])
def test_simulate_layer_lowbit(benchmark, request, engine, convention):
    layer = scalesim_conv(LAYER)
    profile = scale_cfg_profile()

    def call():
        return simulate(layer, profile, dataflow="os", convention=convention, engine=engine)

    seconds, stats = _timed(call)
    benchmark.group = GROUP_LAYER
    benchmark.extra_info.update(_report_fields(stats.total))
    benchmark.extra_info.update({
        "impl": f"lowbit-{engine}[{convention}]", "family": "lowbit", "engine": engine,
        "convention": convention, "simulated_cycles": stats.total.total_cycles,
        "compute_cycles": stats.total.compute_cycles})
    rounds = 1 if engine == "reference" else _rounds(request, seconds)
    benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=0)
    _LAYER_RESULTS[(engine, convention)] = (benchmark.stats.stats.median, stats.total)


SCALESIM_DRIVER = textwrap.dedent('''
    import contextlib, io, json, os, sys, tempfile, time
    from scalesim.scale_sim import scalesim
    name, h, w, r, s, c, f, stride = json.loads(sys.argv[1])
    cfg = """[general]
    run_name = bench
    [architecture_presets]
    ArrayHeight : 32
    ArrayWidth : 32
    IfmapSramSzkB : 64
    FilterSramSzkB : 64
    OfmapSramSzkB : 64
    IfmapOffset : 0
    FilterOffset : 10000000
    OfmapOffset : 20000000
    Bandwidth : 10
    Dataflow : os
    MemoryBanks : 1
    ReadRequestBuffer : 32
    WriteRequestBuffer : 32
    [layout]
    IfmapCustomLayout : False
    IfmapSRAMBankBandwidth : 10
    IfmapSRAMBankNum : 1
    IfmapSRAMBankPort : 2
    FilterCustomLayout : False
    FilterSRAMBankBandwidth : 10
    FilterSRAMBankNum : 1
    FilterSRAMBankPort : 2
    [sparsity]
    SparsitySupport : false
    SparseRep : ellpack_block
    OptimizedMapping : false
    BlockSize : 8
    RandomNumberGeneratorSeed : 40
    [run_presets]
    InterfaceBandwidth : CALC
    UseRamulatorTrace : False
    """
    with tempfile.TemporaryDirectory() as tmp:
        paths = {k: os.path.join(tmp, k) for k in ("c.cfg", "t.csv", "l.csv")}
        open(paths["c.cfg"], "w").write(cfg)
        open(paths["t.csv"], "w").write(
            "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
            "Num Filter, Strides,\\n"
            + ",".join(map(str, [name, h, w, r, s, c, f, stride])) + ",\\n")
        open(paths["l.csv"], "w").write("Layer name,\\n")
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            sim = scalesim(save_disk_space=True, verbose=False, config=paths["c.cfg"],
                           topology=paths["t.csv"], layout=paths["l.csv"])
            sim.run_scale(top_path=os.path.join(tmp, "out"))
        seconds = time.perf_counter() - t0
        items = sim.runner.single_layer_sim_object_list[0].get_compute_report_items()
    print(json.dumps({"seconds": seconds, "total_cycles": int(items[1]),
                      "stall_cycles": int(items[2])}))
''')


def test_simulate_layer_scalesim(benchmark):
    python = os.environ.get(SCALESIM_ENV)
    if not python:
        pytest.skip(f"set {SCALESIM_ENV} to a Python with scalesim 3.0.0 to time SCALE-Sim")
    results: dict = {}

    def call():
        proc = subprocess.run([python, "-c", SCALESIM_DRIVER, json.dumps(list(LAYER))],
                              capture_output=True, text=True, check=True)
        results.update(json.loads(proc.stdout.strip().splitlines()[-1]))

    benchmark.group = GROUP_LAYER
    benchmark.pedantic(call, rounds=1, iterations=1, warmup_rounds=0)
    compute = results["total_cycles"] - results["stall_cycles"]
    fast = _LAYER_RESULTS.get(("fast", "scalesim"))
    if fast is None:
        fast_seconds = None
        layer_stats = simulate(scalesim_conv(LAYER), scale_cfg_profile(), dataflow="os",
                               convention="scalesim").total
    else:
        fast_seconds, layer_stats = fast
    benchmark.extra_info.update(_report_fields(layer_stats))
    benchmark.extra_info["ops"] = results["total_cycles"]
    benchmark.extra_info.update({
        "impl": "scalesim-3.0.0", "family": "scalesim", "engine": "scalesim subprocess",
        "scalesim_in_process_seconds": results["seconds"],
        "simulated_cycles": results["total_cycles"], "compute_cycles": compute})
    assert layer_stats.compute_cycles == compute, "compat compute cycles differ from SCALE-Sim's"
    if fast_seconds:
        speedup = results["seconds"] / fast_seconds
        benchmark.extra_info.update({"speedup_vs_lowbit_fast": speedup,
                                     "target_speedup": TARGET_LAYER_SPEEDUP,
                                     "meets_target": speedup >= TARGET_LAYER_SPEEDUP})
