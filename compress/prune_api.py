"""``prune(model, config)``: apply one pruning config to a model, in place; and
``iterative_prune``: prune in steps along a schedule, fine-tuning in between.

The same shape as ``quantize``: a handler is registered per config type
(``register_prune_handler``); ``prune`` selects the nn.Linear / nn.Conv2d layers
``filter_fn(module, name)`` accepts (default: all) and hands them to the handler.

* ``LevelConfig`` / ``NMConfig``: the selected layers become ``MaskedLinear`` /
  ``MaskedConv2d`` (``lowbit.compress.masks``); fine-tune with ``fine_tune`` (masks kept),
  then optionally ``finalize``.
* ``ChannelConfig``: the selected layers are the *producers* whose output channels may go;
  the dependency graph (``lowbit.compress.depgraph``) shrinks every dependent layer.
* ``MovementConfig`` / ``LotteryTicketConfig``: train while pruning (``data=`` needed).
"""
from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .channel_plan import ChannelPlan, channel_groups, select_channels
from .criteria import channel_scores, weight_scores
from .depgraph import trace_channels
from .masks import MASKABLE, MaskedLayer, mask_layer, weight_masks
from .nm import layer_nm_mask, reduction_length
from .prune_configs import (DATA_CRITERIA, ChannelConfig, FineTune, LevelConfig,
                            LotteryTicketConfig, MovementConfig, NMConfig)
from .prune_training import fine_tune, lottery_ticket, movement_prune
from .schedules import SCHEDULES, AGPSchedule

__all__ = ["prune", "register_prune_handler", "default_prune_filter", "channel_plan",
           "iterative_prune", "PruneInputs", "PruneStep", "PruneHistory"]

FilterFn = Callable[[nn.Module, str], bool]
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
Targets = list[tuple[str, nn.Module]]


@dataclass(frozen=True)
class PruneInputs:
    """What a handler may need besides the targets: data, an example input, the loss, and
    the filter (structured pruning applies it to producers it finds in the graph)."""

    data: Iterable | None
    example_input: object | None
    loss_fn: LossFn | None
    filter_fn: FilterFn


Handler = Callable[[nn.Module, Targets, object, PruneInputs], None]
_HANDLERS: dict[type, Handler] = {}


def register_prune_handler(config_type: type) -> Callable[[Handler], Handler]:
    """Decorator: ``handler(model, targets, config, inputs)`` applies ``config_type``.

    ``targets`` are the selected (name, module) pairs, ``inputs`` a ``PruneInputs``.
    """
    def deco(fn: Handler) -> Handler:
        _HANDLERS[config_type] = fn
        return fn
    return deco


def default_prune_filter(module: nn.Module, name: str) -> bool:
    """Every nn.Linear and nn.Conv2d (the output layer too: exclude it with a filter_fn)."""
    return isinstance(module, MASKABLE)


def prune(model: nn.Module, config, *, filter_fn: FilterFn | None = None,
          data: Iterable | None = None, example_input=None,
          loss_fn: LossFn | None = None) -> nn.Module:
    """Apply the pruning ``config`` to the nn.Linear / nn.Conv2d layers ``filter_fn`` accepts;
    in place.

    Args:
        model: any nn.Module.
        config: LevelConfig, NMConfig, ChannelConfig, MovementConfig, LotteryTicketConfig,
            or any type with a registered handler.
        filter_fn: ``filter_fn(module, name) -> bool`` over the nn.Linear / nn.Conv2d
            layers (``name`` as in ``model.named_modules()``); default all of them.
        data: batches for the data-driven criteria (APoZ, mean activation: inputs; Taylor:
            (inputs, labels)) and the training-time pruners (a DataLoader of the train split).
        example_input: ChannelConfig: an input to trace shapes with (default: the first
            batch of ``data``).
        loss_fn: ``loss_fn(model, inputs, labels)`` for Taylor scores and training
            (default cross entropy).

    Returns the model. Example:
        >>> m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> prune(m, NMConfig(2, 4))[0].sparsity_kind
        '2:4'
        >>> m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> prune(m, ChannelConfig(0.5), example_input=torch.zeros(1, 8))[0].out_features
        8
    """
    handler = _HANDLERS.get(type(config))
    if handler is None:
        known = ", ".join(t.__name__ for t in _HANDLERS)
        raise TypeError(f"config: no handler for {type(config).__name__}; use one of {known} "
                        f"or register one with register_prune_handler")
    keep = default_prune_filter if filter_fn is None else filter_fn
    targets = [(n, m) for n, m in model.named_modules()
               if n and isinstance(m, MASKABLE) and keep(m, n)]
    if not targets:
        raise ValueError(f"prune: the model has no nn.Linear / nn.Conv2d accepted by "
                         f"filter_fn for {type(config).__name__}")
    handler(model, targets, config,
            PruneInputs(data, example_input, loss_fn,
                        lambda m, n: isinstance(m, MASKABLE) and keep(m, n)))
    return model


