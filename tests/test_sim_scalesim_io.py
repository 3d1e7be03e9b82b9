"""SCALE-Sim v3 readers: .cfg configs (CALC and USER modes) into Profile, topology CSVs (conv
and GEMM forms, trailing-comma convention, DP depthwise split) into Workload, malformed files.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import pytest

from lowbit.simulator.hardware import ProfileError
from lowbit.simulator.profile_io import HOROWITZ_45NM, load_profile, profile_to_toml, save_profile
from lowbit.simulator.scalesim_io import (
    CALC_BANDWIDTH, DEFAULT_CLOCK_HZ, load_scalesim_config, load_scalesim_topology,
)
from lowbit.simulator.workload import Conv2d, Gemm, Sparsity, WorkloadError

DATA = Path(__file__).parent / "data" / "sim"
SCALE_CFG = (DATA / "scale.cfg").read_text()
USER_CFG = (DATA / "user_bw.cfg").read_text()
CONV_HEADER = ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
               "Num Filter, Strides,\n")
GEMM_HEADER = "Layer,M,N,K,\n"


def _write(tmp_path, name, text):
    f = tmp_path / name
    f.write_text(text)
    return f


def _edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------
def test_calc_config_is_scalesim_default():
    p = load_scalesim_config(DATA / "scale.cfg")
    assert p.path == str(DATA / "scale.cfg")
    assert p.name == "scale_example_run_32x32_ws"  # [general] run_name
    assert (p.rows, p.cols, p.word_bits) == (32, 32, 8)
    assert p.ifmap_sram_bytes == p.filter_sram_bytes == p.ofmap_sram_bytes == 64 * 1024
    assert p.dataflows == ("os", "ws", "is")
    assert p.bandwidth_mode == "calc"
    assert p.dram.ports is None and p.dram.bandwidth == CALC_BANDWIDTH and p.dram.latency == 1
    assert p.clock_hz == DEFAULT_CLOCK_HZ and p.energy == HOROWITZ_45NM
    # The built-in profile is the same hardware.
    ref = load_profile("scalesim-default")
    same = ("rows", "cols", "dataflows", "clock_hz", "ifmap_sram_bytes", "filter_sram_bytes",
            "ofmap_sram_bytes", "word_bits", "dram", "macs_per_pe", "energy", "sparsity",
            "bandwidth_mode")
    for field in same:
        assert getattr(p, field) == getattr(ref, field), field


def test_user_config_ports():
    p = load_scalesim_config(DATA / "user_bw.cfg")
    assert (p.rows, p.cols) == (16, 8)
    assert (p.ifmap_sram_bytes, p.filter_sram_bytes, p.ofmap_sram_bytes) == (8192, 4096, 2048)
    assert p.dataflows == ("ws", "os", "is")
    assert p.bandwidth_mode == "user"
    # ifmap/filter from [layout] *SRAMBankBandwidth, ofmap from Bandwidth[0]; 1-byte words.
    assert dict(p.dram.ports) == {"ifmap": 10, "filter": 4, "ofmap": 6}
    assert p.dram.latency == 1
    assert p.dram.bandwidth == 20
    assert "IfmapSRAMBankBandwidth" in p.sources["dram.ports"]


def test_clock_and_energy_arguments(tmp_path):
    energy = dataclasses.replace(HOROWITZ_45NM, leakage_pj_per_cycle=3.0)
    p = load_scalesim_config(DATA / "user_bw.cfg", clock_hz=500e6, energy=energy)
    assert p.clock_hz == 500e6 and p.energy.leakage_pj_per_cycle == 3.0
    # A config-derived profile can be saved as a lowbit profile and reloaded unchanged.
    back = load_profile(save_profile(p, tmp_path / "user.toml"))
    assert dataclasses.replace(back, path=None) == dataclasses.replace(p, path=None)


def test_config_keys_case_insensitive_and_values_case_insensitive(tmp_path):
    text = _edit(USER_CFG, "Dataflow : ws", "dataflow : WS")
    text = _edit(text, "InterfaceBandwidth: USER", "InterfaceBandwidth: user")
    p = load_scalesim_config(_write(tmp_path, "c.cfg", text))
    assert p.dataflow == "ws" and p.bandwidth_mode == "user"


def test_run_name_optional(tmp_path):
    text = _edit(SCALE_CFG, "[general]\nrun_name = scale_example_run_32x32_ws\n", "")
    assert load_scalesim_config(_write(tmp_path, "noname.cfg", text)).name == "noname"


BAD_CONFIGS = [
    # (id, base, old, new, text the message must contain)
    ("missing_run_presets", SCALE_CFG, "[run_presets]\nInterfaceBandwidth: CALC\n",
     "", "InterfaceBandwidth"),
    ("missing_array_width", SCALE_CFG, "ArrayWidth:     32\n", "", "ArrayWidth"),
    ("height_zero", SCALE_CFG, "ArrayHeight:    32", "ArrayHeight: 0", "ArrayHeight"),
    ("size_not_int", SCALE_CFG, "IfmapSramSzkB:   64", "IfmapSramSzkB: 64kB", "IfmapSramSzkB"),
    ("size_negative", SCALE_CFG, "OfmapSramSzkB:   64", "OfmapSramSzkB: -64", "OfmapSramSzkB"),
    ("unknown_dataflow", SCALE_CFG, "Dataflow : os", "Dataflow : rs", "Dataflow"),
    ("unknown_mode", SCALE_CFG, "InterfaceBandwidth: CALC", "InterfaceBandwidth: FAST",
     "InterfaceBandwidth"),
    ("missing_dataflow", SCALE_CFG, "Dataflow : os\n", "", "Dataflow"),
    ("sram_below_array_edge", SCALE_CFG, "ArrayWidth:     32", "ArrayWidth: 65536",
     "ArrayWidth"),
    ("user_missing_layout_key", USER_CFG, "IfmapSRAMBankBandwidth: 10\n", "",
     "IfmapSRAMBankBandwidth"),
    ("user_missing_layout", USER_CFG, USER_CFG[USER_CFG.index("[layout]"):
                                                USER_CFG.index("[sparsity]")], "",
     "[layout]"),
    ("user_missing_bandwidth", USER_CFG, "Bandwidth : 6,6,6\n", "", "Bandwidth"),
    ("user_bad_bandwidth", USER_CFG, "Bandwidth : 6,6,6", "Bandwidth : 6,x", "Bandwidth"),
    ("user_filter_bw_zero", USER_CFG, "FilterSRAMBankBandwidth: 4", "FilterSRAMBankBandwidth: 0",
     "FilterSRAMBankBandwidth"),
    ("user_banks_do_not_divide", USER_CFG, "IfmapSRAMBankNum: 5", "IfmapSRAMBankNum: 3",
     "IfmapSRAMBankNum"),
    ("duplicate_key", SCALE_CFG, "ArrayWidth:     32\n", "ArrayWidth: 32\nArrayWidth: 16\n",
     "arraywidth"),
    ("not_a_cfg", SCALE_CFG, "[general]\n", "garbage before any section\n[general]\n",
     "not a valid .cfg"),
]


@pytest.mark.parametrize("base, old, new, key",
                         [pytest.param(*c[1:], id=c[0]) for c in BAD_CONFIGS])
def test_bad_config_names_file_and_key(base, old, new, key, tmp_path):
    f = _write(tmp_path, "bad.cfg", _edit(base, old, new))
    with pytest.raises(ProfileError) as info:
        load_scalesim_config(f)
    msg = str(info.value)
    assert str(f) in msg and key in msg, msg


def test_sram_too_small_names_profile_field_and_config_key(tmp_path):
    f = _write(tmp_path, "tiny.cfg", _edit(SCALE_CFG, "FilterSramSzkB:  64", "FilterSramSzkB: 1"))
    text = _edit(f.read_text(), "ArrayWidth:     32", "ArrayWidth: 1024")
    f.write_text(text)
    with pytest.raises(ProfileError, match=r"filter_sram_bytes: .*FilterSramSzkB"):
        load_scalesim_config(f)


def test_missing_config_file(tmp_path):
    with pytest.raises(ProfileError, match="nope.cfg"):
        load_scalesim_config(tmp_path / "nope.cfg")


@pytest.mark.parametrize("old, new, warns", [
    ("IfmapCustomLayout: False", "IfmapCustomLayout: True", "bank conflicts"),
    ("UseRamulatorTrace: False", "UseRamulatorTrace: True", "Ramulator"),
    ("SparsitySupport : false", "SparsitySupport : true", "2:4"),
])
def test_unmodelled_settings_warn(old, new, warns, tmp_path):
    f = _write(tmp_path, "w.cfg", _edit(USER_CFG, old, new))
    with pytest.warns(UserWarning, match=warns):
        p = load_scalesim_config(f)
    assert p.sparsity == ("2:4" if "Sparsity" in old else "none")


def test_shipped_configs_load_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_scalesim_config(DATA / "scale.cfg")
        load_scalesim_config(DATA / "user_bw.cfg")


# --------------------------------------------------------------------------------------------
# Topologies
# --------------------------------------------------------------------------------------------
def _quiet_load(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_scalesim_topology(path, **kw)


def test_conv_topology():
    w = _quiet_load(DATA / "conv_small.csv")
    assert w.name == "conv_small"
    assert [l.name for l in w.layers] == ["Conv1", "Conv2_1a", "Conv3_s", "FC"]
    assert all(isinstance(l, Conv2d) and l.padding == 0 and l.groups == 1 for l in w.layers)
    c1 = w.layers[0]
    assert ((c1.in_h, c1.in_w, c1.kernel_h, c1.in_ch, c1.out_ch, c1.stride)
            == (224, 224, 7, 3, 64, 2))
    # SCALE-Sim's ofmap: ceil((H - R + s) / s), no padding: 110x110 (not 112, not 109).
    assert [(l.out_h, l.gemms()[0].m, l.gemms()[0].n, l.gemms()[0].k) for l in w.layers] == [
        (110, 12100, 64, 147), (54, 2916, 64, 576), (29, 841, 128, 64), (1, 1, 1000, 512)]
    assert all(l.a_bits == l.w_bits == 8 for l in w.layers)


def test_resnet18_shapes_reproduce_scalesim_total_cycles():
    """SCALE-Sim v3.0.0 on its Resnet18.csv, 32x32 os, CALC (../shared/refs/scalesim-v3.md, speed
    anchor): per-layer Total Cycles = ceil(M/32) * ceil(N/32) * (K + 62) - 1, summing to
    1,718,353. The closed form applied to the GEMMs lowbit reads must give the same numbers,
    which it only does if every ofmap size and window matches SCALE-Sim's."""
    want = [158421, 117391, 117391, 117391, 117391, 63799, 106831, 13607, 106831, 106831, 67983,
            94639, 12159, 94639, 94639, 75711, 74719, 10175, 74719, 74719, 18367]
    w = _quiet_load(DATA / "resnet18_scalesim.csv")
    got = [sum(math.ceil(g.m / 32) * math.ceil(g.n / 32) * (g.k + 32 + 32 - 2) * g.count
               for g in layer.gemms()) - 1 for layer in w.layers]
    assert got == want
    assert sum(got) == 1_718_353


