"""``lowbit roofline``: the roofline model from the command line.

    lowbit roofline --workload llama2-7b-decode --profile h100-sxm --precision w4a16
                    [--batch 8] [--context 4096] [--plot out.png] [--breakdown bd.png] [--json]
    lowbit roofline calibrate          # measure this CPU, write the "host" profile
    lowbit roofline --bench-json F     # lowbit's measured kernels against the host roofline

The orchestration that needs the kernels lives in the app (``lowbit.roofline_calibrate``:
peak, bandwidth and efficiency measurements; ``lowbit.roofline_bench``: benchmark JSON of
lowbit kernels against per-ISA ceilings); ``lowbit.roofline`` itself never imports
``lowbit.kernels``. Wired into ``lowbit.cli`` by ``add_parser(subparsers)``.

An LLM analysis whose weights and KV cache do not fit the device memory prints its figures,
then an error line, and exits with status 1.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

DESCRIPTION = ("Roofline analysis, L = W / (P * U): per-layer bound (compute, or memory at "
               "which level), latency, energy and utilization of a workload on a GPU / NPU / CPU "
               "profile at a precision; LLM prefill / decode figures; `calibrate` measures this "
               "machine; --bench-json puts lowbit's measured kernels against their bound.")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("roofline", help="roofline model: bound, latency, energy per layer",
                              description=DESCRIPTION)
    p.add_argument("action", nargs="?", choices=("calibrate",),
                   help="calibrate: measure this CPU's peaks and bandwidths (< 60 s) and write "
                        "the host profile to the XDG cache folder")
    p.add_argument("--workload", metavar="NAME",
                   help="zoo network (resnet18, bert-base, ...) or LLM (llama2-7b-decode, "
                        "llama2-7b-prefill, llama2-7b, and the same for llama2-70b)")
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
    p.add_argument("--ceilings", choices=("profile", "session"), default="profile",
                   help="--bench-json: judge against the profile's compute ceilings and DRAM "
                        "bandwidth (default), or against those the benchmark session measured "
                        "itself (its peak and bandwidth groups; cache levels from the profile)")
    p.add_argument("--out", metavar="TOML", help="calibrate: write the profile here instead")
    p.add_argument("--quick", action="store_true",
                   help="calibrate: short runs and small kernels (a few seconds; a rough profile)")
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
    sources = sorted({f"{r.efficiency_source} ({r.precision} U {r.efficiency:.2f})"
                      for r in result.layers})
    lines.append(f"U from: {', '.join(sources)}")
    if result.llm:
        llm = result.llm
        parts = []
        if "ttft_s" in llm:
            parts.append(f"TTFT {llm['ttft_s'] * 1e3:.3f} ms (prompt {llm['prompt_len']})")
        if "tpot_s" in llm:
            parts.append(f"TPOT {llm['tpot_s'] * 1e3:.3f} ms, {llm['tokens_per_s']:.1f} tokens/s "
                         f"(batch {llm['batch']}, context {llm['context']})")
        parts.append(f"KV cache {llm['kv_cache_bytes'] / 1e9:.3f} GB")
        lines.append("; ".join(parts))
        for phase in ("prefill", "decode"):
            key = f"{phase}_memory_bound"
            if key in llm:
                lines.append(f"{phase} memory-bound layers: {', '.join(llm[key]) or 'none'}")
        lines.append(f"memory: {llm['memory_note']}")
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

    from lowbit.roofline.llm import MemoryFitWarning

    if not args.workload:
        raise ValueError("give --workload NAME (or `calibrate`, or --bench-json FILE)")
    with warnings.catch_warnings():  # reported below, once, as an error line
        warnings.simplefilter("ignore", MemoryFitWarning)
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
    if result.llm and result.llm.get("fits") is False:
        print(f"lowbit: error: {result.llm['model']} at {result.llm['precision']}, batch "
              f"{result.llm['batch']}: {result.llm['memory_note']}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------------
# calibrate
# --------------------------------------------------------------------------------------------
def _calibrate(args) -> int:
    from lowbit.roofline_calibrate import FULL, QUICK, calibrate

    start = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - start:5.1f} s] {msg}", flush=True)

    _, path = calibrate(args.out, budget=QUICK if args.quick else FULL, say=say)
    say(f"host profile written to {path} ({time.perf_counter() - start:.1f} s)")
    return 0


# --------------------------------------------------------------------------------------------
# --bench-json
# --------------------------------------------------------------------------------------------
def _run_bench_json(args) -> int:
    from lowbit.roofline.profile_io import get_device
    from lowbit.roofline_bench import (OPTIMIZED_ISAS, TARGET_FRACTION, kernel_bounds,
                                       largest_shapes, session_ceilings)

    path = Path(args.bench_json)
    data = json.loads(path.read_text(encoding="utf-8"))
    device = get_device(args.profile or "host")
    if args.ceilings == "session":
        device = session_ceilings(data, device)
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
    head = (f"{'group':<27} {'impl':<20} {'measured us':>11} {'bound us':>10} "
            f"{'bound':<11} {'ceiling':<23} {'of bound':>8}")
    print(f"lowbit kernels against the {device.name} roofline ({path}); each variant against "
          "the ceiling of the instructions it uses")
    print(head)
    print("-" * len(head))
    for r in rows:
        frac = f"{r['fraction']:.0%}" if r["fraction"] is not None else "n/a"
        bound_us = f"{r['bound_s'] * 1e6:10.1f}" if r["bound_s"] else f"{'n/a':>10}"
        print(f"{r['group'][:27]:<27} {r['impl'][:20]:<20} {r['measured_s'] * 1e6:>11.1f} "
              f"{bound_us} {r['bound'] or 'n/a':<11} {r['ceiling'] or 'none':<23} {frac:>8}")
    missing = sorted({f"{r['op']}[{r['isa']}]: {r['ceiling_why']}" for r in rows
                      if r["fraction"] is None})
    if missing:
        print("\nno fraction (no ceiling):\n" + "\n".join(f"  {m}" for m in missing))
    if any(r["fraction"] is not None and r["fraction"] > 1 for r in rows):
        source = ("the benchmark session's peak / bandwidth loops" if args.ceilings == "session"
                  else "the calibration (`lowbit roofline calibrate`)")
        print(f"\nnote: fractions above 100% mean the ceiling is below what the kernel reached: "
              f"{source} ran while other work took the cores; rerun it on a quieter machine")
    print(f"\nlargest shape per kernel (target: optimized variants, "
          f"{', '.join(OPTIMIZED_ISAS)}, >= {TARGET_FRACTION:.0%} of their bound):")
    for key, r in sorted(largest_shapes(rows).items()):
        if r["fraction"] is None:
            verdict = "n/a (no ceiling)"
        else:
            verdict = f"{r['fraction']:.0%}"
            if r["isa"] in OPTIMIZED_ISAS:
                verdict += " met" if r["fraction"] >= TARGET_FRACTION else " MISSED"
        print(f"  {key:<34} {r['group']:<27} {r['bound'] or '':<11} {verdict}")
    return 0


def run(args) -> int:
    if args.action == "calibrate":
        return _calibrate(args)
    if args.bench_json:
        return _run_bench_json(args)
    return _run_analyze(args)


__all__ = ["add_parser", "run"]
