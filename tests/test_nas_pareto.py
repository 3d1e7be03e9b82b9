"""lowbit.nas.pareto: hypervolume, non-dominated sorting, crowding, objectives; grid levels."""
from __future__ import annotations

import numpy as np
import pytest

from lowbit.nas.pareto import (crowding_distance, hypervolume, nondominated_sort, normalize,
                               objective_vector, parse_objectives)
from lowbit.nas.strategies import grid_levels


@pytest.mark.parametrize("points, ref, want", [
    ([[1, 1]], [3, 3], 4.0),
    ([[1, 2], [2, 1]], [3, 3], 3.0),                     # 2x1 + 1x2 - 1x1 overlap
    ([[1, 2], [2, 1], [2, 2]], [3, 3], 3.0),             # a dominated point adds nothing
    ([[1, 2], [1, 2]], [3, 3], 2.0),                     # duplicates count once
    ([[1, 4], [4, 1]], [3, 3], 0.0),                     # beyond the reference: nothing
    ([[0, 0, 0]], [1, 2, 3], 6.0),
    ([[0, 1, 1], [1, 0, 1], [1, 1, 0]], [2, 2, 2], 4.0),  # 3 boxes of 2, overlaps [1, 2]^3
    ([[1]], [4], 3.0),
], ids=["one", "two", "dominated", "duplicate", "outside", "box3d", "three3d", "one_dim"])
def test_hypervolume_hand_cases(points, ref, want):
    # three3d by inclusion-exclusion: 3 x 2 - 3 pairs x 1 + the triple 1 = 4
    assert hypervolume(points, ref) == pytest.approx(want)


def test_hypervolume_matches_optunas_implementation():
    from optuna._hypervolume import compute_hypervolume   # an independent implementation

    rng = np.random.default_rng(0)
    for k in (2, 3):
        for n in (1, 5, 30):
            pts = rng.random((n, k))
            ref = np.full(k, 1.1)
            assert hypervolume(pts, ref) == pytest.approx(compute_hypervolume(pts, ref),
                                                          rel=1e-12)


def test_hypervolume_rejects_non_finite():
    with pytest.raises(ValueError, match="must be finite"):
        hypervolume([[np.inf, 1]], [2, 2])


def test_nondominated_sort_and_crowding():
    values = [[1, 5], [2, 3], [3, 1], [2, 4], [4, 4], [5, 5]]
    fronts = [f.tolist() for f in nondominated_sort(values)]
    assert fronts == [[0, 1, 2], [3], [4], [5]]
    d = crowding_distance([[1, 5], [2, 3], [3, 1]])
    assert np.isinf(d[0]) and np.isinf(d[2])
    assert d[1] == pytest.approx((3 - 1) / 2 + (5 - 1) / 4)
    assert np.isinf(crowding_distance([[1, 1], [2, 2]])).all()


def test_objectives_and_vectors():
    assert parse_objectives("accuracy,latency") == ("accuracy", "latency")
    assert parse_objectives(["accuracy", "latency", "energy"])[2] == "energy"
    for bad in ("latency,accuracy", "accuracy", "accuracy,latency,power"):
        with pytest.raises(ValueError, match="objectives: must be"):
            parse_objectives(bad)
    row = {"feasible": 1, "quality": 0.9, "latency_s": 2e-6, "energy_pj": 5.0}
    assert objective_vector(row, ("accuracy", "latency", "energy")) == (-0.9, 2e-6, 5.0)
    assert objective_vector({**row, "feasible": 0}, ("accuracy", "latency")) is None
    assert normalize([[1, 10], [3, 10]], [1, 10], [3, 10]).tolist() == [[0, 0], [1, 0]]


def test_grid_levels():
    assert grid_levels([3, 2, 3], 1) == [[1], [0], [1]]
    assert grid_levels([3, 2, 3], 4) == [[0, 2], [0, 1], [1]]
    assert grid_levels([3, 2, 3], 6) == [[0, 1, 2], [0, 1], [1]]
    assert grid_levels([3, 2, 3], 18) == [[0, 1, 2], [0, 1], [0, 1, 2]]
    assert grid_levels([5], 3) == [[0, 2, 4]]
    with pytest.raises(ValueError, match="budget"):
        grid_levels([3], 0)
