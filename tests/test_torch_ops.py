"""The ``lowbit`` torch custom ops against lowbit's NumPy-level kernels and references.

Integer outputs are compared bit-exactly with ``kernels.ref``; float outputs exactly with the
NumPy wrapper of the same kernel (same code below the op boundary) and with the reference
formula where it is evaluated in the same float32 order (Dequantize, XNOR-Net scaling).
Fake implementations are checked under FakeTensorMode and with ``torch.library.opcheck``.
"""
from __future__ import annotations

import gc
import subprocess
import sys
import weakref

import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import lowbit.kernels as lk
from lowbit.kernels import ref, torch_ops
from lowbit.kernels.formats import ALIGN
from lowbit.kernels.format_sparse24 import prune_24
from lowbit.kernels.torch_ops import (CODECS, OPS, packed_to_tensors, tensors_to_packed)

OP = torch.ops.lowbit
# (M, K, N) edge cases of the int8 / binary GEMMs: M=1, K=1, N and K tails off the panel and
# quad sizes (64 columns, K quads of 4, 64-bit words)
SHAPES = {"m_one": (1, 64, 64), "k_one": (3, 1, 5), "n_tail": (4, 40, 65), "k_tail": (7, 67, 33),
          "square": (16, 128, 128), "n_one": (5, 33, 1)}


def seeded(*key) -> np.random.Generator:
    return np.random.default_rng([20240607, *key])


def int8_case(m, k, n, act=np.int8, key=0):
    rng = seeded(m, k, n, key)
    lo, hi = (-128, 127) if act == np.int8 else (0, 255)
    a = rng.integers(lo, hi + 1, size=(m, k), dtype=act)
    w = rng.integers(-128, 128, size=(k, n), dtype=np.int8)
    return a, w, lk.pack_weights(w)


def w4_case(m, k, n, fmt, key=0):
    rng = seeded(m, k, n, key, 4)
    w = rng.standard_normal((k, n)).astype(np.float32)
    return rng, lk.pack_weights(w, fmt, group_size=32)


# --- registration and the tensor form of packed weights -------------------------------------

def test_every_op_registered_with_a_fake():
    for op in OPS:
        packet = getattr(OP, op.name)
        assert op.name in str(packet.default._schema)
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"lowbit::{op.name}", "CPU")
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"lowbit::{op.name}", "Meta")


def test_import_lowbit_kernels_does_not_import_torch():
    code = "import sys, lowbit.kernels; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("fmt", ["int8", "binary", "int4", "uint4"])
def test_packed_round_trip_is_zero_copy(fmt):
    rng = seeded(1, len(fmt))
    w = rng.standard_normal((96, 70)).astype(np.float32)
    packed = (lk.pack_weights(rng.integers(-128, 128, (96, 70), dtype=np.int8)) if fmt == "int8"
              else lk.pack_weights(w, fmt, **({"group_size": 32} if "4" in fmt else {})))
    tensors, meta, name = packed_to_tensors(packed)
    codec = CODECS[fmt]
    assert name == fmt and len(tensors) == len(codec.arrays) and len(meta) == len(codec.meta)
    back = tensors_to_packed(tensors, meta, name)
    assert type(back) is type(packed) and (back.k, back.n) == (packed.k, packed.n)
    for (field, _), t in zip(codec.arrays, tensors):
        src, got = getattr(packed, field), getattr(back, field)
        assert t.data_ptr() == src.ctypes.data == got.ctypes.data  # no copies either way
        np.testing.assert_array_equal(got, src)
    assert tensors_to_packed(tensors, meta, name) is back  # cached


def test_misaligned_weights_are_realigned_once_and_cached(assert_exact):
    a, w, packed = int8_case(5, 100, 70)
    (data, col_sum), meta, fmt = packed_to_tensors(packed)
    raw = torch.zeros(data.numel() + ALIGN, dtype=torch.int8)
    off = 1 if raw.data_ptr() % ALIGN != ALIGN - 1 else 2
    shifted = raw[off:off + data.numel()].view(data.shape)
    shifted.copy_(data)
    assert shifted.data_ptr() % ALIGN
    rec = tensors_to_packed([shifted, col_sum], meta, fmt)
    assert rec.data.ctypes.data % ALIGN == 0 and rec.data.ctypes.data != shifted.data_ptr()
    assert tensors_to_packed([shifted, col_sum], meta, fmt) is rec
    got = OP.gemm_int8(torch.from_numpy(a), [shifted, col_sum], meta, fmt)
    assert_exact(got.numpy(), ref.gemm_int8(a, w))


