"""simulate(): inputs it accepts, the records and files it returns, infeasible layers as
results, conventions, precision / sparsity what-ifs, the zoo on the built-in profiles, and the
``lowbit simulate`` command."""
from __future__ import annotations

import argparse
import csv
import io
import json
import math

import pytest

import lowbit.simulator as sim
from lowbit.simulator import simulate
from lowbit.simulator.hardware import DramSpec, EnergyTable, Profile
from lowbit.simulator.stats import ENERGY_PARTS
from lowbit.simulator.workload import BatchedMatmul, Conv2d, Gemm, Sparsity, Workload

REQUIRED = ("layer", "compute_cycles", "stall_cycles", "total_cycles", "sram_ifmap_reads",
            "sram_filter_reads", "sram_ofmap_writes", "dram_ifmap_reads", "dram_filter_reads",
            "dram_ofmap_writes", "mapping_efficiency", "compute_utilization", "energy_pj",
            "latency_s")
ENERGY = EnergyTable(mac_pj={8: 0.2, 4: 0.06}, sram_points=((1024, 1.0), (1 << 20, 10.0)),
                     dram_pj_per_byte=100.0, leakage_pj_per_cycle=1.0)


def small_profile(sram=2048, **kw):
    args = dict(name="small", rows=8, cols=8, dataflows=("ws", "os", "is"), clock_hz=5e8,
                ifmap_sram_bytes=sram, filter_sram_bytes=sram, ofmap_sram_bytes=sram,
                word_bits=8, dram=DramSpec(4.0, 10), macs_per_pe={8: 1, 4: 2}, energy=ENERGY,
                sparsity="2:4", bandwidth_mode="user")
    args.update(kw)
    return Profile(**args)


NET = Workload("net", (
    Conv2d("conv", in_h=10, in_w=10, in_ch=3, out_ch=8, kernel_h=3, kernel_w=3, padding=1),
    Conv2d("dw", in_h=10, in_w=10, in_ch=8, out_ch=8, kernel_h=3, kernel_w=3, padding=1,
           groups=8),
    Gemm("fc", m=4, n=10, k=32),
    BatchedMatmul("attn", batch=2, m=6, n=6, k=4),
))


def test_returns_network_stats_with_required_fields():
    stats = simulate(NET, small_profile())
    assert stats.dataflow == "ws"                    # the profile's first dataflow
    assert [s.layer for s in stats.layers] == ["conv", "dw", "fc", "attn"]
    d = stats.to_dict()
    assert set(d) >= {"layers", "total"}
    for rec in d["layers"] + [d["total"]]:
        assert set(REQUIRED) <= set(rec)
    blob = json.loads(stats.to_json())
    assert blob["total"]["layer"] == "total"
    for k in ("compute_cycles", "stall_cycles", "total_cycles", "sram_ifmap_reads",
              "dram_ofmap_writes", "macs"):
        assert blob["total"][k] == sum(r[k] for r in blob["layers"])
    t = stats.total
    assert t.total_cycles == t.compute_cycles + t.stall_cycles
    assert math.isclose(t.latency_s, t.total_cycles / 5e8)
    assert math.isclose(t.energy_pj, sum(t.energy[p] for p in ENERGY_PARTS))
    assert all(s.energy["leakage"] == s.total_cycles * 1.0 for s in stats.layers)


def test_csv_has_a_row_per_layer_and_a_total(tmp_path):
    stats = simulate(NET, small_profile(), dataflow="os")
    rows = list(csv.DictReader(io.StringIO(stats.to_csv())))
    assert [r["layer"] for r in rows] == ["conv", "dw", "fc", "attn", "total"]
    assert set(REQUIRED) <= set(rows[0])
    assert int(rows[-1]["total_cycles"]) == stats.total.total_cycles
    path = stats.write_json(tmp_path / "s.json")
    assert json.loads(path.read_text())["layers"][0]["layer"] == "conv"
    assert stats.write_csv(tmp_path / "s.csv").read_text() == stats.to_csv()


def test_accepts_layer_list_workload_and_names():
    prof = small_profile()
    layer = Gemm("fc", m=4, n=10, k=32)
    a = simulate(layer, prof).total
    b = simulate([layer], prof).total
    c = simulate(Workload("w", (layer,)), prof).total
    assert a.to_dict() == b.to_dict() == c.to_dict()
    named = simulate("resnet18", "edge-npu-32x32", dataflow="os")
    assert named.profile == "edge-npu-32x32" and named.workload == "resnet18"
    assert len(named.layers) == len(sim.zoo.get_workload("resnet18").layers)
    with pytest.raises(TypeError, match="workload"):
        simulate(42, prof)
    with pytest.raises(TypeError, match="profile"):
        simulate(layer, 42)


@pytest.mark.parametrize("kw, match", [
    ({"dataflow": "xs"}, "dataflow"), ({"convention": "v2"}, "convention"),
    ({"engine": "gpu"}, "engine")])
