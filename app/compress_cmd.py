"""``lowbit compress``: compress a built-in digits model, run it on lowbit's kernels, report.

    lowbit compress --model digits-cnn --config int8-static [--calibrator kl] [--save PATH]
    lowbit compress --model digits-cnn --config int4-weight-only --group-size 32
    lowbit compress --model digits-cnn --config all          # one table, every recipe
    lowbit compress --model digits-cnn --config prune-l1:0.5,distill,int8-static
    lowbit compress --load PATH [--eval]

A recipe prints accuracy on the digits test split (fp32, the torch simulation, the exported
model on lowbit's kernels; the drop against issue 7's target), size and MACs (``profile``),
and the measured latency of the exported model against the fp32 torch model: median of
``--repeats`` runs on a batch of ``--batch`` test images, the two models timed alternately
(``run_pipeline.median_latencies``). A pipeline (``compress_pipeline``: comma-separated
steps) prints one row per step as it finishes (accuracy, size, MACs, latency of the model
as it stands: torch fp32, or lowbit's kernels after the quantize step), then, when it
prunes, the exported pruned model against the dense model exported the same way on the
kernels at batches ``PRUNED_LATENCY_BATCHES``. Wired into ``lowbit.cli`` by
``add_parser(subparsers)``; library errors propagate to the CLI's one-line handler.
"""
from __future__ import annotations

import argparse

DESCRIPTION = ("Compress a built-in digits model with a quantization recipe (int8-static, "
               "int8-dynamic, int4-weight-only, qat-w4a4, or all) or a pipeline of steps "
               "(e.g. prune-l1:0.5,distill,int8-static), export it to lowbit's kernels and "
               "print accuracy before/after, size, MACs and latency; save the compressed "
               "model to one file and load it back.")
