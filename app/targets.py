"""Speed goals of the GEMMs, evaluated on one benchmark run (per pass, then the median).

gemm_int8:
    best lowbit >= 1.1x the better of torch_int_mm / torch_qlinear_dynamic   for M >= 128
    best lowbit >= 1.0x the better of the two                                for M = 1, 16
    best lowbit >= 5x numpy_fp32                                             at 128x4096x4096
    best lowbit >= 75% of the measured int8 VNNI peak                        at 1024x1024x1024
gemm_binary (effective MAC/s: a binary MAC counts as a MAC, so this is a ratio of times):
    best lowbit binary >= 20x numpy_fp32 on the same +-1 matrices            at 1024x1024x4096
gemm_w4a16 and gemm_w4a8 (int4 weights, group 32, float16 scales), each:
    best lowbit >= 2x torch_int4_woq                                  at 1x4096x4096, 8x4096x4096
    best lowbit >= 80% of the measured DRAM read bandwidth (stream_read)    at 1x16384x8192
        (weights larger than the L3: the effective bytes/s of the call, its cost model's
        bytes, which are the int4 weights and scales plus 0.1% of activations and output,
        over a read of as many bytes by both cores timed in the same pass)
spmm_csr (CSR weights 4096 x 4096 x activations 4096 x 128, group per density):
    best lowbit >= 2x scipy_csr (float32, the same matrix)                   at 10%
    and, not a goal, ``csr_crossover``: per density the speed of the best lowbit CSR
    variant over lowbit's dense int8 GEMM on the equivalent dense weights, and the densities
    at which CSR is the faster
gemm_sparse24 (int8 x 2:4 sparse int8 weights; a ratio of times, so the same work):
    best lowbit >= 1.6x lowbit_int8_dense (gemm_int8 on the same 2:4 matrix)  at 1x4096x4096
    best lowbit >= 1.3x lowbit_int8_dense                                   at 128x4096x4096

Every ratio is taken within one interleaved pass of the benchmark (lowbit.bench times all
implementations of a group back to back in each pass): the fastest lowbit ISA variant of that
pass against the fastest of the named baselines in that pass ("the better torch int8" may
change from pass to pass). The measured value is the median over passes; min and max show
the spread. The peak target takes, per pass, the fastest lowbit variant's rate over the best
run of the int8_vnni peak loop, the bandwidth target the fastest lowbit variant's bytes/s over
the stream_read row of the same pass (the best session-end dram_read loop for a JSON without
that row).
"""
from __future__ import annotations

from dataclasses import dataclass

from lowbit.bench.config import (BANDWIDTH_KIND, BINARY_OP, GEMM_OP, GEMM_SHAPES,
                                 SPARSE24_OP, SPMM_CSR_DENSITIES, SPMM_CSR_OP,
                                 SPMM_CSR_SHAPE, STREAM_READ, W4A8_OP, W4A16_OP, gemm_group,
                                 spmm_csr_group)

from . import benchtable

INT8_BASELINES = ("torch_int_mm", "torch_qlinear_dynamic")
W4_BASELINES = ("torch_int4_woq",)
SPARSE24_BASELINES = ("lowbit_int8_dense",)
MET, MISSED, NOT_MEASURED = "met", "missed", "not measured"


@dataclass(frozen=True)
class Target:
    name: str
    shape: tuple[int, int, int]
    goal: float
    baselines: tuple[str, ...] = ()  # speedup over the fastest of these; () = peak fraction
    op: str = GEMM_OP                # whose benchmark group it reads
    ceiling: str | None = None       # with no baselines: None = the int8_vnni peak (ops/s),
    #                                  "dram_read" = the read bandwidth (bytes/s)
    group_name: str | None = None    # a group not named by its shape (spmm_csr: density)

    @property
    def group(self) -> str:
        return self.group_name or gemm_group(*self.shape, op=self.op)


