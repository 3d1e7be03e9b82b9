"""The modules' eager path (the kernels' NumPy entry points called directly, with a plan
cached per state of the buffers) against their torch-op path, bit for bit.

The op path is forced by a pass-through TorchDispatchMode (any dispatch mode makes the
modules call the ``lowbit`` torch ops, so FakeTensorMode / export / FlopCounterMode see
them); the plain call takes the eager path (checked: it caches a plan and dispatches no
``lowbit`` op). Also: the plan follows buffer changes (load_state_dict, in-place edits,
replaced buffers), modules made under ``torch.inference_mode`` work, autograd inputs take the
ops, copies drop the cache, and ``channels_last`` conv outputs.
"""
from __future__ import annotations

import copy
import zlib

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from lowbit.kernels import LowbitConv2d, LowbitLinear


def _gen(*key) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(repr(("eager", *key)).encode()))


def rand(*shape, key=0) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(shape, key))


def _two_of_four_(weight: torch.Tensor) -> None:
    with torch.no_grad():
        w = weight.reshape(weight.shape[0], -1, 4)
        keep = torch.zeros_like(w).scatter_(-1, w.abs().topk(2, dim=-1).indices, 1.0)
        weight.copy_((w * keep).reshape(weight.shape))


class OpsOnly(TorchDispatchMode):
    """Passes every op through, counting the ``lowbit`` ones."""

    def __init__(self) -> None:
        super().__init__()
        self.lowbit_ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.lowbit_ops += func.namespace == "lowbit"
        return func(*args, **(kwargs or {}))


