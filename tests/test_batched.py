"""`fit_many`: K runs of one architecture trained as one stacked model agree with K runs of
`fit`, for every model family of the zoo, and resume exactly."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from crossdistill.methods import Distillation, Supervised
from crossdistill.registries import datasets, models
from crossdistill.training import TeacherCache, can_batch, evaluate, fit, fit_many, stacks

SPLITS = datasets.build({"name": "digits", "small": 120, "seed": 0})
SMALL, TEST = SPLITS.small, SPLITS.test
SEEDS = [0, 1, 2]
FAMILIES = {
    "mlp": {"name": "mlp", "hidden": [16]},
    "cnn": {"name": "cnn", "channels": [4, 8], "hidden": 16},
    "cnn_batch_norm": {"name": "cnn", "channels": [4, 8], "hidden": 16, "batch_norm": True},
    "lstm": {"name": "lstm", "hidden": 8},
}
TRAINING = {"epochs": 6, "batch_size": 32, "optimizer": {"name": "adam", "lr": 3e-3}}
SWEEP = [(0.0, 1.0), (0.3, 2.0), (0.6, 3.3), (0.9, 4.0)]
"""(λ, T) of one stack: no labels at all, and 1 − λ (λ = 0.6, 0.9) and T² (T = 3.3) that
float32 arithmetic on λ and T would round differently from Python's."""


def _student(seed: int, spec: dict = FAMILIES["mlp"]) -> nn.Module:
    torch.manual_seed(seed)
    return models.build(spec, in_shape=(1, 8, 8), num_outputs=10)


def _methods(spec: dict, teacher_outputs: torch.Tensor | None = None) -> list:
    if teacher_outputs is None:
        return [Supervised(_student(seed, spec), "classification") for seed in SEEDS]
    return [Distillation(_student(seed, spec), lam=0.3, temperature=2.0) for seed in SEEDS]


def _teacher_columns() -> dict[str, torch.Tensor]:
    """Small's columns and a briefly trained teacher's outputs on them, ``teacher/teacher``."""
    torch.manual_seed(5)
    teacher = models.build({"name": "mlp", "hidden": [32]}, in_shape=(1, 8, 8), num_outputs=10)
    fit(Supervised(teacher), SPLITS.big, epochs=3)
    outputs = TeacherCache().outputs(teacher.eval(), None, SMALL.x)
    return SMALL.columns(**{"teacher/teacher": outputs})


def _validate(model):
    return evaluate(model, TEST, "classification")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_batched_and_separate_training_agree_for_every_model_family(family) -> None:
    spec = FAMILIES[family]
    separate = [
        fit(method, SMALL, seed=seed, validate=_validate, **TRAINING)
        for method, seed in zip(_methods(spec), SEEDS, strict=True)
    ]
    batched = fit_many(_methods(spec), SMALL, seeds=SEEDS, validate=_validate, **TRAINING)
    assert can_batch(_methods(spec)[0]) == (family == "mlp")
    for one, many in zip(separate, batched, strict=True):
        assert len(one) == len(many) == TRAINING["epochs"]
        for key in ("train_loss", "accuracy", "cross_entropy"):
            assert many[-1][key] == pytest.approx(one[-1][key], abs=1e-5), key


def test_batched_distillation_agrees_with_separate_runs() -> None:
    columns = _teacher_columns()
    spec = FAMILIES["mlp"]
    separate = [
        fit(m, columns, seed=s, validate=_validate, **TRAINING)
        for m, s in zip(_methods(spec, columns["teacher/teacher"]), SEEDS, strict=True)
    ]
    methods = _methods(spec, columns["teacher/teacher"])
    batched = fit_many(methods, columns, seeds=SEEDS, validate=_validate, **TRAINING)
    for one, many in zip(separate, batched, strict=True):
        assert set(one[-1]) == set(many[-1])
        for key, value in one[-1].items():
            assert many[-1][key] == pytest.approx(value, abs=1e-5), key
    assert evaluate(methods[1], TEST, "classification") == pytest.approx(
        {k: separate[1][-1][k] for k in ("accuracy", "cross_entropy")}, abs=1e-5
    )


def test_each_method_may_have_its_own_data() -> None:
    parts = [SMALL.subset(torch.arange(k, k + 100)) for k in range(3)]
    spec = FAMILIES["mlp"]
    separate = [
        fit(m, part, seed=s, **TRAINING)
        for m, part, s in zip(_methods(spec), parts, SEEDS, strict=True)
    ]
    batched = fit_many(_methods(spec), parts, seeds=SEEDS, **TRAINING)
    for one, many in zip(separate, batched, strict=True):
        assert many[-1]["train_loss"] == pytest.approx(one[-1]["train_loss"], abs=1e-6)
    with pytest.raises(ValueError, match="same rows"):
        fit_many(_methods(spec), [SMALL, *parts[:2]], seeds=SEEDS, **TRAINING)


