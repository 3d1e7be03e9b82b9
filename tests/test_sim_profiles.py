"""Hardware profiles as TOML: the built-in profiles, the Horowitz energy defaults, the loader's
rejection of invalid files (the message names the file and the field), and save/load round trips.
"""
from __future__ import annotations

import dataclasses
import math
import tomllib

import pytest

from lowbit.simulator.hardware import DramSpec, EnergyTable, Profile, ProfileError
from lowbit.simulator.profile_io import (
    HOROWITZ_45NM, HOROWITZ_SOURCES, PROFILE_DIR, SOURCE_KEYS, _horowitz_int_mac_pj,
    load_profile, profile_names, profile_to_toml, save_profile,
)

BUILTIN = ("scalesim-default", "tpu-v1", "eyeriss-v1", "gemmini", "edge-npu-32x32")
KiB, MiB = 1024, 1024 * 1024

# Every figure of a built-in profile must cite a source (issue 4: "each figure with its source").
FIGURES = ("rows", "cols", "dataflows", "clock_hz", "word_bits", "ifmap_sram_bytes",
           "filter_sram_bytes", "ofmap_sram_bytes", "macs_per_pe", "sparsity", "bandwidth_mode",
           "dram.bandwidth", "dram.latency", "energy.mac_pj", "energy.sram_points",
           "energy.dram_pj_per_byte", "energy.leakage_pj_per_cycle")


def _no_path(p: Profile) -> Profile:
    return dataclasses.replace(p, path=None)


# --------------------------------------------------------------------------------------------
# Built-in profiles
# --------------------------------------------------------------------------------------------
def test_builtin_names_listed():
    assert set(BUILTIN) <= set(profile_names())
    assert list(profile_names()) == sorted(profile_names())


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_loads_validated_with_sources(name):
    p = load_profile(name)
    assert isinstance(p, Profile)
    assert p.name == name
    assert p.path == str(PROFILE_DIR / f"{name}.toml")
    missing = [f for f in FIGURES if not p.sources.get(f, "").strip()]
    assert not missing, f"{name}: figures without a source: {missing}"
    assert set(p.sources) <= set(SOURCE_KEYS)
    p.validate()


def test_tpu_v1_figures():
    """Jouppi et al., ISCA 2017: 256x256 int8 at 700 MHz, 24 MiB UB + 4 MiB acc, 4-tile FIFO."""
    p = load_profile("tpu-v1")
    assert (p.rows, p.cols, p.clock_hz, p.word_bits) == (256, 256, 700e6, 8)
    assert p.dataflows == ("ws",)
    assert p.filter_sram_bytes == 4 * 256 * 256  # Weight FIFO: four 256x256-byte tiles
    assert p.ifmap_sram_bytes + p.ofmap_sram_bytes == 24 * MiB + 4 * MiB  # UB + accumulators
    assert p.ifmap_sram_bytes == 12 * MiB
    assert p.dram.bandwidth * p.clock_hz == pytest.approx(30 * 2**30, rel=1e-5)  # 30 GiB/s
    assert dict(p.macs_per_pe) == {8: 1}
    assert p.sparsity == "none"


def test_eyeriss_v1_figures():
    """Chen et al., JSSC 2017: 12x14 PEs, 200 MHz, 16 bit, 108 kB GLB, RS mapped to ws."""
    p = load_profile("eyeriss-v1")
    assert (p.rows, p.cols, p.clock_hz, p.word_bits) == (12, 14, 200e6, 16)
    assert p.dataflows == ("ws",)
    assert "row-stationary" in p.sources["dataflows"]
    assert p.ifmap_sram_bytes + p.ofmap_sram_bytes == 108 * KiB
    assert p.filter_sram_bytes == 168 * 224 * 2  # filter scratch pads
    assert p.macs_per_cycle(16) == 1 and p.macs_per_cycle(8) == 1


def test_gemmini_figures():
    """Genc et al., DAC 2021, defaultConfig: 16x16 int8, 256 KiB scratchpad, 64 KiB acc, ws+os."""
    p = load_profile("gemmini")
    assert (p.rows, p.cols, p.word_bits) == (16, 16, 8)
    assert set(p.dataflows) == {"ws", "os"}
    assert p.ifmap_sram_bytes + p.filter_sram_bytes == 256 * KiB
    assert p.ofmap_sram_bytes == 64 * KiB
    assert p.dram.bandwidth == 16.0  # dma_buswidth = 128 bits


