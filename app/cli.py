"""The ``lowbit`` command line. Library errors become one-line messages and exit code 1."""
from __future__ import annotations

import argparse
import sys


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowbit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="CPU features and the ISA variant of every kernel")
    p.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("lowbit: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for the user; the traceback is for developers
        print(f"lowbit: error: {exc}", file=sys.stderr)
        return 1