def test_gemm_topology():
    w = _quiet_load(DATA / "gemm_small.csv")
    assert all(isinstance(l, Gemm) for l in w.layers)
    assert [(l.m, l.n, l.k) for l in w.layers] == [(128, 2304, 768), (128, 768, 768),
                                                   (128, 3072, 768), (128, 768, 3072)]
    assert w.layers[2].sparsity == Sparsity("2:4", 0.5)
    assert w.layers[0].sparsity.kind == "dense"
    # SCALE-Sim runs a GEMM row as the conv [H=M, W=K, R=1, S=K, C=1, F=N, stride 1]: same GEMM.
    for l in w.layers:
        as_conv = Conv2d("x", in_h=l.m, in_w=l.k, kernel_h=1, kernel_w=l.k, in_ch=1, out_ch=l.n,
                         ceil_mode=True)
        (g,) = as_conv.gemms()
        assert (g.m, g.n, g.k) == (l.m, l.n, l.k)


def test_form_detection_and_override(tmp_path):
    f = _write(tmp_path, "g.csv", "name, m, n, k,\nfc,1,10,20,\n")
    assert isinstance(_quiet_load(f).layers[0], Gemm)
    f2 = _write(tmp_path, "weird.csv", "anything\nfc,1,10,20,\n")
    assert isinstance(_quiet_load(f2, form="gemm").layers[0], Gemm)
    with pytest.raises(WorkloadError, match="Num Filter"):
        _quiet_load(f2)  # read as conv: too few fields
    with pytest.raises(WorkloadError, match="form"):
        load_scalesim_topology(f2, form="matmul")


