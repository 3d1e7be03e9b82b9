"""``lowbit compress``: quantize a built-in digits model, run it on lowbit's kernels, report.

    lowbit compress --model digits-cnn --config int8-static [--calibrator kl] [--save PATH]
    lowbit compress --model digits-cnn --config int4-weight-only --group-size 32
    lowbit compress --model digits-cnn --config all          # one table, every recipe
    lowbit compress --load PATH [--eval]

Prints accuracy on the digits test split (fp32, the torch simulation, the exported model on
lowbit's kernels; the drop against issue 7's target), size and MACs (``profile``), and the
measured latency of the exported model against the fp32 torch model: median of
``--repeats`` runs on a batch of ``--batch`` test images, the two models timed alternately.
Wired into ``lowbit.cli`` by ``add_parser(subparsers)``; library errors propagate to the
CLI's one-line handler.
"""
from __future__ import annotations

import argparse
import statistics
import time

DESCRIPTION = ("Quantize a built-in digits model with a recipe (int8-static, int8-dynamic, "
               "int4-weight-only, qat-w4a4, or all), export it to lowbit's kernels and print "
               "accuracy before/after, size, MACs and latency against fp32 torch; save the "
               "compressed model to one file and load it back.")


def add_parser(subparsers) -> argparse.ArgumentParser:
    from lowbit.compress.recipes import RECIPES

    p = subparsers.add_parser("compress", help="quantize a digits model, run it on lowbit's "
                                               "kernels, report accuracy / size / latency",
                              description=DESCRIPTION)
    p.add_argument("--model", default="digits-cnn",
                   help="digits-cnn, digits-mlp or digits-transformer (default: %(default)s)")
    p.add_argument("--config", choices=(*RECIPES, "all"),
                   help="the compression recipe, or all of them in one table")
    p.add_argument("--calibrator", default="kl",
                   help="int8-static: kl, mse, percentile, minmax or ema (default: %(default)s)")
    p.add_argument("--group-size", type=int, default=32,
                   help="int4-weight-only: 32, 64 or 128 (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="qat-w4a4 fine-tune seed")
    p.add_argument("--save", metavar="PATH", help="write the compressed model to PATH")
    p.add_argument("--load", metavar="PATH", help="read a model --save wrote")
    p.add_argument("--eval", action="store_true",
                   help="with --load: accuracy, size and latency of the loaded model")
    p.add_argument("--batch", type=int, default=64, help="latency batch size (test images)")
    p.add_argument("--repeats", type=int, default=30, help="timed runs per model")
    p.add_argument("--threads", type=int,
                   help="threads of torch and of lowbit's kernels for everything "
                        "(default: as configured, e.g. LOWBIT_NUM_THREADS)")
    p.set_defaults(func=run)
    return p


def _check(args) -> None:
    for name in ("batch", "repeats", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name}: must be at least 1, got {getattr(args, name)}")
    if args.load:
        if args.config or args.save:
            raise ValueError("--load: reads a saved model; drop --config / --save")
        return
    if args.eval:
        raise ValueError("--eval: evaluates a model read with --load PATH")
    if not args.config:
        raise ValueError("--config: give a recipe (int8-static, int8-dynamic, "
                         "int4-weight-only, qat-w4a4) or all, or --load PATH")
    if args.save and args.config == "all":
        raise ValueError("--save: saves one compressed model; pick one --config")


def _latency(exported, fp32, x, repeats: int) -> tuple[float, float]:
    """Median seconds per call of (exported, fp32) on ``x``, timed alternately."""
    import torch

    times: tuple[list, list] = ([], [])
    with torch.no_grad():
        for model in (exported, fp32):  # warm-up: packed-weight caches, first-call costs
            model(x)
        for _ in range(repeats):
            for model, out in zip((exported, fp32), times):
                start = time.perf_counter()
                model(x)
                out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def _measure(exported, fp32, args) -> dict:
    import torch

    from lowbit.compress import load_digits_split, profile
    from lowbit.kernels import num_threads

    x = load_digits_split().x_test[:args.batch]
    prof = profile(exported, x[:1])
    fp_prof = profile(fp32, x[:1])
    t_exp, t_fp = _latency(exported, fp32, x, args.repeats)
    return {"profile": prof, "bytes": prof.bytes, "fp32_bytes": fp_prof.bytes,
            "macs": prof.macs, "t_exported": t_exp, "t_fp32": t_fp, "batch": int(x.shape[0]),
            "threads": (torch.get_num_threads(), num_threads())}


def _timing_line(m: dict, repeats: int) -> str:
    th_torch, th_lowbit = m["threads"]
    return (f"latency, batch {m['batch']}, median of {repeats} (torch {th_torch} threads, lowbit "
            f"{th_lowbit}): exported {m['t_exported'] * 1e3:.3f} ms, fp32 torch "
            f"{m['t_fp32'] * 1e3:.3f} ms ({m['t_fp32'] / m['t_exported']:.2f}x)")


def _size_line(m: dict) -> str:
    return (f"size: {m['bytes']:,d} B (fp32 model {m['fp32_bytes']:,d} B, "
            f"{m['fp32_bytes'] / m['bytes']:.2f}x smaller); MACs per image: {m['macs']:,d}")


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def _one(args) -> int:
    from lowbit.compress import compress_builtin, export_summary, save

    r = compress_builtin(args.model, args.config, calibrator=args.calibrator,
                         group_size=args.group_size, seed=args.seed)
    m = _measure(r.exported, r.fp32, args)
    verdict = "met" if r.drop_pt <= r.target_pt else "MISSED"
    print(f"{args.model}, {args.config}: {r.config!r}")
    print(f"accuracy on the digits test split (450 images): fp32 {_pct(r.fp32_accuracy)}, "
          f"simulation {_pct(r.simulated_accuracy)}, exported on lowbit kernels "
          f"{_pct(r.accuracy)}; drop {r.drop_pt:.2f} pt (target <= {r.target_pt} pt: "
          f"{verdict})")
    print(_size_line(m))
    print(_timing_line(m, args.repeats))
    print("\nlayers:")
    print(export_summary(r.exported).table())
    for note in r.notes:
        print(f"note: {note}")
    print()
    print(m["profile"].table())
    if args.save:
        meta = {"model": args.model, "fp32_accuracy": r.fp32_accuracy,
                "accuracy": r.accuracy, "simulated_accuracy": r.simulated_accuracy}
        save(r.exported, args.save, arch=args.model, config=r.config_record(), meta=meta)
        print(f"\nsaved: {args.save}")
    return 0


def _all(args) -> int:
    from lowbit.compress import RECIPES, compress_builtin

    head = (f"{'config':<17} {'fp32':>7} {'exported':>8} {'drop pt':>7} {'target':>6} "
            f"{'bytes':>9} {'ratio':>6} {'MACs':>9} {'exp ms':>8} {'fp32 ms':>8}  notes")
    lines = [head, "-" * len(head)]
    timing = None
    for recipe in RECIPES:
        r = compress_builtin(args.model, recipe, calibrator=args.calibrator,
                             group_size=args.group_size, seed=args.seed, simulate=False)
        m = _measure(r.exported, r.fp32, args)
        timing = m
        ok = "" if r.drop_pt <= r.target_pt else "  MISSED"
        notes = "; ".join(r.notes) + ok
        lines.append(f"{recipe:<17} {_pct(r.fp32_accuracy):>7} {_pct(r.accuracy):>8} "
                     f"{r.drop_pt:>7.2f} {r.target_pt:>6} {m['bytes']:>9,d} "
                     f"{m['fp32_bytes'] / m['bytes']:>5.2f}x {m['macs']:>9,d} "
                     f"{m['t_exported'] * 1e3:>8.3f} {m['t_fp32'] * 1e3:>8.3f}  {notes}")
    th_torch, th_lowbit = timing["threads"]
    print(f"{args.model}: accuracy on the digits test split (450 images), exported models on "
          f"lowbit kernels; latency: batch {timing['batch']}, median of {args.repeats} "
          f"(torch {th_torch} threads, lowbit {th_lowbit})")
    print("\n".join(lines))
    return 0


def _load(args) -> int:
    from lowbit.compress import (checkpoint_info, digits_loaders, evaluate, export_summary,
                                 get_model, load, model_names)

    info = checkpoint_info(args.load)
    model = load(args.load)
    print(f"{args.load}: lowbit-compressed version {info['version']}, arch {info['arch']}, "
          f"config {info['config']}")
    print(export_summary(model).table())
    if not args.eval:
        return 0
    if info["arch"] not in model_names():
        raise ValueError(f"--eval: {args.load} is not a built-in digits model")
    fp32 = get_model(info["arch"])
    _, test_loader = digits_loaders()
    acc, fp_acc = evaluate(model, test_loader), evaluate(fp32, test_loader)
    m = _measure(model, fp32, args)
    print(f"accuracy on the digits test split (450 images): loaded model on lowbit kernels "
          f"{_pct(acc)}, fp32 {_pct(fp_acc)}; drop {100 * (fp_acc - acc):.2f} pt")
    print(_size_line(m))
    print(_timing_line(m, args.repeats))
    return 0


def run(args) -> int:
    _check(args)
    if args.threads is not None:
        import torch

        from lowbit.kernels import set_num_threads

        torch.set_num_threads(args.threads)
        set_num_threads(args.threads)
    if args.load:
        return _load(args)
    return _all(args) if args.config == "all" else _one(args)
