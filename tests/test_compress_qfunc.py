"""lowbit.compress: granularities, quantize / dequantize, STE and LSQ gradients."""
from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lowbit.compress import (PerChannel, PerGroup, PerTensor, QuantSpec, dequantize,
                             dynamic_quantize_rows, fake_quantize, lsq_fake_quantize, qparams,
                             quantize_tensor)
from lowbit.compress.qfunc import absmax_scale, lsq_grad_scale, tensor_qparams

BITS = list(range(2, 9))
GRANS = [PerTensor(), PerChannel(0), PerChannel(1), PerChannel(-1), PerGroup(4)]
DOC_MODULES = ["granularity", "qfunc", "calibrators", "configs", "api", "qmodules", "qat",
               "bnfold", "mixed", "swap"]


@pytest.mark.parametrize("mod", DOC_MODULES)
def test_docstring_examples_run(mod):
    m = importlib.import_module(f"lowbit.compress.{mod}")
    result = doctest.testmod(m, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_package_doctest():
    import lowbit.compress as lc
    assert doctest.testmod(lc).failed == 0


@pytest.mark.parametrize("gran", GRANS, ids=str)
def test_blocks_roundtrip_and_param_shape(gran):
    x = torch.arange(2 * 3 * 8, dtype=torch.float32).reshape(2, 3, 8)
    xb = gran.blocks(x)
    assert xb.dim() == 3
    assert tuple(xb.shape[:2]) == gran.param_shape(x.shape)
    assert torch.equal(gran.unblocks(xb, x.shape), x)


def test_per_channel_block_holds_one_channel():
    x = torch.arange(24.0).reshape(2, 3, 4)
    xb = PerChannel(1).blocks(x)
    assert torch.equal(xb[1, 0], x[:, 1, :].reshape(-1))


def test_per_group_groups_consecutive_elements_of_each_row():
    w = torch.arange(2 * 2 * 2 * 2, dtype=torch.float32).reshape(2, 2, 2, 2)  # conv [O, I, kh, kw]
    xb = PerGroup(4).blocks(w)
    assert xb.shape == (2, 2, 4)
    assert torch.equal(xb[1, 1], w[1].reshape(-1)[4:8])


@pytest.mark.parametrize("bad, match", [
    (lambda: PerGroup(0), "positive"),
    (lambda: PerGroup(3).blocks(torch.zeros(2, 8)), "multiple of the group size"),
    (lambda: PerGroup(2).blocks(torch.zeros(8)), "at least 2 dims"),
    (lambda: PerChannel(3).blocks(torch.zeros(2, 8)), "out of range"),
    (lambda: QuantSpec(9), r"\[2, 8\]"),
    (lambda: QuantSpec(1), r"\[2, 8\]"),
    (lambda: QuantSpec(8, granularity="tensor"), "PerTensor"),
])
def test_bad_granularity_or_spec_raises(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        bad()


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_qrange(bits, symmetric):
    lo, hi = QuantSpec(bits, symmetric).qrange
    if symmetric:
        assert (lo, hi) == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    else:
        assert (lo, hi) == (0, 2 ** bits - 1)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("gran", GRANS, ids=str)
def test_roundtrip_error_at_most_half_a_step(bits, symmetric, gran):
    """Inside the calibrated range, |x - dequantize(quantize(x))| <= s / 2 per block."""
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(4, 6, 8, generator=g) * 3 + (0 if symmetric else 1.0)
    spec = QuantSpec(bits, symmetric, gran)
    s, z = tensor_qparams(x, spec)
    q = quantize_tensor(x, s, z, spec)
    assert q.dtype == spec.int_dtype
    lo, hi = spec.qrange
    assert int(q.min()) >= lo and int(q.max()) <= hi
    err = gran.blocks((x - dequantize(q, s, z, spec)).abs())
    # symmetric ranges clip the most negative values at -qmax*s - s/2 at most; the bound
    # s/2 (plus float32 slack) holds since min/max qparams cover [min, max].
    assert bool((err <= s[..., None] * (0.5 + 1e-5)).all())


def test_symmetric_scale_formula_matches_numpy_float32():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 33, generator=g)
    s, z = tensor_qparams(w, QuantSpec(8, True, PerChannel(0)))
    want = np.abs(w.numpy()).max(axis=1) / np.float32(127)
    np.testing.assert_array_equal(s.reshape(-1).numpy(), want)
    assert int(z.abs().max()) == 0
    q = quantize_tensor(w, s, z, QuantSpec(8, True, PerChannel(0)))
    want_q = np.clip(np.rint(w.numpy() / want[:, None]), -128, 127).astype(np.int8)
    np.testing.assert_array_equal(q.numpy(), want_q)


def test_zero_range_picks_scale_one():
    for symmetric in (True, False):
        s, z = qparams(torch.zeros(3), torch.zeros(3), QuantSpec(8, symmetric))
        assert torch.equal(s, torch.ones(3)) and int(z.abs().max()) == 0
    assert float(absmax_scale(torch.tensor(0.0), 4)) == 1.0


def test_asymmetric_qparams_represent_zero_exactly():
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        lo, hi = sorted((torch.randn(2, generator=g) * 5).tolist())
        spec = QuantSpec(8, False)
        s, z = qparams(torch.tensor(lo), torch.tensor(hi), spec)
        q = quantize_tensor(torch.zeros(1, 1), s.reshape(1, 1), z.reshape(1, 1), spec)
        assert float(dequantize(q, s.reshape(1, 1), z.reshape(1, 1), spec)) == 0.0


def test_quantize_rounds_half_to_even():
    spec = QuantSpec(8, True)
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -2.5])
    q = quantize_tensor(x, torch.ones(1, 1), torch.zeros(1, 1), spec)
    assert q.tolist() == [0, 2, 2, 0, -2]