def test_depthwise_dp_split():
    """SCALE-Sim splits a DP row into Channels one-channel layers of Num Filter filters:
    lowbit's grouped conv has exactly those GEMMs, Channels times."""
    w = _quiet_load(DATA / "dp_layer.csv")
    by = {l.name: l for l in w.layers}
    dp = by["Conv2_DP"]
    assert (dp.in_ch, dp.out_ch, dp.groups, dp.kernel_h) == (16, 16, 16, 3)
    assert dp.gemms()[0].count == 16 and (dp.gemms()[0].n, dp.gemms()[0].k) == (1, 9)
    x2 = by["Conv4_DPx2"]  # Num Filter = 2 per channel: a depth multiplier of 2
    assert (x2.in_ch, x2.out_ch, x2.groups) == (32, 64, 32)
    for layer, (h, r, s, c, f) in ((dp, (15, 3, 1, 16, 1)), (x2, (13, 3, 2, 32, 2))):
        per_channel = Conv2d("one", in_h=h, in_w=h, kernel_h=r, kernel_w=r, in_ch=1, out_ch=f,
                             stride=s, ceil_mode=True)
        (g,) = per_channel.gemms()
        assert layer.gemms()[0] == dataclasses.replace(g, count=c)
        assert layer.macs == c * per_channel.macs
    assert by["Conv3_pw"].groups == 1 and by["Conv1"].groups == 1  # no DP: dense as written


