"""Pruning that trains: fine-tuning with masks kept, the Network Slimming regularizer,
movement pruning and the lottery ticket procedure.

``fine_tune`` is ``training.train`` under ``deterministic(seed)`` with the ``KeepMasks``
callback, so pruned weights stay exactly zero. ``movement_prune`` and ``lottery_ticket``
are the handlers behind ``MovementConfig`` and ``LotteryTicketConfig`` (call them through
``lowbit.compress.prune``).
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from .criteria import weight_scores
from .depgraph import _BN
from .masks import KeepMasks, MaskedLayer, apply_masks_, mask_layer, weight_masks
from .prune_configs import FineTune, LotteryTicketConfig, MovementConfig
from .schedules import agp_sparsity
from .training import Callback, TrainResult, deterministic, train

__all__ = ["fine_tune", "SlimRegularizer", "movement_prune", "lottery_ticket"]

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def fine_tune(model: nn.Module, data: Iterable, finetune: FineTune = FineTune(), *,
              loss_fn: LossFn | None = None, callbacks: Sequence = (),
              keep_masks: bool = True) -> TrainResult:
    """Train ``model`` on ``data`` as ``finetune`` says, pruned weights kept at zero.

    Runs ``train`` under ``deterministic(finetune.seed)``; ``KeepMasks`` re-zeroes masked
    weights after every step (``keep_masks=False``: not, for pruners that revive weights).

    Example::

        prune(model, LevelConfig(0.5))
        fine_tune(model, train_loader, FineTune(epochs=2))
    """
    if not isinstance(finetune, FineTune):
        raise TypeError(f"finetune: must be a FineTune(epochs=..., lr=...), got {finetune!r}")
    if data is None:
        raise ValueError("data: fine-tuning needs training data; pass data=<DataLoader of "
                         "(inputs, labels)>")
    cbs = ([KeepMasks(model)] if keep_masks else []) + list(callbacks)
    with deterministic(finetune.seed):
        return train(model, data, epochs=finetune.epochs, lr=finetune.lr,
                     optimizer=finetune.optimizer, weight_decay=finetune.weight_decay,
                     loss_fn=loss_fn, callbacks=cbs)


class SlimRegularizer(Callback):
    """``train`` callback: L1 penalty on BatchNorm scales, the sparsity-inducing training of
    Network Slimming (Liu et al., ICCV 2017): adds ``penalty * sign(gamma)`` (the
    subgradient of penalty * |gamma|) to every affine BatchNorm's dL/dgamma before each step.

    The paper uses penalty 1e-4 (VGG) and 1e-5 (ResNet, DenseNet) on CIFAR. Train with it,
    then ``prune(model, ChannelConfig(criterion="slim"))``.

    Example::

        train(model, loader, epochs=5, lr=1e-3, callbacks=[SlimRegularizer(model)])
        prune(model, ChannelConfig(0.5, criterion="slim"), example_input=x)
    """

    def __init__(self, model: nn.Module, penalty: float = 1e-4) -> None:
        if not isinstance(penalty, (int, float)) or isinstance(penalty, bool) or penalty <= 0:
            raise ValueError(f"penalty: must be a number > 0, e.g. 1e-4; got {penalty!r}")
        self.penalty = float(penalty)
        self.scales = [m.weight for m in model.modules()
                       if isinstance(m, _BN) and m.weight is not None]
        if not self.scales:
            raise ValueError("model: SlimRegularizer penalizes BatchNorm scales and the model "
                             "has no affine BatchNorm layer")

    def before_step(self, state) -> None:
        with torch.no_grad():
            for w in self.scales:
                if w.grad is not None:
                    w.grad.add_(torch.sign(w), alpha=self.penalty)


def _weight_grad(mod: nn.Module, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """dL/dW' of a Linear / Conv2d from its input ``x`` and output gradient ``g``."""
    if isinstance(mod, nn.Linear):
        return g.reshape(-1, g.shape[-1]).T @ x.reshape(-1, x.shape[-1])
    return torch.nn.grad.conv2d_weight(x, mod.weight.shape, g, mod.stride, mod.padding,
                                       mod.dilation, mod.groups)


def _check_movement_layer(name: str, mod: nn.Module) -> None:
    if isinstance(mod, nn.Conv2d) and (isinstance(mod.padding, str)
                                       or mod.padding_mode != "zeros"):
        raise ValueError(f"layer {name!r}: movement pruning needs integer zero padding "
                         f"(padding={mod.padding!r}, padding_mode={mod.padding_mode!r}); "
                         f"leave it out with filter_fn")


