"""Check: at equal budget, evolution's Pareto front dominates random search's (hypervolume).

Runs ``lowbit.nas.compare.compare_strategies`` (random and evolution, by default seeds 0, 1, 2)
and prints the hypervolume per seed and the means; exit status 1 when evolution's mean is not
higher. The reference point and normalization: see ``lowbit.nas.compare``.

    python tools/nas_hv_check.py --evaluator proxy --budget 60          # zero-cost proxy
    python tools/nas_hv_check.py --evaluator train --budget 30 --epochs 2
"""
from __future__ import annotations

import argparse
import sys

from lowbit.nas import EvalSettings
from lowbit.nas.compare import REFERENCE, compare_strategies


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="digits-mbv2")
    p.add_argument("--budget", type=int, default=60)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--strategies", default="random,evolution")
    p.add_argument("--evaluator", choices=("train", "proxy"), default="proxy")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--population", type=int, default=10)
    p.add_argument("--profile", default="edge-npu-32x32")
    p.add_argument("--objectives", default="accuracy,latency")
    p.add_argument("--db", default="nas-compare.sqlite")
    args = p.parse_args(argv)
    settings = EvalSettings(evaluator=args.evaluator, epochs=args.epochs, profile=args.profile)
    strategies = tuple(args.strategies.split(","))

    def progress(name, seed, s):
        per = f"{s.seconds_per_new:.2f} s/new" if s.new else "all cached"
        print(f"{name} seed {seed}: {s.evaluated} candidates ({s.new} new, {per})",
              file=sys.stderr, flush=True)

    c = compare_strategies(strategies, tuple(int(s) for s in args.seeds.split(",")),
                           args.budget, space=args.space, settings=settings, db=args.db,
                           objectives=args.objectives, population=args.population,
                           progress=progress)
    print(f"space {args.space}, budget {c.budget}, evaluator {args.evaluator}, objectives "
          f"{','.join(c.objectives)}, profile {args.profile}, population {args.population}")
    print(f"normalization: ideal {c.ideal}, nadir {c.nadir} (minimized: -quality, latency s"
          f"{', energy pJ' if len(c.objectives) == 3 else ''}); reference point "
          f"{REFERENCE} per normalized objective")
    print(c.table())
    if c.new_evaluations:
        print(f"{c.new_evaluations} new evaluations, {c.eval_seconds / c.new_evaluations:.2f} s "
              f"each")
    if "evolution" in strategies and "random" in strategies:
        ok = c.mean("evolution") > c.mean("random")
        print(f"evolution mean {c.mean('evolution'):.4f} {'>' if ok else '<='} random mean "
              f"{c.mean('random'):.4f}")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