def test_bad_arguments_raise_naming_them(kw, match):
    with pytest.raises(ValueError, match=match):
        simulate(Gemm("g"), small_profile(), **kw)


def test_dataflow_must_be_supported_by_the_profile():
    with pytest.raises(ValueError, match="supports ws"):
        simulate(Gemm("g"), small_profile(dataflows=("ws",)), dataflow="os")


def test_infeasible_layer_is_a_result_with_a_reason():
    tiny = small_profile(sram=16, rows=4, cols=4)
    stats = simulate(Workload("w", (Gemm("big", m=64, n=64, k=64), Gemm("ok", m=2, n=2, k=2))),
                     tiny, dataflow="ws")
    big, ok = stats.layers
    assert not big.feasible and "partial sums" in big.reason and big.total_cycles == 0
    assert ok.feasible
    assert not stats.total.feasible and "big" in stats.total.reason
    assert stats.total.total_cycles == ok.total_cycles
    json.loads(stats.to_json())


def test_count_is_an_exact_aggregate():
    """A GEMM repeated count times (heads, groups) = count independent runs."""
    prof = small_profile()
    one = simulate(Gemm("g", m=6, n=6, k=4), prof, dataflow="os").total
    three = simulate(BatchedMatmul("b", batch=3, m=6, n=6, k=4), prof, dataflow="os").total
    for k in ("folds", "compute_cycles", "stall_cycles", "total_cycles", "macs",
              "sram_ifmap_reads", "sram_filter_reads", "sram_ofmap_writes", "dram_ifmap_reads",
              "dram_filter_reads", "dram_ofmap_writes", "dram_ifmap_bytes"):
        assert getattr(three, k) == 3 * getattr(one, k), k
    assert math.isclose(three.energy_pj, 3 * one.energy_pj)
    assert math.isclose(three.compute_utilization, one.compute_utilization)


def test_depthwise_runs_one_gemm_per_channel():
    dw = Conv2d("dw", in_h=10, in_w=10, in_ch=8, out_ch=8, kernel_h=3, kernel_w=3, groups=8)
    stats = simulate(dw, small_profile(), dataflow="os").layers[0]
    assert stats.gemms == ((64, 1, 9, 8),)
    assert stats.macs == 64 * 9 * 8


def test_reference_engine_through_the_api_agrees():
    prof = small_profile(sram=512)
    for df in ("os", "ws", "is"):
        for convention in ("lowbit", "scalesim"):
            fast = simulate(NET, prof, dataflow=df, convention=convention)
            ref = simulate(NET, prof, dataflow=df, convention=convention, engine="reference")
            assert ref.engine == "reference"
            for a, b in zip(fast.layers + (fast.total,), ref.layers + (ref.total,)):
                da, db = a.to_dict(), b.to_dict()
                for k, v in da.items():
                    if isinstance(v, float):
                        assert math.isclose(v, db[k], rel_tol=1e-9), (df, convention, a.layer, k)
                    else:
                        assert v == db[k], (df, convention, a.layer, k)


def test_scalesim_convention_counts_an_index():
    """A single full ws fold: SCALE-Sim's Total Cycles is the 0-based index of the last row."""
    prof = small_profile(sram=1 << 16, bandwidth_mode="calc")
    g = Gemm("g", m=20, n=8, k=8)
    low = simulate(g, prof, dataflow="ws").total
    ss = simulate(g, prof, dataflow="ws", convention="scalesim").total
    assert low.compute_cycles == 2 * 8 + 8 + 20 - 2
    assert ss.compute_cycles == low.compute_cycles - 1
    assert low.stall_cycles == ss.stall_cycles == 0
    # os: SCALE-Sim has no output drain (R cycles) and over-counts ofmap writes by R + C
    low_os = simulate(g, prof, dataflow="os").total
    ss_os = simulate(g, prof, dataflow="os", convention="scalesim").total
    folds = math.ceil(20 / 8)
    assert ss_os.sram_ofmap_writes == low_os.sram_ofmap_writes + folds * 16
    assert low_os.sram_ofmap_writes == 20 * 8


def test_precision_and_sparsity_what_ifs():
    base = Conv2d("c", in_h=16, in_w=16, in_ch=32, out_ch=32, kernel_h=3, kernel_w=3, padding=1)
    int4 = Conv2d("c", in_h=16, in_w=16, in_ch=32, out_ch=32, kernel_h=3, kernel_w=3, padding=1,
                  a_bits=4, w_bits=4)
    sparse = Conv2d("c", in_h=16, in_w=16, in_ch=32, out_ch=32, kernel_h=3, kernel_w=3,
                    padding=1, sparsity=Sparsity("2:4", 0.5))
    prof = small_profile(sram=1 << 16, bandwidth_mode="calc")
    b, q, s = (simulate(x, prof, dataflow="os").total for x in (base, int4, sparse))
    assert q.compute_cycles < b.compute_cycles and s.compute_cycles < b.compute_cycles
    assert q.energy["mac"] < b.energy["mac"] and s.macs * 2 == b.macs
    assert q.dram_ifmap_bytes * 2 == b.dram_ifmap_bytes
    unsupported = simulate(sparse, small_profile(sram=1 << 16, bandwidth_mode="calc",
                                                 sparsity="none"), dataflow="os").total
    assert unsupported.compute_cycles == b.compute_cycles and unsupported.notes


