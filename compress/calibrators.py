"""Calibrators (observers) for static post-training quantization of activations.

Each is a small object: ``observe(tensor)`` once per calibration batch, then ``range()`` gives
the (lo, hi) the activation quantizer should cover (``qfunc.qparams`` turns it into a scale and
zero point). Short aliases: "minmax", "ema", "percentile", "mse", "kl" (``make_calibrator``).

* ``MinMaxCalibrator``: the extreme values seen.
* ``EMAMinMaxCalibrator``: moving averages of each batch's min and max,
  r <- (1 - momentum) r + momentum * batch (the first batch sets r), as QAT's running min/max.
* ``PercentileCalibrator``, ``MSECalibrator``, ``KLCalibrator``: a threshold T on |x| chosen
  from a 2048-bin histogram of |x|; the range is [max(min, -T), min(max, T)]. Percentile: the
  p-th percentile of |x|. MSE: the T minimising the expected squared quantization error of
  the histogram (clip error plus rounding error). KL: TensorRT's entropy calibration
  (Migacz 2017, "8-bit Inference with TensorRT", GTC): for each i from L + 1 to 2048 bins,
  P = the first i bins with the outliers added to the last, Q = those bins merged into L + 1
  levels and expanded back over the non-empty bins, T = (m + 0.5) * bin width for the m of
  least KL(P || Q). L + 1 = 128 for int8 symmetric (256 for unsigned non-negative data). The
  zero bin's count is replaced by its neighbour's first, as NVIDIA's pytorch-quantization
  (TensorRT tools) does, so the exact zeros after a ReLU do not decide the threshold.

The histogram covers [0, R]; when a batch exceeds R, R doubles (as often as needed) and pairs
of bins merge, an exact re-binning, so batches can arrive in any order.

Bad input: NaN or Inf raise ``ValueError`` naming the layer and the batch; a constant input
(min == max) warns (``warnings``) and the quantizer then uses a safe scale (1.0 for zero range);
``range()`` before any batch raises ``ValueError``.
"""
from __future__ import annotations

import abc
import math
import warnings
from typing import ClassVar

import numpy as np
import torch

HIST_BINS = 2048


class Calibrator:
    """Base: validates batches and tracks the exact min and max seen.

    Args:
        name: the layer this calibrator serves (used in error messages).
        bits, symmetric: the activation quantizer it calibrates for (histogram methods).
    """

    alias: ClassVar[str] = ""

    def __init__(self, name: str = "", *, bits: int = 8, symmetric: bool = True) -> None:
        self.name = name
        self.bits = bits
        self.symmetric = symmetric
        self.batches = 0
        self.min = math.inf
        self.max = -math.inf

    def _what(self) -> str:
        return f"calibrator {self.alias!r} of layer {self.name!r}" if self.name else \
            f"calibrator {self.alias!r}"

    def observe(self, x: torch.Tensor | np.ndarray, *, batch: int | None = None) -> None:
        """Record one batch (``batch``: its index in the calibration set, for messages)."""
        index = self.batches if batch is None else batch
        arr = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else \
            np.asarray(x, dtype=np.float32)
        if arr.size == 0:
            raise ValueError(f"{self._what()}: batch {index} is empty; calibration batches "
                             f"must hold at least one value")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{self._what()}: NaN or Inf in the input of layer {self.name!r} "
                             f"at calibration batch {index}; clean or drop that batch")
        self.batches += 1
        lo, hi = float(arr.min()), float(arr.max())
        self._update(arr, lo, hi)
        self.min, self.max = min(self.min, lo), max(self.max, hi)

    def _update(self, arr: np.ndarray, lo: float, hi: float) -> None:
        """Subclass hook: accumulate one validated batch."""

    def range(self) -> tuple[float, float]:
        """(lo, hi) to quantize over; warns when the input was constant."""
        if self.batches == 0:
            raise ValueError(f"{self._what()}: no calibration batch observed; run at least one "
                             f"batch through the model (calibration=...)")
        if self.min == self.max:
            warnings.warn(f"{self._what()}: the input was constant ({self.min:g}) over "
                          f"{self.batches} batch(es); its quantizer uses a safe scale",
                          RuntimeWarning, stacklevel=2)
        return self._range()

    def _range(self) -> tuple[float, float]:
        return self.min, self.max


