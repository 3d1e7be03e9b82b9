"""Hardware profiles as TOML files: read, validate, write.

This is the only module that reads profile files (STYLE.md section 3): ``hardware.py`` holds
the records and their checks, this module maps a file onto them. One file per profile; the
built-in ones live in ``simulator/profiles/`` and ship as package data.

File layout (keys are the ``Profile`` field names, so an error names the same field whether
it comes from the file or from the record)::

    name = "edge-npu-32x32"
    rows = 32
    cols = 32
    dataflows = ["os", "ws", "is"]      # first = default
    clock_hz = 1.0e9
    word_bits = 8
    ifmap_sram_bytes = 262144            # per operand, double-buffered
    filter_sram_bytes = 262144
    ofmap_sram_bytes = 131072
    sparsity = "none"                    # optional: "none" (default) or "2:4"
    bandwidth_mode = "user"              # optional: "user" (default) or "calc"

    [macs_per_pe]                        # operand bits -> MACs per PE per cycle
    8 = 1
    4 = 2

    [dram]
    bandwidth = 8.0                      # bytes per cycle, one channel shared by all operands
    latency = 100                        # cycles
    # [dram.ports] ifmap/filter/ofmap = bytes per cycle: one port per buffer (optional)

    [energy]                             # optional; every key defaults to HOROWITZ_45NM
    leakage_pj_per_cycle = 5.0
    # mac_pj = { 8 = 0.23, ... }, sram_points = [[bytes, pJ per byte], ...], dram_pj_per_byte

    [sources]                            # field -> citation; "profile" for the whole design
    rows = "..."

Unknown keys anywhere are rejected (a typo is an error, not a silently ignored line). A key of
``[energy]`` that a file leaves out takes Horowitz's value and its citation; ``mac_pj``, when
given, replaces the whole default table.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

from lowbit import tomlfields
from .hardware import OPERANDS, DramSpec, EnergyTable, Profile, ProfileError

__all__ = [
    "HOROWITZ_45NM", "HOROWITZ_SOURCES", "HOROWITZ_CITATION", "PROFILE_DIR", "SOURCE_KEYS",
    "load_profile", "profile_names", "profile_to_toml", "save_profile",
]

PROFILE_DIR = Path(__file__).resolve().with_name("profiles")

# --------------------------------------------------------------------------------------------
# Energy defaults: M. Horowitz, "Computing's energy problem (and what we can do about it)",
# ISSCC 2014, the 45 nm, 0.9 V energy table (slide "Rough energy costs for various operations"):
#   integer add   8 bit 0.03 pJ,  32 bit 0.1 pJ     integer mult  8 bit 0.2 pJ,  32 bit 3.1 pJ
#   fp add       16 bit 0.4 pJ,   32 bit 0.9 pJ     fp mult      16 bit 1.1 pJ,  32 bit 3.7 pJ
#   SRAM read, 64 bit: 8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ
#   DRAM access, 64 bit: 1.3 - 2.6 nJ
# In EnergyTable's units:
#   mac_pj[b]   = integer mult(b) + integer add(b): 8 bit 0.2 + 0.03 = 0.23 pJ and
#                 32 bit 3.1 + 0.1 = 3.2 pJ straight from the table. Other widths are lowbit's
#                 interpolation: a power law through the two points of each operator,
#                 mult ~ b^1.977 (0.2 -> 3.1 over 4x bits, close to the textbook b^2 of an
#                 array multiplier) and add ~ b^0.868, giving 16 bit 0.842, 4 bit 0.0672,
#                 2 bit 0.0219, 1 bit 0.0082 pJ. The accumulator add is taken at operand
#                 width (Horowitz's pairing); a 32-bit accumulator would add ~0.07 pJ per MAC.
#                 The fp16 / fp32 MACs (1.5 / 4.6 pJ) are not used: workloads carry bit widths
#                 of integer operands only.
#   sram_points = 64-bit (8-byte) reads: 8 KiB 10/8 = 1.25, 32 KiB 20/8 = 2.5,
#                 1 MiB 100/8 = 12.5 pJ per byte (EnergyTable interpolates log-log between).
#   dram_pj_per_byte = midpoint of 1.3 - 2.6 nJ per 64-bit access: 1.95 nJ / 8 = 243.75 pJ/B.
#   leakage_pj_per_cycle = 0: the table is dynamic energy only; a profile sets its own.
# --------------------------------------------------------------------------------------------
HOROWITZ_CITATION = ("M. Horowitz, 'Computing's energy problem (and what we can do about it)', "
                     "ISSCC 2014, 45 nm energy table")


def _fail(where, fieldname, why):
    tomlfields.fail(ProfileError, where, fieldname, why)


def _check_keys(where, prefix, table, required, optional):
    tomlfields.check_keys(ProfileError, where, prefix, table, required, optional)


_toml_str = tomlfields.toml_str


def _horowitz_int_mac_pj(bits: int) -> float:
    """Integer MAC energy (pJ) at ``bits``: Horowitz's 8/32-bit mult + add, power law between."""
    alpha = math.log(3.1 / 0.2) / math.log(4.0)
    beta = math.log(0.1 / 0.03) / math.log(4.0)
    return 0.2 * (bits / 8) ** alpha + 0.03 * (bits / 8) ** beta


