"""lowbit.compress calibrators: min/max, EMA, percentile, MSE search, KL (TensorRT entropy)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lowbit.compress import (CALIBRATORS, KLCalibrator, MSECalibrator, QuantSpec,
                             make_calibrator, qparams)
from lowbit.compress.calibrators import HIST_BINS, kl_divergence


def _rng(seed):
    return np.random.default_rng(seed)


def test_aliases():
    assert set(CALIBRATORS) == {"minmax", "ema", "percentile", "mse", "kl"}
    with pytest.raises(ValueError, match="unknown alias 'entropy'"):
        make_calibrator("entropy")


def test_minmax_is_exact():
    c = make_calibrator("minmax", "fc")
    for seed in range(3):
        c.observe(torch.from_numpy(_rng(seed).standard_normal(100).astype(np.float32)))
    allx = np.concatenate([_rng(s).standard_normal(100).astype(np.float32) for s in range(3)])
    assert c.range() == (float(allx.min()), float(allx.max()))


def test_ema_follows_momentum_formula():
    c = make_calibrator("ema", momentum=0.25)
    c.observe(torch.tensor([-1.0, 1.0]))
    c.observe(torch.tensor([-3.0, 5.0]))
    c.observe(torch.tensor([0.0, 2.0]))
    lo = 0.75 * (0.75 * -1 + 0.25 * -3) + 0.25 * 0
    hi = 0.75 * (0.75 * 1 + 0.25 * 5) + 0.25 * 2
    assert c.range() == pytest.approx((lo, hi), abs=1e-12)


def test_percentile_of_uniform_data():
    x = _rng(0).uniform(-1, 1, 1_000_000).astype(np.float32)
    c = make_calibrator("percentile", percentile=99.0)
    c.observe(torch.from_numpy(x))
    lo, hi = c.range()
    assert hi == pytest.approx(np.percentile(np.abs(x), 99.0), abs=2 * c.bin_width)
    assert lo == -hi


def test_histogram_regrows_exactly():
    """A batch past the range doubles R and merges bin pairs: counts match one histogram."""
    a = _rng(1).uniform(-1, 1, 5000)
    b = _rng(2).uniform(-7, 7, 5000)
    c = make_calibrator("kl")
    c.observe(a)
    c.observe(b)
    assert c.edge == pytest.approx(np.abs(a).max() * 8)
    want, _ = np.histogram(np.abs(np.concatenate([a, b]).astype(np.float32)), bins=HIST_BINS,
                           range=(0, c.edge))
    assert c.hist.sum() == 10000
    assert np.abs(c.hist - want).sum() <= 4  # values on a bin edge may fall either side


def _symmetric_mse(x: np.ndarray, t: float, bits: int) -> float:
    s = t / (2 ** (bits - 1) - 1)
    q = np.clip(np.rint(x / s), -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) * s
    return float(np.mean((x - q) ** 2))


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_mse_search_finds_the_brute_force_optimum(bits):
    x = _rng(bits).laplace(0, 1, 200_000)
    c = make_calibrator("mse", bits=bits)
    c.observe(x)
    t = c.range()[1]
    grid = np.linspace(0.05, np.abs(x).max(), 4000)
    best = min(_symmetric_mse(x, g, bits) for g in grid)
    assert _symmetric_mse(x, t, bits) <= best * 1.02


def test_mse_clips_a_lone_outlier_at_4_bits():
    """Uniform [-1, 1] plus one value at 100: clipping near 1 beats covering the outlier."""
    x = np.concatenate([_rng(3).uniform(-1, 1, 100_000), [100.0]])
    c = MSECalibrator(bits=4)
    c.observe(x)
    t = c.range()[1]
    assert 0.95 <= t <= 1.3
    assert _symmetric_mse(x, t, 4) < _symmetric_mse(x, 100.0, 4) / 3  # 0.099 vs 0.335


def test_kl_divergence_known_values():
    assert kl_divergence(np.array([1.0, 3.0]), np.array([2.0, 6.0])) == 0.0
    want = 0.5 * math.log(2) + 0.5 * math.log(0.5 / 0.75)
    assert kl_divergence(np.array([1.0, 1.0]), np.array([1.0, 3.0])) == pytest.approx(want)


def test_kl_keeps_the_full_range_of_uniform_data():
    """Uniform data: at i = 2048 bins P has no outlier spike and Q = P, so KL = 0 there."""
    c = KLCalibrator()
    c.observe(_rng(4).uniform(-1, 1, 2_000_000))
    starts, kl = c.divergences()
    assert starts[0] == 128 and starts[-1] == HIST_BINS
    assert kl[-1] == pytest.approx(0.0, abs=1e-3)
    assert c.range()[1] >= c.max - 1e-6


def test_kl_ignores_far_outliers():
    x = np.concatenate([_rng(5).standard_normal(1_000_000), [60.0, -60.0] * 5])
    c = KLCalibrator()
    c.observe(x)
    t = c.range()[1]
    assert 2.5 < t < 10.0


def test_kl_is_not_pulled_down_by_relu_zeros():
    x = np.maximum(_rng(7).standard_normal(1_000_000), 0.0)  # half the values exactly 0
    c = KLCalibrator(bits=8, symmetric=False)
    c.observe(x)
    assert c.range()[1] > 3.0


def test_kl_uses_128_levels_for_int8_and_256_for_unsigned_nonnegative():
    c = KLCalibrator(bits=8, symmetric=True)
    c.observe(np.abs(_rng(6).standard_normal(1000)))
    assert c.divergences()[0][0] == 128
    u = KLCalibrator(bits=8, symmetric=False)
    u.observe(np.abs(_rng(6).standard_normal(1000)))
    assert u.divergences()[0][0] == 256


@pytest.mark.parametrize("kind", sorted(CALIBRATORS))
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_batch_names_layer_and_batch(kind, bad):
    c = make_calibrator(kind, "block.fc2")
    c.observe(torch.ones(4))
    x = torch.ones(4)
    x[2] = bad
    with pytest.raises(ValueError, match=r"'block\.fc2' at calibration batch 1"):
        c.observe(x)
    with pytest.raises(ValueError, match="batch 7"):
        c.observe(x, batch=7)


@pytest.mark.parametrize("kind", sorted(CALIBRATORS))
def test_empty_inputs_raise(kind):
    c = make_calibrator(kind, "conv1")
    with pytest.raises(ValueError, match="no calibration batch observed"):
        c.range()
    with pytest.raises(ValueError, match="batch 0 is empty"):
        c.observe(torch.zeros(0))


@pytest.mark.parametrize("kind", sorted(CALIBRATORS))
@pytest.mark.parametrize("value", [0.0, 2.5], ids=["zeros", "const"])
def test_constant_input_warns_and_gives_a_safe_scale(kind, value):
    c = make_calibrator(kind, "relu_out")
    for _ in range(2):
        c.observe(torch.full((64,), value))
    with pytest.warns(RuntimeWarning, match="constant"):
        lo, hi = c.range()
    for sym in (True, False):
        s, z = qparams(torch.tensor(lo), torch.tensor(hi), QuantSpec(8, sym))
        assert math.isfinite(float(s)) and float(s) > 0
    if value == 0.0:
        assert (lo, hi) == (0.0, 0.0)


@pytest.mark.parametrize("kind", sorted(CALIBRATORS))
def test_range_within_observed_extremes(kind):
    c = make_calibrator(kind)
    for seed in range(4):
        c.observe(_rng(seed).standard_normal(5000) * (seed + 1))
    lo, hi = c.range()
    assert c.min <= lo <= 0 <= hi <= c.max


def test_bad_options():
    with pytest.raises(ValueError, match="momentum"):
        make_calibrator("ema", momentum=0.0)
    with pytest.raises(ValueError, match="percentile"):
        make_calibrator("percentile", percentile=120)
