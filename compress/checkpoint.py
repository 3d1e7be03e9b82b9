"""Save an exported model to one file and load it back: ``save(model, path, arch=...)``,
``load(path)``.

The file (``torch.save`` of plain data, read back with ``weights_only=True``: no pickled
code) holds:

* ``format`` "lowbit-compressed" and ``version`` (``CHECKPOINT_VERSION``); a file of another
  version is rejected with a message naming both;
* ``arch``: the built-in model name the structure comes from (``zoo.model_names()``), or
  None when the caller supplies the float architecture to ``load``;
* ``replacements``: every module that differs from that float architecture, by name: the
  kernel modules with their constructor arguments (geometry, weight format and the
  format's options: activation / output quantization), and ``nn.Identity`` (folded
  BatchNorm, ReLU / ReLU6 folded into a requantization);
* ``state_dict``: all weights, packed in their formats, scales and quantization buffers;
* ``config`` and ``meta``: what made it (the quantization config, accuracies), as given.

Example (``exported``: a digits CNN after ``export``)::

    from lowbit.compress import load, save
    save(exported, "cnn-int8.lowbit", arch="digits-cnn", config={"config": "int8-static"})
    model = load("cnn-int8.lowbit")          # the same outputs, bit for bit
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lowbit.kernels.modules import LowbitConv2d, LowbitLinear

from .swap import replace_module

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "checkpoint_info", "load", "save"]

CHECKPOINT_FORMAT = "lowbit-compressed"
CHECKPOINT_VERSION = 1
_CLASSES = {"LowbitLinear": LowbitLinear, "LowbitConv2d": LowbitConv2d,
            "Identity": nn.Identity}


def _constructor_args(mod: nn.Module) -> dict:
    """Arguments that rebuild ``mod`` empty (its state_dict then fills it)."""
    if isinstance(mod, nn.Identity):
        return {}
    opts = dict(mod.scheme.options)
    if isinstance(mod, LowbitLinear):
        return {"in_features": mod.in_features, "out_features": mod.out_features,
                "bias": mod.geometry.bias, "fmt": mod.fmt, **opts}
    return {"in_channels": mod.in_channels, "out_channels": mod.out_channels,
            "kernel_size": mod.kernel_size, "stride": mod.stride, "padding": mod.padding,
            "dilation": mod.dilation, "groups": mod.groups, "bias": mod.geometry.bias,
            "fmt": mod.fmt, "channels_last": mod.channels_last, **opts}


def _base(arch) -> tuple[nn.Module, str | None]:
    """(a float instance of the architecture, its built-in name or None)."""
    if isinstance(arch, str):
        from .zoo import get_model

        return get_model(arch, pretrained=False), arch
    if isinstance(arch, nn.Module):
        return arch, None
    raise TypeError(f"arch: expected a built-in model name (lowbit.compress.model_names()) or "
                    f"a float nn.Module of the architecture, got {type(arch).__name__}")


def _replacements(model: nn.Module, base: nn.Module) -> dict[str, dict]:
    base_mods = dict(base.named_modules())
    out: dict[str, dict] = {}
    for name, mod in model.named_modules():
        if any(name.startswith(f"{r}.") for r in out):
            continue  # inside a replaced module: its constructor rebuilds it
        if name not in base_mods:
            raise ValueError(f"model: module {name!r} is not in the architecture; save "
                             f"stores modules swapped at the architecture's names only")
        if type(mod) is type(base_mods[name]):
            continue
        kind = type(mod).__name__
        if _CLASSES.get(kind) is not type(mod):
            raise ValueError(f"model: layer {name!r} is a {kind}; a saved model holds lowbit's "
                             f"kernel modules (and nn.Identity) in place of float modules: "
                             f"export it first (lowbit.compress.export)")
        out[name] = {"class": kind, "args": _constructor_args(mod)}
    return out


def save(model: nn.Module, path: str | os.PathLike, *, arch, config: dict | None = None,
         meta: dict | None = None) -> None:
    """Write an exported model to ``path`` (one file; see the module doc).

    Args:
        model: the exported model (``lowbit.compress.export``).
        arch: the name of the built-in model it was made from (e.g. "digits-cnn"), or a
            float instance of its architecture (then ``load`` needs one too).
        config: the quantization config as plain data (str / number / list / dict).
        meta: anything else as plain data (accuracies, the command line ...).
    """
    base, name = _base(arch)
    blob = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "arch": name,
            "config": config, "meta": meta, "replacements": _replacements(model, base),
            "state_dict": model.state_dict()}
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(blob, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read(path) -> dict[str, Any]:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:  # any unreadable content: say what the file should be
        raise ValueError(f"load: {path} is not a {CHECKPOINT_FORMAT} file "
                         f"({type(exc).__name__})") from exc
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"load: {path} is not a {CHECKPOINT_FORMAT} file")
    version = blob.get("version")
    if version != CHECKPOINT_VERSION:
        raise ValueError(f"load: {path} has {CHECKPOINT_FORMAT} format version {version!r}; "
                         f"this lowbit reads version {CHECKPOINT_VERSION} only")
    return blob


def checkpoint_info(path: str | os.PathLike) -> dict[str, Any]:
    """The file's version, arch, config, meta and the format of every replaced module,
    without building the model."""
    blob = _read(path)
    layers = {name: r["args"].get("fmt", r["class"]) for name, r in blob["replacements"].items()}
    return {"version": blob["version"], "arch": blob["arch"], "config": blob["config"],
            "meta": blob["meta"], "layers": layers}


def load(path: str | os.PathLike, *, arch: nn.Module | None = None) -> nn.Module:
    """The model ``save`` wrote, in eval mode (same outputs, bit for bit).

    Args:
        path: the file.
        arch: a float instance of the architecture, when the file does not name a built-in
            model (it is modified in place and returned).

    Raises ValueError for a file of another format version (naming it) or another kind.
    """
    blob = _read(path)
    if arch is None:
        if blob["arch"] is None:
            raise ValueError(f"arch: {path} does not name a built-in model; pass arch=<a float "
                             f"instance of its architecture>")
        arch = blob["arch"]
    model, _ = _base(arch)
    for name, rep in blob["replacements"].items():
        cls = _CLASSES.get(rep["class"])
        if cls is None:
            raise ValueError(f"load: {path} holds a {rep['class']!r} module at {name!r}; this "
                             f"lowbit builds {', '.join(_CLASSES)}")
        replace_module(model, name, cls(**rep["args"]))
    model.load_state_dict(blob["state_dict"], strict=True)
    return model.eval()
