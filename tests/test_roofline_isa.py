"""lowbit.roofline: per-ISA ceilings in device files, measured U, LLM memory fit, tpu-v4 CMEM.

Pure Python (no native build). Expected numbers are derived in the comments.
"""
from __future__ import annotations

import pytest

from lowbit.roofline import (LLAMA2_7B, LLAMA2_70B, Device, DeviceError, MemoryFitWarning,
                             MemoryLevel, analyze, load_device, memory_fit, weight_bytes)
from lowbit.roofline.llm import kv_cache_bytes, llm_workload
from lowbit.roofline.profile_io import device_to_toml
from lowbit.simulator.workload import BatchedMatmul, Gemm

CPU = """
name = "cpu"
kind = "cpu"
tile_bytes = 1e9
[peak_tops]
int8 = 2.0
fp32 = 0.5
[isa_peak_tops.int8]
avx512_vnni = 2.0
avx2_maddwd = 0.4
[isa_peak_tops.fp32]
avx512_fma = 0.5
[[memory]]
name = "DRAM"
bandwidth_gbs = 40.0
capacity_bytes = 16e9
[efficiency]
default = 1.0
int8 = 0.8
[sources]
"peak_tops.int8" = "a"
"peak_tops.fp32" = "a"
"isa_peak_tops.int8.avx512_vnni" = "measured"
"isa_peak_tops.int8.avx2_maddwd" = "measured"
"isa_peak_tops.fp32.avx512_fma" = "measured"
"memory.DRAM" = "b"
"efficiency.int8" = "measured by hand: a 1024^3 GEMM at 80% of the peak"
"""


# ------------------------------------------------------------------------------------------
# isa_peak_tops in device files
# ------------------------------------------------------------------------------------------
def test_isa_peaks_load_in_ops_per_second(tmp_path):
    path = tmp_path / "cpu.toml"
    path.write_text(CPU)
    dev = load_device(path)
    assert dev.isa_peak["int8"] == {"avx512_vnni": 2e12, "avx2_maddwd": 0.4e12}
    assert dev.isa_peak_ops("fp32", "avx512_fma") == 0.5e12
    with pytest.raises(ValueError, match="no int8.sse2_maddwd ceiling"):
        dev.isa_peak_ops("int8", "sse2_maddwd")
    # the file written back reads back to an equal record
    again = tmp_path / "again.toml"
    again.write_text(device_to_toml(dev))
    back = load_device(again)
    assert back.isa_peak == dev.isa_peak and back.peak == dev.peak
    assert back.efficiency == dev.efficiency and back.sources == dev.sources


