"""Training and evaluation loops shared by every compression technique.

``train`` is a plain supervised loop (optimizer, cosine or constant learning rate, optional
gradient clipping) with two plug points, so QAT, pruning fine-tuning, distillation and NAS
reuse it instead of writing their own:

* ``loss_fn(model, inputs, targets) -> scalar tensor`` computes the loss of one batch; it
  calls the model itself, so a distillation loss can also run a teacher or read features
  that its own hooks captured. Default: cross entropy of ``model(inputs)``.
* ``callbacks``: objects with any of ``before_step(state)`` (after backward, before the
  optimizer step: gradient masks, L1 sub-gradients on BatchNorm scales),
  ``after_step(state)`` (re-apply pruning masks, update schedules) and ``epoch_end(state)``
  (``state.stop = True`` ends training early). ``state`` is a ``TrainState``.

``deterministic(seed)`` fixes everything that makes two runs differ on a CPU: the global
torch RNG (inside a fork, so the caller's stream is untouched afterwards), deterministic
algorithms and a fixed thread count (a float reduction split over another number of threads
adds in another order).

    >>> from lowbit.compress import deterministic, digits_loaders, evaluate, get_model, train
    >>> model = get_model("digits-mlp", pretrained=False)
    >>> train_loader, test_loader = digits_loaders(seed=0)
    >>> with deterministic(0):
    ...     result = train(model, train_loader, epochs=5, lr=3e-3)
    >>> evaluate(model, test_loader)   # accuracy in [0, 1]
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["train", "evaluate", "predict", "deterministic", "cross_entropy_loss", "TrainState",
           "TrainResult", "Callback", "TRAIN_THREADS"]

TRAIN_THREADS = 1  # tiny models: one thread is as fast as two and reduces in a fixed order

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy_loss(model: nn.Module, inputs: torch.Tensor,
                       targets: torch.Tensor) -> torch.Tensor:
    """The default ``loss_fn``: cross entropy of ``model(inputs)`` against class labels."""
    return F.cross_entropy(model(inputs), targets)


@dataclass
class TrainState:
    """What callbacks see: the model, the optimizer, where training is, the last loss."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    epochs: int
    epoch: int = 0
    step: int = 0          # optimizer steps taken so far (over all epochs)
    loss: float = math.nan  # the last batch's loss
    lr: float = 0.0
    stop: bool = False


class Callback:
    """Base class for ``train`` callbacks; override any of the three methods."""

    def before_step(self, state: TrainState) -> None:
        """After ``loss.backward()``, before ``optimizer.step()``."""

    def after_step(self, state: TrainState) -> None:
        """After ``optimizer.step()``."""

    def epoch_end(self, state: TrainState) -> None:
        """After the last batch of an epoch; set ``state.stop`` to end training."""


@dataclass(frozen=True)
class TrainResult:
    """Mean loss of every epoch, optimizer steps taken, wall time."""

    epoch_losses: tuple[float, ...]
    steps: int
    seconds: float
    stopped_early: bool = False


_EVENTS = ("before_step", "after_step", "epoch_end")


def _hooks(callbacks: Sequence) -> dict[str, list]:
    """Event name -> the bound methods to call, in the order the callbacks were given."""
    for cb in callbacks:
        if not any(callable(getattr(cb, e, None)) for e in _EVENTS):
            raise TypeError(f"callbacks: {type(cb).__name__} has none of {', '.join(_EVENTS)}")
    return {e: [getattr(cb, e) for cb in callbacks if callable(getattr(cb, e, None))]
            for e in _EVENTS}


def _make_optimizer(optimizer, params, lr: float, weight_decay: float,
                    momentum: float) -> torch.optim.Optimizer:
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               nesterov=momentum > 0)
    raise ValueError(f"optimizer: must be 'adam', 'adamw', 'sgd' or a torch.optim.Optimizer, "
                     f"got {optimizer!r}")


def _positive(name: str, value, integer: bool = False, allow_zero: bool = False) -> None:
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if (not ok_type or isinstance(value, bool) or not math.isfinite(value)
            or value < 0 or (value == 0 and not allow_zero)):
        kind = "an integer" if integer else "a number"
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: must be {kind} {bound}, got {value!r}")


