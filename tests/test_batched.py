"""`fit_many`: K runs of one architecture trained as one stacked model (by stacked layers, or
by vmap) agree with K runs of `fit`, for every model family of the zoo, score Test riding the
stack, and resume exactly, with checkpoints every few epochs or after an interrupt."""

from __future__ import annotations

import itertools
import re
import time

import pytest
import torch
from torch import nn

from crossdistill.methods import Distillation, Supervised
from crossdistill.registries import datasets, models
from crossdistill.training import (
    TeacherCache,
    evaluate,
    fit,
    fit_many,
    metrics,
    stacking,
    stacks,
)
from crossdistill.training.stacked import stackable

SPLITS = datasets.build({"name": "digits", "small": 120, "seed": 0})
SMALL, TEST = SPLITS.small, SPLITS.test
SEEDS = [0, 1, 2]
FAMILIES = {
    "mlp": {"name": "mlp", "hidden": [16]},
    "cnn": {"name": "cnn", "channels": [4, 8], "hidden": 16},
    "cnn_batch_norm": {"name": "cnn", "channels": [4, 8], "hidden": 16, "batch_norm": True},
    "lstm": {"name": "lstm", "hidden": 8},
}
STACKING = {"mlp": "layers", "cnn": "layers", "cnn_batch_norm": "layers", "lstm": "apart"}
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


def _train_mode_metrics(method) -> dict[str, float]:
    """Metrics of ``method`` in training mode (batch norm on the batch's statistics)."""
    method.train()
    with torch.no_grad():
        return metrics(method(TEST.x[:200]), TEST.y[:200], "classification")


def _assert_agree(alone: list, separate: list, together: list, batched: list) -> None:
    """Separate runs (``alone``, their histories ``separate``) and a stack (``together``,
    ``batched``) agree within 1e-5: training loss and Test after every run's last epoch, the
    metrics in training mode, every parameter and buffer (running statistics included)."""
    for one, many in zip(separate, batched, strict=True):
        assert len(one) == len(many) == TRAINING["epochs"]
        for key in ("train_loss", "accuracy", "cross_entropy"):
            assert many[-1][key] == pytest.approx(one[-1][key], abs=1e-5), key
    for one, many in zip(alone, together, strict=True):
        assert _train_mode_metrics(many) == pytest.approx(_train_mode_metrics(one), abs=1e-5)
        for name, value in one.state_dict().items():
            assert torch.allclose(many.state_dict()[name], value, atol=1e-5), name


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_batched_and_separate_training_agree_for_every_model_family(family) -> None:
    """Training losses, Test in eval mode, the metrics in training mode and every parameter
    and running statistic within 1e-5, for every family (batch norm included)."""
    spec = FAMILIES[family]
    alone = _methods(spec)
    separate = [
        fit(method, SMALL, seed=seed, validate=_validate, **TRAINING)
        for method, seed in zip(alone, SEEDS, strict=True)
    ]
    together = _methods(spec)
    assert stacking(together) == STACKING[family]
    batched = fit_many(together, SMALL, seeds=SEEDS, validate=_validate, **TRAINING)
    _assert_agree(alone, separate, together, batched)


def test_a_bias_right_before_a_batch_norm_is_left_out_of_the_zoos_cnn() -> None:
    """Its gradient would be zero up to rounding, which differs between any two ways of
    summing; Adam would turn it into steps of lr size that the running means follow, and
    stacked and separate runs would part by ~1e-3 on Test in eval mode."""
    layers = list(models.build(FAMILIES["cnn_batch_norm"], in_shape=(1, 8, 8), num_outputs=10))
    before = [a for a, b in itertools.pairwise(layers) if isinstance(b, nn.BatchNorm2d)]
    assert len(before) == 2 and all(layer.bias is None for layer in before)


def test_batch_norm_after_convolutions_and_linear_layers_stacks_exactly() -> None:
    """Batch norm after convolutions (2d) and after a Linear layer (1d): Test in eval mode,
    the metrics in training mode and the running statistics agree."""

    def method(seed: int) -> Supervised:
        torch.manual_seed(seed)
        layers = [nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU()]
        layers += [nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)]
        layers += [nn.ReLU(), nn.Flatten(), nn.Linear(96, 12, bias=False), nn.BatchNorm1d(12)]
        return Supervised(nn.Sequential(*layers, nn.Tanh(), nn.Linear(12, 10)))

    alone = [method(s) for s in SEEDS]
    separate = [
        fit(m, SMALL, seed=s, validate=_validate, **TRAINING)
        for m, s in zip(alone, SEEDS, strict=True)
    ]
    together = [method(s) for s in SEEDS]
    assert stacking(together) == "layers"
    batched = fit_many(together, SMALL, seeds=SEEDS, validate=_validate, **TRAINING)
    _assert_agree(alone, separate, together, batched)


def test_methods_that_do_not_stack_by_layers_stack_by_vmap() -> None:
    alone, together = _methods(FAMILIES["mlp"]), _methods(FAMILIES["mlp"])
    for method in together:
        method.stacks_layers = False
    assert stacking(together) == "vmap"
    separate = [fit(m, SMALL, seed=s, **TRAINING) for m, s in zip(alone, SEEDS, strict=True)]
    batched = fit_many(together, SMALL, seeds=SEEDS, score=TEST, **TRAINING)
    for one, many, method in zip(separate, batched, together, strict=True):
        assert many[-1]["train_loss"] == pytest.approx(one[-1]["train_loss"], abs=1e-5)
        assert {k: many[-1][k] for k in ("accuracy", "cross_entropy")} == pytest.approx(
            evaluate(method, TEST, "classification"), abs=1e-6
        )


