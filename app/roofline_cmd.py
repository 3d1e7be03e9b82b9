"""``lowbit roofline``: the roofline model from the command line.

    lowbit roofline --workload llama2-7b-decode --profile h100-sxm --precision w4a16
                    [--batch 8] [--context 4096] [--plot out.png] [--breakdown bd.png] [--json]
    lowbit roofline calibrate          # measure this CPU, write the "host" profile
    lowbit roofline --bench-json F     # lowbit's measured kernels against the host roofline

The orchestration that needs the kernels (peak and bandwidth loops, benchmark JSON of lowbit
kernels) lives here; ``lowbit.roofline`` itself never imports ``lowbit.kernels``. Wired into
``lowbit.cli`` by ``add_parser(subparsers)``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

DESCRIPTION = ("Roofline analysis, L = W / (P * U): per-layer bound (compute, or memory at "
               "which level), latency, energy and utilization of a workload on a GPU / NPU / CPU "
               "profile at a precision; LLM prefill / decode figures; `calibrate` measures this "
               "machine; --bench-json puts lowbit's measured kernels against their bound.")

# Which host ceiling a lowbit kernel's precision runs at (benchmark extra_info "precision"):
# int4-weight kernels multiply in fp32 (w4a16, FMA) or int8 (w4a8, VNNI), as lowbit.benchtable.
KERNEL_CEILING = {"int8": "int8", "fp32": "fp32", "w4a16": "fp32", "w4a8": "int8",
                  "binary": "binary"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("roofline", help="roofline model: bound, latency, energy per layer",
                              description=DESCRIPTION)
    p.add_argument("action", nargs="?", choices=("calibrate",),
                   help="calibrate: measure this CPU's peaks and bandwidths (< 60 s) and write "
                        "the host profile to the XDG cache folder")
    p.add_argument("--workload", metavar="NAME",
                   help="zoo network (resnet18, bert-base, ...) or LLM (llama2-7b-decode, "
                        "llama2-7b-prefill, llama2-7b)")
    p.add_argument("--profile", metavar="NAME_OR_TOML", default=None,
                   help="h100-sxm, a100-sxm, rtx-4090, jetson-orin-agx, tpu-v4, a simulator NPU "
                        "(tpu-v1, edge-npu-32x32, ...), host (after calibrate) or a TOML file")
    p.add_argument("--precision", metavar="P",
                   help="fp32, bf16, fp16, fp8, int8, int4, binary; LLMs: w16a16, w8a8, w4a16, "
                        "optionally -kv8 / -kv4 (default: the layers' own widths; LLM w16a16)")
    p.add_argument("--batch", type=int, help="LLM batch size (default 1)")
    p.add_argument("--context", type=int, help="LLM decode KV-cache length (default 2048)")
    p.add_argument("--prompt-len", type=int, help="LLM prefill prompt length (default 512)")
    p.add_argument("--sparse", action="store_true", help="run every weight GEMM 2:4 sparse")
    p.add_argument("--efficiency", type=float, help="force U for every layer (0 < U <= 1)")
    p.add_argument("--plot", metavar="FILE", help="write the roofline plot (PNG; .svg for SVG)")
    p.add_argument("--breakdown", metavar="FILE", help="write the per-layer latency breakdown")
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    p.add_argument("--bench-json", metavar="FILE",
                   help="saved pytest-benchmark JSON (lowbit bench --json): each lowbit kernel's "
                        "measured time against its roofline bound on the host profile")
    p.add_argument("--out", metavar="TOML", help="calibrate: write the profile here instead")
    p.set_defaults(func=run)
    return p


# --------------------------------------------------------------------------------------------
# analyze
# --------------------------------------------------------------------------------------------
def _fmt_si(x: float, unit: str) -> str:
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def _table(result) -> str:
    head = (f"{'layer':<26} {'GOP':>9} {'MB':>9} {'ops/B':>8} {'bound':<14} {'U':>5} "
            f"{'latency us':>11} {'energy uJ':>10} {'util':>6}")
    lines = [f"{result.workload} on {result.device.name}, precision {result.precision}", head,
             "-" * len(head)]
    for r in result.layers:
        lines.append(f"{r.layer[:26]:<26} {r.ops / 1e9:>9.3f} {r.bytes / 1e6:>9.3f} "
                     f"{r.intensity:>8.1f} {r.bound:<14} {r.efficiency:>5.2f} "
                     f"{r.latency_s * 1e6:>11.2f} {r.energy_j * 1e6:>10.2f} {r.utilization:>6.1%}")
    t = result.total
    lines.append("-" * len(head))
    outer = next(iter(t.bytes_per_level.values()))
    lines.append(f"{'total':<26} {t.ops / 1e9:>9.3f} {outer / 1e6:>9.3f} "
                 f"{t.ops / outer:>8.1f} {'':<14} {'':>5} {t.latency_s * 1e6:>11.2f} "
                 f"{t.energy_j * 1e6:>10.2f} {t.utilization:>6.1%}")
    lines.append(f"memory-bound layers: {len(t.memory_bound_layers)} of {len(result.layers)} "
                 f"({t.memory_bound_time_s / t.latency_s:.0%} of the time)")
    if result.llm:
        llm = result.llm
        parts = []
        if "ttft_s" in llm:
            parts.append(f"TTFT {llm['ttft_s'] * 1e3:.3f} ms (prompt {llm['prompt_len']})")
        if "tpot_s" in llm:
            parts.append(f"TPOT {llm['tpot_s'] * 1e3:.3f} ms, {llm['tokens_per_s']:.1f} tokens/s "
                         f"(batch {llm['batch']}, context {llm['context']})")
        parts.append(f"KV cache {llm['kv_cache_bytes'] / 2**30:.3f} GiB")
        lines.append("; ".join(parts))
        for phase in ("prefill", "decode"):
            key = f"{phase}_memory_bound"
            if key in llm:
                lines.append(f"{phase} memory-bound layers: {', '.join(llm[key]) or 'none'}")
    return "\n".join(lines)


def _llm_params(args) -> dict:
    out = {}
    for name in ("batch", "context", "prompt_len"):
        value = getattr(args, name)
        if value is not None:
            out[name] = value
    return out


def _run_analyze(args) -> int:
    from lowbit.roofline import analyze

    if not args.workload:
        raise ValueError("give --workload NAME (or `calibrate`, or --bench-json FILE)")
    result = analyze(args.workload, args.profile or "h100-sxm", args.precision,
                     sparse=args.sparse, efficiency=args.efficiency, **_llm_params(args))
    if args.plot:
        from lowbit.roofline.plots import plot_roofline
        plot = plot_roofline(result.device, results=result, path=args.plot,
                             fmt="svg" if args.plot.lower().endswith(".svg") else "png")
        print(f"roofline plot: {plot.path}", file=sys.stderr)
    if args.breakdown:
        from lowbit.roofline.plots import plot_breakdown
        plot = plot_breakdown(result, path=args.breakdown,
                              fmt="svg" if args.breakdown.lower().endswith(".svg") else "png")
        print(f"breakdown plot: {plot.path}", file=sys.stderr)
    print(result.to_json() if args.json else _table(result))
    return 0


# --------------------------------------------------------------------------------------------
# calibrate
# --------------------------------------------------------------------------------------------
def _cache_sizes() -> dict[str, int]:
    """L1d / L2 / L3 sizes of cpu0 from sysfs (bytes); empty entries when unknown."""
    out: dict[str, int] = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in sorted(base.glob("index*")):
        try:
            level = (idx / "level").read_text().strip()
            kind = (idx / "type").read_text().strip()
            size = (idx / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        mult = {"K": 1024, "M": 1 << 20, "G": 1 << 30}.get(size[-1], 1)
        out[f"L{level}"] = int(size.rstrip("KMG")) * mult
    return out


def _bandwidth(nbytes: int, seconds: float = 0.25) -> tuple[float, str]:
    """Read bandwidth (bytes/s) of a buffer of ``nbytes`` on all kernel threads.

    Uses the C loop (lowbit.kernels.peak.run_read) when the build has it, else numpy sums
    on one thread per core (slower for small buffers: call overhead)."""
    from lowbit.kernels import peak

    nbytes = max(256, nbytes // 256 * 256)
    if hasattr(peak, "run_read") and hasattr(peak, "read_bandwidth_buffer"):
        try:
            buf = peak.read_bandwidth_buffer(nbytes)
            passes = 1
            while True:
                t0 = time.perf_counter()
                peak.run_read(buf, passes)
                dt = time.perf_counter() - t0
                if dt > seconds / 5 or passes > 1 << 30:
                    break
                passes *= 4
            passes = max(1, int(passes * seconds / 3 / max(dt, 1e-9)))
            best = 0.0
            for _ in range(3):
                t0 = time.perf_counter()
                done = peak.run_read(buf, passes)
                best = max(best, done / (time.perf_counter() - t0))
            return best, "C read loop (csrc/peak.c lb_read_bandwidth, all kernel threads)"
        except (RuntimeError, AttributeError):
            pass
    return _numpy_bandwidth(nbytes, seconds), "numpy sums, one thread per core (fallback)"


def _numpy_bandwidth(nbytes: int, seconds: float) -> float:
    import concurrent.futures as cf

    import numpy as np

    threads = os.cpu_count() or 1
    bufs = [np.ones(max(1, nbytes // 8 // threads), dtype=np.int64) for _ in range(threads)]

    def work(buf, reps):
        for _ in range(reps):
            buf.sum()

    reps = 1
    with cf.ThreadPoolExecutor(threads) as pool:
        while True:
            t0 = time.perf_counter()
            list(pool.map(work, bufs, [reps] * threads))
            dt = time.perf_counter() - t0
            if dt > seconds / 3 or reps > 1 << 24:
                break
            reps *= 4
        return sum(b.nbytes for b in bufs) * reps / dt


def _calibrate(args) -> int:
    from lowbit.kernels import cpu_features, native, num_threads
    from lowbit.kernels.peak import measure_peak
    from lowbit.roofline.device import Device, MemoryLevel
    from lowbit.roofline.profile_io import host_profile_path, save_device
    from lowbit.simulator.profile_io import HOROWITZ_45NM

    if native.lib is None:
        raise RuntimeError(f"calibrate needs the native extension: {native.IMPORT_ERROR}")
    start = time.perf_counter()
    feats = set(cpu_features())
    threads = num_threads()
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    say = lambda msg: print(f"[{time.perf_counter() - start:5.1f} s] {msg}", flush=True)  # noqa: E731
    say(f"calibrating {cpu}, {threads} kernel threads")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    measured = f"measured by lowbit roofline calibrate on {stamp}"
    peak, sources = {}, {}
    kinds = (("fp32", "fp32_fma"), ("int8", "int8_vnni"))

    def peaks(when: str) -> None:
        # interference (a lost vCPU) only ever lowers a peak: keep the best of both ends
        for prec, kind in kinds:
            ops = measure_peak(kind, seconds=0.2, repeats=5)
            if ops > 0:
                peak[prec] = max(ops, peak.get(prec, 0.0))
                sources[f"peak_tops.{prec}"] = (
                    f"{measured}: csrc/peak.c {kind} register-resident loop on {threads} "
                    "threads, best of 5 runs at the start and 5 at the end of calibration")
                say(f"peak {prec:<5} ({kind}, {when}): {ops / 1e9:8.1f} GOP/s")
            else:
                say(f"peak {prec:<5} ({kind}): not supported by this CPU")

    peaks("first")
    if not peak:
        raise RuntimeError("no peak loop ran on this CPU")
    caches = _cache_sizes()
    levels = []
    plan = [("DRAM", max(256 << 20, 8 * caches.get("L3", 0)), None)]
    for name, frac in (("L3", 4), ("L2", 2), ("L1", 2)):
        if name in caches:
            plan.append((name, caches[name] // frac, caches[name]))
    for name, nbytes, cap in plan:
        bw, how = _bandwidth(nbytes)
        say(f"read bandwidth {name:<4} ({nbytes / 2**20:9.3f} MiB buffer): {bw / 1e9:8.1f} GB/s")
        pj = (HOROWITZ_45NM.dram_pj_per_byte if cap is None
              else HOROWITZ_45NM.sram_pj_per_byte(cap))
        levels.append(MemoryLevel(name, bw, float(cap) if cap else None, pj))
        sources[f"memory.{name}"] = (f"{measured}: {how}, best of 3 over a {nbytes} byte buffer"
                                     + (f"; capacity {cap} bytes from sysfs (cpu0)" if cap else ""))
        sources[f"memory.{name}.pj_per_byte"] = ("Horowitz ISSCC 2014 45 nm: DRAM 243.75 pJ/B; "
                                                 "SRAM interpolated by size (simulator defaults)")
    peaks("last")
    vec_bytes = 64 if "avx512f" in feats else 32
    tile = 32 * vec_bytes if vec_bytes == 64 else 16 * vec_bytes
    sources["tile_bytes"] = (f"the vector register file of one core: "
                             f"{tile // vec_bytes} x {vec_bytes}-byte registers")
    pj_op = {"int8": HOROWITZ_45NM.mac_pj[8] / 2, "fp32": (3.7 + 0.9) / 2}
    pj_op = {k: v for k, v in pj_op.items() if k in peak}
    sources["energy.pj_per_op"] = ("Horowitz ISSCC 2014 45 nm: int8 MAC 0.23 pJ, fp32 MAC 3.7 + "
                                   "0.9 pJ, halved per op (a 45 nm estimate, not measured)")
    sources["efficiency.default"] = ("1.0: no efficiency measured yet; the register-resident "
                                     "peaks are the ceilings")
    sources["profile"] = f"{cpu}; {measured}; cpu features: {' '.join(sorted(feats))}"
    missing = [m for m in ("bf16 (no bf16 peak loop in csrc/peak.c)",
                           "binary (no popcount peak loop in csrc/peak.c)")]
    device = Device(name="host", kind="cpu", peak=peak, memory=tuple(levels),
                    tile_bytes=float(tile), pj_per_op=pj_op, efficiency={"default": 1.0},
                    sources=sources)
    path = Path(args.out) if args.out else host_profile_path()
    save_device(device, path, header=f"Host roofline profile of {cpu}, {measured}.\n"
                                     "Generated by `lowbit roofline calibrate`; do not edit, "
                                     "rerun it.")
    say(f"not measured: {'; '.join(missing)}")
    say(f"host profile written to {path} ({time.perf_counter() - start:.1f} s)")
    return 0


# --------------------------------------------------------------------------------------------
# --bench-json
# --------------------------------------------------------------------------------------------
def kernel_bounds(data: dict, device) -> list[dict]:
    """Per lowbit kernel and shape in a benchmark JSON dict: measured time, the roofline
    bound on ``device``, and the fraction of the bound reached.

    The bound uses the kernel's own (ops, bytes) from extra_info (the registry's cost
    model). A benchmark reruns one set of operands, so its bytes are read from the smallest
    memory level that holds them (the outermost if none): bound = max(ops / P, bytes / BW).
    """
    from lowbit.benchtable import summarize

    rows = []
    for group in summarize(data)["groups"]:
        if not group["name"].startswith("gemm_"):  # simulator groups etc.: no GEMM shape
            continue
        for r in group["rows"]:
            if r.get("family") != "lowbit":
                continue
            ceiling = KERNEL_CEILING.get(r["precision"])
            ops, nbytes = float(r["ops"]), float(r["bytes"])
            level = device.memory[0]
            for lv in device.memory[1:]:
                if lv.capacity_bytes is not None and nbytes <= lv.capacity_bytes:
                    level = lv
            row = {"group": group["name"], "m": group.get("m"), "n": group.get("n"),
                   "k": group.get("k"), "impl": r["impl"], "precision": r["precision"],
                   "isa": r.get("isa"), "ops": ops, "bytes": nbytes,
                   "intensity": ops / nbytes, "measured_s": r["median_s"],
                   "measured_ops_s": ops / r["median_s"], "ceiling": None,
                   "level": level.name, "bound_s": None, "bound": None, "fraction": None}
            if ceiling is not None and ceiling in device.peak:
                t_c = ops / device.peak[ceiling]
                t_m = nbytes / level.bandwidth
                row.update(ceiling=ceiling, bound_s=max(t_c, t_m),
                           bound="compute" if t_c >= t_m else f"memory:{level.name}")
                row["fraction"] = row["bound_s"] / r["median_s"]
            rows.append(row)
    return rows


def _largest(rows: list[dict]) -> dict[str, dict]:
    """Per (op, impl): the row of the largest shape (most ops)."""
    best: dict[str, dict] = {}
    for r in rows:
        key = f"{r['group'].split('-')[0]} {r['impl']}"
        if key not in best or r["ops"] > best[key]["ops"]:
            best[key] = r
    return best


def _run_bench_json(args) -> int:
    from lowbit.roofline.profile_io import get_device

    path = Path(args.bench_json)
    data = json.loads(path.read_text(encoding="utf-8"))
    device = get_device(args.profile or "host")
    rows = kernel_bounds(data, device)
    if args.plot:
        from lowbit.roofline.plots import KernelPoint, plot_roofline
        pts = [KernelPoint(f"{r['group']} {r['impl']}", r["intensity"], r["measured_ops_s"],
                           r["ops"] / r["bound_s"]) for r in rows if r["bound_s"]]
        plot = plot_roofline(device, kernels=pts, path=args.plot,
                             fmt="svg" if args.plot.lower().endswith(".svg") else "png",
                             title=f"lowbit kernels on {device.name}")
        print(f"roofline plot: {plot.path}", file=sys.stderr)
    if args.json:
        print(json.dumps({"profile": device.name, "kernels": rows}, indent=1))
        return 0
    head = (f"{'group':<28} {'impl':<22} {'measured us':>12} {'bound us':>10} {'bound':<12} "
            f"{'of bound':>8}")
    print(f"lowbit kernels against the {device.name} roofline ({path})")
    print(head)
    print("-" * len(head))
    for r in rows:
        frac = f"{r['fraction']:.0%}" if r["fraction"] is not None else "n/a"
        bound_us = f"{r['bound_s'] * 1e6:10.1f}" if r["bound_s"] else f"{'n/a':>10}"
        print(f"{r['group'][:28]:<28} {r['impl'][:22]:<22} {r['measured_s'] * 1e6:>12.1f} "
              f"{bound_us} {r['bound'] or 'no ceiling':<12} {frac:>8}")
    if any(r["fraction"] is not None and r["fraction"] > 1 for r in rows):
        print("\nnote: fractions above 100% mean the profile's ceiling is below what the kernel "
              "reached: recalibrate on an idle machine (`lowbit roofline calibrate`)")
    print("\nlargest shape per kernel:")
    for key, r in sorted(_largest(rows).items()):
        frac = f"{r['fraction']:.0%}" if r["fraction"] is not None else "n/a (no ceiling)"
        print(f"  {key:<40} {r['group']:<28} {frac}")
    return 0


def run(args) -> int:
    if args.action == "calibrate":
        return _calibrate(args)
    if args.bench_json:
        return _run_bench_json(args)
    return _run_analyze(args)


__all__ = ["add_parser", "run", "kernel_bounds", "KERNEL_CEILING"]
