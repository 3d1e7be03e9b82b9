"""lowbit.roofline: the model by hand, devices and their files, NPU bound, LLM mode.

Pure Python (no native build). Expected numbers are derived in the comments.
"""
from __future__ import annotations

import math

import pytest

from lowbit.roofline import (Device, DeviceError, MemoryLevel, analyze, device_names,
                             from_npu, gemm_traffic, get_device, load_device, parse_precision)
from lowbit.roofline.llm import LLAMA2_7B, MemoryFitWarning, kv_cache_bytes, llm_workload
from lowbit.roofline.profile_io import device_to_toml
from lowbit.simulator import load_profile, profile_names, simulate
from lowbit.simulator.workload import (BatchedMatmul, Conv2d, Gemm, Sparsity, Workload)
from lowbit.simulator.zoo import get_workload

TOY_PEAK = 1e12        # int8 ops/s
TOY_BW = 100e9         # bytes/s  -> ridge point 10 ops/byte


def toy(**kw) -> Device:
    """One DRAM level, an int8 ceiling of 1 TOPS, 1 pJ/op, 10 pJ/byte, unbounded reuse."""
    args = dict(name="toy", kind="cpu", peak={"int8": TOY_PEAK},
                memory=(MemoryLevel("DRAM", TOY_BW, None, 10.0),), tile_bytes=1e12,
                pj_per_op={"int8": 1.0})
    args.update(kw)
    return Device(**args)


# ------------------------------------------------------------------------------------------
# The model by hand
# ------------------------------------------------------------------------------------------
def test_gemm_exactly_at_ridge_point():
    # 15x15x15 int8, outputs int8: ops = 2 * 15^3 = 6750, bytes = 3 * 225 = 675,
    # intensity = 10 = ridge; both terms take 6750 / 1e12 = 6.75 ns.
    r = analyze(Gemm("g", m=15, n=15, k=15), toy(), "int8").layers[0]
    assert r.ops == 6750 and r.bytes == 675
    assert r.intensity == pytest.approx(10.0)
    assert r.compute_time_s == pytest.approx(6.75e-9)
    assert r.memory_time_s["DRAM"] == pytest.approx(6.75e-9)
    assert r.latency_s == pytest.approx(6.75e-9)
    assert r.bound == "compute"  # a tie goes to compute
    assert r.utilization == pytest.approx(1.0)
    # energy = 6750 ops * 1 pJ + 675 B * 10 pJ = 13500 pJ
    assert r.energy_j == pytest.approx(13500e-12)


def test_pure_memory_bound_gemv():
    # 1x1000x1000: ops 2e6, bytes 1000 + 1e6 + 1000 = 1.002e6 -> 10.02 us at 100 GB/s
    r = analyze(Gemm("v", m=1, n=1000, k=1000), toy(), "int8").layers[0]
    assert r.bytes == 1_002_000
    assert r.intensity == pytest.approx(2e6 / 1.002e6)
    assert r.bound == "memory:DRAM"
    assert r.latency_s == pytest.approx(1.002e-5)
    assert r.attainable_ops_s == pytest.approx(r.intensity * TOY_BW)
    assert r.utilization == pytest.approx(2e6 / 1.002e-5 / TOY_PEAK)


def test_compute_bound_square_gemm_and_efficiency():
    # 1000^3: ops 2e9, bytes 3e6, intensity 666.7 >> 10: 2 ms at peak, 4 ms at U = 0.5
    g = Gemm("sq", m=1000, n=1000, k=1000)
    r = analyze(g, toy(), "int8").layers[0]
    assert r.bound == "compute" and r.latency_s == pytest.approx(2e-3)
    half = analyze(g, toy(efficiency={"default": 0.5}), "int8").layers[0]
    assert half.latency_s == pytest.approx(4e-3)
    assert half.efficiency == 0.5 and half.efficiency_source == "default"
    assert half.utilization == pytest.approx(0.5)
    forced = analyze(g, toy(), "int8", efficiency=0.25).layers[0]
    assert forced.latency_s == pytest.approx(8e-3)


