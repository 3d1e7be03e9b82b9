"""``lowbit sweep``: hardware what-if sweeps from the command line.

    lowbit sweep SPEC.toml [--db sweeps.sqlite] [--executor local|dask://HOST:PORT] [--workers N]
    lowbit sweep [SPEC.toml] --export csv [--layers] [--out FILE] [--db sweeps.sqlite]
    lowbit sweep [SPEC.toml] --plot DIR [--db sweeps.sqlite]

With a spec, runs every point not yet in the database (a progress bar with points done /
total and an ETA on stderr), then exports / plots that spec's points if asked; without one,
exports / plots every point in the database. Wired into ``lowbit.cli`` by
``add_parser(subparsers)``; library errors propagate to the CLI's one-line handler.
"""
from __future__ import annotations

import argparse
import sys

from lowbit.progress import CountBar

DESCRIPTION = ("Hardware what-if sweeps: run a spec's points (a base profile, overrides, "
               "workloads, precisions) through the simulator and the roofline into a SQLite "
               "database, resuming where an earlier run stopped; export the results as CSV and "
               "plot Pareto sets of latency vs energy vs silicon cost. The spec schema: "
               "sweep/SCHEMA.md; an example: sweep/examples/edge-npu.toml (both in the source "
               "tree, and installed in the lowbit.sweep package folder).")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("sweep", description=DESCRIPTION,
                              help="hardware what-if sweeps into SQLite, CSV, Pareto plots")
    p.add_argument("spec", nargs="?", metavar="SPEC.toml", help="the sweep spec to run")
    p.add_argument("--db", default="sweeps.sqlite", metavar="FILE",
                   help="results database (created if missing; default: %(default)s)")
    p.add_argument("--executor", default="local", metavar="local|dask://HOST:PORT",
                   help="local process pool (default) or a Dask distributed scheduler")
    p.add_argument("--workers", type=int, metavar="N",
                   help="local worker processes (default: the CPUs available; 1 = in-process)")
    p.add_argument("--export", choices=("csv",), help="write the results as CSV")
    p.add_argument("--layers", action="store_true",
                   help="--export: one row per point and layer (default: one row per point)")
    p.add_argument("--out", metavar="FILE", help="--export: output file (default: stdout)")
    p.add_argument("--plot", metavar="DIR", help="write one Pareto plot (PNG) per workload and "
                                                 "precision into DIR")
    p.set_defaults(func=run)
    return p


def _summary(s) -> str:
    rate = f", {s.points_per_s:.1f} points/s" if s.new else ""
    workers = f" x{s.workers}" if s.workers else ""
    return (f"sweep: {s.total} points ({s.new} run now, {s.skipped} already in {s.db}), "
            f"{s.infeasible} infeasible; {s.seconds:.1f} s on {s.executor}{workers}{rate}")


def run(args) -> int:
    from lowbit.sweep import SweepDB, layers_csv, load_spec, points_csv, run_sweep

    if not (args.spec or args.export or args.plot):
        raise ValueError("give a spec to run, or --export csv / --plot DIR to read --db")
    if (args.layers or args.out) and not args.export:
        raise ValueError("--layers and --out go with --export csv")
    info = sys.stderr if args.export and not args.out else sys.stdout  # CSV may own stdout
    sweep_id = None
    if args.spec:
        spec = load_spec(args.spec)
        with CountBar("sweep", "points") as bar:
            summary = run_sweep(spec, args.db, executor=args.executor, workers=args.workers,
                                progress=bar)
        print(_summary(summary), file=info)
        sweep_id = summary.sweep_id
    elif args.workers is not None or args.executor != "local":
        raise ValueError("--executor and --workers go with a spec to run")
    if not (args.export or args.plot):
        return 0
    with SweepDB(args.db, create=False) as db:
        points = db.points(sweep_id)
        layers = db.layers(sweep_id) if args.export and args.layers else None
    if not points:
        raise ValueError(f"{args.db}: no finished points to export or plot")
    if args.export:
        if args.out:
            with open(args.out, "w", newline="", encoding="utf-8") as fh:
                n = layers_csv(points, layers, fh) if args.layers else points_csv(points, fh)
            print(f"{n} rows -> {args.out}", file=info)
        else:
            sys.stdout.write(layers_csv(points, layers) if args.layers else points_csv(points))
    if args.plot:
        from lowbit.sweep import plot_pareto

        for plot in plot_pareto(points, args.plot):
            print(f"Pareto plot: {plot.path}", file=info)
    return 0


__all__ = ["add_parser", "run"]
