"""Knowledge distillation: ``distill(teacher, student, data, config)``.

Three kinds of knowledge (seed 002, "Knowledge Format"), combined in one loss:

* response-based, Hinton et al., "Distilling the Knowledge in a Neural Network" (2015):

      L_kd = (1 - lam) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + lam * CE(z_s, y)

  (``hinton_loss``; the T^2 keeps the soft-target gradients on the scale of the hard ones);
* feature-based, FitNets (Romero et al., ICLR 2015): for each hint pair (student layer,
  teacher layer), a learned adapter r (1x1 Conv2d for [B, C, H, W] features, Linear on the
  last dimension otherwise) maps the student's feature to the teacher's shape and
  L_hint = mean((r(f_s) - f_t)^2) (``fitnets_loss``). FitNets trains the hints in a first
  stage; here they are a term of the one loss, trained jointly with the rest;
* relation-based, RKD (Park et al., "Relational Knowledge Distillation", CVPR 2019): on
  embeddings e (a named layer's output flattened to [B, D], or the logits), the distance
  term compares the pairwise distances normalized by their mean, the angle term the cosines
  of the angles of every triple, both with the Huber loss (``rkd_distance_loss``,
  ``rkd_angle_loss``).

Three schemes (seed 002, "Distillation Schemes"):

* ``"offline"``: a trained teacher, frozen (eval mode, no gradients), teaches the student;
* ``"online"``: deep mutual learning (Zhang et al., CVPR 2018): ``teacher`` and ``student``
  are two peers trained together from the labels, each also pulled towards the other's
  softened prediction (the other's logits detached): L = L_kd(z_1; z_2) + L_kd(z_2; z_1).
  Both peers are updated in the same optimizer step (the paper alternates the two updates);
* ``"self"``: snapshot self-distillation in one generation (in the spirit of Yang et al.,
  "Snapshot Distillation", CVPR 2019): no separate teacher; the student trains on the labels
  for the first ``snapshot_every`` epochs, then a frozen copy of itself taken every
  ``snapshot_every`` epochs is its teacher.

Training runs through ``training.train`` (the distillation terms are its ``loss_fn``, the
snapshots an ``epoch_end`` callback), so schedules, optimizers and callbacks are shared.

    >>> from lowbit.compress import DistillConfig, distill, digits_loaders, get_model
    >>> from lowbit.compress.models import DigitsMLP
    >>> teacher, student = get_model("digits-cnn"), DigitsMLP(hidden=(32, 16))
    >>> train_loader, _ = digits_loaders(seed=0)
    >>> result = distill(teacher, student, train_loader, DistillConfig(temperature=4.0),
    ...                  epochs=30, lr=3e-3)           # doctest: +SKIP
"""
from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .training import Callback, TrainResult, TrainState, train

__all__ = ["DistillConfig", "DistillResult", "distill", "hinton_loss", "fitnets_loss",
           "hint_adapter", "rkd_distance_loss", "rkd_angle_loss", "SCHEMES"]

SCHEMES = ("offline", "online", "self")


def _check_number(name: str, value, lo: float, hi: float = math.inf, *, lo_open: bool = False
                  ) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value > hi or value < lo or (lo_open and value == lo):
        left = "(" if lo_open else "["
        right = "]" if math.isfinite(hi) else ")"
        raise ValueError(f"{name}: must be a number in {left}{lo}, {hi}{right}, got {value!r}")


def _layer_pair(name: str, pair) -> tuple[str, str]:
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(s, str) and s for s in pair)):
        raise ValueError(f"{name}: must be a (student layer name, teacher layer name) pair of "
                         f"non-empty strings, got {pair!r}")
    return (pair[0], pair[1])


