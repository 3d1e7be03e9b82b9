"""Evaluating one candidate: quality (short training or the NASWOT proxy) and hardware cost.

Per candidate, inside ``lowbit.compress.deterministic(seed)`` (seeded initial weights and
shuffling, one thread):

1. ``build`` the float network;
2. ``evaluator="train"``: train it for ``epochs`` on the search's training images (AdamW,
   cosine schedule, ``lowbit.compress.train``); ``"proxy"``: leave it untrained;
3. quantize every layer to its bit width b (weights b-bit symmetric per output channel,
   activations b-bit asymmetric per tensor, BatchNorm folded): ``lowbit.compress.quantize``
   with ``QATConfig(weight_bits=b, act_bits=b)``, one forward pass over ``calibration``
   training images to set the activation ranges (min / max), then ``convert`` to the
   integer-simulated layers (the QAT modules are the one compress path that gives b-bit
   weights with b-bit static activations);
   with ``evaluator="train"`` and ``qat_epochs`` > 0, quantization-aware fine-tuning of the
   fake-quantized model (``qat_epochs`` at ``qat_lr``; 4-bit activations calibrated without
   it lose most of the accuracy) comes before ``convert``;
4. quality: top-1 accuracy of the integer model on the validation images (``"train"``), or
   its NASWOT score on ``proxy_batch`` distinct training images (``"proxy"``);
5. hardware cost: ``to_workload`` of the integer model (batch 1, each layer at its widths)
   through the cycle-level simulator (``cost="simulator"``) or the roofline
   (``cost="roofline"``) on ``profile``: latency and energy.

Data: the digits training split (1347 images) is split once more, stratified and seeded,
into the search's training images and ``val_size`` validation images; the search ranks on
validation accuracy, and the test split (450 images) is only reported (``test_accuracy``),
so the search never selects on the test images.

The evaluation's identity (``evaluation_key``) is the SHA-256 of the candidate, the space's
network fields, the settings that affect the result, the hardware profile's content and the
source of the code that builds, trains, quantizes and scores, so a cached result is reused
only when recomputing it would give the same numbers.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping

import torch
from torch.utils.data import DataLoader, TensorDataset

from lowbit.compress import (QATConfig, convert, deterministic, load_digits_split, quantize,
                             to_workload, train)
from lowbit.sweep.points import digest, profile_mapping

from . import network, proxy
from .space import Candidate, SearchSpace, get_space

__all__ = ["EvalSettings", "Evaluation", "SearchData", "search_data", "evaluate_candidate",
           "quantize_candidate", "hardware_cost", "evaluation_key", "EVALUATORS", "COSTS",
           "EVAL_FORMAT"]

EVAL_FORMAT = 1
EVALUATORS = ("train", "proxy")
COSTS = ("simulator", "roofline")
INPUT_SHAPE = (1, 1, 8, 8)


@dataclass(frozen=True)
class EvalSettings:
    """How candidates are evaluated (see the module doc).

    Args:
        evaluator: "train" (short training, validation accuracy) or "proxy" (NASWOT).
        epochs, lr, batch_size, weight_decay: the float training recipe ("train" only).
        qat_epochs, qat_lr: quantization-aware fine-tuning after calibration ("train"
            only; 0 epochs: post-training quantization).
        seed: initial weights and shuffling.
        val_size: validation images held out of the digits training split.
        calibration: training images that set the activation ranges.
        proxy_batch: distinct training images NASWOT scores on ("proxy" only).
        profile: hardware profile name or TOML path (simulator profile, or roofline device).
        cost: "simulator" (cycle-level) or "roofline".
        dataflow: "os", "ws", "is", or None for the profile's default.
    """

    evaluator: str = "train"
    epochs: int = 4
    lr: float = 1e-2
    batch_size: int = 128
    weight_decay: float = 0.01
    qat_epochs: int = 1
    qat_lr: float = 1e-3
    seed: int = 0
    val_size: int = 300
    calibration: int = 256
    proxy_batch: int = 128
    profile: str = "edge-npu-32x32"
    cost: str = "simulator"
    dataflow: str | None = None

    def __post_init__(self) -> None:
        if self.evaluator not in EVALUATORS:
            raise ValueError(f"evaluator: must be one of {', '.join(EVALUATORS)}, got "
                             f"{self.evaluator!r}")
        if self.cost not in COSTS:
            raise ValueError(f"cost: must be one of {', '.join(COSTS)}, got {self.cost!r}")
        for name in ("epochs", "batch_size", "val_size", "calibration", "proxy_batch",
                     "qat_epochs"):
            v = getattr(self, name)
            low = 0 if name == "qat_epochs" else 1
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(f"{name}: must be an integer >= {low}, got {v!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed: must be a non-negative integer, got {self.seed!r}")
        for name in ("lr", "qat_lr", "weight_decay"):
            v = getattr(self, name)
            positive = name != "weight_decay"
            if (not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0
                    or (positive and v == 0)):
                raise ValueError(f"{name}: must be a number {'> 0' if positive else '>= 0'}"
                                 f", got {v!r}")
        if self.proxy_batch < 2:
            raise ValueError(f"proxy_batch: NASWOT needs at least 2 images, got "
                             f"{self.proxy_batch}")
        if self.dataflow not in (None, "os", "ws", "is"):
            raise ValueError(f"dataflow: must be 'os', 'ws', 'is' or None, got "
                             f"{self.dataflow!r}")

    def result_fields(self) -> dict:
        """The settings that change an evaluation's numbers (the proxy ignores the recipe)."""
        d = dataclasses.asdict(self)
        if self.evaluator == "proxy":
            for name in ("epochs", "lr", "batch_size", "weight_decay", "qat_epochs", "qat_lr"):
                d.pop(name)
        else:
            d.pop("proxy_batch")
        for name in ("lr", "qat_lr", "weight_decay"):
            if name in d:
                d[name] = float(d[name])  # 1e-2 and 0.01 hash alike, 1 and 1.0 too
        return d


