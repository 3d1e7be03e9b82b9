"""Knowledge distillation: the losses against hand computations, the schemes' wiring, and a
distilled digits student beating the same student trained without its teacher."""
from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lowbit.compress import (DistillConfig, deterministic, digits_loaders, distill, evaluate,
                             fitnets_loss, get_model, hinton_loss, rkd_angle_loss,
                             rkd_distance_loss, train)
from lowbit.compress.distill import hint_adapter
from lowbit.compress.models import DigitsCNN, DigitsMLP


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _huber(d):
    d = np.abs(d)
    return np.where(d < 1, 0.5 * d * d, d - 0.5)


@pytest.fixture(scope="module")
def teacher():
    return get_model("digits-cnn")


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


# --------------------------------------------------------------------------- losses by hand
@pytest.mark.parametrize("temperature, lam", [(1.0, 0.0), (4.0, 0.5), (2.5, 1.0), (0.5, 0.3)])
def test_hinton_loss_by_hand(temperature, lam):
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(5, 7)) * 3, rng.normal(size=(5, 7)) * 3
    y = rng.integers(0, 7, size=5)
    p_t, p_s = _softmax(t / temperature), _softmax(s / temperature)
    kl = np.sum(p_t * (np.log(p_t) - np.log(p_s))) / 5
    ce = -np.mean(np.log(_softmax(s)[np.arange(5), y]))
    want = (1 - lam) * temperature ** 2 * kl + lam * ce
    got = hinton_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), temperature, lam)
    assert float(got) == pytest.approx(want, rel=1e-12)


def test_hinton_loss_gradient_scale_is_temperature_free():
    """T^2 keeps the soft gradient O(1): for large T, dL/dz_s -> (z_s - z_t) / (K B)
    (zero-mean logits, Hinton et al. 2015 sec. 2.1)."""
    s = torch.tensor([[1.0, -0.5, -0.5]], requires_grad=True)
    t = torch.tensor([[-1.0, 0.5, 0.5]])
    hinton_loss(s, t, None, 1000.0, 0.0).backward()
    np.testing.assert_allclose(s.grad.numpy(), ((s - t) / 3).detach().numpy(), rtol=1e-3)


def test_hinton_loss_checks():
    with pytest.raises(ValueError, match="teacher_logits"):
        hinton_loss(torch.zeros(2, 3), torch.zeros(2, 4), None, 1.0, 0.0)
    with pytest.raises(ValueError, match="targets"):
        hinton_loss(torch.zeros(2, 3), torch.zeros(2, 3), None, 1.0, 0.5)


def test_fitnets_loss_by_hand():
    g = torch.Generator().manual_seed(0)
    f_s, f_t = torch.randn(4, 3, generator=g), torch.randn(4, 5, generator=g)
    adapter = hint_adapter(f_s.shape, f_t.shape)
    want = np.mean((f_s.numpy() @ adapter.weight.detach().numpy().T - f_t.numpy()) ** 2)
    assert float(fitnets_loss(f_s, f_t, adapter).detach()) == pytest.approx(want, rel=1e-6)
    assert float(fitnets_loss(f_t, f_t)) == 0.0
    with pytest.raises(ValueError, match="teacher_feature"):
        fitnets_loss(f_s, f_t)


def test_hint_adapter_shapes():
    conv = hint_adapter((2, 8, 4, 4), (2, 32, 4, 4))
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1)
    assert conv(torch.zeros(2, 8, 4, 4)).shape == (2, 32, 4, 4)
    tokens = hint_adapter((2, 8, 16), (2, 8, 32))
    assert isinstance(tokens, nn.Linear) and tokens(torch.zeros(2, 8, 16)).shape == (2, 8, 32)
    for s, t in [((2, 8, 4, 4), (2, 8, 2, 2)), ((2, 8, 16), (2, 4, 16)), ((2, 8), (2, 8, 1))]:
        with pytest.raises(ValueError, match="hints"):
            hint_adapter(s, t)


def test_rkd_distance_by_hand():
    rng = np.random.default_rng(2)
    s, t = rng.normal(size=(5, 3)), rng.normal(size=(5, 4)) * 4
    pairs = [(i, j) for i in range(5) for j in range(5) if i != j]
    ds = np.array([np.linalg.norm(s[i] - s[j]) for i, j in pairs])
    dt = np.array([np.linalg.norm(t[i] - t[j]) for i, j in pairs])
    want = np.mean(_huber(ds / ds.mean() - dt / dt.mean()))
    assert float(rkd_distance_loss(torch.tensor(s), torch.tensor(t))) == \
        pytest.approx(want, rel=1e-10)


def test_rkd_angle_by_hand():
    rng = np.random.default_rng(3)
    s, t = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))

    def cos(e, i, j, k):
        u, v = e[i] - e[j], e[k] - e[j]
        return u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
    triples = [p for p in itertools.product(range(4), repeat=3) if len(set(p)) == 3]
    want = np.mean([_huber(cos(s, *p) - cos(t, *p)) for p in triples])
    assert float(rkd_angle_loss(torch.tensor(s), torch.tensor(t))) == \
        pytest.approx(want, rel=1e-10)


