"""Workloads as JSON files (lowbit's own format), and one resolver for every workload source.

The format is what a compressed model exports (``to_workload`` in the compression library) and
what ``lowbit sweep`` reads; it is the ``Workload`` record written out, field for field::

    {
     "format": "lowbit-workload",
     "version": 1,
     "name": "digits-cnn-int4",
     "source": "lowbit.compress to_workload of ...",        (optional, free text)
     "extra_params": 0,                                       (optional: weights in no layer)
     "layers": [
      {"type": "conv2d", "name": "conv1", "in_h": 8, "in_w": 8, "in_ch": 1, "out_ch": 16,
       "kernel_h": 3, "kernel_w": 3, "stride": 1, "padding": 1, "groups": 1,
       "bias": true, "ceil_mode": false, "a_bits": 8, "w_bits": 4, "sparsity": "2:4"},
      {"type": "gemm", "name": "fc", "m": 1, "n": 10, "k": 256, "bias": true},
      {"type": "batched_matmul", "name": "scores", "batch": 12, "m": 128, "n": 128, "k": 64}
     ]
    }

Layer types and their keys (``Gemm``, ``Conv2d``, ``BatchedMatmul`` of
``lowbit.simulator.workload``; the required keys are the shape, the others take the record's
defaults):

* ``gemm``: m, n, k required; bias (false).
* ``conv2d``: in_h, in_w, in_ch, out_ch, kernel_h, kernel_w required; stride (1), padding (0),
  groups (1), bias (false), ceil_mode (false).
* ``batched_matmul``: batch, m, n, k required.
* every layer: type, name required; a_bits (8), w_bits (8), sparsity ("dense"): "dense",
  "2:4", or {"kind": "unstructured", "density": 0.3}.

Unknown keys are rejected, and every error names the file and the field
(``net.json: layers[2] (conv3).stride: must be an integer >= 1, got 0``). ``save_workload_json``
writes every field explicitly, so a file does not depend on lowbit's defaults.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping

from lowbit import tomlfields
from .workload import BatchedMatmul, Conv2d, Gemm, Layer, Sparsity, Workload, WorkloadError

__all__ = ["FORMAT", "VERSION", "LAYER_TYPES", "workload_to_dict", "workload_from_dict",
           "load_workload_json", "save_workload_json", "load_workload"]

FORMAT = "lowbit-workload"
VERSION = 1

LAYER_TYPES: Mapping[str, type[Layer]] = {"gemm": Gemm, "conv2d": Conv2d,
                                          "batched_matmul": BatchedMatmul}
_REQUIRED = {
    "gemm": ("m", "n", "k"),
    "conv2d": ("in_h", "in_w", "in_ch", "out_ch", "kernel_h", "kernel_w"),
    "batched_matmul": ("batch", "m", "n", "k"),
}
_TOP_REQUIRED = ("format", "version", "name", "layers")
_TOP_OPTIONAL = ("source", "extra_params")


def _fail(where, fieldname, why):
    tomlfields.fail(WorkloadError, where, fieldname, why)


def _type_name(layer: Layer) -> str:
    for name, cls in LAYER_TYPES.items():
        if type(layer) is cls:
            return name
    raise TypeError(f"layer {layer.name!r}: {type(layer).__name__} has no JSON layer type")


def _sparsity_to_json(s: Sparsity):
    return s.kind if s.kind in ("dense", "2:4") else {"kind": s.kind, "density": s.density}


def workload_to_dict(workload: Workload) -> dict:
    """The workload as the JSON format's dict, every field explicit (see the module doc)."""
    layers = []
    for layer in workload.layers:
        row: dict[str, Any] = {"type": _type_name(layer)}
        for f in dataclasses.fields(layer):
            value = getattr(layer, f.name)
            row[f.name] = _sparsity_to_json(value) if f.name == "sparsity" else value
        layers.append(row)
    return {"format": FORMAT, "version": VERSION, "name": workload.name,
            "source": workload.source, "extra_params": workload.extra_params, "layers": layers}


_SPARSITY_FORMS = '"dense", "2:4" or {"kind": ..., "density": ...}'


def _sparsity_from_json(where, at: str, value) -> Sparsity:
    if value == "dense":
        return Sparsity()
    if value == "2:4":
        return Sparsity("2:4", 0.5)
    if not isinstance(value, dict):
        _fail(where, at, f"must be {_SPARSITY_FORMS}, got {value!r}")
    tomlfields.check_keys(WorkloadError, where, f"{at}.", value, ("kind",), ("density",))
    kind = value["kind"]
    if kind not in ("dense", "2:4", "unstructured"):
        _fail(where, f"{at}.kind", f"must be dense, 2:4 or unstructured, got {kind!r}")
    if kind == "unstructured" and "density" not in value:
        _fail(where, f"{at}.density", "required for unstructured sparsity (a number in (0, 1])")
    density = value.get("density", {"dense": 1.0, "2:4": 0.5}.get(kind))
    if isinstance(density, bool) or not isinstance(density, (int, float)):
        _fail(where, f"{at}.density", f"must be a number in (0, 1], got {density!r}")
    try:
        return Sparsity(kind, float(density))
    except WorkloadError as exc:
        raise WorkloadError(f"{where}: {at}: {exc}" if where else f"{at}: {exc}") from None


