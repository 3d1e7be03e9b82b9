"""app/roofline_cmd.py: analyze from the command line, --bench-json against a host profile.

No native build needed: calibration (which needs the C peak loops) is not run here; a host
profile is written by hand into a temporary XDG cache folder instead.
"""
from __future__ import annotations

import argparse
import json

import pytest

from lowbit import roofline_cmd
from lowbit.roofline import Device, MemoryLevel, host_profile_path, save_device


def run_cli(*argv) -> int:
    parser = argparse.ArgumentParser(prog="lowbit")
    sub = parser.add_subparsers(dest="command", required=True)
    roofline_cmd.add_parser(sub)
    args = parser.parse_args(["roofline", *argv])
    return args.func(args)


def test_llm_decode_json(capsys):
    assert run_cli("--workload", "llama2-7b-decode", "--profile", "h100-sxm",
                   "--precision", "w4a16", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    rec = out["layers"][0]
    for key in ("layer", "ops", "bytes", "intensity", "bound", "latency_s", "energy_j",
                "utilization"):
        assert key in rec
    assert rec["layer"] == "layers.0.q_proj" and rec["bound"] == "memory:HBM3"
    assert out["llm"]["tokens_per_s"] == pytest.approx(1 / out["llm"]["tpot_s"])


def test_table_and_plots(tmp_path, capsys):
    assert run_cli("--workload", "resnet18", "--profile", "edge-npu-32x32",
                   "--plot", str(tmp_path / "r.png"), "--breakdown", str(tmp_path / "b.svg")) == 0
    out = capsys.readouterr().out
    assert "resnet18 on edge-npu-32x32" in out and "memory-bound layers" in out
    assert (tmp_path / "r.png").stat().st_size > 1000
    assert (tmp_path / "b.svg").read_text().lstrip().startswith("<?xml")


def test_missing_workload_is_an_error():
    with pytest.raises(ValueError, match="--workload"):
        run_cli("--profile", "h100-sxm")


def _bench(group, m, n, k, impl, family, precision, median, ops, nbytes, isa="x"):
    return {"group": group, "name": f"test[{impl}]",
            "stats": {"median": median, "min": median, "rounds": 3},
            "extra_info": {"impl": impl, "family": family, "precision": precision, "ops": ops,
                           "bytes": nbytes, "m": m, "n": n, "k": k, "isa": isa, "pass": 0}}


# host: per-ISA ceilings (1e12 ops/s), DRAM 20 GB/s, an L2 of 1 MB at 200 GB/s
HOST_ISA = {"int8": {"avx512_vnni": 1.0, "avx512_maddwd": 0.4, "avx512_maddubs": 0.5,
                     "avx2_maddwd": 0.2, "avx2_maddubs": 0.25, "sse2_maddwd": 0.1},
            "fp32": {"avx512_fma": 0.25, "avx2_fma": 0.125, "sse2_muladd": 0.05},
            "bf16": {"avx512_bf16": 0.5},
            "binary": {"avx512_vpopcntdq": 8.0, "popcnt": 1.0}}  # no avx2_lut


def _save_host(isa_peak=HOST_ISA):
    isa = {p: {v: x * 1e12 for v, x in t.items()} for p, t in isa_peak.items()}
    peak = {p: max(t.values()) for p, t in isa.items()}
    cited = [f"peak_tops.{p}" for p in peak] + ["memory.DRAM", "memory.L2"]
    cited += [f"isa_peak_tops.{p}.{v}" for p, t in isa.items() for v in t]
    host = Device(name="host", kind="cpu", peak=peak, isa_peak=isa,
                  memory=(MemoryLevel("DRAM", 20e9), MemoryLevel("L2", 200e9, 1e6)),
                  tile_bytes=2048, pj_per_op={}, sources={k: "test" for k in cited})
    save_device(host, host_profile_path())


G_INT8 = ("gemm_int8-1024x1024x1024", 1024, 1024, 1024)
G_BIN = ("gemm_binary-1024x1024x4096", 1024, 1024, 4096)
G_W4A16 = ("gemm_w4a16-1x16384x8192", 1, 16384, 8192)
G_W4A8 = ("gemm_w4a8-1x16384x8192", 1, 16384, 8192)
INT8_OPS, INT8_BYTES = 2 * 1024**3, 6291456        # > the L2: DRAM, 0.31 ms; compute wins
BIN_OPS, BIN_BYTES = 2 * 1024 * 1024 * 4096, 5242880
W4_OPS = 2 * 16384 * 8192
# w4 bytes: 4-bit weights 67,108,864 + fp16 scales per 32 8,388,608 + float32 out 65,536,
# plus activations: bf16 16,384, float32 32,768, int8 8,192
W4_BF16, W4_F32, W4_S8 = 75_579_392, 75_595_776, 75_571_200


def _lowbit(group, impl_isa, precision, median, ops, nbytes, impl=None):
    name, m, n, k = group
    return _bench(name, m, n, k, impl or f"lowbit[{impl_isa}]", "lowbit", precision, median,
                  ops, nbytes, isa=impl_isa)


def _synthetic():
    # t = 2.147 ms at the VNNI ceiling; the bound of each variant is t * 1 TOP/s / its
    # ceiling: avx512 (vpmaddwd, 0.4) 2.5 t, avx2 5 t, portable (SSE2, 0.1) 10 t, numba
    # (avx512_maddwd) 2.5 t
    t_int8 = INT8_OPS / 1e12
    return {"benchmarks": [
        _lowbit(G_INT8, "avx512_vnni", "int8", t_int8 / 0.8, INT8_OPS, INT8_BYTES),  # 80%
        _lowbit(G_INT8, "avx512", "int8", 5 * t_int8, INT8_OPS, INT8_BYTES),         # 50%
        _lowbit(G_INT8, "avx2", "int8", 5 * t_int8, INT8_OPS, INT8_BYTES),           # 100%
        _lowbit(G_INT8, "portable", "int8", 20 * t_int8, INT8_OPS, INT8_BYTES),      # 50%
        _lowbit(G_INT8, "numba", "int8", 25 * t_int8, INT8_OPS, INT8_BYTES),         # 10%
        _bench(*G_INT8, "numpy_fp32", "baseline", "fp32", 0.02, INT8_OPS, 12582912),
        # binary: 1.074 ms at 8 TOP/s (> DRAM 0.26 ms)
        _lowbit(G_BIN, "avx512", "binary", 2 * BIN_OPS / 8e12, BIN_OPS, BIN_BYTES),
        _lowbit(G_BIN, "avx2", "binary", 1e-2, BIN_OPS, BIN_BYTES),
        _lowbit(G_BIN, "portable", "binary", 2 * BIN_OPS / 1e12, BIN_OPS, BIN_BYTES),
        # int4 GEMVs past the L2: DRAM at 20 GB/s, e.g. 75,579,392 B = 3.779 ms, except
        # portable w4a16, bound by SSE2 (2.68e8 / 5e10 = 5.37 ms)
        _lowbit(G_W4A16, "avx512_vnni", "w4a16_bf16", W4_BF16 / 20e9 / 0.8, W4_OPS, W4_BF16),
        _lowbit(G_W4A16, "portable", "w4a16", 2 * W4_OPS / 5e10, W4_OPS, W4_F32),
        _lowbit(G_W4A8, "avx512", "w4a8", 2 * W4_S8 / 20e9, W4_OPS, W4_S8),
        # not a kernel: skipped
        _bench("simulate-resnet18", None, None, None, "lowbit-fast[os]", "lowbit", "sim-int8",
               0.004, 1718353, 1),
    ]}


def _rows(capsys, path):
    assert run_cli("--bench-json", str(path), "--json") == 0
    out = json.loads(capsys.readouterr().out)
    return {(r["group"], r["impl"]): r for r in out["kernels"]}


def test_bench_json_judges_each_variant_by_its_instructions(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _save_host()
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(_synthetic()))
    rows = _rows(capsys, path)
    assert len(rows) == 11  # lowbit kernels only: no baseline, no simulator group
    expect = {  # (group, isa): (ceiling, bound, fraction)
        (G_INT8, "avx512_vnni"): ("int8.avx512_vnni", "compute", 0.8),
        (G_INT8, "avx512"): ("int8.avx512_maddwd", "compute", 0.5),
        (G_INT8, "avx2"): ("int8.avx2_maddwd", "compute", 1.0),
        (G_INT8, "portable"): ("int8.sse2_maddwd", "compute", 0.5),
        (G_INT8, "numba"): ("int8.avx512_maddwd", "compute", 0.1),
        (G_BIN, "avx512"): ("binary.avx512_vpopcntdq", "compute", 0.5),
        (G_BIN, "portable"): ("binary.popcnt", "compute", 0.5),
        (G_W4A16, "avx512_vnni"): ("bf16.avx512_bf16", "memory:DRAM", 0.8),
        (G_W4A16, "portable"): ("fp32.sse2_muladd", "compute", 0.5),
        (G_W4A8, "avx512"): ("int8.avx512_maddubs", "memory:DRAM", 0.5),
    }
    for (group, isa), (ceiling, bound, fraction) in expect.items():
        r = rows[(group[0], f"lowbit[{isa}]")]
        assert (r["ceiling"], r["bound"]) == (ceiling, bound), (group, isa, r)
        assert r["fraction"] == pytest.approx(fraction), (group, isa)
    w4 = rows[(G_W4A16[0], "lowbit[avx512_vnni]")]
    assert w4["bound_s"] == pytest.approx(W4_BF16 / 20e9) and w4["level"] == "DRAM"
    gap = rows[(G_BIN[0], "lowbit[avx2]")]
    assert gap["fraction"] is None and gap["ceiling"] is None
    assert "no binary.avx2_lut ceiling" in gap["ceiling_why"]
    # the table and the plot
    assert run_cli("--bench-json", str(path), "--plot", str(tmp_path / "k.png")) == 0
    out = capsys.readouterr().out
    assert "int8.avx2_maddwd" in out and "no binary.avx2_lut ceiling" in out
    assert "largest shape per kernel" in out
    assert "gemm_int8 lowbit[avx512_vnni]" in out and "80% met" in out
    assert "gemm_int8 lowbit[avx512]" in out and "50% MISSED" in out
    assert (tmp_path / "k.png").is_file()


def test_bench_json_numba_takes_the_widest_ceiling_present(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    isa = {p: dict(t) for p, t in HOST_ISA.items()}
    del isa["int8"]["avx512_maddwd"]  # an AVX2 host: numba's LLVM emits ymm code
    _save_host(isa)
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"benchmarks": [
        _lowbit(G_INT8, "numba", "int8", 10 * INT8_OPS / 1e12, INT8_OPS, INT8_BYTES)]}))
    r = _rows(capsys, path)[(G_INT8[0], "lowbit[numba]")]
    assert r["ceiling"] == "int8.avx2_maddwd" and r["fraction"] == pytest.approx(0.5)