def test_cache_follows_in_place_weight_updates(assert_exact):
    a, w, packed = int8_case(3, 64, 64)
    (data, col_sum), meta, fmt = packed_to_tensors(packed)
    first = tensors_to_packed([data, col_sum], meta, fmt)
    w2 = -w.clip(-127, 127)
    p2 = lk.pack_weights(w2)
    data.copy_(torch.from_numpy(p2.data))
    col_sum.copy_(torch.from_numpy(p2.col_sum))
    assert tensors_to_packed([data, col_sum], meta, fmt) is not first
    assert_exact(OP.gemm_int8(torch.from_numpy(a), [data, col_sum], meta, fmt).numpy(),
                 ref.gemm_int8(a, w2))


def test_cache_does_not_keep_the_weights_alive():
    _, _, packed = int8_case(2, 64, 64)
    tensors, meta, fmt = packed_to_tensors(packed)
    tensors_to_packed(tensors, meta, fmt)
    storage = tensors[0].untyped_storage()
    assert storage in torch_ops._CACHE._by_storage
    alive = weakref.ref(storage)
    del tensors, packed, storage
    gc.collect()
    assert alive() is None


# --- gemm_int8 -----------------------------------------------------------------------------

@pytest.mark.parametrize("case", SHAPES, ids=list(SHAPES))
@pytest.mark.parametrize("act, zp", [(np.int8, 0), (np.uint8, 128), (np.int8, -3)],
                         ids=["s8", "u8_zp128", "s8_zp_neg"])
def test_gemm_int8_int32_exact(case, act, zp, assert_exact):
    a, w, packed = int8_case(*SHAPES[case], act=act)
    got = OP.gemm_int8(torch.from_numpy(a), *packed_to_tensors(packed), a_zero_point=zp)
    assert got.dtype == torch.int32
    assert_exact(got.numpy(), ref.gemm_int8(a, w, zp))