def test_scale_shape_mismatch_raises():
    with pytest.raises(ValueError, match="does not match"):
        quantize_tensor(torch.zeros(4, 8), torch.ones(1, 1), torch.zeros(1, 1),
                        QuantSpec(8, True, PerChannel(0)))


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_ste_forward_and_gradient_match_torch(symmetric):
    """Power-of-two scales: torch's x * (1/s) equals x / s, so the match is exact."""
    spec = QuantSpec(8, symmetric)
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(1000, generator=g) * 4).requires_grad_()
    s, z = 0.03125, (0 if symmetric else 100)
    y = fake_quantize(x, torch.tensor([[s]]), torch.tensor([[z]]), spec)
    gy = torch.randn(1000, generator=g)
    (y * gy).sum().backward()
    x2 = x.detach().clone().requires_grad_()
    qmin, qmax = spec.qrange
    y2 = torch.fake_quantize_per_tensor_affine(x2, s, z, qmin, qmax)
    (y2 * gy).sum().backward()
    assert torch.equal(y.detach(), y2.detach())
    assert torch.equal(x.grad, x2.grad)
    # clipping: zero gradient exactly where the value left [qmin, qmax]
    q = torch.round(x.detach() / s) + z
    assert torch.equal(x.grad == 0, (q < qmin) | (q > qmax) | (gy == 0))


def test_ste_per_channel_gradient_masks_each_channel():
    spec = QuantSpec(4, True, PerChannel(0))
    x = torch.tensor([[0.1, 10.0], [0.1, 10.0]], requires_grad=True)
    s = torch.tensor([[1.0], [2.0]])
    fake_quantize(x, s, torch.zeros(2, 1), spec).sum().backward()
    assert x.grad.tolist() == [[1.0, 0.0], [1.0, 1.0]]  # 10/1 > 7 clips, 10/2 = 5 does not


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_lsq_gradients_match_torch_learnable_fake_quant(symmetric):
    spec = QuantSpec(4, symmetric)
    qmin, qmax = spec.qrange
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(500, generator=g) * 2).requires_grad_()
    s = torch.tensor([[0.25]], requires_grad=True)
    z = torch.tensor([[0.0 if symmetric else 5.0]], requires_grad=True)
    gscale = lsq_grad_scale(x.numel(), spec)
    y = lsq_fake_quantize(x, s, z, spec)
    gy = torch.randn(500, generator=g)
    (y * gy).sum().backward()

    x2 = x.detach().clone().requires_grad_()
    s2 = torch.tensor([0.25], requires_grad=True)
    z2 = torch.tensor([0.0 if symmetric else 5.0], requires_grad=True)
    y2 = torch._fake_quantize_learnable_per_tensor_affine(x2, s2, z2, qmin, qmax, gscale)
    (y2 * gy).sum().backward()
    assert torch.equal(y.detach(), y2.detach())
    assert torch.equal(x.grad, x2.grad)
    assert torch.allclose(s.grad.reshape(1), s2.grad, rtol=1e-5, atol=1e-6)
    if not symmetric:
        assert torch.allclose(z.grad.reshape(1), z2.grad, rtol=1e-5, atol=1e-6)


def test_lsq_default_grad_scale_is_one_over_sqrt_n_qp():
    spec = QuantSpec(4, True, PerChannel(0))
    x = torch.full((3, 10), 0.3)  # v = 1.2: inside, d/ds = rint(v) - v = -0.2 per element
    s = torch.full((3, 1), 0.25, requires_grad=True)
    lsq_fake_quantize(x, s, torch.zeros(3, 1), spec).sum().backward()
    want = 10 * (1.0 - 1.2) / np.sqrt(10 * 7)
    np.testing.assert_allclose(s.grad.reshape(-1).numpy(), want, rtol=1e-5)


@given(m=st.integers(1, 9), k=st.integers(1, 70), seed=st.integers(0, 2 ** 16))
def test_dynamic_rows_match_numpy(m, k, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, k)) * rng.uniform(0.01, 100)).astype(np.float32)
    x[0] = 0.0  # a zero row takes scale 1
    q, s = dynamic_quantize_rows(torch.from_numpy(x))
    ws = np.abs(x).max(axis=1) / np.float32(127)
    ws = np.where(ws > 0, ws, np.float32(1.0)).astype(np.float32)
    np.testing.assert_array_equal(s.numpy(), ws)
    np.testing.assert_array_equal(
        q.numpy(), np.clip(np.rint(x / ws[:, None]), -128, 127).astype(np.int8))
