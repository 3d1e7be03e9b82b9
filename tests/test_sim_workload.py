"""Workload records: layers reduce to the right GEMMs, convolution output sizes agree with a
direct NumPy convolution (floor) and with SCALE-Sim's formula (ceil_mode), validation errors
name the layer and the field, and Workload's parameter totals.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from lowbit.simulator.workload import (
    DENSE, BatchedMatmul, Conv2d, Gemm, GemmShape, Sparsity, Workload, WorkloadError,
)

SEED = 20240604


def _conv_reference(x: np.ndarray, w: np.ndarray, stride: int, padding: int, groups: int):
    """Direct grouped 2-D convolution (C, H, W) * (F, C/groups, R, S); returns (out, MACs)."""
    c, _, _ = x.shape
    f, cg, r, s = w.shape
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))
    oh = (xp.shape[1] - r) // stride + 1
    ow = (xp.shape[2] - s) // stride + 1
    out = np.zeros((f, oh, ow), dtype=np.int64)
    fg = f // groups
    macs = 0
    for o in range(f):
        g = o // fg
        chans = xp[g * cg:(g + 1) * cg]
        for i in range(oh):
            for j in range(ow):
                win = chans[:, i * stride:i * stride + r, j * stride:j * stride + s]
                out[o, i, j] = int(np.sum(win * w[o]))
                macs += win.size
    return out, macs


def _random_convs(n: int):
    rng = np.random.default_rng(SEED)
    cases = []
    while len(cases) < n:
        groups = int(rng.choice([1, 1, 2, 3]))
        cin = groups * int(rng.integers(1, 4))
        cout = groups * int(rng.integers(1, 4))
        k = int(rng.integers(1, 4))
        stride = int(rng.integers(1, 4))
        padding = int(rng.integers(0, 3))
        h = int(rng.integers(1, 10))
        w = int(rng.integers(1, 10))
        if k > h + 2 * padding or k > w + 2 * padding:
            continue
        cases.append((h, w, cin, cout, k, stride, padding, groups))
    return cases


@pytest.mark.parametrize("h, w, cin, cout, k, stride, padding, groups", _random_convs(24))
def test_conv_matches_direct_convolution(h, w, cin, cout, k, stride, padding, groups):
    layer = Conv2d("c", in_h=h, in_w=w, in_ch=cin, out_ch=cout, kernel_h=k, kernel_w=k,
                   stride=stride, padding=padding, groups=groups)
    rng = np.random.default_rng(SEED + h * 100 + w)
    x = rng.integers(-3, 4, size=(cin, h, w))
    wt = rng.integers(-3, 4, size=(cout, cin // groups, k, k))
    out, macs = _conv_reference(x, wt, stride, padding, groups)
    assert out.shape == (cout, layer.out_h, layer.out_w)
    assert layer.macs == macs
    (g,) = layer.gemms()
    assert (g.m, g.n, g.k, g.count) == (layer.out_h * layer.out_w, cout // groups,
                                        k * k * cin // groups, groups)
    # The im2col GEMM reproduces the convolution (checked for group 0).
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))[: cin // groups]
    cols = np.array([xp[:, i * stride:i * stride + k, j * stride:j * stride + k].ravel()
                     for i in range(layer.out_h) for j in range(layer.out_w)])
    wmat = wt[: cout // groups].reshape(cout // groups, -1).T
    assert np.array_equal(cols @ wmat, out[: cout // groups].reshape(cout // groups, -1).T)


@pytest.mark.parametrize("h, r, stride", [(224, 7, 2), (56, 3, 2), (56, 1, 2), (7, 3, 1),
                                          (14, 3, 2), (5, 5, 3), (10, 3, 4), (9, 9, 1)])
def test_ceil_mode_is_scalesims_formula(h, r, stride):
    """SCALE-Sim topo_calc_hyperparams: ofmap = ceil((H - R + stride) / stride)."""
    layer = Conv2d("c", in_h=h, in_w=h + 1, kernel_h=r, kernel_w=r, stride=stride, ceil_mode=True)
    assert layer.out_h == math.ceil((h - r + stride) / stride)
    assert layer.out_w == math.ceil((h + 1 - r + stride) / stride)
    floor = Conv2d("c", in_h=h, in_w=h, kernel_h=r, kernel_w=r, stride=stride)
    assert floor.out_h == (h - r) // stride + 1
    assert layer.out_h - floor.out_h == (1 if (h - r) % stride else 0)


def test_depthwise_conv_is_groups_not_dense():
    dw = Conv2d("dw", in_h=112, in_w=112, in_ch=32, out_ch=32, kernel_h=3, kernel_w=3,
                padding=1, groups=32)
    assert dw.gemms() == (GemmShape(112 * 112, 1, 9, 32),)
    assert dw.macs == 112 * 112 * 9 * 32
    assert dw.params == 9 * 32


def test_gemm_and_batched_matmul():
    fc = Gemm("fc", m=1, n=1000, k=512, bias=True)
    assert fc.gemms() == (GemmShape(1, 1000, 512),)
    assert fc.params == 512 * 1000 + 1000 and fc.macs == 512_000
    qk = BatchedMatmul("qk", batch=12, m=128, n=128, k=64)
    assert qk.gemms() == (GemmShape(128, 128, 64, 12),)
    assert qk.params == 0 and qk.macs == 12 * 128 * 128 * 64


@pytest.mark.parametrize("make, pattern", [
    (lambda: Gemm("g", m=0, n=1, k=1), r"layer 'g': m must"),
    (lambda: Gemm("g", m=1, n=1, k=1, a_bits=0), r"layer 'g': a_bits must"),
    (lambda: Conv2d("c", in_h=4, in_w=4, kernel_h=5, kernel_w=3), r"layer 'c': kernel larger"),
    (lambda: Conv2d("c", in_h=6, in_w=6, kernel_h=7, kernel_w=3, stride=2, ceil_mode=True),
     r"layer 'c': kernel larger"),  # ceil((6-7)/2)+1 = 1 output, still rejected
    (lambda: Conv2d("c", in_ch=4, out_ch=6, groups=4), r"layer 'c': groups=4 must divide"),
    (lambda: Conv2d("c", padding=-1), r"layer 'c': padding must"),
    (lambda: BatchedMatmul("b", batch=0), r"layer 'b': batch must"),
])
def test_invalid_layers_name_layer_and_field(make, pattern):
    with pytest.raises(WorkloadError, match=pattern):
        make()


def test_sparsity_records():
    assert Sparsity() == DENSE and DENSE.density == 1.0
    assert Sparsity("2:4", 0.5).density == 0.5
    assert Sparsity("unstructured", 0.3).density == 0.3
    for bad in (lambda: Sparsity("2:4", 0.7), lambda: Sparsity("unstructured", 0.0),
                lambda: Sparsity("block")):
        with pytest.raises(WorkloadError):
            bad()


def test_workload_totals_and_extra_params():
    layers = (Gemm("a", m=2, n=3, k=4, bias=True), Conv2d("b", in_ch=2, out_ch=2, bias=False))
    w = Workload("w", layers, extra_params=7)
    assert w.params == 4 * 3 + 3 + 2 * 2
    assert w.total_params == w.params + 7
    assert w.macs == 2 * 3 * 4 + 2 * 2
    assert Workload("w", layers).extra_params == 0
    for bad in (-1, 1.5, True):
        with pytest.raises(WorkloadError, match="extra_params"):
            Workload("w", layers, extra_params=bad)


def test_workload_rejects_duplicates_and_empty():
    with pytest.raises(WorkloadError, match="'a'"):
        Workload("w", (Gemm("a"), Gemm("b"), Gemm("a")))
    with pytest.raises(WorkloadError, match="no layers"):
        Workload("w", ())
