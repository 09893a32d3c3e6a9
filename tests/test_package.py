"""The package around the code: ``--version`` and ``python -m crossdistill``, a closed pipe that
ends the command quietly, the license and the citation file agreeing with the installed
metadata."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import yaml

import crossdistill
from crossdistill.cli import CLOSED_PIPE_STATUS
from crossdistill.experiments import builtin_configs

ROOT = Path(__file__).resolve().parents[1]
COMMAND = [sys.executable, "-m", "crossdistill"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=300)


def test_version_is_the_installed_metadata() -> None:
    done = _run("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"crossdistill {version('crossdistill')}\n"
    assert crossdistill.__version__ == version("crossdistill")


def test_python_m_crossdistill_help_exits_0() -> None:
    done = _run("--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: crossdistill ")
    assert "list" in done.stdout and "--version" in done.stdout


def test_a_reader_that_closes_after_one_line_leaves_no_traceback() -> None:
    # like `crossdistill list | head -1`; the child may or may not have written everything
    # before the close, so both endings are fine as long as nothing is said on stderr
    child = subprocess.Popen(
        [*COMMAND, "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first = child.stdout.readline()
    child.stdout.close()
    stderr = child.stderr.read()
    status = child.wait(timeout=300)
    assert first.split()[0] == min(builtin_configs())
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert stderr == ""
    assert status in (0, CLOSED_PIPE_STATUS)


def test_a_reader_closed_before_any_output_ends_the_command_quietly() -> None:
    # deterministic: the read end is closed before the child starts, so its first write fails
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [*COMMAND, "list"], stdout=write, stderr=subprocess.PIPE, text=True, timeout=300
        )
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode == CLOSED_PIPE_STATUS


def test_license_is_mit() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 The crossdistill authors" in text


def test_citation_version_is_the_installed_metadata() -> None:
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0"
    assert citation["title"] == "crossdistill"
    assert citation["license"] == "MIT"
    assert citation["authors"] == [{"name": "The crossdistill authors"}]
    assert citation["version"] == version("crossdistill")
