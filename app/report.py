"""The report folder of ``lowbit run``: report.md, report.json and the raw benchmark JSON.

Everything is derived from one saved pytest-benchmark JSON dict (its ``machine_info`` holds
the lowbit section written by lowbit.bench's conftest), so a report can be rebuilt from the
raw file without timing anything.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import lowbit

from . import benchtable, targets

REPORT_MD, REPORT_JSON, BENCH_JSON, BENCH_LOG = ("report.md", "report.json", "benchmark.json",
                                                 "bench.log")


def prepare_out_dir(path: str | Path) -> Path:
    """Create the report folder (and parents); refuse a path that is not a folder."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: {out} exists and is not a directory; pass a folder path")
    out.mkdir(parents=True, exist_ok=True)
    return out


def machine(data: dict) -> dict:
    info = data.get("machine_info", {})
    lb = info.get("lowbit", {})
    return {"cpu": info.get("cpu", {}).get("brand_raw") or info.get("processor") or "unknown",
            "cpu_features": lb.get("cpu_features", []),
            "threads": {"lowbit": lb.get("threads"), "torch": lb.get("torch_threads"),
                        "openblas": lb.get("blas_threads"),
                        "openblas_pinned": lb.get("blas_threads_pinned")},
            "dispatch_info": lb.get("dispatch_info", {}),
            "disabled_isas": lb.get("disabled_isas", ""),
            "versions": {"lowbit": lb.get("version"), "torch": lb.get("torch"),
                         "numpy": lb.get("numpy"), "python": info.get("python_version")},
            "quick": lb.get("quick"),
            "loadavg": {"start": lb.get("loadavg_start"), "end": lb.get("loadavg_end")}}


def build_report(data: dict) -> dict:
    summary = benchtable.summarize(data)
    return {"lowbit_version": lowbit.__version__, "created": data.get("datetime"),
            "machine": machine(data), "peaks": summary["peaks"],
            "bandwidth": summary["bandwidth"], "groups": summary["groups"],
            "targets": targets.evaluate(summary),
            "spmm_csr_crossover": targets.csr_crossover(summary),
            "files": {"benchmark_json": BENCH_JSON}}


def _machine_rows(m: dict) -> list[tuple[str, str]]:
    t = m["threads"]
    rows = [("cpu", m["cpu"]), ("cpu features", " ".join(m["cpu_features"]) or "unknown"),
            ("threads", f"lowbit {t['lowbit']}, torch {t['torch']}, OpenBLAS {t['openblas']}"
                        + ("" if t["openblas_pinned"] in (True, None) else " (not pinned)"))]
    for op, d in m["dispatch_info"].items():
        rows.append((op, f"selected {d['selected']}; available {', '.join(d['available'])}"))
    if m["disabled_isas"]:
        rows.append(("LOWBIT_DISABLE_ISA", m["disabled_isas"]))
    v = m["versions"]
    rows.append(("versions", ", ".join(f"{k} {val}" for k, val in v.items() if val)))
    rows.append(("mode", "quick" if m["quick"] else "full"))
    load = m["loadavg"]
    if load["start"] is not None:
        rows.append(("load average", f"{load['start']:.2f} at start, {load['end']:.2f} at end "
                                     f"(1 min; this run alone makes about {t['lowbit']})"))
    return rows


def render(report: dict, *, markdown: bool = False, machine_section: bool = True) -> str:
    """The whole report as markdown (report.md) or as plain text for the terminal."""
    def heading(title: str, level: int = 2) -> str:
        return f"{'#' * level} {title}" if markdown else f"== {title} =="

    def table(headers, rows, align=None) -> str:
        return benchtable.render(headers, rows, markdown=markdown, align=align)

    parts = []
    if markdown:
        parts.append(f"# lowbit report\n\nlowbit {report['lowbit_version']}, run of "
                     f"{report['created'] or 'unknown date'}; raw pytest-benchmark data in "
                     f"`{report['files']['benchmark_json']}`. Each group is timed in "
                     "interleaved passes; GOP/s from each median of per-pass medians, % of "
                     "peak against the best run of the matching peak loop, ratios within a "
                     "pass.")
    if machine_section:
        rows = _machine_rows(report["machine"])
        if markdown:
            parts += [heading("Machine"), table(("item", "value"), rows, align="ll")]
        else:
            width = max(len(key) for key, _ in rows)
            parts += [heading("Machine"), "\n".join(f"{k + ':':{width + 1}} {v}" for k, v in rows)]
    if report["peaks"]:
        parts += [heading("peak"), table(benchtable.PEAK_HEADERS,
                                         benchtable.peak_rows(report["peaks"]))]
    if report.get("bandwidth"):
        parts += [heading("bandwidth"), table(benchtable.BANDWIDTH_HEADERS,
                                              benchtable.bandwidth_rows(report["bandwidth"]))]
    for g in report["groups"]:
        # the work of the group's own kernels (baselines may count differently: the dense
        # baseline of a 2:4 group counts the zeros, a read counts no ops)
        ops = next((r["ops"] for r in g["rows"] if r["family"] == "lowbit"), g["rows"][0]["ops"])
        if g["m"] is None:  # not a GEMM (e.g. the simulator): no shape, no GOP/s or peak
            keep = [0, 1, 4, 5, 6]
            parts += [heading(g["name"]),
                      table([benchtable.GROUP_HEADERS[i] for i in keep],
                            [[row[i] for i in keep] for row in benchtable.group_rows(g)])]
            continue
        parts += [heading(f"{g['name']}  (M={g['m']} N={g['n']} K={g['k']}, "
                          f"{ops / 1e9:.3g} GOP per call)"),
                  table(benchtable.GROUP_HEADERS, benchtable.group_rows(g))]
    if report["groups"]:
        passes = max(g["passes"] for g in report["groups"])
        parts.append(textwrap.fill(f"{benchtable.GROUP_NOTE} Passes per group: {passes}.", 96))
    if any((r["peak_fraction"] or 0) > 1 for g in report["groups"] for r in g["rows"]):
        parts.append("Note: some rates exceed the measured peak, so the peak loops ran while "
                     "the machine was busy; the % of peak figures are unreliable, rerun.")
    parts += [heading("targets"), table(targets.TARGET_HEADERS,
                                        targets.target_rows(report["targets"]),
                                        align=targets.TARGET_ALIGN),
              textwrap.fill(targets.TARGET_NOTE, 96)]
    crossover = targets.crossover_text(report.get("spmm_csr_crossover") or {"densities": []})
    if crossover:
        parts.append(textwrap.fill(crossover, 96))
    return "\n\n".join(parts) + "\n"


def write_report(out_dir: str | Path, data: dict) -> dict:
    """Write report.md, report.json and benchmark.json into ``out_dir``; returns the report."""
    out = prepare_out_dir(out_dir)
    report = build_report(data)
    (out / BENCH_JSON).write_text(json.dumps(data, indent=1) + "\n")
    (out / REPORT_JSON).write_text(json.dumps(report, indent=1) + "\n")
    (out / REPORT_MD).write_text(render(report, markdown=True))
    return report
