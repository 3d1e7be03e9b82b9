"""Peak loops (csrc/peak.c via lowbit.kernels.peak): op counts and errors."""
from __future__ import annotations

import pytest

import lowbit.kernels as lk
from lowbit.kernels import peak

FEATURES = set(lk.cpu_features())
CHAINS = 24


def per_iteration_ops(kind: str) -> int:
    """Ops of one loop iteration on one thread (a MAC counts as 2), 0 if unsupported."""
    if kind == "int8_vnni":
        return CHAINS * 64 * 2 if {"avx512_vnni", "avx512bw"} <= FEATURES else 0
    if "avx512f" in FEATURES:
        return CHAINS * 16 * 2
    if {"avx2", "fma"} <= FEATURES:
        return 14 * 8 * 2
    return 0


@pytest.mark.parametrize("kind", ["int8_vnni", "fp32_fma"])
@pytest.mark.parametrize("iters", [1, 1000, 12345])
def test_run_peak_counts_ops(kind, iters):
    threads = lk.num_threads()
    ops = peak.run_peak(kind, iters)
    assert isinstance(ops, float)
    assert ops == iters * threads * per_iteration_ops(kind)


def test_peaks_supported_here():
    if "avx512f" in FEATURES or {"avx2", "fma"} <= FEATURES:
        assert peak.run_peak("fp32_fma", 10) > 0
    if {"avx512_vnni", "avx512bw"} <= FEATURES:
        assert peak.run_peak("int8_vnni", 10) > 0


def test_run_peak_follows_thread_count():
    orig = lk.num_threads()
    try:
        lk.set_num_threads(1)
        one = peak.run_peak("fp32_fma", 100)
        lk.set_num_threads(2)
        two = peak.run_peak("fp32_fma", 100)
    finally:
        lk.set_num_threads(orig)
    assert one == 100 * per_iteration_ops("fp32_fma")
    assert two == 2 * one


@pytest.mark.parametrize("kind", ["int8", "fp16_fma", "", "INT8_VNNI"])
def test_run_peak_unknown_kind(kind):
    with pytest.raises(ValueError, match="kind"):
        peak.run_peak(kind, 10)


@pytest.mark.parametrize("iters", [0, -1, -(2 ** 40)])
def test_run_peak_bad_iters(iters):
    with pytest.raises(ValueError, match="iters"):
        peak.run_peak("fp32_fma", iters)


def test_measure_peak_fp32_positive():
    value = peak.measure_peak("fp32_fma", seconds=0.02, repeats=2)
    assert isinstance(value, float)
    if per_iteration_ops("fp32_fma"):
        assert value > 0
        # sanity: not above a generous physical bound (64 flop/cycle/core at 10 GHz)
        assert value < 64 * 10e9 * lk.num_threads()
    else:
        assert value == 0.0


def test_measure_peak_int8_vnni():
    value = peak.measure_peak("int8_vnni", seconds=0.02, repeats=2)
    if per_iteration_ops("int8_vnni"):
        assert value > 0
    else:
        assert value == 0.0


def test_measure_peak_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        peak.measure_peak("nope")