def test_bench_json_new_op_is_one_table_entry(tmp_path, monkeypatch, capsys):
    from lowbit import roofline_bench

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _save_host()
    # an operation the registry knows without an entry
    monkeypatch.setattr(roofline_bench, "_kernel_ops",
                        lambda: frozenset(roofline_bench.KERNEL_CEILINGS) | {"spmm_new"})
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"benchmarks": [
        _bench("spmm_new-64x4096x4096", 64, 4096, 4096, "lowbit[avx2]", "lowbit", "fp32",
               1e-3, 1e8, 4e6, isa="avx2")]}))
    r = _rows(capsys, path)[("spmm_new-64x4096x4096", "lowbit[avx2]")]
    assert r["fraction"] is None
    assert r["ceiling_why"] == "no ceiling entry for spmm_new[avx2] in KERNEL_CEILINGS"
    # one entry: its ISA variants use the FMA families; 1e8 / 0.125e12 = 0.8 ms of 1 ms
    monkeypatch.setitem(roofline_bench.KERNEL_CEILINGS, "spmm_new", roofline_bench.FP32_FMA)
    r = _rows(capsys, path)[("spmm_new-64x4096x4096", "lowbit[avx2]")]
    assert r["ceiling"] == "fp32.avx2_fma" and r["fraction"] == pytest.approx(0.8)