def _layer_from_dict(where, index: int, row) -> Layer:
    at = f"layers[{index}]"
    if not isinstance(row, dict):
        _fail(where, at, f"must be an object, got {row!r}")
    kind = row.get("type")
    if kind not in LAYER_TYPES:
        _fail(where, f"{at}.type", f"must be one of {', '.join(LAYER_TYPES)}, got {kind!r}")
    cls = LAYER_TYPES[kind]
    if isinstance(row.get("name"), str):
        at = f"{at} ({row['name']})"
    names = [f.name for f in dataclasses.fields(cls)]
    required = ("type", "name") + _REQUIRED[kind]
    tomlfields.check_keys(WorkloadError, where, f"{at}.", row, required,
                          [n for n in names if n not in required])
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in row:
            continue
        value = row[f.name]
        if f.name == "sparsity":
            value = _sparsity_from_json(where, f"{at}.sparsity", value)
        elif f.type == "bool" and not isinstance(value, bool):
            _fail(where, f"{at}.{f.name}", f"must be true or false, got {value!r}")
        elif f.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            _fail(where, f"{at}.{f.name}", f"must be an integer, got {value!r}")
        elif f.type == "str" and not isinstance(value, str):
            _fail(where, f"{at}.{f.name}", f"must be a string, got {value!r}")
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except WorkloadError as exc:  # the record's own checks (ranges, groups, kernel size)
        raise WorkloadError(f"{where}: {at}: {exc}" if where else f"{at}: {exc}") from None


def workload_from_dict(data: Mapping[str, Any], where: str | None = None) -> Workload:
    """A validated ``Workload`` from the JSON format's dict; ``where`` names it in errors."""
    if not isinstance(data, dict):
        _fail(where, "workload", f"must be a JSON object, got {type(data).__name__}")
    tomlfields.check_keys(WorkloadError, where, "", data, _TOP_REQUIRED, _TOP_OPTIONAL)
    if data["format"] != FORMAT:
        _fail(where, "format", f"must be {FORMAT!r}, got {data['format']!r}")
    if data["version"] != VERSION:
        _fail(where, "version", f"this lowbit reads version {VERSION}, got {data['version']!r}")
    if not isinstance(data["name"], str) or not data["name"]:
        _fail(where, "name", f"must be a non-empty string, got {data['name']!r}")
    if not isinstance(data.get("source", ""), str):
        _fail(where, "source", f"must be a string, got {data['source']!r}")
    extra = data.get("extra_params", 0)
    if isinstance(extra, bool) or not isinstance(extra, int) or extra < 0:
        _fail(where, "extra_params", f"must be an integer >= 0, got {extra!r}")
    layers = data["layers"]
    if not isinstance(layers, list) or not layers:
        _fail(where, "layers", "must be a non-empty list of layer objects")
    parsed = tuple(_layer_from_dict(where, i, row) for i, row in enumerate(layers))
    try:
        return Workload(data["name"], parsed, source=data.get("source", ""), extra_params=extra)
    except WorkloadError as exc:  # repeated layer names
        raise WorkloadError(f"{where}: layers: {exc}" if where else f"layers: {exc}") from None


def load_workload_json(path: str | os.PathLike) -> Workload:
    """Read a workload JSON file (see the module doc); errors name the file and the field."""
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"{where}: cannot read: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkloadError(f"{where}: JSON syntax error: {exc}") from exc
    return workload_from_dict(data, where)


def save_workload_json(workload: Workload, path: str | os.PathLike) -> Path:
    """Write ``workload`` as a JSON file that ``load_workload_json`` reads back equal."""
    path = Path(path)
    path.write_text(json.dumps(workload_to_dict(workload), indent=1) + "\n", encoding="utf-8")
    return path


def load_workload(name_or_path: str | os.PathLike) -> Workload:
    """A workload from a zoo name (``zoo.workload_names()``), a ``.json`` file in this format
    or a SCALE-Sim topology ``.csv``.

    >>> load_workload("resnet18").macs
    1814073344
    """
    from .zoo import get_workload, workload_names

    if isinstance(name_or_path, str) and name_or_path in workload_names():
        return get_workload(name_or_path)
    path = Path(name_or_path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".csv"):
        raise WorkloadError(f"{name_or_path}: not a built-in workload "
                            f"({', '.join(workload_names())}) nor a .json (lowbit workload) or "
                            ".csv (SCALE-Sim topology) file")
    if not path.is_file():
        raise WorkloadError(f"{name_or_path}: no such file")
    if suffix == ".json":
        return load_workload_json(path)
    from .scalesim_io import load_scalesim_topology
    return load_scalesim_topology(path)