def test_rkd_is_invariant_to_similarity_transforms():
    """Relations survive rotation, uniform scaling and translation: both terms are 0."""
    g = torch.Generator().manual_seed(4)
    e = torch.randn(6, 3, dtype=torch.float64, generator=g)
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=g))
    moved = 7.5 * e @ q + torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    assert float(rkd_distance_loss(moved, e)) < 1e-20
    assert float(rkd_angle_loss(moved, e)) < 1e-20
    assert float(rkd_distance_loss(moved, e.flip(0))) > 1e-3


def test_rkd_small_batches_and_gradients():
    x = torch.ones(1, 4, requires_grad=True)
    assert float(rkd_distance_loss(x, torch.ones(1, 4)).detach()) == 0.0
    assert float(rkd_angle_loss(torch.ones(2, 4), torch.ones(2, 4))) == 0.0
    s = torch.zeros(3, 2, requires_grad=True)  # coincident points: finite gradients
    (rkd_distance_loss(s, torch.randn(3, 2)) + rkd_angle_loss(s, torch.randn(3, 2))).backward()
    assert torch.isfinite(s.grad).all()
    with pytest.raises(ValueError, match="teacher"):
        rkd_distance_loss(torch.zeros(3, 2), torch.zeros(4, 2))


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize("kwargs, field", [
    ({"scheme": "mutual"}, "scheme"),
    ({"temperature": 0.0}, "temperature"),
    ({"temperature": math.inf}, "temperature"),
    ({"hard_weight": 1.5}, "hard_weight"),
    ({"hint_weight": -1.0}, "hint_weight"),
    ({"rkd_angle_weight": -0.1}, "rkd_angle_weight"),
    ({"hints": [("a",)]}, "hints"),
    ({"hints": [("a", "b"), ("a", "c")]}, "hints"),
    ({"hints": "ab"}, "hints"),
    ({"relation_layers": ("a", "b")}, "relation_layers"),
    ({"snapshot_every": 0}, "snapshot_every"),
    ({"scheme": "online", "hints": [("a", "b")]}, "hints"),
    ({"scheme": "online", "rkd_distance_weight": 1.0}, "rkd_distance_weight"),
])
def test_config_validation(kwargs, field, raises_naming):
    with raises_naming(ValueError, field):
        DistillConfig(**kwargs)


def test_config_normalizes_hints_to_tuples():
    cfg = DistillConfig(hints=[["relu2", "relu3"]], relation_layers=["a", "b"],
                        rkd_distance_weight=1.0)
    assert cfg.hints == (("relu2", "relu3"),) and cfg.relation_layers == ("a", "b")
    hash(cfg)


# --------------------------------------------------------------------------- schemes
def _small_loader(n=96, batch=32):
    x, y = next(iter(digits_loaders(batch_size=n, seed=0)[0]))
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


def _shuffled_loader(seed=0):
    x, y = next(iter(digits_loaders(batch_size=96, seed=0)[0]))
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True,
                      generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("hints", [(), (("relu2", "relu2"),)], ids=["logits", "hints"])
def test_hard_weight_one_is_plain_training(teacher, hints):
    """lam = 1 (and hint weight 0): the soft terms have weight 0, so distillation is exactly
    ``train``, batch order included (sizing the adapters peeks at the data without
    advancing the loader's generator)."""
    with deterministic(0):
        a = DigitsCNN(channels=(4, 4, 8))
    b = copy.deepcopy(a)
    cfg = DistillConfig(hard_weight=1.0, hints=hints, hint_weight=0.0)
    with deterministic(0):
        distill(teacher, a, _shuffled_loader(), cfg, epochs=2, lr=1e-2)
    with deterministic(0):
        train(b, _shuffled_loader(), epochs=2, lr=1e-2)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_offline_leaves_the_teacher_alone(teacher):
    before = copy.deepcopy(teacher.state_dict())
    teacher.train()  # its mode is restored; BatchNorm statistics are not touched
    try:
        student = DigitsCNN(channels=(4, 4, 8))
        cfg = DistillConfig(hints=[("relu2", "relu2")], relation_layers=("flatten", "flatten"),
                            rkd_distance_weight=1.0, rkd_angle_weight=2.0)
        with deterministic(0):
            res = distill(teacher, student, _small_loader(), cfg, epochs=1, lr=1e-2)
        assert teacher.training
    finally:
        teacher.eval()
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    (adapter,) = res.adapters
    assert isinstance(adapter, nn.Conv2d) and adapter.weight.shape == (32, 4, 1, 1)
    assert res.train.steps == 3 and res.snapshots == 0
    assert _no_hooks(teacher) and _no_hooks(student)