def test_bench_json_csr_ceiling_follows_the_row_precision(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _save_host()
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"benchmarks": [
        _bench("spmm_csr-10%", 128, 4096, 4096, "lowbit[avx2]", "lowbit", "int8",
               1e-3, 1e8, 4e6, isa="avx2"),
        _bench("spmm_csr-10%", 128, 4096, 4096, "lowbit_f32[avx2]", "lowbit", "fp32",
               1e-3, 1e8, 4e6, isa="avx2")]}))
    rows = _rows(capsys, path)
    assert rows[("spmm_csr-10%", "lowbit[avx2]")]["ceiling"] == "int8.avx2_maddwd"
    assert rows[("spmm_csr-10%", "lowbit_f32[avx2]")]["ceiling"] == "fp32.avx2_fma"


def test_bench_json_sparse24_has_ceilings(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _save_host()
    path = tmp_path / "bench.json"
    g = "gemm_sparse24-128x4096x4096"
    path.write_text(json.dumps({"benchmarks": [
        _bench(g, 128, 4096, 4096, "lowbit[avx512_vnni]", "lowbit", "int8", 1e-3, 1e8, 4e6,
               isa="avx512_vnni"),
        _bench(g, 128, 4096, 4096, "lowbit_f32[avx512]", "lowbit", "fp32", 1e-3, 1e8, 4e6,
               isa="avx512")]}))
    rows = _rows(capsys, path)
    assert rows[(g, "lowbit[avx512_vnni]")]["ceiling"] == "int8.avx512_vnni"
    assert rows[(g, "lowbit_f32[avx512]")]["ceiling"] == "fp32.avx512_fma"


def test_llm_that_does_not_fit_is_an_error(capsys):
    assert run_cli("--workload", "llama2-70b-decode", "--profile", "rtx-4090",
                   "--precision", "w16a16") == 1
    out, err = capsys.readouterr()
    assert "memory: weights 137.95 GB + KV cache 0.67 GB" in out and "DOES NOT FIT" in out
    assert err.startswith("lowbit: error: llama2-70b at w16a16, batch 1:") and "24.00 GB" in err
    assert "Warning" not in err  # reported once, as the error line
    assert run_cli("--workload", "llama2-7b-decode", "--profile", "rtx-4090",
                   "--precision", "w4a16") == 0
    assert "fits" in capsys.readouterr().out


def test_host_profile_missing_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="lowbit roofline calibrate"):
        run_cli("--workload", "resnet18", "--profile", "host")


