"""Measure issue 8's pruning targets on the digits CNN and print one table.

    python tools/prune_targets.py [--runs 2000] [--threads 1]

Rows: the dense model, 50% level + fine-tune, 2:4 + fine-tune (plain fine-tuning: the
issue's KD recipe needs ``distill``, built elsewhere), 50% L1 channel pruning + fine-tune.
Columns: test accuracy (450 images) before and after fine-tuning, params, MACs per image
(``profile``) and the fp32 torch latency of the model as it stands, batch 1 and batch 256:
the median of ``--runs`` timed forward calls (``torch.inference_mode``, eval mode, after
50 warm-up calls), on ``--threads`` intra-op threads. Masked layers run dense (W * mask):
unstructured and 2:4 sparsity do not speed up torch's dense kernels; only the structured
model is smaller. The recipes are the ones ``tests/test_compress_prune_targets.py`` checks.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch

from lowbit.compress import (ChannelConfig, FineTune, LevelConfig, NMConfig, digits_loaders,
                             evaluate, fine_tune, get_model, profile, prune)

RECIPES = (
    ("level 50% + ft", LevelConfig(0.5), FineTune(epochs=2, lr=1e-3)),
    ("2:4 + ft (no KD)", NMConfig(2, 4), FineTune(epochs=2, lr=1e-3)),
    ("L1 channels 50% + ft", ChannelConfig(0.5, criterion="l1"), FineTune(epochs=4, lr=3e-3)),
)


def latency(model: torch.nn.Module, batch: int, runs: int) -> float:
    """Median seconds of one forward call on a [batch, 1, 8, 8] input."""
    x = torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    model.eval()
    times = []
    with torch.inference_mode():
        for _ in range(50):
            model(x)
        for _ in range(runs):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=2000, help="timed calls per latency")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train_loader, test_loader = digits_loaders(seed=0)
    dense = get_model("digits-cnn")
    x1 = torch.zeros(1, 1, 8, 8)
    rows = [("dense", dense, None, evaluate(dense, test_loader))]
    for name, config, ft in RECIPES:
        model = copy.deepcopy(dense)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # 2:4: conv1 (K = 9) stays dense
            prune(model, config, example_input=x1)
        before = evaluate(model, test_loader)
        fine_tune(model, train_loader, ft)
        rows.append((name, model, before, evaluate(model, test_loader)))
    base = profile(dense, x1)
    print(f"digits CNN, test split (450 images); latency: fp32 torch, median of {args.runs} "
          f"runs, {args.threads} thread(s)")
    print(f"{'model':<22} {'acc before':>10} {'acc after':>9} {'drop pt':>8} {'params':>8} "
          f"{'MACs':>9} {'MACs %':>7} {'lat b1 us':>10} {'lat b256 us':>12}")
    dense_acc = rows[0][3]
    for name, model, before, after in rows:
        p = profile(model, x1)
        b1, b256 = latency(model, 1, args.runs), latency(model, 256, max(args.runs // 10, 20))
        before_txt = "-" if before is None else f"{100 * before:.2f}"
        print(f"{name:<22} {before_txt:>10} {100 * after:>9.2f} "
              f"{100 * (dense_acc - after):>8.2f} {p.params:>8,d} {p.macs:>9,d} "
              f"{100 * p.macs / base.macs:>6.1f}% {1e6 * b1:>10.1f} {1e6 * b256:>12.1f}")


if __name__ == "__main__":
    main()