HOROWITZ_45NM = EnergyTable(
    mac_pj={1: 0.0082, 2: 0.0219, 4: 0.0672, 8: 0.23, 16: 0.842, 32: 3.2},
    sram_points=((8 * 1024, 1.25), (32 * 1024, 2.5), (1024 * 1024, 12.5)),
    dram_pj_per_byte=243.75,
    leakage_pj_per_cycle=0.0,
)

HOROWITZ_SOURCES: Mapping[str, str] = {
    "energy.mac_pj": (
        f"{HOROWITZ_CITATION}: int mult + int add, 8 bit 0.2 + 0.03 = 0.23 pJ, 32 bit 3.1 + 0.1 "
        "= 3.2 pJ; 1/2/4/16 bit by lowbit's power-law interpolation through those points "
        "(mult ~ b^1.98, add ~ b^0.87)"),
    "energy.sram_points": (
        f"{HOROWITZ_CITATION}: 64-bit SRAM read 8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ, "
        "divided by 8 bytes"),
    "energy.dram_pj_per_byte": (
        f"{HOROWITZ_CITATION}: DRAM 1.3-2.6 nJ per 64-bit access; lowbit takes the midpoint "
        "1.95 nJ / 8 bytes"),
    "energy.leakage_pj_per_cycle": (
        f"0: {HOROWITZ_CITATION} tabulates dynamic energy only; no static term unless a "
        "profile sets one"),
}

# Keys a [sources] table may cite: every field, the sub-fields of dram and energy, and
# "profile" for a note on the design as a whole.
SOURCE_KEYS: tuple[str, ...] = (
    "profile", "name", "rows", "cols", "dataflows", "clock_hz", "word_bits",
    "ifmap_sram_bytes", "filter_sram_bytes", "ofmap_sram_bytes", "macs_per_pe", "sparsity",
    "bandwidth_mode", "dram", "dram.bandwidth", "dram.latency", "dram.ports",
    "energy", "energy.mac_pj", "energy.sram_points", "energy.dram_pj_per_byte",
    "energy.leakage_pj_per_cycle",
)

_REQUIRED = ("name", "rows", "cols", "dataflows", "clock_hz", "word_bits",
             "ifmap_sram_bytes", "filter_sram_bytes", "ofmap_sram_bytes", "macs_per_pe", "dram")
_OPTIONAL = ("sparsity", "bandwidth_mode", "energy", "sources")
_DRAM_REQUIRED = ("bandwidth", "latency")
_DRAM_OPTIONAL = ("ports",)
_ENERGY_KEYS = ("mac_pj", "sram_points", "dram_pj_per_byte", "leakage_pj_per_cycle")
_TABLES = ("macs_per_pe", "dram", "energy", "sources")


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def profile_names() -> tuple[str, ...]:
    """Names of the built-in profiles (the .toml files shipped in ``simulator/profiles/``)."""
    return tuple(sorted(p.stem for p in PROFILE_DIR.glob("*.toml")))


