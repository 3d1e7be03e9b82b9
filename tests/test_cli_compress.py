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