def test_scalesim_default_figures():
    """SCALE-Sim v3 configs/scale.cfg: 32x32 os, 64 kB each, CALC, 1-byte words."""
    p = load_profile("scalesim-default")
    assert (p.rows, p.cols, p.word_bits, p.dataflow) == (32, 32, 8, "os")
    assert p.ifmap_sram_bytes == p.filter_sram_bytes == p.ofmap_sram_bytes == 64 * 1024
    assert p.bandwidth_mode == "calc" and p.dram.ports is None
    assert "assumption" in p.sources["clock_hz"]


def test_edge_npu_figures():
    p = load_profile("edge-npu-32x32")
    assert (p.rows, p.cols) == (32, 32)
    assert "illustrative" in p.sources["profile"]
    assert p.sparsity == "2:4"
    assert dict(p.macs_per_pe) == {8: 1, 4: 2, 1: 8}
    assert p.macs_per_cycle(2) == 2  # runs at the nearest wider listed precision (4 bit)
    assert p.energy.leakage_pj_per_cycle == 5.0
    assert p.energy.mac_pj == HOROWITZ_45NM.mac_pj  # the rest of the table is the default


def test_load_profile_accepts_path_objects():
    p = load_profile(PROFILE_DIR / "gemmini.toml")
    assert p.name == "gemmini"


def test_unknown_profile_name_lists_builtins():
    with pytest.raises(ProfileError, match="tpu-v1") as info:
        load_profile("tpu-v9")
    assert "tpu-v9" in str(info.value)


# --------------------------------------------------------------------------------------------
# Horowitz defaults (ISSCC 2014, 45 nm)
# --------------------------------------------------------------------------------------------
def test_horowitz_table_values():
    e = HOROWITZ_45NM
    assert e.mac_pj[8] == pytest.approx(0.2 + 0.03)   # 8-bit mult + 8-bit add
    assert e.mac_pj[32] == pytest.approx(3.1 + 0.1)   # 32-bit mult + 32-bit add
    assert dict(e.sram_points) == {8 * KiB: 10 / 8, 32 * KiB: 20 / 8, 1 * MiB: 100 / 8}
    assert 1300 / 8 <= e.dram_pj_per_byte <= 2600 / 8  # 1.3-2.6 nJ per 64-bit access
    assert e.dram_pj_per_byte == pytest.approx((1300 + 2600) / 2 / 8)
    assert e.leakage_pj_per_cycle == 0.0
    e.validate()


@pytest.mark.parametrize("bits", [1, 2, 4, 8, 16, 32])
def test_horowitz_mac_interpolation(bits):
    """Tabulated MAC energies follow the power law through Horowitz's 8- and 32-bit points."""
    assert HOROWITZ_45NM.mac_pj[bits] == pytest.approx(_horowitz_int_mac_pj(bits), rel=0.01)


def test_horowitz_mac_monotone_and_sram_interpolates():
    values = [HOROWITZ_45NM.mac_pj[b] for b in sorted(HOROWITZ_45NM.mac_pj)]
    assert values == sorted(values)
    e = HOROWITZ_45NM
    assert e.sram_pj_per_byte(16 * KiB) == pytest.approx(math.sqrt(1.25 * 2.5))  # log-log midpoint
    assert e.sram_pj_per_byte(1 * KiB) == 1.25 and e.sram_pj_per_byte(64 * MiB) == 12.5


def test_energy_defaults_fill_missing_keys_with_citations(tmp_path):
    text = profile_to_toml(load_profile("gemmini"))
    doc = tomllib.loads(text)
    # Drop the energy table and its citations: defaults and Horowitz citations come back.
    start = text.index("\n[energy]\n")
    end = text.index("\n[sources]\n")
    stripped = text[:start] + text[end:]
    for key in HOROWITZ_SOURCES:
        stripped = "\n".join(l for l in stripped.splitlines() if not l.startswith(f'"{key}"'))
    f = tmp_path / "g.toml"
    f.write_text(stripped + "\n")
    p = load_profile(f)
    assert p.energy == HOROWITZ_45NM
    for key, cite in HOROWITZ_SOURCES.items():
        assert p.sources[key] == cite
    # Overriding one key keeps the others.
    f.write_text(stripped.replace("\n[sources]\n",
                                  "\n[energy]\ndram_pj_per_byte = 100.0\n\n[sources]\n"))
    p = load_profile(f)
    assert p.energy.dram_pj_per_byte == 100.0
    assert p.energy.mac_pj == HOROWITZ_45NM.mac_pj
    assert "energy.dram_pj_per_byte" not in p.sources  # the file's own figure, uncited
    assert doc["energy"]["mac_pj"]["8"] == HOROWITZ_45NM.mac_pj[8]