@dataclass(frozen=True)
class DistillConfig:
    """How to distill (see the module doc for every term and scheme).

    Args:
        scheme: "offline" (frozen teacher), "online" (deep mutual learning of two peers) or
            "self" (snapshot self-distillation; ``distill`` takes ``teacher=None``).
        temperature: T > 0 of the softened softmax.
        hard_weight: lam in [0, 1], the weight of the hard-label cross entropy; the soft
            KL term has weight 1 - lam.
        hints: FitNets pairs ``(student layer, teacher layer)``, names as in
            ``named_modules()``; each gets a learned adapter.
        hint_weight: weight of each hint's mean squared error.
        relation_layers: ``(student layer, teacher layer)`` whose outputs are the RKD
            embeddings, or None to use the logits.
        rkd_distance_weight, rkd_angle_weight: weights of the RKD terms (the paper uses 25
            and 50 on its embeddings); 0 turns a term off.
        snapshot_every: "self" only: epochs between teacher snapshots (>= 1).

    Feature and relation terms need a teacher distinct from the student being trained:
    "offline" and "self" take them, "online" does not.

    Example:
        >>> DistillConfig(scheme="online", hints=[("fc1", "conv2")])   # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: hints: the online scheme distills logits between peers; ...
    """

    scheme: str = "offline"
    temperature: float = 4.0
    hard_weight: float = 0.5
    hints: tuple[tuple[str, str], ...] = ()
    hint_weight: float = 1.0
    relation_layers: tuple[str, str] | None = None
    rkd_distance_weight: float = 0.0
    rkd_angle_weight: float = 0.0
    snapshot_every: int = 1

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme: must be one of {', '.join(map(repr, SCHEMES))}, "
                             f"got {self.scheme!r}")
        _check_number("temperature", self.temperature, 0.0, lo_open=True)
        _check_number("hard_weight", self.hard_weight, 0.0, 1.0)
        _check_number("hint_weight", self.hint_weight, 0.0)
        _check_number("rkd_distance_weight", self.rkd_distance_weight, 0.0)
        _check_number("rkd_angle_weight", self.rkd_angle_weight, 0.0)
        if not isinstance(self.hints, (tuple, list)):
            raise ValueError(f"hints: must be a sequence of (student layer, teacher layer) "
                             f"pairs, got {self.hints!r}")
        hints = tuple(_layer_pair("hints", p) for p in self.hints)
        if len({s for s, _ in hints}) != len(hints):
            raise ValueError("hints: a student layer appears twice; give each student layer "
                             "one teacher layer")
        object.__setattr__(self, "hints", hints)
        if self.relation_layers is not None:
            object.__setattr__(self, "relation_layers",
                               _layer_pair("relation_layers", self.relation_layers))
            if not self.uses_relations:
                raise ValueError("relation_layers: has no effect while rkd_distance_weight and "
                                 "rkd_angle_weight are 0; set one of them or drop it")
        if (not isinstance(self.snapshot_every, int) or isinstance(self.snapshot_every, bool)
                or self.snapshot_every < 1):
            raise ValueError(f"snapshot_every: must be an integer >= 1, got "
                             f"{self.snapshot_every!r}")
        if self.scheme == "online" and hints:
            raise ValueError("hints: the online scheme distills logits between peers; feature "
                             "hints need a fixed teacher: use scheme='offline' or 'self'")
        if self.scheme == "online" and self.uses_relations:
            raise ValueError("rkd_distance_weight, rkd_angle_weight: the online scheme distills "
                             "logits between peers; use scheme='offline' or 'self' for RKD")

    @property
    def uses_relations(self) -> bool:
        return self.rkd_distance_weight > 0 or self.rkd_angle_weight > 0


@dataclass(frozen=True, eq=False)
class DistillResult:
    """What ``distill`` did: the training record, the trained hint adapters (one per
    ``config.hints`` pair, in order) and, for "self", how many snapshots were taken."""

    train: TrainResult
    adapters: nn.ModuleList
    snapshots: int = 0