def _check_layer_names(config, targets: Targets) -> None:
    unknown = sorted(set(config.layer_sparsity or {}) - {n for n, _ in targets})
    if unknown:
        raise ValueError(f"layer_sparsity: {', '.join(map(repr, unknown))} are not among the "
                         f"selected layers ({', '.join(n for n, _ in targets)})")


def _existing(targets: Targets) -> dict[str, torch.Tensor]:
    return {n: m.weight_mask for n, m in targets if isinstance(m, MaskedLayer)}


@register_prune_handler(LevelConfig)
def _level(model, targets, config, inputs) -> None:
    _check_layer_names(config, targets)
    layers = dict(targets)
    scores = weight_scores(config.criterion, layers, model=model, data=inputs.data,
                           loss_fn=inputs.loss_fn)
    masks = weight_masks(scores, sparsity=config.sparsity, scope=config.scope,
                         layer_sparsity=config.layer_sparsity, existing=_existing(targets))
    for name, mask in masks.items():
        if not mask.all() or isinstance(layers[name], MaskedLayer):
            mask_layer(model, name, mask, "unstructured")


@register_prune_handler(NMConfig)
def _nm(model, targets, config, inputs) -> None:
    fits = [(n, m) for n, m in targets if reduction_length(m.weight) % config.m == 0]
    skipped = [n for n, m in targets if reduction_length(m.weight) % config.m]
    if not fits:
        raise ValueError(f"m: no selected layer has K (in_features, or Cin/groups*Kh*Kw) "
                         f"divisible by {config.m}; try a smaller m")
    if skipped:
        warnings.warn(f"NMConfig({config.kind}): left dense, K not a multiple of {config.m}: "
                      f"{', '.join(skipped)}", RuntimeWarning, stacklevel=3)
    scores = weight_scores(config.criterion, dict(fits), model=model, data=inputs.data,
                           loss_fn=inputs.loss_fn)
    for name, _ in fits:
        mask_layer(model, name, layer_nm_mask(scores[name], config.n, config.m), config.kind)


def _first_input(data, example_input):
    if example_input is not None:
        return example_input
    if data is None:
        raise ValueError("example_input: structured pruning traces the model; pass "
                         "example_input=<one input batch> (or data=)")
    for batch in data:
        return batch[0] if isinstance(batch, (tuple, list)) else batch
    raise ValueError("data: yielded no batch")


def _channel_groups(model: nn.Module, filter_fn: FilterFn | None, example_input):
    keep = default_prune_filter if filter_fn is None else filter_fn
    graph = trace_channels(model, example_input)
    return graph, channel_groups(graph, lambda n: isinstance(graph.modules[n], MASKABLE)
                                 and keep(graph.modules[n], n))


def channel_plan(model: nn.Module, config: ChannelConfig, *, filter_fn: FilterFn | None = None,
                 data: Iterable | None = None, example_input=None,
                 loss_fn: LossFn | None = None,
                 reference: Mapping[tuple[str, ...], int] | None = None) -> ChannelPlan:
    """The channels ``config`` would remove, without changing the model.

    Apply it with ``plan.remove_()`` (smaller model) or ``plan.zero_()`` (masked model), to
    ``model`` or to a copy with the same layer names. ``reference``: channels per group of
    the unpruned model ({group.layers: len(group.classes)} of its plan's ``groups``) when
    pruning in steps, so that ratios stay relative to it.
    """
    if not isinstance(config, ChannelConfig):
        raise TypeError(f"config: must be a ChannelConfig, got {type(config).__name__}")
    graph, groups = _channel_groups(model, filter_fn, _first_input(data, example_input))
    producers = {n for g in groups for n in g.layers}
    unknown = sorted(set(config.layer_sparsity or {}) - producers)
    if unknown:
        raise ValueError(f"layer_sparsity: {', '.join(map(repr, unknown))} produce no "
                         f"prunable channels; layers that do: {', '.join(sorted(producers))}")
    if not any(g.prunable for g in groups):
        why = "; ".join(graph.notes) or "no layer accepted by filter_fn produces channels"
        raise ValueError(f"prune: no channel of {type(model).__name__} can be removed ({why})")
    if config.criterion in DATA_CRITERIA and data is None:
        raise ValueError(f"data: the {config.criterion!r} criterion ranks channels from data; "
                         f"pass data=<DataLoader>")
    scores = channel_scores(config.criterion, graph, data=data, loss_fn=loss_fn)
    return select_channels(graph, scores, groups, sparsity=config.sparsity, scope=config.scope,
                           layer_sparsity=config.layer_sparsity,
                           min_channels=config.min_channels, reference=reference)


@register_prune_handler(ChannelConfig)
def _channels(model, targets, config, inputs) -> None:
    plan = channel_plan(model, config, filter_fn=inputs.filter_fn, data=inputs.data,
                        example_input=inputs.example_input, loss_fn=inputs.loss_fn)
    if config.remove:
        plan.remove_()
    else:
        plan.zero_()


