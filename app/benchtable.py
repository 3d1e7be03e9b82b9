"""Benchmark tables from a saved pytest-benchmark JSON dict (``lowbit bench --json``).

Nothing here times anything: rates are derived after the run. lowbit.bench times each GEMM
group in interleaved passes (``extra_info["pass"]``; a JSON without it is one pass 0), so
every pass holds one benchmark per implementation, timed back to back with the others:

* an implementation's reported median is the median of its per-pass medians; GOP/s =
  extra_info["ops"] / that median, and "% of peak" compares that rate with the best run of
  the matching peak loop (int8 kernels: ``int8_vnni``, fp32 baselines: ``fp32_fma``), the
  ceiling as ``lowbit.kernels.peak`` defines it (binary kernels have none: n/a);
* ratios are taken within a pass, then the median over passes: "best lowbit x" of a row is,
  per pass, its median divided by the median of that pass's fastest lowbit variant; how many
  times faster lowbit's best is. ``pass_ratios`` does the same for the speed targets.
"""
from __future__ import annotations

import statistics
from collections import Counter

from lowbit.bench.config import (BANDWIDTH_GROUP, PEAK_GROUP, SHAPES, SPMM_CSR_DENSITIES,
                                 gemm_group, spmm_csr_group)

# int4-weight kernels: w4a16 multiplies in float32 (FMA), w4a8 in int8 (VNNI)
PEAK_OF_PRECISION = {"int8": "int8_vnni", "fp32": "fp32_fma", "w4a16": "fp32_fma",
                     "w4a8": "int8_vnni"}
_REQUIRED = ("impl", "family", "precision", "ops", "bytes")
_REQUIRED_PEAK = ("impl", "ops")
_REQUIRED_BANDWIDTH = ("impl", "bytes")
_SPECIAL_GROUPS = (PEAK_GROUP, BANDWIDTH_GROUP)  # ceilings, not GEMM groups


def _rate(ops: float, seconds: float) -> float | None:
    return ops / seconds / 1e9 if seconds > 0 else None


def _entries(data: dict) -> list[dict]:
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError("benchmark JSON: no 'benchmarks' list; expected a file written by "
                         "pytest-benchmark (lowbit bench --json)")
    entries = data["benchmarks"]
    for b in entries:
        info = b.get("extra_info", {})
        required = {PEAK_GROUP: _REQUIRED_PEAK, BANDWIDTH_GROUP: _REQUIRED_BANDWIDTH}.get(
            b.get("group"), _REQUIRED)
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


def bandwidths(data: dict) -> dict[str, dict]:
    """Per read-bandwidth loop (group ``bandwidth``): GB/s of its best run (the ceiling) and
    of its median run, the highest of each over its measurements (both session ends)."""
    out: dict[str, dict] = {}
    for b in _entries(data):
        if b.get("group") != BANDWIDTH_GROUP:
            continue
        info, stats = b["extra_info"], b["stats"]
        best, median = _rate(info["bytes"], stats["min"]), _rate(info["bytes"], stats["median"])
        seen = out.setdefault(info["impl"], {"gbps": None, "median_gbps": None, "runs": 0})
        seen["gbps"] = max(filter(None, (seen["gbps"], best)), default=None)
        seen["median_gbps"] = max(filter(None, (seen["median_gbps"], median)), default=None)
        seen["runs"] += 1
    return out


def _group_order(name: str) -> tuple[int, str]:
    order = [gemm_group(*shape, op=op) for op, shapes in SHAPES.items() for shape in shapes]
    order += [spmm_csr_group(d) for d in SPMM_CSR_DENSITIES]
    return (order.index(name), "") if name in order else (len(order), name)


