"""Threading: concurrent Python callers, changing the thread count, and fork safety.

Concurrent callers exercise the pool's busy-caller fallback (a call that finds the pool
busy runs serially on its own thread) and the scratch buffer's fallback (a caller that
finds the cached packing buffer in use allocates its own).
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

import lowbit.kernels as lk
from lowbit.kernels import Requantize, gemm_int8, pack_weights, ref
from lowbit.kernels.epilogue import prepare

SELECTED = lk.dispatch_info()["gemm_int8"]["selected"]


def _case(seed, m, k, n, dtype=np.int8):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    a = rng.integers(info.min, int(info.max) + 1, size=(m, k), dtype=dtype)
    w = rng.integers(-128, 128, size=(k, n), dtype=np.int8)
    return a, w


@pytest.mark.parametrize("n_threads", [4])
def test_concurrent_callers_exact(n_threads):
    # per thread: a different shape/dtype/zero point; all big enough to want the pool
    # (M N K >= 2^18), some big enough for parallel A packing (M K >= 2^16)
    shapes = [(256, 256, 256, np.int8, 0), (97, 700, 130, np.uint8, 128),
              (300, 260, 70, np.int8, -5), (64, 1100, 200, np.uint8, 0),
              (13, 1000, 640, np.int8, 3), (128, 128, 128, np.uint8, 255)]
    cases = []
    for t in range(n_threads):
        m, k, n, dt, zp = shapes[t % len(shapes)]
        a, w = _case(1000 + t, m, k, n, dt)
        ep = Requantize.from_scale(1e-3, zero_point=t) if t % 2 else None
        want = ref.apply_epilogue(ref.gemm_int8(a, w, zp), prepare(ep, m, n))
        cases.append((a, pack_weights(w), zp, ep, want))

    iters = 6
    barrier = threading.Barrier(n_threads)
    errors: list[str] = []

    def worker(t):
        a, wp, zp, ep, want = cases[t]
        try:
            barrier.wait(timeout=30)
            for it in range(iters):
                got = gemm_int8(a, wp, a_zero_point=zp, epilogue=ep, isa=SELECTED)
                if got.dtype != want.dtype or not np.array_equal(got, want):
                    bad = np.argwhere(got != want)[:4].tolist()
                    errors.append(f"thread {t} iter {it}: mismatches at {bad}")
                    return
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(f"thread {t}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads), "a caller hung"
    assert not errors, errors


def test_concurrent_small_and_large_mixed():
    """Small serial calls interleaved with pooled calls from other threads."""
    big = _case(1, 200, 512, 256)
    small = _case(2, 3, 17, 5)
    wants = [ref.gemm_int8(*big), ref.gemm_int8(*small)]
    packed = [pack_weights(big[1]), pack_weights(small[1])]
    acts = [big[0], small[0]]
    errors: list[str] = []

    def worker(t):
        which = t % 2
        for it in range(20 if which else 4):
            got = gemm_int8(acts[which], packed[which], isa=SELECTED)
            if not np.array_equal(got, wants[which]):
                errors.append(f"thread {t} iter {it}")
                return

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors, errors


def test_set_num_threads_round_trip(assert_exact):
    orig = lk.num_threads()
    assert orig >= 1
    a, w = _case(5, 256, 256, 256)
    wp = pack_weights(w)
    want = ref.gemm_int8(a, w)
    try:
        assert lk.set_num_threads(1) == 1
        assert lk.num_threads() == 1
        assert_exact(gemm_int8(a, wp, isa=SELECTED), want)
        assert lk.set_num_threads(3) == 3
        assert lk.num_threads() == 3
        assert_exact(gemm_int8(a, wp, isa=SELECTED), want)
    finally:
        assert lk.set_num_threads(orig) == orig
    assert lk.num_threads() == orig
    assert_exact(gemm_int8(a, wp, isa=SELECTED), want)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", None])
def test_set_num_threads_rejects(bad):
    orig = lk.num_threads()
    with pytest.raises(ValueError):
        lk.set_num_threads(bad)
    assert lk.num_threads() == orig


def test_default_num_threads_is_affinity():
    if os.environ.get("LOWBIT_NUM_THREADS"):
        pytest.skip("LOWBIT_NUM_THREADS is set")
    assert lk.num_threads() == len(os.sched_getaffinity(0))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_pool_works_after_fork():
    a, w = _case(7, 256, 256, 256)
    wp = pack_weights(w)
    want = ref.gemm_int8(a, w)
    # start the pool's workers in the parent first, so the child inherits a used pool
    assert np.array_equal(gemm_int8(a, wp, isa=SELECTED), want)
    pid = os.fork()
    if pid == 0:  # child: only this thread exists; exit 0 only if the result is exact
        code = 3
        try:
            ok = all(np.array_equal(gemm_int8(a, wp, isa=SELECTED), want) for _ in range(3))
            code = 0 if ok else 1
        except BaseException:  # noqa: BLE001
            code = 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung (thread pool not usable after fork)")
        time.sleep(0.02)
    assert os.WIFEXITED(status), f"child died: status {status}"
    assert os.WEXITSTATUS(status) == 0, {1: "inexact result", 2: "exception"}.get(
        os.WEXITSTATUS(status), os.WEXITSTATUS(status))
    # and the parent's pool still works
    assert np.array_equal(gemm_int8(a, wp, isa=SELECTED), want)
