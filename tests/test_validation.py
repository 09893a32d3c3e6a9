"""No silent wrong results: every bad input is refused by field before anything is written, the
run directory is tied to its inputs, a diverging loss stops the run, damaged files the library
wrote are rebuilt, and the command line never shows a traceback for a user's mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from crossdistill.cli import main
from crossdistill.data import ArrayData, DomainSplits
from crossdistill.experiments import ConfigError, load_config, run_experiment
from crossdistill.methods import Supervised
from crossdistill.registries import datasets, models
from crossdistill.training import TrainingDiverged, fit

TINY = """
name: tiny
data: {name: digits, small: 120, seed: 0}
validation: 30
teachers:
  teacher:
    model: {name: mlp, hidden: [32]}
    train: {epochs: 2, batch_size: 64}
student:
  model: {name: mlp, hidden: [8]}
  train: {epochs: 2, batch_size: 32}
seeds: [0]
arms:
  no_teacher: {lam: 1.0}
  teacher: {lam: [0.3, 0.7], temperature: 2}
"""


def _write(tmp_path: Path, text: str = TINY, name: str = "tiny.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@models.register("test_ten_outputs")
def _ten_outputs(in_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """A model that ignores ``num_outputs`` (always 7 logits) — a user's model gone wrong."""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(in_shape).prod()), 7))


@datasets.register("test_tensor_file")
def _tensor_file(*, path: str, small: int, seed: int = 0, **_) -> DomainSplits:
    """Big / Small / Test from ``torch.save({"x": …, "y": …})`` at ``path`` (a user's file)."""
    saved = torch.load(path)
    data = ArrayData(saved["x"], saved["y"])
    test = data.subset(torch.arange(90, 120))
    if "test_x" in saved:  # a Test file of other inputs
        test = ArrayData(saved["test_x"], test.y)
    return DomainSplits(
        big=data.subset(torch.arange(small, 90)),
        small=data.subset(torch.arange(small)),
        test=test,
        num_classes=3,
    )


BAD_SETTINGS = [
    # (override, the field named, a phrase of the message)
    ("student.train.optimizer.lr=1e-3", "student.train.optimizer", "write 0.001"),
    ("student.train.optimizer.lr=-1", "student.train.optimizer", "Invalid learning rate"),
    ("student.train.optimizer.momentum=0.9", "student.train.optimizer", "no setting 'momentum'"),
    ("student.train.optimizer.name=adamx", "student.train.optimizer", "found 'adamx'"),
    ("student.model={name: mlp, hidden: [-3]}", "student.model", "found [-3]"),
    ("student.model={name: cnn, channels: [0]}", "student.model", "found [0]"),
    ("student.model={name: mlp, hidden: [8], num_outputs: 4}", "student.model", "num_outputs"),
    ("student.model={name: test_ten_outputs}", "student.model", "expected (1, 10)"),
    ("teachers.teacher.model={name: test_ten_outputs}", "teachers.teacher.model", "(1, 10)"),
    ("arms.teacher.temperature=.nan", "arms.teacher.temperature", "finite"),
    ("arms.teacher.temperature=.inf", "arms.teacher.temperature", "finite"),
    ("arms.teacher.temperature=-2", "arms.teacher.temperature", "positive"),
    ("arms.teacher.temperature=1.0e+308", "arms.teacher.temperature", "finite square"),
    ("arms.teacher.lam=[]", "arms.teacher.lam", "at least 1"),
    ("arms.teacher.lam=[0.5, 1.5]", "arms.teacher.lam", "[0, 1]"),
    ("validation=120", "validation", "fewer than 120"),
    ("device=cuda:7", "device", "it has cpu"),
    ("device=tpu9", "device", "found 'tpu9'"),
    ("seeds=[0,", "seeds=[0,", "not valid YAML"),
    ("seeds=[0, 0]", "seeds", "0 repeated"),
    ("seeds=[99999999999999999999]", "seeds.0", "less than"),
    ("seeds=[-1]", "seeds.0", "greater than or equal to 0"),
    ("student.model={name: [mlp]}", "student.model", "'name' must be a string"),
    ("student.model={name: {a: 1}}", "student.model", "'name' must be a string"),
    ("kind=[1]", "kind", "expected one of"),
    ("teachers.teacher.data={name: diabetes, small: 100}", "teachers.teacher.data", "float"),
    ("arms.teacher.mapping={name: gaussian_noise, variance: -1}", "arms.teacher.mapping", ">= 0"),
    ("arms.teacher.mapping={name: resize, size: [4, 4]}", "arms.teacher.mapping", "(1, 1, 4, 4)"),
    ("arms.teacher.teacher=other", "arms.teacher.teacher", "names teacher 'other'"),
    ("data.small=5000", "data", "small must be between"),
    # a bool is never a number, text never a number, a float never an int
    ("student.train.batch_size=true", "student.train.batch_size", "found True"),
    ("student.train.epochs=2.0", "student.train.epochs", "found 2.0"),
    ("seeds=[false, true]", "seeds.0", "found False"),
    ("data.classes=[true, false, 2]", "data.classes.0", "found True"),
    ("arms.teacher.lam=[true]", "arms.teacher.lam", "found [True]"),
    ("arms.teacher.lam=1e-3", "arms.teacher.lam", "write 0.001"),
    ("validation=false", "validation", "found False"),
    ("batched=1", "batched", "found 1"),
    ("data.small=true", "data", "'small' expects a number, found True"),
    ("student.model={name: mlp, hidden: [true]}", "student.model", "found [True]"),
    ("arms.teacher.mapping={name: gaussian_noise, variance: true}", "arms.teacher.mapping", "True"),
    ("student.train.optimizer.betas=[true, 0.9]", "student.train.optimizer", "2 finite numbers"),
    # every name becomes a file name of its own
    ("arms={'a': {lam: 1.0}, 'A': {lam: 1.0}}", "arms.A", "differ only in letter case"),
    ("arms={'': {lam: 1.0}}", "arms", "a visible character, found ''"),
    ("arms={'x': {lam: 1.0}, '  ': {lam: 1.0}}", "arms", "found '  '"),
    (f"arms={{{'x' * 101}: {{lam: 1.0}}}}", "arms.xxxxxxxxxxxxxxxxxxxx…", "takes 101"),
    (
        "teachers={'T': {model: {name: mlp}, train: {epochs: 1}}, 't': {model: {name: mlp}, "
        "train: {epochs: 1}}}",
        "teachers.t",
        "differ only in letter case",
    ),
]


