"""convention="scalesim" against SCALE-Sim v3.0.0 itself.

tests/data/scalesim_goldens.json holds numbers produced by running scalesim 3.0.0 (its header
says how; regenerate with tools/make_scalesim_goldens.py). Compat mode must equal SCALE-Sim's
compute cycles (Total Cycles - Stall Cycles) and SRAM counts on every case, its mapping
efficiency and compute utilization, its stall cycles in CALC mode (0), and its DRAM counts in
CALC mode when the operands fit their SRAMs. USER-mode stalls are not reproduced (SCALE-Sim bug
5; see simulator/CONVENTIONS.md).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lowbit.simulator import simulate
from lowbit.simulator.hardware import DramSpec, EnergyTable, Profile
from lowbit.simulator.scalesim_io import scalesim_resnet18
from lowbit.simulator.workload import Conv2d, Gemm

GOLDENS = json.loads((Path(__file__).parent / "data" / "scalesim_goldens.json").read_text())
CASES = GOLDENS["cases"]
ENERGY = EnergyTable(mac_pj={8: 0.2}, sram_points=((1024, 1.0),), dram_pj_per_byte=100.0)


def golden_profile(case) -> Profile:
    """What load_scalesim_config gives for the case's .cfg (built here, without the reader)."""
    rows, cols = case["array"]
    kb = case["sram_kb"]
    if case["mode"] == "USER":
        bw = case["bandwidth"]
        dram = DramSpec(float(sum(bw)), 1, {"ofmap": bw[0], "ifmap": bw[1], "filter": bw[2]})
    else:
        dram = DramSpec(1048576.0, 1)
    return Profile(name=case["id"], rows=rows, cols=cols, dataflows=(case["dataflow"],),
                   clock_hz=1e9, ifmap_sram_bytes=kb[0] * 1024, filter_sram_bytes=kb[1] * 1024,
                   ofmap_sram_bytes=kb[2] * 1024, word_bits=8, dram=dram, macs_per_pe={8: 1},
                   energy=ENERGY, bandwidth_mode=case["mode"].lower())


def golden_layer(case):
    """The topology row as lowbit reads it (Conv2d with SCALE-Sim's ceil output size)."""
    if case["kind"] == "gemm":
        m, n, k = case["dims"]
        return Gemm(case["layer"], m=m, n=n, k=k)
    h, w, r, s, c, f, stride = case["dims"]
    if "DP" in case["layer"]:      # SCALE-Sim: one single-channel layer per channel
        return Conv2d(case["layer"], in_h=h, in_w=w, in_ch=c, out_ch=c * f, kernel_h=r,
                      kernel_w=s, stride=stride, groups=c, ceil_mode=True)
    return Conv2d(case["layer"], in_h=h, in_w=w, in_ch=c, out_ch=f, kernel_h=r, kernel_w=s,
                  stride=stride, ceil_mode=True)


def _sum(layers, key):
    return sum(layer[key] for layer in layers)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_compat_equals_scalesim(case):
    ss = case["layers"]
    got = simulate(golden_layer(case), golden_profile(case), dataflow=case["dataflow"],
                   convention="scalesim").layers[0]
    assert got.feasible, got.reason
    want = {
        "compute_cycles": _sum(ss, "total_cycles") - _sum(ss, "stall_cycles"),
        "sram_ifmap_reads": _sum(ss, "sram_ifmap_reads"),
        "sram_filter_reads": _sum(ss, "sram_filter_reads"),
        "sram_ofmap_writes": _sum(ss, "sram_ofmap_writes"),
    }
    assert {k: getattr(got, k) for k in want} == want
    # every SCALE-Sim layer of a depthwise split has the same ratios
    assert math.isclose(got.mapping_efficiency * 100, ss[0]["mapping_efficiency_pct"],
                        rel_tol=1e-12)
    assert math.isclose(got.compute_utilization * 100, ss[0]["compute_util_pct"], rel_tol=1e-12)
    if case["mode"] == "CALC":
        assert got.stall_cycles == _sum(ss, "stall_cycles") == 0
        assert got.total_cycles == _sum(ss, "total_cycles")
        assert math.isclose(got.overall_utilization * 100, ss[0]["overall_util_pct"],
                            rel_tol=1e-12)
        fits = all(_sum(ss, f"dram_{op}") <= kb * 1024 for op, kb in
                   zip(("ifmap_reads", "filter_reads", "ofmap_writes"), case["sram_kb"]))
        if fits:   # every operand fits its SRAM: each element moves once
            assert (got.dram_ifmap_reads, got.dram_filter_reads, got.dram_ofmap_writes) == (
                _sum(ss, "dram_ifmap_reads"), _sum(ss, "dram_filter_reads"),
                _sum(ss, "dram_ofmap_writes"))
    else:
        assert any(USER_NOTE in n for n in got.notes)


USER_NOTE = "stall cycles come from lowbit's memory model"


def test_goldens_cover_the_issue():
    """GEMMs, convs, a depthwise layer; 3 dataflows; square, tall, 1-row arrays; K = 1, N = 1."""
    kinds = {c["kind"] for c in CASES}
    assert kinds == {"gemm", "conv"}
    assert any("DP" in c["layer"] and len(c["layers"]) > 1 for c in CASES)
    assert {c["dataflow"] for c in CASES} == {"os", "ws", "is"}
    arrays = {tuple(c["array"]) for c in CASES}
    assert {(8, 8), (16, 4), (1, 8), (8, 1), (1, 1)} <= arrays
    gemm_dims = [c["dims"] for c in CASES if c["kind"] == "gemm"]
    assert any(d[2] == 1 for d in gemm_dims) and any(d[1] == 1 for d in gemm_dims)
    assert {c["mode"] for c in CASES} == {"CALC", "USER"}
    assert GOLDENS["header"]["scalesim_version"] == "3.0.0"


