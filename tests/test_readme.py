"""The README's library examples run as written and do what the text says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from crossdistill.training import evaluate

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)


def _run_example(*indices: int) -> dict:
    namespace: dict = {}
    for index in indices:
        exec(compile(_blocks("python")[index], str(README), "exec"), namespace)
    return namespace


def test_readme_python_example_runs() -> None:
    namespace = _run_example(0)
    assert namespace["count_parameters"](namespace["student"]) == 1210
    assert namespace["history"][-1]["accuracy"] > 0.8


def test_readme_own_method_trains_through_fit_with_its_named_losses() -> None:
    namespace = _run_example(0, 1)
    last = namespace["history"][-1]
    assert {"train_labels", "train_teacher", "train_hint"} <= set(last)
    assert last["accuracy"] > 0.8


def test_readme_own_method_runs_from_its_config_through_the_cli(tmp_path) -> None:
    method = _blocks("python")[1].split("# One teacher pass")[0]
    (tmp_path / "my_methods.py").write_text("from torch import nn\n" + method)
    (tmp_path / "hint.yaml").write_text(_blocks("yaml")[0])
    command = _blocks("bash")[[i for i, b in enumerate(_blocks("bash")) if "--import" in b][0]]
    argv = command.split("#")[0].split()[1:]  # run hint.yaml --import my_methods.py
    reduced = ["teachers.teacher.train.epochs=2", "student.train.epochs=2", "seeds=[0]"]
    done = subprocess.run(
        [sys.executable, "-m", "crossdistill.cli", *argv[:2], *reduced, *argv[2:], "--out", "run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "| hint |" in done.stdout
    assert "train_hint" in (tmp_path / "run" / "metrics.csv").read_text()


@pytest.mark.slow
def test_readme_generalized_distillation_example_beats_the_student_alone() -> None:
    namespace = _run_example(2)
    test = namespace["data"].test.regular
    alone = evaluate(namespace["alone"], test, "classification")["accuracy"]
    student = evaluate(namespace["student"], test, "classification")["accuracy"]
    assert student > alone + 0.05


def test_readme_gdda_example_trusts_the_good_teacher() -> None:
    namespace = _run_example(3)
    weights = namespace["model"].lambda_
    assert weights[1] > 0.5 and weights[2] < 0.1


def test_readme_growth_example_keeps_the_teachers_logits() -> None:
    namespace = _run_example(4)
    student, teacher, x = namespace["student"], namespace["teacher"], namespace["x"]
    assert (student(x)[:, :5] - teacher(x)).abs().max() < 1e-5
    assert tuple(namespace["slots"]["1.weight"][0].shape) == (8,)


def test_readme_multiteacher_example_merges_aligns_and_teaches() -> None:
    namespace = _run_example(5)
    soft = namespace["soft"]
    assert soft.shape == (200, 10)
    assert soft.sum(1).sub(1).abs().max() < 1e-5
    assert namespace["latent"].shape == (200, 8)
    last = namespace["history"][-1]
    assert {"train_labels", "train_teachers", "train_latent"} <= set(last)
    assert last["accuracy"] > 0.8
