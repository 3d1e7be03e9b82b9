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


def _bench(group, m, n, k, impl, family, precision, median, ops, nbytes):
    return {"group": group, "name": f"test[{impl}]",
            "stats": {"median": median, "min": median, "rounds": 3},
            "extra_info": {"impl": impl, "family": family, "precision": precision, "ops": ops,
                           "bytes": nbytes, "m": m, "n": n, "k": k, "isa": "x", "pass": 0}}


def test_bench_json_fraction_of_bound(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # host: int8 1 TOP/s, fp32 0.25 TOP/s; DRAM 20 GB/s; L2 of 1 MB at 200 GB/s
    host = Device(name="host", kind="cpu", peak={"int8": 1e12, "fp32": 2.5e11},
                  memory=(MemoryLevel("DRAM", 20e9), MemoryLevel("L2", 200e9, 1e6)),
                  tile_bytes=2048, pj_per_op={},
                  sources={k: "test" for k in ("peak_tops.int8", "peak_tops.fp32", "memory.DRAM",
                                               "memory.L2")})
    save_device(host, host_profile_path())
    data = {"benchmarks": [
        # 1024^3 int8: ops 2.147e9 -> 2.147 ms at 1 TOP/s; bytes 6.29e6 (> L2: DRAM, 0.31 ms)
        _bench("gemm_int8-1024x1024x1024", 1024, 1024, 1024, "lowbit[avx512_vnni]", "lowbit",
               "int8", 2.147483648e-3 / 0.8, 2 * 1024**3, 6291456),
        _bench("gemm_int8-1024x1024x1024", 1024, 1024, 1024, "numpy_fp32", "numpy", "fp32",
               0.02, 2 * 1024**3, 12582912),
        # GEMV 1x1000x1000: bytes 1.006e6 > 1 MB -> DRAM: 50.3 us bound, measured 100.6 us
        _bench("gemm_int8-1x1000x1000", 1, 1000, 1000, "lowbit[avx512_vnni]", "lowbit", "int8",
               100.6e-6, 2e6, 1_006_000),
        _bench("gemm_binary-1x1000x1000", 1, 1000, 1000, "lowbit[avx512]", "lowbit", "binary",
               1e-6, 2e6, 128_000),
    ]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    assert run_cli("--bench-json", str(path), "--json") == 0
    rows = {(r["group"], r["impl"]): r for r in json.loads(capsys.readouterr().out)["kernels"]}
    assert len(rows) == 3  # lowbit kernels only
    big = rows[("gemm_int8-1024x1024x1024", "lowbit[avx512_vnni]")]
    assert big["bound"] == "compute" and big["fraction"] == pytest.approx(0.8)
    gemv = rows[("gemm_int8-1x1000x1000", "lowbit[avx512_vnni]")]
    assert gemv["bound"] == "memory:DRAM" and gemv["bound_s"] == pytest.approx(50.3e-6)
    assert gemv["fraction"] == pytest.approx(0.5)
    binary = rows[("gemm_binary-1x1000x1000", "lowbit[avx512]")]
    assert binary["fraction"] is None  # the host has no popcount ceiling
    assert run_cli("--bench-json", str(path), "--plot", str(tmp_path / "k.png")) == 0
    out = capsys.readouterr().out
    assert "80%" in out and "largest shape per kernel" in out
    assert (tmp_path / "k.png").is_file()


def test_host_profile_missing_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="lowbit roofline calibrate"):
        run_cli("--workload", "resnet18", "--profile", "host")