def test_online_trains_both_peers():
    with deterministic(0):
        a, b = DigitsMLP(hidden=(16, 16)), DigitsMLP(hidden=(32, 16))
    a0, b0 = copy.deepcopy(a), copy.deepcopy(b)
    a.eval()                                     # modes are restored afterwards
    with deterministic(0):
        res = distill(b, a, _small_loader(), DistillConfig(scheme="online"), epochs=1, lr=1e-2)
    for new, old in ((a, a0), (b, b0)):
        assert not torch.equal(new.fc1.weight, old.fc1.weight)
    assert not a.training and b.training
    assert res.train.steps == 3


def test_online_loss_is_mutual():
    """Each peer's gradient is that of its own L_kd against the other's detached logits."""
    from lowbit.compress.distill import _DistillLoss, _Trainee
    with deterministic(0):
        a, b = DigitsMLP(hidden=(8, 8)), DigitsMLP(hidden=(8, 8))
    x, y = _small_loader()[0]
    cfg = DistillConfig(scheme="online", temperature=3.0, hard_weight=0.25)
    _DistillLoss(cfg, None, a)(_Trainee(a, b, nn.ModuleList()), x, y).backward()
    ga = a.fc1.weight.grad.clone()
    a.zero_grad()
    hinton_loss(a(x), b(x).detach(), y, 3.0, 0.25).backward()
    torch.testing.assert_close(ga, a.fc1.weight.grad)


def test_self_first_epochs_are_plain_training():
    """Before the first snapshot the self scheme trains on the labels alone."""
    data = _small_loader()
    with deterministic(0):
        a = DigitsMLP(hidden=(16, 16))
    b = copy.deepcopy(a)
    with deterministic(0):
        res = distill(None, a, data, DistillConfig(scheme="self"), epochs=1, lr=1e-2)
    with deterministic(0):
        train(b, data, epochs=1, lr=1e-2)
    assert res.snapshots == 0
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("every, epochs, taken", [(1, 3, 2), (2, 5, 2), (3, 3, 0)])
def test_self_snapshots(every, epochs, taken):
    student = DigitsCNN(channels=(4, 4, 8))
    cfg = DistillConfig(scheme="self", snapshot_every=every, hints=[("relu3", "relu3")])
    with deterministic(0):
        res = distill(None, student, _small_loader(64), cfg, epochs=epochs, lr=1e-2)
    assert res.snapshots == taken and res.train.steps == 2 * epochs
    assert _no_hooks(student)


def test_bad_calls(teacher, raises_naming):
    student = DigitsMLP(hidden=(8, 8))
    data = _small_loader()
    with raises_naming(ValueError, "teacher"):
        distill(teacher, student, data, DistillConfig(scheme="self"), epochs=1, lr=1e-3)
    with raises_naming(TypeError, "teacher"):
        distill(None, student, data, DistillConfig(), epochs=1, lr=1e-3)
    with raises_naming(ValueError, "teacher"):
        distill(student, student, data, DistillConfig(scheme="online"), epochs=1, lr=1e-3)
    with raises_naming(TypeError, "config"):
        distill(teacher, student, data, {"temperature": 2}, epochs=1, lr=1e-3)
    with raises_naming(ValueError, "data"):
        distill(teacher, student, [], DistillConfig(), epochs=1, lr=1e-3)
    with raises_naming(ValueError, "hints"):  # the student has no conv2
        distill(teacher, student, data, DistillConfig(hints=[("conv2", "conv2")]), epochs=1,
                lr=1e-3)
    with raises_naming(ValueError, "hints"):  # the teacher has no fc2
        distill(teacher, student, data, DistillConfig(hints=[("fc2", "fc2")]), epochs=1,
                lr=1e-3)
    with raises_naming(ValueError, "relation_layers"):
        distill(teacher, student, data, DistillConfig(relation_layers=("fc2", "fc9"),
                                                      rkd_angle_weight=1.0), epochs=1, lr=1e-3)
    assert _no_hooks(teacher) and _no_hooks(student)


# --------------------------------------------------------------------------- on digits
# A small MLP student (64-32-16-10, 2.9 k params) against the trained digits CNN teacher
# (99.6 %): same initialization, data order and epochs, with and without the teacher.
# Measured gains (test images of 450) at seeds 0..3: +5, +4, +4, +2.
STUDENT_HIDDEN = (32, 16)
STUDENT_RECIPE = {"epochs": 20, "lr": 1e-2, "optimizer": "adamw", "weight_decay": 0.01}
STUDENT_BATCH = 64
STUDENT_KD = DistillConfig(temperature=8.0, hard_weight=0.5)


@pytest.mark.parametrize("seed", [0, 1])
def test_distilled_student_beats_scratch_baseline(teacher, seed):
    _, test_loader = digits_loaders()
    accs = {}
    for mode in ("scratch", "distilled"):
        with deterministic(seed):
            student = DigitsMLP(hidden=STUDENT_HIDDEN)
            loader, _ = digits_loaders(batch_size=STUDENT_BATCH, seed=seed)
            if mode == "scratch":
                train(student, loader, **STUDENT_RECIPE)
            else:
                distill(teacher, student, loader, STUDENT_KD, **STUDENT_RECIPE)
        accs[mode] = evaluate(student, test_loader)
    assert accs["distilled"] > accs["scratch"], accs
