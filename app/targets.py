"""Speed goals of the int8 GEMM, evaluated on the medians of one benchmark run.

    best lowbit >= 1.1x the better of torch_int_mm / torch_qlinear_dynamic   for M >= 128
    best lowbit >= 1.0x the better of the two                                for M = 1, 16
    best lowbit >= 5x numpy_fp32                                             at 128x4096x4096
    best lowbit >= 75% of the measured int8 VNNI peak                        at 1024x1024x1024

"best lowbit" is the fastest lowbit ISA variant of the group (by median).
"""
from __future__ import annotations

from dataclasses import dataclass

from lowbit.bench.config import GEMM_SHAPES, gemm_group

INT8_BASELINES = ("torch_int_mm", "torch_qlinear_dynamic")
MET, MISSED, NOT_MEASURED = "met", "missed", "not measured"


@dataclass(frozen=True)
class Target:
    name: str
    shape: tuple[int, int, int]
    goal: float
    baselines: tuple[str, ...] = ()  # speedup over the fastest of these; () = peak fraction

    @property
    def group(self) -> str:
        return gemm_group(*self.shape)


def default_targets() -> list[Target]:
    found = []
    for shape in GEMM_SHAPES:
        m = shape[0]
        if m >= 128 or m in (1, 16):
            found.append(Target("best lowbit vs better torch int8", shape,
                                1.1 if m >= 128 else 1.0, INT8_BASELINES))
    found.append(Target("best lowbit vs numpy_fp32", (128, 4096, 4096), 5.0, ("numpy_fp32",)))
    found.append(Target("best lowbit / int8_vnni peak", (1024, 1024, 1024), 0.75))
    return found


def _evaluate(target: Target, groups: dict[str, dict], peak: dict) -> dict:
    result = {"name": target.name, "group": target.group, "goal": target.goal,
              "unit": "x" if target.baselines else "of peak", "baseline": None,
              "measured": None, "status": NOT_MEASURED}
    group = groups.get(target.group)
    rows = {r["impl"]: r for r in group["rows"]} if group else {}
    best = rows.get(group["best_lowbit"]) if group and group["best_lowbit"] else None
    if best is None:
        return result
    if target.baselines:
        present = [rows[name] for name in target.baselines if name in rows]
        if not present or best["median_s"] <= 0:
            return result
        rival = min(present, key=lambda r: r["median_s"])
        result["baseline"] = rival["impl"]
        result["measured"] = rival["median_s"] / best["median_s"]
    else:
        ceiling = peak.get("int8_vnni", {}).get("gops")
        if not ceiling or best["gops"] is None:
            return result
        result["baseline"] = "int8_vnni"
        result["measured"] = best["gops"] / ceiling
    result["status"] = MET if result["measured"] >= target.goal else MISSED
    return result


def evaluate(summary: dict, targets: list[Target] | None = None) -> list[dict]:
    """One record per target: name, group, baseline, measured, goal, unit, status."""
    groups = {g["name"]: g for g in summary["groups"]}
    return [_evaluate(t, groups, summary["peaks"])
            for t in (default_targets() if targets is None else targets)]


TARGET_HEADERS = ("target", "shape", "vs", "measured", "goal", "status")


def target_rows(results: list[dict]) -> list[tuple[str, ...]]:
    def value(x, unit):
        if x is None:
            return "n/a"
        return f"{x:.2f}x" if unit == "x" else f"{100 * x:.1f}%"

    return [(r["name"], r["group"].split("-", 1)[-1], r["baseline"] or "-",
             value(r["measured"], r["unit"]), (">= " + value(r["goal"], r["unit"])),
             r["status"]) for r in results]
