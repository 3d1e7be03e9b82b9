"""``lowbit nas``: hardware-aware neural architecture search from the command line.

    lowbit nas [--space digits-mbv2] [--profile edge-npu-32x32] [--budget 30]
               [--strategy grid|random|evolution|de|hybrid] [--objectives accuracy,latency]
               [--db nas.sqlite] [--seed 0] [--evaluator train|proxy] [--plot FILE.png]
               [--export FILE.pt] [--json]

Runs (or resumes, or extends) the search in the database, prints its Pareto front (accuracy
vs simulated latency), and optionally plots it and exports the front's most accurate
candidate (trained float weights + architecture) for the compression pipeline. Wired into
``lowbit.cli`` by ``add_parser(subparsers)``; library errors propagate to the CLI's one-line
handler.
"""
from __future__ import annotations

import json
import sys

from lowbit.progress import CountBar

DESCRIPTION = ("Hardware-aware NAS on the digits images: search MobileNet-style networks "
               "(and per-layer bit widths with --space digits-mbv2-bits) for accuracy vs "
               "latency on a hardware profile; candidates are trained briefly (or scored by "
               "the NASWOT proxy), quantized, and run through the simulator. Results go to a "
               "SQLite database; rerunning the same command resumes the search.")


# The library's names and defaults, repeated so that building the parser imports no torch
# (tests/test_nas_cli.py checks they match lowbit.nas).
SPACES = ("digits-mbv2", "digits-mbv2-bits")
STRATEGIES = ("grid", "random", "evolution", "de", "hybrid")
EVALUATORS = ("train", "proxy")
COSTS = ("simulator", "roofline")
DEFAULTS = {"profile": "edge-npu-32x32", "evaluator": "train", "epochs": 4, "qat_epochs": 1,
            "cost": "simulator", "population": 10}