@pytest.mark.parametrize("case", SHAPES, ids=list(SHAPES))
def test_gemm_int8_dequantize_exact(case, assert_exact):
    m, k, n = SHAPES[case]
    a, w, packed = int8_case(m, k, n, key=1)
    rng = seeded(m, k, n, 2)
    a_s = rng.uniform(0.01, 0.1, m).astype(np.float32)
    w_s = rng.uniform(0.001, 0.02, n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    got = OP.gemm_int8(torch.from_numpy(a), *packed_to_tensors(packed), 0, "dequantize",
                       a_scale=torch.from_numpy(a_s), w_scale=torch.from_numpy(w_s),
                       bias=torch.from_numpy(b))
    assert got.dtype == torch.float32
    assert_exact(got.numpy(), ref.dequantize(ref.gemm_int8(a, w), a_s, w_s, b))
    scalar = OP.gemm_int8(torch.from_numpy(a), *packed_to_tensors(packed), 0, "dequantize",
                          a_scale=torch.tensor(0.5), w_scale=torch.from_numpy(w_s))
    assert_exact(scalar.numpy(), ref.dequantize(ref.gemm_int8(a, w), np.full(m, 0.5, np.float32),
                                                w_s, None))


@pytest.mark.parametrize("out_dtype, zp, relu", [(torch.int8, 0, False), (torch.int8, 0, True),
                                                 (torch.uint8, 100, False), (torch.uint8, 7, True)],
                         ids=["int8", "int8_relu", "uint8", "uint8_relu"])
def test_gemm_int8_requantize_exact(out_dtype, zp, relu, assert_exact):
    m, k, n = 9, 70, 65
    a, w, packed = int8_case(m, k, n, act=np.uint8, key=3)
    rng = seeded(m, k, n, 4)
    ep = lk.Requantize.from_scale(rng.uniform(1e-4, 1e-3, n), zero_point=zp,
                                  bias=rng.integers(-5000, 5000, n),
                                  out_dtype=str(out_dtype).removeprefix("torch."),
                                  qmin=zp if relu else None)
    got = OP.gemm_int8(torch.from_numpy(a), *packed_to_tensors(packed), 128, "requantize",
                       bias=torch.from_numpy(ep.bias), multiplier=torch.from_numpy(ep.multiplier),
                       shift=torch.from_numpy(ep.shift), out_zero_point=zp, qmin=ep.qmin,
                       qmax=ep.qmax, out_dtype=out_dtype)
    want = ref.requantize(ref.gemm_int8(a, w, 128), ep.multiplier, ep.shift, zp, ep.qmin,
                          ep.qmax, ep.bias, ep.np_out_dtype)
    assert got.dtype == out_dtype
    assert_exact(got.numpy(), want)


@pytest.mark.parametrize("layout", ["row_slice", "transposed", "column_slice"])
def test_gemm_int8_strided_activations(layout, assert_exact):
    rng = seeded(7)
    base = torch.from_numpy(rng.integers(-128, 128, size=(80, 80), dtype=np.int8))
    a = {"row_slice": base[::2, :64], "transposed": base[:64, :12].t(),
         "column_slice": base[:, 1:65]}[layout]
    w = rng.integers(-128, 128, size=(a.shape[1], 20), dtype=np.int8)
    got = OP.gemm_int8(a, *packed_to_tensors(lk.pack_weights(w)))
    assert_exact(got.numpy(), ref.gemm_int8(a.numpy(), w))


def test_gemm_int8_matches_numpy_wrapper_with_empty_batch():
    _, w, packed = int8_case(1, 64, 8)
    got = OP.gemm_int8(torch.zeros(0, 64, dtype=torch.int8), *packed_to_tensors(packed))
    assert got.shape == (0, 8) and got.dtype == torch.int32


# --- int4 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["int4", "uint4"])
@pytest.mark.parametrize("m, k, n", [(1, 64, 64), (3, 128, 70), (9, 32, 1)],
                         ids=["m_one", "n_tail", "n_one"])
def test_gemm_w4a16_equals_numpy_kernel(fmt, m, k, n, assert_exact):
    rng, packed = w4_case(m, k, n, fmt)
    x = rng.standard_normal((m, k)).astype(np.float32)
    got = OP.gemm_w4a16(torch.from_numpy(x), *packed_to_tensors(packed))
    assert_exact(got.numpy(), lk.gemm_w4a16(x, packed))
    tol = ref.w4a16_tolerance(x, packed.nibbles(), packed.zero_points(), packed.group_scales(), 32)
    assert np.all(np.abs(got.numpy() - ref.gemm_w4a16(x, packed.dequantize())) <= tol)
    xb = torch.from_numpy(x).to(torch.bfloat16)
    got_b = OP.gemm_w4a16(xb, *packed_to_tensors(packed))
    assert_exact(got_b.numpy(), lk.gemm_w4a16(xb.view(torch.int16).numpy().view(np.uint16), packed))


@pytest.mark.parametrize("fmt", ["int4", "uint4"])
def test_gemm_w4a8_equals_numpy_kernel_and_reference(fmt, assert_exact):
    rng, packed = w4_case(5, 96, 40, fmt)
    a = rng.integers(-128, 128, size=(5, 96), dtype=np.int8)
    s = rng.uniform(0.01, 0.1, 5).astype(np.float32)
    got = OP.gemm_w4a8(torch.from_numpy(a), *packed_to_tensors(packed), torch.from_numpy(s))
    assert_exact(got.numpy(), lk.gemm_w4a8(a, packed, a_scale=s))
    acc = ref.w4a8_group_acc(a, packed.values(), 32)
    want = ref.w4a8_from_acc(acc, packed.group_scales(), s)
    assert np.all(np.abs(got.numpy() - want) <= ref.w4a8_tolerance(acc, packed.group_scales(), s))


# --- binary --------------------------------------------------------------------------------

@pytest.mark.parametrize("case", SHAPES, ids=list(SHAPES))
def test_gemm_binary_exact(case, assert_exact):
    m, k, n = SHAPES[case]
    rng = seeded(m, k, n, 5)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n))
    bits = OP.pack_binary_activations(torch.from_numpy(x))
    assert_exact(bits.numpy().view(np.uint64), lk.pack_binary_activations(x))
    tensors, meta, fmt = packed_to_tensors(lk.pack_weights(w, "binary"))
    dot = ref.gemm_binary(lk.pack_binary_activations(x), lk.formats.pack_bits(w.T), k)
    assert_exact(OP.gemm_binary(bits, tensors, meta, fmt).numpy(), dot)
    alpha = rng.uniform(0.1, 1, n).astype(np.float32)
    beta = rng.uniform(0.1, 1, m).astype(np.float32)
    got = OP.gemm_binary(bits, tensors, meta, fmt, torch.from_numpy(alpha), torch.from_numpy(beta))
    assert_exact(got.numpy(), ref.binary_scale(dot, alpha, beta))