class MinMaxCalibrator(Calibrator):
    """The observed [min, max]."""

    alias = "minmax"


class EMAMinMaxCalibrator(Calibrator):
    """Moving averages of per-batch min and max: r <- (1 - momentum) r + momentum * batch."""

    alias = "ema"

    def __init__(self, name: str = "", *, bits: int = 8, symmetric: bool = True,
                 momentum: float = 0.1) -> None:
        super().__init__(name, bits=bits, symmetric=symmetric)
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum: must lie in (0, 1], got {momentum!r}")
        self.momentum = momentum
        self.running: tuple[float, float] | None = None

    def _update(self, arr: np.ndarray, lo: float, hi: float) -> None:
        if self.running is None:
            self.running = (lo, hi)
        else:
            m = self.momentum
            r_lo, r_hi = self.running
            self.running = ((1 - m) * r_lo + m * lo, (1 - m) * r_hi + m * hi)

    def _range(self) -> tuple[float, float]:
        return self.running


class HistogramCalibrator(Calibrator, abc.ABC):
    """Base of the threshold calibrators: a ``HIST_BINS``-bin histogram of |x| over [0, R]."""

    def __init__(self, name: str = "", *, bits: int = 8, symmetric: bool = True) -> None:
        super().__init__(name, bits=bits, symmetric=symmetric)
        self.hist = np.zeros(HIST_BINS, dtype=np.float64)
        self.edge = 0.0          # R; 0 until a batch with a non-zero value arrives
        self._zeros = 0          # values seen while every value so far was 0

    def _update(self, arr: np.ndarray, lo: float, hi: float) -> None:
        a = np.abs(arr.astype(np.float64).ravel())
        top = float(a.max())
        if self.edge == 0.0:
            if top == 0.0:
                self._zeros += a.size
                return
            self.edge = top
            self.hist[0] += self._zeros
        while top > self.edge:  # double R; bins 2j, 2j+1 merge into bin j (exact)
            self.hist = np.concatenate([self.hist.reshape(-1, 2).sum(axis=1),
                                        np.zeros(HIST_BINS // 2)])
            self.edge *= 2.0
        counts, _ = np.histogram(a, bins=HIST_BINS, range=(0.0, self.edge))
        self.hist += counts

    @property
    def bin_width(self) -> float:
        return self.edge / HIST_BINS

    def levels(self) -> int:
        """L: positive quantization levels over [0, T] (127 for int8 symmetric)."""
        if self.symmetric or self.min < 0:
            return (1 << (self.bits - 1)) - 1
        return (1 << self.bits) - 1

    @abc.abstractmethod
    def threshold(self) -> float:
        """The clipping threshold T on |x|."""

    def _range(self) -> tuple[float, float]:
        if self.edge == 0.0:
            return 0.0, 0.0
        t = self.threshold()
        return max(self.min, -t), min(self.max, t)


class PercentileCalibrator(HistogramCalibrator):
    """T = the ``percentile``-th percentile of |x| (upper edge of the bin reaching it)."""

    alias = "percentile"

    def __init__(self, name: str = "", *, bits: int = 8, symmetric: bool = True,
                 percentile: float = 99.99) -> None:
        super().__init__(name, bits=bits, symmetric=symmetric)
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"percentile: must lie in (0, 100], got {percentile!r}")
        self.percentile = percentile

    def threshold(self) -> float:
        cdf = np.cumsum(self.hist)
        i = int(np.searchsorted(cdf, cdf[-1] * self.percentile / 100.0))
        return (min(i, HIST_BINS - 1) + 1) * self.bin_width


class MSECalibrator(HistogramCalibrator):
    """T minimising the histogram's expected squared error of quantizing |x| with step T / L.

    Candidates T = i * bin width for i = 1..2048; each bin is represented by its centre.
    """

    alias = "mse"

    def errors(self) -> np.ndarray:
        """Expected squared error (sum over bins, unnormalised) for T = i * width, i = 1..2048."""
        w = self.bin_width
        centres = (np.arange(HIST_BINS) + 0.5) * w
        ts = np.arange(1, HIST_BINS + 1) * w
        steps = ts / self.levels()
        out = np.empty(HIST_BINS)
        for j, (t, step) in enumerate(zip(ts, steps)):  # 2048 vector passes, each O(bins)
            xq = np.minimum(np.round(centres / step) * step, t)
            out[j] = np.dot(self.hist, (centres - xq) ** 2)
        return out

    def threshold(self) -> float:
        return (int(np.argmin(self.errors())) + 1) * self.bin_width


def _smooth(p: np.ndarray, eps: float = 1e-4) -> np.ndarray | None:
    """Move ``eps`` of mass onto the zero entries (MXNet's _smooth_distribution); None if
    every entry is zero or the non-zero mass cannot give it up."""
    zero = p == 0
    n_zero, n_nonzero = int(zero.sum()), p.size - int(zero.sum())
    if n_nonzero == 0:
        return None
    eps1 = eps * n_zero / n_nonzero
    if eps1 >= 1.0:
        return None
    return p + eps * zero - eps1 * (~zero)


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(P || Q) = sum p log(p / q) of two histograms, each normalised to sum 1 (p > 0 terms)."""
    p = p / p.sum()
    q = q / q.sum()
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))


class KLCalibrator(HistogramCalibrator):
    """TensorRT entropy calibration (see module docstring; Migacz 2017)."""

    alias = "kl"

    def divergences(self) -> tuple[np.ndarray, np.ndarray]:
        """(candidate bin counts i, KL(P_i || Q_i)); inf where a candidate is degenerate."""
        nq = self.levels() + 1  # quantized bins, 128 for int8 symmetric
        # The zero bin takes its neighbour's count (as NVIDIA's pytorch-quantization entropy
        # calibrator does): the exact zeros of ReLU outputs would otherwise dominate P and
        # push the threshold down.
        hist = self.hist.copy()
        hist[0] = hist[1]
        starts = np.arange(nq, HIST_BINS + 1)
        kl = np.full(starts.size, np.inf)
        for j, i in enumerate(starts):
            p = hist[:i].copy()
            p[i - 1] += hist[i:].sum()
            chunk = i // nq  # the last level also takes the remainder (MXNet's convention)
            ids = np.minimum(np.arange(i) // chunk, nq - 1)
            src = hist[:i]
            nonzero = src != 0
            totals = np.bincount(ids, weights=src, minlength=nq)
            counts = np.bincount(ids, weights=nonzero, minlength=nq)
            per = np.divide(totals, counts, out=np.zeros(nq), where=counts > 0)
            q = np.where(nonzero, per[ids], 0.0)
            ps, qs = _smooth(p), _smooth(q)
            if ps is None or qs is None:
                continue
            kl[j] = kl_divergence(ps, qs)
        return starts, kl

    def threshold(self) -> float:
        starts, kl = self.divergences()
        if not np.isfinite(kl).any():  # every candidate degenerate: keep the full range
            return self.edge
        m = int(starts[int(np.argmin(kl))])
        return (m + 0.5) * self.bin_width


CALIBRATORS: dict[str, type[Calibrator]] = {
    c.alias: c for c in (MinMaxCalibrator, EMAMinMaxCalibrator, PercentileCalibrator,
                         MSECalibrator, KLCalibrator)
}


def make_calibrator(kind: str, name: str = "", *, bits: int = 8, symmetric: bool = True,
                    **options) -> Calibrator:
    """A calibrator by alias ("minmax", "ema", "percentile", "mse", "kl") for one layer.

    ``options``: ``momentum=`` for "ema", ``percentile=`` for "percentile".

    Example:
        >>> c = make_calibrator("minmax", "fc1")
        >>> c.observe(torch.tensor([-1.0, 2.0])); c.range()
        (-1.0, 2.0)
    """
    if kind not in CALIBRATORS:
        raise ValueError(f"calibrator: unknown alias {kind!r}; use one of "
                         f"{', '.join(map(repr, CALIBRATORS))}")
    return CALIBRATORS[kind](name, bits=bits, symmetric=symmetric, **options)