@pytest.mark.parametrize("edit, field, why", [
    (lambda t: t.replace("[isa_peak_tops.fp32]", "[isa_peak_tops.fp23]")
     .replace('"isa_peak_tops.fp32.avx512_fma"', '"isa_peak_tops.fp23.avx512_fma"'),
     "isa_peak_tops.fp23", "did you mean 'fp32'"),
    (lambda t: t.replace("[isa_peak_tops.fp32]", "[isa_peak_tops.bf16]")
     .replace('"isa_peak_tops.fp32.avx512_fma"', '"isa_peak_tops.bf16.avx512_fma"'),
     "isa_peak_tops.bf16", "has no peak of its precision"),
    (lambda t: t.replace("avx2_maddwd = 0.4", "avx2_maddwd = 2.5"),
     "isa_peak_tops.int8.avx2_maddwd", "exceeds the int8 peak"),
    (lambda t: t.replace("avx2_maddwd = 0.4", "avx2_maddwd = -0.4"),
     "isa_peak_tops.int8.avx2_maddwd", "positive"),
    (lambda t: t.replace("avx2_maddwd = 0.4", 'avx2_maddwd = "fast"'),
     "isa_peak_tops.int8.avx2_maddwd", "must be a number"),
    (lambda t: t.replace("avx2_maddwd = 0.4", "AVX2 = 0.4")
     .replace('"isa_peak_tops.int8.avx2_maddwd"', '"isa_peak_tops.int8.AVX2"'),
     "isa_peak_tops.int8.AVX2", "lower case"),
    (lambda t: t.replace('"isa_peak_tops.int8.avx2_maddwd" = "measured"\n', ""),
     "sources.isa_peak_tops.int8.avx2_maddwd", "citation"),
    (lambda t: t.replace("[isa_peak_tops.fp32]\navx512_fma = 0.5\n", "")
     .replace("[isa_peak_tops.int8]", "[isa_peak_tops]\nfp32 = 0.5\n[isa_peak_tops.int8]"),
     "isa_peak_tops.fp32", "must be a table"),
    (lambda t: t.replace("[isa_peak_tops.fp32]\navx512_fma = 0.5\n", "[isa_peak_tops.fp32]\n")
     .replace('"isa_peak_tops.fp32.avx512_fma" = "measured"\n', ""),
     "isa_peak_tops.fp32", "must map ISA variants"),
    (lambda t: t.replace("int8 = 2.0\nfp32", "int8 = -2.0\nfp32"), "peak_tops.int8",
     "positive"),
])
def test_bad_isa_peaks_name_the_field(tmp_path, edit, field, why):
    path = tmp_path / "bad.toml"
    path.write_text(edit(CPU))
    with pytest.raises(DeviceError) as err:
        load_device(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {field}: ") and why in message, message


def test_isa_peaks_checked_on_records_too():
    base = dict(name="d", kind="cpu", peak={"int8": 1e12}, memory=(MemoryLevel("DRAM", 1e9),),
                tile_bytes=1024, pj_per_op={})
    Device(**base, isa_peak={"int8": {"avx2_maddwd": 1e12}})  # equal to the peak: fine
    with pytest.raises(DeviceError, match=r"isa_peak\.int8\.avx2_maddwd: exceeds"):
        Device(**base, isa_peak={"int8": {"avx2_maddwd": 1.1e12}})
    with pytest.raises(DeviceError, match=r"isa_peak\.fp32: has no peak"):
        Device(**base, isa_peak={"fp32": {"avx2_fma": 1e9}})


# ------------------------------------------------------------------------------------------
# U: measured on the host, else the profile default
# ------------------------------------------------------------------------------------------
def test_measured_efficiency_is_used_and_named(tmp_path):
    path = tmp_path / "cpu.toml"
    path.write_text(CPU)
    dev = load_device(path)
    # 1000^3 int8: 2e9 ops at 2 TOP/s x U 0.8 = 1.25 ms; bytes 3e6 at 40 GB/s = 75 us
    r = analyze(Gemm("sq", m=1000, n=1000, k=1000), dev, "int8").layers[0]
    assert (r.efficiency, r.efficiency_source) == (0.8, "measured")
    assert r.bound == "compute" and r.latency_s == pytest.approx(2e9 / (2e12 * 0.8))
    # fp32 has no entry: the default 1.0, "default"; 2e9 / 0.5e12 = 4 ms
    f = analyze(Gemm("sq", m=1000, n=1000, k=1000), dev, "fp32").layers[0]
    assert (f.efficiency, f.efficiency_source) == (1.0, "default")
    assert f.latency_s == pytest.approx(4e-3)
    # an entry whose citation is not a measurement stays "default"
    plain = load_device(path).__class__(**{**_fields(dev), "sources": {
        **dev.sources, "efficiency.int8": "an assumption"}})
    assert plain.efficiency_for("int8") == (0.8, "default")


def _fields(dev: Device) -> dict:
    return {name: getattr(dev, name) for name in dev.__dataclass_fields__ if name != "npu"}


# ------------------------------------------------------------------------------------------
# LLM: Llama-2-70B (grouped-query attention) and the memory fit
# ------------------------------------------------------------------------------------------
def test_parameter_counts_match_the_released_models():
    # Meta's checkpoints: 6,738,415,616 and 68,976,648,192 parameters
    assert LLAMA2_7B.gemm_params() + LLAMA2_7B.other_params() == 6_738_415_616
    assert LLAMA2_70B.gemm_params() + LLAMA2_70B.other_params() == 68_976_648_192


def test_gqa_decode_layers_by_hand():
    wl = llm_workload(LLAMA2_70B, "decode", batch=2, context=4096)
    layers = {layer.name: layer for layer in wl.layers}
    assert len(wl.layers) == 80 * 9 + 1
    # 8 KV heads of 128: k/v projections 8192 -> 1024
    assert layers["layers.0.k_proj"] == Gemm("layers.0.k_proj", m=2, n=1024, k=8192)
    # one matmul per KV head and sequence, its 8 query heads as rows
    assert layers["layers.0.attn_scores"] == BatchedMatmul("layers.0.attn_scores", batch=16,
                                                           m=8, n=4096, k=128)
    assert layers["layers.0.attn_context"] == BatchedMatmul("layers.0.attn_context", batch=16,
                                                            m=8, n=128, k=4096)
    # the same ops as 64 heads x 1 token: 2 * 2 * 64 * 4096 * 128
    assert 2 * 16 * 8 * 4096 * 128 == 2 * 2 * 64 * 4096 * 128
    # KV cache: 2 (K, V) * 80 layers * 4096 tokens * 1024 * 2 bytes * batch 2
    assert kv_cache_bytes(LLAMA2_70B, 2, 4096, 16) == 2 * 80 * 4096 * 1024 * 2 * 2
    # 7B keeps multi-head attention: one matmul per head
    mha = {layer.name: layer for layer in llm_workload(LLAMA2_7B, "decode").layers}
    assert mha["layers.0.attn_scores"].batch == 32 and mha["layers.0.attn_scores"].m == 1


def test_70b_w16a16_does_not_fit_rtx_4090():
    # weights 68,976,648,192 x 2 B = 137,953,296,384; KV 2 * 80 * 2048 * 1024 * 2 = 671,088,640
    with pytest.warns(MemoryFitWarning, match="DOES NOT FIT"):
        r = analyze("llama2-70b-decode", "rtx-4090", "w16a16")
    llm = r.llm
    assert llm["weight_bytes"] == 137_953_296_384
    assert llm["kv_cache_bytes"] == 671_088_640
    assert llm["memory_required_bytes"] == 137_953_296_384 + 671_088_640
    assert llm["memory_capacity_bytes"] == 24e9 and llm["memory_level"] == "GDDR6X"
    assert llm["fits"] is False
    assert "138.62 GB" in llm["memory_note"] and "24.00 GB GDDR6X" in llm["memory_note"]


def test_7b_w4a16_fits_rtx_4090():
    # GEMM weights 6,607,077,376 x 4.125 bits = 3,406,774,272 B (one fp16 scale per 128),
    # embedding + norms 131,338,240 x 2 B = 262,676,480; KV 2 * 32 * 2048 * 4096 * 2 B
    r = analyze("llama2-7b-decode", "rtx-4090", "w4a16")
    assert r.llm["weight_bytes"] == 3_406_774_272 + 262_676_480
    assert weight_bytes(LLAMA2_7B, 4.125) == r.llm["weight_bytes"]
    assert r.llm["kv_cache_bytes"] == 1_073_741_824
    assert r.llm["fits"] is True and "fits" in r.llm["memory_note"]


def test_fit_unknown_without_a_capacity():
    # the simulator's NPUs give no DRAM capacity
    r = analyze("llama2-7b-decode", "edge-npu-32x32", "w8a8")
    assert r.llm["fits"] is None and "fit unknown" in r.llm["memory_note"]
    dev = Device(name="d", kind="gpu", peak={"fp16": 1e12},
                 memory=(MemoryLevel("HBM", 1e12, 100.0),), tile_bytes=1024, pj_per_op={})
    assert memory_fit(dev, 60.0, 40.0)["fits"] is True    # exactly full
    assert memory_fit(dev, 60.0, 41.0)["fits"] is False


# ------------------------------------------------------------------------------------------
# tpu-v4: CMEM inside HBM
# ------------------------------------------------------------------------------------------
def test_tpu_v4_has_cmem():
    dev = load_device("tpu-v4")
    assert [lv.name for lv in dev.memory] == ["HBM2", "CMEM"]
    cmem = dev.memory[1]
    assert cmem.capacity_bytes == 128 * 2**20
    assert "ISCA 2023" in dev.sources["memory.CMEM"]
    assert "estimate" in dev.sources["memory.CMEM"]  # the bandwidth is lowbit's, labelled
    # a GEMM whose operands fit the CMEM reads them from HBM once: 4096^3 bf16,
    # 3 x 32 MiB = 96 MiB of compulsory traffic
    r = analyze(Gemm("g", m=4096, n=4096, k=4096), dev, "bf16").layers[0]
    assert r.bytes_per_level["HBM2"] == 3 * 4096 * 4096 * 2