def test_missing_trailing_comma_warns_and_drops_last_field(tmp_path):
    f = _write(tmp_path, "nc.csv",
               CONV_HEADER + "Conv1,32,32,3,3,8,16,1,2:4\nConv2,30,30,3,3,16,16,1,\n")
    with pytest.warns(UserWarning, match=r"line 2: row does not end with a comma.*'2:4'"):
        w = load_scalesim_topology(f)
    assert w.layers[0].sparsity.kind == "dense"  # dropped, as SCALE-Sim drops it
    f = _write(tmp_path, "nc_gemm.csv", GEMM_HEADER + "a,4,5,6,\nb,4,5,6,2:4\n")
    with pytest.warns(UserWarning, match="line 3"):
        w = load_scalesim_topology(f)
    assert w.layers[1].sparsity.kind == "dense"


@pytest.mark.parametrize("header, row, field", [
    (CONV_HEADER, "Conv1,224,224,7,7,3,64,2", "Strides"),   # SCALE-Sim: IndexError
    (GEMM_HEADER, "fc,1,1000,512", "K"),                      # SCALE-Sim: assertion
])
def test_missing_trailing_comma_that_loses_a_field_is_an_error(header, row, field, tmp_path):
    f = _write(tmp_path, "t.csv", header + row + "\n")
    with pytest.raises(WorkloadError,
                       match=rf"line 2: {field}: missing.*does not end with a comma"):
        load_scalesim_topology(f)


