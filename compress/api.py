"""``quantize(model, config)``: apply one quantization config to a model, in place.

A handler is registered per config type (``register_handler``); ``quantize`` selects the
nn.Linear / nn.Conv2d layers ``filter_fn(module, name)`` accepts (default: every nn.Linear and
every zero-padded nn.Conv2d with numeric padding, grouped and depthwise ones included),
folds BatchNorm2d into the selected convolutions when the config asks for it, and hands the
selected (name, module) pairs to the handler, which swaps them for quantized modules.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import torch
from torch import nn

from .bnfold import fold_batchnorm
from .calibrators import make_calibrator
from .configs import (Int4WeightOnlyConfig, Int8DynamicConfig, Int8StaticConfig,
                      IntxWeightOnlyConfig, QATConfig)
from .granularity import PerChannel
from .qat import QATConv2d, QATLinear
from .qfunc import QuantSpec, qparams
from .qmodules import ActQuant, QuantConv2d, QuantLinear
from .swap import replace_module

FilterFn = Callable[[nn.Module, str], bool]
Targets = list[tuple[str, nn.Module]]
Handler = Callable[[nn.Module, Targets, object, object], None]

_HANDLERS: dict[type, Handler] = {}
QUANTIZABLE = (nn.Linear, nn.Conv2d)


def register_handler(config_type: type) -> Callable[[Handler], Handler]:
    """Decorator: ``handler(model, targets, config, calibration)`` applies ``config_type``.

    ``targets`` are the selected (name, module) pairs; the handler replaces them in ``model``.
    """
    def deco(fn: Handler) -> Handler:
        _HANDLERS[config_type] = fn
        return fn
    return deco


def default_filter(module: nn.Module, name: str) -> bool:
    """Every nn.Linear and every nn.Conv2d the integer layers support (any groups, numeric
    zero padding)."""
    if isinstance(module, nn.Linear):
        return True
    return (isinstance(module, nn.Conv2d) and module.padding_mode == "zeros"
            and not isinstance(module.padding, str))


def quantize(model: nn.Module, config, *, filter_fn: FilterFn | None = None,
             calibration: Iterable | None = None) -> nn.Module:
    """Apply ``config`` to every nn.Linear / nn.Conv2d ``filter_fn`` accepts; in place.

    Args:
        model: any nn.Module (its Linear / Conv2d layers are replaced).
        config: Int8DynamicConfig, Int8StaticConfig, Int4WeightOnlyConfig,
            IntxWeightOnlyConfig, QATConfig, or any type with a registered handler.
        filter_fn: ``filter_fn(module, name) -> bool``, asked about each nn.Linear /
            nn.Conv2d (``name`` as in ``model.named_modules()``); default ``default_filter``.
        calibration: Int8StaticConfig only: an iterable of input batches, or of (x, y) pairs
            such as a DataLoader (the first element is the input).

    Returns the model. Example:
        >>> m = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> quantize(m, Int8DynamicConfig())[0].__class__.__name__
        'QuantLinear'
    """
    handler = _HANDLERS.get(type(config))
    if handler is None:
        known = ", ".join(t.__name__ for t in _HANDLERS)
        raise TypeError(f"config: no handler for {type(config).__name__}; use one of {known} "
                        f"or register one with register_handler")
    keep = default_filter if filter_fn is None else filter_fn
    names = [name for name, mod in model.named_modules()
             if name and isinstance(mod, QUANTIZABLE) and keep(mod, name)]
    if not names:
        raise ValueError(f"quantize: the model has no quantizable layer (nn.Linear / nn.Conv2d "
                         f"accepted by filter_fn) for {type(config).__name__}")
    if getattr(config, "fold_bn", False):
        chosen = set(names)
        fold_batchnorm(model, lambda mod, name: name in chosen)
    handler(model, [(n, model.get_submodule(n)) for n in names], config, calibration)
    return model


def _no_calibration(config, calibration) -> None:
    if calibration is not None:
        raise ValueError(f"calibration: {type(config).__name__} does not use calibration data; "
                         f"drop calibration= (only Int8StaticConfig calibrates)")


def _swap(model: nn.Module, targets: Targets, build: Callable[[str, nn.Module], nn.Module]
          ) -> None:
    """Replace each target by ``build(name, module)``; errors name the layer."""
    for name, mod in targets:
        try:
            new = build(name, mod)
        except ValueError as e:
            raise ValueError(f"layer {name!r}: {e} (or leave the layer out with filter_fn)") from e
        replace_module(model, name, new)


def _quant_cls(mod: nn.Module) -> type[QuantLinear] | type[QuantConv2d]:
    return QuantLinear if isinstance(mod, nn.Linear) else QuantConv2d


INT8_WEIGHTS = QuantSpec(8, True, PerChannel(0))


@register_handler(Int8DynamicConfig)
def _int8_dynamic(model, targets, config, calibration) -> None:
    _no_calibration(config, calibration)
    _swap(model, targets, lambda name, m: _quant_cls(m).from_float(
        m, INT8_WEIGHTS, act=ActQuant("dynamic", 8, True)))


def calibrate(model: nn.Module, targets: Targets, kind: str, calibration: Iterable, *,
              bits: int = 8, symmetric: bool = False, **options) -> dict[str, tuple[float, float]]:
    """Run ``calibration`` through ``model`` (eval, no grad) and return the input range of
    each target layer from a calibrator ``kind`` ("minmax", "ema", "percentile", "mse", "kl")."""
    if calibration is None:
        raise ValueError("calibration: static quantization needs calibration data; pass "
                         "calibration=<iterable of input batches or a DataLoader>")
    cals = {name: make_calibrator(kind, name, bits=bits, symmetric=symmetric, **options)
            for name, _ in targets}
    index = [0]

    def hook_for(name):
        def hook(module, args):
            cals[name].observe(args[0], batch=index[0])
        return hook

    hooks = [mod.register_forward_pre_hook(hook_for(name)) for name, mod in targets]
    was_training = model.training
    model.eval()
    n = 0
    try:
        with torch.no_grad():
            for i, batch in enumerate(calibration):
                index[0] = i
                model(batch[0] if isinstance(batch, (tuple, list)) else batch)
                n += 1
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if n == 0:
        raise ValueError("calibration: the calibration set yielded no batch; pass a non-empty "
                         "iterable of input batches")
    silent = [name for name, c in cals.items() if c.batches == 0]
    if silent:
        raise ValueError(f"calibration: layer(s) {', '.join(map(repr, silent))} received no "
                         f"input while the calibration data ran; exclude them with filter_fn")
    return {name: c.range() for name, c in cals.items()}


@register_handler(Int8StaticConfig)
def _int8_static(model, targets, config, calibration) -> None:
    sym = config.act_symmetric
    ranges = calibrate(model, targets, config.calibrator, calibration, bits=8, symmetric=sym,
                       **config.calibrator_options())
    act = ActQuant("static", 8, sym)

    def build(name, m):
        s, z = qparams(torch.tensor(ranges[name][0]), torch.tensor(ranges[name][1]), act.spec)
        return _quant_cls(m).from_float(m, INT8_WEIGHTS, act=act, act_scale=s,
                                        act_zero_point=int(z))
    _swap(model, targets, build)


def reduction_size(mod: nn.Module) -> int:
    """K of the layer's GEMM: in_features, or (in_channels / groups) * kh * kw."""
    return mod.weight[0].numel()