@pytest.mark.parametrize("name", ["scalesim-default", "edge-npu-32x32", "tpu-v1", "eyeriss-v1",
                                  "gemmini"])
def test_builtin_profiles_run_resnet18(name):
    prof = sim.load_profile(name)
    for df in prof.dataflows:
        stats = simulate("resnet18", prof, dataflow=df)
        assert stats.feasible, stats.total.reason
        assert stats.total.macs == sim.zoo.get_workload("resnet18").macs
        assert 0 < stats.total.compute_utilization <= 1
        assert 0 < stats.total.mapping_efficiency <= 1


def test_zoo_runs_on_the_edge_npu():
    for name in sim.zoo.workload_names():
        stats = simulate(name, "edge-npu-32x32", dataflow="os")
        assert stats.feasible, (name, stats.total.reason)
        assert stats.total.total_cycles > 0 and stats.total.energy_pj > 0


def test_what_if_two_profiles():
    """The same network on two profiles: the note's what-if example."""
    a = simulate("mobilenetv2", "edge-npu-32x32", dataflow="ws").total
    b = simulate("mobilenetv2", "scalesim-default", dataflow="ws").total
    assert a.macs == b.macs and a.latency_s != b.latency_s


# -- the command ---------------------------------------------------------------------------
def run_cli(argv, capsys):
    from lowbit import simulate_cmd

    parser = argparse.ArgumentParser(prog="lowbit")
    simulate_cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["simulate", *argv])
    code = args.func(args)
    return code, capsys.readouterr().out


def test_cli_json(capsys):
    code, out = run_cli(["--workload", "resnet18", "--profile", "edge-npu-32x32", "--dataflow",
                         "os", "--json"], capsys)
    blob = json.loads(out)
    assert code == 0 and set(REQUIRED) <= set(blob["total"])
    assert len(blob["layers"]) == len(sim.zoo.get_workload("resnet18").layers)


def test_cli_table_and_csv(capsys):
    code, out = run_cli(["--workload", "minilm-l6", "--profile", "gemmini"], capsys)
    assert code == 0 and "total" in out and "energy uJ" in out
    code, out = run_cli(["--workload", "minilm-l6", "--profile", "gemmini", "--csv"], capsys)
    assert out.splitlines()[0].startswith("layer,")


def test_cli_scalesim_files(tmp_path, capsys):
    cfg = tmp_path / "s.cfg"
    cfg.write_text("[general]\nrun_name = t\n[architecture_presets]\nArrayHeight : 8\n"
                   "ArrayWidth : 8\nIfmapSramSzkB : 64\nFilterSramSzkB : 64\nOfmapSramSzkB : 64\n"
                   "IfmapOffset : 0\nFilterOffset : 10000000\nOfmapOffset : 20000000\n"
                   "Bandwidth : 10\nDataflow : os\nMemoryBanks : 1\n"
                   "ReadRequestBuffer : 32\nWriteRequestBuffer : 32\n[layout]\n"
                   "IfmapCustomLayout : False\nIfmapSRAMBankBandwidth : 10\n"
                   "IfmapSRAMBankNum : 1\nIfmapSRAMBankPort : 2\nFilterCustomLayout : False\n"
                   "FilterSRAMBankBandwidth : 10\nFilterSRAMBankNum : 1\nFilterSRAMBankPort : 2\n"
                   "[sparsity]\nSparsitySupport : false\nSparseRep : ellpack_block\n"
                   "OptimizedMapping : false\nBlockSize : 8\nRandomNumberGeneratorSeed : 40\n"
                   "[run_presets]\nInterfaceBandwidth : CALC\nUseRamulatorTrace : False\n")
    topo = tmp_path / "t.csv"
    topo.write_text("Layer, M, N, K,\ng, 16, 16, 16,\n")
    code, out = run_cli(["--scalesim-config", str(cfg), "--topology", str(topo), "--convention",
                         "scalesim", "--json"], capsys)
    blob = json.loads(out)
    assert code == 0 and blob["layers"][0]["total_cycles"] == 119   # SCALE-Sim 3.0.0: 119


def test_cli_needs_one_workload_and_one_profile(capsys):
    with pytest.raises(ValueError, match="--workload"):
        run_cli(["--profile", "gemmini"], capsys)
    with pytest.raises(ValueError, match="--profile"):
        run_cli(["--workload", "resnet18"], capsys)


def test_package_exports():
    for name in ("simulate", "load_profile", "load_scalesim_config", "load_scalesim_topology",
                 "zoo", "LayerStats", "NetworkStats"):
        assert hasattr(sim, name), name
