"""``lowbit roofline calibrate`` on a tiny budget: the host profile it writes.

Needs the native extension (the peak and read loops). Timings on a shared machine are not
asserted, only what they must satisfy whatever the load: every supported loop measured,
each precision's peak its best variant, U in (0, 1] from a named kernel.
"""
from __future__ import annotations

import argparse

import pytest

from lowbit import roofline_calibrate, roofline_cmd
from lowbit.kernels import native, peak
from lowbit.roofline import analyze, get_device, load_device
from lowbit.simulator.workload import Gemm

pytestmark = pytest.mark.skipif(native.lib is None, reason="needs the native extension")

TINY = roofline_calibrate.CalibrationBudget(
    peak_seconds=0.002, peak_repeats=1, bandwidth_seconds=0.002, bandwidth_repeats=1,
    dram_bytes=1 << 20,
    kernel_repeats=1, kernel_seconds=0.0, int8_shape=(8, 64, 64), binary_shape=(8, 64, 128),
    fp32_shape=(8, 64, 64))


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    path = tmp_path_factory.mktemp("host") / "host.toml"
    said: list[str] = []
    device, written = roofline_calibrate.calibrate(path, budget=TINY, say=said.append)
    return device, written, said


def test_every_supported_loop_is_a_ceiling(calibrated):
    device, _, _ = calibrated
    for loop in peak.ceiling_loops():
        supported = peak.run_peak(loop.kind, 1) > 0
        assert (loop.variant in device.isa_peak.get(loop.precision, {})) == supported, loop
    for prec, table in device.isa_peak.items():
        assert device.peak[prec] == max(table.values())
        best = max(table, key=table.get)
        assert device.sources[f"peak_tops.{prec}"] == \
            f"the best of its isa_peak_tops variants ({best})"
        for variant in table:
            assert device.sources[f"isa_peak_tops.{prec}.{variant}"].startswith("measured")


def test_profile_file_reads_back(calibrated):
    device, path, _ = calibrated
    back = load_device(path)  # ops/s written in 1e12 units: equal to rounding
    def flat(d):
        return {f"{p}.{v}": x for p, t in d.isa_peak.items() for v, x in t.items()}
    assert flat(back) == pytest.approx(flat(device), rel=1e-12)
    assert back.efficiency == device.efficiency
    assert path.read_text().startswith("# Host roofline profile of ")


def test_levels_and_dram_capacity(calibrated):
    device, _, _ = calibrated
    names = [lv.name for lv in device.memory]
    assert names[0] == "DRAM" and set(names[1:]) <= {"L3", "L2", "L1"}
    caches = roofline_calibrate.cache_sizes()
    for lv in device.memory[1:]:
        assert lv.capacity_bytes == caches[lv.name]
    with open("/proc/meminfo") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    assert device.memory_capacity == kib * 1024
    assert "MemTotal" in device.sources["memory.DRAM"]


def test_measured_efficiency_per_precision(calibrated):
    device, _, said = calibrated
    for prec in ("int8", "binary", "fp32"):
        if prec not in device.peak:
            continue
        assert 0 < device.efficiency[prec] <= 1
        assert device.efficiency_for(prec)[1] == "measured"
        assert device.sources[f"efficiency.{prec}"].startswith("measured")
        assert any(line.startswith(f"efficiency U {prec}") for line in said)
    assert "gemm_int8" in device.sources["efficiency.int8"]
    assert "numpy" in device.sources["efficiency.fp32"]
    assert device.efficiency_for("bf16") == (1.0, "default")  # no bf16 kernel is timed
    # analyze takes the measured U: 1000^3 int8 is compute-bound on any CPU
    r = analyze(Gemm("sq", m=1000, n=1000, k=1000), device, "int8").layers[0]
    assert (r.efficiency, r.efficiency_source) == (device.efficiency["int8"], "measured")


def test_progress_lines(calibrated):
    _, _, said = calibrated
    assert said[0].startswith("calibrating ")
    assert sum("(first)" in line for line in said) == len(peak.ceiling_loops())
    assert sum(line.startswith("read bandwidth") for line in said) >= 1


def test_cli_writes_the_host_profile(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(roofline_calibrate, "QUICK", TINY)
    parser = argparse.ArgumentParser(prog="lowbit")
    roofline_cmd.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["roofline", "calibrate", "--quick"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "peak int8.sse2_maddwd" in out and "host profile written to" in out
    assert get_device("host").kind == "cpu"
