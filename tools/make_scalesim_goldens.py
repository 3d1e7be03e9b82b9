"""Regenerate tests/data/scalesim_goldens.json by running SCALE-Sim v3.0.0 itself.

Run with a Python that has ``scalesim==3.0.0`` and ``numpy==1.26.4`` (SCALE-Sim crashes with
NumPy >= 2.4), in a throwaway venv outside the repository::

    python3 -m venv /tmp/ssvenv
    /tmp/ssvenv/bin/pip install scalesim==3.0.0 numpy==1.26.4
    /tmp/ssvenv/bin/python tools/make_scalesim_goldens.py [--out tests/data/scalesim_goldens.json]
        [--only SUBSTRING] [--jobs N]

Each case writes a config (.cfg), a topology CSV (every row with a trailing comma: SCALE-Sim
drops the last field otherwise) and a header-only layout CSV into a temporary folder, drives
SCALE-Sim through its Python API with ``save_disk_space=True`` (its CLI ignores ``-s`` and
writes every trace), and records the per-layer report items. Only numbers are written; no
SCALE-Sim code or output files are kept. This script imports nothing from lowbit.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

CFG = """[general]
run_name = golden

[architecture_presets]
ArrayHeight : {rows}
ArrayWidth : {cols}
IfmapSramSzkB : {ifmap_kb}
FilterSramSzkB : {filter_kb}
OfmapSramSzkB : {ofmap_kb}
IfmapOffset : 0
FilterOffset : 10000000
OfmapOffset : 20000000
Bandwidth : {bandwidth}
Dataflow : {dataflow}
MemoryBanks : 1
ReadRequestBuffer : 32
WriteRequestBuffer : 32