def default_targets() -> list[Target]:
    found = []
    for shape in GEMM_SHAPES:
        m = shape[0]
        if m >= 128 or m in (1, 16):
            found.append(Target("best lowbit vs better torch int8", shape,
                                1.1 if m >= 128 else 1.0, INT8_BASELINES))
    found.append(Target("best lowbit vs numpy_fp32", (128, 4096, 4096), 5.0, ("numpy_fp32",)))
    found.append(Target("best lowbit / int8_vnni peak", (1024, 1024, 1024), 0.75))
    found.append(Target("best lowbit binary vs numpy_fp32", (1024, 1024, 4096), 20.0,
                        ("numpy_fp32",), op=BINARY_OP))
    for op, short in ((W4A16_OP, "w4a16"), (W4A8_OP, "w4a8")):
        for shape in ((1, 4096, 4096), (8, 4096, 4096)):
            found.append(Target(f"best lowbit {short} vs torch_int4_woq", shape, 2.0,
                                W4_BASELINES, op=op))
        found.append(Target(f"best lowbit {short} / DRAM read bandwidth", (1, 16384, 8192),
                            0.8, op=op, ceiling=BANDWIDTH_KIND))
    n_out, k, b = SPMM_CSR_SHAPE
    found.append(Target("best lowbit csr vs scipy_csr", (b, n_out, k), 2.0, ("scipy_csr",),
                        op=SPMM_CSR_OP, group_name=spmm_csr_group(0.1)))
    for shape, goal in (((1, 4096, 4096), 1.6), ((128, 4096, 4096), 1.3)):
        found.append(Target("best lowbit sparse24 vs own dense int8", shape, goal,
                            SPARSE24_BASELINES, op=SPARSE24_OP))
    return found


CSR_DENSE_BASELINE = "lowbit_int8"  # lowbit's dense int8 GEMM on the same weights


def csr_crossover(summary: dict) -> dict:
    """Where CSR beats dense int8: per spmm_csr density measured, the ratio within each pass
    of lowbit_int8's median over the fastest lowbit CSR variant's (> 1: CSR is faster),
    median (min, max) over passes; ``faster_at``: the densities whose median is >= 1."""
    groups = {g["name"]: g for g in summary["groups"]}
    rows = []
    for density in SPMM_CSR_DENSITIES:
        group = groups.get(spmm_csr_group(density))
        ratios = [p["ratio"] for p in benchtable.pass_ratios(group, (CSR_DENSE_BASELINE,))] \
            if group else []
        if ratios:
            median, low, high = benchtable.spread(ratios)
            rows.append({"density": density, "group": group["name"], "speedup": median,
                         "min": low, "max": high, "passes": len(ratios)})
    return {"baseline": CSR_DENSE_BASELINE, "densities": rows,
            "faster_at": [r["density"] for r in rows if r["speedup"] >= 1.0]}


def crossover_text(crossover: dict) -> str | None:
    """One paragraph stating the densities at which CSR beats dense int8, or None."""
    rows = crossover["densities"]
    if not rows:
        return None
    faster = crossover["faster_at"]
    each = ", ".join(f"{100 * r['density']:g}% {r['speedup']:.2f}x" for r in rows)
    slower = [r["density"] for r in rows if r["density"] not in faster]
    if not faster:
        verdict = "CSR is slower than dense int8 at every density measured."
    elif not slower:
        verdict = "CSR beats dense int8 at every density measured."
    elif max(faster) < min(slower):
        verdict = (f"CSR beats dense int8 at {100 * max(faster):g}% density and below; dense "
                   f"int8 is faster from {100 * min(slower):g}%.")
    else:  # not monotone in density: say exactly what was measured
        verdict = ("CSR beats dense int8 at " + ", ".join(f"{100 * d:g}%" for d in faster)
                   + " density, not at " + ", ".join(f"{100 * d:g}%" for d in slower) + ".")
    return (f"spmm_csr vs dense int8 ({crossover['baseline']} on the equivalent dense "
            f"weights; dense time / CSR time, median over passes): {each}. {verdict}")


def _bandwidth_fractions(group: dict, session_gbps: float | None, kind: str) -> list | None:
    """Per pass, the fastest lowbit variant's bytes/s over the group's own STREAM_READ row in
    the same pass (a read of the same byte count); without that row (a JSON from before it
    existed), over the best session-end read loop ``kind``. None if neither was measured."""
    rows = {r["impl"]: r for r in group["rows"]}
    read = rows.get(STREAM_READ)
    if read is None and not session_gbps:
        return None
    read_gbps = {} if read is None else {
        pp["pass"]: read["bytes"] / pp["median_s"] / 1e9 for pp in read["per_pass"]
        if pp["median_s"] > 0}
    out = []
    for b in group["per_pass_best"]:
        ceiling = read_gbps.get(b["pass"]) if read is not None else session_gbps
        if b["median_s"] > 0 and ceiling:
            out.append({"pass": b["pass"], "best_lowbit": b["impl"],
                        "baseline": STREAM_READ if read is not None else kind,
                        "ratio": rows[b["impl"]]["bytes"] / b["median_s"] / 1e9 / ceiling})
    return out


