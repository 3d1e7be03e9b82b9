"""Compute model: fold geometry per dataflow and convention, reduction packing, SRAM counts,
efficiencies, the buffer demand of each fold, and the energy breakdown."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lowbit.simulator.compute import (PSUM_BITS, SPARSE24_META_BITS, conv_ifmap_distinct,
                                      efficiency, fold_length, fold_plan, make_problem,
                                      make_reduction, segment_length, sram_counts)
from lowbit.simulator.energy import energy_breakdown, mac_pj
from lowbit.simulator.engine import simulate_gemm
from lowbit.simulator.hardware import DramSpec, EnergyTable, Profile
from lowbit.simulator.workload import Conv2d, Gemm, Sparsity

ENERGY = EnergyTable(mac_pj={8: 0.2, 4: 0.05, 32: 3.0}, sram_points=((1024, 1.0), (65536, 4.0)),
                     dram_pj_per_byte=100.0, leakage_pj_per_cycle=2.0)


def profile(rows=4, cols=4, sram=4096, *, macs=None, sparsity="none", mode="calc", bw=8.0,
            latency=0, ports=None, clock=1e9):
    return Profile(name="test", rows=rows, cols=cols, dataflows=("os", "ws", "is"),
                   clock_hz=clock, ifmap_sram_bytes=sram, filter_sram_bytes=sram,
                   ofmap_sram_bytes=sram, word_bits=8, dram=DramSpec(bw, latency, ports),
                   macs_per_pe=macs or {8: 1}, energy=ENERGY, sparsity=sparsity,
                   bandwidth_mode=mode)


def problem(m, n, k, prof=None, **layer):
    g = Gemm("g", m=m, n=n, k=k, **layer)
    return make_problem(g.gemms()[0], g, prof or profile())


def closed_form_cycles(m, n, k, rows, cols, df, convention):
    """Fold cycles summed, written out independently of compute.py."""
    sr, sc, t = {"os": (m, n, k), "ws": (k, n, m), "is": (k, m, n)}[df]
    total = 0
    for fc in range(math.ceil(sc / cols)):
        for fr in range(math.ceil(sr / rows)):
            r = min(rows, sr - fr * rows)
            c = min(cols, sc - fc * cols)
            if convention == "lowbit":
                total += r + c + t + rows - 2
            elif df == "os":
                total += t + rows + cols - 2
            else:
                total += 2 * rows + cols + t - 2
    return total


# named edge cases: (id, M, N, K, rows, cols)
EDGES = [
    ("square_exact", 8, 8, 8, 4, 4),
    ("ragged_all", 7, 5, 3, 4, 4),
    ("k_eq_1", 10, 7, 1, 4, 4),
    ("n_eq_1", 9, 1, 13, 4, 4),
    ("m_eq_1", 1, 12, 10, 4, 4),
    ("one_row_array", 7, 5, 3, 1, 8),
    ("one_col_array", 7, 5, 3, 8, 1),
    ("one_pe", 3, 2, 5, 1, 1),
    ("tall_array", 20, 12, 9, 16, 4),
    ("wide_array", 20, 12, 9, 4, 16),
    ("smaller_than_array", 3, 2, 2, 8, 8),
]


@pytest.mark.parametrize("df", ["os", "ws", "is"])
@pytest.mark.parametrize("convention", ["lowbit", "scalesim"])
@pytest.mark.parametrize("case", EDGES, ids=[e[0] for e in EDGES])
def test_fold_cycles_closed_form(case, convention, df):
    _, m, n, k, rows, cols = case
    prob = problem(m, n, k)
    plan = fold_plan(prob, rows, cols, df, convention)
    assert plan.cycles == closed_form_cycles(m, n, k, rows, cols, df, convention)
    sr, sc, _ = {"os": (m, n, k), "ws": (k, n, m), "is": (k, m, n)}[df]
    assert plan.folds == math.ceil(sr / rows) * math.ceil(sc / cols)
    # fold order: column folds outer, row folds inner (SCALE-Sim's)
    assert list(plan.fc) == sorted(plan.fc)
    assert np.all(plan.start[1:] == plan.start[:-1] + plan.length[:-1])


def test_full_fold_is_v2_formula_in_all_dataflows():
    """lowbit: a full fold costs 2R + C + T - 2 (SCALE-Sim v2 paper) whatever the dataflow."""
    for df in ("os", "ws", "is"):
        assert fold_length(4, 6, 9, 4, 6, df, "lowbit") == 2 * 4 + 6 + 9 - 2
    assert fold_length(4, 6, 9, 4, 6, "os", "scalesim") == 9 + 4 + 6 - 2
    assert fold_length(4, 6, 9, 4, 6, "ws", "scalesim") == 2 * 4 + 6 + 9 - 2


def test_partial_fold_is_shorter_in_lowbit_only():
    full = fold_length(4, 4, 10, 4, 4, "ws", "lowbit")
    part = fold_length(1, 2, 10, 4, 4, "ws", "lowbit")
    assert full - part == (4 - 1) + (4 - 2)
    assert fold_length(1, 2, 10, 4, 4, "ws", "scalesim") == fold_length(4, 4, 10, 4, 4, "ws",
                                                                        "scalesim")


@pytest.mark.parametrize("df", ["os", "ws", "is"])
@pytest.mark.parametrize("case", EDGES, ids=[e[0] for e in EDGES])
def test_sram_counts(case, df):
    _, m, n, k, rows, cols = case
    prob = problem(m, n, k)
    lb = sram_counts(fold_plan(prob, rows, cols, df, "lowbit"), prob)
    ss = sram_counts(fold_plan(prob, rows, cols, df, "scalesim"), prob)
    row_folds = {"os": math.ceil(m / rows), "ws": math.ceil(k / rows), "is": math.ceil(k / rows)}
    folds = math.ceil({"os": m, "ws": k, "is": k}[df] / rows) * \
        math.ceil({"os": n, "ws": n, "is": m}[df] / cols)
    want = {"os": (m * k * math.ceil(n / cols), k * n * math.ceil(m / rows), m * n),
            "ws": (m * k * math.ceil(n / cols), k * n, m * n * row_folds["ws"]),
            "is": (m * k, k * n * math.ceil(m / cols), m * n * row_folds["is"])}[df]
    assert (lb.ifmap_reads, lb.filter_reads, lb.ofmap_writes) == want
    over = folds * (rows + cols) if df == "os" else 0   # SCALE-Sim bug 3
    assert (ss.ifmap_reads, ss.filter_reads, ss.ofmap_writes) == (want[0], want[1], want[2] + over)
    assert ss.ofmap_reads == 0
    # lowbit ws / is read back every partial sum after the first row fold, at 32 bits
    if df != "os":
        assert lb.ofmap_reads == m * n * (row_folds[df] - 1)
        assert lb.ofmap_read_bits == lb.ofmap_reads * PSUM_BITS
    else:
        assert lb.ofmap_reads == 0


def test_mapping_and_compute_utilization():
    prob = problem(6, 5, 7)
    plan = fold_plan(prob, 4, 4, "ws", "scalesim")
    eff = efficiency(plan, prob)
    # folds: K=7 -> rows 4, 3; N=5 -> cols 4, 1
    used = [4 * 4, 3 * 4, 4 * 1, 3 * 1]
    assert eff.mapping_efficiency == pytest.approx(sum(used) / (4 * 16))
    lf = 2 * 4 + 2 * 4 + 6 - 3    # SCALE-Sim bug 4: one C - 1 too many
    assert eff.compute_utilization == pytest.approx(np.mean([u * 6 / (16 * lf) for u in used]))
    low = efficiency(fold_plan(prob, 4, 4, "ws", "lowbit"), prob)
    assert low.compute_utilization == pytest.approx(6 * 5 * 7 / (16 * closed_form_cycles(
        6, 5, 7, 4, 4, "ws", "lowbit")))


@pytest.mark.parametrize("bits, p", [(8, 1), (4, 2), (1, 8), (2, 2)])  # 2 bits: at the 4-bit rate
def test_precision_packs_the_reduction(bits, p):
    prof = profile(macs={8: 1, 4: 2, 1: 8})
    prob = problem(5, 6, 13, prof, a_bits=bits, w_bits=bits)
    assert prob.red.macs_per_pe == p
    assert prob.red.steps == math.ceil(13 / p)
    # os: time = reduction steps; every element is still read once per pass
    plan = fold_plan(prob, 4, 4, "os", "lowbit")
    assert plan.t_total == math.ceil(13 / p)
    assert sram_counts(plan, prob).ifmap_reads == 5 * 13 * math.ceil(6 / 4)


def test_mixed_precision_runs_at_the_wider_rate():
    prof = profile(macs={8: 1, 4: 2})
    assert problem(4, 4, 8, prof, a_bits=8, w_bits=4).red.macs_per_pe == 1


@pytest.mark.parametrize("k", [1, 3, 4, 8, 9, 13])
def test_sparse24_reduction(k):
    prof = profile(sparsity="2:4", macs={8: 1, 4: 2})
    prob = problem(5, 6, k, prof, sparsity=Sparsity("2:4", 0.5))
    red = prob.red
    assert red.sparse24 and red.w_total == math.ceil(k / 2) and red.a_total == k
    assert red.steps == math.ceil(k / 2)
    assert red.a_elems(0, red.steps) == k and red.w_elems(0, red.steps) == math.ceil(k / 2)
    assert all(red.a_elems(s, s + 1) >= 1 for s in range(red.steps))
    assert prob.effectual_macs == 5 * 6 * math.ceil(k / 2)
    assert prob.filter_bits == 8 + SPARSE24_META_BITS
    dense = problem(5, 6, k, profile(), sparsity=Sparsity("2:4", 0.5))
    assert not dense.red.sparse24 and dense.notes   # profile cannot skip: dense, with a note


def test_sparse24_halves_os_time_and_filter_traffic():
    prof = profile(sparsity="2:4")
    sp = problem(8, 8, 16, prof, sparsity=Sparsity("2:4", 0.5))
    de = problem(8, 8, 16, prof)
    a = simulate_gemm(sp, prof, "os")
    b = simulate_gemm(de, prof, "os")
    assert a.sram_filter_reads * 2 == b.sram_filter_reads
    assert a.sram_ifmap_reads == b.sram_ifmap_reads
    assert a.macs * 2 == b.macs
    assert a.compute_cycles < b.compute_cycles


def test_reduction_step_widths():
    red = make_reduction(10, 4, False)
    assert red.steps == 3
    assert [int(red.a_elems(s, s + 1)) for s in range(3)] == [4, 4, 2]
    assert int(red.w_elems(0, 3)) == 10


def test_segments_cut_ws_time_to_the_psum_capacity():
    prob = problem(100, 8, 20)       # ws: K = 20 on 4 rows -> 5 row folds
    half = 4096 * 8 // 2
    seg = segment_length(prob, 4, 4, "ws", "lowbit", half)
    assert seg == min(100, half // (4 * PSUM_BITS))
    small = segment_length(prob, 4, 4, "ws", "lowbit", 4 * PSUM_BITS * 7)
    assert small == 7
    plan = fold_plan(prob, 4, 4, "ws", "lowbit", small)
    assert plan.n_seg == math.ceil(100 / 7)
    assert plan.folds == 2 * plan.n_seg * 5
    # no segments: one row fold, os, or the SCALE-Sim convention
    assert segment_length(problem(100, 8, 4), 4, 4, "ws", "lowbit", 1) == 100
    assert segment_length(prob, 4, 4, "os", "lowbit", 1) == 20
    assert segment_length(prob, 4, 4, "ws", "scalesim", 1) == 100


def test_read_demand_lines_and_offsets():
    prob = problem(6, 5, 7)
    plan = fold_plan(prob, 4, 4, "ws", "lowbit")
    w = plan.read_demand(prob, "filter")     # stationary: r lines at cycles 0..r-1
    a = plan.read_demand(prob, "ifmap")      # streamed: t lines from cycle r
    assert list(w.lines) == list(plan.r) and list(w.off) == [0] * plan.folds
    assert list(a.lines) == list(plan.t) and list(a.off) == list(plan.r)
    # elements add up to the operands, per column fold
    assert int(w.elems(prob, 0, w.lines).sum()) == 7 * 5
    assert int(a.elems(prob, 0, a.lines).sum()) == 6 * 7 * 2
    # outputs leave in the fold's last t cycles
    assert list(plan.out_off) == list(plan.length - plan.t)


def test_conv_distinct_ifmap():
    dense = Conv2d("c", in_h=10, in_w=10, in_ch=4, out_ch=8, kernel_h=3, kernel_w=3)
    assert conv_ifmap_distinct(dense) == 10 * 10 * 4
    gappy = Conv2d("g", in_h=12, in_w=12, in_ch=2, out_ch=4, kernel_h=5, kernel_w=5, stride=3)
    assert gappy.out_h == 3 and conv_ifmap_distinct(gappy) == 11 * 11 * 2
    ceil = Conv2d("s", in_h=12, in_w=12, in_ch=2, out_ch=4, kernel_h=5, kernel_w=5, stride=3,
                  ceil_mode=True)
    assert ceil.out_h == 4 and conv_ifmap_distinct(ceil) == 12 * 12 * 2
    padded = Conv2d("p", in_h=8, in_w=8, in_ch=3, out_ch=3, kernel_h=3, kernel_w=3, padding=1,
                    groups=3)
    assert conv_ifmap_distinct(padded) == 8 * 8 * 1


def test_energy_breakdown_by_hand():
    prof = profile(sram=4096)
    prob = problem(4, 4, 4, prof)
    res = simulate_gemm(prob, prof, "os")
    e = energy_breakdown(prob, res, prof)
    assert e["mac"] == pytest.approx(64 * 0.2)
    pj = ENERGY.sram_pj_per_byte(4096)
    assert 1.0 < pj < 4.0
    assert e["sram_ifmap"] == pytest.approx(res.sram_ifmap_reads * pj)
    assert e["dram_filter"] == pytest.approx(res.dram_filter_reads * 100.0)
    assert e["leakage"] == pytest.approx(res.total_cycles * 2.0)
    assert mac_pj(ENERGY, 2) == 0.05 and mac_pj(ENERGY, 16) == 3.0 and mac_pj(ENERGY, 64) == 3.0
