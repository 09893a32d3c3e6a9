"""Training on several processes (gloo on CPU): the same results as one process, the teacher run
once over every row in all, and the run directory written by rank 0 alone."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crossdistill.cli import main
from crossdistill.experiments.outputs import read_csv
from crossdistill.training import distributed

PROGRAM = Path(__file__).parent / "programs" / "distributed_distill.py"
TOLERANCE = 1e-5
"""How far 2-process metrics may be from 1-process ones: the gradients are the same mean over
the batch, summed in another order (float32 rounding)."""


def _close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=TOLERANCE), key


def _launch(*command: str) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_two_processes_match_one_and_share_the_teacher_pass(data_root, tmp_path, monkeypatch):
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    monkeypatch.setattr(sys, "argv", [str(PROGRAM), str(data_root), str(one)])
    runpy.run_path(str(PROGRAM), run_name="__main__")  # alone, in this process
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    _launch(*torchrun, str(PROGRAM), str(data_root), str(two))
    alone, together = json.loads(one.read_text()), json.loads(two.read_text())
    assert (alone["processes"], together["processes"]) == (1, 2)
    assert alone["teacher_rows"] == together["teacher_rows"] == 301  # every row once in all
    _close(alone["teacher"], together["teacher"])
    _close(alone["student"], together["student"])


@pytest.mark.slow
def test_the_cli_on_two_processes_writes_the_run_of_one(tmp_path, capsys) -> None:
    settings = [
        "digits",
        "data.small=150",
        "validation=40",
        "teachers.teacher.train.epochs=3",
        "student.train.epochs=4",
        "seeds=[0,1]",
        "--quiet",
    ]
    assert main(["run", *settings, "--out", str(tmp_path / "one")]) == 0
    crossdistill = Path(sys.executable).with_name("crossdistill")
    done = _launch(
        str(crossdistill), "run", *settings, "--out", str(tmp_path / "two"), "--processes", "2"
    )
    assert "batch size 32 per process (at most), 64 in all" in done.stderr
    assert done.stdout.count("| teacher |") == 1  # the table, printed by rank 0 alone
    for name in ("table.csv", "metrics.csv", "selection.csv"):
        alone, together = read_csv(tmp_path / "one" / name), read_csv(tmp_path / "two" / name)
        assert len(alone) == len(together) > 0
        for a, b in zip(alone, together, strict=True):
            _close(
                {k: float(v) for k, v in a.items() if _number(v)},
                {k: float(v) for k, v in b.items() if _number(v)},
            )
    assert not list((tmp_path / "two").rglob("*.tmp"))


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_alone_nothing_is_split_or_gathered() -> None:
    assert distributed.start() is None and distributed.engine() is None
    rows = torch.arange(10)
    assert distributed.shard(rows) == (rows, 1.0)
    assert distributed.local_part(rows) is rows
    values = torch.ones(3)
    assert distributed.gather_rows(values) is values and distributed.reduce_sum(values) is values
    assert distributed.processes() == 1


def test_start_refuses_impossible_counts(monkeypatch) -> None:
    with pytest.raises(ValueError, match="processes: expected at least 1, found 0"):
        distributed.start(0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="processes: 3 asked for, but torchrun started 2"):
        distributed.start(3)
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ValueError, match="accelerator: expected cpu or cuda, found 'mps'"):
        distributed.start(2, "mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="2 processes on this machine need as many GPUs"):
            distributed.start(2, "cuda")