PRUNE_TARGET_PT = 2.0       # issue 8: 50% L1 channels + KD, drop from fp32 in points
PRUNE_TARGET_MACS = 0.55    # and MACs at most this share of the dense model's


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("compress", help="quantize a digits model, run it on lowbit's "
                                               "kernels, report accuracy / size / latency",
                              description=DESCRIPTION)
    p.add_argument("--model", default="digits-cnn",
                   help="digits-cnn, digits-mlp or digits-transformer (default: %(default)s)")
    p.add_argument("--config",
                   help="a recipe (int8-static, int8-dynamic, int4-weight-only, qat-w4a4), all "
                        "(every recipe, one table), or a pipeline of comma-separated steps: "
                        "prune-<criterion>:<ratio> (structured channels; l1, l2, fpgm, slim, "
                        "apoz, mean_activation, taylor), distill[:<epochs>] (KD from the fp32 "
                        "model), then one recipe, e.g. prune-l1:0.5,distill,int8-static")
    p.add_argument("--calibrator", default="kl",
                   help="int8-static: kl, mse, percentile, minmax or ema (default: %(default)s)")
    p.add_argument("--group-size", type=int, default=32,
                   help="int4-weight-only: 32, 64 or 128 (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="qat-w4a4 and distill seed")
    p.add_argument("--kd-epochs", type=int, default=None,
                   help="epochs of a distill step without its own count (default: "
                        "lowbit.compress.KD_EPOCHS)")
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
    from lowbit.compress import RECIPES, parse_pipeline

    for name in ("batch", "repeats", "threads", "kd_epochs"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            flag = name.replace("_", "-")
            raise ValueError(f"--{flag}: must be at least 1, got {getattr(args, name)}")
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
    if args.config not in (*RECIPES, "all"):
        parse_pipeline(args.config)  # checks every step before anything runs
        if args.save:
            raise ValueError("--save: saves a single recipe's model; a pipeline's pruned "
                             "model has its own architecture, which the file format cannot "
                             "name yet")
    elif args.kd_epochs is not None:
        raise ValueError("--kd-epochs: sets the epochs of a pipeline's distill step; "
                         "--config has none")


def _measure(exported, fp32, args) -> dict:
    import torch

    from lowbit.compress import load_digits_split, profile
    from lowbit.kernels import num_threads
    from lowbit.run_pipeline import median_latencies

    x = load_digits_split().x_test[:args.batch]
    prof = profile(exported, x[:1])
    fp_prof = profile(fp32, x[:1])
    t_exp, t_fp = median_latencies([exported, fp32], x, args.repeats, threads=None)
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


def _pipeline(args) -> int:
    import torch

    from lowbit.compress import (KD_EPOCHS, compress_pipeline, export_summary,
                                 load_digits_split, profile)
    from lowbit.kernels import num_threads
    from lowbit.run_pipeline import median_latencies

    # one thread unless --threads says otherwise (run() has set it then): on a shared
    # machine more threads mostly measure the other processes' load
    threads = None if args.threads else 1
    x_all = load_digits_split().x_test
    x = x_all[:args.batch]
    th = (f"{torch.get_num_threads()} torch / {num_threads()} lowbit threads" if threads is None
          else "1 thread")
    print(f"{args.model}, pipeline {args.config.replace(',', ' -> ')} (calibrator "
          f"{args.calibrator}, group size {args.group_size}, seed {args.seed}); accuracy on the "
          f"digits test split ({len(x_all)} images); latency: batch {len(x)}, median of "
          f"{args.repeats}, {th}")
    head = (f"{'step':<24} {'runs on':<14} {'accuracy':>8} {'drop pt':>7} {'params':>8} "
            f"{'bytes':>9} {'MACs':>9} {'MACs %':>7} {'latency ms':>10}  notes")
    print(head)
    print("-" * len(head))
    seen: list = []  # (stage, MACs) so far; the first is the fp32 model

    def row(stage) -> None:  # printed as each step finishes
        prof = profile(stage.model, x[:1])
        seen.append((stage, prof.macs))
        fp32, fp32_macs = seen[0]
        (t,) = median_latencies([stage.model], x, args.repeats, threads=threads)
        notes = list(stage.notes)
        if stage.on_kernels:
            notes.insert(0, f"simulation {_pct(stage.simulated_accuracy)}")
        runs_on = "lowbit kernels" if stage.on_kernels else "torch fp32"
        print(f"{stage.step[:24]:<24} {runs_on:<14} {_pct(stage.accuracy):>8} "
              f"{100 * (fp32.accuracy - stage.accuracy):>7.2f} {prof.params:>8,d} "
              f"{prof.bytes:>9,d} {prof.macs:>9,d} {prof.macs / fp32_macs:>6.1%} "
              f"{t * 1e3:>10.3f}  {'; '.join(notes)}".rstrip(), flush=True)

    r = compress_pipeline(args.model, args.config, calibrator=args.calibrator,
                          group_size=args.group_size, seed=args.seed,
                          kd_epochs=args.kd_epochs or KD_EPOCHS, on_stage=row)
    if r.final.on_kernels:
        print("\nlayers:")
        print(export_summary(r.final.model).table())
    if r.reference is not None:
        _pruned_vs_dense(r, x_all, args.repeats, threads, th)
        for note in r.reference.notes:
            print(f"note ({r.reference.step}): {note}")
    return 0


def _pruned_vs_dense(r, x_all, repeats: int, threads: int | None, th: str) -> None:
    """The exported pruned model against the dense one through the same quantize step, on
    the kernels at ``PRUNED_LATENCY_BATCHES``, and issue 8's structured-pruning targets."""
    from lowbit.compress import profile
    from lowbit.run_pipeline import PRUNED_LATENCY_BATCHES as batches, median_latencies

    final, ref = r.final, r.reference
    print(f"\nexported to lowbit's kernels: the pruned model against {ref.step} (the dense "
          f"{r.model_name} through the same recipe, exported), median of {repeats} "
          f"interleaved runs, {th}:")
    print(f"{'batch':>5} {'pruned ms':>10} {'dense ms':>10} {'dense / pruned':>14}")
    faster = []
    for b in batches:
        t_p, t_d = median_latencies([final.model, ref.model], x_all[:b], repeats,
                                    threads=threads)
        faster.append(t_p < t_d)
        print(f"{b:>5} {t_p * 1e3:>10.3f} {t_d * 1e3:>10.3f} {t_d / t_p:>13.2f}x")
    macs_p, macs_d = (profile(s.model, x_all[:1]).macs for s in (final, ref))
    drop = r.drop_pt(final)
    share = macs_p / macs_d
    print(f"accuracy: pruned {_pct(final.accuracy)}, {ref.step} {_pct(ref.accuracy)}, fp32 "
          f"{_pct(r.fp32.accuracy)}; MACs per image: pruned {macs_p:,d} = {share:.1%} of "
          f"dense {macs_d:,d}")
    lower = ", ".join(f"{b}: {'yes' if f else 'no'}" for b, f in zip(batches, faster))
    print(f"issue 8's structured-pruning targets: drop {drop:.2f} pt <= {PRUNE_TARGET_PT} pt: "
          f"{'met' if drop <= PRUNE_TARGET_PT else 'MISSED'}; MACs {share:.1%} <= "
          f"{PRUNE_TARGET_MACS:.0%}: {'met' if share <= PRUNE_TARGET_MACS else 'MISSED'}; "
          f"kernel latency below the dense model's at batch {lower}")


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
    if args.config == "all":
        return _all(args)
    from lowbit.compress import RECIPES

    return _one(args) if args.config in RECIPES else _pipeline(args)
