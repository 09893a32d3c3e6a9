"""The command line and a user's own code: a failing ``--import``, an impossible ``--processes``
and a process of a run that dies each end in one line naming the file or the rank, never a
traceback; messages quote short."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from crossdistill.cli import main
from crossdistill.experiments import ConfigError, load_config
from crossdistill.experiments.config import FOUND_CHARS

TINY = [
    "digits",
    "data.small=120",
    "validation=30",
    "teachers.teacher.train.epochs=1",
    "student.train.epochs=2",
    "seeds=[0]",
    "--quiet",
]

IMPORTS = [
    # (the file's code, what the one line says)
    ('x = 1\nraise RuntimeError("boom\\nsecond line")\n', "line 2: RuntimeError: boom"),
    ('settings = {}\nsettings["missing"]\n', "line 2: KeyError: 'missing'"),
    ("def broken(:\n", "line 1: SyntaxError: invalid syntax"),
    ("import sys\nsys.exit(3)\n", "it called sys.exit(3)"),
    ("import no_such_module_here\n", "line 1: ModuleNotFoundError: No module named"),
]


@pytest.mark.parametrize(("code", "said"), IMPORTS)
def test_a_failing_import_is_one_line_naming_the_file(tmp_path, capsys, code, said) -> None:
    plugin, out = tmp_path / "plugin.py", tmp_path / "run"
    plugin.write_text(code)
    assert main(["run", *TINY, "--import", str(plugin), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error, error
    assert error.startswith(f"crossdistill: error: --import {plugin}: {said}"), error
    assert not out.exists()
    plugin.write_text("VALUE = 1\n")  # the corrected file
    assert main(["run", *TINY, "--import", str(plugin), "--out", str(out)]) == 0


def test_a_missing_import_names_it(tmp_path, capsys) -> None:
    assert main(["run", *TINY, "--import", str(tmp_path / "nope.py")]) == 2
    assert f"--import {tmp_path / 'nope.py'}: no such file" in capsys.readouterr().err


def test_more_processes_than_cores_are_refused(tmp_path, capsys) -> None:
    cores = len(os.sched_getaffinity(0))
    out = tmp_path / "run"
    assert main(["run", *TINY, "--processes", str(cores + 1), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert f"{cores + 1} processes on this machine need as many CPU cores; it has {cores}" in error
    assert "Traceback" not in error and not out.exists()


def test_a_refused_value_is_quoted_short() -> None:
    """A problem found by a check over a whole config names the field and what it found, and
    never dumps the config into the message."""
    with pytest.raises(ConfigError) as raised:
        load_config("digits", ["arms.teacher.teacher=nobody"])
    assert str(raised.value).endswith(
        "field 'arms.teacher.teacher': names teacher 'nobody'; field 'teachers' has teacher"
    )
    with pytest.raises(ConfigError) as raised:
        load_config("digits", ["student.train.optimizer=" + "x" * 500])
    assert str(raised.value).endswith(f"(found '{'x' * (FOUND_CHARS - 2)}…)"), str(raised.value)


def test_a_teacher_listed_twice_names_the_arm_field() -> None:
    with pytest.raises(ConfigError, match="field 'arms.multi_teacher_avg.teachers': each value"):
        load_config("multiteacher_fmnist", ["arms.multi_teacher_avg.teachers=[first7,first7]"])


def test_a_bool_is_not_a_number_of_the_gdda_classifier() -> None:
    with pytest.raises(ConfigError, match="field 'classifier': C must be a number, got True"):
        load_config("digits_multisource", ["classifier.C=true"])


KILLER = '''
import os
import signal

from torch import nn

from crossdistill.registries import models


class Killer(nn.Module):
    """An MLP whose process dies (SIGKILL) in its third training step on rank $KILL_RANK."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.steps = inner, 0

    def forward(self, x):
        self.steps += self.training
        if self.steps > 2 and os.environ.get("LOCAL_RANK", "0") == os.environ.get("KILL_RANK"):
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner(x)


@models.register("test_killer")
def killer(in_shape, num_outputs):
    return Killer(models.build("mlp", in_shape=in_shape, num_outputs=num_outputs))
'''


@pytest.mark.slow
@pytest.mark.parametrize("lost", [1, 0])
def test_a_lost_process_is_one_line_naming_its_rank(tmp_path, lost) -> None:
    plugin, out = tmp_path / "killer.py", tmp_path / "run"
    plugin.write_text(KILLER)
    command = [
        str(Path(sys.executable).with_name("crossdistill")),
        "run",
        *TINY,
        "student.model={name: test_killer}",
        "--import",
        str(plugin),
        "--processes",
        "2",
        "--out",
        str(out),
    ]
    env = {**os.environ, "KILL_RANK": str(lost)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("crossdistill: error")]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    survivor = 1 - lost
    assert len(errors) == 1, done.stderr[-3000:]
    assert errors[0].startswith(
        f"crossdistill: error: rank {lost}{' (killed by signal 9)' if lost else ''} of this "
        f"run's 2 processes stopped, so rank {survivor} cannot go on; every finished unit"
    ), errors[0]
    if lost == 0:
        return
    del env["KILL_RANK"]  # the same command, with nothing killed, resumes and finishes
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