@dataclass(frozen=True)
class Evaluation:
    """One candidate's results. ``quality`` is what the search maximizes: the validation
    accuracy ("train") or the NASWOT score ("proxy"). Latency in seconds, energy in pJ.
    ``feasible`` is False, with a ``reason``, when the candidate has no result: the profile
    cannot run it (latency and energy None), or its training diverged (a non-finite loss;
    quality 0 and no costs). Searches keep such candidates off every front."""

    quality: float
    val_accuracy: float | None
    test_accuracy: float | None
    proxy_score: float | None
    latency_s: float | None
    energy_pj: float | None
    feasible: bool
    reason: str
    macs: int
    params: int
    weight_bytes: int
    seconds: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SearchData:
    """The search's images: training, validation (held out of the digits training split) and
    the digits test split, normalized [N, 1, 8, 8] float32 with int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


@lru_cache(maxsize=4)
def search_data(val_size: int = 300, seed: int = 0) -> SearchData:
    """The digits training split cut into search-training and ``val_size`` validation images
    (stratified by class, ``seed`` fixes it), plus the untouched test split."""
    from sklearn.model_selection import train_test_split

    d = load_digits_split()
    n = len(d.y_train)
    if not 10 <= val_size <= n - 10:
        raise ValueError(f"val_size: must be in 10..{n - 10}, got {val_size}")
    idx = torch.arange(n).numpy()
    tr, va = train_test_split(idx, test_size=val_size, stratify=d.y_train.numpy(),
                              random_state=seed)
    tr, va = torch.from_numpy(tr), torch.from_numpy(va)
    return SearchData(d.x_train[tr], d.y_train[tr], d.x_train[va], d.y_train[va],
                      d.x_test, d.y_test)


def _distinct(x: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` pairwise distinct images of ``x``, in order."""
    seen, keep = set(), []
    for i in range(len(x)):
        key = x[i].numpy().tobytes()
        if key not in seen:
            seen.add(key)
            keep.append(i)
            if len(keep) == n:
                return x[keep]
    raise ValueError(f"proxy_batch: only {len(keep)} distinct training images, asked for {n}")


def _module_name(layer: str) -> str:
    """The nn.Conv2d / nn.Linear module of a ``layer_names`` entry."""
    return layer if layer == "head" else f"{layer}.conv"


