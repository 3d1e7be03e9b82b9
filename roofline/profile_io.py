"""Roofline device profiles: TOML files, the simulator's NPU profiles, and the host profile.

The only module of the roofline that reads or writes files (STYLE.md section 3). Built-in
devices live in ``roofline/profiles/*.toml`` and ship as package data; the simulator's NPU
profiles (``lowbit.simulator.profile_names()``) are turned into devices by ``from_npu``, so
the roofline and the simulator share one set of NPU figures; ``lowbit roofline calibrate``
writes the host profile to ``host_profile_path()`` (the XDG cache folder).

File layout (every figure cited in [sources]; a missing citation is an error)::

    name = "h100-sxm"
    kind = "gpu"                  # gpu | npu | cpu
    tdp_w = 700.0                 # optional: board / chip power
    tile_bytes = 495616           # one core's reuse working set (see Device)

    [peak_tops]                   # dense, 1e12 ops/s (a MAC = 2 ops)
    bf16 = 989.4
    [sparse_peak_tops]            # optional: 2:4 weight sparsity, dense-equivalent ops
    bf16 = 1978.9

    [isa_peak_tops.int8]          # optional: per precision, per ISA variant (CPU profiles)
    avx512_vnni = 1.95            # vpdpbusd zmm; peak_tops.int8 must be >= every variant
    avx2_maddwd = 0.43            # vpmaddwd + vpaddd ymm

    [[memory]]                    # outermost first
    name = "HBM3"
    bandwidth_gbs = 3350.0        # 1e9 bytes/s
    capacity_bytes = 80e9         # optional for the outermost level only
    pj_per_byte = 31.2            # optional, default 0

    [energy]                      # optional
    pj_per_op = { bf16 = 0.35 }   # default: tdp_w / peak (all power to compute at peak)

    [efficiency]                  # optional: U when nothing better is known
    default = 1.0

    [sources]                     # a citation for each figure
    "peak_tops.bf16" = "..."
    "isa_peak_tops.int8.avx2_maddwd" = "..."
    "memory.HBM3" = "..."
    tdp_w = "..."

``isa_peak_tops`` holds the ceiling of each instruction family a kernel variant may use: a
kernel is judged against the ceiling of the instructions it issues (``lowbit roofline
--bench-json``), not only the best one of its precision. ``lowbit roofline calibrate`` writes
the variants of ``lowbit.kernels.peak.PEAKS`` (int8: avx512_vnni, avx512_maddwd,
avx512_maddubs, avx2_maddwd, avx2_maddubs, sse2_maddwd; fp32: avx512_fma, avx2_fma,
sse2_muladd; bf16: avx512_bf16; binary: avx512_vpopcntdq, avx2_lut, popcnt), with
``peak_tops`` of each precision set to its best variant. Variant names are lower-case
identifiers; a variant needs the precision's ``peak_tops`` entry and may not exceed it.

Unknown keys are rejected with a close-match hint; every error names the file and the field.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Mapping

from lowbit import tomlfields
from .device import PRECISIONS, Device, DeviceError, MemoryLevel

__all__ = ["PROFILE_DIR", "device_names", "load_device", "device_from_mapping", "from_npu",
           "device_to_toml", "save_device", "host_profile_path", "get_device", "all_names"]

PROFILE_DIR = Path(__file__).resolve().with_name("profiles")
TERA = 1e12
GIGA = 1e9

_TOP_REQUIRED = ("name", "kind", "tile_bytes", "peak_tops", "memory")
_TOP_OPTIONAL = ("tdp_w", "sparse_peak_tops", "isa_peak_tops", "energy", "efficiency",
                 "sources")
_LEVEL_REQUIRED = ("name", "bandwidth_gbs")
_LEVEL_OPTIONAL = ("capacity_bytes", "pj_per_byte")
_ENERGY_KEYS = ("pj_per_op",)
TDP_DERIVED = ("derived: tdp_w / peak, i.e. all of the board power spent on compute at peak; "
               "an upper bound on the energy per op")


def _fail(where, fieldname, why):
    tomlfields.fail(DeviceError, where, fieldname, why)


def _check_keys(where, prefix, table, required, optional):
    tomlfields.check_keys(DeviceError, where, prefix, table, required, optional)


_toml_str = tomlfields.toml_str


def _table(where, name: str, value) -> dict:
    if not isinstance(value, dict):
        _fail(where, name, f"must be a table ([{name}]), got {value!r}")
    return value


def _precision_table(where, name: str, table, scale: float = 1.0) -> dict[str, float]:
    out = {}
    for prec, value in _table(where, name, table).items():
        if prec not in PRECISIONS:
            close = difflib.get_close_matches(prec, PRECISIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            _fail(where, f"{name}.{prec}", f"unknown precision{hint}; known: {', '.join(PRECISIONS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(where, f"{name}.{prec}", f"must be a number, got {value!r}")
        out[prec] = value * scale
    return out


def _isa_peak_table(where, table) -> dict[str, dict[str, float]]:
    """``[isa_peak_tops.<precision>]`` tables: variant -> 1e12 ops/s, as ops/s."""
    out = {}
    for prec, variants in _table(where, "isa_peak_tops", table).items():
        if prec not in PRECISIONS:
            close = difflib.get_close_matches(prec, PRECISIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            _fail(where, f"isa_peak_tops.{prec}",
                  f"unknown precision{hint}; known: {', '.join(PRECISIONS)}")
        name = f"isa_peak_tops.{prec}"
        if not isinstance(variants, dict):
            _fail(where, name, f"must be a table of ISA variants ([{name}]), got {variants!r}")
        out[prec] = {}
        for variant, value in variants.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                _fail(where, f"{name}.{variant}", f"must be a number, got {value!r}")
            out[prec][variant] = value * TERA
    return out


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def device_names() -> tuple[str, ...]:
    """Built-in roofline device files (``roofline/profiles/*.toml``)."""
    return tuple(sorted(p.stem for p in PROFILE_DIR.glob("*.toml")))


def all_names() -> tuple[str, ...]:
    """Every name ``get_device`` accepts: roofline devices, simulator NPUs, and "host"."""
    from lowbit.simulator.profile_io import profile_names
    return device_names() + tuple(profile_names()) + ("host",)


def load_device(name_or_path: str | os.PathLike) -> Device:
    """Load a roofline device: a built-in name (``device_names()``) or a TOML path.

    Any problem (TOML syntax, missing / unknown key, bad value, uncited figure) raises
    ``DeviceError`` naming the file and the field.
    """
    if isinstance(name_or_path, str) and name_or_path in device_names():
        path = PROFILE_DIR / f"{name_or_path}.toml"
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise DeviceError(f"{name_or_path}: not a built-in roofline device "
                              f"({', '.join(device_names())}) and no such file")
    _, data = tomlfields.read_toml(DeviceError, path)
    return device_from_mapping(data, str(path))


def device_from_mapping(data: Mapping[str, Any], where: str | None = None) -> Device:
    """A validated ``Device`` from a parsed TOML mapping; ``where`` names it in errors."""
    _check_keys(where, "", data, _TOP_REQUIRED, _TOP_OPTIONAL)
    peak = _precision_table(where, "peak_tops", data["peak_tops"], TERA)
    sparse = _precision_table(where, "sparse_peak_tops", data.get("sparse_peak_tops", {}), TERA)
    isa_peak = _isa_peak_table(where, data.get("isa_peak_tops", {}))
    raw_levels = data["memory"]
    if not isinstance(raw_levels, list) or not raw_levels:
        _fail(where, "memory", "must be one or more [[memory]] tables, outermost first")
    levels = []
    for i, lv in enumerate(raw_levels):
        _table(where, f"memory[{i}]", lv)
        _check_keys(where, f"memory[{i}].", lv, _LEVEL_REQUIRED, _LEVEL_OPTIONAL)
        bw = lv["bandwidth_gbs"]
        if isinstance(bw, bool) or not isinstance(bw, (int, float)):
            _fail(where, f"memory[{i}].bandwidth_gbs", f"must be a number, got {bw!r}")
        levels.append(MemoryLevel(name=lv["name"], bandwidth=bw * GIGA,
                                  capacity_bytes=lv.get("capacity_bytes"),
                                  pj_per_byte=lv.get("pj_per_byte", 0.0)))
    energy = _table(where, "energy", data.get("energy", {}))
    _check_keys(where, "energy.", energy, (), _ENERGY_KEYS)
    sources = dict(_table(where, "sources", data.get("sources", {})))
    for key, text in sources.items():
        if not isinstance(text, str) or not text.strip():
            _fail(where, f"sources.{key}", f"must be a non-empty string (a citation), got {text!r}")
    tdp = data.get("tdp_w")
    if "pj_per_op" in energy:
        pj = _precision_table(where, "energy.pj_per_op", energy["pj_per_op"])
    elif tdp is not None and isinstance(tdp, (int, float)) and tdp > 0:
        pj = {p: tdp / ops * 1e12 for p, ops in peak.items() if ops > 0}
        sources.setdefault("energy.pj_per_op", TDP_DERIVED)
    else:
        pj = {}
    eff_table = dict(_table(where, "efficiency", data.get("efficiency", {"default": 1.0})))
    if "default" not in eff_table:
        _fail(where, "efficiency.default", "missing (required)")
    default = eff_table.pop("default")
    eff = {"default": default, **_precision_table(where, "efficiency", eff_table)}
    _check_sources(where, data, levels, sources)
    try:
        return Device(name=data["name"], kind=data["kind"], peak=peak, sparse_peak=sparse,
                      memory=tuple(levels), tile_bytes=data["tile_bytes"], pj_per_op=pj,
                      tdp_w=tdp, efficiency=eff, isa_peak=isa_peak, sources=sources, path=where)
    except DeviceError as exc:
        raise DeviceError(_file_field_names(str(exc), where)) from None


# The record's ceilings are in ops/s under these names; the file's in 1e12 ops/s.
_FILE_TABLES = {"peak.": "peak_tops.", "sparse_peak.": "sparse_peak_tops.",
                "isa_peak.": "isa_peak_tops."}


def _file_field_names(message: str, where: str | None) -> str:
    """A ``Device`` check's message with the field named as in the file."""
    prefix = f"{where}: " if where else ""
    for record, file in _FILE_TABLES.items():
        if message.startswith(prefix + record):
            return prefix + file + message[len(prefix + record):]
    return message


def _check_sources(where, data, levels, sources) -> None:
    """Every figure cited: each peak, sparse peak, memory level and the TDP."""
    needed = [f"peak_tops.{p}" for p in data["peak_tops"]]
    needed += [f"sparse_peak_tops.{p}" for p in data.get("sparse_peak_tops", {})]
    needed += [f"isa_peak_tops.{p}.{v}" for p, t in data.get("isa_peak_tops", {}).items()
               for v in t]
    needed += [f"memory.{lv.name}" for lv in levels]
    needed += ["tdp_w"] if "tdp_w" in data else []
    for key in needed:
        if key not in sources:
            _fail(where, f"sources.{key}", "missing: every figure needs a citation")
    allowed_prefixes = ("profile", "name", "kind", "tile_bytes", "tdp_w", "peak_tops.",
                        "sparse_peak_tops.", "isa_peak_tops.", "memory.", "energy.",
                        "efficiency.")
    for key in sources:
        if not key.startswith(allowed_prefixes):
            _fail(where, f"sources.{key}", "cites no field of the profile")


# --------------------------------------------------------------------------------------------
# The simulator's NPU profiles as roofline devices
# --------------------------------------------------------------------------------------------
_BITS_TO_PRECISION = {1: "binary", 4: "int4", 8: "int8", 16: "fp16", 32: "fp32"}


def from_npu(profile) -> Device:
    """A simulator NPU ``Profile`` as a roofline device, from the same figures.

    peak[p] = rows * cols * macs_per_pe[bits] * 2 * clock_hz for every listed bit width (the
    16-bit listing of a 16-bit array is taken as fp16/bf16; 2:4 profiles get a sparse ceiling
    of twice the dense one); DRAM bandwidth = dram.bandwidth (bytes per cycle) * clock, or the
    sum of the per-operand ports; the on-chip level is the three operand SRAMs together,
    read at one array edge of words per operand per cycle. Energy: MAC pJ / 2 per op, the
    DRAM pJ/byte, and the SRAM pJ/byte of a buffer of the total size. ``tile_bytes`` is the
    smallest operand buffer (what one operand stream can reuse). In CALC bandwidth mode the
    simulator never stalls on DRAM, so the DRAM roof is the channel as configured (usually
    effectively unbounded).
    """
    clock = profile.clock_hz
    array = profile.rows * profile.cols
    peak = {}
    for bits, rate in sorted(profile.macs_per_pe.items()):
        prec = _BITS_TO_PRECISION.get(bits)
        if prec is None:
            continue
        peak[prec] = array * rate * 2 * clock
        if prec == "fp16":
            peak["bf16"] = peak[prec]
    # widths wider than any listed run at the widest listed rate, as in the simulator
    # (Profile.macs_per_cycle); they get that ceiling here too
    widest = max(profile.macs_per_pe)
    for bits in (16, 32):
        if bits > widest:
            for prec in ("fp16", "bf16") if bits == 16 else ("fp32",):
                peak.setdefault(prec, array * profile.macs_per_pe[widest] * 2 * clock)
    sparse = {p: 2 * v for p, v in peak.items()} if profile.sparsity == "2:4" else {}
    if profile.dram.ports is not None:
        dram_bpc = sum(profile.dram.ports.values())
    else:
        dram_bpc = profile.dram.bandwidth
    sram_total = profile.ifmap_sram_bytes + profile.filter_sram_bytes + profile.ofmap_sram_bytes
    # each operand buffer feeds one array edge of words per cycle
    sram_bpc = (profile.rows + 2 * profile.cols) * profile.word_bits / 8
    energy = profile.energy
    pj = {_BITS_TO_PRECISION[b]: e / 2 for b, e in energy.mac_pj.items() if b in _BITS_TO_PRECISION}
    if "fp16" in pj:
        pj["bf16"] = pj["fp16"]
    levels = (
        MemoryLevel("DRAM", dram_bpc * clock, None, energy.dram_pj_per_byte),
        MemoryLevel("SRAM", sram_bpc * clock, float(sram_total),
                    energy.sram_pj_per_byte(sram_total)),
    )
    src = dict(profile.sources)
    sources = {
        "profile": f"lowbit simulator profile {profile.name!r} ({profile.path}) via "
                   f"lowbit.roofline.from_npu; " + src.get("profile", ""),
        "memory.DRAM": src.get("dram.bandwidth", "simulator profile dram.bandwidth") +
                       f" ({profile.bandwidth_mode} bandwidth mode)",
        "memory.SRAM": "lowbit: rows + 2 * cols words per cycle (one array edge per operand "
                       "buffer); capacity = the three operand SRAMs",
    }
    for prec in peak:
        sources[f"peak_tops.{prec}"] = ("rows * cols * macs_per_pe * 2 * clock_hz; " +
                                        src.get("macs_per_pe", ""))
    return Device(name=profile.name, kind="npu", peak=peak, sparse_peak=sparse, memory=levels,
                  tile_bytes=float(min(profile.ifmap_sram_bytes, profile.filter_sram_bytes,
                                       profile.ofmap_sram_bytes)),
                  pj_per_op=pj, tdp_w=None, efficiency={"default": 1.0}, sources=sources,
                  path=profile.path, npu=profile)


# --------------------------------------------------------------------------------------------
# The host profile (written by `lowbit roofline calibrate`)
# --------------------------------------------------------------------------------------------
def host_profile_path() -> Path:
    """``$XDG_CACHE_HOME/lowbit/roofline-host.toml`` (``~/.cache`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lowbit" / "roofline-host.toml"


def get_device(profile) -> Device:
    """A ``Device`` from a Device, a simulator Profile, a name or a TOML path.

    Names: the built-in roofline devices, the simulator's NPU profiles (through
    ``from_npu``) and "host" (the calibrated profile; run ``lowbit roofline calibrate``).
    """
    if isinstance(profile, Device):
        return profile
    from lowbit.simulator.hardware import Profile
    from lowbit.simulator.profile_io import load_profile, profile_names
    if isinstance(profile, Profile):
        return from_npu(profile)
    if isinstance(profile, str):
        if profile == "host":
            path = host_profile_path()
            if not path.is_file():
                raise DeviceError(f"host: no calibrated profile at {path}; run "
                                  "`lowbit roofline calibrate` first")
            return load_device(path)
        if profile in device_names():
            return load_device(profile)
        if profile in profile_names():
            return from_npu(load_profile(profile))
    if isinstance(profile, (str, os.PathLike)):
        path = Path(profile)
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            # a simulator profile has rows / cols; a roofline device has peak_tops
            if "peak_tops" in text:
                return load_device(path)
            return from_npu(load_profile(path))
        raise DeviceError(f"{profile}: unknown device; built-in: {', '.join(all_names())}")
    raise TypeError(f"profile must be a Device, a simulator Profile, a name or a path, "
                    f"got {type(profile).__name__}")


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _num(x: float) -> str:
    return repr(float(x))


def device_to_toml(device: Device, header: str = "") -> str:
    """The device as TOML text that ``load_device`` reads back to an equal record."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()] if header else []
    lines += [f"# lowbit roofline device {device.name!r}, written by "
              "lowbit.roofline.profile_io.device_to_toml. Units: 1e12 ops/s, 1e9 B/s, bytes, pJ, W.",
              "", f"name = {_toml_str(device.name)}", f"kind = {_toml_str(device.kind)}",
              f"tile_bytes = {_num(device.tile_bytes)}"]
    if device.tdp_w is not None:
        lines.append(f"tdp_w = {_num(device.tdp_w)}")
    lines += ["", "[peak_tops]"] + [f"{p} = {_num(v / TERA)}" for p, v in device.peak.items()]
    if device.sparse_peak:
        lines += ["", "[sparse_peak_tops]"] + [f"{p} = {_num(v / TERA)}"
                                               for p, v in device.sparse_peak.items()]
    for prec, table in device.isa_peak.items():
        lines += ["", f"[isa_peak_tops.{prec}]"] + [f"{v} = {_num(ops / TERA)}"
                                                     for v, ops in table.items()]
    for lv in device.memory:
        lines += ["", "[[memory]]", f"name = {_toml_str(lv.name)}",
                  f"bandwidth_gbs = {_num(lv.bandwidth / GIGA)}"]
        if lv.capacity_bytes is not None:
            lines.append(f"capacity_bytes = {_num(lv.capacity_bytes)}")
        lines.append(f"pj_per_byte = {_num(lv.pj_per_byte)}")
    if device.pj_per_op:
        lines += ["", "[energy]", "pj_per_op = { " + ", ".join(
            f"{p} = {_num(v)}" for p, v in device.pj_per_op.items()) + " }"]
    lines += ["", "[efficiency]"] + [f"{k} = {_num(v)}" for k, v in device.efficiency.items()]
    if device.sources:
        lines += ["", "[sources]"] + [f"{_toml_str(k)} = {_toml_str(v)}"
                                      for k, v in device.sources.items()]
    return "\n".join(lines) + "\n"


def save_device(device: Device, path: str | os.PathLike, header: str = "") -> Path:
    """Write ``device`` as TOML to ``path`` (folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(device_to_toml(device, header), encoding="utf-8")
    return path
