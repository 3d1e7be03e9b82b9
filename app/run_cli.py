"""The terminal side of ``lowbit run``: rich progress bars over the pipeline's callback, one
line per finished step, and the one-line summary with the report path."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .report import prepare_out_dir
from .run_pipeline import run_pipeline
from .run_report import write_run_report
from .run_tables import FAILED

STEP_TITLES = {"baseline": "fp32 digits CNN", "compress": "compress x5 + measure",
               "bench": "kernel benchmark", "simulate": "simulate NPUs",
               "roofline": "roofline"}


def run_with_progress(out: str, *, quick: bool = False) -> int:
    """Run the pipeline with a progress bar per step; write the report; 0 if every step
    succeeded, else 1."""
    prepare_out_dir(out)  # a bad --out is a one-line error before any bar is drawn
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as bars:
        tasks: dict[str, int] = {}

        def progress(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bars.add_task(STEP_TITLES.get(step, step), total=total)
            bars.update(tasks[step], completed=done, total=total)

        result = run_pipeline(out, quick=quick, progress=progress)
    for s in result.steps:
        mark = "FAILED: " + (s.error or "") if s.status == FAILED else s.status
        console.print(f"  {s.name:<9} {s.seconds:6.1f} s  {mark}", markup=False,
                      highlight=False)
    index = write_run_report(result)
    failed = [s.name for s in result.steps if s.status == FAILED]
    verdict = "all steps ok" if not failed else f"{len(failed)} failed ({', '.join(failed)})"
    print(f"lowbit run: {verdict} in {result.seconds:.0f} s; report: {index}", file=sys.stdout)
    return 1 if failed else 0
