"""``lowbit roofline calibrate``: measure this CPU and write the host roofline profile.

What is measured, all on lowbit's pool threads (both cores):

* compute ceilings per precision and ISA variant: every register-resident loop of
  ``lowbit.kernels.peak.ceiling_loops()`` (csrc/peak.c: VNNI, vpmaddwd / vpmaddubsw on
  AVX-512 and AVX2, SSE2, FMA per width, vdpbf16ps, vpopcntq, the AVX2 nibble lookup, scalar
  popcnt), the best of ``peak_repeats`` runs at the start and as many at the end of the
  calibration (interference only ever lowers a peak). They become ``isa_peak_tops``; the
  ``peak_tops`` of a precision is its best variant;
* read bandwidth per level: a buffer of half (L1, L2) or a quarter (L3) of each cache (sizes
  from sysfs) and one of ``dram_bytes`` and at least twice the L3 (DRAM: a cyclic read of it
  misses every cache), read by the C loop (csrc/peak.c), best of ``bandwidth_repeats`` runs;
* the host efficiency U per precision: a representative kernel, timed (best call of at
  least ``kernel_repeats`` over ``kernel_seconds``), over its precision's ceiling: lowbit's gemm_int8 (the dispatched
  variant) at 1024^3 for int8, lowbit's gemm_binary at 1024x1024x4096 for binary, numpy's
  float32 matmul (its BLAS) at 1024^3 for fp32. ``analyze`` uses them as U on the host, with
  the source "measured"; bf16 has no such kernel here and keeps the default (1.0);
* the DRAM capacity: MemTotal of /proc/meminfo.

The orchestration needs the kernels, so it lives in the ``lowbit`` app, not in
``lowbit.roofline`` (which imports no kernels). Progress goes to ``say`` (the CLI prints it).
"""
from __future__ import annotations

import datetime
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = ["CalibrationBudget", "FULL", "QUICK", "calibrate", "cache_sizes"]


@dataclass(frozen=True)
class CalibrationBudget:
    """How long each measurement runs, and the shapes timed for the host efficiency."""

    peak_seconds: float          # one run of one peak loop
    peak_repeats: int            # runs per loop, at each end of the calibration
    bandwidth_seconds: float     # one run of the read loop (at least one pass)
    bandwidth_repeats: int       # runs per level
    dram_bytes: int              # DRAM buffer at least this large (and twice the L3)
    kernel_repeats: int          # timed calls per efficiency kernel at least (after a warm-up)
    kernel_seconds: float        # ... and calls for at least this long
    int8_shape: tuple[int, int, int]
    binary_shape: tuple[int, int, int]
    fp32_shape: tuple[int, int, int]


# Many short runs, best kept: on a shared machine a run of a few milliseconds often falls
# between other processes' time slices, where a long one averages them in (measured on the
# 2-core VM under a load of 5: 5 ms x 30 runs gave the idle VNNI peak within 3%, 0.1 s x 3
# runs a fifth of it). The kernels that give U are timed the same way.
# The DRAM buffer is 1 GiB: on the 2-vCPU VM, a 256 MiB one (8x the 32 MiB L3 sysfs reports)
# read at up to 70 GB/s, a 1 GiB one at up to 34 GB/s in the same interleaved runs: the
# vCPUs migrate across the host's CCDs and find part of the buffer in their L3s.
FULL = CalibrationBudget(peak_seconds=0.005, peak_repeats=30, bandwidth_seconds=0.01,
                         bandwidth_repeats=20, dram_bytes=1 << 30, kernel_repeats=20,
                         kernel_seconds=0.3,
                         int8_shape=(1024, 1024, 1024), binary_shape=(1024, 1024, 4096),
                         fp32_shape=(1024, 1024, 1024))
QUICK = CalibrationBudget(peak_seconds=0.002, peak_repeats=5, bandwidth_seconds=0.005,
                          bandwidth_repeats=5, dram_bytes=32 << 20, kernel_repeats=3,
                          kernel_seconds=0.02,
                          int8_shape=(256, 256, 256), binary_shape=(256, 256, 1024),
                          fp32_shape=(256, 256, 256))

# Horowitz, ISSCC 2014, 45 nm (the simulator's energy table for int8 and binary MACs):
# a MAC is 2 ops, so half a MAC's energy per op.
PJ_PER_OP_SOURCE = ("Horowitz ISSCC 2014 45 nm (a 45 nm estimate, not measured), halved per "
                    "op: int8 MAC 0.23 pJ, 1-bit MAC 0.0082 pJ (the simulator's table), fp32 "
                    "MAC 3.7 + 0.9 pJ, bf16 MAC as fp16 1.1 + 0.4 pJ")


