"""lowbit.nas evaluation: quantization to the candidate's widths, NASWOT, hardware cost, keys,
determinism, export."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from lowbit.compress import profile, to_workload
from lowbit.nas import (EvalSettings, build, evaluate_candidate, evaluation_key, export_model,
                        get_space, load_model, naswot, quantize_candidate, search_data)
from lowbit.nas.proxy import SINGULAR_SCORE
from lowbit.nas.space import Candidate

BITS = get_space("digits-mbv2-bits")


def smallest(space=BITS, flip=()):
    """The smallest candidate; the named layers at the other bit width."""
    cand = space.decode([0] * len(space.axes))
    return Candidate(cand.width, cand.stages,
                     tuple((n, 8 if n in flip else b) for n, b in cand.bits))


def test_naswot_hand_case():
    # codes [1, 0, 1] and [0, 1, 1]: K = [[3, 1], [1, 3]], log det = log 8
    relu = nn.Sequential(nn.ReLU())
    assert naswot(relu, torch.tensor([[1.0, -1.0, 2.0], [-1.0, 1.0, 2.0]])) == \
        pytest.approx(math.log(8.0))
    assert naswot(relu, torch.tensor([[1.0, -1.0], [2.0, -3.0]])) == SINGULAR_SCORE
    with pytest.raises(ValueError, match="no nn.ReLU"):
        naswot(nn.Linear(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="at least 2"):
        naswot(relu, torch.zeros(1, 3))


def test_quantized_model_and_workload_follow_the_bits():
    cand = smallest(flip=("stem",))                       # stem at 8 bits, the rest at 4
    data = search_data()
    torch.manual_seed(0)
    q = quantize_candidate(build(cand, BITS), cand, data.x_train[:64])
    wl = to_workload(q, torch.zeros(1, 1, 8, 8))
    want = {n if n == "head" else f"{n}.conv": b for n, b in cand.bits}
    # the trace names a convolution op "<module>.conv0" (its first call)
    got = {layer.name.removesuffix(".conv0"): (layer.a_bits, layer.w_bits) for layer in wl.layers}
    assert got == {name: (b, b) for name, b in want.items()}
    assert all(hasattr(q.get_submodule(name), "lowbit_storage") for name in want)


def test_proxy_evaluation_is_deterministic_and_consistent():
    cand = smallest(flip=("head",))
    a = evaluate_candidate(cand, BITS, EvalSettings(evaluator="proxy"))
    b = evaluate_candidate(cand, BITS, EvalSettings(evaluator="proxy"))
    strip = lambda e: dataclasses.replace(e, seconds=0.0)  # noqa: E731
    assert strip(a) == strip(b)
    assert a.quality == a.proxy_score and a.val_accuracy is None and a.feasible
    assert a.latency_s > 0 and a.energy_pj > 0 and a.macs > 0
    # params and stored bytes as compress.profile counts them
    torch.manual_seed(0)
    q = quantize_candidate(build(cand, BITS), cand, search_data().x_train[:32])
    p = profile(q, torch.zeros(1, 1, 8, 8))
    assert (a.params, a.weight_bytes) == (p.params, p.bytes)
    roof = evaluate_candidate(cand, BITS, EvalSettings(evaluator="proxy", cost="roofline"))
    assert roof.quality == a.quality and roof.latency_s > 0 and roof.latency_s != a.latency_s


def test_training_evaluation_gives_accuracies():
    cand = get_space("digits-mbv2").decode([0] * 10)
    ev = evaluate_candidate(cand, "digits-mbv2", EvalSettings(epochs=1, qat_epochs=0))
    assert ev.quality == ev.val_accuracy
    assert 0.0 <= ev.val_accuracy <= 1.0 and 0.0 <= ev.test_accuracy <= 1.0
    assert ev.val_accuracy > 0.2    # above chance (0.1) after one epoch
    assert ev.val_accuracy * 300 == pytest.approx(round(ev.val_accuracy * 300))


def test_evaluation_key_tracks_what_changes_the_result():
    cand = smallest()
    base = EvalSettings(evaluator="proxy")
    key = evaluation_key(cand, BITS, base)
    assert key == evaluation_key(cand, BITS, dataclasses.replace(base, epochs=9))   # unused
    for changed in (dataclasses.replace(base, seed=1), dataclasses.replace(base, cost="roofline"),
                    dataclasses.replace(base, profile="tpu-v1"), EvalSettings()):
        assert evaluation_key(cand, BITS, changed) != key
    assert evaluation_key(smallest(flip=("head",)), BITS, base) != key
    train = EvalSettings()
    assert evaluation_key(cand, BITS, train) != evaluation_key(
        cand, BITS, dataclasses.replace(train, qat_epochs=0))


def test_settings_are_validated():
    for kwargs, name in (({"evaluator": "zero"}, "evaluator"), ({"epochs": 0}, "epochs"),
                         ({"lr": 0}, "lr"), ({"cost": "x"}, "cost"), ({"proxy_batch": 1},
                         "proxy_batch"), ({"dataflow": "rs"}, "dataflow"),
                         ({"qat_epochs": -1}, "qat_epochs")):
        with pytest.raises(ValueError, match=f"^{name}:"):
            EvalSettings(**kwargs)


def test_export_and_load_round_trip(tmp_path):
    cand = smallest(BITS, flip=("stem",))
    settings = EvalSettings(epochs=1)
    record = export_model(cand, BITS, tmp_path / "best.pt", settings)
    model, loaded, space = load_model(tmp_path / "best.pt")
    assert loaded == cand and space == BITS
    assert 0.0 <= record["test_accuracy"] <= 1.0
    x = search_data().x_test[:16]
    from lowbit.compress import deterministic
    from lowbit.nas.evaluate import train_float
    with deterministic(settings.seed):
        again = train_float(cand, BITS, settings)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))      # deterministic training, same weights
    (tmp_path / "bad.pt").write_bytes(b"not torch")
    with pytest.raises(Exception):
        load_model(tmp_path / "bad.pt")


def test_a_diverged_training_is_an_infeasible_result():
    cand = get_space("digits-mbv2").decode([0] * 10)
    ev = evaluate_candidate(cand, "digits-mbv2", EvalSettings(epochs=1, lr=1e30, qat_epochs=0))
    assert not ev.feasible and ev.reason.startswith("training diverged: loss is nan")
    assert (ev.quality, ev.latency_s, ev.energy_pj) == (0.0, None, None)