# --- spmm_csr --------------------------------------------------------------------------------

def csr_case(n_out, k, dtype, density=0.2, key=0):
    rng = seeded(n_out, k, key, 6)
    keep = rng.random((n_out, k)) < density
    vals = (rng.integers(-127, 128, (n_out, k)) if dtype == np.int8
            else rng.standard_normal((n_out, k)))
    return lk.pack_csr(np.where(keep, vals, 0).astype(dtype))


def test_csr_packed_round_trip_is_zero_copy():
    packed = csr_case(40, 70, np.int8)
    tensors, meta, name = packed_to_tensors(packed)
    assert (name, meta) == ("csr", [40, 70])
    back = tensors_to_packed(tensors, meta, name)
    assert type(back) is type(packed) and back.shape == packed.shape and back.nnz == packed.nnz
    for (field, _), t in zip(CODECS["csr"].arrays, tensors):
        src, got = getattr(packed, field), getattr(back, field)
        assert t.data_ptr() == src.ctypes.data == got.ctypes.data
    assert tensors_to_packed(tensors, meta, name) is back


@pytest.mark.parametrize("dtype", [np.int8, np.float32], ids=["int8", "f32"])
@pytest.mark.parametrize("case", SHAPES, ids=list(SHAPES))
def test_spmm_csr_equals_numpy_kernel(dtype, case, assert_exact):
    m, k, n = SHAPES[case]  # weights [n, k] x activations [k, m]
    packed = csr_case(n, k, dtype, key=m)
    rng = seeded(m, k, n, 7)
    x = (rng.integers(-128, 128, (k, m)) if dtype == np.int8
         else rng.standard_normal((k, m))).astype(dtype)
    got = OP.spmm_csr(*packed_to_tensors(packed), torch.from_numpy(x))
    assert_exact(got.numpy(), lk.spmm_csr(packed, x))
    if dtype == np.int8:
        assert_exact(got.numpy(), ref.spmm_csr(packed.row_ptr, packed.col_idx, packed.values,
                                               k, x))


def test_spmm_csr_errors_name_the_argument(raises_naming):
    w = packed_to_tensors(csr_case(8, 16, np.int8))
    with raises_naming(TypeError, "x"):
        OP.spmm_csr(*w, torch.zeros(16, 2))                      # float x, int8 weights
    with raises_naming(ValueError, "x"):
        OP.spmm_csr(*w, torch.zeros(15, 2, dtype=torch.int8))    # wrong K
    with raises_naming(ValueError, "x"):
        OP.spmm_csr(*w, torch.zeros(16, dtype=torch.int8))       # not [K, B]
    with raises_naming(ValueError, "w_format"):
        OP.spmm_csr(w[0], w[1], "int8", torch.zeros(16, 2, dtype=torch.int8))
    assert OP.spmm_csr(*w, torch.zeros(16, 0, dtype=torch.int8)).shape == (8, 0)


# --- fake implementations --------------------------------------------------------------------

