"""The method contract end to end: a user's own method through fit, a config and the CLI; named
teachers trained once or loaded from files; hooked layers; the cache's key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import crossdistill.training.cache as cache_module
from crossdistill.cli import main
from crossdistill.data import ArrayData
from crossdistill.experiments import run_experiment
from crossdistill.experiments import teachers as teachers_module
from crossdistill.experiments.config import load_config
from crossdistill.experiments.outputs import read_csv
from crossdistill.losses import kd_loss
from crossdistill.methods import (
    Distillation,
    Method,
    Supervised,
    distill,
    feature_column,
    teacher_column,
)
from crossdistill.registries import datasets, methods, models
from crossdistill.training import TeacherCache, capture, fit


class KDHint(Method):
    """KD plus a hint: the student's hidden layer, projected, imitates a teacher layer."""

    def __init__(
        self, student, *, teacher="teacher", temperature=4.0, beta=0.1, layer="2", widths=(16, 64)
    ):
        super().__init__(student)
        self.temperature, self.beta = temperature, beta
        self.columns = ("x", "y", teacher_column(teacher), feature_column(teacher, layer))
        self.project = nn.Linear(*widths)  # trained with the student

    def forward_train(self, batch):
        hidden = self.student[:-1](batch["x"])
        output = self.student[-1](hidden)
        _, _, soft, hint = self.columns
        return output, {
            "labels": F.cross_entropy(output, batch["y"]),
            "teacher": kd_loss(output, batch[soft], self.temperature),
            "hint": self.beta * F.mse_loss(self.project(hidden), batch[hint]),
        }


if "test_kd_hint" not in methods.names():
    methods.register("test_kd_hint")(KDHint)

CONFIG = """
name: tiny_methods
data: {name: digits, small: 120, seed: 0}
validation: 30
teachers:
  teacher:
    model: {name: mlp, hidden: [64]}
    train: {epochs: 3, batch_size: 64, optimizer: {name: adam, lr: 0.003}}
student:
  model: {name: mlp, hidden: [16]}
  train: {epochs: 3, batch_size: 32, optimizer: {name: adam, lr: 0.003}}
seeds: [0]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_a_method_registered_here_runs_through_the_cli(tmp_path, capsys) -> None:
    config = (
        CONFIG
        + """arms:
  no_teacher: {lam: 1.0}
  hint: {lam: 0.5, temperature: [2, 4], method: {name: test_kd_hint, beta: 0.5}}
"""
    )
    out = tmp_path / "run"
    assert main(["run", str(_write(tmp_path, config)), "--out", str(out), "--quiet"]) == 0
    assert "| hint |" in capsys.readouterr().out
    rows = [r for r in read_csv(out / "metrics.csv") if r["arm"] == "hint"]
    assert len(rows) == 3
    assert all(float(r["train_hint"]) > 0 for r in rows)
    total = [float(r[f"train_{k}"]) for r in rows[:1] for k in ("labels", "teacher", "hint")]
    assert float(rows[0]["train_loss"]) == pytest.approx(sum(total), rel=1e-6)
    assert {r["temperature"] for r in read_csv(out / "selection.csv")} == {"2.0", "4.0"}


def test_a_layer_the_teacher_lacks_is_named_before_anything_runs(tmp_path, capsys) -> None:
    config = (
        CONFIG
        + """arms:
  hint: {lam: 0.5, method: {name: test_kd_hint, layer: "7"}}