# SCALE-Sim 3.0.0's Total Cycles per layer, 32x32 os, configs/scale.cfg (the reference doc's
# speed anchor run).
RESNET18_TOTAL_CYCLES = [158421, 117391, 117391, 117391, 117391, 63799, 106831, 13607, 106831,
                         106831, 67983, 94639, 12159, 94639, 94639, 75711, 74719, 10175, 74719,
                         74719, 18367]


def test_resnet18_matches_scalesim_per_layer():
    prof = Profile(name="scale.cfg", rows=32, cols=32, dataflows=("os",), clock_hz=1e9,
                   ifmap_sram_bytes=65536, filter_sram_bytes=65536, ofmap_sram_bytes=65536,
                   word_bits=8, dram=DramSpec(1048576.0, 1), macs_per_pe={8: 1}, energy=ENERGY,
                   bandwidth_mode="calc")
    stats = simulate(scalesim_resnet18(), prof, dataflow="os", convention="scalesim")
    assert [s.total_cycles for s in stats.layers] == RESNET18_TOTAL_CYCLES
    assert stats.total.total_cycles == 1_718_353 and stats.total.stall_cycles == 0
    lowbit = simulate(scalesim_resnet18(), prof, dataflow="os")
    # lowbit adds the os output drain (R cycles per fold) and counts cycles, not an index
    for s, c in zip(lowbit.layers, stats.layers):
        assert s.compute_cycles == c.compute_cycles + 1 + s.folds * 32 - _partial_saving(s)


def _partial_saving(s) -> int:
    """Cycles lowbit saves on the partial folds of one os layer (unused rows / columns)."""
    (m, n, _, count), = s.gemms
    saved = 0
    for fr in range(math.ceil(m / 32)):
        for fc in range(math.ceil(n / 32)):
            saved += (32 - min(32, m - fr * 32)) + (32 - min(32, n - fc * 32))
    return saved * count


def _have(module: str) -> bool:
    try:
        __import__(f"lowbit.simulator.{module}")
        return True
    except ImportError:
        return False


@pytest.mark.skipif(not _have("scalesim_io"), reason="lowbit.simulator.scalesim_io not present")
def test_scalesim_files_through_the_readers(tmp_path):
    """A SCALE-Sim .cfg and topology CSV, read by lowbit, give the golden numbers."""
    from lowbit.simulator import load_scalesim_config, load_scalesim_topology

    case = next(c for c in CASES if c["id"] == "conv3x3-8x8-ws-calc-sram64-64-64")
    cfg = tmp_path / "golden.cfg"
    cfg.write_text("\n".join([
        "[general]", "run_name = golden", "[architecture_presets]", "ArrayHeight : 8",
        "ArrayWidth : 8", "IfmapSramSzkB : 64", "FilterSramSzkB : 64", "OfmapSramSzkB : 64",
        "IfmapOffset : 0", "FilterOffset : 10000000", "OfmapOffset : 20000000",
        "Bandwidth : 10", "Dataflow : ws", "MemoryBanks : 1", "ReadRequestBuffer : 32",
        "WriteRequestBuffer : 32", "[layout]", "IfmapCustomLayout : False",
        "IfmapSRAMBankBandwidth : 10", "IfmapSRAMBankNum : 1", "IfmapSRAMBankPort : 2",
        "FilterCustomLayout : False", "FilterSRAMBankBandwidth : 10", "FilterSRAMBankNum : 1",
        "FilterSRAMBankPort : 2", "[sparsity]", "SparsitySupport : false",
        "SparseRep : ellpack_block", "OptimizedMapping : false", "BlockSize : 8",
        "RandomNumberGeneratorSeed : 40", "[run_presets]", "InterfaceBandwidth : CALC",
        "UseRamulatorTrace : False", ""]))
    topo = tmp_path / "topo.csv"
    topo.write_text("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, "
                    "Channels, Num Filter, Strides,\nconv3x3, 10, 10, 3, 3, 4, 8, 1,\n")
    stats = simulate(load_scalesim_topology(topo), load_scalesim_config(cfg),
                     convention="scalesim")
    got, want = stats.layers[0], case["layers"][0]
    assert stats.dataflow == "ws"
    assert got.total_cycles == want["total_cycles"]
    assert (got.sram_ifmap_reads, got.sram_filter_reads, got.sram_ofmap_writes) == (
        want["sram_ifmap_reads"], want["sram_filter_reads"], want["sram_ofmap_writes"])


RESNET18_CSV = Path(__file__).parent / "data" / "sim" / "resnet18_scalesim.csv"


@pytest.mark.skipif(not (_have("scalesim_io") and RESNET18_CSV.exists()),
                    reason="SCALE-Sim ResNet-18 topology or its reader not present")
def test_resnet18_topology_file_matches_scalesim():
    """The same 21 rows read from SCALE-Sim's CSV form by lowbit's topology reader."""
    from lowbit.simulator import load_scalesim_topology

    prof = Profile(name="scale.cfg", rows=32, cols=32, dataflows=("os",), clock_hz=1e9,
                   ifmap_sram_bytes=65536, filter_sram_bytes=65536, ofmap_sram_bytes=65536,
                   word_bits=8, dram=DramSpec(1048576.0, 1), macs_per_pe={8: 1}, energy=ENERGY,
                   bandwidth_mode="calc")
    stats = simulate(load_scalesim_topology(RESNET18_CSV), prof, convention="scalesim")
    assert [s.total_cycles for s in stats.layers] == RESNET18_TOTAL_CYCLES
