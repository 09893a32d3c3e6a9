"""Unlabelled target rows: the teacher labels them through φ, the student learns them from the
teacher's term alone, and their true labels are never read."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torch.nn import functional as F

from crossdistill.data import LABELLED, ArrayData, with_unlabelled
from crossdistill.experiments import ConfigError, run_experiment
from crossdistill.experiments.config import load_config
from crossdistill.experiments.distillation import DistillationKind
from crossdistill.experiments.outputs import read_csv
from crossdistill.losses import task_loss
from crossdistill.methods import (
    Distillation,
    GDDAClassifier,
    GDDADistillation,
    Method,
    WeightedDistillation,
    distill,
)
from crossdistill.registries import datasets, methods, models
from crossdistill.training import TeacherCache, fit, fit_many


@datasets.register("test_poisoned_digits")
def _poisoned_digits(*, small: int, seed: int = 0, **settings):
    """The digits with every label of Big moved to the next class (a wrong but valid label)."""
    splits = datasets.build({"name": "digits", "small": small, "seed": seed, **settings})
    big = ArrayData(splits.big.x, (splits.big.y + 1) % 10)
    return dataclasses.replace(splits, big=big)


@methods.register("test_teacher_only")
class _TeacherOnly(Method):
    """Reads a teacher but takes no ``unlabelled`` setting."""

    def __init__(self, student: nn.Module, teacher: str = "teacher") -> None:
        super().__init__(student)
        self.teacher = teacher
        self.columns = ("x", "y", f"teacher/{teacher}")

    def forward_train(self, batch):
        output = self.student(batch["x"])
        return output, {"teacher": F.mse_loss(output, batch[f"teacher/{self.teacher}"])}


def _rows(n: int = 60, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    return 2 * torch.randn(3, 5, generator=g)[y] + torch.randn(n, 5, generator=g), y


def test_the_labels_term_reads_only_labelled_rows():
    output = torch.randn(6, 4)
    target = torch.tensor([0, 1, 2, 3, 1, 2])
    labelled = torch.tensor([True, True, False, True, False, False])
    expected = F.cross_entropy(output[labelled], target[labelled], reduction="sum") / 6
    torch.testing.assert_close(task_loss("classification", output, target, labelled), expected)
    poisoned = torch.where(labelled, target, 999)  # out of range where no label is
    torch.testing.assert_close(task_loss("classification", output, poisoned, labelled), expected)
    value = torch.randn(6, 2)
    regression = ((output[:, :2] - value).pow(2).sum(1) * labelled).sum() / 6
    torch.testing.assert_close(task_loss("regression", output[:, :2], value, labelled), regression)


def test_with_unlabelled_appends_rows_with_a_placeholder_and_a_mask():
    x, y = _rows(10)
    extra = torch.randn(4, 5)
    columns = with_unlabelled(ArrayData(x, y), extra)
    torch.testing.assert_close(columns["x"], torch.cat([x, extra]))
    assert columns["y"][10:].eq(0).all() and columns["y"][:10].equal(y)
    assert columns[LABELLED].tolist() == [True] * 10 + [False] * 4
    with pytest.raises(ValueError, match=r"shaped and typed like the labelled ones, \(U, 5\)"):
        with_unlabelled(ArrayData(x, y), torch.randn(4, 6))


def test_a_fully_labelled_batch_gives_the_same_losses():
    x, y = _rows()
    batch = {
        "x": x,
        "y": y,
        "teacher/teacher": torch.randn(60, 3),
        LABELLED: torch.ones(60, dtype=bool),
    }
    torch.manual_seed(0)
    student = nn.Linear(5, 3)
    _, plain = Distillation(student, lam=0.3, temperature=2.0).forward_train(batch)
    _, masked = Distillation(student, lam=0.3, temperature=2.0, unlabelled=True).forward_train(
        batch
    )
    assert plain.keys() == masked.keys()
    for name in plain:
        torch.testing.assert_close(plain[name], masked[name])


def test_distill_labels_the_unlabelled_rows_once_through_phi():
    x, y = _rows()
    torch.manual_seed(0)
    teacher = nn.Linear(5, 3)
    cache = TeacherCache()
    student = nn.Linear(5, 3)
    history = distill(
        student,
        ArrayData(x[:12], y[:12]),
        teacher=teacher,
        mapping=lambda rows: rows + 1,
        unlabelled=x[12:],
        cache=cache,
        epochs=2,
    )
    assert cache.computed == 1 and len(history) == 2
    with pytest.raises(ValueError, match="unlabelled rows have no privileged inputs"):
        distill(
            student,
            ArrayData(x[:12], y[:12]),
            teacher=teacher,
            privileged=x[:12],
            unlabelled=x[12:],
            epochs=1,
        )


def test_stacked_methods_with_unlabelled_rows_train_as_one_by_one():
    x, y = _rows()
    columns = with_unlabelled(ArrayData(x[:20], y[:20]), x[20:])
    columns |= {"teacher/a": torch.randn(60, 3), "teacher/b": torch.randn(60, 3)}

    def built(seed: int, lam: float) -> WeightedDistillation:
        torch.manual_seed(seed)
        return WeightedDistillation(nn.Linear(5, 3), teachers=["a", "b"], lam=lam, unlabelled=True)

    stacked = fit_many([built(0, 0.2), built(1, 0.7)], columns, seeds=[0, 1], epochs=2)
    alone = [fit(built(s, lam), columns, epochs=2, seed=s) for s, lam in [(0, 0.2), (1, 0.7)]]
    for ours, theirs in zip(stacked, alone, strict=True):
        assert ours[-1]["train_loss"] == pytest.approx(theirs[-1]["train_loss"], abs=1e-5)


def test_learned_weights_treat_unlabelled_rows_as_the_classifier_does():
    x, y = _rows()
    columns = with_unlabelled(ArrayData(x[:20], y[:20]), x[20:])
    columns["teacher/good"] = 5 * F.one_hot(torch.cat([y[:20], y[20:]]), 3).float()
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    method = GDDADistillation(student, teachers=["good"], unlabelled=True)
    method.refit(columns)
    soft = F.softmax(columns["teacher/good"].double(), 1).numpy()[:, None]
    expected = GDDAClassifier(classes=np.arange(3)).fit(
        method.features(columns["x"]).double().numpy(),
        columns["y"].numpy(),
        soft,
        unlabelled=~columns[LABELLED].numpy(),
    )
    np.testing.assert_allclose(method.imitation_weights.numpy(), expected.lambda_, atol=1e-6)


CONFIG = {
    "name": "tiny_unlabelled",
    "data": {"name": "digits", "small": 60, "seed": 0},
    "validation": 20,
    "teachers": {"teacher": {"model": {"name": "mlp", "hidden": [16]}, "checkpoint": "t.pt"}},
    "student": {"model": {"name": "mlp", "hidden": [8]}, "train": {"epochs": 3}},
    "seeds": [0, 1],
    "arms": {
        "no_teacher": {"lam": 1.0},
        "teacher": {"lam": [0.3, 0.7], "temperature": 2, "unlabelled": 400},
    },
}


@pytest.fixture
def teacher_file(tmp_path, monkeypatch):
    """A digits teacher trained on clean labels, saved as a state dict in ``t.pt``."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    teacher = models.build({"name": "mlp", "hidden": [16]}, in_shape=(1, 8, 8), num_outputs=10)
    splits = datasets.build({"name": "digits", "small": 60, "seed": 0})
    from crossdistill.methods import Supervised

    fit(Supervised(teacher), splits.big, epochs=3)
    torch.save(teacher.state_dict(), tmp_path / "t.pt")
    return tmp_path


