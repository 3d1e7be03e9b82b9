"""The 2:4 format in LowbitLinear / LowbitConv2d and the gemm_sparse24 torch op.

A 2:4 weight quantizes to the same int8 values as the dense int8 format (zeros stay zero),
and gemm_sparse24 computes the same int32 accumulators as gemm_int8, so a sparse24 module's
output equals the int8 module's bit for bit whatever the activation mode; that equality,
the op against the kernel, the storage record and the rejection of non-2:4 weights are
checked here. The kernel itself is tested in test_gemm_sparse24.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import lowbit.kernels as lk
from lowbit.kernels import LowbitConv2d, LowbitLinear
from lowbit.kernels.format_sparse24 import prune_24
from lowbit.kernels.torch_ops import packed_to_tensors

ACT_MODES = {
    "dynamic": {},
    "static_s8": {"act_scale": 0.04},
    "static_u8": {"act_scale": 0.03, "act_zero_point": 128},
    "int8_out": {"act_scale": 0.04, "out_scale": 0.05},
    "int8_out_relu": {"act_scale": 0.04, "out_scale": 0.05, "relu": True},
}


def _two_of_four_(weight: torch.Tensor) -> None:
    """Keep the 2 largest |w| of every 4 consecutive values of weight.reshape(out, -1)."""
    with torch.no_grad():
        w = weight.reshape(weight.shape[0], -1, 4)
        keep = torch.zeros_like(w).scatter_(-1, w.abs().topk(2, dim=-1).indices, 1.0)
        weight.copy_((w * keep).reshape(weight.shape))


def _linear(k: int, n: int, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(k, n)
    _two_of_four_(lin.weight)
    return lin


def _conv(cin: int, cout: int, ks: int, seed: int = 0, **kw) -> nn.Conv2d:
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, ks, **kw)
    _two_of_four_(conv.weight)
    return conv


@pytest.mark.parametrize("mode", ACT_MODES)
@pytest.mark.parametrize("k,n,m", [(4, 1, 1), (96, 40, 5), (132, 70, 3), (256, 64, 17)],
                         ids=["k_eq_group", "n_tail", "k_tail", "m_odd"])
def test_linear_equals_dense_int8(mode, k, n, m):
    lin = _linear(k, n)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(1))
    sparse = LowbitLinear.from_float(lin, "sparse24", **ACT_MODES[mode])
    dense = LowbitLinear.from_float(lin, "int8", **ACT_MODES[mode])
    assert torch.equal(sparse(x), dense(x))


@pytest.mark.parametrize("mode", ["dynamic", "static_u8", "int8_out"])
@pytest.mark.parametrize("geometry", [
    {"cin": 8, "cout": 16, "ks": 3, "padding": 1},
    {"cin": 4, "cout": 6, "ks": 2, "stride": 2},
    {"cin": 8, "cout": 8, "ks": 3, "groups": 2, "padding": 1},
], ids=["pad1", "stride2", "grouped"])
def test_conv_equals_dense_int8(mode, geometry):
    conv = _conv(**geometry)
    x = torch.randn(2, geometry["cin"], 7, 7, generator=torch.Generator().manual_seed(2))
    opts = dict(ACT_MODES[mode])
    if mode == "dynamic":
        opts["act_granularity"] = "sample"
    sparse = LowbitConv2d.from_float(conv, "sparse24", **opts)
    dense = LowbitConv2d.from_float(conv, "int8", **opts)
    assert torch.equal(sparse(x), dense(x))


def test_state_dict_round_trip():
    conv = _conv(8, 16, 3, padding=1)
    x = torch.randn(1, 8, 5, 5, generator=torch.Generator().manual_seed(3))
    a = LowbitConv2d.from_float(conv, "sparse24", act_scale=0.05)
    b = LowbitConv2d.from_float(_conv(8, 16, 3, seed=9, padding=1), "sparse24", act_scale=0.05)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x))


def test_storage_record_counts_half_the_values_and_the_metadata():
    lin = _linear(128, 64)
    st = LowbitLinear.from_float(lin, "sparse24").lowbit_storage()
    assert st["format"] == "sparse24" and st["sparsity"] == 0.5 and st["sparsity_kind"] == "2:4"
    # kept int8 values (K/2 per column), two 2-bit indices per group of 4 (K/8 bytes per
    # column), float32 scales and bias, the int64 overflow guard
    assert st["bytes"] == 128 // 2 * 64 + 128 // 8 * 64 + 64 * 4 + 64 * 4 + 8
    assert st["params"] == 128 * 64 + 64


def test_weight_that_is_not_two_of_four_is_rejected_naming_the_group():
    with pytest.raises(ValueError, match=r"not 2:4 sparse along K: column 0, K 0\.\.3"):
        LowbitLinear.from_float(nn.Linear(8, 4), "sparse24")


def test_op_equals_the_kernel():
    rng = np.random.default_rng(4)
    w = prune_24(rng.integers(-128, 128, (200, 50)).astype(np.int8))
    packed = lk.pack_weights(w, "sparse24")
    a = rng.integers(-128, 128, (6, 200)).astype(np.int8)
    got = torch.ops.lowbit.gemm_sparse24(torch.from_numpy(a), *packed_to_tensors(packed))
    assert np.array_equal(got.numpy(), lk.gemm_sparse24(a, packed))
    assert np.array_equal(got.numpy(), a.astype(np.int64) @ w.astype(np.int64))


def test_each_gemm_op_takes_only_its_own_format():
    packed = lk.pack_weights(prune_24(np.ones((8, 4), np.int8)), "sparse24")
    a = torch.ones(1, 8, dtype=torch.int8)
    with pytest.raises(ValueError, match="w_format"):
        torch.ops.lowbit.gemm_int8(a, *packed_to_tensors(packed))
    dense = lk.pack_weights(np.ones((8, 4), np.int8))
    with pytest.raises(ValueError, match="w_format"):
        torch.ops.lowbit.gemm_sparse24(a, *packed_to_tensors(dense))