[layout]
IfmapCustomLayout : False
IfmapSRAMBankBandwidth : {ifmap_bw}
IfmapSRAMBankNum : 1
IfmapSRAMBankPort : 2
FilterCustomLayout : False
FilterSRAMBankBandwidth : {filter_bw}
FilterSRAMBankNum : 1
FilterSRAMBankPort : 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth : {mode}
UseRamulatorTrace : False
"""

LAYOUT_HEADER = ("Layer name, IFMAP Height Intraline Factor, IFMAP Width Intraline Factor, "
                 "Channel Intraline Factor, IFMAP Height Intraline Order, IFMAP Width Intraline "
                 "Order, Channel Intraline Order, IFMAP Height Interline Order, IFMAP Width "
                 "Interline Order, Channel Interline Order, Filter Height Intraline Factor, Filter "
                 "Width Intraline Factor, Channel Intraline Factor, Num Filter Intraline Factor,\n")

ARRAYS = {  # name -> (rows, cols)
    "8x8": (8, 8), "4x4": (4, 4), "16x4": (16, 4), "4x16": (4, 16), "1x8": (1, 8),
    "8x1": (8, 1), "1x1": (1, 1), "32x32": (32, 32), "16x16": (16, 16), "5x3": (5, 3),
}

# (name, kind, dims, arrays). gemm dims: (M, N, K). conv dims: (H, W, R, S, C, filters, stride).
LAYERS = [
    ("gemm_square", "gemm", (16, 16, 16), ["8x8", "4x4", "16x16"]),
    ("gemm_ragged", "gemm", (20, 12, 9), ["8x8", "5x3", "16x4", "4x16"]),
    ("gemm_small", "gemm", (7, 5, 3), ["4x4", "1x8", "8x1", "1x1"]),
    ("gemm_k1", "gemm", (10, 7, 1), ["4x4", "8x8", "1x8"]),
    ("gemm_n1", "gemm", (9, 1, 13), ["4x4", "8x1", "1x8"]),
    ("gemm_m1", "gemm", (1, 12, 10), ["4x4", "8x8"]),
    ("gemm_big", "gemm", (64, 100, 70), ["32x32", "16x4"]),
    ("gemm_wide", "gemm", (40, 50, 30), ["16x16", "5x3"]),
    ("conv3x3", "conv", (10, 10, 3, 3, 4, 8, 1), ["8x8", "4x16", "5x3"]),
    ("conv3x3_s2", "conv", (11, 11, 3, 3, 3, 5, 2), ["4x4", "8x8"]),
    ("conv1x1", "conv", (7, 7, 1, 1, 16, 16, 1), ["8x8", "16x4"]),
    ("conv5x5_s3", "conv", (12, 12, 5, 5, 2, 4, 3), ["4x4", "1x8"]),
    ("conv_nonsquare", "conv", (9, 6, 3, 2, 3, 6, 1), ["8x8"]),
    ("DPconv3x3", "conv", (8, 8, 3, 3, 3, 1, 1), ["4x4", "8x8"]),  # depthwise: split per channel
    # the simulate-layer benchmark's layer (unpadded, as SCALE-Sim runs it): ~25 s per dataflow
    ("conv3x3_56x56x64", "conv", (56, 56, 3, 3, 64, 64, 1), ["32x32"]),
]
DATAFLOWS = ("os", "ws", "is")

SRAM_DEFAULT = (64, 64, 64)
# Extra memory configurations on a few layers: small SRAMs in CALC mode, and USER mode.
EXTRA = [
    # (layer, array, sram kB (ifmap, filter, ofmap), mode, (ofmap bw, ifmap bw, filter bw))
    ("gemm_big", "32x32", (1, 1, 1), "CALC", None),
    ("gemm_wide", "16x16", (1, 1, 1), "CALC", None),
    ("conv3x3", "8x8", (1, 1, 1), "CALC", None),
    ("gemm_big", "32x32", (64, 64, 64), "USER", (10, 10, 10)),
    ("gemm_wide", "16x16", (2, 2, 2), "USER", (4, 4, 4)),
    ("conv3x3", "8x8", (1, 1, 1), "USER", (8, 8, 8)),
]


def cases():
    out = []
    for name, kind, dims, arrays in LAYERS:
        for arr in arrays:
            for df in DATAFLOWS:
                out.append(dict(layer=name, kind=kind, dims=list(dims), array=list(ARRAYS[arr]),
                                dataflow=df, sram_kb=list(SRAM_DEFAULT), mode="CALC",
                                bandwidth=None))
    layers = {n: (k, d) for n, k, d, _ in LAYERS}
    for name, arr, sram, mode, bw in EXTRA:
        kind, dims = layers[name]
        for df in DATAFLOWS:
            out.append(dict(layer=name, kind=kind, dims=list(dims), array=list(ARRAYS[arr]),
                            dataflow=df, sram_kb=list(sram), mode=mode,
                            bandwidth=list(bw) if bw else None))
    for i, c in enumerate(out):
        bw = f"_bw{'-'.join(map(str, c['bandwidth']))}" if c["bandwidth"] else ""
        c["id"] = (f"{c['layer']}-{c['array'][0]}x{c['array'][1]}-{c['dataflow']}-"
                   f"{c['mode'].lower()}-sram{'-'.join(map(str, c['sram_kb']))}{bw}")
    return out


def run_case(case: dict) -> dict:
    from scalesim.scale_sim import scalesim

    with tempfile.TemporaryDirectory(prefix="ssgold-") as tmp:
        bw = case["bandwidth"] or (10, 10, 10)
        cfg = CFG.format(rows=case["array"][0], cols=case["array"][1],
                         ifmap_kb=case["sram_kb"][0], filter_kb=case["sram_kb"][1],
                         ofmap_kb=case["sram_kb"][2], bandwidth=bw[0], ifmap_bw=bw[1],
                         filter_bw=bw[2], dataflow=case["dataflow"], mode=case["mode"])
        cfg_path = os.path.join(tmp, "golden.cfg")
        topo_path = os.path.join(tmp, "topo.csv")
        layout_path = os.path.join(tmp, "layout.csv")
        with open(cfg_path, "w") as f:
            f.write(cfg)
        gemm = case["kind"] == "gemm"
        with open(topo_path, "w") as f:
            if gemm:
                f.write("Layer, M, N, K,\n")
            else:
                f.write("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, "
                        "Channels, Num Filter, Strides,\n")
            f.write(",".join([case["layer"]] + [str(d) for d in case["dims"]]) + ",\n")
        with open(layout_path, "w") as f:
            f.write(LAYOUT_HEADER)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            sim = scalesim(save_disk_space=True, verbose=False, config=cfg_path,
                           topology=topo_path, layout=layout_path, input_type_gemm=gemm)
            sim.run_scale(top_path=os.path.join(tmp, "out"))
        seconds = time.perf_counter() - t0
        layers = []
        for obj in sim.runner.single_layer_sim_object_list:
            comp = obj.get_compute_report_items()
            det = obj.get_detail_report_items()
            layers.append({
                "name": obj.topo.get_layer_name(obj.layer_id)
                if hasattr(obj.topo, "get_layer_name") else str(obj.layer_id),
                "total_cycles_incl_prefetch": int(comp[0]),
                "total_cycles": int(comp[1]),
                "stall_cycles": int(comp[2]),
                "overall_util_pct": float(comp[3]),
                "mapping_efficiency_pct": float(comp[4]),
                "compute_util_pct": float(comp[5]),
                "sram_ifmap_reads": int(det[2]),
                "sram_filter_reads": int(det[5]),
                "sram_ofmap_writes": int(det[8]),
                "dram_ifmap_reads": int(det[11]),
                "dram_filter_reads": int(det[14]),
                "dram_ofmap_writes": int(det[17]),
                "sram_ifmap_start_stop": [int(det[0]), int(det[1])],
                "sram_filter_start_stop": [int(det[3]), int(det[4])],
                "sram_ofmap_start_stop": [int(det[6]), int(det[7])],
                "dram_ifmap_start_stop": [int(det[9]), int(det[10])],
                "dram_filter_start_stop": [int(det[12]), int(det[13])],
                "dram_ofmap_start_stop": [int(det[15]), int(det[16])],
            })
    return dict(case, layers=layers, scalesim_seconds=round(seconds, 3))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                  "data", "scalesim_goldens.json"))
    ap.add_argument("--only", default="", help="run only cases whose id contains this")
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    import numpy
    import scalesim  # noqa: F401
    from importlib.metadata import version

    todo = [c for c in cases() if args.only in c["id"]]
    t0 = time.time()
    with ProcessPoolExecutor(args.jobs) as pool:
        results = []
        for i, res in enumerate(pool.map(run_case, todo)):
            results.append(res)
            print(f"[{i + 1}/{len(todo)}] {res['id']}: {res['scalesim_seconds']} s",
                  file=sys.stderr, flush=True)
    header = {
        "generated_by": "tools/make_scalesim_goldens.py (do not edit by hand; rerun it)",
        "how": ("SCALE-Sim run through its Python API scalesim.scale_sim.scalesim("
                "save_disk_space=True, verbose=False) with a generated .cfg, a topology CSV "
                "with trailing commas and a header-only layout CSV; per-layer numbers read from "
                "single_layer_sim.get_compute_report_items() and get_detail_report_items()."),
        "recipe": ("python3 -m venv /tmp/ssvenv && /tmp/ssvenv/bin/pip install scalesim==3.0.0 "
                   "numpy==1.26.4 && /tmp/ssvenv/bin/python tools/make_scalesim_goldens.py"),
        "units": ("cycles; SRAM / DRAM counts in words (1 byte); *_pct in percent as SCALE-Sim "
                  "prints them; total_cycles is SCALE-Sim's 'Total Cycles', "
                  "total_cycles_incl_prefetch its 'Total Cycles (incl. prefetch)'"),
        "scalesim_version": version("scalesim"),
        "numpy_version": numpy.__version__,
        "python": platform.python_version(),
        "config": ("word size 1 byte (hard-coded in SCALE-Sim), offsets 0 / 10000000 / "
                   "20000000, no sparsity, no custom layout, no Ramulator; CALC mode unless "
                   "'mode' says USER, where 'bandwidth' = [Bandwidth (OFMAP drain), "
                   "IfmapSRAMBankBandwidth, FilterSRAMBankBandwidth] in words/cycle"),
        "dims": ("gemm: [M, N, K] (topology row 'name, M, N, K,' with -i gemm); conv: "
                 "[ifmap H, ifmap W, filter H, filter W, channels, filters, stride]; a layer "
                 "whose name contains DP is split by SCALE-Sim into one layer per channel"),
        "generated_on": time.strftime("%Y-%m-%d"),
        "wall_seconds": round(time.time() - t0, 1),
    }
    with open(args.out, "w") as f:
        json.dump({"header": header, "cases": results}, f, indent=1)
        f.write("\n")
    print(f"wrote {len(results)} cases to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
