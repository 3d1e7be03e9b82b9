"""export(model, sparse24=True): 2:4-pruned int8 layers run on gemm_sparse24, equal to the
simulation bit for bit (unfused), and to the dense int8 export (fused chains included)."""
from __future__ import annotations

import copy

import torch
from torch import nn

from lowbit.compress import Int8StaticConfig, NMConfig, export, finalize, prune, quantize
from lowbit.compress.export import export_summary


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10)).eval()


def _quantized_two_of_four() -> tuple[nn.Module, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(4, 4, 6, 6, generator=g) for _ in range(3)]
    model = finalize(prune(_model(), NMConfig(2, 4)))
    return quantize(model, Int8StaticConfig(calibrator="minmax"), calibration=batches), batches[0]


def test_unfused_export_equals_the_simulation():
    model, x = _quantized_two_of_four()
    want = model(x)
    export(model, fuse=False, sparse24=True)
    fmts = {layer.name: layer.fmt for layer in export_summary(model).layers}
    assert fmts == {"0": "sparse24", "2": "sparse24", "5": "sparse24"}
    assert torch.equal(model(x), want)


def test_fused_export_equals_the_dense_int8_export():
    model, x = _quantized_two_of_four()
    dense = export(copy.deepcopy(model))
    sparse = export(model, sparse24=True)
    assert {layer.fmt for layer in export_summary(sparse).layers} == {"sparse24"}
    assert torch.equal(sparse(x), dense(x))


def test_dense_layers_stay_int8():
    torch.manual_seed(0)
    model = quantize(_model(), Int8StaticConfig(calibrator="minmax"),
                     calibration=[torch.randn(2, 4, 6, 6)])
    export(model, sparse24=True)
    assert {layer.fmt for layer in export_summary(model).layers} == {"int8"}
