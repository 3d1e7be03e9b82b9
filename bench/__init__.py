"""lowbit.bench: pytest-benchmark suites (run with ``lowbit bench``, not part of the tests)."""