@register_handler(Int4WeightOnlyConfig)
def _int4_weight_only(model, targets, config, calibration) -> None:
    _no_calibration(config, calibration)
    g = config.group_size
    fits = [(n, m) for n, m in targets if reduction_size(m) % g == 0]
    skipped = [n for n, m in targets if reduction_size(m) % g]
    if not fits:
        raise ValueError(f"group_size: no selected layer has K (in_features, or "
                         f"(C / groups) * kh * kw) divisible by {g}; try a smaller group_size")
    if skipped:
        warnings.warn(f"Int4WeightOnlyConfig(group_size={g}): left in float, K not a multiple "
                      f"of {g} (K: in_features, or (C / groups) * kh * kw): "
                      f"{', '.join(skipped)}", RuntimeWarning, stacklevel=3)
    _swap(model, fits, lambda name, m: _quant_cls(m).from_float_int4(m, g))


@register_handler(IntxWeightOnlyConfig)
def _intx_weight_only(model, targets, config, calibration) -> None:
    _no_calibration(config, calibration)
    spec = QuantSpec(config.bits, True, config.granularity)
    _swap(model, targets, lambda name, m: _quant_cls(m).from_float(m, spec))


@register_handler(QATConfig)
def _qat(model, targets, config, calibration) -> None:
    if calibration is not None:
        raise ValueError("calibration: QATConfig does not use calibration data; the first "
                         "training batches set the activation ranges")
    w_spec = QuantSpec(config.weight_bits, True, config.granularity)
    a_spec = None if config.act_bits is None else QuantSpec(config.act_bits,
                                                             config.act_symmetric)

    def build(name, m):
        cls = QATLinear if isinstance(m, nn.Linear) else QATConv2d
        w_spec.granularity.param_shape(m.weight.shape)  # raises early if groups do not fit
        return cls(m, w_spec, a_spec, learnable=config.learnable, momentum=config.momentum)
    _swap(model, targets, build)