def test_text_after_trailing_comma_is_a_comment(tmp_path):
    f = _write(tmp_path, "c.csv", CONV_HEADER + "Conv2_dw, 112, 112, 3, 3, 1, 1, 1,#dw\n\n"
                                                "Conv3, 112, 112, 1, 1, 32, 64, 1, NPU\n")
    w = _quiet_load(f)
    assert [(l.name, l.out_ch) for l in w.layers] == [("Conv2_dw", 1), ("Conv3", 64)]


BAD_TOPOLOGIES = [
    # (id, text, message pattern)
    ("not_an_int", CONV_HEADER + "c,32,32,3,3,x,8,1,\n", r"line 2: Channels: must be an integer"),
    ("too_many_fields", CONV_HEADER + "c,32,32,3,3,3,8,1,2:4,9,\n", r"line 2: 10 fields"),
    ("filter_larger_than_ifmap", CONV_HEADER + "c,2,32,3,3,3,8,1,\n",
     r"line 2: .*larger than IFMAP"),
    ("zero_stride", CONV_HEADER + "c,32,32,3,3,3,8,0,\n", r"line 2: .*stride"),
    ("empty_name", CONV_HEADER + " ,32,32,3,3,3,8,1,\n", r"line 2: Layer name: empty"),
    ("bad_ratio", GEMM_HEADER + "g,1,2,3,3:2,\n", r"line 2: N:M"),
    ("bad_ratio_text", GEMM_HEADER + "g,1,2,3,half,\n", r"line 2: N:M"),
    ("gemm_zero", GEMM_HEADER + "g,0,2,3,\n", r"line 2: .*m must"),
    ("empty_file", "", r"empty file"),
    ("header_only", CONV_HEADER, r"no layers"),
]


@pytest.mark.parametrize("text, pattern", [pytest.param(t, p, id=i) for i, t, p in BAD_TOPOLOGIES])
def test_bad_topologies(text, pattern, tmp_path):
    f = _write(tmp_path, "bad.csv", text)
    with pytest.raises(WorkloadError, match=pattern) as info:
        load_scalesim_topology(f)
    assert str(f) in str(info.value)


def test_other_nm_ratio_becomes_unstructured(tmp_path):
    f = _write(tmp_path, "s.csv", GEMM_HEADER + "g,4,8,16,1:4,\nh,4,8,16,4:4,\n")
    with pytest.warns(UserWarning, match="unstructured"):
        w = load_scalesim_topology(f)
    assert w.layers[0].sparsity == Sparsity("unstructured", 0.25)
    assert w.layers[1].sparsity.kind == "dense"


def test_duplicate_names_are_suffixed(tmp_path):
    f = _write(tmp_path, "d.csv", GEMM_HEADER + "a,1,2,3,\na,1,2,3,\nb,1,2,3,\na,1,2,3,\n")
    assert [l.name for l in _quiet_load(f).layers] == ["a", "a#2", "b", "a#3"]


def test_data_in_first_line_warns(tmp_path):
    f = _write(tmp_path, "h.csv", "Conv1,32,32,3,3,3,8,1,\nConv2,30,30,3,3,8,8,1,\n")
    with pytest.warns(UserWarning, match="skips the first line"):
        w = load_scalesim_topology(f)
    assert [l.name for l in w.layers] == ["Conv2"]


def test_profile_toml_of_scalesim_config_is_loadable(tmp_path):
    p = load_scalesim_config(DATA / "scale.cfg")
    text = profile_to_toml(p)
    assert "CALC" in text
    back = load_profile(_write(tmp_path, "p.toml", text))
    assert dataclasses.replace(back, path=None) == dataclasses.replace(p, path=None)