@pytest.mark.parametrize(("override", "field", "phrase"), BAD_SETTINGS)
def test_a_bad_setting_names_its_field_and_writes_nothing(
    tmp_path, capsys, override, field, phrase
) -> None:
    out = tmp_path / "run"
    status = main(["run", str(_write(tmp_path)), override, "--out", str(out), "--quiet"])
    error = capsys.readouterr().err
    assert status == 2
    assert "Traceback" not in error
    assert f"'{field}'" in error, error
    assert phrase in error, error
    assert not out.exists()


def test_a_refused_run_leaves_the_directory_free_for_the_corrected_command(tmp_path) -> None:
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                str(_write(tmp_path)),
                "student.train.optimizer.name=adamx",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 2
    )
    assert main(["run", str(_write(tmp_path)), "--out", str(out), "--quiet"]) == 0
    assert (out / "table.csv").exists()


@pytest.mark.parametrize("poison", ["label", "test shape"])
def test_poisoned_data_is_refused_before_anything_is_written(tmp_path, poison) -> None:
    x, y = torch.rand(120, 4), torch.arange(120) % 3
    if poison == "label":
        y[17] = 200
    saved = {"x": x, "y": y}
    if poison == "test shape":  # the last 30 rows (Test) as 5 features, Train as 4
        saved = {"x": x, "y": y, "test_x": torch.rand(30, 5)}
    torch.save(saved, tmp_path / "data.pt")
    config = TINY.replace(
        "data: {name: digits, small: 120, seed: 0}",
        f"data: {{name: test_tensor_file, path: {tmp_path / 'data.pt'}, small: 60}}",
    ).replace("validation: 30", "validation: 20")
    out = tmp_path / "run"
    found = "200 at row 17" if poison == "label" else r"Test inputs are float32 \(N, 5\)"
    with pytest.raises(ConfigError, match=rf"field 'data'.*{found}"):
        run_experiment(load_config(_write(tmp_path, config)), out, progress=False)
    assert not out.exists()


