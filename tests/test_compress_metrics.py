"""lowbit.compress.profile and to_workload, checked by hand.

MACs of convolutions (stride, padding, groups, depthwise, dilation, batch), linear layers,
the transformer's projections and attention matmuls (torch.matmul, nn.MultiheadAttention,
F.scaled_dot_product_attention, bmm, x @ Parameter) equal hand-computed textbook counts;
sizes count every stored byte (BatchNorm buffers included) and read a module's
``lowbit_storage`` format instead of its tensors (a fake packed-int4 layer); the exported
workload has the same MACs and runs through the simulator and the roofline.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lowbit.compress import (DigitsCNN, DigitsMLP, DigitsTransformer, StorageError, profile,
                             storage_of, to_workload)
from lowbit.roofline import analyze
from lowbit.simulator import simulate
from lowbit.simulator.workload import BatchedMatmul, Conv2d, Gemm, Sparsity

SEED = 20240608
IMG = torch.zeros(1, 1, 8, 8)


# ------------------------------------------------------------------------------ helpers
class FakeInt4Linear(nn.Module):
    """Packed int4 weights (two per byte), one fp16 scale per group of 32 along K, fp32 bias.

    It also keeps a float copy of the weights as a persistent buffer, so its tensors
    (4096 + 512 + 64 + 64 bytes) differ from what its format stores (512 + 64 + 64): the
    profile must read ``lowbit_storage``, not the tensors.
    """

    def __init__(self, k: int, n: int, group: int = 32, act_bits: int = 32,
                 sparsity_kind: str | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.group = k, n, group
        self.act_bits, self.sparsity_kind = act_bits, sparsity_kind
        self.register_buffer("packed", torch.zeros(n, k // 2, dtype=torch.uint8))
        self.register_buffer("scales", torch.ones(n, k // group, dtype=torch.float16))
        self.register_buffer("w_float", torch.randn(n, k, generator=torch.Generator()
                                                    .manual_seed(SEED)))
        self.bias = nn.Parameter(torch.zeros(n))

    def forward(self, x):
        return torch.matmul(x, self.w_float.t()) + self.bias  # must not be counted twice

    def lowbit_storage(self) -> dict:
        k, n = self.in_features, self.out_features
        info = {"format": f"int4-g{self.group}",
                "bytes": k * n // 2 + (k // self.group) * n * 2 + n * 4,
                "weight_bits": 4.0, "act_bits": self.act_bits, "sparsity": 0.0}
        if self.sparsity_kind == "2:4":
            info.update(sparsity=0.5, sparsity_kind="2:4")
        return info


class FakeInt8Conv(nn.Module):
    """A kernel-backed W8A8 conv look-alike: geometry attributes, packed int8 storage."""

    def __init__(self, cin, cout, k, stride=1, padding=0, groups=1):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = cin, cout, k
        self.stride, self.padding, self.groups = stride, padding, groups
        self.conv = nn.Conv2d(cin, cout, k, stride, padding, groups=groups, bias=False)

    def forward(self, x):
        return self.conv(x)

    def lowbit_storage(self) -> dict:
        w = self.conv.weight.numel()
        return {"format": "int8", "bytes": w + 4 * self.out_channels, "weight_bits": 8,
                "act_bits": 8, "sparsity": 0.25}


def _conv_net():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),                               # 9x9 -> 5x5
        nn.Conv2d(8, 16, (3, 1), stride=(1, 2), padding=(1, 0), groups=4, bias=False),  # 5x3
        nn.Conv2d(16, 16, 3, padding=1, groups=16),                            # depthwise 5x3
        nn.Conv2d(16, 4, 3, padding=2, dilation=2),                            # dilated 5x3
    )


# ------------------------------------------------------------------------------ conv / MLP
def test_conv_net_by_hand():
    p = profile(_conv_net(), torch.zeros(2, 3, 9, 9))
    rows = {r.name: r for r in p.layers}
    # N * Cout * Hout * Wout * (Cin / groups) * Kh * Kw
    assert rows["0"].macs == 2 * 8 * 5 * 5 * 3 * 3 * 3 == 10800
    assert rows["1"].macs == 2 * 16 * 5 * 3 * 2 * 3 * 1 == 2880
    assert rows["2"].macs == 2 * 16 * 5 * 3 * 1 * 3 * 3 == 4320
    assert rows["3"].macs == 2 * 4 * 5 * 3 * 16 * 3 * 3 == 17280
    assert [rows[n].params for n in "0123"] == [8 * 27 + 8, 16 * 2 * 3, 16 * 9 + 16,
                                                4 * 16 * 9 + 4]
    assert rows["1"].output_shape == (2, 16, 5, 3)
    assert p.macs == 10800 + 2880 + 4320 + 17280
    assert p.flops == p.ops == 2 * p.macs and p.int_ops == 0
    assert p.bytes == p.fp32_bytes == 4 * p.params and p.compression_ratio == 1.0


def test_mlp_by_hand_with_leading_dims():
    mlp = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    p = profile(mlp, torch.zeros(4, 64))
    assert [r.name for r in p.layers] == ["0", "2"]                     # ReLU: nothing
    assert [r.macs for r in p.layers] == [4 * 64 * 32, 4 * 32 * 10]
    assert p.params == 64 * 32 + 32 + 32 * 10 + 10 and p.bytes == 4 * p.params
    assert profile(mlp, torch.zeros(2, 5, 64)).macs == 10 * (64 * 32 + 32 * 10)


def test_digits_cnn_profile_by_hand():
    p = profile(DigitsCNN(), IMG)
    rows = {r.name: r for r in p.layers}
    assert list(rows) == ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "fc"]
    assert rows["conv1"].macs == 32 * 8 * 8 * 1 * 9
    assert rows["conv2"].macs == 32 * 8 * 8 * 32 * 9
    assert rows["conv3"].macs == 64 * 4 * 4 * 32 * 9
    assert rows["fc"].macs == 256 * 10
    assert p.macs == 905_728
    # BatchNorm: weight + bias (params), running mean + var (fp32) and the int64 counter
    assert rows["bn1"].params == 64 and rows["bn1"].bytes == 4 * (64 + 64) + 8
    assert rows["bn1"].macs == 0 and rows["bn1"].fp32_bytes == rows["bn1"].bytes
    assert p.params == 30_762


def test_digits_transformer_profile_by_hand():
    p = profile(DigitsTransformer(), torch.zeros(3, 1, 8, 8))
    rows = {r.name: r for r in p.layers}
    t = 3 * 8                                             # tokens
    assert rows["embed"].macs == t * 8 * 32
    for name in ("q", "k", "v", "out"):
        assert rows[f"blocks.0.attn.{name}"].macs == t * 32 * 32
    # scores: batch * heads * T * T * d_head; context the same sizes
    assert rows["blocks.0.attn"].macs == 2 * (3 * 4 * 8 * 8 * 8)
    assert rows["blocks.1.fc1"].macs == rows["blocks.1.fc2"].macs == t * 32 * 64
    assert rows["head"].macs == 3 * 32 * 10
    per_block = 4 * t * 32 * 32 + 2 * 3 * 4 * 8 * 8 * 8 + 2 * t * 32 * 64
    assert p.macs == t * 8 * 32 + 2 * per_block + 3 * 32 * 10 == 3 * 141_632
    assert rows[""].params == 8 * 32 and rows[""].kind == "DigitsTransformer"  # positions
    assert p.params == sum(q.numel() for q in DigitsTransformer().parameters())


# ------------------------------------------------------------------------------ attention
def test_multihead_attention_module():
    mha = nn.MultiheadAttention(16, 4, batch_first=True)
    x = torch.zeros(2, 5, 16)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]

    p = profile(Wrap(), x)
    assert [r.name for r in p.layers] == ["mha"]          # owns out_proj too
    proj = 4 * 10 * 16 * 16                               # q, k, v, out over 10 tokens
    att = 2 * (2 * 4 * 5 * 5 * 4)                         # scores + context, 8 heads x 5x5x4
    assert p.macs == proj + att
    assert p.params == 3 * 16 * 16 + 48 + 16 * 16 + 16
    wl = to_workload(Wrap(), x)
    assert [layer.name for layer in wl.layers] == [
        "mha.q_proj", "mha.k_proj", "mha.v_proj", "mha.scores", "mha.context", "mha.out_proj"]
    assert wl.layers[3] == BatchedMatmul("mha.scores", a_bits=32, w_bits=32, batch=8, m=5,
                                         n=5, k=4)
    assert wl.macs == p.macs


def test_transformer_encoder_layer_seq_first():
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=False)
    x = torch.zeros(6, 3, 16)                             # L=6, N=3
    p = profile(layer, x)
    t = 18
    want = 4 * t * 16 * 16 + 2 * (3 * 2 * 6 * 6 * 8) + 2 * t * 16 * 32
    assert p.macs == want and to_workload(layer, x).macs == want


def test_sdpa_bmm_functional_linear_and_parameter_matmul():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(12, 7))
            self.lin_w = nn.Parameter(torch.zeros(5, 12))

        def forward(self, q, k, v):
            a = F.scaled_dot_product_attention(q, k, v)   # [2, 4, 6, 12]
            b = torch.bmm(a.reshape(8, 6, 12), a.reshape(8, 6, 12).transpose(1, 2))  # 8x6x6x12
            c = a @ self.w                                 # Gemm 48 x 7 x 12
            d = F.linear(a, self.lin_w)                    # Gemm 48 x 5 x 12
            return b.sum() + c.sum() + d.sum()

    q, k, v = torch.zeros(2, 4, 6, 8), torch.zeros(2, 4, 10, 8), torch.zeros(2, 4, 10, 12)
    p = profile(Mixed(), (q, k, v))
    scores, context = 2 * 4 * 6 * 10 * 8, 2 * 4 * 6 * 12 * 10
    assert p.macs == scores + context + 8 * 6 * 6 * 12 + 48 * 7 * 12 + 48 * 5 * 12
    wl = to_workload(Mixed(), (q, k, v))
    kinds = {layer.name: layer for layer in wl.layers}
    assert kinds["sdpa0.scores"] == BatchedMatmul("sdpa0.scores", a_bits=32, w_bits=32,
                                                  batch=8, m=6, n=10, k=8)
    assert isinstance(kinds["bmm0"], BatchedMatmul)
    assert kinds["matmul0"] == Gemm("matmul0", a_bits=32, w_bits=32, m=48, n=7, k=12)
    assert kinds["linear0"] == Gemm("linear0", a_bits=32, w_bits=32, m=48, n=5, k=12)
    assert wl.macs == p.macs and wl.extra_params == 0


def test_uncounted_functions_and_look_alikes_are_noted():
    class LooksLinear(nn.Module):
        in_features, out_features = 4, 4

        def forward(self, x):
            return torch.einsum("ij,jk->ik", x, torch.eye(4))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.odd = LooksLinear()

        def forward(self, x):
            return self.odd(x)

    p = profile(Net(), torch.zeros(3, 4))
    assert p.macs == 0
    rnn = profile(nn.Sequential(nn.LSTM(4, 4)), torch.zeros(3, 1, 4))
    assert any("'0' (LSTM): recurrent" in n for n in rnn.notes)
    assert any("einsum (1 call)" in n for n in p.notes)
    assert any("'odd'" in n and "lowbit_storage" in n for n in p.notes)
    assert "note: einsum" in p.table()
    with pytest.raises(ValueError, match="nothing to simulate"):
        to_workload(Net(), torch.zeros(3, 4))


# ------------------------------------------------------------------------------ storage
def test_fake_int4_module_size_reads_the_format():
    layer = FakeInt4Linear(64, 16)
    p = profile(layer, torch.zeros(3, 64))
    (row,) = p.layers
    assert row.bytes == 64 * 16 // 2 + 2 * 16 * 2 + 16 * 4 == 640   # nibbles + fp16 scales + bias
    assert row.params == 64 * 16 + 16 and row.fp32_bytes == 4 * row.params == 4160
    assert row.format == "int4-g32" and row.weight_bits == 4.0 and row.act_bits == 32
    assert p.compression_ratio == pytest.approx(4160 / 640)
    assert row.macs == 3 * 64 * 16                 # the formula, its inner matmul not again
    assert row.flops == row.ops                    # float activations: floating-point math
    tensors = sum(b.numel() * b.element_size() for b in layer.buffers()) + 64
    assert tensors != row.bytes


def test_storage_modules_in_a_model_and_integer_ops():
    net = nn.Sequential(FakeInt8Conv(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        FakeInt4Linear(512, 10, act_bits=8))
    base = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(),
                         nn.Linear(512, 10))
    p, p0 = profile(net, IMG), profile(base, IMG)
    conv, fc = p.layers
    assert conv.macs == 8 * 64 * 9 and conv.bytes == 72 + 32 and conv.sparsity == 0.25
    assert conv.params == 72                       # geometry: 8 * 1 * 3 * 3, no bias
    assert conv.flops == 0 and conv.int_ops == conv.ops == 2 * conv.macs
    assert fc.flops == 0                           # W4A8: integer arithmetic
    assert p.macs == p0.macs and p.int_ops == p.ops and p.flops == 0
    assert p.params == p0.params
    assert p.compression_vs(p0) == pytest.approx(p0.bytes / p.bytes)
    assert p.compression_ratio == pytest.approx(p0.bytes / p.bytes)


@pytest.mark.parametrize("bad, key", [
    ({"bytes": -1}, "bytes"),
    ({"bytes": 1.5}, "bytes"),
    ({"weight_bits": 0}, "weight_bits"),
    ({"act_bits": 4.0}, "act_bits"),
    ({"sparsity": 1.0}, "sparsity"),
    ({"format": ""}, "format"),
    ({"sparsity_kind": "2:4"}, "sparsity"),        # 2:4 needs sparsity 0.5
    ({"sparsity_kind": "blocky", "sparsity": 0.5}, "sparsity_kind"),
    ({"colour": "red"}, "colour"),
], ids=["bytes_negative", "bytes_float", "wbits_zero", "abits_float", "sparsity_one",
        "format_empty", "kind_mismatch", "kind_unknown", "unknown_key"])
def test_malformed_storage_is_rejected_naming_the_key(bad, key):
    class Bad(FakeInt4Linear):
        def lowbit_storage(self):
            return {**super().lowbit_storage(), **bad}

    with pytest.raises(StorageError, match=rf"'lin'.*{key}"):
        profile(nn.Sequential(__import__("collections").OrderedDict(lin=Bad(64, 8))),
                torch.zeros(1, 64))


def test_storage_missing_key():
    class Missing(nn.Module):
        def lowbit_storage(self):
            return {"format": "int8", "bytes": 1}

    with pytest.raises(StorageError, match="missing keys.*weight_bits"):
        storage_of(Missing(), "m")
    assert storage_of(nn.Linear(2, 2)) is None


# ------------------------------------------------------------------------------ conventions
def test_shared_module_and_tied_weights():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)
            self.tied = nn.Linear(8, 8, bias=False)
            self.tied.weight = self.fc.weight

        def forward(self, x):
            return self.tied(self.fc(self.fc(x)))

    p = profile(Shared(), torch.zeros(1, 8))
    fc = p.layer("fc")
    assert fc.calls == 2 and fc.macs == 2 * 64 and fc.params == 72
    assert p.layer("tied").params == 0 and p.layer("tied").macs == 64
    assert p.params == 72
    assert [layer.name for layer in to_workload(Shared(), torch.zeros(1, 8)).layers] == [
        "fc", "fc#2", "tied"]


def test_profile_leaves_the_model_untouched():
    model = DigitsCNN().train()
    model.bn2.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    profile(model, torch.randn(4, 1, 8, 8))
    to_workload(model, torch.randn(4, 1, 8, 8))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and model.bn1.training and not model.bn2.training
    assert all(p.grad is None for p in model.parameters())
    assert not model._forward_hooks and not model.conv1._forward_pre_hooks


def test_pruned_float_weights_report_sparsity_not_smaller_size():
    mlp = DigitsMLP()
    with torch.no_grad():
        mlp.fc1.weight[:, ::2] = 0
    p = profile(mlp, IMG)
    assert p.layer("fc1").sparsity == 0.5 and p.layer("fc2").sparsity == 0.0
    assert p.bytes == 4 * p.params


def test_table_and_json():
    p = profile(DigitsTransformer(), IMG)
    text = p.table()
    for r in p.layers:
        assert (r.name or "(model)")[:24] in text
    assert f"{p.macs:,d}" in text and "compression 1.00x" in text
    d = json.loads(p.to_json())
    assert d == json.loads(json.dumps(p.to_dict()))
    assert d["total"]["macs"] == p.macs == sum(r["macs"] for r in d["layers"])
    assert d["layers"][1]["output_shape"] == [1, 8, 32]
    assert set(d["total"]) == {"params", "bytes", "fp32_bytes", "compression_ratio", "macs",
                               "flops", "ops", "int_ops"}
    with pytest.raises(KeyError, match="nope"):
        p.layer("nope")


@pytest.mark.parametrize("arg, exc", [(None, TypeError), ((), TypeError)])
def test_bad_example_input(arg, exc, raises_naming):
    with raises_naming(exc, "example_input"):
        profile(DigitsMLP(), arg)
    with raises_naming(TypeError, "model"):
        profile(lambda x: x, IMG)


# ------------------------------------------------------------------------------ workload
def _random_convs(n: int):
    rng = np.random.default_rng(SEED)
    cases = []
    while len(cases) < n:
        groups = int(rng.choice([1, 1, 2, 4]))
        cin, cout = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 4))
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        stride, padding = int(rng.integers(1, 4)), int(rng.integers(0, 3))
        h, w = int(rng.integers(3, 12)), int(rng.integers(3, 12))
        if kh <= h + 2 * padding and kw <= w + 2 * padding:
            cases.append((h, w, cin, cout, kh, kw, stride, padding, groups))
    return cases


@pytest.mark.parametrize("h, w, cin, cout, kh, kw, stride, padding, groups", _random_convs(20))
def test_conv_macs_agree_with_the_simulators_conv(h, w, cin, cout, kh, kw, stride, padding,
                                                  groups):
    """Batch 1: the workload layer is the simulator's Conv2d, whose output size and MACs the
    simulator's own tests check against a direct convolution."""
    conv = nn.Conv2d(cin, cout, (kh, kw), stride, padding, groups=groups)
    x = torch.zeros(1, cin, h, w)
    (layer,) = to_workload(conv, x).layers
    assert isinstance(layer, Conv2d)
    assert (layer.out_h, layer.out_w) == tuple(conv(x).shape[-2:])
    assert layer.macs == profile(conv, x).macs and layer.params == conv.weight.numel() + cout