# --------------------------------------------------------------------------------------------
# Round trip
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_round_trip(name, tmp_path):
    p = load_profile(name)
    out = save_profile(p, tmp_path / f"{name}.toml")
    q = load_profile(out)
    assert q.path == str(out)
    assert _no_path(q) == _no_path(p)
    assert profile_to_toml(q) == profile_to_toml(p)


def test_what_if_round_trip(tmp_path):
    """A modified profile (ports, odd floats, escapes in citations) reloads identically."""
    base = load_profile("edge-npu-32x32")
    what_if = dataclasses.replace(
        base, name="edge-npu-64x16 \"tall\"", rows=64, cols=16, clock_hz=0.1 + 0.2,
        dataflows=("ws", "is"), sparsity="none", bandwidth_mode="calc",
        macs_per_pe={8: 1, 4: 2, 2: 4, 1: 16},
        dram=DramSpec(bandwidth=12.345678901234567, latency=0,
                      ports={"ifmap": 4, "filter": 2.5, "ofmap": 1e-3}),
        energy=EnergyTable(mac_pj={8: 1 / 3, 4: 0.1}, sram_points=((1024, 0.7), (4096, 1.1)),
                           dram_pj_per_byte=1e2, leakage_pj_per_cycle=2.5e-7),
        sources={**base.sources, "rows": 'what-if: "tall" array\\\n\ttab, ünïcode \u0007'},
        path=None)
    out = save_profile(what_if, tmp_path / "what_if.toml")
    back = load_profile(out)
    assert _no_path(back) == what_if
    assert back.dram.ports == {"ifmap": 4, "filter": 2.5, "ofmap": 1e-3}
    assert back.clock_hz == 0.1 + 0.2


# --------------------------------------------------------------------------------------------
# Invalid files: ProfileError naming the file and the field
# --------------------------------------------------------------------------------------------
BASE = profile_to_toml(load_profile("edge-npu-32x32"))


def _edit(old: str, new: str) -> str:
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