def load_profile(name_or_path: str | os.PathLike) -> Profile:
    """Load a hardware profile: a built-in name (see ``profile_names()``) or a .toml path.

    Returns a validated ``Profile`` whose ``path`` is the file read. Any problem (TOML syntax,
    a missing or unknown key, a value of the wrong type or out of range) raises
    ``ProfileError`` naming the file and the field.

    >>> load_profile("tpu-v1").rows
    256
    """
    if isinstance(name_or_path, str) and name_or_path in profile_names():
        path = PROFILE_DIR / f"{name_or_path}.toml"
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ProfileError(f"{name_or_path}: not a built-in profile "
                               f"({', '.join(profile_names())}) and no such file")
    _, data = tomlfields.read_toml(ProfileError, path)
    return profile_from_mapping(data, str(path))


def profile_from_mapping(data: Mapping[str, Any], where: str | None = None) -> Profile:
    """Build a validated ``Profile`` from a parsed TOML mapping; ``where`` names it in errors."""
    _check_keys(where, "", data, _REQUIRED, _OPTIONAL)
    for table in _TABLES:
        if table in data and not isinstance(data[table], dict):
            _fail(where, table, f"must be a table ([{table}]), got {data[table]!r}")
    for key in data:
        if key not in _TABLES and isinstance(data[key], dict):
            _fail(where, key, "must be a value, not a table")

    dataflows = data["dataflows"]
    if not isinstance(dataflows, list) or not all(isinstance(d, str) for d in dataflows):
        _fail(where, "dataflows",
              f'must be a list of strings such as ["os", "ws"], got {dataflows!r}')

    macs_per_pe = _int_keyed(where, "macs_per_pe", data["macs_per_pe"])
    dram = _dram(where, data["dram"])
    energy, energy_sources = _energy(where, data.get("energy", {}))

    sources_in = data.get("sources", {})
    _check_keys(where, "sources.", sources_in, (), SOURCE_KEYS)
    for key, text in sources_in.items():
        if isinstance(text, dict):
            _fail(where, f"sources.{key}", "is a table: quote dotted keys, e.g. "
                                           '"dram.bandwidth" = "..."')
        if not isinstance(text, str):
            _fail(where, f"sources.{key}", f"must be a string (a citation), got {text!r}")
    sources = {**energy_sources, **sources_in}

    return Profile(
        name=data["name"], rows=data["rows"], cols=data["cols"], dataflows=tuple(dataflows),
        clock_hz=data["clock_hz"], ifmap_sram_bytes=data["ifmap_sram_bytes"],
        filter_sram_bytes=data["filter_sram_bytes"], ofmap_sram_bytes=data["ofmap_sram_bytes"],
        word_bits=data["word_bits"], dram=dram, macs_per_pe=macs_per_pe, energy=energy,
        sparsity=data.get("sparsity", "none"), bandwidth_mode=data.get("bandwidth_mode", "user"),
        sources=sources, path=where)






def _int_keyed(where, field: str, table: Mapping[str, Any]) -> dict[int, Any]:
    """A TOML table keyed by bit widths ("8" = ...) as {8: ...}."""
    out: dict[int, Any] = {}
    for key, value in table.items():
        try:
            bits = int(key)
        except ValueError:
            bits = None
        if bits is None or str(bits) != key.strip():
            _fail(where, f"{field}", f"key {key!r} is not a bit width (a positive integer)")
        if isinstance(value, dict):
            _fail(where, f"{field}[{key}]", "must be a number, not a table")
        out[bits] = value
    return out


def _dram(where, table: Mapping[str, Any]) -> DramSpec:
    _check_keys(where, "dram.", table, _DRAM_REQUIRED, _DRAM_OPTIONAL)
    ports = table.get("ports")
    if ports is not None:
        if not isinstance(ports, dict):
            _fail(where, "dram.ports", f"must be a table of {', '.join(OPERANDS)}, got {ports!r}")
        _check_keys(where, "dram.ports.", ports, OPERANDS, ())
    return DramSpec(bandwidth=table["bandwidth"], latency=table["latency"], ports=ports)