"""
    )
    out = tmp_path / "run"
    assert main(["run", str(_write(tmp_path, config)), "--out", str(out), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "field 'arms.hint.method': its method reads layer '7' of teacher 'teacher'" in error
    assert "it has 0, 1, 2, 3" in error and not out.exists()


def test_the_readme_method_shape_trains_through_fit() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 10, (40,))
    teacher = models.build({"name": "mlp", "hidden": [64]}, in_shape=(1, 8, 8), num_outputs=10)
    run = TeacherCache().run(teacher, None, x, layers=["2"])
    assert run.outputs.shape == (40, 10) and run.features["2"].shape == (40, 64)
    student = models.build({"name": "mlp", "hidden": [16]}, in_shape=(1, 8, 8), num_outputs=10)
    method = KDHint(student, beta=1.0)
    columns = ArrayData(x, y).columns(
        **{"teacher/teacher": run.outputs, "features/teacher/2": run.features["2"]}
    )
    before = method.project.weight.clone()
    history = fit(method, columns, epochs=2, batch_size=8)
    assert {"train_loss", "train_labels", "train_teacher", "train_hint"} <= set(history[0])
    assert not torch.equal(before, method.project.weight)  # the projection trains too


def test_hooks_capture_named_layers_with_their_shapes() -> None:
    model = models.build(
        {"name": "cnn", "channels": [4, 8], "hidden": 16}, in_shape=(1, 8, 8), num_outputs=3
    )
    names = [name for name, _ in model.named_modules() if name]
    with capture(model, [names[0], names[-1]]) as recorded:
        model(torch.zeros(5, 1, 8, 8))
        model(torch.zeros(2, 1, 8, 8))
    assert [t.shape[0] for t in recorded[names[-1]]] == [5, 2]
    assert recorded[names[-1]][0].shape == (5, 3)
    model(torch.zeros(1, 1, 8, 8))  # hooks removed on exit
    assert len(recorded[names[0]]) == 2
    with pytest.raises(ValueError, match="no submodule 'nope'; it has"), capture(model, ["nope"]):
        pass


def _teacher_file(tmp_path: Path, hidden: list[int]) -> tuple[Path, nn.Module]:
    torch.manual_seed(3)
    teacher = models.build({"name": "mlp", "hidden": hidden}, in_shape=(1, 8, 8), num_outputs=10)
    path = tmp_path / "teacher.pt"
    torch.save(teacher.state_dict(), path)
    return path, teacher


def _checkpoint_config(path: Path, arm: str) -> str:
    """`CONFIG` with its teacher (mlp [32]) read from ``path`` and one arm ``teacher``."""
    return (
        CONFIG.replace(
            "    train: {epochs: 3, batch_size: 64, optimizer: {name: adam, lr: 0.003}}\n",
            f"    checkpoint: {path}\n",
            1,
        ).replace("hidden: [64]", "hidden: [32]", 1)
        + f"arms:\n  teacher: {arm}\n"
    )


def test_a_teacher_from_the_users_checkpoint_is_used_without_training(tmp_path) -> None:
    path, teacher = _teacher_file(tmp_path, [32])
    config = _checkpoint_config(path, "{lam: 0.5, temperature: 2}")
    out = tmp_path / "run"
    table = run_experiment(load_config(_write(tmp_path, config)), out, progress=False)
    assert not (out / "checkpoints" / "teachers").exists()  # never trained
    assert len(read_csv(out / "teacher.csv")) == 1  # its Test metrics, no epochs
    cells = {(r["arm"], r["metric"]): r["mean"] for r in table}
    test = datasets.build({"name": "digits", "small": 120, "seed": 0}).test
    with torch.no_grad():
        expected = (teacher.eval()(test.x).argmax(1) == test.y).float().mean().item()
    assert cells["teacher", "teacher_accuracy"] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("hidden: [32]", "teachers.teacher: .*does not fit the model .*unexpected 5.weight"),
        ("missing", "no such model file|does not point to a file"),
        ("garbage", "cannot read it as a model file"),
    ],
)
def test_a_wrong_teacher_file_is_a_clear_error(tmp_path, capsys, change, message) -> None:
    path, _ = _teacher_file(tmp_path, [32, 32] if change == "hidden: [32]" else [32])
    if change == "missing":
        path = tmp_path / "nothing.pt"
    if change == "garbage":
        path.write_bytes(b"not a torch file")
    config = _checkpoint_config(path, "{lam: 0.5}")
    out = tmp_path / "run"
    assert main(["run", str(_write(tmp_path, config)), "--out", str(out), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert str(path.name) in error
    assert re.search(message, error), error
    assert not out.exists()  # nothing claimed


def test_a_torchscript_teacher_is_loaded_and_its_outputs_checked(tmp_path, capsys) -> None:
    torch.manual_seed(0)
    scripted = torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
    path = tmp_path / "teacher.ts"
    torch.jit.save(scripted, str(path))
    config = (
        CONFIG.replace(
            "    model: {name: mlp, hidden: [64]}\n"
            "    train: {epochs: 3, batch_size: 64, optimizer: {name: adam, lr: 0.003}}\n",
            f"    torchscript: {path}\n",
        )
        + "arms:\n  teacher: {lam: 0.5}\n"
    )
    out = tmp_path / "run"
    assert main(["run", str(_write(tmp_path, config)), "--out", str(out), "--quiet"]) == 0
    assert "| teacher |" in capsys.readouterr().out
    wrong = torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(64, 7)))
    torch.jit.save(wrong, str(path))
    assert (
        main(["run", str(_write(tmp_path, config)), "--out", str(tmp_path / "b"), "--quiet"]) == 2
    )
    error = capsys.readouterr().err
    assert "teacher.ts" in error and "gives outputs (1, 7)" in error and "expected (1, 10)" in error


def test_two_teachers_each_train_once_and_see_the_students_data_once(tmp_path, monkeypatch) -> None:
    trained, passes = [], []
    real_fit, real_pass = teachers_module.fit, cache_module._teacher_pass

    def counting_fit(method, *args, **kwargs):
        if isinstance(method, Supervised):
            trained.append(id(method.student))
        return real_fit(method, *args, **kwargs)

    def counting_pass(teacher, seen, layers, *args, **kwargs):
        passes.append((id(teacher), len(seen)))
        return real_pass(teacher, seen, layers, *args, **kwargs)

    monkeypatch.setattr(teachers_module, "fit", counting_fit)
    monkeypatch.setattr(cache_module, "_teacher_pass", counting_pass)
    config = (
        CONFIG.replace(
            "teachers:\n",
            """teachers:
  wide:
    model: {name: mlp, hidden: [128]}
    train: {epochs: 2, batch_size: 64}
