"""pytest configuration of the benchmark suite: thread pinning, budgets, machine info.

Threads are pinned before numpy is imported when this conftest is the first to load it (as
under ``lowbit bench``, which also sets the variables in the subprocess environment); the
saved JSON records in ``machine_info["lowbit"]`` whether that worked.
"""
from __future__ import annotations

import os
import sys

from lowbit.bench.config import THREAD_ENV, THREADS, budget_for

_NUMPY_WAS_LOADED = "numpy" in sys.modules
_LOAD_AT_START: list[float] = []  # 1-minute load average when the session starts
for _var in THREAD_ENV:
    os.environ[_var] = str(THREADS)

import pytest  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--lowbit-quick", action="store_true", default=False,
                     help="fewer passes and rounds per benchmark "
                          "(lowbit bench --quick, lowbit run)")


def pytest_configure(config):
    import torch

    from lowbit import kernels

    _LOAD_AT_START[:] = os.getloadavg()
    kernels.set_num_threads(THREADS)
    torch.set_num_threads(THREADS)
    torch.backends.quantized.engine = "x86"


def pytest_collection_modifyitems(session, config, items):
    """Run the ``first`` peak and bandwidth measurements before everything else and the
    ``last`` bandwidth measurement after everything else."""
    first = [item for item in items if item.name.startswith("test_peak[")
             and "-first]" in item.name]
    first += [item for item in items if item.name.startswith("test_bandwidth[")
              and item.name.endswith("first]")]
    last = [item for item in items if item.name.startswith("test_bandwidth[")
            and item.name.endswith("last]")]
    items[:] = first + [item for item in items if item not in first and item not in last] + last


@pytest.fixture(scope="session")
def budget(request):
    return budget_for(request.config.getoption("--lowbit-quick"))


def pytest_benchmark_update_machine_info(config, machine_info):
    import numpy
    import torch

    import lowbit
    from lowbit import kernels

    machine_info["lowbit"] = {
        "version": lowbit.__version__,
        "cpu_features": kernels.cpu_features(),
        "threads": kernels.num_threads(),
        "torch_threads": torch.get_num_threads(),
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "blas_threads_pinned": not _NUMPY_WAS_LOADED,
        "dispatch_info": kernels.dispatch_info(),
        "disabled_isas": os.environ.get("LOWBIT_DISABLE_ISA", ""),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "quantized_engine": torch.backends.quantized.engine,
        "quick": bool(config.getoption("--lowbit-quick")),
        # 1-minute load averages; much above THREADS, other work competed for the CPU
        "loadavg_start": _LOAD_AT_START[0] if _LOAD_AT_START else None,
        "loadavg_end": os.getloadavg()[0],
    }
