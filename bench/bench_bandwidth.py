"""DRAM read bandwidth (group ``bandwidth``): a STREAM-like read of a 1 GiB buffer by both
cores (lowbit.kernels.peak.run_read), the ceiling of the DRAM-bound int4 GEMV targets.

Measured at the start of the session and at its end (conftest orders them), like the peak
loops: interference only lowers a bandwidth, so the report takes the best run of both.
"""
from __future__ import annotations

import functools

import pytest

from lowbit.bench.config import BANDWIDTH_BYTES, BANDWIDTH_GROUP, BANDWIDTH_KIND, PEAK_WHEN
from lowbit.kernels import cpu_features, num_threads
from lowbit.kernels.peak import read_bandwidth_buffer, run_read


@functools.lru_cache(maxsize=1)
def _buffer():
    return read_bandwidth_buffer(BANDWIDTH_BYTES)


@pytest.mark.parametrize("when", PEAK_WHEN)
def test_bandwidth(benchmark, budget, when):
    buf = _buffer()
    run_read(buf)  # warm-up
    feats = set(cpu_features())
    benchmark.group = BANDWIDTH_GROUP
    benchmark.extra_info.update({
        "impl": BANDWIDTH_KIND, "family": "bandwidth", "precision": "bytes", "ops": 0,
        "bytes": buf.nbytes, "when": when, "threads": num_threads(),
        "isa": "avx512" if "avx512f" in feats else "avx2" if "avx2" in feats else "portable"})
    benchmark.pedantic(run_read, args=(buf,), rounds=2 * budget.peak_rounds, iterations=1,
                       warmup_rounds=0)
    median = benchmark.stats.stats.median
    benchmark.extra_info["gbps"] = buf.nbytes / median / 1e9 if median > 0 else None
