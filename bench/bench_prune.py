"""Structured pruning speed (issue 8): the digits CNN against the same CNN with 50% of its
channels removed by L1 filter pruning (``ChannelConfig(0.5)``: conv widths 32/32/64 ->
16/16/32, MACs 906 K -> 232 K per image), fp32 torch forward in eval mode under
``torch.inference_mode``. Groups ``prune-digits-cnn-b1`` (latency, one image) and
``prune-digits-cnn-b256`` (a batch of 256); implementations ``torch-fp32-dense`` and
``torch-fp32-l1-50``. pytest-benchmark reports the median of many rounds.

Latency depends only on the architecture, so the pruned model is not fine-tuned here
(``tools/prune_targets.py`` measures the fine-tuned accuracies alongside). ``extra_info``:
ops = 2 * MACs of the batch (``profile``), bytes = the model's parameter and buffer bytes,
precision fp32, family torch.
"""
from __future__ import annotations

import copy

import pytest
import torch

from lowbit.compress import ChannelConfig, get_model, profile, prune

BATCHES = (1, 256)
ROUNDS = {1: 1000, 256: 30}


def _models() -> dict[str, torch.nn.Module]:
    dense = get_model("digits-cnn").eval()
    pruned = prune(copy.deepcopy(dense), ChannelConfig(0.5, criterion="l1"),
                   example_input=torch.zeros(1, 1, 8, 8)).eval()
    return {"torch-fp32-dense": dense, "torch-fp32-l1-50": pruned}


@pytest.fixture(scope="module")
def models():
    return _models()


@pytest.mark.parametrize("impl", ["torch-fp32-dense", "torch-fp32-l1-50"])
@pytest.mark.parametrize("batch", BATCHES)
def test_prune_digits_cnn(benchmark, request, models, impl, batch):
    model = models[impl]
    x = torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    p = profile(model, x)
    benchmark.group = f"prune-digits-cnn-b{batch}"
    benchmark.extra_info.update({"impl": impl, "family": "torch", "precision": "fp32",
                                 "ops": 2 * p.macs, "bytes": p.bytes, "m": batch,
                                 "n": None, "k": None})

    def forward():
        with torch.inference_mode():
            model(x)

    quick = request.config.getoption("--lowbit-quick", default=False)
    rounds = ROUNDS[batch] // 10 if quick else ROUNDS[batch]
    benchmark.pedantic(forward, rounds=rounds, iterations=1, warmup_rounds=20)
