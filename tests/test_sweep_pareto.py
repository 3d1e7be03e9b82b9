"""Pareto sets and plots: the mask on hand-made cases and against brute force, grouping, and
the plot data (golden data read from a hand-made database, and the same data read back from
the drawn axes: data, not pixels)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lowbit.sweep import SweepDB, pareto_flags, pareto_groups, pareto_mask, plot_data
from lowbit.sweep.columns import LAYER_COLUMNS, POINT_LABELS, POINT_RESULTS, names
from lowbit.sweep.plots import PANELS, plot_group, plot_pareto


@pytest.mark.parametrize("values, want", [
    ([[1, 2], [2, 1], [2, 2], [1, 2]], [True, True, False, True]),   # equal points both kept
    ([[5, 5, 5, 5]], [True]),
    ([[1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]], [True, False, False]),
    ([[1, 1], [1, 2]], [True, False]),                                # worse in one only
    ([[3, 1], [2, 2], [1, 3], [3, 3], [2, 3]], [True, True, True, False, False]),
    ([[1, 9, 9, 9], [9, 1, 9, 9], [9, 9, 1, 9], [9, 9, 9, 1], [9, 9, 9, 9], [1, 9, 9, 10]],
     [True, True, True, True, False, False]),
    (np.zeros((0, 4)), []),
])
def test_pareto_mask_hand_made(values, want):
    assert pareto_mask(values).tolist() == want


def _brute_force(v):
    return [not any(all(b <= a for a, b in zip(p, q)) and any(b < a for a, b in zip(p, q))
                    for q in v) for p in v]


@given(st.integers(1, 4).flatmap(lambda k: st.lists(
    st.lists(st.integers(0, 3), min_size=k, max_size=k), min_size=1, max_size=14)))
def test_pareto_mask_matches_brute_force(values):
    assert pareto_mask(values).tolist() == _brute_force(values)


def test_pareto_mask_rejects_bad_input():
    with pytest.raises(ValueError, match="values: must be 2-D"):
        pareto_mask([1, 2, 3])
    with pytest.raises(ValueError, match="values: must be finite"):
        pareto_mask([[1.0, float("nan")]])


# --------------------------------------------------------------------------------------------
# A hand-made database: group (net, int8) with five feasible points and one infeasible one;
# group (net, int4) with one point. Objectives: latency ms, energy mJ, PEs, SRAM bytes.
HAND = [  # name, overrides, precision, latency ms, energy mJ, rows, sram KiB, feasible
    ("A", {"rows": 32, "cols": 32}, "int8", 1.0, 4.0, 32, 640, True),
    ("B", {"rows": 16, "cols": 16}, "int8", 2.0, 2.0, 16, 320, True),
    ("C", {"rows": 16, "cols": 16, "dram.bandwidth": 2.0}, "int8", 2.0, 3.0, 16, 320, True),
    ("D", {"rows": 64, "cols": 64}, "int8", 0.5, 6.0, 64, 1280, True),
    ("E", {"rows": 32, "cols": 32, "dram.bandwidth": 2.0}, "int8", 1.5, 5.0, 32, 640, True),
    ("F", {"rows": 128, "cols": 128}, "int8", None, None, 128, 2560, False),
    ("G", {"rows": 16, "cols": 16}, "int4", 1.0, 1.0, 16, 320, True),
]


def _hand_db(path):
    with SweepDB(path) as db:
        for name, overrides, prec, lat, energy, side, sram_kib, ok in HAND:
            labels = dict.fromkeys(names(POINT_LABELS))
            labels.update(point_hash=f"hash-{name}", point_json="{}", profile="hw",
                          profile_hash="p", overrides=json.dumps(overrides, sort_keys=True),
                          workload="net", workload_hash="w", precision=prec, dataflow="os",
                          weight_sparsity="as-is", convention="lowbit", rows=side, cols=side,
                          pe_count=side * side, sram_bytes=sram_kib * 1024)
            result = dict.fromkeys(names(POINT_RESULTS))
            result.update(feasible=int(ok), reason="" if ok else "too big",
                          seconds=0.0, lowbit_version="test",
                          sim_latency_s=None if lat is None else lat * 1e-3,
                          sim_energy_pj=None if energy is None else energy * 1e9)
            layer = dict.fromkeys(names(LAYER_COLUMNS))
            layer.update(point_hash=labels["point_hash"], idx=0, layer="l", kind="gemm",
                         feasible=int(ok), reason="")
            assert db.write(labels, {"point": result, "layers": [layer]})
        return db.points()


def test_groups_and_flags_of_a_hand_made_database(tmp_path):
    rows = _hand_db(tmp_path / "hand.sqlite")
    groups = {g.precision: g for g in pareto_groups(rows)}
    assert set(groups) == {"int8", "int4"}
    g8 = groups["int8"]
    assert [r["point_hash"][-1] for r in g8.rows] == ["D", "A", "E", "B", "C"]
    assert g8.pareto.tolist() == [True, True, False, True, False]
    assert g8.infeasible == 1 and g8.title == "net, int8"
    assert groups["int4"].pareto.tolist() == [True]
    flags = pareto_flags(rows)
    assert {h[-1] for h, f in flags.items() if f} == {"A", "B", "D", "G"}
    assert "hash-F" not in flags


def test_plot_data_golden(tmp_path):
    rows = _hand_db(tmp_path / "hand.sqlite")
    g8 = next(g for g in pareto_groups(rows) if g.precision == "int8")
    got = plot_data(g8)
    want = {
        "title": "net, int8",
        "latency_ms": [0.5, 1.0, 1.5, 2.0, 2.0],
        "energy_mj": [6.0, 4.0, 5.0, 2.0, 3.0],
        "pe_count": [4096, 1024, 1024, 256, 256],
        "sram_bytes": [1310720, 655360, 655360, 327680, 327680],
        "pareto": [True, True, False, True, False],
        "point_hash": ["hash-D", "hash-A", "hash-E", "hash-B", "hash-C"],
        "label": ["cols=64 rows=64", "cols=32 rows=32", "cols=32 dram.bandwidth=2 rows=32",
                  "cols=16 rows=16", "cols=16 dram.bandwidth=2 rows=16"],
        "infeasible": 1,
    }
    assert set(got) == set(want)
    for key in ("latency_ms", "energy_mj"):
        assert got[key] == pytest.approx(want[key], rel=1e-12)
    for key in set(want) - {"latency_ms", "energy_mj"}:
        assert got[key] == want[key], key


def test_the_figure_draws_exactly_the_plot_data(tmp_path):
    rows = _hand_db(tmp_path / "hand.sqlite")
    g8 = next(g for g in pareto_groups(rows) if g.precision == "int8")
    d = plot_data(g8)
    plot = plot_group(g8, tmp_path / "g.png")
    assert plot.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    mask = np.array(d["pareto"])
    for name, key, _ in PANELS:
        xy = np.column_stack([d["latency_ms"], d[key]])
        np.testing.assert_array_equal(plot.data[name]["points"], xy)
        np.testing.assert_array_equal(plot.data[name]["pareto"], xy[mask])


def test_one_file_per_group_and_distinct_names_for_namesakes(tmp_path):
    rows = _hand_db(tmp_path / "hand.sqlite")
    other = dict(rows[0], workload_hash="w2", point_hash="hash-X")  # another file named "net"
    plots = plot_pareto(rows + [other], tmp_path / "plots")
    assert {p.path.name for p in plots} == {"pareto-net-int4.png", "pareto-net-int8.png",
                                            "pareto-net-int8-w2.png"}
    assert all(p.path.stat().st_size > 0 for p in plots)


def test_a_group_with_only_infeasible_points_still_plots(tmp_path):
    rows = [r for r in _hand_db(tmp_path / "hand.sqlite") if r["point_hash"] == "hash-F"]
    [group] = pareto_groups(rows)
    assert len(group.rows) == 0 and group.infeasible == 1
    plot = plot_group(group, tmp_path / "empty.png")
    assert all(len(v["points"]) == 0 for v in plot.data.values())