# ------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------
def hinton_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                targets: torch.Tensor | None, temperature: float, hard_weight: float
                ) -> torch.Tensor:
    """(1 - lam) T^2 KL(p_t || p_s) + lam CE(z_s, y), with p = softmax(z / T); KL averaged
    over the batch (rows), CE the mean cross entropy. Hinton et al. 2015.

    ``teacher_logits`` carry no gradient here (detached); ``targets`` may be None only when
    ``hard_weight`` is 0.

    Example:
        >>> z = torch.tensor([[2.0, 0.0]])
        >>> float(hinton_loss(z, z, torch.tensor([0]), 2.0, 0.0))   # same logits: KL = 0
        0.0
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"teacher_logits: shape {tuple(teacher_logits.shape)} differs from the "
                         f"student's {tuple(student_logits.shape)}")
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits / t, dim=-1)
    p_t = F.softmax(teacher_logits.detach() / t, dim=-1)
    rows = student_logits.numel() // student_logits.shape[-1]
    kl = F.kl_div(log_p_s.reshape(rows, -1), p_t.reshape(rows, -1), reduction="batchmean")
    loss = (1.0 - hard_weight) * t * t * kl
    if hard_weight > 0:
        if targets is None:
            raise ValueError("targets: the hard-label term (hard_weight > 0) needs labels")
        loss = loss + hard_weight * F.cross_entropy(student_logits.reshape(rows, -1),
                                                    targets.reshape(-1))
    return loss


def hint_adapter(student_shape: Sequence[int], teacher_shape: Sequence[int]) -> nn.Module:
    """FitNets regressor from a student feature shape to a teacher one (batch dim first).

    [B, Cs, H, W] -> [B, Ct, H, W]: Conv2d(Cs, Ct, 1, bias=False); [B, ..., Ds] ->
    [B, ..., Dt] with equal middle dims: Linear(Ds, Dt, bias=False). Other pairs raise.
    """
    s, t = tuple(student_shape), tuple(teacher_shape)
    if len(s) != len(t) or len(s) < 2 or s[0] != t[0]:
        raise ValueError(f"hints: student feature {list(s)} and teacher feature {list(t)} "
                         f"cannot be matched; pick layers with the same rank and batch size")
    if len(s) == 4:
        if s[2:] != t[2:]:
            raise ValueError(f"hints: student feature {list(s)} and teacher feature {list(t)} "
                             f"differ in spatial size; pick layers of equal H x W")
        return nn.Conv2d(s[1], t[1], 1, bias=False)
    if s[1:-1] != t[1:-1]:
        raise ValueError(f"hints: student feature {list(s)} and teacher feature {list(t)} "
                         f"differ in their middle dimensions; only the last may differ")
    return nn.Linear(s[-1], t[-1], bias=False)


def fitnets_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor,
                 adapter: nn.Module | None = None) -> torch.Tensor:
    """FitNets hint loss mean((r(f_s) - f_t)^2), r = ``adapter`` (identity when None);
    the teacher feature is detached. Romero et al., ICLR 2015."""
    guided = student_feature if adapter is None else adapter(student_feature)
    if guided.shape != teacher_feature.shape:
        raise ValueError(f"teacher_feature: shape {tuple(teacher_feature.shape)} differs from "
                         f"the adapted student feature's {tuple(guided.shape)}")
    return F.mse_loss(guided, teacher_feature.detach())


def _embeddings(name: str, e: torch.Tensor) -> torch.Tensor:
    if e.dim() < 1:
        raise ValueError(f"{name}: expected a batch of embeddings [B, ...], got a scalar")
    return e.reshape(e.shape[0], -1)


def _normalized_distances(e: torch.Tensor) -> torch.Tensor:
    """Distances ||e_i - e_j|| of the ordered pairs i != j, divided by their mean."""
    n = e.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)
    diff = (e[:, None, :] - e[None, :, :])[off]                  # [n(n-1), D]
    d = diff.square().sum(dim=-1).clamp(min=1e-12).sqrt()         # no infinite gradient at 0
    return d / d.mean().clamp(min=1e-12)


def _paired_embeddings(student: torch.Tensor, teacher: torch.Tensor):
    """Both embeddings flattened to [B, D] (the teacher's detached), batches checked equal."""
    s = _embeddings("student", student)
    t = _embeddings("teacher", teacher).detach()
    if s.shape[0] != t.shape[0]:
        raise ValueError(f"teacher: batch {t.shape[0]} differs from the student's {s.shape[0]}")
    return s, t


def rkd_distance_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD distance term: mean over ordered pairs i != j of
    Huber(||s_i - s_j|| / mu_s, ||t_i - t_j|| / mu_t), mu the mean pair distance, Huber
    delta 1 (smooth L1). Embeddings are flattened to [B, D]; 0 for a batch of one.
    Park et al., CVPR 2019 (eq. 3-4)."""
    s, t = _paired_embeddings(student, teacher)
    if s.shape[0] < 2:
        return s.sum() * 0.0
    return F.smooth_l1_loss(_normalized_distances(s), _normalized_distances(t))


def _angles(e: torch.Tensor) -> torch.Tensor:
    """cos of the angle at e_j between e_i and e_k, for triples of distinct i, j, k."""
    n = e.shape[0]
    diff = e[:, None, :] - e[None, :, :]                          # [i, j] = e_i - e_j
    norm = diff.square().sum(-1, keepdim=True).clamp(min=1e-24).sqrt()
    unit = diff / norm
    cos = torch.einsum("ijd,kjd->ijk", unit, unit)                # <u_ij, u_kj>
    idx = torch.arange(n)
    i, j, k = idx[:, None, None], idx[None, :, None], idx[None, None, :]
    distinct = (i != j) & (j != k) & (i != k)
    return cos[distinct]


def rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD angle term: mean over triples of distinct (i, j, k) of
    Huber(cos angle_s(i, j, k), cos angle_t(i, j, k)), the angle at j between i and k,
    cos = <(e_i - e_j) / ||e_i - e_j||, (e_k - e_j) / ||e_k - e_j||>. Embeddings flattened to
    [B, D]; 0 for a batch smaller than 3. Park et al., CVPR 2019 (eq. 5-6)."""
    s, t = _paired_embeddings(student, teacher)
    if s.shape[0] < 3:
        return s.sum() * 0.0
    return F.smooth_l1_loss(_angles(s), _angles(t))


# ------------------------------------------------------------------------------------------
# Feature capture
# ------------------------------------------------------------------------------------------
class _Taps:
    """Forward hooks keeping the last output of named modules of one model."""

    def __init__(self, model: nn.Module, names: Iterable[str]) -> None:
        modules = dict(model.named_modules())  # names checked by _check_layers
        self.out: dict[str, torch.Tensor] = {}
        self.handles = [modules[n].register_forward_hook(self._keeper(n))
                        for n in dict.fromkeys(names)]

    def _keeper(self, name: str):
        def keep(module, args, output):
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"hints: layer {name!r} returns {type(output).__name__}, not a "
                                f"tensor; pick a layer whose output is one tensor")
            self.out[name] = output
        return keep

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


