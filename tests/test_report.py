"""`crossdistill report`: one self-contained HTML page and its Markdown twin over run
directories, and the committed report of results/."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from crossdistill.cli import main
from crossdistill.experiments import builtin_configs
from crossdistill.experiments.overview import ReportError, read_run, write_report

TINY_DIGITS = [
    "teachers.teacher.train.epochs=2",
    "student.train.epochs=2",
    "arms.teacher.lam=[0.5]",
    "arms.teacher.temperature=2",
    "seeds=[0]",
]
RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.fixture()
def run_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CROSSDISTILL_DATA", "../shared data")
    assert main(["run", "digits", *TINY_DIGITS, "--out", "runs/tiny", "--quiet"]) == 0
    return tmp_path / "runs" / "tiny"


def test_a_run_records_its_command(run_dir) -> None:
    command = (run_dir / "command.txt").read_text().strip()
    assert shlex.split(command) == [
        "CROSSDISTILL_DATA=../shared data",
        "crossdistill",
        "run",
        "digits",
        *TINY_DIGITS,
        "--out",
        "runs/tiny",
        "--quiet",
    ]


def test_report_holds_tables_figures_config_command_and_claims(run_dir, tmp_path) -> None:
    claims = tmp_path / "claims.yaml"
    claims.write_text(
        "- {experiment: tiny, seed: '000', claim: the teacher helps, held: in part, "
        "numbers: 0.9 vs 0.8}\n"
    )
    assert main(["report", str(run_dir), "--claims", str(claims), "--out", "out/page"]) == 0
    page = (tmp_path / "out" / "page.html").read_text()
    twin = (tmp_path / "out" / "page.md").read_text()
    figures = sorted((run_dir / "figures").rglob("*.png"))
    assert figures and page.count('src="data:image/png;base64,') == len(figures)
    assert "<td><strong>in part</strong></td>" in page and "| **in part** |" in twin
    for text in (page, twin):
        assert "crossdistill run digits" in text and "no_teacher" in text
        assert "student.train.epochs=2" in text  # the resolved config, not only the command
        assert "imagenet_style" in text.split("Not run here")[1]  # built-ins with no run
    assert "<table>" in page and "| arm |" in twin
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", twin)
    assert len(links) == len(figures)
    assert all((tmp_path / "out" / link).resolve().is_file() for link in links)


def test_report_refuses_what_is_not_a_finished_run_and_a_bad_claim(run_dir, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="empty: not a finished run directory"):
        read_run(tmp_path / "empty")
    claims = tmp_path / "claims.yaml"
    claims.write_text("- {experiment: nope, seed: '1', claim: c, held: held, numbers: n}\n")
    with pytest.raises(ReportError, match="claim 1: field 'experiment': 'nope'"):
        write_report([run_dir], tmp_path / "r", claims)
    claims.write_text("- {experiment: tiny, seed: '1', claim: c, held: maybe, numbers: n}\n")
    with pytest.raises(ReportError, match="field 'held'"):
        write_report([run_dir], tmp_path / "r", claims)
    assert main(["report", str(tmp_path / "empty")]) == 2


def test_committed_report_is_current_and_covers_every_experiment(tmp_path) -> None:
    runs = sorted(p for p in RESULTS.iterdir() if p.is_dir())
    page, _ = write_report(runs, tmp_path / "report", RESULTS / "claims.yaml")
    assert page.read_text() == (RESULTS / "report.html").read_text()
    twin = (RESULTS / "report.md").read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", twin) + re.findall(r"\]\((\S+\.\w+)\)", twin)
    assert links and all((RESULTS / link).is_file() for link in links)
    sections = set(re.findall(r"^## `([^`]+)`", twin, re.M))
    assert sections == {run.name for run in runs}
    covered = {read_run(run).name for run in runs} | set(
        re.findall(r"`([^`]+)`", twin.split("## Not run here")[1])
    )
    assert set(builtin_configs()) <= covered
    assert all((run / "command.txt").is_file() for run in runs)