def train(model: nn.Module, loader: Iterable, *, epochs: int, lr: float,
          optimizer: str | torch.optim.Optimizer = "adam", weight_decay: float = 0.0,
          momentum: float = 0.9, schedule: str = "cosine", loss_fn: LossFn | None = None,
          callbacks: Sequence = (), max_grad_norm: float | None = None,
          params: Iterable[torch.nn.Parameter] | None = None) -> TrainResult:
    """Train ``model`` on ``loader``'s ``(inputs, targets)`` batches; in place.

    Per step: loss = loss_fn(model, x, y); backward; [clip]; before_step; step; after_step.
    The learning rate follows ``schedule``: "cosine" (lr * (1 + cos(pi t / T)) / 2 over all
    T steps, Loshchilov & Hutter, SGDR, ICLR 2017) or "constant".

    Args:
        model: any ``nn.Module``; put in train mode during the loop, its previous mode
            restored afterwards.
        loader: an iterable of ``(inputs, targets)``, re-iterated every epoch (a
            DataLoader reshuffles from its own generator).
        epochs: passes over ``loader`` (>= 1).
        lr: peak learning rate (> 0); ignored when ``optimizer`` is an Optimizer instance
            (its own lr is the peak the schedule scales).
        optimizer: "adam" (default), "adamw", "sgd" (Nesterov momentum) or a ready
            ``torch.optim.Optimizer`` (e.g. with parameter groups for LSQ scales).
        weight_decay, momentum: for the optimizers built here.
        schedule: "cosine" (default; needs ``len(loader)``) or "constant".
        loss_fn: ``loss_fn(model, inputs, targets) -> scalar tensor``; default
            ``cross_entropy_loss``.
        callbacks: ``Callback``-like objects (see the module doc).
        max_grad_norm: clip the global gradient norm to this value (None: no clipping).
        params: the parameters to train (default: every parameter with requires_grad).

    Returns a ``TrainResult`` (per-epoch mean loss, steps, seconds). Determinism is the
    caller's choice: wrap the call in ``deterministic(seed)``.
    """
    _positive("epochs", epochs, integer=True)
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule: must be 'cosine' or 'constant', got {schedule!r}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        _positive("lr", lr)
    _positive("weight_decay", weight_decay, allow_zero=True)
    if max_grad_norm is not None:
        _positive("max_grad_norm", max_grad_norm)
    trainable = [p for p in (model.parameters() if params is None else params) if p.requires_grad]
    if not trainable and not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError("params: the model has no parameter with requires_grad=True to train")
    opt = _make_optimizer(optimizer, trainable, lr, weight_decay, momentum)
    hooks = _hooks(callbacks)
    loss_fn = cross_entropy_loss if loss_fn is None else loss_fn
    try:
        steps_per_epoch = len(loader)  # type: ignore[arg-type]
    except TypeError:
        steps_per_epoch = None
    if schedule == "cosine" and steps_per_epoch is None:
        raise ValueError("schedule: 'cosine' needs a loader with len() to know the total "
                         "steps; pass schedule='constant' for this loader")
    total_steps = None if steps_per_epoch is None else steps_per_epoch * epochs
    base_lrs = [g["lr"] for g in opt.param_groups]

    state = TrainState(model=model, optimizer=opt, epochs=epochs, lr=base_lrs[0])
    was_training = model.training
    losses = []
    start = time.perf_counter()
    model.train()
    try:
        for epoch in range(epochs):
            state.epoch = epoch
            total, batches = 0.0, 0
            for inputs, targets in loader:
                if schedule == "cosine":
                    factor = 0.5 * (1.0 + math.cos(math.pi * state.step / total_steps))
                    for g, base in zip(opt.param_groups, base_lrs):
                        g["lr"] = base * factor
                state.lr = opt.param_groups[0]["lr"]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model, inputs, targets)
                if loss.dim() != 0:
                    raise ValueError(f"loss_fn: must return a scalar tensor, got shape "
                                     f"{tuple(loss.shape)}")
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}, step "
                                             f"{state.step}: lower lr or check the inputs")
                loss.backward()
                if max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
                state.loss = float(loss.detach())
                for h in hooks["before_step"]:
                    h(state)
                opt.step()
                state.step += 1
                for h in hooks["after_step"]:
                    h(state)
                total += state.loss
                batches += 1
            if batches == 0:
                raise ValueError("loader: yielded no batch")
            losses.append(total / batches)
            for h in hooks["epoch_end"]:
                h(state)
            if state.stop:
                break
    finally:
        model.train(was_training)
    return TrainResult(tuple(losses), state.step, time.perf_counter() - start,
                       stopped_early=state.stop and len(losses) < epochs)


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted classes, labels) over ``loader``, in eval mode (previous mode restored)."""
    was_training = model.training
    model.eval()
    preds, labels = [], []
    try:
        for inputs, targets in loader:
            preds.append(model(inputs).argmax(dim=-1))
            labels.append(targets)
    finally:
        model.train(was_training)
    if not preds:
        raise ValueError("loader: yielded no batch")
    return torch.cat(preds), torch.cat(labels)


def evaluate(model: nn.Module, loader: Iterable) -> float:
    """Top-1 accuracy of ``model`` on ``loader``, a fraction in [0, 1].

    Runs in eval mode under ``torch.no_grad`` (BatchNorm uses its running statistics,
    dropout is off) and restores the model's previous mode.

    >>> evaluate(get_model("digits-cnn"), digits_loaders()[1])   # doctest: +SKIP
    0.98...
    """
    preds, labels = predict(model, loader)
    return float((preds == labels).float().mean())


@contextlib.contextmanager
def deterministic(seed: int = 0, threads: int = TRAIN_THREADS):
    """Run the body reproducibly: torch seeded with ``seed`` (in a forked RNG state, restored
    on exit), deterministic algorithms on, ``threads`` intra-op threads (restored on exit).
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed: must be a non-negative integer, got {seed!r}")
    _positive("threads", threads, integer=True)
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
            torch.set_num_threads(prev_threads)