INVALID = [
    # (id, edited file text, field the message must name)
    ("missing_field", _edit("rows = 32\n", ""), "rows"),
    ("rows_zero", _edit("rows = 32\n", "rows = 0\n"), "rows"),
    ("rows_bool", _edit("rows = 32\n", "rows = true\n"), "rows"),
    ("cols_float", _edit("cols = 32\n", "cols = 32.0\n"), "cols"),
    ("negative_size", _edit("ifmap_sram_bytes = 262144\n", "ifmap_sram_bytes = -262144\n"),
     "ifmap_sram_bytes"),
    ("sram_below_array_edge", _edit("filter_sram_bytes = 262144\n", "filter_sram_bytes = 48\n"),
     "filter_sram_bytes"),
    ("unknown_dataflow", _edit('dataflows = ["os", "ws", "is"]\n', 'dataflows = ["rs"]\n'),
     "dataflows"),
    ("dataflows_not_list", _edit('dataflows = ["os", "ws", "is"]\n', 'dataflows = "os"\n'),
     "dataflows"),
    ("empty_dataflows", _edit('dataflows = ["os", "ws", "is"]\n', "dataflows = []\n"),
     "dataflows"),
    ("clock_zero", _edit("clock_hz = 1000000000.0\n", "clock_hz = 0\n"), "clock_hz"),
    ("word_bits_float", _edit("word_bits = 8\n", "word_bits = 8.5\n"), "word_bits"),
    ("sparsity_unknown", _edit('sparsity = "2:4"\n', 'sparsity = "4:8"\n'), "sparsity"),
    ("bandwidth_mode_unknown", _edit('bandwidth_mode = "user"\n', 'bandwidth_mode = "fast"\n'),
     "bandwidth_mode"),
    ("unknown_top_key", _edit("rows = 32\n", "rows = 32\nrowz = 32\n"), "rowz"),
    ("unknown_dram_key", _edit("latency = 100\n", "latency = 100\nbandwith = 3\n"),
     "dram.bandwith"),
    ("unknown_energy_key", _edit("leakage_pj_per_cycle = 5.0\n",
                                 "leakage_pj_per_cycle = 5.0\nleakage_pJ = 1\n"),
     "energy.leakage_pJ"),
    ("unknown_source_key", _edit("[sources]\n", '[sources]\n"rowz" = "typo"\n'), "sources.rowz"),
    ("unquoted_dotted_source", _edit("[sources]\n", '[sources]\ndram.bandwidth = "x"\n'),
     "sources.dram"),
    ("missing_dram", _edit("[dram]\nbandwidth = 8.5\nlatency = 100\n", ""), "dram"),
    ("dram_not_table", _edit("[dram]\nbandwidth = 8.5\nlatency = 100\n", "").replace(
        "rows = 32\n", "rows = 32\ndram = 3\n"), "dram"),
    ("dram_bandwidth_negative", _edit("bandwidth = 8.5\n", "bandwidth = -8.5\n"),
     "dram.bandwidth"),
    ("dram_latency_missing", _edit("latency = 100\n", ""), "dram.latency"),
    ("dram_latency_negative", _edit("latency = 100\n", "latency = -1\n"), "dram.latency"),
    ("dram_port_missing",
     _edit("latency = 100\n", "latency = 100\nports = { ifmap = 1, filter = 1 }\n"),
     "dram.ports.ofmap"),
    ("dram_port_unknown",
     _edit("latency = 100\n",
           "latency = 100\nports = { ifmap = 1, filter = 1, ofmap = 1, psum = 1 }\n"),
     "dram.ports.psum"),
    ("macs_key_not_bits", _edit("[macs_per_pe]\n", "[macs_per_pe]\neight = 1\n"), "macs_per_pe"),
    ("macs_rate_zero", _edit("8 = 1\n", "8 = 0\n"), "macs_per_pe[8]"),
    ("macs_empty", _edit("1 = 8\n4 = 2\n8 = 1\n", ""), "macs_per_pe"),
    ("mac_pj_negative", _edit("8 = 0.23\n", "8 = -0.23\n"), "energy.mac_pj[8]"),
    ("sram_points_bad", _edit("sram_points = [[8192, 1.25], [32768, 2.5], [1048576, 12.5]]\n",
                              'sram_points = [[8192, "1.25"]]\n'), "energy.sram_points"),
    ("source_not_string", _edit("[sources]\n", "[sources]\nenergy = 3\n"), "sources.energy"),
]


@pytest.mark.parametrize("text, field", [pytest.param(t, f, id=i) for i, t, f in INVALID])
def test_invalid_file_names_file_and_field(text, field, tmp_path, raises_naming):
    f = tmp_path / "bad_profile.toml"
    f.write_text(text)
    with raises_naming(ProfileError, field) as info:
        load_profile(f)
    assert str(f) in str(info.value)


def test_unknown_key_suggests_the_right_one(tmp_path):
    f = tmp_path / "typo.toml"
    f.write_text(_edit("ofmap_sram_bytes = 131072\n", "ofmap_sram_byte = 131072\n"))
    with pytest.raises(ProfileError, match="did you mean 'ofmap_sram_bytes'"):
        load_profile(f)


def test_toml_syntax_error_names_file_and_line(tmp_path):
    f = tmp_path / "syntax.toml"
    f.write_text(_edit("rows = 32\n", "rows = = 32\n"))
    with pytest.raises(ProfileError, match="TOML syntax error") as info:
        load_profile(f)
    assert str(f) in str(info.value) and "line" in str(info.value)


def test_base_text_is_valid(tmp_path):
    """The unedited text the invalid cases start from loads (so each case fails for its edit)."""
    f = tmp_path / "ok.toml"
    f.write_text(BASE)
    assert _no_path(load_profile(f)) == _no_path(load_profile("edge-npu-32x32"))
