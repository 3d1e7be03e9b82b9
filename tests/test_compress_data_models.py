"""lowbit.compress data, built-in models, training loop and model registry.

The digits split is fixed, stratified and normalized; loaders shuffle from their own seeded
generator; the calibration subset comes from the training split only, class-balanced. The
models have the hand-counted parameter numbers; ``train`` calls its plug points in order and
is bit-reproducible under ``deterministic``; the registry trains each model once (into a
temporary cache here), reaches the accuracy targets, reloads from the cache, and retrains with
a warning, never a crash, when the cache file is corrupt or the folder cannot be written.
"""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from lowbit.compress import (Callback, DigitsCNN, DigitsMLP, DigitsTransformer, calibration_loader,
                             calibration_subset, deterministic, digits_loaders, evaluate,
                             get_model, load_digits_split, load_pretrained, model_names, train)
from lowbit.compress import zoo
from lowbit.compress.training import TRAIN_THREADS

SEED = 20240607
TARGETS = {"digits-cnn": 0.97, "digits-mlp": 0.95, "digits-transformer": 0.95}


def _rows(x: torch.Tensor) -> np.ndarray:
    """Images as rows, lexicographically sorted (an order-free multiset of images)."""
    a = x.reshape(len(x), -1).numpy()
    return a[np.lexsort(a.T[::-1])]


# ------------------------------------------------------------------------------ data
def test_split_shapes_types_and_normalization():
    d = load_digits_split()
    assert d.x_train.shape == (1347, 1, 8, 8) and d.x_test.shape == (450, 1, 8, 8)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert abs(float(d.x_train.mean())) < 1e-5
    assert abs(float(d.x_train.std(unbiased=False)) - 1.0) < 1e-5


def test_split_is_a_stratified_partition_of_all_digits():
    d = load_digits_split()
    raw = load_digits()
    everything = d.normalize(raw.data)
    assert np.array_equal(_rows(torch.cat([d.x_train, d.x_test])), _rows(everything))
    test_counts = np.bincount(d.y_test.numpy(), minlength=10)
    all_counts = np.bincount(raw.target, minlength=10)
    assert np.all(np.abs(test_counts - all_counts * 0.25) <= 1), test_counts


def test_split_is_fixed_by_its_seed():
    a, b, c = load_digits_split(0), load_digits_split(0), load_digits_split(1)
    assert torch.equal(a.x_test, b.x_test)
    assert not torch.equal(a.y_test, c.y_test)
    assert load_digits_split(0, 0.5).x_test.shape[0] == 899


def test_loaders_shuffle_from_their_own_seed():
    def order(seed, epochs=1):
        tr, _ = digits_loaders(64, seed=seed)
        return [torch.cat([y for _, y in tr]) for _ in range(epochs)]

    torch.manual_seed(1)
    first = order(0, epochs=2)
    torch.manual_seed(2)  # the global RNG does not change a seeded loader
    again = order(0, epochs=2)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], first[1])          # reshuffled every epoch
    assert not torch.equal(first[0], order(1)[0])
    _, te = digits_loaders(64)
    assert torch.equal(torch.cat([y for _, y in te]), load_digits_split().y_test)  # unshuffled


def test_calibration_subset_is_balanced_training_data():
    x, y = calibration_subset(100, seed=3)
    d = load_digits_split()
    assert x.shape == (100, 1, 8, 8)
    counts = np.bincount(y.numpy(), minlength=10)
    assert counts.min() >= 9 and counts.max() <= 11, counts
    train_rows = {r.tobytes() for r in d.x_train.reshape(len(d.x_train), -1).numpy()}
    assert all(r.tobytes() in train_rows for r in x.reshape(100, -1).numpy())
    x2, _ = calibration_subset(100, seed=3)
    x3, _ = calibration_subset(100, seed=4)
    assert torch.equal(x, x2) and not torch.equal(x, x3)
    batches = list(calibration_loader(100, 32, seed=3))
    assert [len(b[0]) for b in batches] == [32, 32, 32, 4]
    assert torch.equal(torch.cat([b[0] for b in batches]), x)
    assert calibration_subset(5)[0].shape[0] == 5  # fewer than one per class: unstratified