def _run(folder, changes: dict, out: str):
    path = folder / f"{out}.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, **changes}))
    run_experiment(load_config(path), folder / out, progress=False)
    return read_csv(folder / out / "table.csv")


def _arms(**changes) -> dict:
    """CONFIG's arms with arm ``teacher`` changed by ``changes``."""
    return {"arms": {**CONFIG["arms"], "teacher": {**CONFIG["arms"]["teacher"], **changes}}}


def test_poisoned_labels_of_the_unlabelled_rows_give_the_same_table(teacher_file):
    clean = _run(teacher_file, {}, "clean")
    poisoned = _run(
        teacher_file, {"data": {**CONFIG["data"], "name": "test_poisoned_digits"}}, "poisoned"
    )
    assert clean == poisoned
    cells = {(row["arm"], row["metric"]): row for row in clean}
    assert float(cells["teacher", "unlabelled_rows"]["mean"]) == 400
    assert ("no_teacher", "unlabelled_rows") not in cells  # it reads no teacher: no pool
    without = _run(teacher_file, _arms(unlabelled=0), "without")
    assert without != clean
    saved = yaml.safe_load((teacher_file / "without" / "config.yaml").read_text())
    assert "unlabelled" not in saved["arms"]["teacher"]  # left out at 0: older runs resume
    assert not (teacher_file / "without" / "figures" / "unlabelled.png").exists()


def test_pools_of_arms_are_nested_and_drawn_against_their_size(teacher_file):
    changes = {
        "arms": {
            **CONFIG["arms"],
            **_arms()["arms"],
            "teacher_100": _arms(unlabelled=100)["arms"]["teacher"],
        }
    }
    path = teacher_file / "nested.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, **changes}))
    kind = DistillationKind(load_config(path), teacher_file / "nested", progress=False)
    kind.check()
    assert torch.equal(kind._pool_of("teacher")[:100], kind._pool_of("teacher_100"))
    assert kind._pool_of("no_teacher") is None
    _run(teacher_file, changes, "nested")
    assert (teacher_file / "nested" / "figures" / "unlabelled.png").stat().st_size > 0


def test_unlabelled_rows_are_checked_before_anything_is_written(teacher_file):
    too_many = _arms(unlabelled=10_000)
    pattern = r"field .arms.teacher.unlabelled.*at most 1340 \(the size of Big"
    with pytest.raises(ConfigError, match=pattern):
        _run(teacher_file, too_many, "too_many")
    alone = {"arms": {**CONFIG["arms"], "no_teacher": {"lam": 1.0, "unlabelled": 10}}}
    with pytest.raises(ConfigError, match=r"arms.no_teacher.unlabelled.*reads no teacher"):
        _run(teacher_file, alone, "alone")
    unable = _arms(method="test_teacher_only", lam=0.5)
    with pytest.raises(ConfigError, match="arms.teacher.unlabelled.*cannot learn from 400"):
        _run(teacher_file, unable, "unable")
    for out in ("too_many", "alone", "unable"):
        assert not (teacher_file / out).exists()