def test_tiled_reuse_model_by_hand():
    # S = 8000 B: 1000 accumulator slots -> tm = 31, tn = 32. 100^3 int8: A = W = O = 1e4,
    # both exceed S/2, A read ceil(100/32) = 4 times, W ceil(100/31) = 4: 9e4 bytes.
    assert gemm_traffic(100, 100, 1e4, 1e4, 1e4, 8000) == 90_000
    # the smaller operand fits half the buffer: compulsory
    assert gemm_traffic(1, 100, 100, 1e4, 100, 8000) == 10_200
    assert gemm_traffic(100, 100, 1e4, 1e4, 1e4, None) == 30_000


def test_two_levels_bound_names_the_level():
    # DRAM (fast, 1 TB/s) read through an L2 of 8000 B; L2 (10 GB/s) read via 8000 B tiles.
    dev = toy(memory=(MemoryLevel("DRAM", 1e12, None, 0.0), MemoryLevel("L2", 10e9, 8000, 0.0)),
              tile_bytes=8000)
    r = analyze(Gemm("g", m=100, n=100, k=100), dev, "int8").layers[0]
    assert r.bytes_per_level == {"DRAM": 90_000, "L2": 90_000}
    assert r.bound == "memory:L2"
    assert r.latency_s == pytest.approx(90_000 / 10e9)


def test_precision_fallback_and_sparse_ceiling():
    dev = toy(peak={"int8": 1e12, "fp16": 5e11}, sparse_peak={"int8": 2e12})
    assert dev.peak_ops("int4") == 1e12          # int4 runs on the int8 units
    assert dev.peak_ops("bf16") == 5e11          # bf16 shares fp16's
    with pytest.raises(ValueError, match="no ceiling"):
        dev.peak_ops("fp32")
    # a 2:4 layer: the sparse ceiling, half the weights plus 2 index bits per kept weight
    g = Gemm("s", m=1000, n=1000, k=1000, sparsity=Sparsity("2:4", 0.5))
    r = analyze(g, dev, "int8").layers[0]
    assert r.sparse and r.peak_ops_s == 2e12
    assert r.bytes == 1e6 + 500 * 1000 * 10 / 8 + 1e6
    assert r.latency_s == pytest.approx(1e-3)


def test_conv_reads_its_raw_input_not_im2col():
    c = Conv2d("c", in_h=8, in_w=8, in_ch=4, out_ch=16, kernel_h=3, kernel_w=3, padding=1)
    r = analyze(c, toy(), "int8").layers[0]
    # A = 8*8*4 = 256 B (not 64*36), W = 36*16 = 576, O = 64*16 = 1024
    assert r.bytes == 256 + 576 + 1024
    assert r.ops == 2 * 64 * 16 * 36


# ------------------------------------------------------------------------------------------
# Devices and their files
# ------------------------------------------------------------------------------------------
def test_builtin_devices_load_with_cited_figures():
    names = device_names()
    for want in ("a100-sxm", "h100-sxm", "rtx-4090", "jetson-orin-agx", "tpu-v4"):
        assert want in names
    h100 = load_device("h100-sxm")
    assert h100.peak["bf16"] == pytest.approx(989.4e12)
    assert h100.sparse_peak["int8"] == pytest.approx(3957.8e12)
    assert h100.dram.bandwidth == pytest.approx(3.35e12)
    assert [m.name for m in h100.memory] == ["HBM3", "L2"]
    assert h100.tdp_w == 700
    # ridge at bf16: 989.4 / 3.35 = 295 ops/byte
    assert h100.ridge_point("bf16") == pytest.approx(295.3, rel=1e-3)
    # TDP-derived energy per op: 700 W / 989.4 TFLOPS = 0.7075 pJ
    assert h100.op_energy_pj("bf16") == pytest.approx(700 / 989.4, rel=1e-9)
    a100 = load_device("a100-sxm")
    assert a100.peak["binary"] == pytest.approx(4992e12)
    assert a100.memory[1].bandwidth == pytest.approx(5120 * 1.41e9)
    tpu = load_device("tpu-v4")
    assert tpu.peak["bf16"] == pytest.approx(8 * 128 * 128 * 2 * 1.05e9, rel=1e-3)


