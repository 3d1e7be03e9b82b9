"""lowbit's measured kernels against their roofline bound (``lowbit roofline --bench-json``).

Each lowbit kernel variant in a saved benchmark JSON is judged against the ceiling of the
instructions that variant issues, not the best ceiling of its precision: ``KERNEL_CEILINGS``
maps an operation and a registry ISA name to a precision and an ISA variant of the device's
``isa_peak_tops`` (the host profile's per-instruction-family ceilings, measured by
``lowbit roofline calibrate`` with the loops of ``lowbit.kernels.peak.PEAKS``). Per row:

    bound = max(ops / P_variant, bytes / BW_level),  fraction = bound / measured time

with the kernel's own (ops, bytes) from the benchmark's extra_info (the registry's cost
function) and BW_level the read bandwidth of the smallest memory level holding ``bytes``
(a benchmark reruns one set of operands; the outermost level if none holds them). A DRAM-
bound kernel (the int4 GEMVs at 1x16384x8192) is thus judged against the DRAM read
bandwidth, a compute-bound one against its instruction family's peak.

On a shared machine the calibration and the benchmark may see different interference;
``session_ceilings`` replaces the profile's compute ceilings and DRAM bandwidth with those
the benchmark session measured itself (its ``peak`` and ``bandwidth`` groups, best runs), so
both sides of each fraction come from the same session (``--ceilings session``).

Adding an operation is one entry of ``KERNEL_CEILINGS``: its ISA variants' ceilings,
usually one of the families below. An operation registered in ``lowbit.kernels.REGISTRY``
but missing from the table is listed with the reason and no fraction; benchmark groups of
anything else (the simulator's) are skipped.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

__all__ = ["Ceiling", "KERNEL_CEILINGS", "TARGET_FRACTION", "OPTIMIZED_ISAS", "kernel_bounds",
           "largest_shapes", "ceiling_of", "session_ceilings"]

TARGET_FRACTION = 0.60  # issue 5: every optimized kernel at >= 60% of its bound, largest shape
OPTIMIZED_ISAS = ("avx512_vnni", "avx512", "avx2")  # portable C and Numba: reported, no target


@dataclass(frozen=True)
class Ceiling:
    """A kernel variant's compute ceiling: ``precision`` on the first of ``variants`` the
    device has (several only for Numba, whose instructions depend on the host), and why."""

    precision: str
    variants: tuple[str, ...]
    why: str


def _c(precision: str, variant: str, why: str) -> Ceiling:
    return Ceiling(precision, (variant,), why)


# Numba compiles through LLVM for this CPU, so its instructions are the host's widest plain
# SIMD ones. Inspected on the Zen 5 (``Dispatcher.inspect_asm``): zmm code throughout;
# gemm_int8 multiplies with vpmullq, gemm_binary counts with vpopcntq, gemm_w4a16 uses
# vmulps + vaddps (no FMA: lowbit builds without fp contraction; on this core two vmulps
# and two vaddps issue per cycle, the rate of two FMAs), gemm_w4a8 vpmaddwd. Never the
# VNNI / BF16 dot products.
_NUMBA = {
    "int8": Ceiling("int8", ("avx512_maddwd", "avx2_maddwd", "sse2_maddwd"),
                    "numba: LLVM's widest plain-SIMD int8 multiply-add on this host"),
    "fp32": Ceiling("fp32", ("avx512_fma", "avx2_fma", "sse2_muladd"),
                    "numba: LLVM's widest float multiply-add on this host"),
    "binary": Ceiling("binary", ("avx512_vpopcntdq", "avx2_lut", "popcnt"),
                      "numba: LLVM's widest popcount on this host"),
}

# The instruction families of lowbit's kernels, per registry ISA name. Portable C is built
# for baseline x86-64, so GCC may use SSE2 at most: its ceiling is the best SSE2 idiom of the
# precision (GCC's code for it may be slower: the int8 frame vectorizes to pmullw + unpack +
# paddd, the w4a8 one to pmuludq; both are judged against pmaddwd).
INT8_MADDWD = {
    "avx512_vnni": _c("int8", "avx512_vnni", "vpdpbusd zmm"),
    "avx512": _c("int8", "avx512_maddwd", "vpmaddwd + vpaddd zmm on 16-bit pairs"),
    "avx2": _c("int8", "avx2_maddwd", "vpmaddwd + vpaddd ymm on 16-bit pairs"),
    "portable": _c("int8", "sse2_maddwd", "baseline x86-64: SSE2 pmaddwd at best"),
    "numba": _NUMBA["int8"],
}
INT8_MADDUBS = {
    **INT8_MADDWD,
    "avx512": _c("int8", "avx512_maddubs", "vpmaddubsw + vpmaddwd + vpaddd zmm"),
    "avx2": _c("int8", "avx2_maddubs", "vpmaddubsw + vpmaddwd + vpaddd ymm"),
}
FP32_FMA = {
    "avx512": _c("fp32", "avx512_fma", "vfmadd231ps zmm"),
    "avx2": _c("fp32", "avx2_fma", "vfmadd231ps ymm"),
    "portable": _c("fp32", "sse2_muladd", "baseline x86-64: SSE2 mulps + addps"),
    "numba": _NUMBA["fp32"],
}
BINARY_POPCOUNT = {
    "avx512": _c("binary", "avx512_vpopcntdq", "vpxorq + vpopcntq + vpaddq zmm"),
    "avx2": _c("binary", "avx2_lut", "vpshufb nibble lookup ymm"),
    "portable": _c("binary", "popcnt", "scalar xor + popcnt (its POPCNT-target copy)"),
    "numba": _NUMBA["binary"],
}

# op (or "op:precision" for an op whose variants differ per activation precision) -> registry
# ISA -> the ceiling of the instructions that variant uses
KERNEL_CEILINGS: Mapping[str, Mapping[str, Ceiling]] = {
    "gemm_int8": INT8_MADDWD,
    "gemm_binary": BINARY_POPCOUNT,
    "gemm_w4a16": {**FP32_FMA,
                   "avx512_vnni": _c("bf16", "avx512_bf16", "vdpbf16ps zmm (bf16 activations)")},
    "gemm_w4a8": INT8_MADDUBS,
    # spmm_csr: int8 on vpdpbusd quads (VNNI) or vpmaddwd pairs; float32 on FMA
    "spmm_csr:int8": INT8_MADDWD,
    "spmm_csr:fp32": FP32_FMA,
    # gemm_sparse24 (its executed MACs): int8 gathers feed vpdpbusd (VNNI) or vpmaddwd;
    # float32 gathers (vpermps) feed FMA
    "gemm_sparse24:int8": INT8_MADDWD,
    "gemm_sparse24:fp32": FP32_FMA,
}


def ceiling_of(op: str, isa: str | None, device,
               precision: str | None = None) -> tuple[str | None, float | None, str]:
    """(``precision.variant``, ops/s, why) of ``op``'s variant ``isa`` (at the benchmark row's
    ``precision``) on ``device``; the first two None (and why not) when the table or the
    device has no ceiling for it."""
    table = KERNEL_CEILINGS.get(f"{op}:{precision}") or KERNEL_CEILINGS.get(op, {})
    entry = table.get(isa or "")
    if entry is None:
        return None, None, f"no ceiling entry for {op}[{isa}] in KERNEL_CEILINGS"
    have = device.isa_peak.get(entry.precision, {})
    for variant in entry.variants:
        if variant in have:
            return f"{entry.precision}.{variant}", have[variant], entry.why
    wanted = " or ".join(f"{entry.precision}.{v}" for v in entry.variants)
    return None, None, (f"profile {device.name!r} has no {wanted} ceiling (rerun `lowbit "
                        "roofline calibrate`; the CPU may lack the instructions)")


def _kernel_ops() -> frozenset[str]:
    """Operations of lowbit's kernel registry (benchmark groups of anything else are not
    kernels: the simulator's)."""
    from lowbit.kernels import REGISTRY
    return frozenset(REGISTRY.ops()) | frozenset(k.split(":")[0] for k in KERNEL_CEILINGS)