def spread(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """(median, min, max) of per-pass values; Nones when there are none."""
    if not values:
        return None, None, None
    return statistics.median(values), min(values), max(values)


def _merge_passes(benchmarks: list[dict]) -> list[dict]:
    """One record per pass, sorted by pass: its median, min and rounds.

    Two benchmarks of one pass (not written by lowbit.bench) are merged: median of medians.
    """
    by_pass: dict[int, list[dict]] = {}
    for b in benchmarks:
        by_pass.setdefault(int(b["extra_info"].get("pass", 0)), []).append(b["stats"])
    return [{"pass": p, "median_s": statistics.median(s["median"] for s in stats),
             "min_s": min(s["min"] for s in stats), "rounds": sum(s["rounds"] for s in stats)}
            for p, stats in sorted(by_pass.items())]


def pass_ratios(group: dict, baselines: tuple[str, ...]) -> list[dict]:
    """Per pass with a lowbit variant and one of ``baselines``: the fastest of each, and
    ratio = the fastest baseline's median / the fastest lowbit variant's median."""
    medians = {r["impl"]: {pp["pass"]: pp["median_s"] for pp in r["per_pass"]}
               for r in group["rows"]}
    out = []
    for best in group["per_pass_best"]:
        p = best["pass"]
        present = [(medians[name][p], name) for name in baselines
                   if p in medians.get(name, {})]
        if not present or best["median_s"] <= 0:
            continue
        rival_s, rival = min(present)
        out.append({"pass": p, "best_lowbit": best["impl"], "baseline": rival,
                    "ratio": rival_s / best["median_s"]})
    return out


def summarize(data: dict) -> dict:
    """``{"peaks": ..., "bandwidth": ..., "groups": [...]}``: the ceilings (``peaks``,
    ``bandwidths``) and one table per benchmark group except ``peak`` and ``bandwidth``.

    Each group: name, m, n, k, passes (how many), best_lowbit (the lowbit variant of least
    median, or None), per_pass_best (per pass: pass, impl and median_s of its fastest lowbit
    variant) and rows sorted by median, each with impl, family, isa, precision, median_s (the
    median of the per-pass medians), min_s, rounds (all passes), passes, per_pass (pass,
    median_s, min_s, rounds), ops, bytes, intensity, gops, peak_fraction (None without the
    peak) and lowbit_speedup with its _min and _max over passes.
    """
    peak = peaks(data)
    found: dict[str, dict[str, list[dict]]] = {}
    shapes: dict[str, tuple] = {}
    for b in _entries(data):
        if b.get("group") in _SPECIAL_GROUPS:
            continue
        info = b["extra_info"]
        name = b.get("group") or b["name"]
        shapes.setdefault(name, (info.get("m"), info.get("n"), info.get("k")))
        found.setdefault(name, {}).setdefault(info["impl"], []).append(b)
    tables = []
    for name in sorted(found, key=_group_order):
        rows = []
        for benchmarks in found[name].values():
            info = benchmarks[0]["extra_info"]
            per_pass = _merge_passes(benchmarks)
            median = statistics.median(pp["median_s"] for pp in per_pass)
            gops = _rate(info["ops"], median)
            ceiling = peak.get(PEAK_OF_PRECISION.get(info["precision"], ""), {}).get("gops")
            rows.append({
                "impl": info["impl"], "family": info["family"], "isa": info.get("isa"),
                "precision": info["precision"], "median_s": median,
                "min_s": min(pp["min_s"] for pp in per_pass),
                "rounds": sum(pp["rounds"] for pp in per_pass), "passes": len(per_pass),
                "per_pass": per_pass, "ops": info["ops"], "bytes": info["bytes"],
                "intensity": info["ops"] / info["bytes"], "gops": gops,
                "peak_fraction": gops / ceiling if gops is not None and ceiling else None,
            })
        rows.sort(key=lambda r: r["median_s"])
        lowbit = [r for r in rows if r["family"] == "lowbit"]
        per_pass_best = []
        for p in sorted({pp["pass"] for r in lowbit for pp in r["per_pass"]}):
            s, impl = min((pp["median_s"], r["impl"]) for r in lowbit
                          for pp in r["per_pass"] if pp["pass"] == p)
            per_pass_best.append({"pass": p, "impl": impl, "median_s": s})
        best_s = {b["pass"]: b["median_s"] for b in per_pass_best}
        for r in rows:
            ratios = [pp["median_s"] / best_s[pp["pass"]] for pp in r["per_pass"]
                      if best_s.get(pp["pass"], 0) > 0]
            r["lowbit_speedup"], r["lowbit_speedup_min"], r["lowbit_speedup_max"] = \
                spread(ratios)
        m, n, k = shapes[name]
        tables.append({"name": name, "m": m, "n": n, "k": k,
                       "passes": len({pp["pass"] for r in rows for pp in r["per_pass"]}),
                       "best_lowbit": lowbit[0]["impl"] if lowbit else None,
                       "per_pass_best": per_pass_best, "rows": rows})
    return {"peaks": peak, "bandwidth": bandwidths(data), "groups": tables}


def most_common(names: list[str]) -> str | None:
    """The name given most often (first seen on a tie), e.g. the baseline most passes beat."""
    return Counter(names).most_common(1)[0][0] if names else None


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


GROUP_HEADERS = ("impl", "median*", "GOP/s", "% of peak", "best lowbit speedup*", "passes",
                 "rounds")
GROUP_NOTE = ("* median: the median of an implementation's per-pass medians; every pass of "
              "a group times all its implementations back to back (slow calls, with 1 in the "
              "passes column, in the first pass only). best lowbit speedup: the row's median over "
              "the fastest lowbit variant's in the same pass, median over passes.")


def group_rows(group: dict) -> list[tuple[str, ...]]:
    return [(r["impl"], fmt_seconds(r["median_s"]), fmt_num(r["gops"]),
             fmt_num(None if r["peak_fraction"] is None else 100 * r["peak_fraction"],
                     ".1f", "%"),
             fmt_num(r["lowbit_speedup"], ".2f", "x"), str(r["passes"]), str(r["rounds"]))
            for r in group["rows"]]


PEAK_HEADERS = ("peak loop", "best GOP/s", "median GOP/s", "measurements")


def peak_rows(peak: dict) -> list[tuple[str, ...]]:
    return [(kind, fmt_num(p["gops"]), fmt_num(p["median_gops"]), str(p["runs"]))
            for kind, p in peak.items()]


BANDWIDTH_HEADERS = ("read loop", "best GB/s", "median GB/s", "measurements")


def bandwidth_rows(bandwidth: dict) -> list[tuple[str, ...]]:
    return [(kind, fmt_num(b["gbps"]), fmt_num(b["median_gbps"]), str(b["runs"]))
            for kind, b in bandwidth.items()]


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
