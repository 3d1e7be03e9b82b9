"""Sweep specs: which hardware variants, workloads and precisions a sweep runs.

A spec is a TOML file (schema below; sweep/SCHEMA.md has the long form). It is read and checked
whole before anything runs: an unknown or misspelt key, a value of the wrong type, a profile or
workload that does not load, each raises ``SpecError`` naming the file and the key
(``edge.toml: grid.dram.bandwidth[2]: must be a positive number, got -1``)::

    name = "edge NPU what-ifs"          # optional label
    profile = "edge-npu-32x32"          # built-in simulator profile, or a profile .toml or
                                        # SCALE-Sim .cfg (relative paths: from the spec's folder)
    workloads = ["resnet18", "net.csv", "model.json"]   # zoo names, SCALE-Sim topology CSVs,
                                        # lowbit workload JSON files (simulator.workload_io)
    precisions = ["int8", "int4"]       # optional, default ["per-layer"] (each layer's own
                                        # widths); else any lowbit.roofline precision name
    weight_sparsity = ["as-is", "2:4"]  # optional, default ["as-is"]: "as-is", "dense", "2:4"
                                        # (applied to every GEMM / conv weight)
    convention = "lowbit"               # optional: "lowbit" (default) or "scalesim"

    [grid]                              # optional: axes of overrides, every combination
    rows = [16, 32, 64]
    dram.bandwidth = [4.25, 8.5, 17.0]  # dotted keys and sub-tables both work
    macs_per_pe.4 = [1, 2]
    dataflow = ["os", "ws"]

    [[overrides]]                       # optional: override sets, each crossed with the grid
    ifmap_sram_bytes = 131072
    filter_sram_bytes = 131072

Override keys are the profile's fields (``lowbit.sweep.overrides``). The points of a sweep are
override sets x workloads x precisions x weight sparsities, where the override sets are the
``[[overrides]]`` entries (or one empty set) crossed with the grid (or one empty set); a key may
not be both a grid axis and in ``[[overrides]]``.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from lowbit import tomlfields
from lowbit.roofline.precision import parse_precision
from lowbit.simulator.compute import CONVENTIONS
from lowbit.simulator.hardware import Profile, ProfileError
from lowbit.simulator.workload import Workload, WorkloadError

from .overrides import normalize_value, resolve_key

__all__ = ["SpecError", "SweepSpec", "load_spec", "spec_from_mapping", "PER_LAYER",
           "WEIGHT_SPARSITY"]

PER_LAYER = "per-layer"
WEIGHT_SPARSITY = ("as-is", "dense", "2:4")
_REQUIRED = ("profile", "workloads")
_OPTIONAL = ("name", "precisions", "weight_sparsity", "convention", "grid", "overrides")


class SpecError(ValueError):
    """An invalid sweep spec; the message names the file (if any) and the key."""


def _fail(where, key, why):
    tomlfields.fail(SpecError, where, key, why)


@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep spec. ``base`` and the workloads are loaded; grid values and override
    values are normalized (``overrides.normalize_value``).

    grid: (key, values) axes in file order. overrides: the override sets, each a tuple of
    (key, value). workloads: (reference as written, loaded Workload) pairs.
    """

    name: str
    profile_ref: str
    base: Profile
    workloads: tuple[tuple[str, Workload], ...]
    precisions: tuple[str, ...]
    weight_sparsity: tuple[str, ...]
    convention: str
    grid: tuple[tuple[str, tuple], ...]
    overrides: tuple[tuple[tuple[str, Any], ...], ...]
    path: str | None = None
    text: str = ""

    def override_sets(self) -> Iterator[dict[str, Any]]:
        """Every override set: the ``[[overrides]]`` entries (outer) crossed with the grid."""
        keys = [k for k, _ in self.grid]
        for entry in self.overrides or ((),):
            for combo in itertools.product(*(values for _, values in self.grid)):
                yield {**dict(entry), **dict(zip(keys, combo))}

    @property
    def size(self) -> int:
        """Points before de-duplication (identical points are run once)."""
        sets = max(1, len(self.overrides))
        for _, values in self.grid:
            sets *= len(values)
        return sets * len(self.workloads) * len(self.precisions) * len(self.weight_sparsity)


def load_spec(path: str | os.PathLike) -> SweepSpec:
    """Read and check a sweep spec TOML file (see the module doc); raises ``SpecError``.

    >>> spec = load_spec("sweep/examples/edge-npu.toml")
    >>> spec.size
    144
    """
    path = Path(path)
    text, data = tomlfields.read_toml(SpecError, path)
    return spec_from_mapping(data, str(path), base_dir=path.resolve().parent, text=text)