@register_prune_handler(MovementConfig)
def _movement(model, targets, config, inputs) -> None:
    movement_prune(model, [n for n, _ in targets], config, inputs.data, inputs.loss_fn)


@register_prune_handler(LotteryTicketConfig)
def _lottery(model, targets, config, inputs) -> None:
    lottery_ticket(model, [n for n, _ in targets], config, inputs.data, inputs.loss_fn)


# --------------------------------------------------------------------------------------------
# Iterative pruning along a schedule
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PruneStep:
    """One step of ``iterative_prune``: the target sparsity, the metric after fine-tuning
    (None without ``evaluate_fn``) and the mean fine-tuning loss of the last epoch."""

    step: int
    sparsity: float
    metric: float | None
    loss: float


@dataclass(frozen=True)
class PruneHistory:
    """What ``iterative_prune`` did: the pruned model (same object, pruned in place), steps."""

    model: nn.Module
    steps: tuple[PruneStep, ...]

    def table(self) -> str:
        lines = [f"{'step':>4} {'sparsity':>9} {'metric':>9} {'loss':>9}"]
        for s in self.steps:
            metric = "-" if s.metric is None else f"{s.metric:.4f}"
            lines.append(f"{s.step:>4} {s.sparsity:>9.4f} {metric:>9} {s.loss:>9.4f}")
        return "\n".join(lines)


def _scheduled(config, schedule) -> list:
    """The config of each step: every ratio follows the schedule to its final value."""
    finals = schedule.targets(config.sparsity)
    per = {n: schedule.targets(s) for n, s in (config.layer_sparsity or {}).items()}
    return [dataclasses.replace(config, sparsity=s,
                                layer_sparsity={n: v[k] for n, v in per.items()} or None)
            for k, s in enumerate(finals)]


def iterative_prune(model: nn.Module, config, data: Iterable, *, schedule=AGPSchedule(),
                    finetune: FineTune = FineTune(), filter_fn: FilterFn | None = None,
                    example_input=None, loss_fn: LossFn | None = None,
                    evaluate_fn: Callable[[nn.Module], float] | None = None) -> PruneHistory:
    """Prune in steps along ``schedule``, fine-tuning after each (masks kept); in place.

    Step k prunes to the schedule's k-th target (of the final ``config.sparsity`` and of
    every ``layer_sparsity`` entry), measured against the unpruned model: masks only grow
    (LevelConfig) and channel groups shrink to round((1 - s_k) * C0) (ChannelConfig, which
    physically removes at every step). Then ``fine_tune(model, data, finetune)``.

    Args:
        model: the model to prune.
        config: a LevelConfig or ChannelConfig (remove=True) with the final sparsity.
        data: training batches (inputs, labels) for fine-tuning (and data criteria).
        schedule: OneShot(), LinearSchedule(n) or AGPSchedule(n) (default AGP, 3 steps).
        finetune: the fine-tuning run after each step.
        evaluate_fn: ``evaluate_fn(model) -> float`` recorded after each step.

    Returns a ``PruneHistory``. Example::

        h = iterative_prune(model, LevelConfig(0.8), train_loader, schedule=AGPSchedule(4),
                            evaluate_fn=lambda m: evaluate(m, test_loader))
        text = h.table()     # per step: sparsity, accuracy

    Reference: Zhu & Gupta, To prune, or not to prune, arXiv:1710.01878 (AGP); Han et al.,
    NeurIPS 2015 (iterative pruning and retraining).
    """
    if not isinstance(config, (LevelConfig, ChannelConfig)):
        raise TypeError(f"config: iterative pruning takes a LevelConfig or ChannelConfig, got "
                        f"{type(config).__name__} (NMConfig has one fixed sparsity: prune once "
                        f"and fine_tune; movement and lottery ticket schedule themselves)")
    if isinstance(config, ChannelConfig) and not config.remove:
        raise ValueError("config: iterative structured pruning removes channels at every "
                         "step; use ChannelConfig(remove=True)")
    if not isinstance(schedule, SCHEDULES):
        raise TypeError(f"schedule: must be OneShot(), LinearSchedule(n) or AGPSchedule(n), "
                        f"got {schedule!r}")
    reference = None
    if isinstance(config, ChannelConfig):
        _, groups = _channel_groups(model, filter_fn, _first_input(data, example_input))
        reference = {g.layers: len(g.classes) for g in groups}
    steps = []
    for k, cfg in enumerate(_scheduled(config, schedule), start=1):
        if reference is None:
            prune(model, cfg, filter_fn=filter_fn, data=data, example_input=example_input,
                  loss_fn=loss_fn)
        else:
            channel_plan(model, cfg, filter_fn=filter_fn, data=data,
                         example_input=example_input, loss_fn=loss_fn,
                         reference=reference).remove_()
        result = fine_tune(model, data, finetune, loss_fn=loss_fn)
        metric = None if evaluate_fn is None else float(evaluate_fn(model))
        steps.append(PruneStep(k, cfg.sparsity, metric, result.epoch_losses[-1]))
    return PruneHistory(model, tuple(steps))
