"""Shared fixtures and helpers for the lowbit test suite.

* ``isa``: any test that takes an argument named ``isa`` (and does not parametrize it
  itself) is parametrized over every gemm_int8 ISA usable on this machine, as the
  registry reports them (ids = ISA names).
  It is a direct parametrization, not a fixture, so it also works under hypothesis.
* ``assert_exact``: session fixture returning ``assert_exact(got, want)``, an exact
  comparison whose failure lists the first mismatches as ``(i, j, got, want)``.
* ``raises_naming(exc, name)``: ``pytest.raises`` whose message must name the argument
  ``name`` the way the library does (``name: ...``, ``name, other: ...`` or quoted).
"""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
from hypothesis import settings

import lowbit.kernels as lk

# Hypothesis: tests set max_examples themselves; deadline off (the first Numba call compiles).
# HYPOTHESIS_PROFILE=ci makes generation deterministic and skips the example database.
settings.register_profile("lowbit", deadline=None, print_blob=True)
settings.register_profile("ci", deadline=None, print_blob=True, derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "lowbit"))

GEMM_ISAS: list[str] = [k.key.isa for k in lk.REGISTRY.kernels("gemm_int8", "s8", "int8",
                                                                 usable=True)]
assert GEMM_ISAS, "the registry reports no usable gemm_int8 kernel"


def _explicitly_parametrized(metafunc, name: str) -> bool:
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if isinstance(names, str):
            names = [s.strip() for s in names.split(",")]
        if name in names:
            return True
    return False


def pytest_generate_tests(metafunc):
    if "isa" in metafunc.fixturenames and not _explicitly_parametrized(metafunc, "isa"):
        metafunc.parametrize("isa", GEMM_ISAS, ids=GEMM_ISAS)


def _assert_exact(got, want, max_report: int = 8) -> None:
    """Exact equality of shape, dtype and values; on mismatch report (i, j, got, want)."""
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"shape: got {got.shape}, want {want.shape}"
    assert got.dtype == want.dtype, f"dtype: got {got.dtype}, want {want.dtype}"
    bad = np.argwhere(got != want)
    if bad.size:
        first = [(*map(int, idx), got[tuple(idx)].item(), want[tuple(idx)].item())
                 for idx in bad[:max_report]]
        pytest.fail(f"{len(bad)} of {got.size} elements differ; first (i, j, got, want): {first}",
                    pytrace=False)


@pytest.fixture(scope="session")
def assert_exact():
    return _assert_exact


def name_pattern(name: str) -> str:
    """Regex: the message names ``name`` as an argument/field (``name:``/``name,`` or quoted)."""
    n = re.escape(name)
    return rf"(?<![\w.]){n}(?=\s*[:,])|'{n}'|`{n}`"


def _raises_naming(exc, name: str):
    return pytest.raises(exc, match=name_pattern(name))


@pytest.fixture(scope="session")
def raises_naming():
    return _raises_naming
