"""Issue 8's pruning targets on the digits test split, with the cached digits CNN and fixed
seeds (deterministic: ``fine_tune`` runs under ``deterministic(seed)`` on one thread):

* 50% unstructured (level) + fine-tune: accuracy drop <= 0.5 pt;
* 2:4 + fine-tune: drop <= 1 pt. The issue's recipe fine-tunes with knowledge distillation;
  ``distill`` is built on another branch, so this is plain fine-tuning (cross entropy);
* 50% L1 channel pruning, physically smaller, + fine-tune: drop <= 2 pt and MACs <= 55% of
  the dense model's. Its latency against the dense model is measured by
  ``bench/bench_prune.py`` and ``tools/prune_targets.py`` (timings are not asserted here).

A few seconds in all (three short fine-tuning runs of the 0.9 M-MAC CNN).
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lowbit.compress import (ChannelConfig, FineTune, LevelConfig, NMConfig, digits_loaders,
                             evaluate, fine_tune, get_model, profile, prune, to_workload)

from prune_helpers import one_thread  # noqa: F401 (autouse fixture)

MAX_DROP_LEVEL50 = 0.005
MAX_DROP_NM24 = 0.01
MAX_DROP_CHANNEL50 = 0.02
MAX_MACS_CHANNEL50 = 0.55

# The recipes (also in tools/prune_targets.py): short fine-tuning, Adam, cosine lr.
FT_LEVEL = FineTune(epochs=2, lr=1e-3)
FT_NM = FineTune(epochs=2, lr=1e-3)
FT_CHANNEL = FineTune(epochs=4, lr=3e-3)


@pytest.fixture(scope="module")
def setup():
    train_loader, test_loader = digits_loaders(seed=0)
    dense = get_model("digits-cnn")
    return dense, train_loader, test_loader, evaluate(dense, test_loader)


def pruned(dense, config, finetune, train_loader, **kw):
    model = copy.deepcopy(dense)
    prune(model, config, **kw)
    fine_tune(model, train_loader, finetune)
    return model


def test_level_50_finetuned(setup):
    dense, train_loader, test_loader, base = setup
    model = pruned(dense, LevelConfig(0.5), FT_LEVEL, train_loader)
    p = profile(model, torch.zeros(1, 1, 8, 8))
    assert all(p.layer(n).sparsity == pytest.approx(0.5, abs=1e-3)
               for n in ("conv1", "conv2", "conv3", "fc"))
    assert base - evaluate(model, test_loader) <= MAX_DROP_LEVEL50


def test_nm_24_finetuned(setup):
    dense, train_loader, test_loader, base = setup
    with pytest.warns(RuntimeWarning, match="conv1"):  # K = 9: stays dense
        model = pruned(dense, NMConfig(2, 4), FT_NM, train_loader)
    kinds = {layer.name: layer.sparsity.kind
             for layer in to_workload(model, torch.zeros(1, 1, 8, 8)).layers}
    assert kinds == {"conv1": "dense", "conv2": "2:4", "conv3": "2:4", "fc": "2:4"}
    assert base - evaluate(model, test_loader) <= MAX_DROP_NM24


def test_channel_l1_50_finetuned_smaller(setup):
    dense, train_loader, test_loader, base = setup
    x = torch.zeros(1, 1, 8, 8)
    model = pruned(dense, ChannelConfig(0.5, criterion="l1"), FT_CHANNEL, train_loader,
                   example_input=x)
    assert all(type(m) in (nn.Conv2d, nn.Linear) for m in (model.conv1, model.conv2,
                                                           model.conv3, model.fc))
    assert (model.conv1.out_channels, model.conv2.out_channels, model.conv3.out_channels) == \
        (16, 16, 32)
    assert profile(model, x).macs <= MAX_MACS_CHANNEL50 * profile(dense, x).macs
    assert base - evaluate(model, test_loader) <= MAX_DROP_CHANNEL50
