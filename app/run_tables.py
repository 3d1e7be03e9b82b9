"""The records ``lowbit run`` produces: tables, plots and per-step results.

A ``Table`` renders itself as markdown, CSV and JSON-ready dicts; a ``StepResult`` holds one
pipeline step's tables, plots, notes and (when it failed) its error. The page and the
markdown report are built from these records only, so a failed step costs only its own part.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

OK, FAILED = "ok", "failed"


@dataclass
class Table:
    """A titled table; ``name`` is its file stem (``<name>.csv``)."""

    name: str
    title: str
    headers: tuple[str, ...]
    rows: list[tuple] = field(default_factory=list)
    note: str = ""

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.headers):
                raise ValueError(f"table {self.name}: row {row!r} has {len(row)} cells for "
                                 f"{len(self.headers)} headers")

    def cells(self) -> list[list[str]]:
        return [[fmt_cell(v) for v in row] for row in self.rows]

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.headers)
        w.writerows(self.rows)
        return buf.getvalue()

    def to_markdown(self) -> str:
        head = "| " + " | ".join(self.headers) + " |"
        sep = "|" + "|".join("---" for _ in self.headers) + "|"
        body = ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"
                for row in self.cells()]
        return "\n".join([head, sep, *body])

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "headers": list(self.headers),
                "rows": [list(r) for r in self.rows], "note": self.note}


def fmt_cell(v) -> str:
    """Floats to 4 significant digits, None to an empty cell, the rest by ``str``."""
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


@dataclass
class StepResult:
    """One step of the pipeline: what it produced, or why it did not."""

    name: str
    title: str
    status: str = OK
    seconds: float = 0.0
    tables: list[Table] = field(default_factory=list)
    plots: dict[str, Path] = field(default_factory=dict)  # caption -> PNG file
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "status": self.status,
                "seconds": round(self.seconds, 3), "tables": [t.to_dict() for t in self.tables],
                "plots": {k: p.name for k, p in self.plots.items()}, "notes": self.notes,
                "error": self.error}
