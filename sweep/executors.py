"""Where points run: in the calling process, a local process pool, or a Dask cluster.

Every executor maps a function over tasks and yields results as they finish (any order),
keeping a bounded number of tasks in flight so that memory stays flat and an interrupted
sweep has little work under way. Results come back to the caller, which alone writes the
database.

* ``local`` (default): ``workers`` processes (``concurrent.futures.ProcessPoolExecutor``,
  spawned, not forked: the caller may run threads, e.g. a progress bar); ``workers = 1`` runs
  in the calling process.
* ``dask://HOST:PORT``: the Dask distributed scheduler at tcp://HOST:PORT; its workers need
  lowbit installed (``pip install "lowbit[dask]"``). Dask is imported only here.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import re
import threading
import time
from typing import Any, Callable, Iterable, Iterator

__all__ = ["Executor", "InProcess", "LocalPool", "DaskExecutor", "make_executor",
           "parse_executor", "default_workers"]

_DASK = re.compile(r"^dask://(?P<host>[^/:]+|\[[0-9a-fA-F:]+\]):(?P<port>\d+)/?$")
WINDOW_PER_WORKER = 4   # tasks in flight per worker (keeps workers busy between results)
PARENT_POLL_S = 0.5     # how often a local worker checks that the sweep process is alive
_END = object()


def default_workers() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parse_executor(text: str) -> tuple[str, str | None]:
    """``"local"`` -> ("local", None); ``"dask://HOST:PORT"`` -> ("dask", "tcp://HOST:PORT")."""
    if text == "local":
        return "local", None
    m = _DASK.match(text)
    if m:
        return "dask", f"tcp://{m['host']}:{m['port']}"
    raise ValueError(f"executor: must be 'local' or 'dask://HOST:PORT', got {text!r}")


class Executor:
    """Base: ``imap_unordered(fn, tasks)`` yields ``fn(task)`` results as they finish."""

    name = "executor"
    workers: int | None = None

    def imap_unordered(self, fn: Callable, tasks: Iterable) -> Iterator[Any]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the workers (pending tasks are cancelled)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InProcess(Executor):
    """Runs every task in the calling process, in order."""

    name = "local"
    workers = 1

    def imap_unordered(self, fn, tasks):
        for task in tasks:
            yield fn(task)


def _windowed(submit, completions, tasks: Iterable, window: int) -> Iterator[Any]:
    """At most ``window`` futures in flight; yields results as they complete; a worker's
    exception is re-raised here; on exit (done, error or generator closed) cancels the rest.

    ``completions`` collects futures (``add``) and hands back finished ones (``pop``, blocks).
    """
    it = iter(tasks)
    pending = set()
    try:
        for task in it:
            fut = submit(task)
            pending.add(fut)
            completions.add(fut)
            if len(pending) >= window:
                break
        while pending:
            fut = completions.pop()
            pending.discard(fut)
            result = fut.result()
            task = next(it, _END)
            if task is not _END:
                new = submit(task)
                pending.add(new)
                completions.add(new)
            yield result
    finally:
        for fut in pending:
            fut.cancel()


class _FuturesCompletions:
    """``concurrent.futures`` futures handed back as they finish."""

    def __init__(self) -> None:
        self.waiting: set = set()
        self.done: list = []

    def add(self, fut) -> None:
        self.waiting.add(fut)

    def pop(self):
        if not self.done:
            done, rest = cf.wait(self.waiting, return_when=cf.FIRST_COMPLETED)
            self.done, self.waiting = list(done), set(rest)
        return self.done.pop()


class _DaskCompletions:
    """Dask futures handed back as they finish (``as_completed`` on the client's own loop:
    the client is not registered as the default one)."""

    def __init__(self, loop) -> None:
        from distributed import as_completed

        self.queue = as_completed(loop=loop)

    def add(self, fut) -> None:
        self.queue.add(fut)

    def pop(self):
        return next(self.queue)


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: leave when the parent is gone. A parent killed by SIGKILL cannot
    shut its pool down, and the workers would otherwise wait for tasks forever."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="lowbit-sweep-parent-watch", daemon=True).start()


class LocalPool(Executor):
    """``workers`` spawned processes on this machine (each exits if this process dies)."""

    name = "local"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool = cf.ProcessPoolExecutor(max_workers=workers,
                                           mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_exit_with_parent,
                                           initargs=(os.getpid(),))

    def imap_unordered(self, fn, tasks):
        return _windowed(lambda t: self.pool.submit(fn, t), _FuturesCompletions(), tasks,
                         WINDOW_PER_WORKER * self.workers)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor(Executor):
    """The Dask distributed scheduler at ``address`` (``tcp://HOST:PORT``)."""

    name = "dask"

    def __init__(self, address: str, *, timeout: float = 10.0) -> None:
        try:
            from distributed import Client
        except ImportError as exc:
            raise ImportError("the dask executor needs dask and distributed: "
                              'pip install "lowbit[dask]"') from exc
        try:
            self.client = Client(address, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"executor: cannot reach the Dask scheduler at {address}: "
                                  f"{exc}") from exc
        self.address = address
        self.workers = sum(self.client.nthreads().values()) or None

    def imap_unordered(self, fn, tasks):
        window = WINDOW_PER_WORKER * max(self.workers or 1, 4)
        return _windowed(lambda t: self.client.submit(fn, t, pure=False),
                         _DaskCompletions(self.client.loop), tasks, window)

    def close(self) -> None:
        self.client.close()


def make_executor(executor: str = "local", workers: int | None = None) -> Executor:
    """An executor from its name (``parse_executor``); ``workers`` is for ``local`` only
    (default: ``default_workers()``)."""
    kind, address = parse_executor(executor)
    if kind == "dask":
        if workers is not None:
            raise ValueError("workers: applies to the local executor; a Dask cluster has its "
                             "own workers")
        return DaskExecutor(address)
    if workers is None:
        workers = default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: must be a positive integer, got {workers!r}")
    return InProcess() if workers == 1 else LocalPool(workers)
