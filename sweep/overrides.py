"""Override keys: which fields of a hardware profile a sweep may vary, and how a value is
checked and applied.

A key names a ``Profile`` field the way a profile TOML file does (``rows``, ``dram.bandwidth``,
``macs_per_pe.4``), plus ``dataflow``, the dataflow simulated (it becomes the first entry of the
profile's ``dataflows``, so a what-if may pick one the base profile does not list). Values are
type- and sign-checked here, where a spec is read; whether a combination is a valid design
(an SRAM too small for the array, per-operand DRAM ports given for one operand only) is decided
by ``Profile``'s own validation when the point runs, and an invalid one is stored as an
infeasible result with the reason.

Not overridable: ``name``, ``dataflows`` (use ``dataflow``), ``sources``, ``path`` and
``energy.sram_points`` (a curve, not a knob).
"""
from __future__ import annotations

import copy
import difflib
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from lowbit.simulator.hardware import BANDWIDTH_MODES, DATAFLOWS, OPERANDS, SPARSITY_SUPPORT

__all__ = ["OverrideKey", "OVERRIDE_KEYS", "NOT_OVERRIDABLE", "resolve_key", "normalize_value",
           "apply_overrides", "effective_dataflow"]


@dataclass(frozen=True)
class OverrideKey:
    """One overridable field: its path in the profile TOML mapping and its value type.

    kind: "int", "number" or "choice"; minimum: "positive" or "non-negative" (int / number).
    """

    key: str
    path: tuple[str, ...]
    kind: str
    minimum: str = "positive"
    choices: tuple[str, ...] = ()


def _scalar(key, kind, minimum="positive", choices=()):
    return OverrideKey(key, tuple(key.split(".")), kind, minimum, choices)


OVERRIDE_KEYS: Mapping[str, OverrideKey] = {k.key: k for k in (
    _scalar("rows", "int"),
    _scalar("cols", "int"),
    _scalar("clock_hz", "number"),
    _scalar("word_bits", "int"),
    _scalar("ifmap_sram_bytes", "int"),
    _scalar("filter_sram_bytes", "int"),
    _scalar("ofmap_sram_bytes", "int"),
    _scalar("sparsity", "choice", choices=SPARSITY_SUPPORT),
    _scalar("bandwidth_mode", "choice", choices=BANDWIDTH_MODES),
    _scalar("dataflow", "choice", choices=DATAFLOWS),
    _scalar("dram.bandwidth", "number"),
    _scalar("dram.latency", "int", "non-negative"),
    *(_scalar(f"dram.ports.{op}", "number") for op in OPERANDS),
    _scalar("energy.dram_pj_per_byte", "number"),
    _scalar("energy.leakage_pj_per_cycle", "number", "non-negative"),
)}
# Tables keyed by an operand width in bits: "<table>.<bits>".
_PER_BITS: Mapping[str, tuple[str, str]] = {"macs_per_pe": ("int", "positive"),
                                            "energy.mac_pj": ("number", "positive")}
NOT_OVERRIDABLE = ("name", "dataflows", "sources", "path", "energy.sram_points")
_BITS_KEY = re.compile(r"^(?P<table>macs_per_pe|energy\.mac_pj)\.(?P<bits>\d+)$")


def known_keys() -> tuple[str, ...]:
    """Every key form, for messages (per-bits tables shown as ``table.<bits>``)."""
    return tuple(OVERRIDE_KEYS) + tuple(f"{t}.<bits>" for t in _PER_BITS)


def resolve_key(key: str) -> OverrideKey:
    """The ``OverrideKey`` of ``key``; ``KeyError`` (message with a did-you-mean) if unknown.

    >>> resolve_key("macs_per_pe.4").path
    ('macs_per_pe', '4')
    """
    if key in OVERRIDE_KEYS:
        return OVERRIDE_KEYS[key]
    m = _BITS_KEY.match(key)
    if m and int(m["bits"]) > 0:
        kind, minimum = _PER_BITS[m["table"]]
        bits = str(int(m["bits"]))  # "08" -> "8": one spelling, one hash
        return OverrideKey(f"{m['table']}.{bits}", (*m["table"].split("."), bits), kind, minimum)
    known = known_keys()
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    why = (f"{key!r} is not overridable" if key in NOT_OVERRIDABLE
           else f"unknown override key{hint}")
    raise KeyError(f"{why}; known keys: {', '.join(known)}")


def normalize_value(spec: OverrideKey, value: Any):
    """``value`` checked against ``spec``; numbers become float (8 and 8.0 hash alike).

    Raises ``ValueError`` saying what is expected.
    """
    if spec.kind == "choice":
        if value not in spec.choices:
            raise ValueError(f"must be one of {', '.join(spec.choices)}, got {value!r}")
        return value
    if spec.kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        what = "integer"
    else:
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value))
        what = "number"
    if ok:
        ok = value > 0 if spec.minimum == "positive" else value >= 0
    if not ok:
        raise ValueError(f"must be a {spec.minimum} {what}, got {value!r}")
    return value if spec.kind == "int" else float(value)


def effective_dataflow(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> str:
    """The dataflow a point simulates: the override, else the base profile's first."""
    return overrides.get("dataflow", base["dataflows"][0])


def apply_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict:
    """A copy of the profile TOML mapping ``base`` with normalized ``overrides`` applied."""
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if key == "dataflow":
            out["dataflows"] = [value] + [d for d in out["dataflows"] if d != value]
            continue
        *parents, leaf = resolve_key(key).path
        table = out
        for name in parents:
            table = table.setdefault(name, {})
        table[leaf] = value
    return out