@pytest.mark.parametrize("call, name", [
    (lambda: calibration_subset(0), "n"),
    (lambda: calibration_subset(1348), "n"),
    (lambda: calibration_subset(True), "n"),
    (lambda: digits_loaders(0), "batch_size"),
    (lambda: digits_loaders(32, seed=-1), "seed"),
    (lambda: load_digits_split(0, 1.5), "test_fraction"),
], ids=["n_zero", "n_too_big", "n_bool", "batch_zero", "seed_negative", "fraction"])
def test_data_bad_arguments_are_named(call, name, raises_naming):
    with raises_naming(ValueError, name):
        call()


# ------------------------------------------------------------------------------ models
@pytest.mark.parametrize("cls, params", [
    # conv 1*32*9, bn 2*32, conv 32*32*9, bn 2*32, conv 32*64*9, bn 2*64, fc 256*10+10
    (DigitsCNN, 288 + 64 + 9216 + 64 + 18432 + 128 + 2570),
    (DigitsMLP, 64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10),
    # embed 8*32+32, positions 8*32, 2 x (2 LayerNorms 128, q/k/v/out 4*1056, fc1 2112,
    # fc2 2080), final LayerNorm 64, head 330
    (DigitsTransformer, 288 + 256 + 2 * (128 + 4 * 1056 + 2112 + 2080) + 64 + 330),
], ids=["cnn", "mlp", "transformer"])
def test_model_shapes_and_parameter_counts(cls, params):
    model = cls()
    assert sum(p.numel() for p in model.parameters()) == params
    out = model(torch.zeros(3, 1, 8, 8))
    assert out.shape == (3, 10)


def test_model_layer_names_are_stable():
    assert [n for n, _ in DigitsCNN().named_children()] == [
        "conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "pool2", "conv3", "bn3", "relu3",
        "pool3", "flatten", "fc"]
    names = dict(DigitsTransformer().named_modules())
    assert isinstance(names["blocks.1.attn.q"], nn.Linear)
    assert isinstance(names["blocks.0.fc2"], nn.Linear)


def test_transformer_attention_is_a_true_softmax_attention():
    """One head, identity projections: the block equals softmax(x x^T / sqrt(d)) x."""
    torch.manual_seed(SEED)
    attn = DigitsTransformer(dim=4, depth=1, heads=1, mlp_dim=4).blocks[0].attn
    with torch.no_grad():
        for lin in (attn.q, attn.k, attn.v, attn.out):
            lin.weight.copy_(torch.eye(4))
            lin.bias.zero_()
    x = torch.randn(2, 8, 4)
    want = torch.softmax(x @ x.transpose(1, 2) / 2.0, dim=-1) @ x
    torch.testing.assert_close(attn(x), want)


@pytest.mark.parametrize("call, name", [
    (lambda: DigitsCNN(channels=(8, 8)), "channels"),
    (lambda: DigitsMLP(hidden=(0, 4)), "hidden"),
    (lambda: DigitsTransformer(dim=30, heads=4), "heads"),
    (lambda: DigitsTransformer()(torch.zeros(2, 64)), "x"),
], ids=["cnn_channels", "mlp_hidden", "heads_divide", "transformer_input"])
def test_model_bad_arguments_are_named(call, name, raises_naming):
    with raises_naming(ValueError, name):
        call()


# ------------------------------------------------------------------------------ training
class _Recorder(Callback):
    def __init__(self):
        self.events = []
        self.grad_seen = False

    def before_step(self, state):
        self.events.append(("before", state.step))
        self.grad_seen |= any(p.grad is not None for p in state.model.parameters())

    def after_step(self, state):
        self.events.append(("after", state.step))

    def epoch_end(self, state):
        self.events.append(("end", state.epoch))


def _small_loader(n=128, batch=32, seed=0):
    d = load_digits_split()
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(d.x_train[:n], d.y_train[:n]), batch_size=batch,
        shuffle=True, generator=g)


def test_train_calls_the_plug_points_in_order():
    rec = _Recorder()
    model = DigitsMLP()
    model.eval()
    seen = []

    def loss_fn(m, x, y):
        seen.append(len(x))
        return nn.functional.cross_entropy(m(x), y)

    res = train(model, _small_loader(), epochs=2, lr=1e-3, loss_fn=loss_fn, callbacks=[rec])
    assert res.steps == 8 and len(res.epoch_losses) == 2 and seen == [32] * 8
    assert rec.events[:3] == [("before", 0), ("after", 1), ("before", 1)]
    assert [e for e in rec.events if e[0] == "end"] == [("end", 0), ("end", 1)]
    assert rec.grad_seen
    assert not model.training  # previous mode restored