""",
        )
        + """seeds: [0, 1]
arms:
  no_teacher: {lam: 1.0}
  from_wide: {lam: [0.3, 0.7], teacher: wide}
  from_plain: {lam: 0.5, temperature: [1, 4], teacher: teacher}
"""
    )
    config = config.replace("seeds: [0]\n", "")
    run_experiment(load_config(_write(tmp_path, config)), tmp_path / "run", False)
    assert len(trained) == len(set(trained)) == 2
    small_passes = [teacher for teacher, rows in passes if rows == 120]
    assert len(small_passes) == len(set(small_passes)) == 2


def test_cache_keys_on_what_the_teacher_sees(tmp_path) -> None:
    class Shift(nn.Module):  # a user's φ whose setting is a plain attribute
        def __init__(self, k: float) -> None:
            super().__init__()
            self.k = k

        def forward(self, x):
            return x + self.k

    torch.manual_seed(0)
    data = ArrayData(torch.randn(30, 4), torch.randint(0, 3, (30,)))
    teacher = nn.Linear(4, 3)
    cache = TeacherCache(tmp_path)
    one, three = (
        cache.outputs(teacher, Shift(1.0), data.x),
        cache.outputs(teacher, Shift(3.0), data.x),
    )
    assert torch.allclose(three, teacher(data.x + 3.0).detach())
    assert not torch.allclose(one, three)
    assert torch.equal(TeacherCache(tmp_path).outputs(teacher, Shift(3.0), data.x), three)
    # the same through distill: two students of a sweep get their own φ's teacher outputs
    students = []
    for k in (1.0, 3.0):
        torch.manual_seed(1)
        student = nn.Linear(4, 3)
        distill(student, data, teacher=teacher, mapping=Shift(k), lam=0.0, cache=cache, epochs=2)
        students.append(student.weight.detach().clone())
    assert not torch.equal(*students)
    # a plain callable is a valid φ
    assert torch.allclose(cache.outputs(teacher, lambda x: x + 3.0, data.x), three)


def test_distillation_names_its_losses_and_reads_no_teacher_at_lambda_one() -> None:
    assert Distillation(nn.Linear(2, 2), lam=1.0).columns == ("x", "y")
    method = Distillation(nn.Linear(2, 2), lam=0.25, temperature=2.0, teacher="t")
    assert method.columns == ("x", "y", "teacher/t")
    batch = {"x": torch.randn(6, 2), "y": torch.tensor([0, 1] * 3), "teacher/t": torch.randn(6, 2)}
    output, losses = method.forward_train(batch)
    assert torch.allclose(losses["labels"], 0.25 * F.cross_entropy(output, batch["y"]))
    assert torch.allclose(losses["teacher"], 0.75 * kd_loss(output, batch["teacher/t"], 2.0))


def test_an_arm_without_a_teacher_among_several_is_named(tmp_path, capsys) -> None:
    config = (
        CONFIG.replace(
            "teachers:\n",
            "teachers:\n  other:\n    model: {name: mlp, hidden: [8]}\n    train: {epochs: 1}\n",
        )
        + "arms:\n  kd: {lam: 0.5}\n"
    )
    out = tmp_path / "run"
    assert main(["run", str(_write(tmp_path, config)), "--out", str(out), "--quiet"]) == 2
    assert "arm 'kd': its method reads a teacher; name it in the arm's `teacher`" in (
        capsys.readouterr().err
    )