def quantize_candidate(model: torch.nn.Module, candidate: Candidate,
                       calibration: torch.Tensor,
                       finetune: Callable[[torch.nn.Module], Any] | None = None
                       ) -> torch.nn.Module:
    """Quantize ``model`` (a ``build(candidate)`` network) to the candidate's bit widths, in
    place: every layer at b bits (weights symmetric per output channel, activations
    asymmetric per tensor), BatchNorm folded, activation ranges from one pass over
    ``calibration``, then ``finetune(model)`` if given (quantization-aware training of the
    fake-quantized model), then ``convert``. Returns the integer-simulated model (eval).
    """
    groups: dict[int, set[str]] = {}
    for layer, bits in candidate.bits:
        groups.setdefault(bits, set()).add(_module_name(layer))
    for bits, names in sorted(groups.items()):
        quantize(model, QATConfig(weight_bits=bits, act_bits=bits),
                 filter_fn=lambda module, name, names=names: name in names)
    model.train()  # the fake quantizers observe activation ranges in training mode
    with torch.no_grad():
        model(calibration)
    if finetune is not None:
        finetune(model)
    return convert(model)


def _plain(obj):
    """A dataclass / mapping / sequence tree as JSON-able plain values (for hashing)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj if isinstance(obj, (str, int, float, bool, type(None))) else repr(obj)


@lru_cache(maxsize=16)
def _hardware(profile_name: str, cost: str):
    """(loaded simulator profile or roofline device, digest of its content)."""
    if cost == "simulator":
        from lowbit.simulator import load_profile
        prof = load_profile(profile_name)
        return prof, digest(profile_mapping(prof))
    from lowbit.roofline import get_device
    dev = get_device(profile_name)
    return dev, digest(json.dumps(_plain(dev), sort_keys=True))


def hardware_cost(workload, settings: EvalSettings) -> tuple[float | None, float | None, bool,
                                                                str]:
    """(latency s, energy pJ, feasible, reason) of ``workload`` on the settings' hardware."""
    hw, _ = _hardware(settings.profile, settings.cost)
    if settings.cost == "simulator":
        from lowbit.simulator import simulate
        total = simulate(workload, hw, dataflow=settings.dataflow).total
        if not total.feasible:
            return None, None, False, total.reason
        return total.latency_s, total.energy_pj, True, ""
    from lowbit.roofline import analyze
    total = analyze(workload, hw, dataflow=settings.dataflow).total
    return total.latency_s, total.energy_j * 1e12, True, ""


def _storage(qmodel: torch.nn.Module) -> dict[str, int]:
    """Params and stored bytes of the integer model: every layer is quantized and BatchNorm
    is folded, so its layers' ``lowbit_storage`` records hold them all (what ``profile``
    reports, without a second trace)."""
    records = [m.lowbit_storage() for m in qmodel.modules() if hasattr(m, "lowbit_storage")]
    return {"params": sum(int(r["params"]) for r in records),
            "bytes": sum(int(r["bytes"]) for r in records)}


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return int((model(x).argmax(dim=1) == y).sum()) / len(y)


def _loader(data: SearchData, settings: EvalSettings) -> DataLoader:
    gen = torch.Generator().manual_seed(settings.seed)
    return DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=settings.batch_size,
                      shuffle=True, generator=gen)


def _qat_finetune(data: SearchData, settings: EvalSettings):
    """The quantization-aware fine-tuning step of "train", or None (proxy, 0 epochs)."""
    if settings.evaluator != "train" or not settings.qat_epochs:
        return None
    return lambda model: train(model, _loader(data, settings), epochs=settings.qat_epochs,
                               lr=settings.qat_lr, optimizer="adamw",
                               weight_decay=settings.weight_decay)


def train_float(candidate: Candidate, space: SearchSpace | str,
                settings: EvalSettings) -> torch.nn.Module:
    """The float network of ``candidate`` trained with the settings' recipe (deterministic);
    what ``lowbit nas --export`` saves. Call inside ``deterministic(settings.seed)``."""
    model = network.build(candidate, space)
    train(model, _loader(search_data(settings.val_size), settings), epochs=settings.epochs,
          lr=settings.lr, optimizer="adamw", weight_decay=settings.weight_decay)
    return model.eval()