def add_parser(subparsers):
    d = DEFAULTS
    p = subparsers.add_parser("nas", description=DESCRIPTION,
                              help="hardware-aware architecture (+ bit width) search")
    p.add_argument("--space", default="digits-mbv2", choices=SPACES,
                   help="search space (default: %(default)s)")
    p.add_argument("--profile", default=d["profile"],
                   help="hardware profile name or TOML file (default: %(default)s)")
    p.add_argument("--budget", type=int, default=30,
                   help="distinct candidates to evaluate (default: %(default)s)")
    p.add_argument("--strategy", default="evolution", choices=STRATEGIES,
                   help="search strategy (default: %(default)s)")
    p.add_argument("--objectives", default="accuracy,latency",
                   help="accuracy,latency or accuracy,latency,energy (default: %(default)s)")
    p.add_argument("--db", default="nas.sqlite", metavar="FILE",
                   help="results database (created if missing; default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="strategy seed (default: %(default)s)")
    p.add_argument("--evaluator", default=d["evaluator"], choices=EVALUATORS,
                   help="train: short training, validation accuracy; proxy: NASWOT zero-cost "
                        "score (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=d["epochs"],
                   help="training epochs per candidate (default: %(default)s)")
    p.add_argument("--qat-epochs", type=int, default=d["qat_epochs"],
                   help="quantization-aware fine-tuning epochs (default: %(default)s)")
    p.add_argument("--cost", default=d["cost"], choices=COSTS,
                   help="hardware cost model (default: %(default)s)")
    p.add_argument("--population", type=int, default=d["population"],
                   help="evolution / de / hybrid population (default: %(default)s)")
    p.add_argument("--plot", metavar="FILE.png", help="plot the search's points and front")
    p.add_argument("--export", metavar="FILE.pt",
                   help="train the front's most accurate candidate and save it (float "
                        "weights + architecture + bit widths; lowbit.nas.load_model)")
    p.add_argument("--json", action="store_true", help="print the summary and front as JSON")
    p.set_defaults(func=run)
    return p


def _front_table(front: list[dict]) -> str:
    from lowbit.nas.space import Candidate

    proxy = front and front[0]["val_accuracy"] is None
    head = (f"{'NASWOT' if proxy else 'val acc':>8}{'' if proxy else 'test acc':>9}"
            f"{'latency us':>12}{'energy uJ':>11}{'MACs':>10}{'KiB':>8}  candidate")
    lines = [head, "-" * len(head)]
    for r in front:
        cand = Candidate.from_dict(json.loads(r["candidate"]))
        quality = f"{r['quality']:>8.1f}" if proxy else \
            f"{r['val_accuracy']:>8.4f}{r['test_accuracy']:>9.4f}"
        lines.append(f"{quality}{r['latency_s'] * 1e6:>12.3f}{r['energy_pj'] * 1e-6:>11.3f}"
                     f"{r['macs']:>10}{r['weight_bytes'] / 1024:>8.1f}  {cand.describe()}")
    return "\n".join(lines)


def run(args) -> int:
    import dataclasses

    from lowbit.nas import NASDB, EvalSettings, front_rows, parse_objectives, run_search
    from lowbit.nas.space import Candidate

    # bad arguments fail before the progress bar starts
    settings = EvalSettings(evaluator=args.evaluator, epochs=args.epochs,
                            qat_epochs=args.qat_epochs, profile=args.profile, cost=args.cost)
    parse_objectives(args.objectives)
    NASDB(args.db).close()
    info = sys.stderr if args.json else sys.stdout
    with CountBar("nas", "candidates") as bar:
        s = run_search(args.space, args.strategy, args.budget, objectives=args.objectives,
                       settings=settings, db=args.db, seed=args.seed,
                       population=args.population, progress=bar)
    with NASDB(args.db) as store:
        rows = store.trials(s.search_id)
    front = front_rows(rows, s.objectives)
    per = f"{s.seconds_per_new:.2f} s per new candidate" if s.new else "nothing new to evaluate"
    stopped = f"; stopped early: {s.stopped}" if s.stopped else ""
    print(f"nas: {s.strategy} on {s.space} ({settings.evaluator}, {settings.profile} "
          f"{settings.cost}), {s.evaluated} candidates ({s.new} evaluated now, {s.cached} from "
          f"{s.db}), {per}; search #{s.search_id}{stopped}", file=info)
    if args.json:
        out = {"summary": {**dataclasses.asdict(s), "seconds_per_new": s.seconds_per_new},
               "front": [{k: r[k] for k in ("eval_key", "quality", "val_accuracy",
                                            "test_accuracy", "proxy_score", "latency_s",
                                            "energy_pj", "macs", "params", "weight_bytes")}
                         | {"candidate": json.loads(r["candidate"])} for r in front]}
    else:
        print(f"Pareto front ({len(front)} of {len(rows)}; accuracy vs latency"
              f"{' vs energy' if len(s.objectives) == 3 else ''}):")
        print(_front_table(front))
    if args.plot:
        from lowbit.nas import plot_searches
        print(f"plot: {plot_searches(args.db, args.plot, [s.search_id])}", file=info)
    if args.export:
        if not front:
            raise ValueError("--export: the search has no feasible candidate to export")
        best = max(front, key=lambda r: (r["quality"], -r["latency_s"]))
        from lowbit.nas import export_model
        cand = Candidate.from_dict(json.loads(best["candidate"]))
        record = export_model(cand, args.space, args.export, settings)
        print(f"export: {args.export} ({cand.describe()}; float val acc "
              f"{record['val_accuracy']:.4f}, test acc {record['test_accuracy']:.4f})",
              file=info)
        if args.json:
            out["export"] = {"path": args.export, **{k: record[k] for k in (
                "val_accuracy", "test_accuracy", "candidate")}}
    if args.json:
        print(json.dumps(out, indent=1))
    return 0


__all__ = ["add_parser", "run", "SPACES", "STRATEGIES", "EVALUATORS", "COSTS", "DEFAULTS"]
