"""Exported digits CNN on lowbit's kernels against fp32 torch, one thread (issue 7's "measured
latency reported next to fp32 torch").

Groups ``exported-digits-cnn-b1``, ``-b64`` and ``-b450`` (a batch of that many digits test
images; 450 is the whole test split), implementations:

* ``torch-fp32``: the trained ``DigitsCNN`` (``get_model``), eval mode, NCHW input;
* ``lowbit-int8-static``: ``compress_builtin(..., "int8-static")`` (KL calibration), W8A8 with
  fused requantization between the convolutions (int8 activations pass between layers);
* ``lowbit-int8-dynamic``: ``"int8-dynamic"`` (per-image activation scales, float32 out);
* ``lowbit-int4-weight-only``: ``"int4-weight-only"`` group 32 (conv1, K = 9, stays fp32).

Every model runs under ``torch.inference_mode`` with torch and lowbit pinned to one thread
for the module (restored after). The group's implementations are timed in interleaved
passes (batch -> pass -> implementation), so a vCPU lost for a while slows all of them
alike; ``lowbit bench`` reports the median of the per-pass medians. ``extra_info``: ops = 2 *
MACs of the batch and bytes = the model's stored bytes (``profile``), precision, family.
"""
from __future__ import annotations

import pytest
import torch

from lowbit import kernels
from lowbit.compress import compress_builtin, load_digits_split, profile

BATCHES = (1, 64, 450)
THREADS = 1
RECIPES = {"lowbit-int8-static": ("int8-static", "int8"),
           "lowbit-int8-dynamic": ("int8-dynamic", "int8"),
           "lowbit-int4-weight-only": ("int4-weight-only", "w4a16")}
IMPLS = ("torch-fp32", *RECIPES)
ROUNDS = {1: 200, 64: 30, 450: 8}  # per pass; a tenth (at least 3) with --lowbit-quick


def pytest_generate_tests(metafunc):
    if "pass_no" in metafunc.fixturenames:
        passes = 3 if metafunc.config.getoption("--lowbit-quick") else 5
        cases = [(b, p, impl) for b in BATCHES for p in range(passes) for impl in IMPLS]
        metafunc.parametrize(("batch", "pass_no", "impl"), cases,
                             ids=[f"exported-digits-cnn-b{b}-p{p}-{impl}"
                                  for b, p, impl in cases])


@pytest.fixture(scope="module")
def one_thread():
    saved = torch.get_num_threads(), kernels.num_threads()
    torch.set_num_threads(THREADS)
    kernels.set_num_threads(THREADS)
    yield
    torch.set_num_threads(saved[0])
    kernels.set_num_threads(saved[1])


@pytest.fixture(scope="module")
def models(one_thread):
    out = {}
    for impl, (recipe, precision) in RECIPES.items():
        r = compress_builtin("digits-cnn", recipe, simulate=False)
        out[impl] = (r.exported, precision)
        out["torch-fp32"] = (r.fp32.eval(), "fp32")
    return out


@pytest.fixture(scope="module")
def images():
    return load_digits_split().x_test.contiguous()


def test_exported_digits_cnn(benchmark, request, models, images, batch, pass_no, impl):
    model, precision = models[impl]
    x = images[:batch]
    p = profile(model, x[:1])
    passes = 3 if request.config.getoption("--lowbit-quick") else 5
    benchmark.group = f"exported-digits-cnn-b{batch}"
    benchmark.extra_info.update({
        "impl": impl, "family": "torch" if impl == "torch-fp32" else "lowbit",
        "precision": precision, "ops": 2 * p.macs * batch, "bytes": p.bytes, "m": batch,
        "n": None, "k": None, "threads": THREADS, "pass": pass_no, "passes": passes})

    def forward():
        with torch.inference_mode():
            model(x)

    rounds = ROUNDS[batch]
    if request.config.getoption("--lowbit-quick"):
        rounds = max(3, rounds // 10)
    benchmark.pedantic(forward, rounds=rounds, iterations=1, warmup_rounds=2)
