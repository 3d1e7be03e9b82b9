"""Export a searched network to the compression pipeline: architecture + trained float weights.

``export_model`` trains the candidate's float network with the training recipe of the
settings (deterministic, as the search's "train" evaluator does before quantizing) and saves
one ``torch.save`` file (written to a temporary file, then renamed)::

    {"format": "lowbit-nas-model/1", "space": {...}, "candidate": {...}, "settings": {...},
     "state_dict": {...}, "val_accuracy": float, "test_accuracy": float}

``load_model`` rebuilds the network and loads the weights; the candidate's bit widths travel
with it for ``lowbit.compress.quantize`` (e.g. ``lowbit.nas.quantize_candidate``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from pathlib import Path

import torch

from lowbit.compress import deterministic

from .evaluate import EvalSettings, _accuracy, search_data, train_float
from .network import NASNet, build
from .space import Candidate, SearchSpace, get_space

__all__ = ["export_model", "load_model", "EXPORT_FORMAT"]

EXPORT_FORMAT = "lowbit-nas-model/1"


def export_model(candidate: Candidate, space: SearchSpace | str, path: str | os.PathLike,
                 settings: EvalSettings | None = None) -> dict:
    """Train ``candidate`` (float) with ``settings``' recipe and save it to ``path``.

    Returns the saved record without the weights (accuracies of the float network on the
    search's validation images and on the digits test split).

    Example:
        >>> info = export_model(cand, "digits-mbv2", "best.pt")    # doctest: +SKIP
        >>> model, cand, space = load_model("best.pt")
    """
    space = get_space(space)
    settings = EvalSettings() if settings is None else settings
    if settings.evaluator != "train":
        settings = dataclasses.replace(settings, evaluator="train")
    with deterministic(settings.seed):
        model = train_float(candidate, space, settings)
    data = search_data(settings.val_size)
    record = {"format": EXPORT_FORMAT, "space": space.to_dict(), "candidate": candidate.to_dict(),
              "settings": dataclasses.asdict(settings),
              "val_accuracy": _accuracy(model, data.x_val, data.y_val),
              "test_accuracy": _accuracy(model, data.x_test, data.y_test)}
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save({**record, "state_dict": model.state_dict()}, fh)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return record


def load_model(path: str | os.PathLike) -> tuple[NASNet, Candidate, SearchSpace]:
    """(float network in eval mode, candidate, space) from an ``export_model`` file."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path}: not a {EXPORT_FORMAT} file")
    sp = dict(blob["space"])
    space = SearchSpace(**{k: tuple(v) if isinstance(v, list) else v for k, v in sp.items()})
    candidate = space.validate(Candidate.from_dict(blob["candidate"]))
    model = build(candidate, space)
    model.load_state_dict(blob["state_dict"], strict=True)
    return model.eval(), candidate, space
