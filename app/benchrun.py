"""Runs the lowbit.bench suite in a pytest subprocess and loads the JSON it saves.

A subprocess keeps the thread settings (set in its environment before numpy loads) and
pytest's state out of the calling process. The peak group always runs, whatever ``-k``
says: it is the reference of every "% of peak".
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

from lowbit.bench.config import PEAK_GROUP, THREAD_ENV, THREADS


class BenchError(RuntimeError):
    """The benchmark run failed or selected nothing."""


def bench_dir() -> Path:
    """Folder of the installed ``lowbit.bench`` package (bench/ in an editable install)."""
    import lowbit.bench

    return Path(lowbit.bench.__file__).resolve().parent


def pytest_command(json_path: str | Path | None, *, quick: bool = False,
                   keyword: str | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    where = str(bench_dir())
    cmd = [sys.executable, "-m", "pytest", where, "--rootdir", where,
           "-o", "python_files=bench_*.py", "-p", "no:cacheprovider",
           "--import-mode=importlib", "-q"]
    if json_path is not None:
        cmd += ["--benchmark-json", str(Path(json_path).resolve())]
    if quick:
        cmd.append("--lowbit-quick")
    if keyword:
        cmd += ["-k", f"({keyword}) or {PEAK_GROUP}"]
    return cmd + list(extra)


def bench_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({var: str(THREADS) for var in THREAD_ENV})
    return env


_PERCENT = re.compile(rb"\[\s*(\d+)%\]")  # pytest -q's "[ 42%]" at each line end
POLL_SECONDS = 0.5


def _percent_done(log_path: Path) -> int | None:
    """The last progress percentage pytest wrote to its log, or None before the first."""
    found = _PERCENT.findall(log_path.read_bytes()[-4096:])
    return int(found[-1]) if found else None


def run_benchmarks(json_path: str | Path, log_path: str | Path, *, quick: bool = False,
                   keyword: str | None = None,
                   progress: Callable[[int], None] | None = None) -> dict:
    """Run the suite, pytest's output going to ``log_path``; returns the saved JSON dict.
    ``progress(percent)`` is called as pytest reports progress (read from its log)."""
    json_path, log_path = Path(json_path), Path(log_path)
    cmd = pytest_command(json_path, quick=quick, keyword=keyword)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=bench_env())
        try:
            while True:
                try:
                    rc = proc.wait(timeout=POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    done = _percent_done(log_path) if progress is not None else None
                    if done is not None:
                        progress(done)
        except BaseException:  # Ctrl-C or a failing callback: never leave pytest running
            proc.kill()
            proc.wait()
            raise
    if rc == 5:
        raise BenchError(f"no benchmark matched -k {keyword!r} (see {log_path})")
    if rc != 0:
        raise BenchError(f"the benchmark run failed (pytest exit code {rc}); "
                         f"its output is in {log_path}")
    if not json_path.is_file():
        raise BenchError(f"pytest-benchmark wrote no JSON to {json_path}; see {log_path}")
    data = json.loads(json_path.read_text())
    if keyword and all(b.get("group") == PEAK_GROUP for b in data.get("benchmarks", [])):
        raise BenchError(f"no benchmark matched -k {keyword!r}; only the peak loops ran "
                         f"(see {log_path})")
    return data