def spec_from_mapping(data: Mapping[str, Any], where: str | None = None, *,
                      base_dir: str | os.PathLike = ".", text: str = "") -> SweepSpec:
    """A checked ``SweepSpec`` from a parsed TOML mapping; relative paths from ``base_dir``."""
    tomlfields.check_keys(SpecError, where, "", data, _REQUIRED, _OPTIONAL)
    base_dir = Path(base_dir)
    name = data.get("name", "")
    if not isinstance(name, str):
        _fail(where, "name", f"must be a string, got {name!r}")
    profile_ref = data["profile"]
    if not isinstance(profile_ref, str) or not profile_ref:
        _fail(where, "profile", f"must be a profile name or a file path, got {profile_ref!r}")
    base = _load_base(where, profile_ref, base_dir)
    workloads = _workloads(where, data["workloads"], base_dir)
    precisions = _string_list(where, "precisions", data.get("precisions", [PER_LAYER]),
                              _precision)
    sparsity = _string_list(where, "weight_sparsity", data.get("weight_sparsity", ["as-is"]),
                            _choice(WEIGHT_SPARSITY))
    convention = data.get("convention", "lowbit")
    if convention not in CONVENTIONS:
        _fail(where, "convention", f"must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    grid = _grid(where, data.get("grid", {}))
    overrides = _override_list(where, data.get("overrides", []), {k for k, _ in grid})
    return SweepSpec(name=name, profile_ref=profile_ref, base=base, workloads=workloads,
                     precisions=precisions, weight_sparsity=sparsity, convention=convention,
                     grid=grid, overrides=overrides, path=where, text=text)


# --------------------------------------------------------------------------------------------
def _load_base(where, ref: str, base_dir: Path) -> Profile:
    from lowbit.simulator.profile_io import load_profile, profile_names
    from lowbit.simulator.scalesim_io import load_scalesim_config

    try:
        if ref in profile_names():
            return load_profile(ref)
        path = base_dir / ref
        if not path.is_file():
            _fail(where, "profile", f"{ref!r} is not a built-in profile "
                                    f"({', '.join(profile_names())}) and no file {path} exists")
        if path.suffix.lower() == ".cfg":
            return load_scalesim_config(path)
        return load_profile(path)
    except ProfileError as exc:
        _fail(where, "profile", str(exc))


def _workloads(where, value, base_dir: Path) -> tuple[tuple[str, Workload], ...]:
    from lowbit.simulator.workload_io import load_workload
    from lowbit.simulator.zoo import workload_names

    if not isinstance(value, list) or not value:
        _fail(where, "workloads", "must be a non-empty list of zoo names or file paths, "
                                  f"got {value!r}")
    out = []
    for i, ref in enumerate(value):
        if not isinstance(ref, str) or not ref:
            _fail(where, f"workloads[{i}]", f"must be a zoo name or a file path, got {ref!r}")
        if ref in (r for r, _ in out):
            _fail(where, f"workloads[{i}]", f"{ref!r} is listed twice")
        target = ref if ref in workload_names() else base_dir / ref
        try:
            out.append((ref, load_workload(target)))
        except WorkloadError as exc:
            _fail(where, f"workloads[{i}]", str(exc))
    return tuple(out)


def _precision(value: str) -> str:
    if value == PER_LAYER:
        return value
    return parse_precision(value).name


def _choice(choices):
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return value
    return check


def _string_list(where, key: str, value, check) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        _fail(where, key, f"must be a non-empty list of strings, got {value!r}")
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            _fail(where, f"{key}[{i}]", f"must be a string, got {item!r}")
        try:
            norm = check(item)
        except ValueError as exc:
            _fail(where, f"{key}[{i}]", str(exc))
        if norm in out:
            _fail(where, f"{key}[{i}]", f"{item!r} is listed twice")
        out.append(norm)
    return tuple(out)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """TOML sub-tables as dotted keys: {"dram": {"bandwidth": x}} -> ("dram.bandwidth", x)."""
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _key(where, at: str, key: str):
    try:
        return resolve_key(key)
    except KeyError as exc:
        _fail(where, at, exc.args[0])


def _grid(where, table) -> tuple[tuple[str, tuple], ...]:
    if not isinstance(table, dict):
        _fail(where, "grid", f"must be a table ([grid]) of key = [values], got {table!r}")
    axes = []
    for raw_key, values in _flatten(table):
        at = f"grid.{raw_key}"
        spec = _key(where, at, raw_key)
        if spec.key in (k for k, _ in axes):
            _fail(where, at, f"{spec.key!r} is given twice")
        if not isinstance(values, list) or not values:
            _fail(where, at, f"must be a non-empty list of values, got {values!r}")
        norm = []
        for i, v in enumerate(values):
            try:
                nv = normalize_value(spec, v)
            except ValueError as exc:
                _fail(where, f"{at}[{i}]", str(exc))
            if nv in norm:
                _fail(where, f"{at}[{i}]", f"{v!r} is listed twice")
            norm.append(nv)
        axes.append((spec.key, tuple(norm)))
    return tuple(axes)


def _override_list(where, entries, grid_keys: set[str]):
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        _fail(where, "overrides", "must be an array of tables ([[overrides]]), "
                                  f"got {entries!r}")
    out = []
    for i, entry in enumerate(entries):
        items: dict[str, Any] = {}
        for raw_key, value in _flatten(entry):
            at = f"overrides[{i}].{raw_key}"
            spec = _key(where, at, raw_key)
            if spec.key in grid_keys:
                _fail(where, at, f"{spec.key!r} is also a grid axis; give it in one place")
            if spec.key in items:
                _fail(where, at, f"{spec.key!r} is given twice")
            try:
                items[spec.key] = normalize_value(spec, value)
            except ValueError as exc:
                _fail(where, at, str(exc))
        out.append(tuple(items.items()))
    return tuple(out)