def kernel_bounds(data: dict, device) -> list[dict]:
    """Per lowbit kernel variant and shape in a benchmark JSON dict: measured time, the
    roofline bound on ``device`` (see the module doc), and the fraction of it reached.

    Row keys: group, op, m, n, k, impl, isa, precision (the benchmark's), ops, bytes,
    intensity, measured_s, measured_ops_s, ceiling ("int8.avx2_maddwd", None if none),
    ceiling_ops_s, ceiling_why, level, bound_s, bound ("compute" / "memory:<level>"),
    fraction (bound_s / measured_s; None without a ceiling).
    """
    from lowbit.benchtable import summarize

    kernel_ops = _kernel_ops()
    rows = []
    for group in summarize(data)["groups"]:
        op = group["name"].rsplit("-", 1)[0]
        if op not in kernel_ops:
            continue
        for r in group["rows"]:
            if r.get("family") != "lowbit":
                continue
            ops, nbytes = float(r["ops"]), float(r["bytes"])
            level = device.memory[0]
            for lv in device.memory[1:]:
                if lv.capacity_bytes is not None and nbytes <= lv.capacity_bytes:
                    level = lv
            ceiling, peak, why = ceiling_of(op, r.get("isa"), device, r.get("precision"))
            row = {"group": group["name"], "op": op, "m": group.get("m"), "n": group.get("n"),
                   "k": group.get("k"), "impl": r["impl"], "isa": r.get("isa"),
                   "precision": r["precision"], "ops": ops, "bytes": nbytes,
                   "intensity": ops / nbytes, "measured_s": r["median_s"],
                   "measured_ops_s": ops / r["median_s"], "ceiling": ceiling,
                   "ceiling_ops_s": peak, "ceiling_why": why, "level": level.name,
                   "bound_s": None, "bound": None, "fraction": None}
            if peak is not None:
                t_c, t_m = ops / peak, nbytes / level.bandwidth
                row.update(bound_s=max(t_c, t_m),
                           bound="compute" if t_c >= t_m else f"memory:{level.name}")
                row["fraction"] = row["bound_s"] / r["median_s"]
            rows.append(row)
    return rows


