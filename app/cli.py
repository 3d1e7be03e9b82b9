"""The ``lowbit`` command line. Library errors become one-line messages and exit code 1."""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from lowbit import compress_cmd, nas_cmd, roofline_cmd, simulate_cmd, sweep_cmd


def _cmd_info(args) -> int:
    from lowbit import kernels
    from lowbit.kernels import native

    print(f"lowbit {__import__('lowbit').__version__}")
    if native.lib is None:
        print(f"native extension: NOT BUILT ({native.IMPORT_ERROR})")
    print(f"cpu features: {' '.join(kernels.cpu_features()) or 'unknown'}")
    print(f"threads: {kernels.num_threads()}")
    if native.DISABLED:
        print(f"disabled (LOWBIT_DISABLE_ISA): {', '.join(sorted(native.DISABLED))}")
    for op, info in kernels.dispatch_info().items():
        print(f"{op}: selected {info['selected']}; available {', '.join(info['available'])}")
    return 0


def _json_target(path: str) -> tuple[Path, Path]:
    """The --json file and the pytest log written next to it."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"--json: {target} is a directory; pass a file path")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target, target.with_name(target.name + ".log")


def _cmd_bench(args) -> int:
    from lowbit import report
    from lowbit.benchrun import run_benchmarks

    scratch = None
    if args.json:
        json_path, log_path = _json_target(args.json)
    else:
        scratch = Path(tempfile.mkdtemp(prefix="lowbit-bench-"))
        json_path, log_path = scratch / report.BENCH_JSON, scratch / report.BENCH_LOG
    mode = "quick" if args.quick else "full"
    print(f"lowbit bench: running the {mode} suite; pytest output in {log_path}",
          file=sys.stderr, flush=True)
    data = run_benchmarks(json_path, log_path, quick=args.quick, keyword=args.keyword)
    if scratch is not None:  # kept on failure, for its log
        shutil.rmtree(scratch, ignore_errors=True)
    print(report.render(report.build_report(data)), end="")
    if args.json:
        print(f"\nbenchmark JSON: {json_path}")
    return 0


def _cmd_run(args) -> int:
    from lowbit.run_cli import run_with_progress

    return run_with_progress(args.out, quick=args.quick)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowbit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="CPU features and the ISA variant of every kernel")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("bench", help="run the kernel benchmarks and print a table per group",
                       description="Run the pytest-benchmark suite lowbit.bench (every usable "
                                   "lowbit ISA variant against torch and fp32 BLAS, 2 threads) "
                                   "and print per-group tables and the speed targets.")
    p.add_argument("--json", metavar="FILE", help="also keep pytest-benchmark's JSON in FILE "
                                                  "(and pytest's output in FILE.log)")
    p.add_argument("--quick", action="store_true", help="fewer rounds per benchmark")
    p.add_argument("-k", dest="keyword", metavar="EXPR",
                   help="pytest -k expression selecting benchmarks, e.g. 1024x1024x1024 or "
                        "'avx512_vnni or torch' (the peak group always runs)")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("run", help="the main job on built-in defaults: compress, benchmark, "
                                   "simulate, roofline, report",
                       description="Train (or load) the digits CNN, compress it five ways and "
                                   "measure each, run the quick kernel benchmark, simulate the "
                                   "zoo and the compressed models on the NPU profiles, run the "
                                   "roofline (Llama-2-7B decode included) and write a report "
                                   "folder: index.html (self-contained), report.md, PNG plots, "
                                   "CSV and JSON. Exit status 1 if any step failed.")
    p.add_argument("--out", metavar="DIR", default="lowbit-report",
                   help="report folder (created if missing; default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="fewer fine-tune epochs and timing repeats, a benchmark subset "
                        "(about a minute)")
    p.set_defaults(func=_cmd_run)

    simulate_cmd.add_parser(sub)
    roofline_cmd.add_parser(sub)
    sweep_cmd.add_parser(sub)
    compress_cmd.add_parser(sub)
    nas_cmd.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("lowbit: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for the user; the traceback is for developers
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"lowbit: error: {message}", file=sys.stderr)
        return 1