def _samples():
    """(op, args, kwargs, want shape, want dtype) for every op and epilogue."""
    a, w, packed = int8_case(5, 100, 70)
    int8 = packed_to_tensors(packed)
    a = torch.from_numpy(a)
    _, p4 = w4_case(3, 64, 40, "uint4")
    w4 = packed_to_tensors(p4)
    wb = packed_to_tensors(lk.pack_weights(seeded(9).standard_normal((100, 40)), "binary"))
    x_b = torch.randn(3, 100, generator=torch.Generator().manual_seed(0))
    bits = OP.pack_binary_activations(x_b)
    csr = packed_to_tensors(lk.pack_csr(np.where(seeded(10).random((40, 100)) < 0.2,
                                                 seeded(11).integers(-127, 128, (40, 100)),
                                                 0).astype(np.int8)))
    csr_f = packed_to_tensors(lk.pack_csr(seeded(12).standard_normal((40, 100)).astype(np.float32)))
    s24 = packed_to_tensors(lk.pack_weights(
        prune_24(seeded(13).integers(-128, 128, (100, 70)).astype(np.int8)), "sparse24"))
    req = {"multiplier": torch.full((70,), 2 ** 30, dtype=torch.int32),
           "shift": torch.full((70,), 40, dtype=torch.int32)}
    return {
        "int8_none": (OP.gemm_int8, (a, *int8), {}, (5, 70), torch.int32),
        "int8_dequantize": (OP.gemm_int8, (a, *int8),
                            {"epilogue": "dequantize", "w_scale": torch.rand(70),
                             "a_scale": torch.rand(5)}, (5, 70), torch.float32),
        "int8_requantize_u8": (OP.gemm_int8, (a, *int8),
                               {"epilogue": "requantize", "out_dtype": torch.uint8,
                                "out_zero_point": 3, **req}, (5, 70), torch.uint8),
        "sparse24_none": (OP.gemm_sparse24, (a, *s24), {}, (5, 70), torch.int32),
        "sparse24_dequantize": (OP.gemm_sparse24, (a, *s24),
                                {"epilogue": "dequantize", "w_scale": torch.rand(70),
                                 "a_scale": torch.rand(5)}, (5, 70), torch.float32),
        "w4a16_bf16": (OP.gemm_w4a16, (torch.randn(3, 64).bfloat16(), *w4), {}, (3, 40),
                       torch.float32),
        "w4a8": (OP.gemm_w4a8, (torch.ones(3, 64, dtype=torch.int8), *w4, torch.rand(3)), {},
                 (3, 40), torch.float32),
        "binary_int32": (OP.gemm_binary, (bits, *wb), {}, (3, 40), torch.int32),
        "binary_scaled": (OP.gemm_binary, (bits, *wb, torch.rand(40), torch.rand(3)), {},
                          (3, 40), torch.float32),
        "pack_bits": (OP.pack_binary_activations, (torch.randn(3, 100),), {}, (3, 2), torch.int64),
        "quantize_dynamic": (OP.quantize_dynamic, (torch.randn(3, 100),), {},
                             [(3, 100), (3,)], [torch.int8, torch.float32]),
        "quantize_static_u8": (OP.quantize_static, (torch.randn(2, 3, 5, 5), 0.05, 128), {},
                               (2, 3, 5, 5), torch.uint8),
        "quantize_static_s8": (OP.quantize_static, (torch.randn(7), 0.05, 0), {}, (7,),
                               torch.int8),
        "quantize_static_u4": (OP.quantize_static, (torch.randn(7), 0.05, 0, [0, 15]), {}, (7,),
                               torch.uint8),
        "spmm_csr_int8": (OP.spmm_csr, (*csr, torch.ones(100, 6, dtype=torch.int8)), {},
                          (40, 6), torch.int32),
        "spmm_csr_f32": (OP.spmm_csr, (*csr_f, torch.randn(100, 3)), {}, (40, 3), torch.float32),
        "xnor_scales": (OP.xnor_scales, (torch.randn(3, 100),), {}, (3,), torch.float32),
    }


SAMPLES = list(_samples())


def _shapes_dtypes(out) -> tuple[list, list]:
    outs = out if isinstance(out, tuple) else (out,)
    return [tuple(t.shape) for t in outs], [t.dtype for t in outs]


@pytest.mark.parametrize("name", SAMPLES)
def test_fake_shapes_and_dtypes(name):
    op, args, kwargs, shape, dtype = _samples()[name]
    want = (shape if isinstance(shape, list) else [shape],
            dtype if isinstance(dtype, list) else [dtype])
    assert _shapes_dtypes(op(*args, **kwargs)) == want
    with FakeTensorMode() as mode:
        fake_args = [mode.from_tensor(x) if isinstance(x, torch.Tensor) else
                     [mode.from_tensor(t) for t in x] if isinstance(x, list) and x and
                     isinstance(x[0], torch.Tensor) else x for x in args]
        fake_kwargs = {k: mode.from_tensor(v) if isinstance(v, torch.Tensor) else v
                       for k, v in kwargs.items()}
        out = op(*fake_args, **fake_kwargs)
    assert _shapes_dtypes(out) == want


@pytest.mark.parametrize("name", SAMPLES)
def test_opcheck(name):
    op, args, kwargs, _, _ = _samples()[name]
    torch.library.opcheck(op.default, args, kwargs)


def test_fake_rejects_bad_k_under_fake_mode(raises_naming):
    a, w, packed = int8_case(5, 100, 70)
    tensors, meta, fmt = packed_to_tensors(packed)
    with FakeTensorMode() as mode, raises_naming(ValueError, "a"):
        OP.gemm_int8(mode.from_tensor(torch.zeros(5, 99, dtype=torch.int8)),
                     [mode.from_tensor(t) for t in tensors], meta, fmt)