def largest_shapes(rows: list[dict]) -> dict[str, dict]:
    """Per (op, impl): the row of its largest shape, the one moving the most bytes (most ops
    on a tie): 512x4096x11008 for gemm_int8, 1x16384x8192 for the int4 GEMVs (64 MiB of
    weights), 1024x1024x4096 for gemm_binary."""
    best: dict[str, dict] = {}
    for r in rows:
        key = f"{r['op']} {r['impl']}"
        if key not in best or (r["bytes"], r["ops"]) > (best[key]["bytes"], best[key]["ops"]):
            best[key] = r
    return best


def session_ceilings(data: dict, device):
    """``device`` with the compute ceilings and the DRAM read bandwidth a benchmark session
    measured (best runs of its ``peak`` loops and its ``dram_read`` loop) in place of the
    profile's; the cache levels keep the profile's bandwidths. Raises ValueError when the
    JSON has neither group."""
    from lowbit.benchtable import bandwidths, peaks
    from lowbit.bench.config import BANDWIDTH_KIND
    from lowbit.kernels.peak import PEAKS

    isa_peak = {p: dict(t) for p, t in device.isa_peak.items()}
    sources = dict(device.sources)
    found = 0
    for kind, got in peaks(data).items():
        loop = PEAKS.get(kind)
        if loop is None or loop.variant is None or not got["gops"]:
            continue
        isa_peak.setdefault(loop.precision, {})[loop.variant] = got["gops"] * 1e9
        sources[f"isa_peak_tops.{loop.precision}.{loop.variant}"] = (
            f"the benchmark session's {kind} loop, best of {got['runs']} measurements")
        found += 1
    memory = list(device.memory)
    dram = bandwidths(data).get(BANDWIDTH_KIND, {}).get("gbps")
    if dram:
        memory[0] = replace(memory[0], bandwidth=dram * 1e9)
        sources[f"memory.{memory[0].name}"] = (f"the benchmark session's {BANDWIDTH_KIND} "
                                               "loop, best run")
        found += 1
    if not found:
        raise ValueError("--ceilings session: the benchmark JSON has no peak or bandwidth "
                         "measurements (run lowbit bench without excluding them)")
    peak = dict(device.peak)
    for prec, table in isa_peak.items():
        peak[prec] = max(table.values())
    return replace(device, name=f"{device.name} (session ceilings)", peak=peak,
                   isa_peak=isa_peak, memory=tuple(memory), sources=sources)
