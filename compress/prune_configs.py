"""One frozen config per pruning technique, validated on construction.

Pass a config to ``lowbit.compress.prune(model, config)``; each config type has a handler
(``lowbit.compress.prune_api.register_prune_handler``). A bad field raises at construction
with a message that says how to fix the call.

* ``LevelConfig``: unstructured, the smallest weights by |w| (or Taylor (g w)^2) go; masks.
* ``NMConfig``: N:M semi-structured (2:4 ...), n kept of every m weights along K; masks.
* ``ChannelConfig``: structured, whole output channels (filters) go, ranked by a criterion
  (L1, L2, FPGM, Slim, APoZ, mean activation, Taylor); the model is physically shrunk.
* ``MovementConfig``: movement pruning, masks follow scores accumulated while fine-tuning.
* ``LotteryTicketConfig``: iterative magnitude pruning with weight rewinding.
* ``FineTune``: how the training-time pruners and ``iterative_prune`` fine-tune.
"""
from __future__ import annotations

import math
import types
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["LevelConfig", "NMConfig", "ChannelConfig", "MovementConfig", "LotteryTicketConfig",
           "FineTune", "SCOPES", "WEIGHT_CRITERIA", "CHANNEL_CRITERIA", "DATA_CRITERIA",
           "PRUNE_CONFIG_TYPES"]

SCOPES = ("layer", "global")
WEIGHT_CRITERIA = ("magnitude", "taylor")
CHANNEL_CRITERIA = ("l1", "l2", "fpgm", "slim", "apoz", "mean_activation", "taylor")
DATA_CRITERIA = ("apoz", "mean_activation", "taylor")  # need data= (taylor: with labels)
OPTIMIZERS = ("adam", "adamw", "sgd")


def _check_sparsity(name: str, value) -> None:
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not math.isfinite(value) or not 0.0 <= value < 1.0):
        raise ValueError(f"{name}: must be a fraction in [0, 1) of weights to remove, e.g. 0.5;"
                         f" got {value!r}")


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: unknown {value!r}; use one of "
                         f"{', '.join(map(repr, choices))}")


def _check_int(name: str, value, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}: must be an integer >= {low}, got {value!r}")


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: must be True or False, got {value!r}")


def _freeze_layer_sparsity(config) -> None:
    """Validate ``layer_sparsity`` and store it as a read-only mapping."""
    ls = config.layer_sparsity
    if ls is None:
        return
    if not isinstance(ls, Mapping):
        raise TypeError(f"layer_sparsity: must be a mapping of layer name -> sparsity, e.g. "
                        f"{{'conv2': 0.7}}, got {type(ls).__name__}")
    for name, s in ls.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"layer_sparsity: keys must be layer names as in "
                            f"model.named_modules(), got {name!r}")
        _check_sparsity(f"layer_sparsity[{name!r}]", s)
    if config.scope == "global":
        raise ValueError("layer_sparsity: per-layer ratios need scope='layer'; a global "
                         "ranking has one ratio for the whole model")
    object.__setattr__(config, "layer_sparsity", types.MappingProxyType(dict(ls)))


@dataclass(frozen=True)
class FineTune:
    """How to fine-tune between or during pruning steps (``lowbit.compress.train`` args).

    Args:
        epochs: passes over the training data (>= 1).
        lr: peak learning rate (cosine schedule).
        optimizer: "adam", "adamw" or "sgd".
        weight_decay: optimizer weight decay (>= 0).
        seed: seeds ``deterministic(seed)`` around the training run.

    Example:
        >>> FineTune(epochs=0)
        Traceback (most recent call last):
        ValueError: epochs: must be an integer >= 1, got 0
    """

    epochs: int = 2
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_int("epochs", self.epochs, 1)
        if (not isinstance(self.lr, (int, float)) or isinstance(self.lr, bool)
                or not math.isfinite(self.lr) or self.lr <= 0):
            raise ValueError(f"lr: must be a number > 0, e.g. 1e-3; got {self.lr!r}")
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if (not isinstance(self.weight_decay, (int, float)) or isinstance(self.weight_decay, bool)
                or not math.isfinite(self.weight_decay) or self.weight_decay < 0):
            raise ValueError(f"weight_decay: must be a number >= 0, got {self.weight_decay!r}")
        _check_int("seed", self.seed, 0)


