"""The README's library examples run as written and do what the text says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crossdistill.training import evaluate

README = Path(__file__).resolve().parents[1] / "README.md"


def _run_example(index: int) -> dict:
    code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[index]
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    return namespace


def test_readme_python_example_runs() -> None:
    namespace = _run_example(0)
    assert namespace["count_parameters"](namespace["student"]) == 1210
    assert namespace["history"][-1]["accuracy"] > 0.8


@pytest.mark.slow
def test_readme_generalized_distillation_example_beats_the_student_alone() -> None:
    namespace = _run_example(1)
    test = namespace["data"].test.regular
    alone = evaluate(namespace["alone"], test, "classification")["accuracy"]
    student = evaluate(namespace["student"], test, "classification")["accuracy"]
    assert student > alone + 0.05


def test_readme_gdda_example_trusts_the_good_teacher() -> None:
    namespace = _run_example(2)
    weights = namespace["model"].lambda_
    assert weights[1] > 0.5 and weights[2] < 0.1