def test_digits_cnn_workload_simulates_and_runs_on_the_roofline():
    model = DigitsCNN()
    wl = to_workload(model, IMG)
    assert [type(layer).__name__ for layer in wl.layers] == ["Conv2d"] * 3 + ["Gemm"]
    assert wl.layers[1] == Conv2d("conv2", a_bits=32, w_bits=32, in_h=8, in_w=8, in_ch=32,
                                  out_ch=32, kernel_h=3, kernel_w=3, stride=1, padding=1)
    assert wl.macs == profile(model, IMG).macs == 905_728
    assert wl.total_params == profile(model, IMG).params          # BatchNorm as extra params
    stats = simulate(wl, "edge-npu-32x32")
    assert [s.layer for s in stats.layers] == ["conv1", "conv2", "conv3", "fc"]
    assert stats.total.macs == wl.macs and all(s.feasible for s in stats.layers)
    r = analyze(wl, "h100-sxm")
    assert r.total.ops == 2 * wl.macs and r.total.latency_s > 0


def test_workload_of_a_compressed_model_carries_precision_and_sparsity():
    net = nn.Sequential(FakeInt8Conv(1, 8, 3, padding=1), nn.Flatten(),
                        FakeInt4Linear(512, 16, sparsity_kind="2:4"))
    wl = to_workload(net, IMG)
    conv, fc = wl.layers
    assert (conv.a_bits, conv.w_bits) == (8, 8)
    assert conv.sparsity == Sparsity("unstructured", 0.75)
    assert (fc.a_bits, fc.w_bits, fc.sparsity) == (32, 4, Sparsity("2:4", 0.5))
    stats = simulate(wl, "edge-npu-32x32")               # 2:4 is skipped where supported
    assert stats.layers[0].macs == conv.macs and stats.layers[1].macs in (fc.macs, fc.macs // 2)
    assert analyze(wl, "h100-sxm").total.ops == 2 * wl.macs


def test_workload_batched_and_irregular_convs_become_exact_gemms():
    x = torch.zeros(2, 3, 9, 9)
    wl = to_workload(_conv_net(), x)
    names = [layer.name for layer in wl.layers]
    assert names[0] == "0" and isinstance(wl.layers[0], Gemm)       # batch 2: im2col GEMM
    assert wl.layers[0] == Gemm("0", a_bits=32, w_bits=32, m=2 * 25, n=8, k=27, bias=True)
    assert names[1:5] == ["1.g0", "1.g1", "1.g2", "1.g3"]           # one GEMM per group
    assert wl.macs == profile(_conv_net(), x).macs
    single = to_workload(_conv_net(), x[:1])
    kinds = [type(layer).__name__ for layer in single.layers]
    # conv 1 has uneven stride (1, 2), conv 3 dilation 2: GEMMs; depthwise conv 2: Conv2d
    assert kinds[0] == "Conv2d" and kinds[-1] == "Gemm" and "Conv2d" in kinds[5:]
    assert single.macs * 2 == wl.macs


def test_transposed_and_functional_convs():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2)
            self.k = nn.Parameter(torch.zeros(5, 6, 1, 1))

        def forward(self, x):
            return F.conv2d(self.up(x), self.k)

    x = torch.zeros(1, 4, 5, 5)
    out_hw = (5 - 1) * 2 + 3                                          # 11
    p = profile(Net(), x)
    up = 1 * 4 * 25 * (6 // 2) * 9                                   # N*Cin*Hin*Win*(Cout/g)*K
    fconv = 5 * out_hw * out_hw * 6
    assert p.layer("up").macs == up and p.layer("").macs == fconv
    wl = to_workload(Net(), x)
    assert wl.macs == up + fconv
    assert [layer.name for layer in wl.layers] == ["up.g0", "up.g1", "conv0"]
    assert wl.layers[0] == Gemm("up.g0", a_bits=32, w_bits=32, m=25, n=27, k=2, bias=True)
    assert math.prod((wl.layers[2].out_h, wl.layers[2].out_w)) == out_hw ** 2