class _Trainee(nn.Module):
    """What ``train`` optimizes: the student, the online peer, the hint adapters."""

    def __init__(self, student: nn.Module, peer: nn.Module | None, adapters: nn.ModuleList
                 ) -> None:
        super().__init__()
        self.student = student
        self.peer = peer
        self.adapters = adapters


class _Snapshots(Callback):
    """"self" scheme: every ``every`` epochs the teacher becomes a frozen copy of the student
    (none after the last epoch: it would teach nothing)."""

    def __init__(self, loss: "_DistillLoss", every: int) -> None:
        self.loss = loss
        self.every = every
        self.taken = 0

    def epoch_end(self, state: TrainState) -> None:
        if (state.epoch + 1) % self.every == 0 and state.epoch + 1 < state.epochs:
            self.loss.snapshot(state.model.student)
            self.taken += 1


def _frozen_copy(model: nn.Module) -> nn.Module:
    snap = copy.deepcopy(model).eval()
    for p in snap.parameters():
        p.requires_grad_(False)
    return snap


class _DistillLoss:
    """``loss_fn`` of ``train``: the configured terms on one batch."""

    def __init__(self, config: DistillConfig, teacher: nn.Module | None, student: nn.Module
                 ) -> None:
        self.cfg = config
        self.student_names = [s for s, _ in config.hints]
        self.teacher_names = [t for _, t in config.hints]
        if config.relation_layers is not None:
            self.student_names.append(config.relation_layers[0])
            self.teacher_names.append(config.relation_layers[1])
        self.s_taps = _Taps(student, self.student_names)
        self.teacher = None
        self.t_taps = None
        if teacher is not None:
            self.set_teacher(teacher)

    def snapshot(self, student: nn.Module) -> None:
        """Make a frozen copy of ``student`` the teacher (copied without the feature hooks,
        which would otherwise fire into the student's taps)."""
        self.s_taps.remove()
        try:
            snap = _frozen_copy(student)
        finally:
            self.s_taps = _Taps(student, self.student_names)
        self.set_teacher(snap)

    def set_teacher(self, teacher: nn.Module) -> None:
        if self.t_taps is not None:
            self.t_taps.remove()
        self.teacher = teacher
        self.t_taps = _Taps(teacher, self.teacher_names)

    def remove(self) -> None:
        self.s_taps.remove()
        if self.t_taps is not None:
            self.t_taps.remove()

    def __call__(self, box: _Trainee, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        z_s = box.student(x)
        if box.peer is not None:  # online: mutual learning
            z_p = box.peer(x)
            return (hinton_loss(z_s, z_p.detach(), y, cfg.temperature, cfg.hard_weight)
                    + hinton_loss(z_p, z_s.detach(), y, cfg.temperature, cfg.hard_weight))
        if self.teacher is None:  # self, before the first snapshot
            return F.cross_entropy(z_s, y)
        with torch.no_grad():
            z_t = self.teacher(x)
        loss = hinton_loss(z_s, z_t, y, cfg.temperature, cfg.hard_weight)
        s_out, t_out = self.s_taps.out, self.t_taps.out
        for (s_name, t_name), adapter in zip(cfg.hints, box.adapters):
            loss = loss + cfg.hint_weight * fitnets_loss(s_out[s_name], t_out[t_name], adapter)
        if cfg.uses_relations:
            if cfg.relation_layers is None:
                e_s, e_t = z_s, z_t
            else:
                e_s, e_t = s_out[cfg.relation_layers[0]], t_out[cfg.relation_layers[1]]
            if cfg.rkd_distance_weight > 0:
                loss = loss + cfg.rkd_distance_weight * rkd_distance_loss(e_s, e_t)
            if cfg.rkd_angle_weight > 0:
                loss = loss + cfg.rkd_angle_weight * rkd_angle_loss(e_s, e_t)
        return loss


def _check_layers(cfg: DistillConfig, student: nn.Module, teacher: nn.Module | None) -> None:
    """Every layer the config names exists (teacher None: "self", the student's own names)."""
    teacher = student if teacher is None else teacher
    pairs = [("hints", p) for p in cfg.hints]
    if cfg.relation_layers is not None:
        pairs.append(("relation_layers", cfg.relation_layers))
    for field, names in pairs:
        for role, model, name in (("student", student, names[0]),
                                  ("teacher", teacher, names[1])):
            modules = dict(model.named_modules())
            if not name or name not in modules:
                known = ", ".join(n for n in modules if n)
                raise ValueError(f"{field}: the {role} has no layer {name!r}; its layers: "
                                 f"{known}")


def _first_input(data: Iterable) -> torch.Tensor:
    """The inputs of ``data``'s first batch, leaving every random stream as it was (the
    global one and a DataLoader's own generator), so training sees the order it would
    without this peek."""
    gens = {id(g): g for g in (getattr(data, "generator", None),
                               getattr(getattr(data, "sampler", None), "generator", None))
            if isinstance(g, torch.Generator)}
    states = [(g, g.get_state()) for g in gens.values()]
    with torch.random.fork_rng(devices=[]):
        try:
            batch = next(iter(data), None)
        finally:
            for g, state in states:
                g.set_state(state)
    if batch is None:
        raise ValueError("data: yielded no batch")
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"data: batches must be (inputs, targets) with tensor inputs, got "
                        f"{type(x).__name__}")
    return x


