"""A rich progress bar on stderr, fed by a library's ``progress(done, total)`` callback
(``lowbit sweep``, ``lowbit nas``): items done / total, elapsed time and an ETA. CLI only;
the libraries report progress through the callback and never print."""
from __future__ import annotations


class CountBar:
    """``with CountBar("sweep", "points") as bar: run(..., progress=bar)``. The first call
    starts the count at ``done`` (items a resumed run finds finished already)."""

    def __init__(self, label: str, unit: str) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.label = label
        self.progress = Progress(
            TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=Console(stderr=True))
        self.task = None

    def __call__(self, done: int, total: int) -> None:
        if self.task is None:
            self.task = self.progress.add_task(self.label, total=total, completed=done)
        else:
            self.progress.update(self.task, completed=done)

    def __enter__(self) -> "CountBar":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()
