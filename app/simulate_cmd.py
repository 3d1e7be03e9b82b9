"""``lowbit simulate``: run the accelerator simulator from the command line.

    lowbit simulate --workload resnet18 --profile edge-npu-32x32 [--dataflow os]
                    [--convention scalesim] [--engine reference] [--json | --csv]
    lowbit simulate --scalesim-config X.cfg --topology Y.csv [--convention scalesim] --json

Wired into ``lowbit.cli`` by ``add_parser(subparsers)``; the handler prints a table (or JSON /
CSV) and returns the exit code. Library errors propagate to the CLI's one-line handler.
"""
from __future__ import annotations

import argparse
import sys

DESCRIPTION = ("Simulate a workload on a systolic-array accelerator profile: cycles (compute, "
               "stall, total), SRAM / DRAM traffic per operand, utilization, energy, latency. "
               "A workload is a zoo name (resnet18, ...) or a SCALE-Sim topology CSV; a profile "
               "a built-in name, a TOML file or a SCALE-Sim .cfg.")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("simulate", help="cycle-level accelerator simulation of a network",
                              description=DESCRIPTION)
    src = p.add_argument_group("workload (one of)")
    src.add_argument("--workload", metavar="NAME", help="zoo network, e.g. resnet18, bert-base")
    src.add_argument("--topology", metavar="CSV", help="SCALE-Sim v3 topology CSV (conv or GEMM)")
    hw = p.add_argument_group("hardware (one of)")
    hw.add_argument("--profile", metavar="NAME_OR_TOML",
                    help="built-in profile (edge-npu-32x32, scalesim-default, tpu-v1, "
                         "eyeriss-v1, gemmini) or a profile TOML file")
    hw.add_argument("--scalesim-config", metavar="CFG", help="SCALE-Sim v3 .cfg file")
    p.add_argument("--dataflow", choices=("os", "ws", "is"),
                   help="default: the profile's first dataflow (a SCALE-Sim config's Dataflow)")
    p.add_argument("--convention", choices=("lowbit", "scalesim"), default="lowbit",
                   help="scalesim: reproduce SCALE-Sim v3.0.0's numbers (default: %(default)s)")
    p.add_argument("--engine", choices=("fast", "reference"), default="fast",
                   help="reference: the per-cycle engine, small layers only (default: %(default)s)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true",
                     help='print {"layers": [...], "total": {...}} as JSON')
    out.add_argument("--csv", action="store_true", help="print one CSV row per layer and a total")
    p.set_defaults(func=run)
    return p


def _resolve(args):
    from lowbit import simulator as sim

    if bool(args.workload) == bool(args.topology):
        raise ValueError("give exactly one of --workload NAME and --topology CSV")
    if bool(args.profile) == bool(args.scalesim_config):
        raise ValueError("give exactly one of --profile NAME_OR_TOML and --scalesim-config CFG")
    workload = args.workload if args.workload else sim.load_scalesim_topology(args.topology)
    profile = (sim.load_profile(args.profile) if args.profile
               else sim.load_scalesim_config(args.scalesim_config))
    return workload, profile


def _table(stats) -> str:
    head = (f"{'layer':<24} {'total cyc':>12} {'stall cyc':>12} {'util':>6} {'map eff':>7} "
            f"{'DRAM MB':>9} {'energy uJ':>11} {'latency ms':>11}")
    lines = [f"{stats.workload} on {stats.profile}, dataflow {stats.dataflow}, "
             f"convention {stats.convention}, engine {stats.engine}", head, "-" * len(head)]
    for s in list(stats.layers) + [stats.total]:
        if s.layer == "total":
            lines.append("-" * len(head))
        if not s.feasible and s.layer != "total":
            lines.append(f"{s.layer[:24]:<24} infeasible: {s.reason}")
            continue
        lines.append(f"{s.layer[:24]:<24} {s.total_cycles:>12,d} {s.stall_cycles:>12,d} "
                     f"{s.compute_utilization:>6.1%} {s.mapping_efficiency:>7.1%} "
                     f"{s.dram_bytes / 1e6:>9.2f} {s.energy_pj / 1e6:>11.2f} "
                     f"{s.latency_s * 1e3:>11.4f}")
    if not stats.total.feasible:
        lines.append(stats.total.reason)
    return "\n".join(lines)


def run(args) -> int:
    from lowbit.simulator import simulate

    workload, profile = _resolve(args)
    stats = simulate(workload, profile, dataflow=args.dataflow, convention=args.convention,
                     engine=args.engine)
    if args.json:
        print(stats.to_json())
    elif args.csv:
        sys.stdout.write(stats.to_csv())
    else:
        print(_table(stats))
    return 0 if stats.feasible else 1


__all__ = ["add_parser", "run"]