@torch.no_grad()
def _build_adapters(cfg: DistillConfig, student: nn.Module, teacher: nn.Module,
                    x: torch.Tensor) -> nn.ModuleList:
    """One adapter per hint, sized from one forward pass of both models in eval mode."""
    if not cfg.hints:
        return nn.ModuleList()
    s_taps = _Taps(student, [s for s, _ in cfg.hints])
    t_taps = _Taps(teacher, [t for _, t in cfg.hints])
    modes = {m: m.training for m in (*student.modules(), *teacher.modules())}
    try:
        student.eval()
        teacher.eval()
        student(x)
        teacher(x)
    finally:
        s_taps.remove()
        t_taps.remove()
        for m, flag in modes.items():
            m.training = flag
    return nn.ModuleList(hint_adapter(s_taps.out[s].shape, t_taps.out[t].shape)
                         for s, t in cfg.hints)


def distill(teacher: nn.Module | None, student: nn.Module, data: Iterable,
            config: DistillConfig | None = None, *, epochs: int, lr: float,
            optimizer: str = "adam", weight_decay: float = 0.0, schedule: str = "cosine",
            callbacks: Sequence = (), max_grad_norm: float | None = None) -> DistillResult:
    """Train ``student`` (in place) with knowledge from ``teacher`` as ``config`` says.

    L = (1 - lam) T^2 KL(p_t || p_s) + lam CE + hint_weight sum_h mean((r_h(f_s) - f_t)^2)
    + w_d L_rkd-distance + w_a L_rkd-angle (module doc; the papers: Hinton et al. 2015,
    FitNets 2015, RKD 2019, deep mutual learning 2018, snapshot distillation 2019).

    Args:
        teacher: "offline": the trained teacher (kept in eval mode, never updated; its mode
            is restored afterwards). "online": the second peer, trained alongside the
            student (in place). "self": must be None.
        student: the model to train; in train mode during the loop, mode restored after.
        data: a loader of ``(inputs, targets)`` batches, re-iterated every epoch; the first
            batch also sizes the hint adapters.
        config: a ``DistillConfig`` (default: offline, T = 4, lam = 0.5).
        epochs, lr, optimizer, weight_decay, schedule, callbacks, max_grad_norm: as in
            ``training.train`` (the optimizer covers the student, the hint adapters and an
            online peer). Callbacks see ``state.model`` holding ``.student``, ``.peer`` and
            ``.adapters``. Wrap the call in ``training.deterministic(seed)`` for a
            reproducible run.

    Returns a ``DistillResult`` (the ``TrainResult``, the trained adapters, snapshots taken).

    Example:
        >>> teacher = get_model("digits-cnn")
        >>> student = get_model("digits-mlp", pretrained=False)
        >>> loader, _ = digits_loaders(seed=0)
        >>> with deterministic(0):                              # doctest: +SKIP
        ...     distill(teacher, student, loader, DistillConfig(), epochs=10, lr=3e-3)
    """
    cfg = DistillConfig() if config is None else config
    if not isinstance(cfg, DistillConfig):
        raise TypeError(f"config: must be a DistillConfig, got {type(cfg).__name__}")
    if not isinstance(student, nn.Module):
        raise TypeError(f"student: must be a torch.nn.Module, got {type(student).__name__}")
    if cfg.scheme == "self":
        if teacher is not None:
            raise ValueError("teacher: the self scheme distills the student from snapshots of "
                             "itself; pass teacher=None")
    else:
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher: the {cfg.scheme} scheme needs a torch.nn.Module, got "
                            f"{type(teacher).__name__}")
        if teacher is student:
            raise ValueError("teacher: is the student itself; pass a distinct model (or use "
                             "scheme='self')")
    _check_layers(cfg, student, None if cfg.scheme == "self" else teacher)
    x0 = _first_input(data)
    offline_teacher = teacher if cfg.scheme == "offline" else None
    loss = _DistillLoss(cfg, offline_teacher, student)
    teacher_mode = None if offline_teacher is None else offline_teacher.training
    peer = teacher if cfg.scheme == "online" else None
    modes = [(m, m.training) for m in (student, peer) if m is not None]
    try:
        if cfg.scheme == "self":  # the teacher will be a copy of the student
            adapters = _build_adapters(cfg, student, student, x0)
        elif offline_teacher is not None:
            adapters = _build_adapters(cfg, student, offline_teacher, x0)
            offline_teacher.eval()
        else:
            adapters = nn.ModuleList()
        box = _Trainee(student, peer, adapters)
        snapshots = _Snapshots(loss, cfg.snapshot_every) if cfg.scheme == "self" else None
        result = train(box, data, epochs=epochs, lr=lr, optimizer=optimizer,
                       weight_decay=weight_decay, schedule=schedule, loss_fn=loss,
                       callbacks=(*callbacks, *(() if snapshots is None else (snapshots,))),
                       max_grad_norm=max_grad_norm)
    finally:
        loss.remove()
        if offline_teacher is not None:
            offline_teacher.train(teacher_mode)
        for m, flag in modes:  # train() restores the wrapper's mode, not theirs
            m.train(flag)
    return DistillResult(result, adapters, 0 if snapshots is None else snapshots.taken)
