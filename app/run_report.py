"""Writes the ``lowbit run`` folder: index.html, report.md, run.json and one CSV per table
(the PNG plots are written by the steps themselves)."""
from __future__ import annotations

import json
import os
import platform
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import lowbit
from lowbit import kernels

from .report_html import render_html
from .run_pipeline import RunResult
from .run_tables import FAILED

INDEX_HTML, REPORT_MD, RUN_JSON = "index.html", "report.md", "run.json"


def summary_rows(result: RunResult) -> list[tuple[str, str]]:
    failed = [s.name for s in result.steps if s.status == FAILED]
    return [("lowbit", lowbit.__version__),
            ("date", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
            ("machine", f"{platform.machine()}, {os.cpu_count()} CPUs "
                        f"({' '.join(kernels.cpu_features()) or 'features unknown'}), "
                        f"python {platform.python_version()}"),
            ("mode", "quick (--quick)" if result.quick else "full"),
            ("wall time", f"{result.seconds:.1f} s"),
            ("status", "all steps ok" if not failed else f"failed: {', '.join(failed)}")]


def render_markdown(result: RunResult) -> str:
    parts = ["# lowbit run report", "| item | value |\n|---|---|\n" + "\n".join(
        f"| {k} | {v} |" for k, v in summary_rows(result))]
    for s in result.steps:
        parts.append(f"## {s.title} [{s.status}, {s.seconds:.1f} s]")
        if s.error:
            parts.append(f"**Error:** `{s.error}`")
        for t in s.tables:
            parts += [f"### {t.title}", t.to_markdown()]
            if t.note:
                parts.append(textwrap.fill(t.note, 96))
        parts += [f"![{caption}]({path.name})" for caption, path in s.plots.items()]
        parts += [textwrap.fill(n, 96) for n in s.notes]
    return "\n\n".join(parts) + "\n"


def write_run_report(result: RunResult) -> Path:
    """Write index.html, report.md, run.json and ``<table>.csv`` into ``result.out``;
    returns the index.html path."""
    out = result.out
    for s in result.steps:
        for t in s.tables:
            (out / f"{t.name}.csv").write_text(t.to_csv())
    (out / RUN_JSON).write_text(json.dumps(
        {"summary": dict(summary_rows(result)), "steps": [s.to_dict() for s in result.steps]},
        indent=1, default=str) + "\n")
    (out / REPORT_MD).write_text(render_markdown(result))
    index = out / INDEX_HTML
    index.write_text(render_html("lowbit run report", summary_rows(result), result.steps))
    return index
