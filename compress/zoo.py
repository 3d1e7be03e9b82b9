"""The model registry: built-in digits models, trained with fixed seeds on first use, cached.

``get_model(name)`` returns a trained model in eval mode. The first call trains it
(deterministically: ``training.deterministic``, seeded init, seeded shuffling; seconds on a
laptop CPU) and stores the weights in the user cache folder,
``$XDG_CACHE_HOME/lowbit/models/`` (``~/.cache/lowbit/models/`` when XDG_CACHE_HOME is not
set), as ``<name>-<hash>.pt``. The hash covers the model's definition (its classes' source
and constructor arguments), the training recipe, and the source of the data split and the
training loop, so changing any of them trains anew instead of loading stale weights. Files
are written atomically (a temporary file in the same folder, then ``os.replace``); a file that
cannot be read or does not match the model is retrained with a warning, and a folder that
cannot be written only costs the caching (warning), never the call.

    >>> from lowbit.compress import get_model, model_names
    >>> model_names()
    ('digits-cnn', 'digits-mlp', 'digits-transformer')
    >>> cnn = get_model("digits-cnn")            # trained (or loaded), eval mode
    >>> fresh = get_model("digits-mlp", pretrained=False)   # seeded init, untrained
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import data as _data
from . import training as _train
from .models import DigitsCNN, DigitsMLP, DigitsTransformer, EncoderBlock, SelfAttention

__all__ = ["TrainRecipe", "ModelSpec", "Pretrained", "get_model", "load_pretrained",
           "model_names", "model_spec", "cache_dir", "definition_hash", "CACHE_FORMAT"]

CACHE_FORMAT = "lowbit-pretrained/1"


@dataclass(frozen=True)
class TrainRecipe:
    """How a built-in model is trained (``training.train`` arguments plus seed and batch size)."""

    epochs: int
    lr: float
    batch_size: int = 32
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    schedule: str = "cosine"
    seed: int = 0


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: the class, its constructor arguments, the recipe, what it is."""

    name: str
    cls: type
    recipe: TrainRecipe
    kwargs: dict = field(default_factory=dict)
    description: str = ""
    # classes whose source defines the model besides ``cls`` (hashed with it)
    parts: tuple[type, ...] = ()

    def build(self) -> nn.Module:
        return self.cls(**self.kwargs)


_SPECS = {s.name: s for s in (
    ModelSpec("digits-cnn", DigitsCNN, TrainRecipe(epochs=12, lr=3e-3),
              {"channels": (32, 32, 64)}, "3 conv-BN-ReLU stages + Linear, 0.9 M MACs"),
    ModelSpec("digits-mlp", DigitsMLP, TrainRecipe(epochs=30, lr=3e-3),
              {"hidden": (128, 64)}, "3 Linear layers (64-128-64-10)"),
    ModelSpec("digits-transformer", DigitsTransformer, TrainRecipe(epochs=30, lr=3e-3),
              {"dim": 32, "depth": 2, "heads": 4, "mlp_dim": 64},
              "2-block pre-norm encoder on the 8 rows as tokens, nn.Linear attention",
              parts=(EncoderBlock, SelfAttention)),
)}


def model_names() -> tuple[str, ...]:
    """Names accepted by ``get_model``."""
    return tuple(_SPECS)


def model_spec(name: str) -> ModelSpec:
    """The registry entry of ``name`` (ValueError listing the known names otherwise)."""
    if name not in _SPECS:
        raise ValueError(f"name: unknown model {name!r}; known: {', '.join(_SPECS)}")
    return _SPECS[name]


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/lowbit/models`` (or ``~/.cache/lowbit/models``); not created here."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "lowbit" / "models"


def _source(obj) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):  # no source shipped: fall back to the qualified name
        return f"{obj.__module__}.{obj.__qualname__}"


