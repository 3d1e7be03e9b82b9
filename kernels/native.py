"""Loads the C extension ``lowbit._native`` and applies the environment once, at import.

Environment:
    LOWBIT_DISABLE_ISA   comma list of ISA variants not to use (e.g. ``avx512_vnni,avx512``),
                         to reach the fallbacks; ``portable`` and ``numba`` may be named too.
    LOWBIT_NUM_THREADS   threads for the C kernels and Numba (default: CPUs in the affinity mask).

If the extension is missing (a source checkout that was never built), ``lib`` is None and
only the NumPy and Numba entries are usable; ``IMPORT_ERROR`` says why.
"""
from __future__ import annotations

import os

C_ISAS = ("portable", "avx2", "avx512", "avx512_vnni")  # index = C enum value (csrc/lowbit.h)
PY_ISAS = ("numba", "ref")
KNOWN_ISAS = C_ISAS + PY_ISAS

try:
    from lowbit._native import ffi, lib  # type: ignore[import-not-found]

    IMPORT_ERROR: Exception | None = None
except ImportError as exc:  # pragma: no cover - exercised only on unbuilt checkouts
    ffi = lib = None
    IMPORT_ERROR = exc


def _parse_disabled(value: str | None) -> frozenset[str]:
    names = frozenset(p.strip().lower() for p in (value or "").split(",") if p.strip())
    unknown = sorted(names - set(KNOWN_ISAS))
    if unknown:
        raise ValueError(
            f"LOWBIT_DISABLE_ISA: unknown ISA {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(KNOWN_ISAS)}"
        )
    if "ref" in names:
        raise ValueError("LOWBIT_DISABLE_ISA: 'ref' is the reference every kernel falls back to")
    return names


def _parse_threads(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"LOWBIT_NUM_THREADS must be a positive integer, got {value!r}")
    return n


DISABLED: frozenset[str] = _parse_disabled(os.environ.get("LOWBIT_DISABLE_ISA"))
_threads = _parse_threads(os.environ.get("LOWBIT_NUM_THREADS"))

if lib is not None:
    lib.lb_init(sum(1 << i for i, name in enumerate(C_ISAS) if name in DISABLED))
    if _threads is not None:
        lib.lb_set_num_threads(_threads)


def num_threads() -> int:
    """Threads the kernels use (``LOWBIT_NUM_THREADS`` or the CPUs this process may run on)."""
    if lib is not None:
        return int(lib.lb_get_num_threads())
    return _threads or len(os.sched_getaffinity(0))


def set_num_threads(n: int) -> int:
    """Set the kernel thread count for this process; returns the count in force."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    global _threads
    _threads = n
    if lib is not None:
        return int(lib.lb_set_num_threads(n))
    return n


def cpu_features() -> list[str]:
    """Instruction-set features of this CPU that the OS also enables (cpuid + xgetbv)."""
    if lib is None:
        return []
    bits = int(lib.lb_cpu_features())
    return [ffi.string(lib.lb_feature_name(i)).decode() for i in range(64)
            if bits >> i & 1 and lib.lb_feature_name(i) != ffi.NULL]


def c_isa_supported(isa: str) -> bool:
    """This CPU and OS can run the C variant ``isa`` (whether or not it is disabled)."""
    return lib is not None and bool(lib.lb_isa_supported(C_ISAS.index(isa)))


def c_isa_selected() -> str | None:
    """The C variant the extension chose at load (its own dispatch, for C callers)."""
    return C_ISAS[lib.lb_selected_isa()] if lib is not None else None