def evaluate_candidate(candidate: Candidate, space: SearchSpace | str,
                       settings: EvalSettings) -> Evaluation:
    """Evaluate one candidate (see the module doc); deterministic for fixed settings.

    Example:
        >>> space = get_space("digits-mbv2")
        >>> ev = evaluate_candidate(space.decode([0] * len(space.axes)), space,
        ...                         EvalSettings(evaluator="proxy"))
        >>> ev.latency_s, ev.quality      # doctest: +SKIP
    """
    space = get_space(space)
    space.validate(candidate)
    start = time.perf_counter()
    data = search_data(settings.val_size)
    if settings.calibration > len(data.y_train):
        raise ValueError(f"calibration: at most {len(data.y_train)} images, got "
                         f"{settings.calibration}")
    val_acc = test_acc = score = None
    with deterministic(settings.seed):
        try:
            if settings.evaluator == "train":
                model = train_float(candidate, space, settings)
            else:
                model = network.build(candidate, space)
            qmodel = quantize_candidate(model, candidate, data.x_train[:settings.calibration],
                                        _qat_finetune(data, settings))
        except FloatingPointError as exc:   # a diverged training run is a result, not a crash
            return Evaluation(quality=0.0, val_accuracy=None, test_accuracy=None,
                              proxy_score=None, latency_s=None, energy_pj=None, feasible=False,
                              reason=f"training diverged: {exc}", macs=0, params=0,
                              weight_bytes=0, seconds=time.perf_counter() - start)
        if settings.evaluator == "train":
            val_acc = _accuracy(qmodel, data.x_val, data.y_val)
            test_acc = _accuracy(qmodel, data.x_test, data.y_test)
            quality = val_acc
        else:
            score = proxy.naswot(qmodel, _distinct(data.x_train, settings.proxy_batch))
            quality = score
    example = torch.zeros(INPUT_SHAPE)
    workload = to_workload(qmodel, example, name=f"nas-{candidate.key()[:12]}")
    latency, energy, feasible, reason = hardware_cost(workload, settings)
    stored = _storage(qmodel)
    return Evaluation(quality=quality, val_accuracy=val_acc, test_accuracy=test_acc,
                      proxy_score=score, latency_s=latency, energy_pj=energy, feasible=feasible,
                      reason=reason, macs=int(workload.macs), params=stored["params"],
                      weight_bytes=stored["bytes"], seconds=time.perf_counter() - start)


def _code_digest() -> str:
    """Digest of the source that turns a candidate into numbers (see the module doc)."""
    parts = (network.ConvBN, network.FusedMBConv, network.NASNet, proxy.naswot,
             quantize_candidate, train_float, evaluate_candidate, search_data, _distinct,
             _accuracy, _loader, _storage, _qat_finetune, hardware_cost, train)
    return digest([inspect.getsource(p) for p in parts])


def evaluation_key(candidate: Candidate, space: SearchSpace | str,
                   settings: EvalSettings) -> str:
    """SHA-256 identity of one evaluation (see the module doc); the lowbit version is stored
    with results, not hashed."""
    space = get_space(space)
    _, hw_digest = _hardware(settings.profile, settings.cost)
    return digest({"v": EVAL_FORMAT, "candidate": candidate.to_dict(),
                   "network": {"base_channels": list(space.base_channels),
                               "strides": list(space.strides)},
                   "settings": settings.result_fields(), "hardware": hw_digest,
                   "code": _cached_code_digest()})


@lru_cache(maxsize=1)
def _cached_code_digest() -> str:
    return _code_digest()


def settings_from_dict(data: dict[str, Any]) -> EvalSettings:
    """``EvalSettings`` from ``dataclasses.asdict`` output (unknown keys rejected)."""
    fields = {f.name for f in dataclasses.fields(EvalSettings)}
    unknown = set(data) - fields
    if unknown:
        raise ValueError(f"settings: unknown fields {sorted(unknown)}")
    return EvalSettings(**data)
