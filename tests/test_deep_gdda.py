"""Deep GDDA: imitation weights refit by the GDDA-SVM's leave-one-out loss inside a student."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from crossdistill.methods import (
    Distillation,
    GDDAClassifier,
    GDDADistillation,
    WeightedDistillation,
)
from crossdistill.registries import methods
from crossdistill.training import fit, fit_many, stacking

CLASSES = 4


def _problem(rows: int = 120, seed: int = 0) -> dict[str, torch.Tensor]:
    """Gaussian classes in 6 dimensions, a teacher that knows the labels (logits 6·one-hot)
    and one that is pure noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(rows) % CLASSES
    means = 2.0 * torch.randn(CLASSES, 6, generator=g)
    x = means[y] + torch.randn(rows, 6, generator=g)
    return {
        "x": x,
        "y": y,
        "teacher/truth": 6.0 * F.one_hot(y, CLASSES).float(),
        "teacher/noise": 3.0 * torch.randn(rows, CLASSES, generator=g),
    }


def _student(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, CLASSES))


def test_frozen_features_give_the_classifiers_weights():
    data = _problem()
    method = GDDADistillation(_student(), teachers=["noise", "truth"], temperature=2.0, C=0.5)
    method.refit(data)
    features = method.student[:2](data["x"]).detach().double().numpy()
    soft = np.stack(
        [F.softmax(data[f"teacher/{t}"].double() / 2.0, 1).numpy() for t in ("noise", "truth")],
        axis=1,
    )
    expected = GDDAClassifier(C=0.5, classes=np.arange(CLASSES)).fit(
        features, data["y"].numpy(), soft
    )
    np.testing.assert_allclose(method.imitation_weights.numpy(), expected.lambda_, atol=1e-6)
    np.testing.assert_allclose(method.features(data["x"]).numpy(), features, atol=1e-6)


def test_a_named_layer_gives_the_same_features_as_the_last_linear_input():
    data = _problem()
    student = _student()
    by_default = GDDADistillation(student, teachers=["truth"])
    named = GDDADistillation(student, teachers=["truth"], layer="1")
    torch.testing.assert_close(by_default.features(data["x"]), named.features(data["x"]))


def test_the_noise_teacher_goes_to_its_lower_bound():
    data = _problem()
    method = GDDADistillation(_student(), teachers=["noise", "truth"])
    history = fit(method, data, epochs=3, batch_size=32)
    for row in history:
        assert row["lambda_noise"] == 0.0
        assert row["lambda_labels"] + row["lambda_truth"] == pytest.approx(1.0, abs=1e-6)
    assert method.weights()["noise"] == 0.0


def test_shared_weights_are_the_classifiers_on_the_mean_soft_label():
    data = _problem()
    method = GDDADistillation(_student(), teachers=["noise", "truth"], shared=True)
    method.refit(data)
    weights = method.imitation_weights.numpy()
    assert weights[1] == pytest.approx(weights[2])
    mean = (
        torch.stack([F.softmax(data[f"teacher/{t}"], 1) for t in ("noise", "truth")], 1)
        .mean(1, keepdim=True)
        .double()
        .numpy()
    )
    features = method.features(data["x"]).double().numpy()
    expected = GDDAClassifier(classes=np.arange(CLASSES)).fit(features, data["y"].numpy(), mean)
    np.testing.assert_allclose(weights[[0]], expected.lambda_[[0]], atol=1e-6)
    np.testing.assert_allclose(weights[1:].sum(), expected.lambda_[1], atol=1e-6)


@pytest.mark.parametrize(
    ("refit_every", "freeze_after", "refitting"),
    [(1, None, [1, 2, 3, 4, 5]), (2, None, [1, 3, 5]), (1, 2, [1, 2]), (2, 4, [1, 3])],
)
def test_refit_schedule(refit_every, freeze_after, refitting):
    method = GDDADistillation(
        _student(), teachers=["truth"], refit_every=refit_every, freeze_after=freeze_after
    )
    history = fit(method, _problem(), epochs=5, batch_size=64)
    assert [row["epoch"] for row in history if row["refit_seconds"] > 0] == refitting


