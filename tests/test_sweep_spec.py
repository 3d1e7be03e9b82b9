"""Sweep specs and points: strict validation (every error names the key), override keys
against the Profile's fields, expansion order and de-duplication, and point hashes that are
stable (pinned, independent of spelling, ordering, comments, citations and the process) and
sensitive to every figure that matters."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import pytest

from lowbit.simulator.hardware import DramSpec, EnergyTable, Profile
from lowbit.sweep import EXAMPLES_DIR, SpecError, expand, load_spec
from lowbit.sweep.overrides import (NOT_OVERRIDABLE, OVERRIDE_KEYS, apply_overrides,
                                    resolve_key)
from lowbit.sweep.points import profile_mapping

BASE = 'profile = "edge-npu-32x32"\nworkloads = ["resnet18"]\n'


def _spec(tmp_path, text: str, name: str = "spec.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
BAD_SPECS = {
    "unknown-top-key": ('profile = "edge-npu-32x32"\nworkload = ["resnet18"]\n', "workload"),
    "missing-workloads": ('profile = "edge-npu-32x32"\n', "workloads"),
    "missing-profile": ('workloads = ["resnet18"]\n', "profile"),
    "profile-unknown": ('profile = "edge-npu-99"\nworkloads = ["resnet18"]\n', "profile"),
    "profile-not-string": ('profile = 3\nworkloads = ["resnet18"]\n', "profile"),
    "workloads-empty": ('profile = "edge-npu-32x32"\nworkloads = []\n', "workloads"),
    "workloads-unknown": ('profile = "edge-npu-32x32"\nworkloads = ["resnet18", "resnet19"]\n',
                          "workloads[1]"),
    "workloads-twice": ('profile = "edge-npu-32x32"\nworkloads = ["resnet18", "resnet18"]\n',
                        "workloads[1]"),
    "workloads-not-string": ('profile = "edge-npu-32x32"\nworkloads = [1]\n', "workloads[0]"),
    "precision-unknown": (BASE + 'precisions = ["int8", "int3x"]\n', "precisions[1]"),
    "precision-twice": (BASE + 'precisions = ["int8", "INT8"]\n', "precisions[1]"),
    "precisions-not-list": (BASE + 'precisions = "int8"\n', "precisions"),
    "sparsity-unknown": (BASE + 'weight_sparsity = ["4:8"]\n', "weight_sparsity[0]"),
    "convention-unknown": (BASE + 'convention = "timeloop"\n', "convention"),
    "name-not-string": (BASE + 'name = 3\n', "name"),
    "grid-not-table": (BASE + 'grid = 5\n', "grid"),
    "grid-empty-axis": (BASE + '[grid]\nrows = []\n', "grid.rows"),
    "grid-scalar-axis": (BASE + '[grid]\nrows = 16\n', "grid.rows"),
    "grid-negative": (BASE + '[grid]\nrows = [16, -4]\n', "grid.rows[1]"),
    "grid-float-for-int": (BASE + '[grid]\nrows = [16.0]\n', "grid.rows[0]"),
    "grid-bool": (BASE + '[grid]\ndram.bandwidth = [true]\n', "grid.dram.bandwidth[0]"),
    "grid-string-number": (BASE + '[grid]\nclock_hz = ["fast"]\n', "grid.clock_hz[0]"),
    "grid-duplicate": (BASE + '[grid]\ndram.bandwidth = [8, 8.0]\n', "grid.dram.bandwidth[1]"),
    "grid-unknown-key": (BASE + '[grid]\nrow = [16]\n', "grid.row"),
    "grid-not-overridable": (BASE + '[grid]\nname = ["x"]\n', "grid.name"),
    "grid-dataflows": (BASE + '[grid]\ndataflows = [["os"]]\n', "grid.dataflows"),
    "grid-bad-bits": (BASE + '[grid]\nmacs_per_pe.x = [1]\n', "grid.macs_per_pe.x"),
    "grid-zero-bits": (BASE + '[grid]\nmacs_per_pe.0 = [1]\n', "grid.macs_per_pe.0"),
    "grid-latency-negative": (BASE + '[grid]\ndram.latency = [-1]\n', "grid.dram.latency[0]"),
    "grid-dataflow-unknown": (BASE + '[grid]\ndataflow = ["os", "rs"]\n', "grid.dataflow[1]"),
    "grid-sparsity-unknown": (BASE + '[grid]\nsparsity = ["4:8"]\n', "grid.sparsity[0]"),
    "grid-given-twice": (BASE + '[grid]\nmacs_per_pe.4 = [1]\n"macs_per_pe.04" = [2]\n',
                         "grid.macs_per_pe.04"),
    "overrides-not-tables": (BASE + 'overrides = 3\n', "overrides"),
    "overrides-also-grid": (BASE + '[grid]\nrows = [16]\n[[overrides]]\nrows = 32\n',
                            "overrides[0].rows"),
    "overrides-bad-value": (BASE + '[[overrides]]\nrows = 8\n[[overrides]]\ndataflow = "xs"\n',
                            "overrides[1].dataflow"),
    "overrides-list-value": (BASE + '[[overrides]]\nrows = [8]\n', "overrides[0].rows"),
    "overrides-unknown": (BASE + '[[overrides]]\ndram.bandwith = 4.0\n',
                          "overrides[0].dram.bandwith"),
}


@pytest.mark.parametrize("case", list(BAD_SPECS))
def test_spec_errors_name_the_key(tmp_path, raises_naming, case):
    text, key = BAD_SPECS[case]
    path = _spec(tmp_path, text)
    with raises_naming(SpecError, key) as info:
        load_spec(path)
    assert str(path) in str(info.value)


def test_unknown_keys_get_a_hint(tmp_path):
    with pytest.raises(SpecError, match="did you mean 'workloads'"):
        load_spec(_spec(tmp_path, BAD_SPECS["unknown-top-key"][0]))
    with pytest.raises(SpecError, match="did you mean 'dram.bandwidth'"):
        load_spec(_spec(tmp_path, BAD_SPECS["overrides-unknown"][0]))
    with pytest.raises(SpecError, match="'name' is not overridable"):
        load_spec(_spec(tmp_path, BAD_SPECS["grid-not-overridable"][0]))


def test_toml_syntax_and_unreadable_files(tmp_path):
    with pytest.raises(SpecError, match="TOML syntax error"):
        load_spec(_spec(tmp_path, "profile = \n"))
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.toml")


def test_bad_workload_and_profile_files_are_named(tmp_path, raises_naming):
    (tmp_path / "net.json").write_text('{"format": "lowbit-workload", "version": 1, '
                                       '"name": "n", "layers": [{"type": "gemm", "name": "g", '
                                       '"m": 1, "n": 2}]}')
    with raises_naming(SpecError, "workloads[0]") as info:
        load_spec(_spec(tmp_path, 'profile = "tpu-v1"\nworkloads = ["net.json"]\n'))
    assert "layers[0] (g).k" in str(info.value)
    (tmp_path / "hw.toml").write_text('name = "hw"\nrows = 4\n')
    with raises_naming(SpecError, "profile") as info:
        load_spec(_spec(tmp_path, 'profile = "hw.toml"\nworkloads = ["resnet18"]\n'))
    assert "cols" in str(info.value)


def test_example_spec_loads_and_its_files_resolve_relative_to_it():
    spec = load_spec(EXAMPLES_DIR / "edge-npu.toml")
    assert spec.size == 144 == len(expand(spec))
    assert [ref for ref, _ in spec.workloads] == ["resnet18", "mobilenetv2", "tiny-cnn.json",
                                                  "tiny-convnet.csv"]
    assert spec.workloads[2][1].layers[3].sparsity.kind == "2:4"


def test_profile_files_and_scalesim_configs_as_base(tmp_path):
    from lowbit.simulator.profile_io import load_profile, save_profile

    save_profile(dataclasses.replace(load_profile("tpu-v1"), name="mine"), tmp_path / "hw.toml")
    spec = load_spec(_spec(tmp_path, 'profile = "hw.toml"\nworkloads = ["resnet18"]\n'))
    assert spec.base.name == "mine"
    cfg = os.path.join(os.path.dirname(__file__), "data", "sim", "scale.cfg")
    spec = load_spec(_spec(tmp_path, f'profile = "{cfg}"\nworkloads = ["resnet18"]\n'))
    assert (spec.base.rows, spec.base.bandwidth_mode) == (32, "calc")


# --------------------------------------------------------------------------------------------
# Override keys against the Profile
# --------------------------------------------------------------------------------------------
def _field_paths(cls, prefix=""):
    for f in dataclasses.fields(cls):
        sub = {"dram": DramSpec, "energy": EnergyTable}.get(f.name) if cls is Profile else None
        if sub is not None:
            yield from _field_paths(sub, f"{f.name}.")
        else:
            yield prefix + f.name


def test_every_profile_field_is_overridable_or_excluded_on_purpose():
    keys = set(OVERRIDE_KEYS) | {"macs_per_pe", "energy.mac_pj", "dram.ports"}
    for path in _field_paths(Profile):
        assert path in keys or path in NOT_OVERRIDABLE, f"Profile field {path} not handled"


def test_override_keys_land_on_the_profile_field_they_name():
    from lowbit.simulator.profile_io import load_profile, profile_from_mapping

    base = load_profile("edge-npu-32x32")
    mapping = profile_mapping(base)
    values = {"rows": 16, "cols": 8, "clock_hz": 5e8, "word_bits": 4, "ifmap_sram_bytes": 65536,
              "filter_sram_bytes": 32768, "ofmap_sram_bytes": 16384, "sparsity": "none",
              "bandwidth_mode": "calc", "dram.bandwidth": 3.0, "dram.latency": 7,
              "dram.ports.ifmap": 1.0, "dram.ports.filter": 2.0, "dram.ports.ofmap": 3.0,
              "energy.dram_pj_per_byte": 99.0, "energy.leakage_pj_per_cycle": 0.5,
              "macs_per_pe.4": 3, "macs_per_pe.2": 5, "energy.mac_pj.8": 0.5, "dataflow": "is"}
    assert set(values) >= set(OVERRIDE_KEYS)
    got = profile_from_mapping(apply_overrides(mapping, values))
    for key, value in values.items():
        if key == "dataflow":
            assert got.dataflows == ("is", "os", "ws")
            continue
        obj = got
        for part in resolve_key(key).path:
            obj = obj[int(part) if part.isdigit() else part] if isinstance(
                obj, (dict, type(got.macs_per_pe))) else getattr(obj, part)
        assert obj == value, key
    assert mapping == profile_mapping(base)  # the base mapping is not modified


# --------------------------------------------------------------------------------------------
# Expansion
# --------------------------------------------------------------------------------------------
def test_expansion_order_size_and_dedup(tmp_path):
    spec = load_spec(_spec(tmp_path, '''
        profile = "edge-npu-32x32"
        workloads = ["resnet18", "minilm-l6"]
        precisions = ["int8", "int4"]
        [grid]
        dram.bandwidth = [4.0, 8.5]
        [[overrides]]
        rows = 16
        [[overrides]]
        rows = 32
        [[overrides]]
        rows = 16
        '''))
    points = expand(spec)
    assert spec.size == 3 * 2 * 2 * 2 == 24
    assert len(points) == 16  # the third override set repeats the first
    assert len({p.hash for p in points}) == 16
    first = [(json.loads(p.labels["overrides"]), p.labels["workload"], p.labels["precision"])
             for p in points[:5]]
    assert first == [({"dram.bandwidth": 4.0, "rows": 16}, "resnet18", "int8"),
                     ({"dram.bandwidth": 4.0, "rows": 16}, "resnet18", "int4"),
                     ({"dram.bandwidth": 4.0, "rows": 16}, "minilm-l6", "int8"),
                     ({"dram.bandwidth": 4.0, "rows": 16}, "minilm-l6", "int4"),
                     ({"dram.bandwidth": 8.5, "rows": 16}, "resnet18", "int8")]
    p = points[0]
    assert (p.labels["rows"], p.labels["cols"], p.labels["pe_count"]) == (16, 32, 512)
    assert p.labels["sram_bytes"] == 262144 + 262144 + 131072
    assert p.labels["dataflow"] == "os" and p.task["profile"]["rows"] == 16


def test_no_grid_no_overrides_is_one_base_point(tmp_path):
    points = expand(load_spec(_spec(tmp_path, BASE)))
    assert len(points) == 1
    assert points[0].labels["overrides"] == "{}"
    assert points[0].labels["precision"] == "per-layer"


# --------------------------------------------------------------------------------------------
# Point hashes
# --------------------------------------------------------------------------------------------
HW = '''
name = "hw"
rows = 8
cols = 8
dataflows = ["os", "ws"]
clock_hz = 1.0e9
word_bits = 8
ifmap_sram_bytes = 4096
filter_sram_bytes = 4096
ofmap_sram_bytes = 4096
[macs_per_pe]
8 = 1
[dram]
bandwidth = 4.0
latency = 10
[sources]
rows = "a citation"
'''
NET = {"format": "lowbit-workload", "version": 1, "name": "net", "source": "test",
       "layers": [{"type": "gemm", "name": "g", "m": 4, "n": 8, "k": 16}]}
SPEC = '''
profile = "hw.toml"
workloads = ["net.json"]
precisions = ["int8"]
[grid]
dram.bandwidth = [8]
rows = [4]
'''
# sha256 of the canonical point JSON below; changing it makes every stored result unreachable
PINNED_JSON = ('{"convention":"lowbit","dataflow":"os","overrides":{"dram.bandwidth":8.0,'
               '"rows":4},"precision":"int8","profile":"%s","v":1,"weight_sparsity":"as-is",'
               '"workload":"%s"}')
PINNED_PROFILE = "2c1fb069803e5fc0feaeb75b2d869f226943644dac39e08eb828ce4dc83ed2b8"
PINNED_WORKLOAD = "b85c02478680ed1236b37700d0a325094c72431be20239c1956308644b1436e7"
PINNED_HASH = "adad4f17e2708ae49a7c8a3663a66d2538dbdbf971b67c165580a169ed9b7e37"


def _hash_of(tmp_path, hw=HW, net=NET, spec=SPEC):
    (tmp_path / "hw.toml").write_text(hw)
    (tmp_path / "net.json").write_text(json.dumps(net))
    points = expand(load_spec(_spec(tmp_path, spec)))
    assert len(points) == 1
    return points[0]


def test_point_hash_is_pinned(tmp_path):
    p = _hash_of(tmp_path)
    assert p.key_json == PINNED_JSON % (PINNED_PROFILE, PINNED_WORKLOAD)
    assert p.hash == PINNED_HASH


@pytest.mark.parametrize("change", ["key-order", "number-spelling", "comments", "citation",
                                    "workload-source", "json-layout", "optional-defaults"])
def test_point_hash_ignores_what_does_not_matter(tmp_path, change):
    hw, net, spec = HW, dict(NET), SPEC
    if change == "key-order":
        spec = '[grid]\nrows = [4]\ndram.bandwidth = [8]\n\n'
        spec = 'precisions = ["int8"]\nworkloads = ["net.json"]\nprofile = "hw.toml"\n' + spec
        hw = hw.replace("rows = 8\ncols = 8\n", "cols = 8\nrows = 8\n")
    elif change == "number-spelling":
        spec = spec.replace("[8]", "[8.0]")
        hw = hw.replace("bandwidth = 4.0", "bandwidth = 4").replace("1.0e9", "1000000000.0")
    elif change == "comments":
        hw = "# a comment\n" + hw
        spec = "# another\n" + spec
    elif change == "citation":
        hw = hw.replace("a citation", "another citation")
    elif change == "workload-source":
        net["source"] = "elsewhere"
    elif change == "json-layout":
        net = {k: net[k] for k in reversed(list(net))}
    elif change == "optional-defaults":
        net["layers"] = [{**net["layers"][0], "a_bits": 8, "bias": False, "sparsity": "dense"}]
    assert _hash_of(tmp_path, hw, net, spec).hash == PINNED_HASH


@pytest.mark.parametrize("change", ["profile-figure", "profile-name", "energy", "layer-shape",
                                    "layer-bits", "workload-name", "precision", "dataflow",
                                    "override-value", "sparsity", "convention"])
def test_point_hash_changes_with_what_matters(tmp_path, change):
    hw, net, spec = HW, json.loads(json.dumps(NET)), SPEC
    if change == "profile-figure":
        hw = hw.replace("latency = 10", "latency = 11")
    elif change == "profile-name":
        hw = hw.replace('name = "hw"', 'name = "hw2"')
    elif change == "energy":
        hw += "[energy]\nleakage_pj_per_cycle = 1.0\n"
    elif change == "layer-shape":
        net["layers"][0]["k"] = 17
    elif change == "layer-bits":
        net["layers"][0]["w_bits"] = 4
    elif change == "workload-name":
        net["name"] = "net2"
    elif change == "precision":
        spec = spec.replace('"int8"', '"int4"')
    elif change == "dataflow":
        spec += 'dataflow = ["ws"]\n'
    elif change == "override-value":
        spec = spec.replace("[8]", "[8.5]")
    elif change == "sparsity":
        spec = 'weight_sparsity = ["2:4"]\n' + spec
    elif change == "convention":
        spec = 'convention = "scalesim"\n' + spec
    assert _hash_of(tmp_path, hw, net, spec).hash != PINNED_HASH


def test_point_hash_is_the_same_in_another_process(tmp_path):
    _hash_of(tmp_path)
    code = ("import sys; from lowbit.sweep import expand, load_spec; "
            "print(expand(load_spec(sys.argv[1]))[0].hash)")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "spec.toml")], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == PINNED_HASH


def test_schema_doc_names_every_column_and_override_key():
    from lowbit.sweep.columns import LAYER_COLUMNS, POINT_COLUMNS, names

    doc = (EXAMPLES_DIR.parent / "SCHEMA.md").read_text()
    for name in names(POINT_COLUMNS) + names(LAYER_COLUMNS) + tuple(OVERRIDE_KEYS):
        assert f"`{name}`" in doc, name
