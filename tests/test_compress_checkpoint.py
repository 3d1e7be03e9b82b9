"""lowbit.compress.save / load: one file, the same outputs bit for bit, versions checked."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from lowbit.compress import (CHECKPOINT_VERSION, Int4WeightOnlyConfig, Int8DynamicConfig,
                             Int8StaticConfig, checkpoint_info, export, get_model, load,
                             quantize, save)
from lowbit.compress.data import calibration_subset, load_digits_split
from lowbit.kernels.modules import LowbitConv2d, LowbitLinear


def gen(key) -> torch.Generator:
    return torch.Generator().manual_seed(key)


class Net(nn.Module):
    """A user architecture (not a built-in model name): conv, BN, ReLU6, pool, two Linear."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8),
                                      nn.ReLU6(), nn.MaxPool2d(2), nn.Flatten())
        self.fc1 = nn.Linear(8 * 16, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(self.features(x))))


def fresh_net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


def exported_net(config, csr_density=None) -> nn.Module:
    model = fresh_net()
    with torch.no_grad():
        model.fc1.weight.mul_(torch.rand(64, 128, generator=gen(1)) < 0.15)
    batches = [torch.randn(16, 1, 8, 8, generator=gen(i)) for i in range(3)]
    quantize(model, config, calibration=batches if isinstance(config, Int8StaticConfig) else None)
    return export(model, csr_density=csr_density)


CASES = {"int8_static_fused": (lambda: Int8StaticConfig(calibrator="minmax"), None),
         "int8_static_csr": (lambda: Int8StaticConfig(calibrator="minmax"), 0.2),
         "int8_dynamic": (Int8DynamicConfig, None),
         "int4_g32": (lambda: Int4WeightOnlyConfig(32), None)}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_round_trip_user_architecture(case, tmp_path, assert_exact):
    config, density = CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # int4: the conv (K=9) stays float
        model = exported_net(config(), density)
    path = tmp_path / "net.lowbit"
    save(model, path, arch=fresh_net(), config={"case": case}, meta={"note": [1, 2.5]})
    info = checkpoint_info(path)
    assert info["version"] == CHECKPOINT_VERSION and info["arch"] is None
    assert info["config"] == {"case": case} and info["meta"] == {"note": [1, 2.5]}
    with pytest.raises(ValueError, match="arch"):
        load(path)
    back = load(path, arch=fresh_net())
    assert [type(m) for m in back.modules()] == [type(m) for m in model.modules()]
    x = torch.randn(9, 1, 8, 8, generator=gen(5)) * 3
    with torch.no_grad():  # int4: the float conv stays a parameter of the model
        assert_exact(back(x).numpy(), model(x).numpy())
    if density is not None:
        assert info["layers"]["fc1"] == "csr" and back.fc1.fmt == "csr"


def test_round_trip_builtin_digits_cnn(tmp_path, assert_exact):
    model = get_model("digits-cnn")
    calib, _ = calibration_subset(64)
    export(quantize(model, Int8StaticConfig(calibrator="kl"), calibration=[calib]))
    path = tmp_path / "cnn.lowbit"
    save(model, path, arch="digits-cnn")
    back = load(path)
    assert isinstance(back.conv2, LowbitConv2d) and isinstance(back.fc, LowbitLinear)
    assert isinstance(back.bn1, nn.Identity) and isinstance(back.relu1, nn.Identity)
    x = load_digits_split().x_test[:50]
    with torch.no_grad():
        assert_exact(back(x).numpy(), model(x).numpy())


def test_unknown_version_and_foreign_files_are_rejected(tmp_path):
    model = exported_net(Int8DynamicConfig())
    path = tmp_path / "m.lowbit"
    save(model, path, arch=fresh_net())
    blob = torch.load(path, weights_only=True)
    blob["version"] = CHECKPOINT_VERSION + 1
    torch.save(blob, tmp_path / "future.lowbit")
    with pytest.raises(ValueError, match=rf"version {CHECKPOINT_VERSION + 1}.*reads version "
                                         rf"{CHECKPOINT_VERSION}"):
        load(tmp_path / "future.lowbit", arch=fresh_net())
    with pytest.raises(ValueError, match="version"):
        checkpoint_info(tmp_path / "future.lowbit")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a lowbit-compressed file"):
        load(tmp_path / "other.pt")
    (tmp_path / "text.lowbit").write_text("hello")
    with pytest.raises(ValueError, match="not a lowbit-compressed file"):
        load(tmp_path / "text.lowbit")
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.lowbit")


def test_save_refuses_what_it_cannot_rebuild(tmp_path):
    model = fresh_net()
    quantize(model, Int8DynamicConfig())      # simulation layers, not exported
    with pytest.raises(ValueError, match="export it first"):
        save(model, tmp_path / "m.lowbit", arch=fresh_net())
    with pytest.raises(TypeError, match="arch"):
        save(model, tmp_path / "m.lowbit", arch=3)
    grown = copy.deepcopy(exported_net(Int8DynamicConfig()))
    grown.extra = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="'extra'"):
        save(grown, tmp_path / "m.lowbit", arch=fresh_net())
    assert not list(tmp_path.iterdir())       # nothing half-written
