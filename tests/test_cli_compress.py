"""``lowbit compress``: the report, --save / --load --eval, and one-line errors.

Latency figures are printed, never asserted (speed goals live in the benchmarks)."""
from __future__ import annotations

import re

import pytest
import torch

from lowbit.cli import main
from lowbit.compress import CHECKPOINT_VERSION

FAST = ["--batch", "8", "--repeats", "2"]


def test_one_config_save_and_load_eval(tmp_path, capsys):
    path = tmp_path / "cnn.lowbit"
    assert main(["compress", "--model", "digits-cnn", "--config", "int8-dynamic",
                 "--save", str(path), *FAST]) == 0
    out = capsys.readouterr().out
    acc = re.search(r"fp32 ([\d.]+)%, simulation ([\d.]+)%, exported on lowbit kernels "
                    r"([\d.]+)%; drop (-?[\d.]+) pt \(target <= 0.5 pt: met\)", out)
    assert acc, out
    assert acc.group(2) == acc.group(3)          # the kernels compute the simulation
    assert re.search(r"size: [\d,]+ B \(fp32 model [\d,]+ B, [\d.]+x smaller\); MACs per "
                     r"image: 905,728", out)
    assert re.search(r"latency, batch 8, median of 2 .*: exported [\d.]+ ms, fp32 torch "
                     r"[\d.]+ ms", out)
    assert "dynamic s8 per image" in out and "dynamic s8 per row" in out
    assert path.exists() and f"saved: {path}" in out
    assert main(["compress", "--load", str(path), "--eval", *FAST]) == 0
    out2 = capsys.readouterr().out
    assert f"lowbit-compressed version {CHECKPOINT_VERSION}, arch digits-cnn" in out2
    assert f"loaded model on lowbit kernels {acc.group(3)}%" in out2


def test_int4_notes_the_float_layer(capsys):
    assert main(["compress", "--model", "digits-mlp", "--config", "int4-weight-only",
                 "--group-size", "64", *FAST]) == 0
    out = capsys.readouterr().out
    assert "int4 g64 float16" in out and "target <= 1.0 pt" in out


@pytest.mark.parametrize("argv, message", [
    ([], "--config"),
    (["--config", "all", "--save", "x.lowbit"], "--save"),
    (["--config", "int8-static", "--eval"], "--eval"),
    (["--load", "x.lowbit", "--config", "int8-static"], "--load"),
    (["--config", "int8-static", "--calibrator", "entropy"], "calibrator"),
    (["--config", "int4-weight-only", "--group-size", "48"], "group_size"),
    (["--model", "resnet18", "--config", "int8-dynamic"], "model"),
    (["--config", "int8-dynamic", "--repeats", "0"], "--repeats"),
    (["--config", "prune-l1:0.5,int8-static", "--save", "x.lowbit"], "--save"),
    (["--config", "prune-l9:0.5,int8-static"], "config"),
    (["--config", "int8-static,distill"], "config"),
    (["--config", "int8-static", "--kd-epochs", "2"], "--kd-epochs"),
    (["--config", "distill", "--kd-epochs", "0"], "--kd-epochs"),
])
def test_errors_are_one_line(argv, message, capsys):
    assert main(["compress", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lowbit: error: ") and message in err and err.count("\n") == 1


def test_load_rejects_an_unknown_version(tmp_path, capsys):
    torch.save({"format": "lowbit-compressed", "version": 99}, tmp_path / "future.lowbit")
    assert main(["compress", "--load", str(tmp_path / "future.lowbit")]) == 1
    err = capsys.readouterr().err
    assert f"format version 99; this lowbit reads version {CHECKPOINT_VERSION} only" in err


def test_pipeline_prints_each_step_and_the_pruned_model_on_the_kernels(capsys):
    """`lowbit compress --config prune-l1:0.5,distill,int8-static`: a row per step (the last
    on lowbit's kernels, its simulation equal), then the exported pruned model against the
    dense model exported the same way at batches 1, 64 and 450, and the targets line."""
    from lowbit.run_pipeline import PRUNED_LATENCY_BATCHES

    assert main(["compress", "--model", "digits-cnn", "--config",
                 "prune-l1:0.5,distill,int8-static", "--kd-epochs", "1", *FAST]) == 0
    out = capsys.readouterr().out
    assert "pipeline prune-l1:0.5 -> distill -> int8-static" in out and "1 thread" in out
    rows = {m.group(1): m for m in re.finditer(
        r"^(fp32|prune-l1:0.5|distill|int8-static) +(torch fp32|lowbit kernels) +([\d.]+)% +"
        r"(-?[\d.]+) +([\d,]+) +([\d,]+) +([\d,]+) +([\d.]+)% +([\d.]+)(.*)$", out, re.M)}
    assert list(rows) == ["fp32", "prune-l1:0.5", "distill", "int8-static"], out
    assert [rows[k].group(2) for k in rows] == ["torch fp32"] * 3 + ["lowbit kernels"]
    assert rows["fp32"].group(7) == "905,728" and rows["int8-static"].group(8) == "25.6"
    final = rows["int8-static"]
    assert f"simulation {final.group(3)}%" in final.group(10)
    assert "conv2  lowbit   int8" in out
    batches = re.findall(r"^ +(\d+) +([\d.]+) +([\d.]+) +([\d.]+)x$", out, re.M)
    assert [int(b[0]) for b in batches] == list(PRUNED_LATENCY_BATCHES)
    assert "against dense int8-static (the dense digits-cnn through the same recipe" in out
    assert re.search(r"MACs per image: pruned [\d,]+ = 25\.6% of dense 905,728", out)
    assert re.search(r"issue 8's structured-pruning targets: drop -?[\d.]+ pt <= 2.0 pt: "
                     r"(met|MISSED); MACs 25.6% <= 55%: met; kernel latency below the dense "
                     r"model's at batch 1: (yes|no), 64: (yes|no), 450: (yes|no)", out)
