"""A teacher read from the user's file, and the growth kind's own settings, are checked before the
run directory is claimed: each mistake is one line naming the config field and the file, nothing
is written, and the corrected command into the same ``--out`` runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import crossdistill.data.sources as sources
from crossdistill.cli import main
from crossdistill.experiments import ConfigError
from crossdistill.experiments.config import DataConfig
from crossdistill.experiments.growth import _check_class_order
from crossdistill.models import load_torchscript
from crossdistill.registries import models
from crossdistill.training import predict

DISTILLATION = """
name: tiny_teacher_file
data: {name: digits, small: 120, seed: 0}
validation: 30
teachers:
  teacher: {torchscript: placeholder.pt}
student:
  model: {name: mlp, hidden: [8]}
  train: {epochs: 1, batch_size: 32}
seeds: [0]
arms:
  teacher: {lam: 0.5, temperature: 2}
"""

GROWTH = """
kind: growth
name: tiny_growth_checks
teacher:
  data: {name: digits, small: 200, seed: 0}
  model: {name: mlp, hidden: [8]}
  train: {epochs: 1, batch_size: 64}
student:
  model: {name: mlp, hidden: [16]}
  train: {epochs: 1, batch_size: 64}
arms:
  scratch: {extension: scratch}
  zero: {extension: zero}