def test_train_lowers_the_loss_and_a_mask_callback_holds():
    """after_step re-applies a pruning mask: the masked weights stay exactly zero."""
    torch.manual_seed(SEED)
    model = DigitsMLP()
    mask = (torch.rand_like(model.fc1.weight) < 0.5).float()

    class Mask(Callback):
        def after_step(self, state):
            with torch.no_grad():
                state.model.fc1.weight.mul_(mask)

    res = train(model, _small_loader(256), epochs=6, lr=3e-3, callbacks=[Mask()])
    assert res.epoch_losses[-1] < res.epoch_losses[0] * 0.5
    assert torch.all(model.fc1.weight[mask == 0] == 0)


def test_train_stops_early_on_request():
    class Stop(Callback):
        def epoch_end(self, state):
            state.stop = state.epoch == 1

    res = train(DigitsMLP(), _small_loader(), epochs=10, lr=1e-3, callbacks=[Stop()])
    assert len(res.epoch_losses) == 2 and res.stopped_early


def test_train_schedule_and_optimizer_instance():
    model = DigitsMLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    lrs = []

    class Lr(Callback):
        def before_step(self, state):
            lrs.append(state.lr)

    train(model, _small_loader(), epochs=2, lr=1.0, optimizer=opt, callbacks=[Lr()])
    steps = 8
    want = [0.05 * 0.5 * (1 + math.cos(math.pi * t / steps)) for t in range(steps)]
    assert lrs == pytest.approx(want)
    lrs.clear()
    train(DigitsMLP(), _small_loader(), epochs=1, lr=0.01, schedule="constant",
          optimizer="sgd", callbacks=[Lr()])
    assert lrs == [0.01] * 4


@pytest.mark.parametrize("kwargs, name, exc", [
    ({"epochs": 0}, "epochs", ValueError),
    ({"lr": -1.0}, "lr", ValueError),
    ({"schedule": "step"}, "schedule", ValueError),
    ({"optimizer": "lion"}, "optimizer", ValueError),
    ({"callbacks": [object()]}, "callbacks", TypeError),
    ({"loss_fn": lambda m, x, y: m(x).sum(dim=1)}, "loss_fn", ValueError),
], ids=["epochs", "lr", "schedule", "optimizer", "callback", "loss_not_scalar"])
def test_train_bad_arguments_are_named(kwargs, name, exc, raises_naming):
    args = {"epochs": 1, "lr": 1e-3, **kwargs}
    with raises_naming(exc, name):
        train(DigitsMLP(), _small_loader(), **args)


def test_cosine_schedule_needs_a_sized_loader(raises_naming):
    batches = list(_small_loader())
    with raises_naming(ValueError, "schedule"):
        train(DigitsMLP(), (b for b in batches), epochs=1, lr=1e-3)
    res = train(DigitsMLP(), (b for b in batches), epochs=1, lr=1e-3, schedule="constant")
    assert res.steps == len(batches)


def test_train_reports_a_non_finite_loss():
    with pytest.raises(FloatingPointError, match="epoch 0, step 0"):
        train(DigitsMLP(), _small_loader(), epochs=1, lr=1e-3,
              loss_fn=lambda m, x, y: m(x).sum() * float("nan"))


def test_deterministic_training_is_bit_exact_and_leaves_global_state():
    def run():
        with deterministic(5):
            model = DigitsCNN(channels=(4, 4, 8))
            train(model, _small_loader(seed=5), epochs=2, lr=3e-3)
        return model.state_dict()

    threads = torch.get_num_threads()
    torch.manual_seed(SEED)
    before = torch.random.get_rng_state()
    a, b = run(), run()
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.get_num_threads() == threads
    assert all(torch.equal(a[k], b[k]) for k in a)
    with deterministic(5, threads=TRAIN_THREADS):
        assert torch.get_num_threads() == TRAIN_THREADS


def test_evaluate_is_accuracy_in_eval_mode():
    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(10)

        def forward(self, x):
            logits = torch.zeros(len(x), 10)
            logits[:, 3] = 1.0
            return logits + 0 * self.bn(logits)

    _, te = digits_loaders()
    model = Constant().train()
    acc = evaluate(model, te)
    want = float((load_digits_split().y_test == 3).float().mean())
    assert acc == pytest.approx(want)
    assert model.training
    assert int(model.bn.num_batches_tracked) == 0  # eval mode: statistics untouched


# ------------------------------------------------------------------------------ registry
@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("lowbit-cache")