def both_paths(mod: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(eager output, op-path output); asserts which path each call took."""
    mod.__dict__.pop("_plan_cache", None)
    eager = mod(x)
    with OpsOnly() as mode:
        ops = mod(x)
    assert mode.lowbit_ops > 0
    assert ("_plan_cache" in mod.__dict__) == mod.scheme.eager
    return eager, ops


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.stride() == b.stride() or not a.numel()
    assert torch.equal(a, b)


FORMATS = {
    "int8_dynamic": ("int8", {}),
    "int8_static_u8": ("int8", {"act_scale": 0.02, "act_zero_point": 128}),
    "int8_static_s8": ("int8", {"act_scale": 0.03}),
    "int8_out_relu": ("int8", {"act_scale": 0.03, "out_scale": 0.05, "relu": True}),
    "int8_out_u8_range": ("int8", {"act_scale": 0.03, "act_zero_point": 3,
                                   "act_range": (0, 15), "out_scale": 0.2,
                                   "out_zero_point": 2, "out_range": (0, 15),
                                   "out_clip": (2, 12)}),
    "int4": ("int4", {}),
    "uint4_bf16": ("uint4", {"activations": "bfloat16", "scale_dtype": "float32"}),
    "int4_w4a8": ("int4", {"activations": "int8"}),
    "sparse24_out": ("sparse24", {"act_scale": 0.03, "out_scale": 0.05}),
    "sparse24_dynamic": ("sparse24", {}),
    "binary": ("binary", {}),
    "csr_static": ("csr", {"act_scale": 0.03, "act_zero_point": 9}),
}
CONV_ONLY = {"int8_dynamic_sample": ("int8", {"act_granularity": "sample"})}


def _linear(fmt: str, k: int, n: int, key=0) -> nn.Linear:
    torch.manual_seed(zlib.crc32(repr(("lin", k, n, key)).encode()))
    lin = nn.Linear(k, n)
    if fmt == "sparse24":
        _two_of_four_(lin.weight)
    return lin


def _conv(fmt: str, c_in: int, c_out: int, kernel, key=0, **kw) -> nn.Conv2d:
    torch.manual_seed(zlib.crc32(repr(("conv", c_in, c_out, kernel, key)).encode()))
    conv = nn.Conv2d(c_in, c_out, kernel, **kw)
    if fmt == "sparse24":
        _two_of_four_(conv.weight)
    return conv


# (k, n, input shape): one row, leading dims, a K tail, no rows
LINEAR_SHAPES = {"m_one": (64, 10, (1, 64)), "leading_dims": (96, 33, (2, 3, 96)),
                 "k_tail": (72, 17, (5, 72)), "m_zero": (64, 8, (0, 64))}


@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=list(LINEAR_SHAPES))
@pytest.mark.parametrize("case", FORMATS, ids=list(FORMATS))
def test_linear_eager_equals_ops(case, shape):
    fmt, opts = FORMATS[case]
    k, n, xs = LINEAR_SHAPES[shape]
    if fmt in ("int4", "uint4", "sparse24") and k % 4:
        k, xs = 64, (*xs[:-1], 64)  # 2:4 groups of K; int4 pads K anyway
    mod = LowbitLinear.from_float(_linear(fmt, k, n), fmt, **opts)
    x = rand(*xs, key=case)
    assert_same(*both_paths(mod, x))
    # strided (a column slice) and bfloat16 inputs
    wide = rand(*xs[:-1], k + 5, key=case)
    assert_same(*both_paths(mod, wide[..., 2:k + 2]))
    if xs[0]:
        assert_same(*both_paths(mod, x.to(torch.bfloat16)))


# name: (c_in, c_out, kernel, conv kwargs, input shape)
CONVS = {
    "k3_pad1": (8, 12, 3, {"padding": 1}, (2, 8, 6, 6)),
    "stride2_dilation": (4, 6, 3, {"stride": 2, "dilation": 2, "padding": 2}, (2, 4, 9, 8)),
    "one_by_one": (8, 5, 1, {}, (1, 8, 4, 3)),
    "grouped": (8, 12, 3, {"groups": 2, "padding": 1, "bias": False}, (2, 8, 5, 5)),
    "batch_zero": (4, 8, 3, {"padding": 1}, (0, 4, 5, 5)),
}


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw_out", "nhwc_out"])
@pytest.mark.parametrize("conv", CONVS, ids=list(CONVS))
@pytest.mark.parametrize("case", {**FORMATS, **CONV_ONLY}, ids=list({**FORMATS, **CONV_ONLY}))
def test_conv_eager_equals_ops(case, conv, channels_last):
    fmt, opts = {**FORMATS, **CONV_ONLY}[case]
    c_in, c_out, kernel, kw, xs = CONVS[conv]
    mod = LowbitConv2d.from_float(_conv(fmt, c_in, c_out, kernel, **kw), fmt,
                                  channels_last=channels_last, **opts)
    x = rand(*xs, key=(case, conv))
    eager, ops = both_paths(mod, x)
    assert_same(eager, ops)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert eager.is_contiguous(memory_format=layout)
    # channels-last input (the layout a channels_last producer passes on)
    assert_same(*both_paths(mod, x.contiguous(memory_format=torch.channels_last)))
    if xs[0]:
        assert_same(*both_paths(mod, x[0]))  # unbatched [C, H, W]


EAGER_FORMATS = sorted(k for k, (fmt, _) in {**FORMATS, **CONV_ONLY}.items()
                       if fmt in ("int8", "int4", "uint4", "sparse24"))


@settings(max_examples=25, deadline=None)
@given(c_in=st.integers(1, 3).map(lambda c: 4 * c), c_out=st.integers(1, 9),
       kh=st.integers(1, 3), kw=st.integers(1, 3), stride=st.integers(1, 2),
       pad=st.integers(0, 2), dil=st.integers(1, 2), groups=st.sampled_from([1, 2]),
       h=st.integers(3, 8), w=st.integers(3, 8), case=st.sampled_from(EAGER_FORMATS),
       channels_last=st.booleans())
def test_conv_eager_equals_ops_hypothesis(c_in, c_out, kh, kw, stride, pad, dil, groups, h, w,
                                          case, channels_last):
    assume(h + 2 * pad >= dil * (kh - 1) + 1 and w + 2 * pad >= dil * (kw - 1) + 1)
    fmt, opts = {**FORMATS, **CONV_ONLY}[case]
    c_out *= groups
    if fmt == "sparse24":  # 2:4 along K = (c_in / groups) * kh * kw: whole groups of 4
        kh = kw = 2
    mod = LowbitConv2d.from_float(
        _conv(fmt, c_in, c_out, (kh, kw), key=(h, w), stride=stride, padding=pad,
              dilation=dil, groups=groups), fmt, channels_last=channels_last, **opts)
    x = rand(2, c_in, h, w, key=(kh, kw, case))
    assert_same(*both_paths(mod, x))


@pytest.mark.parametrize("zp", [0, 7], ids=["int8_in", "uint8_in"])
def test_integer_input_eager_equals_ops(zp):
    """A static layer fed integers (a fused chain's consumer), NCHW and channels-last."""
    dtype = torch.int8 if zp == 0 else torch.uint8
    lo, hi = (-128, 128) if zp == 0 else (0, 256)
    q = torch.randint(lo, hi, (2, 6, 5, 5), generator=_gen("int-in", zp), dtype=dtype)
    mod = LowbitConv2d.from_float(_conv("int8", 6, 4, 3, padding=1), "int8", act_scale=0.05,
                                  act_zero_point=zp, out_scale=0.1)
    for x in (q, q.contiguous(memory_format=torch.channels_last)):
        assert_same(*both_paths(mod, x))
    lin = LowbitLinear.from_float(_linear("int8", 150, 7), "int8", act_scale=0.05,
                                  act_zero_point=zp)
    assert_same(*both_paths(lin, q.reshape(2, -1)))


def test_eager_checks_inputs_as_the_ops(raises_naming):
    dyn = LowbitLinear.from_float(_linear("int8", 16, 4), "int8")
    static = LowbitLinear.from_float(_linear("int8", 16, 4), "int8", act_scale=0.1,
                                     act_zero_point=3)
    for mod, x, exc in ((dyn, torch.zeros(2, 16, dtype=torch.int8), TypeError),
                        (static, torch.zeros(2, 16, dtype=torch.int8), TypeError),
                        (static, torch.zeros(2, 16, dtype=torch.float64), TypeError),
                        (dyn, torch.full((2, 16), float("nan")), ValueError)):
        with raises_naming(exc, "x"):
            mod(x)
        with OpsOnly(), raises_naming(exc, "x"):
            mod(x)


def test_plan_follows_buffer_changes():
    a = LowbitConv2d.from_float(_conv("int8", 4, 6, 3, key=1, padding=1), "int8",
                                act_scale=0.05, out_scale=0.1)
    b = LowbitConv2d.from_float(_conv("int8", 4, 6, 3, key=2, padding=1), "int8",
                                act_scale=0.05, out_scale=0.1)
    x = rand(2, 4, 5, 5, key="buffers")
    want_b = b(x)
    first = a(x)
    assert not torch.equal(first, want_b)
    a.load_state_dict(b.state_dict())                      # in-place copies
    assert_same(a(x), want_b)
    with torch.no_grad():
        a.requant_bias.add_(40)                            # an in-place edit
    eager, ops = both_paths(a, x)
    assert_same(eager, ops)
    assert not torch.equal(eager, want_b)
    a.load_state_dict(b.state_dict(), assign=True)         # replaced tensors
    assert_same(a(x), want_b)
    a.act_scale.fill_(0.0)                                 # invalid now: checked again
    with pytest.raises(ValueError, match="scale"):
        a(x)


def test_modules_made_in_inference_mode():
    """Buffers made under inference_mode track no version: nothing is cached on them (the
    op path's Packed* cache included), and every call gives the right result."""
    lin = _linear("int8", 40, 9)
    normal = LowbitLinear.from_float(lin, "int8", act_scale=0.05, out_scale=0.1)
    with torch.inference_mode():
        inf = LowbitLinear.from_float(lin, "int8", act_scale=0.05, out_scale=0.1)
    x = rand(3, 40, key="inference")
    want = normal(x)
    with torch.inference_mode():
        assert_same(inf(x), want)
        with OpsOnly():
            assert_same(inf(x), want)
        inf.requant_bias.add_(30)
        normal.requant_bias.add_(30)
        assert_same(inf(x), normal(x))
    assert "_plan_cache" not in inf.__dict__


def test_autograd_input_takes_the_ops():
    mod = LowbitLinear.from_float(_linear("int4", 64, 8), "int4")
    x = rand(3, 64, key="grad").requires_grad_()
    y = mod(x)
    assert y.requires_grad
    with pytest.raises(RuntimeError, match="inference-only"):
        y.sum().backward()
    with torch.no_grad():
        assert not mod(x).requires_grad


def test_copies_drop_the_plan(tmp_path):
    mod = LowbitConv2d.from_float(_conv("int8", 3, 4, 3, padding=1), "int8", act_scale=0.05,
                                  out_scale=0.1, channels_last=True)
    x = rand(2, 3, 5, 5, key="copy")
    want = mod(x)
    assert "_plan_cache" in mod.__dict__
    dup = copy.deepcopy(mod)
    assert "_plan_cache" not in dup.__dict__
    assert_same(dup(x), want)
    torch.save(mod, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    assert "_plan_cache" not in loaded.__dict__
    assert_same(loaded(x), want)


def test_channels_last_option(raises_naming):
    conv = _conv("int8", 3, 8, 3, padding=1)
    nchw = LowbitConv2d.from_float(conv, "int8", act_scale=0.05, out_scale=0.1)
    nhwc = LowbitConv2d.from_float(conv, "int8", act_scale=0.05, out_scale=0.1,
                                   channels_last=True)
    assert not nchw.channels_last and nhwc.channels_last
    assert "channels_last=True" in repr(nhwc) and "channels_last" not in repr(nchw)
    x = rand(2, 3, 6, 6, key="layout")
    a, b = nchw(x), nhwc(x)
    assert torch.equal(a, b)
    assert a.is_contiguous() and b.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(RuntimeError, match="view"):  # what export guards against
        b.view(2, -1)
    nxt = LowbitConv2d.from_float(_conv("int8", 8, 4, 3, key=3), "int8", act_scale=0.1)
    assert torch.equal(nxt(a), nxt(b))
    with raises_naming(TypeError, "channels_last"):
        LowbitConv2d(3, 8, 3, channels_last=1)
    with raises_naming(TypeError, "channels_last"):
        LowbitLinear(8, 4, channels_last=True)