def test_device_toml_round_trip(tmp_path):
    for name in device_names():
        dev = load_device(name)
        path = tmp_path / f"{name}.toml"
        path.write_text(device_to_toml(dev))
        back = load_device(path)
        assert back.peak == dev.peak and back.memory == dev.memory
        assert back.sparse_peak == dev.sparse_peak and back.pj_per_op == pytest.approx(dev.pj_per_op)


GOOD = """
name = "x"
kind = "gpu"
tile_bytes = 1024
tdp_w = 100.0
[peak_tops]
int8 = 10.0
[[memory]]
name = "DRAM"
bandwidth_gbs = 100.0
[sources]
"peak_tops.int8" = "a"
"memory.DRAM" = "b"
tdp_w = "c"
"""


@pytest.mark.parametrize("edit, field", [
    (lambda t: t.replace('kind = "gpu"', 'knd = "gpu"'), "knd"),
    (lambda t: t.replace('kind = "gpu"', 'kind = "tpu"'), "kind"),
    (lambda t: t.replace("int8 = 10.0", "int9 = 10.0"), "peak_tops.int9"),
    (lambda t: t.replace("bandwidth_gbs = 100.0", "bandwidth_gbs = -1.0"), "memory[0].bandwidth"),
    (lambda t: t.replace("bandwidth_gbs = 100.0", 'bandwidth_gbs = "fast"'), "memory[0].bandwidth_gbs"),
    (lambda t: t.replace('"memory.DRAM" = "b"\n', ""), "sources.memory.DRAM"),
    (lambda t: t.replace('tdp_w = "c"\n', ""), "sources.tdp_w"),
    (lambda t: t.replace("tile_bytes = 1024\n", ""), "tile_bytes"),
    (lambda t: t + "[efficiency]\ndefault = 1.5\n", "efficiency.default"),
    (lambda t: t.replace("[peak_tops]", "[peak_tops]\n[peak_tops.x]"), "peak_tops"),
    (lambda t: t.replace("name = \"DRAM\"", "name = \"DRAM\"\nspeed = 3"), "memory[0].speed"),
])
def test_bad_device_file_names_file_and_field(tmp_path, edit, field):
    path = tmp_path / "bad.toml"
    load_device_ok = tmp_path / "good.toml"
    load_device_ok.write_text(GOOD)
    load_device(load_device_ok)  # the unedited file is fine
    path.write_text(edit(GOOD))
    with pytest.raises(DeviceError) as err:
        load_device(path)
    assert str(path) in str(err.value) and field in str(err.value)


def test_toml_syntax_error_names_file(tmp_path):
    path = tmp_path / "syntax.toml"
    path.write_text("name = \n")
    with pytest.raises(DeviceError, match="syntax.toml: TOML syntax error"):
        load_device(path)


def test_npu_adapter_uses_the_simulator_figures():
    prof = load_profile("edge-npu-32x32")
    dev = from_npu(prof)
    assert dev.kind == "npu" and dev.npu is prof
    assert dev.peak["int8"] == 32 * 32 * 1 * 2 * 1e9
    assert dev.peak["int4"] == 32 * 32 * 2 * 2 * 1e9
    assert dev.peak["binary"] == 32 * 32 * 8 * 2 * 1e9
    assert dev.sparse_peak["int8"] == 2 * dev.peak["int8"]          # a 2:4 profile
    assert dev.dram.bandwidth == pytest.approx(8.5 * 1e9)
    sram = dev.memory[1]
    assert sram.capacity_bytes == 262144 + 262144 + 131072
    assert dev.pj_per_op["int8"] == pytest.approx(prof.energy.mac_pj[8] / 2)
    assert get_device("edge-npu-32x32").peak == dev.peak