@dataclass(frozen=True)
class LevelConfig:
    """Unstructured pruning (NNI's Level pruner): zero the lowest-scored weights; masks keep
    them zero while fine-tuning.

    Score: |w| ("magnitude", Han et al., Learning both Weights and Connections for Efficient
    Neural Networks, NeurIPS 2015) or the first-order Taylor estimate of the loss change
    (g w)^2 averaged over ``data`` batches ("taylor", Molchanov et al., Importance Estimation
    for Neural Network Pruning, CVPR 2019). The k = round(s * numel) lowest go.

    Args:
        sparsity: fraction of weights to remove, in [0, 1).
        scope: "layer": every layer loses ``sparsity`` of its weights (or its
            ``layer_sparsity`` entry); "global": one threshold over all selected layers.
        layer_sparsity: layer name -> sparsity overrides (scope "layer").
        criterion: "magnitude" or "taylor" (needs ``data=`` with labels).

    Example:
        >>> LevelConfig(sparsity=0.5, scope="global").criterion
        'magnitude'
    """

    sparsity: float = 0.5
    scope: str = "layer"
    layer_sparsity: Mapping[str, float] | None = None
    criterion: str = "magnitude"

    def __post_init__(self) -> None:
        _check_sparsity("sparsity", self.sparsity)
        _check_choice("scope", self.scope, SCOPES)
        _check_choice("criterion", self.criterion, WEIGHT_CRITERIA)
        _freeze_layer_sparsity(self)


@dataclass(frozen=True)
class NMConfig:
    """N:M semi-structured sparsity: in every group of ``m`` consecutive weights along the
    reduction dimension K (Linear: in_features; Conv2d: (Cin/groups)*Kh*Kw in the order of
    ``weight.reshape(Cout, -1)``), the ``n`` highest-scored are kept.

    2:4 (n=2, m=4) is the pattern of sparse tensor cores and of lowbit's 2:4 kernel (Mishra
    et al., Accelerating Sparse Deep Neural Networks, arXiv:2104.08378, 2021). Layers whose
    K is not a multiple of ``m`` stay dense (with a warning). Score as in ``LevelConfig``.

    Example:
        >>> NMConfig(n=4, m=4)
        Traceback (most recent call last):
        ValueError: n: must be an integer in 1..m-1 = 1..3 (kept weights per group of m), got 4
    """

    n: int = 2
    m: int = 4
    criterion: str = "magnitude"

    def __post_init__(self) -> None:
        _check_int("m", self.m, 2)
        if not isinstance(self.n, int) or isinstance(self.n, bool) or not 1 <= self.n < self.m:
            raise ValueError(f"n: must be an integer in 1..m-1 = 1..{self.m - 1} (kept weights "
                             f"per group of m), got {self.n!r}")
        _check_choice("criterion", self.criterion, WEIGHT_CRITERIA)

    @property
    def kind(self) -> str:
        """The pattern's name, e.g. "2:4"."""
        return f"{self.n}:{self.m}"

    @property
    def sparsity(self) -> float:
        return 1.0 - self.n / self.m


@dataclass(frozen=True)
class ChannelConfig:
    """Structured pruning: remove whole output channels (conv filters, Linear rows) and shrink
    every layer that depends on them (``lowbit.compress.depgraph``).

    Channels tied together (added in a residual, passed through depthwise convolutions and
    BatchNorm) form one group and are scored together: the mean of their producers' scores.

    Criteria (higher score = keep):
        "l1" / "l2": norm of the filter's weights (Li et al., Pruning Filters for Efficient
            ConvNets, ICLR 2017);
        "fpgm": sum of distances to the layer's other filters; filters near the geometric
            median are redundant (He et al., Filter Pruning via Geometric Median, CVPR 2019);
        "slim": |gamma| of the following BatchNorm (Liu et al., Learning Efficient
            Convolutional Networks through Network Slimming, ICCV 2017; train first with
            ``SlimRegularizer``);
        "apoz": 1 - the average percentage of zeros of the channel where the next layer reads
            it (Hu et al., Network Trimming, arXiv:1607.03250);
        "mean_activation": the mean of that activation (NNI's ActivationMeanRank);
        "taylor": (sum over the channel's parameters of g * w)^2, averaged over batches
            (Molchanov et al., CVPR 2019).
    apoz, mean_activation and taylor need ``data=`` (taylor with labels).

    Args:
        sparsity: fraction of each group's channels to remove, in [0, 1).
        criterion: one of the above.
        scope: "layer": each group loses ``sparsity`` of its channels (``layer_sparsity``
            overrides by layer name); "global": scores normalized by their group's mean,
            ranked over the model, ``sparsity`` of all prunable channels removed.
        layer_sparsity: layer name -> sparsity (scope "layer").
        remove: True: physically remove the channels (a smaller dense model); False: only
            zero them (the "masked" model, same shapes, same outputs as the removed one).
        min_channels: channels every group keeps at least (>= 1).

    Example:
        >>> ChannelConfig(criterion="l3")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: criterion: unknown 'l3'; use one of 'l1', 'l2', 'fpgm', ...
    """

    sparsity: float = 0.5
    criterion: str = "l1"
    scope: str = "layer"
    layer_sparsity: Mapping[str, float] | None = None
    remove: bool = True
    min_channels: int = 1

    def __post_init__(self) -> None:
        _check_sparsity("sparsity", self.sparsity)
        _check_choice("criterion", self.criterion, CHANNEL_CRITERIA)
        _check_choice("scope", self.scope, SCOPES)
        _check_bool("remove", self.remove)
        _check_int("min_channels", self.min_channels, 1)
        _freeze_layer_sparsity(self)