def test_a_resumed_run_keeps_the_frozen_weights(tmp_path):
    data = _problem()

    def run(epochs: int, checkpoint) -> tuple[GDDADistillation, list[dict]]:
        method = GDDADistillation(_student(), teachers=["noise", "truth"], freeze_after=1)
        return method, fit(method, data, epochs=epochs, batch_size=32, checkpoint=checkpoint)

    whole, expected = run(4, None)
    run(2, tmp_path / "c.pt")
    resumed, history = run(4, tmp_path / "c.pt")
    assert [{k: v for k, v in h.items() if k != "refit_seconds"} for h in history] == [
        {k: v for k, v in h.items() if k != "refit_seconds"} for h in expected
    ]
    torch.testing.assert_close(resumed.imitation_weights, whole.imitation_weights)


def test_fixed_weights_with_one_teacher_are_distillation():
    data = _problem()
    data["teacher/teacher"] = data["teacher/noise"]
    weighted = WeightedDistillation(_student(), lam=0.3, temperature=2.0)
    plain = Distillation(_student(), lam=0.3, temperature=2.0)
    _, ours = weighted.forward_train(data)
    _, theirs = plain.forward_train(data)
    torch.testing.assert_close(ours["labels"], theirs["labels"])
    torch.testing.assert_close(ours["teacher_teacher"], theirs["teacher"])


def test_fixed_weights_split_the_teacher_share_and_stack():
    data = _problem()
    built = [
        WeightedDistillation(_student(seed), teachers=["noise", "truth"], lam=lam)
        for seed, lam in [(0, 0.2), (1, 0.6)]
    ]
    assert built[0].weights() == pytest.approx({"labels": 0.2, "noise": 0.4, "truth": 0.4})
    assert stacking(built) == "vmap"
    alone = [
        WeightedDistillation(_student(seed), teachers=["noise", "truth"], lam=lam)
        for seed, lam in [(0, 0.2), (1, 0.6)]
    ]
    stacked = fit_many(built, data, seeds=[0, 1], epochs=2, batch_size=32)
    single = [fit(m, data, epochs=2, batch_size=32, seed=s) for s, m in enumerate(alone)]
    for ours, theirs in zip(stacked, single, strict=True):
        assert ours[-1]["train_loss"] == pytest.approx(theirs[-1]["train_loss"], abs=1e-5)


def test_learned_weights_train_one_run_at_a_time():
    methods = [GDDADistillation(_student(seed), teachers=["truth"]) for seed in (0, 1)]
    assert stacking(methods) == "apart"
    histories = fit_many(
        methods,
        _problem(),
        seeds=[0, 1],
        epochs=1,
        batch_size=64,
    )
    assert all("lambda_truth" in h[0] for h in histories)


def test_built_by_name_with_the_offered_settings():
    method = methods.build(
        {"name": "gdda_distillation", "teachers": ["a", "b"], "freeze_after": 3},
        offer={"lam": 0.5, "temperature": 4.0, "teacher": "a", "task": "classification"},
        student=_student(),
    )
    assert method.columns == ("x", "y", "teacher/a", "teacher/b")
    assert method.freeze_after == 3 and float(method.temperature) == 4.0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"refit_every": 0}, "refit_every: expected at least 1"),
        ({"freeze_after": 1.5}, "freeze_after: expected a whole number"),
        ({"layer": "9"}, "no submodule '9'"),
        ({"C": 0}, "C: expected a positive number"),
        ({"teachers": []}, "at least one teacher"),
        ({"teachers": ["a", "a"]}, "each teacher once"),
        ({"task": "regression"}, "class probabilities"),
        ({"lam": 1.5}, "lam must be in"),
    ],
)
def test_settings_are_checked(settings, message):
    with pytest.raises(ValueError, match=message):
        GDDADistillation(_student(), **settings)