def definition_hash(spec: ModelSpec) -> str:
    """16 hex digits of SHA-256 over what determines the trained weights (see module doc)."""
    blob = json.dumps({
        "format": CACHE_FORMAT,
        "name": spec.name,
        "model": [_source(c) for c in (spec.cls, *spec.parts)],
        "kwargs": repr(sorted(spec.kwargs.items())),
        "recipe": asdict(spec.recipe),
        "data": [_source(_data._split), _data.DIGITS_SPLIT_SEED, _data.DIGITS_TEST_FRACTION],
        "train": [_source(_train.train), _source(_train.cross_entropy_loss),
                  _source(_train.deterministic), _train.TRAIN_THREADS],
    }, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Pretrained:
    """A trained built-in model with where it came from.

    ``test_accuracy`` is the fp32 top-1 accuracy on the digits test split measured right
    after training; ``train_seconds`` the wall time of that training (on whatever machine
    first trained it); ``from_cache`` says whether this call loaded it from ``path``.
    """

    name: str
    model: nn.Module
    test_accuracy: float
    train_seconds: float
    path: Path | None
    from_cache: bool


def _fresh(spec: ModelSpec) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.recipe.seed)
        return spec.build()


def _train_spec(spec: ModelSpec) -> tuple[nn.Module, float, float]:
    r = spec.recipe
    start = time.perf_counter()
    with _train.deterministic(r.seed):
        model = spec.build()
        train_loader, test_loader = _data.digits_loaders(r.batch_size, seed=r.seed)
        _train.train(model, train_loader, epochs=r.epochs, lr=r.lr, optimizer=r.optimizer,
                     weight_decay=r.weight_decay, schedule=r.schedule)
        seconds = time.perf_counter() - start
        accuracy = _train.evaluate(model, test_loader)
    return model.eval(), accuracy, seconds


def _load(path: Path, spec: ModelSpec, digest: str) -> tuple[nn.Module, float, float]:
    blob: Any = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != CACHE_FORMAT:
        raise ValueError(f"not a {CACHE_FORMAT} file")
    if blob.get("name") != spec.name or blob.get("hash") != digest:
        raise ValueError(f"holds {blob.get('name')!r} / {blob.get('hash')!r}, "
                         f"want {spec.name!r} / {digest!r}")
    model = _fresh(spec)
    model.load_state_dict(blob["state_dict"], strict=True)
    return model.eval(), float(blob["test_accuracy"]), float(blob["train_seconds"])


def _save(path: Path, spec: ModelSpec, digest: str, model: nn.Module, accuracy: float,
          seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": CACHE_FORMAT, "name": spec.name, "hash": digest,
                        "state_dict": model.state_dict(), "test_accuracy": accuracy,
                        "train_seconds": seconds, "torch": str(torch.__version__)}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_pretrained(name: str, *, cache: str | os.PathLike | None = None) -> Pretrained:
    """Train-or-load ``name`` and say where it came from (see the module doc).

    Args:
        name: one of ``model_names()``.
        cache: the cache folder (default ``cache_dir()``).
    """
    spec = model_spec(name)
    digest = definition_hash(spec)
    folder = Path(cache) if cache is not None else cache_dir()
    path = folder / f"{spec.name}-{digest}.pt"
    if path.exists():
        try:
            model, acc, secs = _load(path, spec, digest)
            return Pretrained(spec.name, model, acc, secs, path, True)
        except Exception as exc:  # any unreadable file is retrained, never fatal
            why = (str(exc).splitlines() or [""])[0]
            warnings.warn(f"lowbit: cached weights {path} unusable ({type(exc).__name__}: "
                          f"{why}); retraining {spec.name}", RuntimeWarning, stacklevel=2)
    model, acc, secs = _train_spec(spec)
    try:
        _save(path, spec, digest, model, acc, secs)
    except OSError as exc:
        warnings.warn(f"lowbit: could not cache {spec.name} weights in {folder} ({exc}); "
                      f"it will be retrained next time", RuntimeWarning, stacklevel=2)
        return Pretrained(spec.name, model, acc, secs, None, False)
    return Pretrained(spec.name, model, acc, secs, path, False)


def get_model(name: str, pretrained: bool = True, *,
              cache: str | os.PathLike | None = None) -> nn.Module:
    """A built-in digits model: trained (cached) in eval mode, or seeded and untrained.

    Args:
        name: "digits-cnn", "digits-mlp" or "digits-transformer" (``model_names()``).
        pretrained: True (default): the trained weights, training them on first use;
            False: the same architecture freshly initialized with the recipe's seed
            (identical on every call; for training from scratch, e.g. a distillation
            student or a NAS baseline).
        cache: the cache folder (default ``$XDG_CACHE_HOME/lowbit/models``).

    Every call returns a new module; modifying it never touches the cache.
    """
    if not pretrained:
        return _fresh(model_spec(name))
    return load_pretrained(name, cache=cache).model