def _check_finetune(value) -> None:
    if not isinstance(value, FineTune):
        raise TypeError(f"finetune: must be a FineTune(epochs=..., lr=...), got {value!r}")


@dataclass(frozen=True)
class MovementConfig:
    """Movement pruning (Sanh et al., Movement Pruning: Adaptive Sparsity by Fine-Tuning,
    NeurIPS 2020), hard variant: while fine-tuning, each weight's score accumulates
    S -= dL/dW' * W (W' = W * mask, the weight the forward uses; the straight-through
    estimator gives scores to pruned weights too, so they can come back), and the masks keep
    the top (1 - s_t) scores, s_t following the cubic AGP curve from 0 at ``start`` to
    ``sparsity`` at ``end`` (fractions of the training steps). Needs ``data=`` (labels).
    Movement owns the masks of its layers: masks set earlier may be revived.

    Args:
        sparsity: final fraction of weights removed, in [0, 1).
        finetune: the fine-tuning run (epochs, lr, ...).
        scope: "layer" (each layer at ``sparsity``) or "global" (one ranking).
        start, end: where the sparsity ramp starts and ends, 0 <= start < end <= 1.
        update_every: optimizer steps between mask updates (>= 1).

    Example:
        >>> MovementConfig(start=0.8, end=0.5)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: start, end: need 0 <= start < end <= 1 ...
    """

    sparsity: float = 0.5
    finetune: FineTune = field(default_factory=lambda: FineTune(epochs=3))
    scope: str = "layer"
    start: float = 0.0
    end: float = 0.7
    update_every: int = 1

    def __post_init__(self) -> None:
        _check_sparsity("sparsity", self.sparsity)
        _check_finetune(self.finetune)
        _check_choice("scope", self.scope, SCOPES)
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                 for v in (self.start, self.end))
        if not ok or not 0.0 <= self.start < self.end <= 1.0:
            raise ValueError(f"start, end: need 0 <= start < end <= 1 (fractions of the "
                             f"training steps), got start={self.start!r}, end={self.end!r}")
        _check_int("update_every", self.update_every, 1)


@dataclass(frozen=True)
class LotteryTicketConfig:
    """Lottery ticket: iterative magnitude pruning with rewinding (Frankle & Carbin, The
    Lottery Ticket Hypothesis, ICLR 2019; rewinding to an early step: Frankle et al., Linear
    Mode Connectivity and the Lottery Ticket Hypothesis, ICML 2020).

    Each of ``rounds`` rounds: train (``finetune``), prune p = 1 - (1 - s)^(1/rounds) of the
    remaining weights by |w|, rewind the surviving weights (and every other parameter and
    buffer) to their values at optimizer step ``rewind_step`` of the first round (0: the
    weights passed in); then a last training run of the final ticket. Needs ``data=``.

    Args:
        sparsity: final fraction of weights removed, in [0, 1).
        rounds: prune-rewind rounds (>= 1).
        finetune: each training run.
        rewind_step: optimizer step of the first run whose weights are rewound to (>= 0,
            less than the run's steps).
        scope: "global" (one magnitude threshold, as in the paper) or "layer".

    Example:
        >>> LotteryTicketConfig(sparsity=0.8, rounds=2).scope
        'global'
    """

    sparsity: float = 0.8
    rounds: int = 3
    finetune: FineTune = field(default_factory=FineTune)
    rewind_step: int = 0
    scope: str = "global"

    def __post_init__(self) -> None:
        _check_sparsity("sparsity", self.sparsity)
        _check_int("rounds", self.rounds, 1)
        _check_finetune(self.finetune)
        _check_int("rewind_step", self.rewind_step, 0)
        _check_choice("scope", self.scope, SCOPES)


PRUNE_CONFIG_TYPES = (LevelConfig, NMConfig, ChannelConfig, MovementConfig, LotteryTicketConfig)
