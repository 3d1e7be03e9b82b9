"""Peak loops (csrc/peak.c via lowbit.kernels.peak): op counts, feature gating and errors."""
from __future__ import annotations

import pytest

import lowbit.kernels as lk
from lowbit.bench.config import PEAK_KINDS
from lowbit.kernels import peak

FEATURES = set(lk.cpu_features())

# Per loop, by hand from csrc/peak.c: (CPU features it needs, ops of one iteration of one
# thread = chains x MACs per chain step x 2).
EXPECTED = {
    "int8_vnni": ({"avx512_vnni", "avx512bw"}, 24 * 64 * 2),          # 24 vpdpbusd zmm
    "int8_avx512_maddwd": ({"avx512f", "avx512bw"}, 14 * 32 * 2),     # 14 vpmaddwd zmm
    "int8_avx512_maddubs": ({"avx512f", "avx512bw"}, 10 * 64 * 2),    # 10 vpmaddubsw zmm
    "int8_avx2_maddwd": ({"avx2"}, 7 * 16 * 2),                        # 7 vpmaddwd ymm
    "int8_avx2_maddubs": ({"avx2"}, 4 * 32 * 2),                       # 4 vpmaddubsw ymm
    "int8_sse2_maddwd": (set(), 7 * 8 * 2),                            # 7 pmaddwd xmm
    "fp32_avx512_fma": ({"avx512f"}, 24 * 16 * 2),                     # 24 vfmadd231ps zmm
    "fp32_avx2_fma": ({"avx2", "fma"}, 14 * 8 * 2),                    # 14 vfmadd231ps ymm
    "fp32_sse2_muladd": (set(), 7 * 4 * 2),                            # 7 mulps + addps xmm
    "bf16_avx512_bf16": ({"avx512f", "avx512_bf16"}, 24 * 32 * 2),     # 24 vdpbf16ps zmm
    "binary_avx512_vpopcntdq": ({"avx512f", "avx512_vpopcntdq"}, 14 * 512 * 2),
    "binary_avx2_lut": ({"avx2"}, 4 * 256 * 2),                        # 4 x 256 bits
    "binary_popcnt": ({"popcnt"}, 5 * 64 * 2),                         # 5 x 64 bits
}


def per_iteration_ops(kind: str) -> int:
    """Ops of one loop iteration on one thread, 0 if this CPU cannot run it."""
    if kind == "fp32_fma":  # the widest FMA
        return per_iteration_ops("fp32_avx512_fma") or per_iteration_ops("fp32_avx2_fma")
    needs, ops = EXPECTED[kind]
    return ops if needs <= FEATURES else 0


def test_expected_covers_every_loop():
    assert set(EXPECTED) | {"fp32_fma"} == set(peak.PEAKS)


def test_bench_peak_kinds_are_loops():
    assert set(PEAK_KINDS) == set(peak.PEAKS) and PEAK_KINDS[0] == "int8_vnni"


def test_ceiling_loops_name_profile_variants():
    loops = peak.ceiling_loops()
    assert "fp32_fma" not in {loop.kind for loop in loops}
    pairs = [(loop.precision, loop.variant) for loop in loops]
    assert len(set(pairs)) == len(pairs) == len(peak.PEAKS) - 1
    for loop in loops:
        assert loop.kind == ("int8_vnni" if loop.variant == "avx512_vnni"
                             else f"{loop.precision}_{loop.variant}")
        assert loop.function == f"lb_peak_{loop.kind}"


@pytest.mark.parametrize("kind", sorted(peak.PEAKS))
@pytest.mark.parametrize("iters", [1, 1000, 12345])
def test_run_peak_counts_ops(kind, iters):
    threads = lk.num_threads()
    ops = peak.run_peak(kind, iters)
    assert isinstance(ops, float)
    assert ops == iters * threads * per_iteration_ops(kind)


def test_peaks_supported_here():
    for kind in peak.PEAKS:
        assert (peak.run_peak(kind, 10) > 0) == (per_iteration_ops(kind) > 0), kind
    # every x86-64 CPU has SSE2: those two loops always run
    assert peak.run_peak("int8_sse2_maddwd", 1) > 0 and peak.run_peak("fp32_sse2_muladd", 1) > 0


@pytest.mark.parametrize("kind", ["fp32_fma", "int8_sse2_maddwd", "binary_popcnt",
                                  "int8_avx2_maddubs"])
def test_run_peak_follows_thread_count(kind):
    if not per_iteration_ops(kind):
        pytest.skip(f"this CPU cannot run {kind}")
    orig = lk.num_threads()
    try:
        lk.set_num_threads(1)
        one = peak.run_peak(kind, 100)
        lk.set_num_threads(2)
        two = peak.run_peak(kind, 100)
    finally:
        lk.set_num_threads(orig)
    assert one == 100 * per_iteration_ops(kind)
    assert two == 2 * one


@pytest.mark.parametrize("kind", ["int8", "fp16_fma", "", "INT8_VNNI", "int8_avx512"])
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


@pytest.mark.parametrize("kind", ["int8_vnni", "bf16_avx512_bf16", "binary_avx512_vpopcntdq"])
def test_measure_peak_zero_when_unsupported(kind):
    value = peak.measure_peak(kind, seconds=0.01, repeats=1)
    assert (value > 0) == (per_iteration_ops(kind) > 0)


def test_measure_peak_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        peak.measure_peak("nope")


def test_best_rate_grows_calls_and_keeps_the_best(monkeypatch):
    # a fake clock: a call of n units takes n microseconds, the 2nd counted call is stretched
    # fourfold (another process took the core); short calls are not counted
    clock = [0.0]
    calls = []

    def run(n):
        calls.append(n)
        stretched = len([c for c in calls if c >= 5000]) == 2
        clock[0] += n * 1e-6 * (4 if stretched else 1)
        return float(n)

    monkeypatch.setattr(peak.time, "perf_counter", lambda: clock[0])
    rate = peak.best_rate(run, seconds=0.01, repeats=3)
    assert rate == pytest.approx(1e6)                    # n units per n microseconds
    assert calls[0] == 1 and calls[1] == 10_000          # 1 us -> sized to 10 ms at once
    assert len(calls) == 4                               # 3 counted
