"""lowbit's JSON workload files (simulator.workload_io): every zoo network round-trips exactly,
optional keys take the records' defaults, every error names the file and the field, and
``load_workload`` resolves zoo names, JSON files and SCALE-Sim topology CSVs."""
from __future__ import annotations

import json

import pytest

from lowbit.simulator import zoo
from lowbit.simulator.workload import (BatchedMatmul, Conv2d, Gemm, Sparsity, Workload,
                                       WorkloadError)
from lowbit.simulator.workload_io import (FORMAT, VERSION, load_workload, load_workload_json,
                                          save_workload_json, workload_from_dict,
                                          workload_to_dict)


def _doc(*layers, **top):
    return {"format": FORMAT, "version": VERSION, "name": "net", "layers": list(layers), **top}


CONV = {"type": "conv2d", "name": "conv1", "in_h": 8, "in_w": 8, "in_ch": 4, "out_ch": 8,
        "kernel_h": 3, "kernel_w": 3}


@pytest.mark.parametrize("name", zoo.workload_names())
def test_zoo_round_trip_through_a_file(tmp_path, name):
    wl = zoo.get_workload(name)
    path = save_workload_json(wl, tmp_path / f"{name}.json")
    assert load_workload_json(path) == wl
    assert json.loads(path.read_text())["format"] == FORMAT


def test_round_trip_keeps_precision_sparsity_and_every_layer_type():
    wl = Workload("mixed", (
        Conv2d("c", in_h=9, in_w=7, in_ch=6, out_ch=6, kernel_h=3, kernel_w=3, stride=2,
               padding=1, groups=3, bias=True, ceil_mode=True, a_bits=4, w_bits=2,
               sparsity=Sparsity("2:4", 0.5)),
        Gemm("g", m=3, n=5, k=7, bias=True, w_bits=1, sparsity=Sparsity("unstructured", 0.3)),
        BatchedMatmul("b", batch=2, m=4, n=4, k=8, a_bits=16, w_bits=16)),
        source="test", extra_params=11)
    assert workload_from_dict(json.loads(json.dumps(workload_to_dict(wl)))) == wl


def test_optional_keys_take_the_record_defaults():
    wl = workload_from_dict(_doc(CONV, {"type": "gemm", "name": "fc", "m": 1, "n": 10, "k": 512}))
    assert wl.layers[0] == Conv2d("conv1", in_h=8, in_w=8, in_ch=4, out_ch=8, kernel_h=3,
                                  kernel_w=3)
    assert wl.layers[1] == Gemm("fc", m=1, n=10, k=512)
    assert (wl.source, wl.extra_params) == ("", 0)


def test_sparsity_spellings():
    for value, want in (("dense", Sparsity()), ("2:4", Sparsity("2:4", 0.5)),
                        ({"kind": "2:4"}, Sparsity("2:4", 0.5)),
                        ({"kind": "unstructured", "density": 0.25},
                         Sparsity("unstructured", 0.25))):
        wl = workload_from_dict(_doc({**CONV, "sparsity": value}))
        assert wl.layers[0].sparsity == want


@pytest.mark.parametrize("doc, field", [
    (_doc({**CONV, "strid": 2}), "layers[0] (conv1).strid"),
    (_doc({**CONV, "stride": "2"}), "layers[0] (conv1).stride"),
    (_doc({**CONV, "bias": 1}), "layers[0] (conv1).bias"),
    (_doc({k: v for k, v in CONV.items() if k != "kernel_w"}), "layers[0] (conv1).kernel_w"),
    (_doc({**CONV, "type": "conv3d"}), "layers[0].type"),
    (_doc({**CONV, "sparsity": "4:8"}), "layers[0] (conv1).sparsity"),
    (_doc({**CONV, "sparsity": {"kind": "unstructured", "density": "x"}}),
     "layers[0] (conv1).sparsity.density"),
    (_doc({**CONV, "sparsity": {"kind": "weird"}}), "layers[0] (conv1).sparsity.kind"),
    (_doc({**CONV, "sparsity": {"kind": "unstructured"}}), "layers[0] (conv1).sparsity.density"),
    (_doc({**CONV, "sparsity": {"kind": "2:4", "density": 0.3}}), "layers[0] (conv1).sparsity"),
    (_doc({**CONV, "groups": 3}), "layers[0] (conv1)"),
    (_doc(CONV, CONV), "layers"),
    (_doc(), "layers"),
    (_doc(CONV, extra_params=-1), "extra_params"),
    ({**_doc(CONV), "format": "other"}, "format"),
    ({**_doc(CONV), "version": 2}, "version"),
    ({k: v for k, v in _doc(CONV).items() if k != "name"}, "name"),
    ({**_doc(CONV), "nmae": "x"}, "nmae"),
])
def test_errors_name_the_file_and_field(tmp_path, raises_naming, doc, field):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with raises_naming(WorkloadError, field) as info:
        load_workload_json(path)
    assert str(path) in str(info.value)


def test_unknown_key_suggests_the_right_one(tmp_path):
    with pytest.raises(WorkloadError, match="did you mean 'stride'"):
        workload_from_dict(_doc({**CONV, "strid": 2}))


def test_json_syntax_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{ not json")
    with pytest.raises(WorkloadError, match="JSON syntax error"):
        load_workload_json(path)


def test_load_workload_resolves_names_json_and_csv(tmp_path):
    assert load_workload("resnet18") is zoo.get_workload("resnet18")
    js = save_workload_json(zoo.get_workload("minilm-l6"), tmp_path / "m.json")
    assert load_workload(js) == zoo.get_workload("minilm-l6")
    csv = tmp_path / "t.csv"
    csv.write_text("Layer, M, N, K,\ng1, 4, 8, 16,\n")
    assert load_workload(str(csv)).layers == (Gemm("g1", m=4, n=8, k=16),)
    with pytest.raises(WorkloadError, match="not a built-in workload"):
        load_workload("resnet19")
    with pytest.raises(WorkloadError, match="no such file"):
        load_workload(tmp_path / "missing.json")