@pytest.mark.parametrize("family", ["mlp", "cnn_batch_norm", "lstm"])
def test_test_scores_ride_the_stack(family) -> None:
    """``score`` gives every epoch the metrics `evaluate` gives, from stacked passes."""
    spec = FAMILIES[family]
    short = TRAINING | {"epochs": 2}
    scored = fit_many(_methods(spec), SMALL, seeds=SEEDS, score=TEST, **short)
    validated = fit_many(_methods(spec), SMALL, seeds=SEEDS, validate=_validate, **short)
    for ours, theirs in zip(scored, validated, strict=True):
        for one, other in zip(ours, theirs, strict=True):
            assert one == pytest.approx(other, abs=1e-6)


@pytest.mark.parametrize("family", ["mlp", "lstm"])
def test_timed_adds_each_models_share_of_the_epochs_training_time(family) -> None:
    """``timed``: ``epoch_seconds`` joins every epoch's metrics, stacked as the stack's time
    split evenly among its models; the rest of the history is unchanged."""
    spec, short = FAMILIES[family], TRAINING | {"epochs": 2}
    began = time.perf_counter()
    timed = fit_many(_methods(spec), SMALL, seeds=SEEDS, score=TEST, timed=True, **short)
    took = time.perf_counter() - began
    plain = fit_many(_methods(spec), SMALL, seeds=SEEDS, score=TEST, **short)
    seconds = [[epoch.pop("epoch_seconds") for epoch in history] for history in timed]
    assert timed == plain
    assert all(s > 0 for history in seconds for s in history)
    assert sum(map(sum, seconds)) < took  # training only, not the scoring
    if STACKING[family] == "layers":
        assert all(len(set(epoch)) == 1 for epoch in zip(*seconds, strict=True))


def test_stackable_covers_the_zoo_but_lstms_dropout_and_modules_of_their_own() -> None:
    build = {k: models.build(v, in_shape=(1, 8, 8), num_outputs=10) for k, v in FAMILIES.items()}
    assert {k: stackable([m, m]) for k, m in build.items()} == {
        k: v == "layers" for k, v in STACKING.items()
    }
    assert not stackable([nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))])
    assert not stackable([nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"))])
    assert not stackable([nn.BatchNorm2d(2, momentum=None)])
    assert stackable([nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Tanh())])
    assert not stackable([nn.Sequential(nn.Linear(4, 3)), nn.Sequential(nn.Linear(4, 2))])


def test_a_method_that_breaks_the_stacked_layers_rule_is_named() -> None:
    class Scalar(Supervised):
        stacks_layers = True

        def forward_train(self, batch):
            output = self.student(batch["x"])
            return output, {"labels": output.logsumexp(-1).mean()}

    methods = [Scalar(_student(seed)) for seed in SEEDS]
    with pytest.raises(ValueError, match=r"Scalar says it stacks by layers, but its loss 'labels'"):
        fit_many(methods, SMALL, seeds=SEEDS, epochs=1)


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


class _Interrupt:
    """A ``validate`` that presses Ctrl-C in the ``at``-th epoch (counting every call)."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def __call__(self, model) -> dict[str, float]:
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return {}


@pytest.mark.parametrize("way", ["layers", "vmap", "fit"])
@pytest.mark.parametrize("every", [None, 2, 4])
def test_checkpoints_every_few_epochs_or_on_interrupt_resume_exactly(tmp_path, way, every):
    """Ctrl-C in epoch 5: the checkpoint holds epoch 4 (written at 2 and 4, or on the
    interrupt), and the resumed run equals an uninterrupted one."""

    def methods() -> list:
        made = _methods(FAMILIES["cnn_batch_norm" if way == "layers" else "mlp"])
        for method in made:
            method.stacks_layers = way == "layers"
        return made

    def train(validate=None, checkpoint=None) -> list:
        if way == "fit":
            method = methods()[0]
            return [fit(method, SMALL, validate=validate, checkpoint=checkpoint, **settings)]
        return fit_many(
            methods(), SMALL, seeds=SEEDS, validate=validate, checkpoint=checkpoint, **settings
        )

    settings = TRAINING | {"checkpoint_every": every}
    whole = train()
    checkpoint = tmp_path / "run.pt"
    interrupt = _Interrupt(at=5 if way == "fit" else 4 * len(SEEDS) + 1)
    with pytest.raises(KeyboardInterrupt):
        train(interrupt, checkpoint)
    state = torch.load(checkpoint, weights_only=True)
    done = state["history"] if way == "fit" else state["histories"][0]
    assert len(done) == 4
    resumed = train(lambda model: {}, checkpoint)
    assert resumed == whole


def test_checkpoint_every_is_checked() -> None:
    for wrong in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="checkpoint_every: expected a positive integer"):
            fit(_methods(FAMILIES["mlp"])[0], SMALL, epochs=1, checkpoint_every=wrong)


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
        message = "student b cannot be stacked with student a (the stack runs the first method's"
        with pytest.raises(ValueError, match=re.escape(message) + ".*" + re.escape(why)):
            fit_many(pair, columns, seeds=[0, 1], names=["student a", "student b"], epochs=1)
    mixed = [Distillation(_student(0)), Distillation(_student(0), lam=1.0)]
    mixed += [Distillation(_student(1), lam=0.3), Distillation(_student(1), lam=1.0)]
    assert stacks([*mixed, Supervised(_student(0))]) == [[0, 2], [1, 3], [4]]