def test_bench_json_session_ceilings(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _save_host()
    data = _synthetic()
    # the session measured the AVX2 vpmaddwd loop at 0.1 TOP/s (the profile says 0.2) and
    # the DRAM read at 10 GB/s (the profile: 20); fp32_fma has no profile variant: ignored
    data["benchmarks"] += [
        {"group": "peak", "name": "test_peak[int8_avx2_maddwd-first]",
         "stats": {"median": 0.02, "min": 0.01, "rounds": 3},
         "extra_info": {"impl": "int8_avx2_maddwd", "ops": 1e9}},
        {"group": "peak", "name": "test_peak[fp32_fma-first]",
         "stats": {"median": 0.02, "min": 0.01, "rounds": 3},
         "extra_info": {"impl": "fp32_fma", "ops": 1e12}},
        {"group": "bandwidth", "name": "test_bandwidth[first]",
         "stats": {"median": 0.2, "min": 0.1, "rounds": 3},
         "extra_info": {"impl": "dram_read", "bytes": 1e9}},
    ]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    assert run_cli("--bench-json", str(path), "--ceilings", "session", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["profile"] == "host (session ceilings)"
    rows = {(r["group"], r["impl"]): r for r in out["kernels"]}
    # avx2 gemm_int8: bound 2.147e9 / 1e11 = 21.5 ms against 10.7 ms measured
    assert rows[(G_INT8[0], "lowbit[avx2]")]["fraction"] == pytest.approx(2.0)
    # unchanged ceilings stay the profile's
    assert rows[(G_INT8[0], "lowbit[avx512_vnni]")]["fraction"] == pytest.approx(0.8)
    # the DRAM-bound GEMV against 10 GB/s: twice the bound of the profile's 20 GB/s
    assert rows[(G_W4A16[0], "lowbit[avx512_vnni]")]["fraction"] == pytest.approx(1.6)
    path.write_text(json.dumps(_synthetic()))
    with pytest.raises(ValueError, match="--ceilings session"):
        run_cli("--bench-json", str(path), "--ceilings", "session")