def movement_prune(model: nn.Module, names: list[str], config: MovementConfig, data: Iterable,
                   loss_fn: LossFn | None = None) -> dict[str, MaskedLayer]:
    """Movement pruning of the layers ``names`` while fine-tuning (see ``MovementConfig``).

    During the run the stored weights of masked-out entries are kept (they may come back);
    at the end they are zeroed and the final masks hold ``config.sparsity``.
    """
    if data is None:
        raise ValueError("data: movement pruning fine-tunes; pass data=<DataLoader of "
                         "(inputs, labels)>")
    for n in names:
        _check_movement_layer(n, model.get_submodule(n))
    layers = {n: mask_layer(model, n, torch.ones_like(model.get_submodule(n).weight,
                                                      dtype=torch.bool), "unstructured")
              for n in names}
    scores = {n: torch.zeros_like(m.weight, dtype=torch.float32) for n, m in layers.items()}

    def hook_for(name: str):
        def hook(mod, args, out):
            if out.requires_grad:
                x = args[0].detach()

                def accumulate(g):  # S -= dL/dW' * W (straight-through: every weight)
                    scores[name].sub_((_weight_grad(mod, x, g) * mod.weight.detach()).float())
                out.register_hook(accumulate)
        return hook

    try:
        total = config.finetune.epochs * len(data)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError("data: movement pruning needs a loader with len() to lay out its "
                         "sparsity schedule") from None
    t0 = round(config.start * total)
    span = max(round(config.end * total) - t0, 1)

    class Schedule(Callback):
        def after_step(self, state) -> None:
            if state.step % config.update_every and state.step != total:
                return
            s = agp_sparsity(state.step - t0, span, config.sparsity)
            for n, m in weight_masks(scores, sparsity=s, scope=config.scope).items():
                layers[n].weight_mask.copy_(m)

    handles = [m.register_forward_hook(hook_for(n)) for n, m in layers.items()]
    try:
        fine_tune(model, data, config.finetune, loss_fn=loss_fn, callbacks=[Schedule()],
                  keep_masks=False)
    finally:
        for h in handles:
            h.remove()
    final = weight_masks(scores, sparsity=config.sparsity, scope=config.scope)
    for n, m in final.items():
        layers[n].weight_mask.copy_(m)
        layers[n].apply_mask_()
    return layers


class _Snapshot(Callback):
    """Deep-copies the model's state_dict after optimizer step ``step``."""

    def __init__(self, model: nn.Module, step: int) -> None:
        self.model, self.step, self.state = model, step, None

    def after_step(self, state) -> None:
        if state.step == self.step:
            self.state = copy.deepcopy(self.model.state_dict())


def lottery_ticket(model: nn.Module, names: list[str], config: LotteryTicketConfig,
                   data: Iterable, loss_fn: LossFn | None = None) -> dict[str, MaskedLayer]:
    """Iterative magnitude pruning with rewinding of the layers ``names`` (see
    ``LotteryTicketConfig``); returns the masked layers of the trained final ticket."""
    if data is None:
        raise ValueError("data: the lottery ticket procedure trains; pass data=<DataLoader "
                         "of (inputs, labels)>")
    for n in names:
        mod = model.get_submodule(n)
        mask_layer(model, n, torch.ones_like(mod.weight, dtype=torch.bool), "unstructured")
    snapshot = _Snapshot(model, config.rewind_step)
    rewind = copy.deepcopy(model.state_dict()) if config.rewind_step == 0 else None
    keep_rate = (1.0 - config.sparsity) ** (1.0 / config.rounds)
    for r in range(config.rounds):
        first_with_snapshot = r == 0 and rewind is None
        fine_tune(model, data, config.finetune, loss_fn=loss_fn,
                  callbacks=[snapshot] if first_with_snapshot else [])
        if first_with_snapshot:
            if snapshot.state is None:
                raise ValueError(f"rewind_step: {config.rewind_step} is beyond the first "
                                 f"training run's steps; lower it")
            rewind = snapshot.state
        layers = {n: model.get_submodule(n) for n in names}
        masks = weight_masks(weight_scores("magnitude", layers),
                             sparsity=1.0 - keep_rate ** (r + 1), scope=config.scope,
                             existing={n: m.weight_mask for n, m in layers.items()})
        for n, m in masks.items():
            mask_layer(model, n, m, "unstructured")
        # rewind every parameter and buffer but the masks
        model.load_state_dict({k: v for k, v in rewind.items()
                               if not k.endswith("weight_mask")}, strict=False)
        apply_masks_(model)
    fine_tune(model, data, config.finetune, loss_fn=loss_fn)
    return {n: model.get_submodule(n) for n in names}
