"""INT8_PANELS and pack_weights: layout, sizes, alignment, padding, metadata, errors."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.kernels import FORMATS, PackedWeights, pack_weights
from lowbit.kernels.formats import ALIGN, INT8_PANELS

# (K, N): K=1, K < 4, K not a multiple of 4, N not a multiple of 64, N=1, exact blocks.
SHAPES = [(1, 1), (1, 64), (1, 65), (3, 1), (3, 7), (4, 64), (5, 65), (7, 130), (8, 128),
          (64, 1), (67, 200), (129, 63), (300, 3), (2, 257)]
SHAPE_IDS = [f"K{k}-N{n}" for k, n in SHAPES]


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _weights(k: int, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, size=(k, n), dtype=np.int8)


def _nonzero_weights(k: int, n: int, seed: int = 0) -> np.ndarray:
    """int8 weights with no zeros, so every zero in the packed data must be padding."""
    rng = np.random.default_rng(seed)
    w = rng.integers(1, 128, size=(k, n))
    return (w * rng.choice([-1, 1], size=(k, n))).astype(np.int8)


def test_registry_of_formats():
    assert FORMATS["int8"] is INT8_PANELS
    assert (INT8_PANELS.name, INT8_PANELS.bits, INT8_PANELS.nr, INT8_PANELS.k_block) == \
        ("int8", 8, 64, 4)


@pytest.mark.parametrize("k, n", SHAPES, ids=SHAPE_IDS)
def test_pack_unpack_round_trip(k, n, assert_exact):
    w = _weights(k, n, seed=k * 1000 + n)
    wp = pack_weights(w)
    assert isinstance(wp, PackedWeights)
    assert wp.shape == (k, n) and (wp.k, wp.n) == (k, n)
    assert wp.fmt is INT8_PANELS
    assert_exact(wp.unpack(), w)
    assert_exact(INT8_PANELS.unpack(INT8_PANELS.pack(w), k, n), w)


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 300), n=st.integers(1, 300), seed=st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip_hypothesis(k, n, seed):
    w = _weights(k, n, seed)
    np.testing.assert_array_equal(pack_weights(w).unpack(), w)


@pytest.mark.parametrize("k, n", SHAPES, ids=SHAPE_IDS)
def test_nbytes_matches_data_and_formula(k, n):
    wp = pack_weights(_weights(k, n))
    formula = _ceil(n, 64) * _ceil(k, 4) * 64 * 4
    assert INT8_PANELS.nbytes(k, n) == formula
    assert wp.data.nbytes == formula
    assert wp.nbytes == formula
    assert INT8_PANELS.packed_shape(k, n) == (_ceil(n, 64), _ceil(k, 4), 64, 4)
    assert wp.data.shape == (_ceil(n, 64), _ceil(k, 4), 64, 4)
    assert wp.data.dtype == np.int8 and wp.data.flags.c_contiguous


@pytest.mark.parametrize("k, n", SHAPES, ids=SHAPE_IDS)
def test_data_is_64_byte_aligned(k, n):
    assert ALIGN == 64
    # several packs in a row so an accidentally aligned allocation cannot hide a bug
    for seed in range(5):
        assert pack_weights(_weights(k, n, seed)).data.ctypes.data % 64 == 0


@pytest.mark.parametrize("k, n", SHAPES, ids=SHAPE_IDS)
def test_padding_bytes_are_zero(k, n):
    data = pack_weights(_nonzero_weights(k, n)).data
    p, q, j, r = np.indices(data.shape)
    pad = (4 * q + r >= k) | (64 * p + j >= n)
    assert np.count_nonzero(data[pad]) == 0
    assert np.all(data[~pad] != 0)  # and every real weight landed somewhere non-padding
    assert np.count_nonzero(~pad) == k * n


@pytest.mark.parametrize("k, n", SHAPES, ids=SHAPE_IDS)
def test_layout_rule(k, n):
    """data[p, q, j, r] == W[4q + r, 64p + j], checked index by index (vectorized)."""
    w = _weights(k, n, seed=7)
    data = pack_weights(w).data
    p, q, j, r = np.indices(data.shape)
    kk, nn = 4 * q + r, 64 * p + j
    valid = (kk < k) & (nn < n)
    np.testing.assert_array_equal(data[valid], w[kk[valid], nn[valid]])


def test_layout_rule_explicit_loops():
    k, n = 6, 67
    w = _weights(k, n, seed=3)
    data = pack_weights(w).data
    for p in range(data.shape[0]):
        for q in range(data.shape[1]):
            for j in range(64):
                for r in range(4):
                    kk, nn = 4 * q + r, 64 * p + j
                    want = w[kk, nn] if kk < k and nn < n else 0
                    assert data[p, q, j, r] == want, (p, q, j, r)


@pytest.mark.parametrize("k, n", [(1, 1), (5, 65), (67, 200), (300, 3)])
def test_layout_nk_equals_kn(k, n, assert_exact):
    w = _weights(k, n, seed=11)
    kn = pack_weights(w, layout="kn")
    for w_nk in (np.ascontiguousarray(w.T), w.T):  # contiguous copy and a transposed view
        nk = pack_weights(w_nk, layout="nk")
        assert nk.shape == (k, n)
        assert_exact(nk.data, kn.data)
        assert_exact(nk.col_sum, kn.col_sum)
        assert nk.col_abs_sum_max == kn.col_abs_sum_max
    # the default layout is "kn"
    assert_exact(pack_weights(w).data, kn.data)


@pytest.mark.parametrize("k, n", SHAPES, ids=SHAPE_IDS)
def test_col_sum_and_col_abs_sum_max(k, n, assert_exact):
    w = _weights(k, n, seed=5)
    wp = pack_weights(w)
    wide = w.astype(np.int64)
    assert wp.col_sum.dtype == np.int32 and wp.col_sum.shape == (n,)
    assert wp.col_sum.flags.c_contiguous
    assert_exact(wp.col_sum, wide.sum(axis=0).astype(np.int32))
    assert isinstance(wp.col_abs_sum_max, int)
    assert wp.col_abs_sum_max == int(np.abs(wide).sum(axis=0).max())


def test_col_abs_sum_max_of_minus_128_does_not_wrap():
    """|-128| must not wrap in int8: a column of all -128 has abs-sum 128 K."""
    k = 1000
    w = np.zeros((k, 3), np.int8)
    w[:, 1] = -128
    w[:, 2] = 127
    wp = pack_weights(w)
    assert wp.col_abs_sum_max == 128 * k
    np.testing.assert_array_equal(wp.col_sum, [0, -128 * k, 127 * k])


def test_pack_copies_input():
    w = _weights(9, 70, seed=2)
    keep = w.copy()
    wp = pack_weights(w)
    w[...] = 0
    np.testing.assert_array_equal(wp.unpack(), keep)
    np.testing.assert_array_equal(wp.col_sum, keep.astype(np.int64).sum(0))


def test_pack_accepts_non_contiguous_views():
    big = _weights(40, 300, seed=9)
    view = big[::3, 5::2]
    np.testing.assert_array_equal(pack_weights(view).unpack(), view)


# --- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    pytest.param(np.ones((4, 4), np.uint8), id="uint8"),
    pytest.param(np.ones((4, 4), np.int16), id="int16"),
    pytest.param(np.ones((4, 4), np.float32), id="float32"),
    pytest.param(np.ones((4, 4), bool), id="bool"),
])
def test_non_int8_dtype_is_type_error(bad, raises_naming):
    with raises_naming(TypeError, "w"):
        pack_weights(bad)


@pytest.mark.parametrize("bad", [[[1, 2], [3, 4]], ((1,),), 3, None],
                         ids=["list", "tuple", "int", "None"])
def test_non_ndarray_is_type_error(bad, raises_naming):
    with raises_naming(TypeError, "w"):
        pack_weights(bad)


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4), ()], ids=["1d", "3d", "0d"])
def test_ndim_not_2_is_value_error(shape, raises_naming):
    with raises_naming(ValueError, "w"):
        pack_weights(np.ones(shape, np.int8))


@pytest.mark.parametrize("shape", [(0, 4), (4, 0), (0, 0)])
@pytest.mark.parametrize("layout", ["kn", "nk"])
def test_empty_k_or_n_is_value_error(shape, layout, raises_naming):
    with raises_naming(ValueError, "w"):
        pack_weights(np.ones(shape, np.int8), layout=layout)


@pytest.mark.parametrize("layout", ["KN", "nk ", "mn", "", None])
def test_bad_layout_is_value_error(layout, raises_naming):
    with raises_naming(ValueError, "layout"):
        pack_weights(np.ones((4, 4), np.int8), layout=layout)


@pytest.mark.parametrize("fmt", ["int3", "INT8", "", "s8"])
def test_unknown_fmt_is_value_error(fmt, raises_naming):
    with raises_naming(ValueError, "fmt"):
        pack_weights(np.ones((4, 4), np.int8), fmt)