def _energy(where, table: Mapping[str, Any]) -> tuple[EnergyTable, dict[str, str]]:
    """The energy table: keys given in the file, Horowitz defaults (and citations) for the rest."""
    _check_keys(where, "energy.", table, (), _ENERGY_KEYS)
    sources = {f"energy.{k}": HOROWITZ_SOURCES[f"energy.{k}"] for k in _ENERGY_KEYS
               if k not in table}
    mac_pj = HOROWITZ_45NM.mac_pj
    if "mac_pj" in table:
        if not isinstance(table["mac_pj"], dict):
            _fail(where, "energy.mac_pj", "must be a table of bits = pJ, e.g. { 8 = 0.23 }")
        mac_pj = _int_keyed(where, "energy.mac_pj", table["mac_pj"])
    points = HOROWITZ_45NM.sram_points
    if "sram_points" in table:
        raw = table["sram_points"]
        ok = isinstance(raw, list) and all(
            isinstance(p, list) and len(p) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in p)
            for p in raw)
        if not ok:
            _fail(where, "energy.sram_points",
                  f"must be a list of [bytes, pJ per byte] pairs, got {raw!r}")
        points = tuple((p[0], p[1]) for p in raw)
    return EnergyTable(
        mac_pj=mac_pj, sram_points=points,
        dram_pj_per_byte=table.get("dram_pj_per_byte", HOROWITZ_45NM.dram_pj_per_byte),
        leakage_pj_per_cycle=table.get("leakage_pj_per_cycle", HOROWITZ_45NM.leakage_pj_per_cycle),
    ), sources


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # shortest repr that reads back to the same float
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def profile_to_toml(profile: Profile) -> str:
    """The profile as TOML text that ``load_profile`` reads back to an equal record.

    Every field is written out, including the energy table (defaults made explicit), so the
    file no longer depends on lowbit's defaults. ``path`` is not written.
    """
    lines = [
        f"# lowbit hardware profile {profile.name!r}, written by "
        "lowbit.simulator.profile_io.profile_to_toml.",
        "# Units: bytes, bytes per cycle, cycles, Hz, pJ. Citations are in [sources].",
        "",
    ]
    for key in ("name", "rows", "cols", "dataflows", "clock_hz", "word_bits",
                "ifmap_sram_bytes", "filter_sram_bytes", "ofmap_sram_bytes",
                "sparsity", "bandwidth_mode"):
        lines.append(f"{key} = {_toml_value(getattr(profile, key))}")
    lines += ["", "[macs_per_pe]"]
    lines += [f"{bits} = {_toml_value(rate)}" for bits, rate in sorted(profile.macs_per_pe.items())]
    lines += ["", "[dram]",
              f"bandwidth = {_toml_value(profile.dram.bandwidth)}",
              f"latency = {_toml_value(profile.dram.latency)}"]
    if profile.dram.ports is not None:
        lines += ["", "[dram.ports]"]
        lines += [f"{op} = {_toml_value(profile.dram.ports[op])}" for op in OPERANDS]
    energy = profile.energy
    lines += ["", "[energy]",
              "sram_points = [" + ", ".join(f"[{_toml_value(s)}, {_toml_value(e)}]"
                                            for s, e in energy.sram_points) + "]",
              f"dram_pj_per_byte = {_toml_value(energy.dram_pj_per_byte)}",
              f"leakage_pj_per_cycle = {_toml_value(energy.leakage_pj_per_cycle)}",
              "", "[energy.mac_pj]"]
    lines += [f"{bits} = {_toml_value(pj)}" for bits, pj in sorted(energy.mac_pj.items())]
    if profile.sources:
        lines += ["", "[sources]"]
        order = {k: i for i, k in enumerate(SOURCE_KEYS)}
        for key in sorted(profile.sources, key=lambda k: (order.get(k, len(order)), k)):
            lines.append(f"{_toml_str(key)} = {_toml_str(profile.sources[key])}")
    return "\n".join(lines) + "\n"


def save_profile(profile: Profile, path: str | os.PathLike) -> Path:
    """Write ``profile`` as TOML to ``path`` (e.g. a modified profile for a what-if); returns it."""
    path = Path(path)
    path.write_text(profile_to_toml(profile), encoding="utf-8")
    return path
