"""One frozen config per quantization technique, validated on construction.

Pass a config to ``lowbit.compress.quantize(model, config)``; each config type has a handler
(``lowbit.compress.api.register_handler``). A bad field raises at construction with a message
that says how to fix the call.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .calibrators import CALIBRATORS
from .granularity import GRANULARITIES, Granularity, PerChannel, PerGroup
from .qfunc import MAX_BITS, MIN_BITS

INT4_GROUP_SIZES = (32, 64, 128)


def _check_bits(name: str, bits, allow_none: bool = False) -> None:
    if bits is None and allow_none:
        return
    if not isinstance(bits, int) or isinstance(bits, bool) or not MIN_BITS <= bits <= MAX_BITS:
        extra = " or None (float)" if allow_none else ""
        raise ValueError(f"{name}: must be an int in [{MIN_BITS}, {MAX_BITS}]{extra}, "
                         f"got {bits!r}")


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: must be True or False, got {value!r}")


def _check_weight_granularity(name: str, g) -> None:
    if not isinstance(g, GRANULARITIES):
        raise TypeError(f"{name}: must be PerTensor(), PerChannel(0) or PerGroup(size), "
                        f"got {g!r}")
    if isinstance(g, PerChannel) and g.axis != 0:
        raise ValueError(f"{name}: weights are quantized per output channel; use PerChannel(0),"
                         f" got {g!r}")


@dataclass(frozen=True)
class Int8DynamicConfig:
    """PTQ dynamic: int8 weights per output channel, int8 activations per row at run time.

    Weights: s_j = max|w_j| / 127, q = clip(rint(w / s_j), -128, 127); activations
    s_i = max|x_i| / 127 per row (Linear) or per image (Conv2d). ``fold_bn``: fold
    BatchNorm2d into the preceding Conv2d first (eval statistics).

    Example:
        >>> Int8DynamicConfig()
        Int8DynamicConfig(fold_bn=True)
    """

    fold_bn: bool = True

    def __post_init__(self) -> None:
        _check_bool("fold_bn", self.fold_bn)


@dataclass(frozen=True)
class Int8StaticConfig:
    """PTQ static: int8 weights per output channel, activations per tensor with a scale (and
    zero point when asymmetric) calibrated offline on ``calibration`` data.

    Args:
        calibrator: "minmax", "ema", "percentile", "mse" or "kl" (TensorRT entropy).
        act_symmetric: False: uint8 [0, 255] with a zero point; True: int8 [-128, 127].
        percentile: for "percentile"; momentum: for "ema".
        fold_bn: fold BatchNorm2d into the preceding Conv2d before calibrating.

    Example:
        >>> Int8StaticConfig(calibrator="entropy")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: calibrator: unknown 'entropy'; use one of 'minmax', 'ema', ..., 'kl'
    """

    calibrator: str = "kl"
    act_symmetric: bool = False
    percentile: float = 99.99
    momentum: float = 0.1
    fold_bn: bool = True

    def __post_init__(self) -> None:
        if self.calibrator not in CALIBRATORS:
            raise ValueError(f"calibrator: unknown {self.calibrator!r}; use one of "
                             f"{', '.join(map(repr, CALIBRATORS))}")
        _check_bool("act_symmetric", self.act_symmetric)
        _check_bool("fold_bn", self.fold_bn)
        if not 0.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile: must lie in (0, 100], e.g. 99.99; got "
                             f"{self.percentile!r}")
        if not 0.0 < self.momentum <= 1.0:
            raise ValueError(f"momentum: must lie in (0, 1], e.g. 0.1; got {self.momentum!r}")

    def calibrator_options(self) -> dict:
        return {"percentile": {"percentile": self.percentile},
                "ema": {"momentum": self.momentum}}.get(self.calibrator, {})


@dataclass(frozen=True)
class Int4WeightOnlyConfig:
    """Weight-only int4 in the kernels' format: groups of ``group_size`` along K with float16
    scales, s = max|w_g| / 7, v = clip(rint(w / s), -8, 7) (``kernels.formats.quantize_int4``);
    activations stay float. Layers whose K is not a multiple of ``group_size`` are skipped
    with a warning.

    Example:
        >>> Int4WeightOnlyConfig(group_size=48)
        Traceback (most recent call last):
        ValueError: group_size: the int4 kernels take 32, 64 or 128, got 48
    """

    group_size: int = 32
    fold_bn: bool = True

    def __post_init__(self) -> None:
        if self.group_size not in INT4_GROUP_SIZES:
            raise ValueError(f"group_size: the int4 kernels take 32, 64 or 128, got "
                             f"{self.group_size!r}")
        _check_bool("fold_bn", self.fold_bn)


@dataclass(frozen=True)
class IntxWeightOnlyConfig:
    """Weight-only b-bit symmetric quantization (b = 2..8) at any weight granularity;
    activations stay float. Used by mixed precision to try several widths per layer.

    Example:
        >>> IntxWeightOnlyConfig(bits=3).granularity
        PerChannel(axis=0)
    """

    bits: int = 4
    granularity: Granularity = field(default_factory=lambda: PerChannel(0))
    fold_bn: bool = True

    def __post_init__(self) -> None:
        _check_bits("bits", self.bits)
        _check_weight_granularity("granularity", self.granularity)
        _check_bool("fold_bn", self.fold_bn)


@dataclass(frozen=True)
class QATConfig:
    """Quantization-aware training: fake-quantized weights and activations.

    Args:
        weight_bits: 2..8, symmetric, at ``granularity`` (PerChannel(0), PerTensor() or
            PerGroup(size); PerGroup only with ``act_bits=None``).
        act_bits: 2..8 per tensor, or None to keep activations float (weight-only QAT).
        act_symmetric: False: unsigned [0, 2^b - 1] with a zero point; True: signed.
        learnable: LSQ learnable scales (and activation zero point), Esser et al. 2020;
            False: min/max scales (weights: current, activations: running with momentum).
        momentum: running min/max momentum of the activation quantizers.
        fold_bn: fold BatchNorm2d into the preceding Conv2d first (frozen statistics).

    After training, ``lowbit.compress.convert(model)`` gives the integer model.

    Example:
        >>> QATConfig(weight_bits=4, act_bits=4, granularity=PerGroup(32))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: granularity: PerGroup weights are for weight-only QAT; pass act_bits=None, ...
    """

    weight_bits: int = 8
    act_bits: int | None = 8
    granularity: Granularity = field(default_factory=lambda: PerChannel(0))
    act_symmetric: bool = False
    learnable: bool = False
    momentum: float = 0.1
    fold_bn: bool = True

    def __post_init__(self) -> None:
        _check_bits("weight_bits", self.weight_bits)
        _check_bits("act_bits", self.act_bits, allow_none=True)
        _check_weight_granularity("granularity", self.granularity)
        if isinstance(self.granularity, PerGroup) and self.act_bits is not None:
            raise ValueError("granularity: PerGroup weights are for weight-only QAT; pass "
                             "act_bits=None, or use PerChannel(0) with quantized activations")
        for name in ("act_symmetric", "learnable", "fold_bn"):
            _check_bool(name, getattr(self, name))
        if not 0.0 < self.momentum <= 1.0:
            raise ValueError(f"momentum: must lie in (0, 1], e.g. 0.1; got {self.momentum!r}")


CONFIG_TYPES = (Int8DynamicConfig, Int8StaticConfig, Int4WeightOnlyConfig, IntxWeightOnlyConfig,
                QATConfig)