def cache_sizes() -> dict[str, int]:
    """L1d / L2 / L3 sizes of cpu0 from sysfs (bytes); empty entries when unknown."""
    out: dict[str, int] = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in sorted(base.glob("index*")):
        try:
            level = (idx / "level").read_text().strip()
            kind = (idx / "type").read_text().strip()
            size = (idx / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        mult = {"K": 1024, "M": 1 << 20, "G": 1 << 30}.get(size[-1], 1)
        out[f"L{level}"] = int(size.rstrip("KMG")) * mult
    return out


def _mem_total() -> int | None:
    """Bytes of RAM the OS sees (MemTotal of /proc/meminfo), None when unreadable."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read_bandwidth(nbytes: int, seconds: float, repeats: int) -> float:
    """Read bandwidth (bytes/s) of a buffer of ``nbytes`` on all kernel threads: the C read
    loop (lowbit.kernels.peak.run_read), best of ``repeats`` runs of about ``seconds``."""
    from lowbit.kernels import peak

    buf = peak.read_bandwidth_buffer(max(256, nbytes // 256 * 256))
    return peak.best_rate(lambda passes: peak.run_read(buf, passes), seconds, repeats,
                          limit=1 << 30)


def _best_rate(call: Callable[[], object], ops: float, repeats: int, seconds: float) -> float:
    """ops / the fastest timed call of at least ``repeats`` calls spread over at least
    ``seconds`` (as the peaks' runs are), after one warm-up call."""
    call()
    best, calls, start = float("inf"), 0, time.perf_counter()
    while calls < repeats or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
        calls += 1
    return ops / best


def _efficiency_kernels(budget: CalibrationBudget) -> list[tuple[str, str, Callable, float]]:
    """(precision, description, call, ops) of each kernel whose rate gives the host U."""
    import functools

    import numpy as np

    from lowbit.kernels import dispatch_info, gemm_binary, gemm_int8, pack_weights
    from lowbit.kernels.formats import pack_binary_activations

    rng = np.random.default_rng(20261122)
    info = dispatch_info()
    m, n, k = budget.int8_shape
    int8 = ("int8", f"lowbit gemm_int8 [{info['gemm_int8']['selected']}] {m}x{n}x{k}",
            functools.partial(gemm_int8, rng.integers(-128, 128, size=(m, k), dtype=np.int8),
                              pack_weights(rng.integers(-128, 128, size=(k, n), dtype=np.int8))),
            2.0 * m * n * k)
    m, n, k = budget.binary_shape
    signs = lambda *shape: rng.integers(0, 2, size=shape, dtype=np.int8) * 2 - 1  # noqa: E731
    binary = ("binary", f"lowbit gemm_binary [{info['gemm_binary']['selected']}] {m}x{n}x{k}",
              functools.partial(gemm_binary, pack_binary_activations(signs(m, k)),
                                pack_weights(signs(k, n), "binary"), k),
              2.0 * m * n * k)
    m, n, k = budget.fp32_shape
    fp32 = ("fp32", f"numpy float32 matmul (its BLAS) {m}x{n}x{k}",
            functools.partial(np.matmul, rng.standard_normal((m, k), dtype=np.float32),
                              rng.standard_normal((k, n), dtype=np.float32)),
            2.0 * m * n * k)
    return [int8, binary, fp32]


def _levels(budget: CalibrationBudget, measured: str, threads: int, sources: dict,
            say: Callable[[str], None]) -> list:
    """The memory levels, outermost (DRAM) first, with their read bandwidths and citations."""
    from lowbit.roofline.device import MemoryLevel
    from lowbit.simulator.profile_io import HOROWITZ_45NM

    caches = cache_sizes()
    levels = []
    plan = [("DRAM", max(budget.dram_bytes, 2 * caches.get("L3", 0)), _mem_total())]
    for name, frac in (("L3", 4), ("L2", 2), ("L1", 2)):
        if name in caches:
            plan.append((name, caches[name] // frac, caches[name]))
    for name, nbytes, cap in plan:
        bw = _read_bandwidth(nbytes, budget.bandwidth_seconds, budget.bandwidth_repeats)
        say(f"read bandwidth {name:<4} ({nbytes / 2**20:9.3f} MiB buffer): {bw / 1e9:8.1f} GB/s")
        outer = name == "DRAM"
        pj = HOROWITZ_45NM.dram_pj_per_byte if outer else HOROWITZ_45NM.sram_pj_per_byte(cap)
        levels.append(MemoryLevel(name, bw, float(cap) if cap else None, pj))
        where = ("capacity: MemTotal of /proc/meminfo" if outer
                 else f"capacity {cap} bytes from sysfs (cpu0)")
        sources[f"memory.{name}"] = (f"{measured}: C read loop (csrc/peak.c lb_read_bandwidth, "
                                     f"{threads} threads), best of {budget.bandwidth_repeats} "
                                     f"runs over a {nbytes} byte buffer; {where}")
        sources[f"memory.{name}.pj_per_byte"] = ("Horowitz ISSCC 2014 45 nm: DRAM 243.75 pJ/B; "
                                                 "SRAM interpolated by size (simulator defaults)")
    return levels


def _efficiency(budget: CalibrationBudget, peak: dict, measured: str, sources: dict,
                say: Callable[[str], None]) -> dict[str, float]:
    """U per precision: each efficiency kernel's best rate over its precision's peak."""
    efficiency = {"default": 1.0}
    for prec, what, call, ops in _efficiency_kernels(budget):
        if prec not in peak:
            continue
        rate = _best_rate(call, ops, budget.kernel_repeats, budget.kernel_seconds)
        u = efficiency[prec] = min(1.0, rate / peak[prec])
        capped = " (capped at 1: the kernel outran the measured peak)" if u < rate / peak[prec] \
            else ""
        sources[f"efficiency.{prec}"] = (
            f"{measured}: {what}, best call of at least {budget.kernel_repeats} over "
            f"{budget.kernel_seconds} s: {rate / 1e9:.1f} GOP/s over "
            f"the {prec} peak {peak[prec] / 1e9:.1f} GOP/s{capped}")
        say(f"efficiency U {prec:<6}: {u:6.1%}  ({what}: {rate / 1e9:.1f} GOP/s)")
    return efficiency


def calibrate(path: str | Path | None = None, *, budget: CalibrationBudget = FULL,
              say: Callable[[str], None] = lambda msg: None):
    """Measure this CPU (see the module doc) and write its profile; returns (Device, path).

    ``path`` defaults to ``lowbit.roofline.host_profile_path()`` (what ``--profile host``
    reads). Raises RuntimeError without the native extension or when no peak loop runs.
    """
    from lowbit.kernels import cpu_features, native, num_threads
    from lowbit.kernels.peak import ceiling_loops, measure_peak
    from lowbit.roofline.device import Device
    from lowbit.roofline.profile_io import host_profile_path, save_device
    from lowbit.simulator.profile_io import HOROWITZ_45NM

    if native.lib is None:
        raise RuntimeError(f"calibrate needs the native extension: {native.IMPORT_ERROR}")
    feats = set(cpu_features())
    threads = num_threads()
    cpu = _cpu_name()
    say(f"calibrating {cpu}, {threads} kernel threads")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    measured = f"measured by lowbit roofline calibrate on {stamp}"
    isa_peak: dict[str, dict[str, float]] = {}
    sources: dict[str, str] = {}
    loops = ceiling_loops()

    def peaks(when: str) -> None:
        for loop in loops:
            ops = measure_peak(loop.kind, seconds=budget.peak_seconds,
                               repeats=budget.peak_repeats)
            if ops <= 0:
                if when == "first":
                    say(f"peak {loop.precision}.{loop.variant}: not supported by this CPU")
                continue
            table = isa_peak.setdefault(loop.precision, {})
            table[loop.variant] = max(ops, table.get(loop.variant, 0.0))
            sources[f"isa_peak_tops.{loop.precision}.{loop.variant}"] = (
                f"{measured}: csrc/peak.c lb_peak_{loop.kind} ({loop.instructions}), "
                f"register-resident, {threads} threads, best of {budget.peak_repeats} runs at "
                "the start and as many at the end of calibration")
            say(f"peak {loop.precision + '.' + loop.variant:<24} ({when}): "
                f"{ops / 1e9:9.1f} GOP/s")

    peaks("first")
    if not isa_peak:
        raise RuntimeError("no peak loop ran on this CPU")
    levels = _levels(budget, measured, threads, sources, say)
    peaks("last")
    peak = {}
    for prec, table in isa_peak.items():
        best = max(table, key=table.get)
        peak[prec] = table[best]
        sources[f"peak_tops.{prec}"] = f"the best of its isa_peak_tops variants ({best})"

    efficiency = _efficiency(budget, peak, measured, sources, say)
    sources["efficiency.default"] = ("1.0 (the ceiling itself) for precisions without a timed "
                                     "kernel, e.g. bf16")
    vec_bytes = 64 if "avx512f" in feats else 32
    tile = 32 * vec_bytes if vec_bytes == 64 else 16 * vec_bytes
    sources["tile_bytes"] = (f"the vector register file of one core: "
                             f"{tile // vec_bytes} x {vec_bytes}-byte registers")
    pj_op = {"int8": HOROWITZ_45NM.mac_pj[8] / 2, "binary": HOROWITZ_45NM.mac_pj[1] / 2,
             "fp32": (3.7 + 0.9) / 2, "bf16": (1.1 + 0.4) / 2}
    pj_op = {k: v for k, v in pj_op.items() if k in peak}
    sources["energy.pj_per_op"] = PJ_PER_OP_SOURCE
    sources["profile"] = f"{cpu}; {measured}; cpu features: {' '.join(sorted(feats))}"
    device = Device(name="host", kind="cpu", peak=peak, memory=tuple(levels),
                    tile_bytes=float(tile), pj_per_op=pj_op, efficiency=efficiency,
                    isa_peak=isa_peak, sources=sources)
    path = Path(path) if path else host_profile_path()
    save_device(device, path, header=f"Host roofline profile of {cpu}, {measured}.\n"
                                     "Generated by `lowbit roofline calibrate`; do not edit, "
                                     "rerun it.")
    return device, path