seeds: [0]
"""

DIGITS = "{name: digits, small: 200, seed: 0"
"""The start of the growth configs' data spec (a student's data is this plus its classes)."""


class _Linear(nn.Module):
    """8×8 digits → 10 logits, then ``how`` goes wrong."""

    def __init__(self, how: str = "good") -> None:
        super().__init__()
        self.how = how
        self.linear = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        if self.how == "raises on batches" and x.shape[0] > 1:
            raise RuntimeError("this teacher takes one row at a time")
        out = self.linear(x.flatten(1))
        if self.how == "int64":
            return out.long()
        if self.how == "wrong batch size":
            return out[:1]
        if self.how == "nan outputs":
            return out * float("nan")
        return out


class _NoParameters(nn.Module):
    """A teacher without parameters or buffers: logits from the first ten pixels."""

    def forward(self, x: Tensor) -> Tensor:
        return 4.0 * x.flatten(1)[:, :10]


def _torchscript(path: Path, module: nn.Module) -> Path:
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(module), str(path))
    return path


def _state_dict(path: Path, hidden: list[int], poison: str | None = None) -> Path:
    """A state dict of the ``mlp`` spec on digits; ``poison``: the first hidden layer's
    ``weight[0, 0]`` (``"nan"``) or the output bias ``[2]`` (``"inf"``) made non-finite."""
    torch.manual_seed(0)
    state = models.build({"name": "mlp", "hidden": hidden}, in_shape=(1, 8, 8), num_outputs=10)
    state = state.state_dict()
    if poison == "nan":
        state["1.weight"][0, 0] = float("nan")
    if poison == "inf":
        state[f"{2 * len(hidden) + 1}.bias"][2] = float("inf")
    torch.save(state, path)
    return path


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any download attempt fails the test (nothing here has or needs one)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was tried: {args}")

    monkeypatch.setattr(sources.urllib.request, "urlopen", refuse)


def _run(tmp_path: Path, config: str, *overrides: str) -> int:
    path = tmp_path / "config.yaml"
    path.write_text(config)
    return main(["run", str(path), *overrides, "--out", str(tmp_path / "run"), "--quiet"])


def _assert_refused(status: int, error: str, out: Path, *phrases: str) -> None:
    """Exit 2, no traceback, one ``crossdistill: error:`` line holding every phrase (the field
    and the file), and no run directory."""
    assert status == 2, error
    assert "Traceback" not in error, error
    lines = [line for line in error.splitlines() if line.startswith("crossdistill: error:")]
    assert len(lines) == 1, error
    for phrase in phrases:
        assert phrase in lines[0], (phrase, error)
    assert not out.exists()


def _teacher_file(tmp_path: Path, case: str) -> tuple[str, Path]:
    """The ``teachers.teacher`` override of ``case`` and the file it names."""
    if case.startswith("torchscript"):
        how = case.removeprefix("torchscript ")
        module = _Linear(how)
        if how == "nan weights":
            with torch.no_grad():
                module.linear.weight[3, 5] = float("nan")
        file = _torchscript(tmp_path / "teacher.ts", module)
        return f"teachers.teacher={{torchscript: {file}}}", file
    spec = "{name: mlp, hidden: [32]}"
    file = tmp_path / "teacher.pt"
    if case == "checkpoint nan weights":
        _state_dict(file, [32], poison="nan")
    elif case == "checkpoint text file":
        file.write_text("model weights, as text\n")
    elif case == "checkpoint pickled module":
        torch.save(nn.Linear(64, 10), file)
    elif case == "checkpoint of a torchscript file":
        _torchscript(file, _Linear())
    return f"teachers.teacher={{model: {spec}, checkpoint: {file}}}", file


TEACHER_FILES = [
    # (case, a phrase of the message)
    ("torchscript raises on batches", "fails on inputs of shape (8, 1, 8, 8)"),
    ("torchscript int64", "gives torch.int64 outputs"),
    (
        "torchscript wrong batch size",
        "gives outputs (1, 10) for inputs (8, 1, 8, 8), expected (8, 10)",
    ),
    ("torchscript nan outputs", "non-finite outputs"),
    ("torchscript nan weights", "'linear.weight' holds nan at [3, 5]"),
    ("checkpoint nan weights", "'1.weight' holds nan at [0, 0]"),
    ("checkpoint text file", "cannot read it as a model file"),
    ("checkpoint pickled module", "pickled torch.nn.modules.linear.Linear"),
    ("checkpoint of a torchscript file", "TorchScript archive"),
]


@pytest.mark.parametrize(("case", "phrase"), TEACHER_FILES)
def test_a_wrong_teacher_file_is_one_line_before_anything_is_written(
    tmp_path, capsys, case, phrase
) -> None:
    override, file = _teacher_file(tmp_path, case)
    status = _run(tmp_path, DISTILLATION, override)
    error = capsys.readouterr().err
    _assert_refused(status, error, tmp_path / "run", "field 'teachers.teacher'", str(file), phrase)
    assert error.strip().splitlines()[-1].startswith("crossdistill: error:"), error  # one line
    good = _state_dict(tmp_path / "good.pt", [32])
    corrected = f"teachers.teacher={{model: {{name: mlp, hidden: [32]}}, checkpoint: {good}}}"
    assert _run(tmp_path, DISTILLATION, corrected) == 0
    assert (tmp_path / "run" / "table.csv").exists()


def test_a_teacher_without_parameters_runs(tmp_path) -> None:
    file = _torchscript(tmp_path / "teacher.ts", _NoParameters())
    teacher = load_torchscript(file)
    assert not list(teacher.parameters()) and not list(teacher.buffers())
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(predict(teacher, x), 4.0 * x.flatten(1)[:, :10])
    assert _run(tmp_path, DISTILLATION, f"teachers.teacher={{torchscript: {file}}}") == 0
    assert (tmp_path / "run" / "table.csv").exists()


GROWTH_MISTAKES = [
    # (overrides, their correction, the field named, a phrase of the message)
    pytest.param(
        [
            f"teacher.data={DIGITS}, classes: [0, 1, 2]}}",
            f"student.data={DIGITS}, classes: [7, 8, 9]}}",
        ],
        [
            f"teacher.data={DIGITS}, classes: [0, 1, 2]}}",
            f"student.data={DIGITS}, classes: [0, 1, 2, 7]}}",
        ],
        "student.data.classes",
        "expected [0, 1, 2] (field 'teacher.data.classes') first, found [7, 8, 9]",
        id="disjoint classes",
    ),
    pytest.param(
        [f"teacher.data={DIGITS}, classes: [3, 4]}}", f"student.data={DIGITS}}}"],
        [
            f"teacher.data={DIGITS}, classes: [3, 4]}}",
            f"student.data={DIGITS}, classes: [3, 4, 0]}}",
        ],
        "student.data.classes",
        "found [0, 1, …, 9] (the dataset's own labels: field 'student.data' gives no classes)",
        id="only the teacher relabels",
    ),
    pytest.param(
        [f"student.data={DIGITS}, classes: [1, 0, 2, 3, 4, 5, 6, 7, 8, 9]}}"],
        [f"student.data={DIGITS}}}"],
        "student.data.classes",
        "found [1, 0, 2,",
        id="only the student relabels",
    ),
    pytest.param(
        ["arms.zero.noise=0.5"],
        ["arms.zero.noise=0"],
        "arms.zero",
        "only net2net adds noise",
        id="noise without net2net",
    ),
    pytest.param(
        ["student.data={name: mnist_10k, small: 100}"],
        ["student.data=null"],
        "student.data",
        "cannot find dataset folder 'mnist-10k'",
        id="missing dataset without a download",
    ),
    pytest.param(
        ["student.data={name: cifar10, small: 100, folder: nowhere}"],
        ["student.data=null"],
        "student.data",
        "cannot find dataset folder 'nowhere'",
        id="missing dataset folder",
    ),
    pytest.param(
        ["student.data={name: cifar10, small: 100, folder: null}"],
        ["student.data=null"],
        "student.data",
        "folder: expected a folder name",
        id="null dataset folder",
    ),
]


@pytest.mark.parametrize(("overrides", "corrected", "field", "phrase"), GROWTH_MISTAKES)
def test_a_growth_mistake_is_named_before_anything_is_written(
    tmp_path, capsys, overrides, corrected, field, phrase
) -> None:
    status = _run(tmp_path, GROWTH, *overrides)
    error = capsys.readouterr().err
    _assert_refused(status, error, tmp_path / "run", f"field '{field}'")
    assert phrase in error, error
    assert _run(tmp_path, GROWTH, *corrected) == 0
    assert (tmp_path / "run" / "table.csv").exists()


@pytest.mark.parametrize("case", ["torchscript", "nan weights"])
def test_a_wrong_growth_teacher_file_is_named_before_anything_is_written(
    tmp_path, capsys, case
) -> None:
    if case == "torchscript":
        file = _torchscript(tmp_path / "teacher.ts", _Linear())
        override = f"teacher={{data: {DIGITS}}}, torchscript: {file}}}"
        field, phrase = "teacher.torchscript", "a TorchScript teacher cannot be grown"
    else:
        file = _state_dict(tmp_path / "teacher.pt", [8], poison="inf")
        override = (
            f"teacher={{data: {DIGITS}}}, model: {{name: mlp, hidden: [8]}}, checkpoint: {file}}}"
        )
        field, phrase = "teacher", "'3.bias' holds inf at [2]"
    status = _run(tmp_path, GROWTH, override)
    error = capsys.readouterr().err
    _assert_refused(status, error, tmp_path / "run", f"field '{field}'", str(file), phrase)
    good = _state_dict(tmp_path / "good.pt", [8])
    corrected = (
        f"teacher={{data: {DIGITS}}}, model: {{name: mlp, hidden: [8]}}, checkpoint: {good}}}"
    )
    assert _run(tmp_path, GROWTH, corrected) == 0
    assert (tmp_path / "run" / "table.csv").exists()


def test_the_labels_of_two_datasets_are_not_compared() -> None:
    teacher = DataConfig(name="mnist", small=100, classes=[0, 1, 2])
    _check_class_order(
        teacher, DataConfig(name="fashion_mnist", small=100, classes=[7, 8, 9]), 3, 3
    )
    with pytest.raises(ConfigError, match="field 'student.data.classes'"):
        _check_class_order(teacher, DataConfig(name="mnist", small=100, classes=[7, 8, 9]), 3, 3)