@pytest.fixture(scope="session")
def trained(cache):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean first training warns about nothing
        return {name: load_pretrained(name, cache=cache) for name in model_names()}


def test_registry_names():
    assert model_names() == ("digits-cnn", "digits-mlp", "digits-transformer")
    with pytest.raises(ValueError, match="digits-cnn"):
        get_model("resnet18")


@pytest.mark.parametrize("name", list(TARGETS))
def test_pretrained_accuracy_targets(trained, name):
    p = trained[name]
    assert not p.from_cache and p.path is not None and p.path.exists()
    assert p.test_accuracy >= TARGETS[name], f"{name}: {p.test_accuracy:.4f}"
    assert not p.model.training
    assert evaluate(p.model, digits_loaders()[1]) == pytest.approx(p.test_accuracy)


@pytest.mark.parametrize("name", list(TARGETS))
def test_pretrained_reloads_from_the_cache(trained, cache, name):
    again = load_pretrained(name, cache=cache)
    assert again.from_cache and again.path == trained[name].path
    want = trained[name].model.state_dict()
    got = again.model.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert again.model is not trained[name].model
    assert again.path.name == f"{name}-{zoo.definition_hash(zoo.model_spec(name))}.pt"


def test_training_is_reproducible_from_scratch(trained, tmp_path):
    fresh = load_pretrained("digits-mlp", cache=tmp_path)
    want = trained["digits-mlp"].model.state_dict()
    assert all(torch.equal(want[k], v) for k, v in fresh.model.state_dict().items())
    assert fresh.test_accuracy == trained["digits-mlp"].test_accuracy


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_model", "empty"])
def test_a_corrupt_cache_file_is_retrained_with_a_warning(trained, tmp_path, damage):
    good = trained["digits-mlp"].path
    target = tmp_path / good.name
    if damage == "garbage":
        target.write_bytes(b"not a torch file" * 10)
    elif damage == "truncated":
        target.write_bytes(good.read_bytes()[:200])
    elif damage == "other_model":  # a valid file of another model under this name
        target.write_bytes(trained["digits-cnn"].path.read_bytes())
    else:
        target.write_bytes(b"")
    with pytest.warns(RuntimeWarning, match="retraining digits-mlp"):
        p = load_pretrained("digits-mlp", cache=tmp_path)
    assert not p.from_cache and p.test_accuracy == trained["digits-mlp"].test_accuracy
    assert load_pretrained("digits-mlp", cache=tmp_path).from_cache  # repaired
    assert [f.name for f in tmp_path.iterdir()] == [good.name]       # no temp file left


def test_an_unwritable_cache_costs_only_the_caching(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    with pytest.warns(RuntimeWarning, match="could not cache digits-mlp"):
        p = load_pretrained("digits-mlp", cache=blocker / "models")
    assert p.path is None and p.test_accuracy >= TARGETS["digits-mlp"]


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert zoo.cache_dir() == tmp_path / "lowbit" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert zoo.cache_dir() == tmp_path / "home" / ".cache" / "lowbit" / "models"


def test_get_model_uses_the_default_cache(monkeypatch, trained, cache):
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache.parent / "xdg"))
    folder = zoo.cache_dir()
    folder.mkdir(parents=True)
    src = trained["digits-mlp"].path
    (folder / src.name).write_bytes(src.read_bytes())
    model = get_model("digits-mlp")
    want = trained["digits-mlp"].model.state_dict()
    assert all(torch.equal(want[k], v) for k, v in model.state_dict().items())


def test_definition_hash_tracks_the_recipe_and_the_definition():
    spec = zoo.model_spec("digits-cnn")
    h = zoo.definition_hash(spec)
    assert h == zoo.definition_hash(zoo.model_spec("digits-cnn")) and len(h) == 16
    other_recipe = dataclasses.replace(spec, recipe=dataclasses.replace(spec.recipe, epochs=1))
    other_width = dataclasses.replace(spec, kwargs={"channels": (16, 32, 64)})
    other_class = dataclasses.replace(spec, cls=DigitsMLP)
    assert len({h, zoo.definition_hash(other_recipe), zoo.definition_hash(other_width),
                zoo.definition_hash(other_class)}) == 4


def test_untrained_models_are_seeded_and_leave_the_global_rng():
    torch.manual_seed(SEED)
    before = torch.random.get_rng_state()
    a = get_model("digits-transformer", pretrained=False)
    b = get_model("digits-transformer", pretrained=False)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
