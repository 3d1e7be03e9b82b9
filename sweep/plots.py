"""Pareto plots of a sweep (matplotlib's Agg canvas, PNG): they read the database, never time
or simulate anything.

One figure per Pareto group (``lowbit.sweep.pareto``), three panels sharing the latency axis:
energy, PE count and SRAM bytes against latency; every feasible point drawn, coloured by PE
count, and the Pareto set (over all four objectives) ringed in red. A Pareto point need not
look optimal in one 2-D panel: it may win on an objective another panel shows.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

from .pareto import ParetoGroup, pareto_groups, plot_data

__all__ = ["ParetoPlot", "PANELS", "plot_group", "plot_pareto"]

# (panel name, y key of plot_data, y label); x is always latency
PANELS = (("energy", "energy_mj", "energy (mJ)"),
          ("pe_count", "pe_count", "PE count (rows x cols)"),
          ("sram_bytes", "sram_bytes", "on-chip SRAM (KiB)"))
MAX_DISCRETE_TICKS = 10


@dataclass(frozen=True)
class ParetoPlot:
    """A written figure and the data read back from its axes: panel -> {"points": N x 2,
    "pareto": M x 2} (x = latency in ms), for tests that check data, not pixels."""

    path: Path
    title: str
    data: Mapping[str, Mapping[str, np.ndarray]]


def plot_group(group: ParetoGroup, path: str | os.PathLike) -> ParetoPlot:
    """Draw one group's Pareto figure to ``path`` (PNG)."""
    d = plot_data(group)
    x = np.asarray(d["latency_ms"], dtype=float)
    pareto = np.asarray(d["pareto"], dtype=bool)
    pes = np.asarray(d["pe_count"], dtype=float)
    fig = Figure(figsize=(15, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(PANELS))
    drawn: dict[str, dict[str, np.ndarray]] = {}
    norm = LogNorm(vmin=pes.min(), vmax=max(pes.max(), pes.min() * 1.01)) if len(pes) else None
    for ax, (name, key, ylabel) in zip(axes, PANELS):
        y = np.asarray(d[key], dtype=float)
        pts = ax.scatter(x, y, c=pes, cmap="viridis", norm=norm, s=18, alpha=0.8,
                         label=f"feasible points ({len(x)})")
        front = ax.scatter(x[pareto], y[pareto], s=80, facecolors="none", edgecolors="red",
                           linewidths=1.5, label=f"Pareto set ({int(pareto.sum())})")
        drawn[name] = {"points": np.asarray(pts.get_offsets(), dtype=float).reshape(-1, 2),
                       "pareto": np.asarray(front.get_offsets(), dtype=float).reshape(-1, 2)}
        if len(x):
            ax.set_xscale("log")
            ax.set_yscale("log")
            _ticks(ax.xaxis, x)
            _ticks(ax.yaxis, y, discrete=name != "energy",
                   unit=1024.0 if name == "sram_bytes" else 1.0)
        ax.set_xlabel("latency (ms), simulator")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    if len(x):
        fig.colorbar(axes[-1].collections[0], ax=axes, label="PE count")
    note = f"; {d['infeasible']} infeasible point(s) not drawn" if d["infeasible"] else ""
    fig.suptitle(f"{d['title']}: latency vs energy vs silicon cost (Pareto set over all four)"
                 f"{note}")
    path = Path(path)
    fig.savefig(path, format="png", dpi=110)
    return ParetoPlot(path, d["title"], drawn)


def _ticks(axis, values: np.ndarray, *, discrete: bool = False, unit: float = 1.0) -> None:
    """Readable log ticks in plain numbers (labels divided by ``unit``): the values themselves
    for a few discrete sizes (PEs, SRAM), else 1-2-5 steps."""
    distinct = np.unique(values)
    if discrete and len(distinct) <= MAX_DISCRETE_TICKS:
        axis.set_major_locator(FixedLocator(distinct))
    else:
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / unit:g}"))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def plot_pareto(rows, out_dir: str | os.PathLike) -> list[ParetoPlot]:
    """One PNG per Pareto group of the point rows (``SweepDB.points()``) in ``out_dir``
    (created), named ``pareto-<workload>-<precision>[-<sparsity>][-<convention>].png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = pareto_groups(rows)
    names: dict[str, int] = {}
    plots = []
    for g in groups:
        parts = [g.workload, g.precision]
        parts += [x for x, default in ((g.weight_sparsity, "as-is"), (g.convention, "lowbit"))
                  if x != default]
        stem = "pareto-" + "-".join(_slug(p) for p in parts)
        names[stem] = names.get(stem, 0) + 1
        if names[stem] > 1:  # two workloads of one name (different files)
            stem += f"-{g.workload_hash[:8]}"
        plots.append(plot_group(g, out / f"{stem}.png"))
    return plots
