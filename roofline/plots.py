"""Roofline plots (matplotlib, Agg). They read analysis results and saved measurements; they
never time anything.

* ``plot_roofline``: the classic log-log roofline of a device: one horizontal ceiling per
  precision, one diagonal roof per memory level, the layer points of analyses, and measured
  kernel points joined by a line to their predicted twins (the roofline bound at the same
  intensity).
* ``plot_breakdown``: per-layer latency as stacked bars: the compute time W / (P U) and the
  time a memory roof adds beyond it.
* ``plot_llm_precisions``: one LLM's decode step at several precisions on the fp16 roofline,
  the points sliding along the memory roof as the weights shrink.
* ``plot_tokens_vs_batch``: decode tokens/s against batch size, one line per precision.

Every function returns a ``Plot``: the file written (PNG, or SVG with ``fmt="svg"``) and the
data actually drawn, read back from the axes (label -> N x 2 array), which the golden tests
check instead of pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # noqa: E402  (headless, before pyplot)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .device import Device  # noqa: E402
from .model import RooflineResult  # noqa: E402
from .profile_io import get_device  # noqa: E402

__all__ = ["Plot", "KernelPoint", "plot_roofline", "plot_breakdown", "plot_llm_precisions",
           "plot_tokens_vs_batch", "plotted_data", "FORMATS"]

FORMATS = ("png", "svg")
BREAKDOWN_MAX_BARS = 48


@dataclass(frozen=True)
class KernelPoint:
    """A measured kernel: its intensity, the ops/s it reached, and the roofline's bound."""

    name: str
    intensity: float
    measured_ops_s: float
    bound_ops_s: float


@dataclass(frozen=True)
class Plot:
    path: Path | None
    title: str
    xlabel: str
    ylabel: str
    data: Mapping[str, np.ndarray] = field(default_factory=dict)


def plotted_data(ax) -> dict[str, np.ndarray]:
    """label -> N x 2 array of what ``ax`` draws: lines, scatter offsets, bar (x, height)."""
    out: dict[str, np.ndarray] = {}
    for line in ax.get_lines():
        label = line.get_label()
        if not label.startswith("_"):
            out[label] = np.asarray(line.get_xydata(), dtype=float)
    for coll in ax.collections:
        label = coll.get_label()
        if not label.startswith("_"):
            out[label] = np.asarray(coll.get_offsets(), dtype=float)
    for cont in ax.containers:
        label = cont.get_label()
        if label and not label.startswith("_"):
            out[label] = np.array([[r.get_x() + r.get_width() / 2, r.get_height()]
                                   for r in cont.patches], dtype=float)
    return out


def _finish(fig, ax, path, fmt: str, title: str, xlabel: str, ylabel: str) -> Plot:
    if fmt not in FORMATS:
        raise ValueError(f"fmt: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small", loc="best")
    ax.grid(True, which="both", alpha=0.3)
    data = plotted_data(ax)
    out = None
    if path is not None:
        out = Path(path)
        if out.suffix.lower().lstrip(".") not in FORMATS:
            out = out.with_suffix(f".{fmt}")
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format=out.suffix.lstrip(".").lower(), dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Plot(out, title, xlabel, ylabel, data)


def _si(x: float, unit: str) -> str:
    """989.4e12, "OP/s" -> "989.4 TOP/s"."""
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if x >= scale:
            return f"{x / scale:.4g} {prefix}{unit}"
    return f"{x:.4g} {unit}"


def _draw_roofs(ax, device: Device, precisions: Sequence[str], xs: np.ndarray) -> None:
    top = max(device.peak_ops(p) for p in precisions)
    for p in precisions:
        ax.plot(xs, np.full_like(xs, device.peak_ops(p)), "-", lw=1.2,
                label=f"{p} peak {_si(device.peak_ops(p), 'OP/s')}")
    for lv in device.memory:
        ys = np.minimum(xs * lv.bandwidth, top)
        ax.plot(xs, ys, "--", lw=1.2, label=f"{lv.name} {_si(lv.bandwidth, 'B/s')}")


def _x_range(intensities: Iterable[float], device: Device, precisions) -> np.ndarray:
    vals = [x for x in intensities if x > 0]
    ridges = [device.peak_ops(p) / lv.bandwidth for p in precisions for lv in device.memory]
    lo = min(vals + ridges) / 10
    hi = max(vals + ridges) * 10
    return np.logspace(np.log10(lo), np.log10(hi), 200)


