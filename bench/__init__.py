"""lowbit.bench: pytest-benchmark suites (run with ``lowbit bench``, not part of the tests).

Modules named ``bench_*.py`` hold the benchmarks, so ``pytest tests`` never collects them;
``lowbit bench`` runs them with ``-o python_files=bench_*.py``. ``config`` holds the shapes,
thread count and time budgets, ``impls`` the competing implementations of one GEMM problem.
"""
