"""Consistent distillation: seeded views, the teacher's outputs on K views computed once, the
same view for student and teacher."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml
from torch import nn

from crossdistill.data import ArrayData, Views
from crossdistill.experiments import run_experiment
from crossdistill.experiments.config import load_config
from crossdistill.methods import ConsistentDistillation, consistent_columns, teacher_views
from crossdistill.methods.consistent import INDEX, views_column
from crossdistill.registries import methods
from crossdistill.training import TeacherCache, fit, stacking


def _images(n: int = 40, seed: int = 0) -> ArrayData:
    g = torch.Generator().manual_seed(seed)
    return ArrayData(torch.rand(n, 1, 6, 6, generator=g), torch.arange(n) % 3)


class _Counting(nn.Module):
    """A teacher on 6×6 images that counts the rows it is shown."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(36, 3)
        self.rows = 0

    def forward(self, x):
        self.rows += len(x)
        return self.linear(x.flatten(1))


def _student() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 3))


def test_a_view_depends_only_on_the_seed_the_row_and_the_view():
    data = _images()
    views = Views(count=3, shift=2, flip=True, mixup=0.4, seed=5)
    rows, which = torch.tensor([3, 7, 7]), torch.tensor([1, 1, 2])
    made, partner, weight = views.make(data.x, rows, which)
    torch.testing.assert_close(made[:2], views(data.x, 1)[[3, 7]])
    torch.testing.assert_close(made[2], views(data.x, 2)[7])
    again = views.make(data.x, rows, which)
    torch.testing.assert_close(again[0], made)
    assert partner.equal(again[1]) and weight.equal(again[2]) and weight.max() <= 0.4
    assert not torch.equal(views(data.x, 1), Views(count=3, shift=2, flip=True, seed=6)(data.x, 1))


def test_plain_views_are_the_images_and_shifts_move_them():
    data = _images()
    torch.testing.assert_close(Views(count=2, shift=0)(data.x, 1), data.x)
    dot = torch.zeros(1, 1, 9, 9)
    dot[0, 0, 4, 4] = 1.0
    for view in range(20):
        moved = Views(count=20, shift=2)(dot, view)
        (y, x) = moved[0, 0].nonzero()[0].tolist()
        assert moved.sum() == 1 and abs(y - 4) <= 2 and abs(x - 4) <= 2


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"count": 0}, "count: expected at least 1"),
        ({"count": 2, "shift": -1}, "shift: expected 0 or more"),
        ({"count": 2, "mixup": 1.5}, "mixup: expected a weight in"),
        ({"count": 2.0}, "count: expected a whole number"),
    ],
)
def test_view_settings_are_checked(settings, message):
    with pytest.raises(ValueError, match=message):
        Views(**settings)


def test_the_teacher_sees_each_of_k_views_once():
    data, teacher, cache = _images(), _Counting(), TeacherCache()
    views = Views(count=4, shift=1, seed=2)
    outputs = teacher_views(teacher, lambda x: 1 - x, data.x, views, cache)
    assert outputs.shape == (40, 4, 3)
    assert teacher.rows == 4 * 40 and cache.computed == 4
    again = teacher_views(teacher, lambda x: 1 - x, data.x, views, cache)
    assert teacher.rows == 4 * 40 and cache.computed == 4  # all four reused
    torch.testing.assert_close(again, outputs)


def test_student_and_teacher_see_the_same_view():
    data, teacher = _images(), _Counting()
    phi = lambda x: 1 - x  # noqa: E731
    method = ConsistentDistillation(_student(), views=3, shift=1, flip=True, view_seed=4)
    columns = consistent_columns(data, teacher, phi, method.views)
    seen = []
    method.student.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0].clone()))
    method.before_epoch(columns, epoch=1)
    batch = {name: column[:8] for name, column in columns.items()}
    method.forward_train(batch)
    view = method._view_of[:8]
    expected = teacher(phi(seen[0]))  # the teacher on φ of exactly what the student saw
    found = columns[views_column("teacher")][torch.arange(8), view]
    torch.testing.assert_close(found, expected.detach())


def test_a_resumed_run_draws_the_same_views(tmp_path):
    data = _images()
    columns = consistent_columns(data, _Counting(), None, Views(count=4, shift=1))

    def run(epochs: int, checkpoint):
        method = ConsistentDistillation(_student(), views=4, shift=1, lam=0.3, temperature=2.0)
        return fit(method, columns, epochs=epochs, batch_size=16, checkpoint=checkpoint)

    whole = run(3, None)
    run(1, tmp_path / "c.pt")
    assert run(3, tmp_path / "c.pt") == whole


def test_built_by_name_trains_alone_and_refuses_regression():
    method = methods.build(
        {"name": "consistent_distillation", "views": 2, "mixup": 0.2},
        offer={"lam": 0.5, "temperature": 2.0, "teacher": "t", "task": "classification"},
        student=_student(),
    )
    assert method.columns == ("x", "y", INDEX, "views/t")
    assert stacking([method, copy.deepcopy(method)]) == "apart"
    columns = consistent_columns(_images(), _Counting(), None, method.views, teacher_name="t")
    history = fit(method, columns, epochs=2, batch_size=16)
    assert all(torch.isfinite(torch.tensor(row["train_loss"])) for row in history)
    with pytest.raises(ValueError, match="for classification"):
        ConsistentDistillation(_student(), task="regression")


def test_a_config_arm_trains_on_views_made_for_each_set_of_rows(tmp_path):
    config = {
        "name": "tiny_consistent",
        "data": {"name": "digits", "small": 60, "seed": 0},
        "validation": 20,
        "teachers": {"teacher": {"model": {"name": "mlp", "hidden": [16]}, "train": {"epochs": 2}}},
        "student": {"model": {"name": "mlp", "hidden": [8]}, "train": {"epochs": 2}},
        "seeds": [0],
        "arms": {
            "consistent": {
                "method": {"name": "consistent_distillation", "views": 2, "shift": 1},
                "lam": [0.3, 0.7],
                "temperature": 2,
            }
        },
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    table = run_experiment(load_config(path), tmp_path / "run", progress=False)
    assert {row["metric"] for row in table} >= {"accuracy", "lam", "teacher_accuracy"}
    # one pass on Small, 2 views of the selection's 40 rows, 2 of all 60, one on Test
    assert len(list((tmp_path / "run" / "cache").glob("*.pt"))) == 1 + 2 + 2 + 1