# ------------------------------------------------------------------------------------------
# The roofline bounds the simulator
# ------------------------------------------------------------------------------------------
BOUND_LAYERS = Workload("bound", (
    Gemm("square", m=256, n=256, k=256), Gemm("gemv", m=1, n=1024, k=1024),
    Gemm("tall", m=1000, n=64, k=300),
    Conv2d("conv", in_h=28, in_w=28, in_ch=32, out_ch=64, kernel_h=3, kernel_w=3, padding=1),
    Conv2d("dw", in_h=28, in_w=28, in_ch=32, out_ch=32, kernel_h=3, kernel_w=3, padding=1,
           groups=32),
    BatchedMatmul("bmm", batch=4, m=64, n=64, k=32),
    Gemm("sparse", m=64, n=128, k=512, sparsity=Sparsity("2:4", 0.5)),
    Gemm("int4", m=64, n=128, k=512, a_bits=4, w_bits=4),
))


@pytest.mark.parametrize("profile", profile_names())
def test_roofline_latency_never_exceeds_simulator(profile):
    sim = simulate(BOUND_LAYERS, profile)
    roof = analyze(BOUND_LAYERS, profile)
    for r, s in zip(roof.layers, sim.layers):
        assert s.feasible, s.reason
        assert r.efficiency_source == "simulator"
        assert r.efficiency == pytest.approx(s.compute_utilization)
        assert r.latency_s <= s.latency_s * (1 + 1e-12), (profile, r.layer, r.latency_s, s.latency_s)


@pytest.mark.parametrize("profile", ["edge-npu-32x32", "tpu-v1"])
def test_a_given_simulation_gives_the_same_records_as_the_roofline_own(profile):
    sim = simulate(BOUND_LAYERS, profile, dataflow="ws")
    given = {s.layer: s.compute_utilization for s in sim.layers}
    assert analyze(BOUND_LAYERS, profile, dataflow="ws", simulated=given).layers == \
        analyze(BOUND_LAYERS, profile, dataflow="ws").layers


def test_a_given_simulation_is_checked():
    with pytest.raises(ValueError, match=r"simulated: layers \['nope'\]"):
        analyze(BOUND_LAYERS, "edge-npu-32x32", simulated={"nope": 0.5})
    with pytest.raises(ValueError, match="not in \\[0, 1\\]"):
        analyze(BOUND_LAYERS, "edge-npu-32x32", simulated={"square": 1.5})
    with pytest.raises(ValueError, match="not an NPU profile"):
        analyze(BOUND_LAYERS, "h100-sxm", simulated={"square": 0.5})
    with pytest.raises(TypeError, match="not LLM workloads"):
        analyze("llama2-7b-decode", "edge-npu-32x32", simulated={})
    # a layer left out (infeasible, or zero) takes the profile default, as without a simulation
    r = analyze(BOUND_LAYERS, "edge-npu-32x32", simulated={"square": 0.0})
    assert {x.efficiency_source for x in r.layers} == {"default"}


# ------------------------------------------------------------------------------------------
# Precisions and LLM mode
# ------------------------------------------------------------------------------------------
def test_parse_precision():
    p = parse_precision("w4a16")
    assert (p.a_bits, p.w_bits, p.compute, p.out_bits) == (16, 4, "fp16", 16)
    assert p.weight_bits() == 4 + 16 / 128
    q = parse_precision("W8A8-KV4")
    assert (q.compute, q.kv_bits, q.kv_bits_stored()) == ("int8", 4, 4 + 16 / 64)
    assert parse_precision("w16a16").weight_bits() == 16
    assert parse_precision("int4").compute == "int4"
    with pytest.raises(ValueError, match="unknown"):
        parse_precision("w4")
    with pytest.raises(ValueError, match="KV cache bits"):
        parse_precision("w4a16-kv3")


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_llm_builder_matches_the_zoo_at_batch_one(phase):
    zoo = get_workload(f"llama2-7b-{phase}")
    ours = llm_workload(LLAMA2_7B, phase, batch=1)
    assert [layer.name for layer in ours.layers] == [layer.name for layer in zoo.layers]
    assert [layer.gemms() for layer in ours.layers] == [layer.gemms() for layer in zoo.layers]