def _evaluate(target: Target, groups: dict[str, dict], peak: dict, bandwidth: dict) -> dict:
    unit = "x" if target.baselines else "of bandwidth" if target.ceiling else "of peak"
    result = {"name": target.name, "group": target.group, "goal": target.goal,
              "unit": unit, "baseline": None,
              "measured": None, "min": None, "max": None, "passes": 0, "per_pass": [],
              "status": NOT_MEASURED}
    group = groups.get(target.group)
    if group is None or not group["per_pass_best"]:
        return result
    if target.baselines:
        per_pass = benchtable.pass_ratios(group, target.baselines)
    elif target.ceiling:
        per_pass = _bandwidth_fractions(group, bandwidth.get(target.ceiling, {}).get("gbps"),
                                        target.ceiling)
        if per_pass is None:
            return result
    else:
        ceiling = peak.get("int8_vnni", {}).get("gops")
        if not ceiling:
            return result
        ops = {r["impl"]: r["ops"] for r in group["rows"]}
        per_pass = [{"pass": b["pass"], "best_lowbit": b["impl"], "baseline": "int8_vnni",
                     "ratio": ops[b["impl"]] / b["median_s"] / 1e9 / ceiling}
                    for b in group["per_pass_best"] if b["median_s"] > 0]
    if not per_pass:
        return result
    result["measured"], result["min"], result["max"] = benchtable.spread(
        [p["ratio"] for p in per_pass])
    result["baseline"] = benchtable.most_common([p["baseline"] for p in per_pass])
    result["passes"], result["per_pass"] = len(per_pass), per_pass
    result["status"] = MET if result["measured"] >= target.goal else MISSED
    return result


def evaluate(summary: dict, targets: list[Target] | None = None) -> list[dict]:
    """One record per target: name, group, goal, unit, status, measured (median over passes),
    min, max, passes, baseline (the one most passes compared with) and per_pass (pass,
    best_lowbit, baseline, ratio)."""
    groups = {g["name"]: g for g in summary["groups"]}
    return [_evaluate(t, groups, summary["peaks"], summary.get("bandwidth", {}))
            for t in (default_targets() if targets is None else targets)]


TARGET_HEADERS = ("target", "shape", "vs", "measured (pass min-max)", "passes", "goal",
                  "status")
TARGET_ALIGN = "lrlrrrl"
TARGET_NOTE = ("measured: the ratio within each interleaved pass (fastest lowbit variant of "
               "the pass against the fastest named baseline of the same pass), median over "
               "passes; min-max over passes in brackets. vs: the baseline most passes "
               "compared with (how many of them when they differ).")


def _value(x: float | None, unit: str, *, suffix: bool = True) -> str:
    if x is None:
        return "n/a"
    return (f"{x:.2f}" + ("x" if suffix else "")) if unit == "x" else \
        f"{100 * x:.1f}" + ("%" if suffix else "")


def _measured(r: dict) -> str:
    text = _value(r["measured"], r["unit"])
    if r["passes"] > 1:
        text += (f" ({_value(r['min'], r['unit'], suffix=False)}-"
                 f"{_value(r['max'], r['unit'], suffix=False)})")
    return text


def _versus(r: dict) -> str:
    if r["baseline"] is None:
        return "-"
    agree = sum(p["baseline"] == r["baseline"] for p in r["per_pass"])
    return r["baseline"] if agree == len(r["per_pass"]) else \
        f"{r['baseline']} ({agree}/{len(r['per_pass'])})"


def target_rows(results: list[dict]) -> list[tuple[str, ...]]:
    return [(r["name"], r["group"].split("-", 1)[-1], _versus(r), _measured(r),
             str(r["passes"]) if r["passes"] else "-", ">= " + _value(r["goal"], r["unit"]),
             r["status"]) for r in results]