# --- errors --------------------------------------------------------------------------------

def test_errors_name_the_argument(raises_naming):
    a, w, packed = int8_case(4, 64, 8)
    tensors, meta, fmt = packed_to_tensors(packed)
    at = torch.from_numpy(a)
    with raises_naming(TypeError, "a"):
        OP.gemm_int8(at.float(), tensors, meta, fmt)
    with raises_naming(ValueError, "a"):
        OP.gemm_int8(at[:, :63], tensors, meta, fmt)
    with raises_naming(ValueError, "a"):
        OP.gemm_int8(at.reshape(4, 8, 8), tensors, meta, fmt)
    with raises_naming(ValueError, "w_format"):
        OP.gemm_int8(at, tensors, meta, "int4")
    with raises_naming(ValueError, "w_format"):
        OP.gemm_int8(at, tensors, meta, "sparse99")
    with raises_naming(ValueError, "w"):
        OP.gemm_int8(at, tensors[:1], meta, fmt)
    with raises_naming(TypeError, "w"):
        OP.gemm_int8(at, [tensors[0].to(torch.int32), tensors[1]], meta, fmt)
    with raises_naming(ValueError, "epilogue"):
        OP.gemm_int8(at, tensors, meta, fmt, 0, "relu")
    with raises_naming(ValueError, "multiplier"):
        OP.gemm_int8(at, tensors, meta, fmt, 0, "requantize", out_dtype=torch.int8)
    with raises_naming(ValueError, "out_dtype"):
        OP.gemm_int8(at, tensors, meta, fmt, 0, "requantize", out_dtype=torch.int32)
    with raises_naming(ValueError, "w_scale"):
        OP.gemm_int8(at, tensors, meta, fmt, 0, "dequantize")
    with raises_naming(ValueError, "multiplier"):
        OP.gemm_int8(at, tensors, meta, fmt, 0, "dequantize", w_scale=torch.ones(8),
                     multiplier=torch.ones(8, dtype=torch.int32))
    with raises_naming(ValueError, "a_zero_point"):
        OP.gemm_int8(at, tensors, meta, fmt, 300)
    with raises_naming(ValueError, "w.data"):  # the record's own check: wrong K for the buffer
        OP.gemm_int8(torch.zeros(4, 128, dtype=torch.int8), tensors, [128, 8, 0], fmt)
    with raises_naming(TypeError, "x"):
        OP.gemm_w4a16(torch.zeros(1, 64, dtype=torch.float64),
                      *packed_to_tensors(w4_case(1, 64, 8, "int4")[1]))
    with raises_naming(ValueError, "x"):
        OP.gemm_w4a16(torch.full((1, 64), float("nan")),
                      *packed_to_tensors(w4_case(1, 64, 8, "int4")[1]))
    with raises_naming(TypeError, "a_bits"):
        OP.gemm_binary(torch.zeros(1, 1, dtype=torch.int32),
                       *packed_to_tensors(lk.pack_weights(np.ones((64, 4)), "binary")))
    with raises_naming(TypeError, "packed"):
        packed_to_tensors(np.zeros(3))
    with raises_naming(TypeError, "x"):
        OP.quantize_dynamic(torch.zeros(2, 3, dtype=torch.float64))
    with raises_naming(ValueError, "x"):
        OP.quantize_dynamic(torch.zeros(2, 3, 4))
    with raises_naming(TypeError, "x"):
        OP.quantize_static(torch.zeros(2, dtype=torch.int8), 0.1, 0)
    with raises_naming(ValueError, "scale"):
        OP.quantize_static(torch.zeros(2), 0.0, 0)
    with raises_naming(ValueError, "zero_point"):
        OP.quantize_static(torch.zeros(2), 0.1, 256)
    with raises_naming(TypeError, "x"):
        OP.xnor_scales(torch.zeros(2, 3, dtype=torch.float16))


def test_backward_through_an_op_raises():
    _, p4 = w4_case(2, 64, 8, "int4")
    x = torch.randn(2, 64, requires_grad=True)
    y = OP.gemm_w4a16(x, *packed_to_tensors(p4))
    with pytest.raises(RuntimeError, match="inference-only"):
        y.sum().backward()
