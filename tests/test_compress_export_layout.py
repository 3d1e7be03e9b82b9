"""export's channels-last producers: a conv whose output (integer in a fused chain, else
float) reaches the next quantized layer through layout-independent ops only returns the
GEMM's channels-last output as is (``LowbitConv2d.channels_last``); a chain through
``.view`` (a view of a channels-last tensor fails) or into anything else keeps the
contiguous layout. Outputs are the same either way, and the flag survives save / load.
"""
from __future__ import annotations

import warnings
import zlib

import torch
from torch import nn

from lowbit.compress import (Int8DynamicConfig, Int8StaticConfig, export, fuse_requantization,
                             load, quantize, save)
from lowbit.kernels.modules import LowbitConv2d


def randn(*shape, key=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(repr(("layout", shape, key)).encode()))
    return torch.randn(*shape, generator=g)


class CNN(nn.Sequential):
    """Two fused chains through ReLU / MaxPool2d / Flatten; the last conv feeds the Linear."""

    def __init__(self):
        super().__init__(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * 2 * 2, 5))


class Viewed(nn.Module):
    """conv1 -> conv2 through torch.relu (layout-free); conv2 -> fc through ``.view``."""

    def __init__(self, view: bool):
        super().__init__()
        self.view = view
        self.conv1 = nn.Conv2d(2, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        h = self.conv2(torch.relu(self.conv1(x)))
        h = h.view(h.size(0), -1) if self.view else torch.flatten(h, 1)
        return self.fc(h)


def _quantized(model: nn.Module, shape, config) -> tuple[nn.Module, list]:
    torch.manual_seed(0)
    model = model.eval()
    batches = [randn(*shape, key=i) * 2 for i in range(3)]
    quantize(model, config, calibration=batches if isinstance(config, Int8StaticConfig)
             else None)
    return model, batches


def _export(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return export(model)


def _layouts(model) -> dict[str, bool]:
    return {n: m.channels_last for n, m in model.named_modules()
            if isinstance(m, LowbitConv2d)}


def test_sequential_chains_are_channels_last(tmp_path, assert_exact):
    sim, batches = _quantized(CNN(), (3, 2, 8, 8), Int8StaticConfig(calibrator="minmax"))
    fuse_requantization(sim)
    x = batches[0]
    with torch.no_grad():
        want = sim(x)
    model = _export(sim)
    assert _layouts(model) == {"0": True, "2": True, "5": True}
    with torch.no_grad():
        h = model[0](x)
        assert h.dtype == torch.uint8 and h.is_contiguous(memory_format=torch.channels_last)
        assert_exact(model(x).numpy(), want.numpy())
    save(model, tmp_path / "cnn.lowbit", arch=CNN())
    again = load(tmp_path / "cnn.lowbit", arch=CNN())
    assert _layouts(again) == _layouts(model)
    with torch.no_grad():
        assert_exact(again(x).numpy(), want.numpy())


def test_view_keeps_the_contiguous_layout(assert_exact):
    for view, want_layouts in ((True, {"conv1": True, "conv2": False}),
                               (False, {"conv1": True, "conv2": True})):
        sim, batches = _quantized(Viewed(view), (2, 2, 8, 8),
                                  Int8StaticConfig(calibrator="minmax"))
        fuse_requantization(sim)
        with torch.no_grad():
            want = sim(batches[1])
        model = _export(sim)
        assert _layouts(model) == want_layouts, view
        with torch.no_grad():
            assert_exact(model(batches[1]).numpy(), want.numpy())


def test_float_outputs_chain_too(assert_exact):
    """Dynamic and unfused layers' float outputs pass on channels-last the same way."""
    for config, fuse in ((Int8DynamicConfig(), True),
                         (Int8StaticConfig(calibrator="minmax"), False)):
        sim, batches = _quantized(CNN(), (3, 2, 8, 8), config)
        with torch.no_grad():
            want = sim(batches[2])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            model = export(sim, fuse=fuse)
        assert _layouts(model) == {"0": True, "2": True, "5": True}
        with torch.no_grad():
            assert model[0](batches[2]).is_contiguous(memory_format=torch.channels_last)
            assert_exact(model(batches[2]).numpy(), want.numpy())


def test_other_consumers_keep_the_contiguous_layout():
    """A conv feeding a float op (GELU) or the model output returns contiguous tensors."""
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.GELU(), nn.Conv2d(4, 4, 3))
    sim, batches = _quantized(model, (2, 2, 6, 6), Int8StaticConfig(calibrator="minmax"))
    exported = _export(sim)
    assert _layouts(exported) == {"0": False, "2": False}
    with torch.no_grad():
        assert exported(batches[0]).is_contiguous()
