"""CSV export of a results database: one row per point, or one row per point and layer.

Point rows carry every ``points`` column except ``point_json``, plus ``pareto`` (1 if the point
is in its group's Pareto set, 0 if not, empty when infeasible; see ``lowbit.sweep.pareto``).
Layer rows carry the point's labels (``LAYER_LABELS``) and every ``layers`` column.
"""
from __future__ import annotations

import csv
import io
from typing import Mapping, Sequence, TextIO

from .columns import LAYER_COLUMNS, POINT_COLUMNS, names
from .pareto import pareto_flags

__all__ = ["POINT_CSV_COLUMNS", "LAYER_CSV_COLUMNS", "LAYER_LABELS", "points_csv", "layers_csv"]

POINT_CSV_COLUMNS = tuple(c for c in names(POINT_COLUMNS) if c != "point_json") + ("pareto",)
LAYER_LABELS = ("profile", "overrides", "workload", "precision", "dataflow", "weight_sparsity",
                "convention", "rows", "cols", "pe_count", "sram_bytes")
LAYER_CSV_COLUMNS = ("point_hash",) + LAYER_LABELS + tuple(
    c for c in names(LAYER_COLUMNS) if c != "point_hash")


def _write(out: TextIO, columns: Sequence[str], rows) -> int:
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    n = 0
    for row in rows:
        writer.writerow(row)
        n += 1
    return n


def points_csv(points: Sequence[Mapping], out: TextIO | None = None) -> str | int:
    """Write point rows (``SweepDB.points()``) as CSV to ``out``; returns the row count, or
    the CSV text when ``out`` is None."""
    flags = pareto_flags(points)
    rows = ({**p, "pareto": "" if not p["feasible"] else int(flags[p["point_hash"]])}
            for p in points)
    return _emit(out, POINT_CSV_COLUMNS, rows)


def layers_csv(points: Sequence[Mapping], layers: Sequence[Mapping],
               out: TextIO | None = None) -> str | int:
    """Write layer rows (``SweepDB.layers()``) with their point's labels as CSV."""
    by_hash = {p["point_hash"]: p for p in points}
    rows = ({**{k: by_hash[r["point_hash"]][k] for k in LAYER_LABELS}, **r} for r in layers)
    return _emit(out, LAYER_CSV_COLUMNS, rows)


def _emit(out, columns, rows):
    if out is None:
        buf = io.StringIO()
        _write(buf, columns, rows)
        return buf.getvalue()
    return _write(out, columns, rows)