def test_changed_data_behind_a_finished_run_is_refused_naming_it(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(120, 4, generator=g), torch.arange(120) % 3
    torch.save({"x": x, "y": y}, tmp_path / "data.pt")
    config = (
        TINY.replace("data: {name: test_tensor_file, small: 120}", "")
        .replace(
            "data: {name: digits, small: 120, seed: 0}",
            f"data: {{name: test_tensor_file, path: {tmp_path / 'data.pt'}, small: 60}}",
        )
        .replace("validation: 30", "validation: 20")
    )
    out = tmp_path / "run"
    first = run_experiment(load_config(_write(tmp_path, config)), out, progress=False)
    assert run_experiment(load_config(_write(tmp_path, config)), out, progress=False) == first
    x[5, 0] += 0.5  # one value of the user's file changes
    torch.save({"x": x, "y": y}, tmp_path / "data.pt")
    with pytest.raises(FileExistsError, match=r"other inputs: data changed"):
        run_experiment(load_config(_write(tmp_path, config)), out, progress=False)


def test_a_run_directory_without_a_record_of_its_inputs_is_not_reused(tmp_path) -> None:
    out = tmp_path / "run"
    run_experiment(load_config(_write(tmp_path)), out, progress=False)
    (out / "inputs.json").unlink()
    with pytest.raises(FileExistsError, match="no record of the data"):
        run_experiment(load_config(_write(tmp_path)), out, progress=False)


def test_a_diverging_student_stops_the_run_naming_arm_seed_and_epoch(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    status = main(
        [
            "run",
            str(_write(tmp_path)),
            "student.train.optimizer.lr=1.0e+6",
            "seeds=[3]",
            "arms={no_teacher: {lam: 1.0}}",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    error = capsys.readouterr().err
    assert status == 2 and "Traceback" not in error
    assert "student of arm 'no_teacher', seed 3: training diverged at epoch 1" in error, error
    assert not (out / "table.csv").exists()


def test_a_nan_teacher_stops_the_run_naming_it(tmp_path, capsys) -> None:
    teacher = models.build({"name": "mlp", "hidden": [32]}, in_shape=(1, 8, 8), num_outputs=10)
    state = teacher.state_dict()
    state["1.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "teacher.pt")
    config = TINY.replace(
        "    train: {epochs: 2, batch_size: 64}", f"    checkpoint: {tmp_path / 'teacher.pt'}", 1
    )
    out = tmp_path / "run"
    assert main(["run", str(_write(tmp_path, config)), "--out", str(out), "--quiet"]) == 2
    error = capsys.readouterr().err  # found in the teacher's file, before anything is written
    assert "field 'teachers.teacher'" in error and "'1.weight' holds nan at [0, 0]" in error, error
    assert not out.exists()


def test_fit_stops_at_the_first_non_finite_epoch_and_keeps_the_last_good_checkpoint(
    tmp_path,
) -> None:
    x, y = torch.rand(64, 3), torch.arange(64) % 2
    model = nn.Linear(3, 2)
    history = fit(Supervised(model), ArrayData(x, y), epochs=2, checkpoint=tmp_path / "c.pt")
    x[5, 1] = float("inf")  # one bad input row from epoch 3 on
    with pytest.raises(TrainingDiverged, match="my model: training diverged at epoch 3"):
        fit(
            Supervised(model),
            ArrayData(x, y),
            epochs=3,
            checkpoint=tmp_path / "c.pt",
            name="my model",
        )
    assert len(torch.load(tmp_path / "c.pt", weights_only=True)["history"]) == len(history)


def test_a_finished_run_reruns_without_writing_a_file(tmp_path) -> None:
    out = tmp_path / "run"
    table = run_experiment(load_config(_write(tmp_path)), out, progress=False)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    assert run_experiment(load_config(_write(tmp_path)), out, progress=False) == table
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_damaged_checkpoints_cache_and_units_are_rebuilt_to_the_same_table(tmp_path) -> None:
    out = tmp_path / "run"
    table = run_experiment(load_config(_write(tmp_path)), out, progress=False)
    damaged = [
        out / "units" / "teacher.json",
        next((out / "cache").glob("*.pt")),
        next((out / "checkpoints").glob("teacher-seeds*.pt")),
        out / "checkpoints" / "teachers" / "teacher.pt",
    ]
    for path in damaged:
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.warns(UserWarning, match="unreadable") as warned:
        assert run_experiment(load_config(_write(tmp_path)), out, progress=False) == table
    named = " ".join(str(w.message) for w in warned)
    assert all(str(path) in named for path in damaged), named


def test_ctrl_c_prints_one_line_saying_what_was_kept(tmp_path, capsys, monkeypatch) -> None:
    def interrupted(config, out, progress):
        Path(out).mkdir(parents=True)
        raise KeyboardInterrupt

    # the command imports run_experiment from crossdistill.experiments when `run` starts
    monkeypatch.setattr("crossdistill.experiments.run_experiment", interrupted)
    out = tmp_path / "run"
    assert main(["run", str(_write(tmp_path)), "--out", str(out), "--quiet"]) == 130
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1] == (
        f"crossdistill: interrupted; every finished unit and epoch is kept in {out}; rerun the "
        "same command to resume"
    )
    assert not any("Traceback" in line for line in error)


def test_an_unwritable_output_directory_is_a_named_error(tmp_path, capsys) -> None:
    (tmp_path / "file").write_text("not a directory")
    out = tmp_path / "file" / "run"
    assert main(["run", str(_write(tmp_path)), "--out", str(out), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error and str(tmp_path / "file") in error, error


def test_overrides_may_follow_the_options(tmp_path) -> None:
    out = tmp_path / "run"
    assert main(["run", str(_write(tmp_path)), "--out", str(out), "--quiet", "seeds=[4]"]) == 0
    assert "- 4" in (out / "config.yaml").read_text()