def test_llama_decode_w16a16_on_h100_by_hand():
    r = analyze("llama2-7b-decode", "h100-sxm", "w16a16")
    # batch 1: every layer is a GEMV or reads the KV cache: all memory bound on HBM
    assert all(rec.bound == "memory:HBM3" for rec in r.layers)
    weights = sum(layer.params for layer in get_workload("llama2-7b-decode").layers)
    kv = kv_cache_bytes(LLAMA2_7B, 1, 2048, 16)
    assert kv == 2 * 32 * 2048 * 4096 * 2
    # HBM bytes = 2-byte weights + KV cache + fp16 activations read / written once:
    # per layer q, k, v, o: 2 * 8192; gate, up: 8192 + 22016; down: 22016 + 8192;
    # scores: Q 32*128*2 in, 32*2048*2 out; context: the same two the other way round
    per_layer = 4 * 16384 + 2 * (8192 + 22016) + (22016 + 8192) + 2 * (8192 + 131072)
    acts = 32 * per_layer + 8192 + 32000 * 2   # + the LM head's input and logits
    assert r.total.bytes_per_level["HBM3"] == 2 * weights + kv + acts
    assert r.llm["tpot_s"] == pytest.approx(r.total.bytes_per_level["HBM3"] / 3.35e12)
    assert r.llm["tokens_per_s"] == pytest.approx(1 / r.llm["tpot_s"])


def test_llm_precisions_batch_and_kv():
    tps = {p: analyze("llama2-7b-decode", "h100-sxm", p).llm["tokens_per_s"]
           for p in ("w16a16", "w8a8", "w4a16")}
    assert tps["w4a16"] > tps["w8a8"] > tps["w16a16"]
    kv4 = analyze("llama2-7b-decode", "h100-sxm", "w4a16-kv4")
    assert kv4.llm["kv_cache_bytes"] == pytest.approx(kv_cache_bytes(LLAMA2_7B, 1, 2048, 4.25))
    assert kv4.llm["tokens_per_s"] > tps["w4a16"]
    by_batch = [analyze("llama2-7b-decode", "h100-sxm", "w16a16", batch=b).llm["tokens_per_s"]
                for b in (1, 8)]
    # batch 64: 13.5 GB of weights + 64 x 1.07 GB of KV cache exceed the 80 GB of HBM3
    with pytest.warns(MemoryFitWarning, match="DOES NOT FIT"):
        by_batch.append(analyze("llama2-7b-decode", "h100-sxm", "w16a16",
                                batch=64).llm["tokens_per_s"])
    assert by_batch[0] < by_batch[1] < by_batch[2]
    both = analyze("llama2-7b", "a100-sxm", "w8a8", prompt_len=128, context=1024).llm
    assert both["ttft_s"] > 0 and both["tpot_s"] > 0
    assert "q_proj" in both["decode_memory_bound"]


def test_llm_params_rejected_for_other_workloads():
    with pytest.raises(TypeError, match="batch"):
        analyze("resnet18", "h100-sxm", "int8", batch=4)
    with pytest.raises(ValueError, match="batch"):
        analyze("llama2-7b-decode", "h100-sxm", batch=0)


def test_result_json_carries_the_record_fields():
    import json
    r = analyze("resnet18", "tpu-v4", "int8")
    d = json.loads(r.to_json())
    rec = d["layers"][0]
    for key in ("layer", "ops", "bytes", "intensity", "bound", "latency_s", "energy_j",
                "utilization"):
        assert key in rec
    assert d["total"]["latency_s"] == pytest.approx(sum(x["latency_s"] for x in d["layers"]))
    assert math.isclose(d["total"]["ops"], 2 * get_workload("resnet18").macs)


def test_roofline_imports_no_kernels_torch_or_compress():
    import subprocess
    import sys
    code = ("import sys, lowbit.roofline, lowbit.roofline.plots; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('lowbit.kernels', "
            "'lowbit.compress'))]; print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