def plot_roofline(profile, *, results: RooflineResult | Sequence[RooflineResult] = (),
                  kernels: Sequence[KernelPoint] = (), precisions: Sequence[str] | None = None,
                  path=None, fmt: str = "png", title: str | None = None) -> Plot:
    """The log-log roofline of ``profile`` with layer points and measured kernels.

    Args:
        profile: a ``Device`` or anything ``get_device`` accepts.
        results: analyses whose layers are drawn at (intensity at the outermost level,
            attainable ops/s), one series per analysis.
        kernels: measured kernels: the measured point and its predicted twin (the bound),
            joined by a line.
        precisions: ceilings to draw (default: every precision the device lists).
    """
    device = get_device(profile)
    if isinstance(results, RooflineResult):
        results = (results,)
    precisions = tuple(precisions or device.peak)
    xs_all = [r.intensity for res in results for r in res.layers] + [k.intensity for k in kernels]
    xs = _x_range(xs_all, device, precisions)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.set_xscale("log")
    ax.set_yscale("log")
    _draw_roofs(ax, device, precisions, xs)
    for res in results:
        ax.scatter([r.intensity for r in res.layers], [r.attainable_ops_s for r in res.layers],
                   s=14, alpha=0.8, label=f"{res.workload} layers ({res.precision})")
    if kernels:
        ax.scatter([k.intensity for k in kernels], [k.measured_ops_s for k in kernels],
                   marker="o", s=30, color="black", label="measured kernels", zorder=3)
        ax.scatter([k.intensity for k in kernels], [k.bound_ops_s for k in kernels],
                   marker="x", s=30, color="red", label="roofline bound", zorder=3)
        for k in kernels:
            ax.plot([k.intensity, k.intensity], [k.measured_ops_s, k.bound_ops_s], ":",
                    color="gray", lw=1, label="_join")
    title = title or f"Roofline of {device.name}"
    return _finish(fig, ax, path, fmt, title, "arithmetic intensity (ops/byte, outermost memory)",
                   "performance (ops/s)")


def _groups(result: RooflineResult, group: str | None):
    layers = result.layers
    if group is None:
        group = "layer" if len(layers) <= BREAKDOWN_MAX_BARS else "kind"
    if group == "layer":
        return [(r.layer, r.compute_time_s, r.latency_s) for r in layers]
    if group != "kind":
        raise ValueError(f"group: must be 'layer' or 'kind', got {group!r}")
    acc: dict[str, list[float]] = {}
    for r in layers:  # "layers.3.q_proj" -> "q_proj"
        key = r.layer.rsplit(".", 1)[-1] if "." in r.layer else r.layer
        a = acc.setdefault(key, [0.0, 0.0])
        a[0] += min(r.compute_time_s, r.latency_s)
        a[1] += r.latency_s
    return [(k, v[0], v[1]) for k, v in acc.items()]


def plot_breakdown(result: RooflineResult, *, group: str | None = None, path=None,
                   fmt: str = "png", title: str | None = None) -> Plot:
    """Per-layer latency, stacked: compute time W / (P U), then the time the memory roof
    adds beyond it (zero for compute-bound layers). ``group="kind"`` sums layers by the last
    part of their name (q_proj, ...); the default does so above 48 layers."""
    rows = _groups(result, group)
    names = [n for n, _, _ in rows]
    compute = np.array([c for _, c, _ in rows]) * 1e3
    memory = np.array([t - c for _, c, t in rows]) * 1e3
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(rows) + 2), 5))
    x = np.arange(len(rows))
    ax.bar(x, compute, label="compute time W/(P·U)")
    ax.bar(x, memory, bottom=compute, label="memory-bound time beyond compute")
    ax.set_xticks(x, names, rotation=90, fontsize="x-small")
    title = title or (f"Latency breakdown: {result.workload} on {result.device.name} "
                      f"({result.precision})")
    return _finish(fig, ax, path, fmt, title, "layer", "latency (ms)")


def plot_llm_precisions(profile, model: str = "llama2-7b-decode",
                        precisions: Sequence[str] = ("w16a16", "w8a8", "w4a16"), *,
                        batch: int = 1, context: int = 2048, path=None, fmt: str = "png",
                        title: str | None = None) -> Plot:
    """The decode step at each precision on the fp16 roofline: one point per precision
    (whole step: total ops / total outermost bytes, ops / latency)."""
    from .model import analyze

    device = get_device(profile)
    runs = [analyze(model, device, p, batch=batch, context=context) for p in precisions]
    pts = []
    for r in runs:
        outer = next(iter(r.total.bytes_per_level.values()))
        pts.append((r.total.ops / outer, r.total.ops / r.total.latency_s))
    shown = tuple(p for p in ("fp16", "int8") if p in device.peak) or tuple(device.peak)[:1]
    xs = _x_range([p[0] for p in pts], device, shown)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.set_xscale("log")
    ax.set_yscale("log")
    _draw_roofs(ax, device, shown, xs)
    for prec, (x, y), r in zip(precisions, pts, runs):
        ax.scatter([x], [y], s=40, zorder=3,
                   label=f"{prec}: {r.llm['tokens_per_s']:.0f} tokens/s")
    title = title or f"{model} (batch {batch}, context {context}) on {device.name}"
    return _finish(fig, ax, path, fmt, title, "arithmetic intensity (ops/byte, outermost memory)",
                   "performance (ops/s)")


def plot_tokens_vs_batch(profile, model: str = "llama2-7b-decode",
                         precisions: Sequence[str] = ("w16a16", "w8a8", "w4a16"), *,
                         batches: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128, 256),
                         context: int = 2048, path=None, fmt: str = "png",
                         title: str | None = None) -> Plot:
    """Decode tokens/s (all sequences together) against batch size, one line per precision."""
    from .model import analyze

    device = get_device(profile)
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    for prec in precisions:
        tps = [analyze(model, device, prec, batch=b, context=context).llm["tokens_per_s"]
               for b in batches]
        ax.plot(list(batches), tps, "o-", label=prec)
    title = title or f"{model} decode throughput on {device.name} (context {context})"
    return _finish(fig, ax, path, fmt, title, "batch size (sequences)", "throughput (tokens/s)")
