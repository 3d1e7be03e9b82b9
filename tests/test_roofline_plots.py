"""lowbit.roofline.plots: golden checks of the plotted data (not pixels), files written."""
from __future__ import annotations

import numpy as np
import pytest

from lowbit.roofline import Device, MemoryLevel, analyze
from lowbit.roofline.plots import (KernelPoint, plot_breakdown, plot_llm_precisions,
                                   plot_roofline, plot_tokens_vs_batch)
from lowbit.simulator.workload import Gemm, Workload


def toy() -> Device:
    # int8 1 TOP/s, fp16 0.5 TOP/s; DRAM 100 GB/s (ridge 10 / 5 ops/B), L2 1 TB/s of 1 MB
    return Device(name="toy", kind="cpu", peak={"int8": 1e12, "fp16": 5e11},
                  memory=(MemoryLevel("DRAM", 100e9, None, 10.0),
                          MemoryLevel("L2", 1e12, 1e6, 1.0)),
                  tile_bytes=1e12, pj_per_op={"int8": 1.0})


WORK = Workload("two", (Gemm("gemv", m=1, n=1000, k=1000), Gemm("square", m=1000, n=1000, k=1000)))


def test_roofline_plot_data_and_file(tmp_path):
    res = analyze(WORK, toy(), "int8")
    kernel = KernelPoint("gemm_int8-1x1000x1000", intensity=2.0, measured_ops_s=1.5e11,
                         bound_ops_s=2e11)
    plot = plot_roofline(toy(), results=res, kernels=[kernel], path=tmp_path / "roof.png")
    assert plot.path.is_file() and plot.path.stat().st_size > 1000
    assert plot.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ops/byte" in plot.xlabel and "ops/s" in plot.ylabel and "toy" in plot.title
    d = plot.data
    # ceilings: flat at the peak
    assert np.allclose(d["int8 peak 1 TOP/s"][:, 1], 1e12)
    assert np.allclose(d["fp16 peak 500 GOP/s"][:, 1], 5e11)
    # memory roofs: y = x * bandwidth, capped at the highest ceiling
    dram = d["DRAM 100 GB/s"]
    assert np.allclose(dram[:, 1], np.minimum(dram[:, 0] * 100e9, 1e12))
    l2 = d["L2 1 TB/s"]
    assert np.allclose(l2[:, 1], np.minimum(l2[:, 0] * 1e12, 1e12))
    # layer points: (intensity at DRAM, attainable); the gemv sits on the DRAM roof. The
    # square's 1 MB operands exceed half the 1 MB L2: tiles of 353 x 354 accumulators, A and
    # W each read ceil(1000/354) = 3 times: 7e6 bytes, intensity 2e9 / 7e6; on the ceiling
    pts = d["two layers (int8)"]
    assert np.allclose(pts[0], [2e6 / 1.002e6, 2e6 / 1.002e6 * 100e9])
    assert np.allclose(pts[1], [2e9 / 7e6, 1e12])
    assert np.allclose(d["measured kernels"], [[2.0, 1.5e11]])
    assert np.allclose(d["roofline bound"], [[2.0, 2e11]])


def test_roofline_plot_svg(tmp_path):
    plot = plot_roofline(toy(), path=tmp_path / "roof", fmt="svg")
    assert plot.path.suffix == ".svg" and plot.path.read_text().lstrip().startswith("<?xml")
    with pytest.raises(ValueError, match="fmt"):
        plot_roofline(toy(), path=tmp_path / "x", fmt="jpg")


def test_breakdown_stacks_compute_and_memory_time(tmp_path):
    res = analyze(WORK, toy(), "int8")
    plot = plot_breakdown(res, path=tmp_path / "bd.png")
    comp = plot.data["compute time W/(P·U)"]
    mem = plot.data["memory-bound time beyond compute"]
    # gemv: compute 2e6 / 1e12 = 2 us, latency 10.02 us -> 8.02 us of memory time
    assert np.allclose(comp[:, 1], [2e-3, 2.0])           # in ms
    assert np.allclose(mem[:, 1], [1.002e-2 - 2e-3, 0.0])
    assert plot.ylabel == "latency (ms)"


def test_breakdown_groups_llm_layers_by_kind():
    res = analyze("llama2-7b-decode", "h100-sxm", "w4a16")
    plot = plot_breakdown(res)
    bars = plot.data["compute time W/(P·U)"]
    assert len(bars) == 10  # q k v scores context o gate up down lm_head
    total = plot.data["compute time W/(P·U)"][:, 1] + plot.data["memory-bound time beyond compute"][:, 1]
    assert total.sum() == pytest.approx(res.total.latency_s * 1e3)


def test_llm_plots_follow_the_memory_roof(tmp_path):
    plot = plot_llm_precisions("h100-sxm", path=tmp_path / "llm.png")
    pts = {k.split(":")[0]: v[0] for k, v in plot.data.items() if k.startswith("w")}
    assert set(pts) == {"w16a16", "w8a8", "w4a16"}
    # decode at batch 1 is on the HBM roof: y = x * 3.35 TB/s, moving right as weights shrink
    for x, y in pts.values():
        assert y == pytest.approx(x * 3.35e12)
    assert pts["w16a16"][0] < pts["w8a8"][0] < pts["w4a16"][0]
    tb = plot_tokens_vs_batch("h100-sxm", batches=(1, 4, 16), path=tmp_path / "tb.png")
    for prec in ("w16a16", "w8a8", "w4a16"):
        xy = tb.data[prec]
        assert list(xy[:, 0]) == [1, 4, 16] and np.all(np.diff(xy[:, 1]) > 0)
    assert tb.data["w4a16"][0, 1] == pytest.approx(
        analyze("llama2-7b-decode", "h100-sxm", "w4a16").llm["tokens_per_s"])
