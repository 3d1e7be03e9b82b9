"""Pareto plots of searches, read from the search database (matplotlib, Agg backend).

One PNG: every candidate a search evaluated (quality vs simulated latency), its Pareto front
as a step line through the non-dominated points (accuracy vs latency), one colour per search.
Nothing here evaluates or times anything.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from .db import NASDB
from .search import front_rows

__all__ = ["plot_searches"]


def plot_searches(db: str | os.PathLike, path: str | os.PathLike,
                  search_ids: Sequence[int] | None = None) -> Path:
    """Plot the searches ``search_ids`` (default: every search in ``db``) into ``path``.

    The searches must share an evaluator (one y axis: validation accuracy, or the NASWOT
    score). The front is taken on accuracy and latency, whatever objectives the search used.
    Returns the PNG path.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    with NASDB(db, create=False) as store:
        searches = store.searches()
        if search_ids is not None:
            known = {s["search_id"] for s in searches}
            missing = [i for i in search_ids if i not in known]
            if missing:
                raise ValueError(f"search: no search {missing[0]} in {db}; it has "
                                 f"{sorted(known) or 'none'}")
            searches = [s for s in searches if s["search_id"] in set(search_ids)]
        data = [(s, store.trials(s["search_id"])) for s in searches]
    data = [(s, rows) for s, rows in data if rows]
    if not data:
        raise ValueError(f"{db}: no evaluated candidates to plot")
    kinds = {rows[0]["val_accuracy"] is None for _, rows in data}
    if len(kinds) > 1:
        raise ValueError("search: the searches mix the training and the proxy evaluator; "
                         "plot them separately (--search ID)")
    proxy = kinds.pop()
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    for i, (s, rows) in enumerate(data):
        colour = f"C{i % 10}"
        ok = [r for r in rows if r["feasible"]]
        label = f"#{s['search_id']} {s['strategy']} (seed {s['seed']}, {len(rows)} candidates)"
        ax.scatter([r["latency_s"] * 1e6 for r in ok], [r["quality"] for r in ok], s=14,
                   alpha=0.35, color=colour)
        front = front_rows(ok, ("accuracy", "latency"))
        ax.step([r["latency_s"] * 1e6 for r in front], [r["quality"] for r in front],
                where="post", color=colour, marker="o", markersize=5, label=label)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.set_xlabel("latency (us), batch 1")
    ax.set_ylabel("NASWOT score (zero-cost proxy)" if proxy else "validation accuracy "
                  "(integer model)")
    spaces = sorted({s["space"] for s, _ in data})
    hardware = sorted({f"{st['profile']} {st['cost']}"
                       for st in (json.loads(s["settings"]) for s, _ in data)})
    ax.set_title(f"lowbit nas: {', '.join(spaces)} on {', '.join(hardware)}\n"
                 f"Pareto fronts (lines)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
