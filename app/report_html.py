"""The self-contained ``index.html`` of ``lowbit run``: inline CSS, PNG plots as base64 data
URIs, every table; readable from disk without a server (no external src or href)."""
from __future__ import annotations

import base64
import html
from pathlib import Path

from .run_tables import FAILED, StepResult, Table

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:72em;
color:#1b1f24;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #d0d7de}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right}
th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}
.ok{color:#1a7f37}.failed{color:#cf222e;font-weight:bold}
.error{background:#ffebe9;border:1px solid #cf222e;padding:.6em;white-space:pre-wrap}
.note{color:#57606a;font-size:12.5px;max-width:60em}img{max-width:100%;border:1px solid #d0d7de}
"""


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def data_uri(path: Path) -> str:
    """``data:image/png;base64,...`` of a PNG file."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def table_html(t: Table) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in t.headers)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>"
                   for row in t.cells())
    note = f'<p class="note">{_esc(t.note)}</p>' if t.note else ""
    return (f"<h3>{_esc(t.title)}</h3><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>{note}")


def step_html(s: StepResult) -> str:
    parts = [f'<h2 id="{_esc(s.name)}">{_esc(s.title)} '
             f'<span class="{_esc(s.status)}">[{_esc(s.status)}, {s.seconds:.1f} s]</span></h2>']
    if s.error:
        parts.append(f'<div class="error">{_esc(s.error)}</div>')
    parts += [table_html(t) for t in s.tables]
    for caption, path in s.plots.items():
        parts.append(f"<figure><img alt=\"{_esc(caption)}\" src=\"{data_uri(path)}\">"
                     f"<figcaption>{_esc(caption)}</figcaption></figure>")
    parts += [f'<p class="note">{_esc(n)}</p>' for n in s.notes]
    return "\n".join(parts)


def render_html(title: str, summary_rows: list[tuple[str, str]], steps: list[StepResult]) -> str:
    """The whole page: a summary table, then one section per step."""
    summary = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in summary_rows)
    status = "".join(
        f'<tr><td><a href="#{_esc(s.name)}">{_esc(s.title)}</a></td>'
        f'<td class="{_esc(s.status)}">{_esc(s.status)}</td><td>{s.seconds:.1f}</td></tr>'
        for s in steps)
    failed = [s for s in steps if s.status == FAILED]
    banner = (f'<div class="error">{len(failed)} step(s) failed: '
              f'{_esc(", ".join(s.name for s in failed))}</div>' if failed else "")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>\n"
            f"<h1>{_esc(title)}</h1>{banner}<table><tbody>{summary}</tbody></table>\n"
            f"<table><thead><tr><th>step</th><th>status</th><th>seconds</th></tr></thead>"
            f"<tbody>{status}</tbody></table>\n"
            + "\n".join(step_html(s) for s in steps) + "\n</body></html>\n")