def test_interrupted_then_resumed_stack_equals_uninterrupted(tmp_path) -> None:
    spec = FAMILIES["mlp"]
    whole = fit_many(_methods(spec), SMALL, seeds=SEEDS, **TRAINING)
    checkpoint = tmp_path / "stack.pt"
    shorter = TRAINING | {"epochs": 2}
    fit_many(_methods(spec), SMALL, seeds=SEEDS, checkpoint=checkpoint, **shorter)
    assert checkpoint.exists()
    resumed = fit_many(_methods(spec), SMALL, seeds=SEEDS, checkpoint=checkpoint, **TRAINING)
    assert resumed == whole


def test_unbatchable_models_train_one_by_one_with_a_checkpoint_each(tmp_path) -> None:
    checkpoint = tmp_path / "stack.pt"
    fit_many(_methods(FAMILIES["cnn"]), SMALL, seeds=SEEDS, checkpoint=checkpoint, epochs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack-0.pt", "stack-1.pt", "stack-2.pt"]
    with pytest.raises(ValueError, match="one seed and name per method"):
        fit_many(_methods(FAMILIES["mlp"]), SMALL, seeds=[0], epochs=1)
    with pytest.raises(ValueError, match="read column 'teacher/teacher'"):
        distillers = [Distillation(m.student) for m in _methods(FAMILIES["mlp"])]
        fit_many(distillers, SMALL, seeds=SEEDS, epochs=1)


def test_a_stack_of_every_lambda_and_temperature_agrees_with_separate_runs() -> None:
    columns = _teacher_columns()
    seeds = [seed for _ in SWEEP for seed in SEEDS[:2]]

    def sweep() -> list[Distillation]:
        return [
            Distillation(_student(seed), lam=lam, temperature=t)
            for lam, t in SWEEP
            for seed in SEEDS[:2]
        ]

    separate = [
        fit(m, columns, seed=s, validate=_validate, **TRAINING)
        for m, s in zip(sweep(), seeds, strict=True)
    ]
    methods = sweep()
    batched = fit_many(methods, columns, seeds=seeds, validate=_validate, **TRAINING)
    for one, many in zip(separate, batched, strict=True):
        assert set(one[-1]) == set(many[-1])
        for key, value in one[-1].items():
            assert many[-1][key] == pytest.approx(value, abs=1e-5), key
    assert [float(m.lam) for m in methods[::2]] == pytest.approx([lam for lam, _ in SWEEP])
    assert [float(m.temperature) for m in methods[::2]] == pytest.approx([t for _, t in SWEEP])
    student_keys = {f"student.{key}" for key in methods[0].student.state_dict()}
    assert set(methods[0].state_dict()) == student_keys  # λ and T stay out of checkpoints


def test_unlike_methods_are_refused_naming_what_differs_and_grouped_into_stacks() -> None:
    columns = SMALL.columns(**{"teacher/teacher": torch.zeros(len(SMALL), 10)})
    pairs = {
        "the method is a Supervised against a Distillation": (
            Supervised(_student(0)),
            Distillation(_student(1)),
        ),
        "attribute 'columns' of the method is ('x', 'y', 'teacher/teacher') against ('x', 'y')": (
            Distillation(_student(0)),
            Distillation(_student(1), lam=1.0),
        ),
        "attribute 't2_scale' of the method is True against False": (
            Distillation(_student(0)),
            Distillation(_student(1), t2_scale=False),
        ),
        "attribute 'out_features' of submodule 'student.1' is 16 against 8": (
            Distillation(_student(0)),
            Distillation(_student(1, {"name": "mlp", "hidden": [8]})),
        ),
    }
    plain, odd_bias, frozen, extra = (Supervised(_student(seed)) for seed in range(4))
    odd_bias.student[3].bias = nn.Parameter(torch.zeros(3))
    frozen.student[3].weight.requires_grad_(False)
    extra.register_buffer("extra", torch.zeros(1))
    pairs |= {
        "parameter 'student.3.bias' (shape, dtype, trained) is ((10,), ": (plain, odd_bias),
        "torch.float32, True) against ((10, 16), torch.float32, False)": (plain, frozen),
        "buffer 'extra' is in one of them only": (plain, extra),
    }
    for why, pair in pairs.items():
        message = "student b cannot be stacked with student a (vmap runs the first method's"
        with pytest.raises(ValueError, match=re.escape(message) + ".*" + re.escape(why)):
            fit_many(pair, columns, seeds=[0, 1], names=["student a", "student b"], epochs=1)
    mixed = [Distillation(_student(0)), Distillation(_student(0), lam=1.0)]
    mixed += [Distillation(_student(1), lam=0.3), Distillation(_student(1), lam=1.0)]
    assert stacks([*mixed, Supervised(_student(0))]) == [[0, 2], [1, 3], [4]]
