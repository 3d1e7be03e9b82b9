"""Points of a sweep: what each one is, its hash, and the task a worker runs for it.

A point is (base profile, overrides, workload, precision, dataflow, weight sparsity,
convention). Its identity is the SHA-256 of its canonical JSON (keys sorted, no whitespace,
floats as Python's shortest round-trip repr, ASCII)::

    {"convention": "lowbit", "dataflow": "os", "overrides": {"dram.bandwidth": 17.0},
     "precision": "int8", "profile": "<sha256 of the base profile>", "v": 1,
     "weight_sparsity": "as-is", "workload": "<sha256 of the workload>"}

where the profile digest is that of the canonical JSON of the base profile as its TOML file
maps it (``profile_io.profile_to_toml``, citations left out) and the workload digest that of
the workload as its JSON file maps it (``simulator.workload_io``, ``source`` left out). So a
point's hash changes when any figure of its profile or any layer of its workload changes,
and not when a citation, a comment, the order of keys in a file or the spelling of a number
(8 or 8.0) does. The lowbit version is stored with each result, not hashed.
"""
from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from typing import Any, Mapping

from lowbit.simulator.hardware import Profile
from lowbit.simulator.profile_io import profile_to_toml
from lowbit.simulator.workload import Workload
from lowbit.simulator.workload_io import workload_to_dict

from .overrides import OVERRIDE_KEYS, apply_overrides, effective_dataflow
from .spec import SweepSpec

__all__ = ["POINT_FORMAT", "Point", "canonical_json", "digest", "profile_mapping",
           "workload_mapping", "point_key", "point_hash", "expand"]

POINT_FORMAT = 1  # bump when the meaning of a point's fields changes


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys, no whitespace, ASCII only, no NaN / infinity."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def digest(obj: Any) -> str:
    """SHA-256 (hex) of ``canonical_json(obj)``."""
    return hashlib.sha256(canonical_json(obj).encode("ascii")).hexdigest()


def profile_mapping(profile: Profile) -> dict:
    """The profile as its TOML file maps it, every field explicit, without ``sources``, and
    every real-valued figure a float (a file may write ``bandwidth = 4`` or ``4.0``)."""
    data = tomllib.loads(profile_to_toml(profile))
    data.pop("sources", None)
    for spec in OVERRIDE_KEYS.values():
        if spec.kind == "number":
            *parents, leaf = spec.path
            table = data
            for name in parents:
                table = table.get(name, {})
            if leaf in table:
                table[leaf] = float(table[leaf])
    energy = data["energy"]
    energy["mac_pj"] = {bits: float(pj) for bits, pj in energy["mac_pj"].items()}
    energy["sram_points"] = [[size, float(pj)] for size, pj in energy["sram_points"]]
    return data


def workload_mapping(workload: Workload) -> dict:
    """The workload as its JSON file maps it, without the free-text ``source``."""
    data = workload_to_dict(workload)
    data.pop("source", None)
    return data


def point_key(profile_digest: str, overrides: Mapping[str, Any], workload_digest: str,
              precision: str, dataflow: str, weight_sparsity: str, convention: str) -> dict:
    """The dict whose canonical JSON identifies a point (see the module doc)."""
    return {"v": POINT_FORMAT, "profile": profile_digest, "overrides": dict(overrides),
            "workload": workload_digest, "precision": precision, "dataflow": dataflow,
            "weight_sparsity": weight_sparsity, "convention": convention}


def point_hash(key: Mapping[str, Any]) -> str:
    """The point's identity: ``digest(point_key(...))``."""
    return digest(key)


@dataclass(frozen=True)
class Point:
    """One point: its hash and canonical JSON, its labels and the worker's task.

    ``task`` is plain data (the effective profile mapping, the workload mapping, the run
    settings) so it pickles for any executor; ``lowbit.sweep.evaluate.evaluate_point`` runs it.
    """

    hash: str
    key_json: str
    labels: Mapping[str, Any]
    task: Mapping[str, Any]


def _hardware_columns(profile: Mapping[str, Any]) -> dict:
    """Columns describing the point's hardware, from its effective profile mapping."""
    sram = {op: profile[f"{op}_sram_bytes"] for op in ("ifmap", "filter", "ofmap")}
    macs = profile["macs_per_pe"]
    return {
        "rows": profile["rows"], "cols": profile["cols"],
        "pe_count": profile["rows"] * profile["cols"],
        "sram_bytes": sum(sram.values()),
        **{f"{op}_sram_bytes": v for op, v in sram.items()},
        "clock_hz": float(profile["clock_hz"]),
        "dram_bandwidth": float(profile["dram"]["bandwidth"]),
        "dram_latency": profile["dram"]["latency"],
        "sparsity_support": profile.get("sparsity", "none"),
        "macs_per_pe": " ".join(f"{b}:{macs[b]}" for b in sorted(macs, key=int, reverse=True)),
    }


def expand(spec: SweepSpec) -> list[Point]:
    """The points of ``spec`` in run order, identical points once (the first occurrence).

    Order: override sets (``spec.override_sets()``), then workloads, precisions, weight
    sparsities.
    """
    base = profile_mapping(spec.base)
    base_digest = digest(base)
    wls = []
    for _, wl in spec.workloads:
        full = workload_to_dict(wl)
        wls.append((wl.name, digest(workload_mapping(wl)), full))
    points: list[Point] = []
    seen: set[str] = set()
    for overrides in spec.override_sets():
        overrides = dict(sorted(overrides.items()))
        profile = apply_overrides(base, overrides)
        dataflow = effective_dataflow(base, overrides)
        hardware = _hardware_columns(profile)
        overrides_json = canonical_json(overrides)
        for wl_name, wl_digest, wl_dict in wls:
            for precision in spec.precisions:
                for sparsity in spec.weight_sparsity:
                    key = point_key(base_digest, overrides, wl_digest, precision, dataflow,
                                    sparsity, spec.convention)
                    key_json = canonical_json(key)
                    h = hashlib.sha256(key_json.encode("ascii")).hexdigest()  # = point_hash(key)
                    if h in seen:
                        continue
                    seen.add(h)
                    labels = {"point_hash": h, "point_json": key_json,
                              "profile": spec.base.name, "profile_hash": base_digest,
                              "overrides": overrides_json, "workload": wl_name,
                              "workload_hash": wl_digest, "precision": precision,
                              "dataflow": dataflow, "weight_sparsity": sparsity,
                              "convention": spec.convention, **hardware}
                    task = {"point_hash": h, "profile": profile, "workload": wl_dict,
                            "precision": precision, "dataflow": dataflow,
                            "weight_sparsity": sparsity, "convention": spec.convention}
                    points.append(Point(h, key_json, labels, task))
    return points
