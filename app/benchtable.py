"""Benchmark tables from a saved pytest-benchmark JSON dict (``lowbit bench --json``).

Nothing here times anything: rates are derived after the run, GOP/s = extra_info["ops"] /
stats["median"]. A kernel's "% of peak" compares its median rate with the best run of the
matching peak loop (int8 kernels: ``int8_vnni``, fp32 baselines: ``fp32_fma``), the ceiling
as ``lowbit.kernels.peak`` defines it. "best lowbit x" is a row's median divided by the
median of the fastest lowbit variant of its group: how many times faster lowbit's best is.
"""
from __future__ import annotations

from lowbit.bench.config import GEMM_SHAPES, PEAK_GROUP, gemm_group

PEAK_OF_PRECISION = {"int8": "int8_vnni", "fp32": "fp32_fma"}
_REQUIRED = ("impl", "family", "precision", "ops", "bytes")
_REQUIRED_PEAK = ("impl", "ops")


def _rate(ops: float, seconds: float) -> float | None:
    return ops / seconds / 1e9 if seconds > 0 else None


def _entries(data: dict) -> list[dict]:
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError("benchmark JSON: no 'benchmarks' list; expected a file written by "
                         "pytest-benchmark (lowbit bench --json)")
    entries = data["benchmarks"]
    for b in entries:
        info = b.get("extra_info", {})
        required = _REQUIRED_PEAK if b.get("group") == PEAK_GROUP else _REQUIRED
        missing = [key for key in required if key not in info]
        if missing:
            raise ValueError(f"benchmark JSON: {b.get('name', '?')} lacks extra_info "
                             f"{', '.join(missing)}; was it written by lowbit bench?")
    return entries


def peaks(data: dict) -> dict[str, dict]:
    """Per peak loop: GOP/s of its best run (the ceiling) and of its median run.

    A loop measured more than once (lowbit.bench runs each at both ends of the session)
    keeps the highest of each: interference only ever lowers a peak.
    """
    out: dict[str, dict] = {}
    for b in _entries(data):
        if b.get("group") != PEAK_GROUP:
            continue
        info, stats = b["extra_info"], b["stats"]
        best, median = _rate(info["ops"], stats["min"]), _rate(info["ops"], stats["median"])
        seen = out.setdefault(info["impl"], {"gops": None, "median_gops": None, "runs": 0})
        seen["gops"] = max(filter(None, (seen["gops"], best)), default=None)
        seen["median_gops"] = max(filter(None, (seen["median_gops"], median)), default=None)
        seen["runs"] += 1
    return out


def _group_order(name: str) -> tuple[int, str]:
    order = [gemm_group(*shape) for shape in GEMM_SHAPES]
    return (order.index(name), "") if name in order else (len(order), name)


def summarize(data: dict) -> dict:
    """``{"peaks": ..., "groups": [...]}``: one table per benchmark group except ``peak``.

    Each group: name, m, n, k, best_lowbit (impl name or None) and rows sorted by median,
    each with impl, family, isa, precision, median_s, min_s, rounds, ops, bytes, intensity,
    gops, peak_fraction (None without the peak) and lowbit_speedup.
    """
    peak = peaks(data)
    groups: dict[str, list[dict]] = {}
    shapes: dict[str, tuple] = {}
    for b in _entries(data):
        if b.get("group") == PEAK_GROUP:
            continue
        info, stats = b["extra_info"], b["stats"]
        name = b.get("group") or b["name"]
        shapes.setdefault(name, (info.get("m"), info.get("n"), info.get("k")))
        gops = _rate(info["ops"], stats["median"])
        ceiling = peak.get(PEAK_OF_PRECISION.get(info["precision"], ""), {}).get("gops")
        groups.setdefault(name, []).append({
            "impl": info["impl"], "family": info["family"], "isa": info.get("isa"),
            "precision": info["precision"], "median_s": stats["median"],
            "min_s": stats["min"], "rounds": stats["rounds"], "ops": info["ops"],
            "bytes": info["bytes"], "intensity": info["ops"] / info["bytes"],
            "gops": gops,
            "peak_fraction": gops / ceiling if gops is not None and ceiling else None,
        })
    tables = []
    for name in sorted(groups, key=_group_order):
        rows = sorted(groups[name], key=lambda r: r["median_s"])
        best = next((r for r in rows if r["family"] == "lowbit"), None)
        for r in rows:
            r["lowbit_speedup"] = (r["median_s"] / best["median_s"]
                                   if best and best["median_s"] > 0 else None)
        m, n, k = shapes[name]
        tables.append({"name": name, "m": m, "n": n, "k": k,
                       "best_lowbit": best["impl"] if best else None, "rows": rows})
    return {"peaks": peak, "groups": tables}


# --- formatting ------------------------------------------------------------------------

def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "n/a"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if s >= scale or unit == "ns":
            v = s / scale
            return f"{v:.2f} {unit}" if v < 10 else f"{v:.1f} {unit}" if v < 100 else \
                f"{v:.0f} {unit}"
    raise AssertionError("unreachable")


def fmt_num(x: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "n/a" if x is None else f"{x:{spec}}{suffix}"


GROUP_HEADERS = ("impl", "median", "GOP/s", "% of peak", "best lowbit speedup", "rounds")


def group_rows(group: dict) -> list[tuple[str, ...]]:
    return [(r["impl"], fmt_seconds(r["median_s"]), fmt_num(r["gops"]),
             fmt_num(None if r["peak_fraction"] is None else 100 * r["peak_fraction"],
                     ".1f", "%"),
             fmt_num(r["lowbit_speedup"], ".2f", "x"), str(r["rounds"]))
            for r in group["rows"]]


PEAK_HEADERS = ("peak loop", "best GOP/s", "median GOP/s", "measurements")


def peak_rows(peak: dict) -> list[tuple[str, ...]]:
    return [(kind, fmt_num(p["gops"]), fmt_num(p["median_gops"]), str(p["runs"]))
            for kind, p in peak.items()]


def render(headers, rows, *, markdown: bool = False, align: str | None = None) -> str:
    """An aligned plain-text table, or a markdown one.

    ``align`` has one letter per column, "l" or "r"; default: first column left, others right.
    """
    cells = [tuple(headers)] + [tuple(r) for r in rows]
    align = align or "l" + "r" * (len(headers) - 1)
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row):
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)]
        return "| " + " | ".join(parts) + " |" if markdown else "  ".join(parts).rstrip()

    if markdown:
        rule = "|" + "|".join(":" + "-" * (w + 1) if a == "l" else "-" * (w + 1) + ":"
                              for w, a in zip(widths, align)) + "|"
    else:
        rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])
