"""README.md and the docs site: every code block runs as its text stands (the rules are in
CONTRIBUTING.md, "Code blocks"), the examples do what their text says, and the pages name
papers rather than internal documents, issue numbers or commits."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from crossdistill import registries
from crossdistill.training import evaluate

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LANGUAGES = ("python", "bash", "yaml", "text")
MARKERS = ("continues", "file", "not run")

_FENCE = re.compile(
    r"(?:^[ \t]*<!-- (?P<marker>[a-z ]+?)(?::[ \t]*(?P<argument>[^\n]*?))?[ \t]*-->\n)?"
    r"^(?P<indent>[ \t]*)```(?P<language>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.M | re.S,
)


@dataclass(frozen=True)
class Block:
    """One fenced block of a page: its language, the marker on the line before it, its text."""

    page: Path
    line: int
    language: str
    marker: str | None
    argument: str
    text: str

    def __str__(self) -> str:
        return f"{_id(self.page)}:{self.line} ({self.language})"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` in order, each body without the fence's indentation."""
    text = page.read_text()
    found = []
    for match in _FENCE.finditer(text):
        indent = match["indent"]
        body = "".join(
            line[len(indent) :] if line.startswith(indent) else line
            for line in match["body"].splitlines(keepends=True)
        )
        found.append(
            Block(
                page=page,
                line=text.count("\n", 0, match.start("language")) + 1,
                language=match["language"].strip(),
                marker=match["marker"],
                argument=(match["argument"] or "").strip(),
                text=body,
            )
        )
    return found


def _id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix() if page.is_relative_to(ROOT) else str(page)


@functools.cache
def run_page(page: Path) -> tuple[dict, ...]:
    """Run ``page``'s blocks in order in a fresh directory; the namespaces of its Python blocks
    (a continued block shares its predecessor's)."""
    directory = Path(tempfile.mkdtemp(prefix="crossdistill-docs-"))
    namespaces: list[dict] = []
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"}
    environment["PATH"] += os.environ.get("PATH", "")
    saved = {name: dict(getattr(registries, name)._table()) for name in _REGISTRIES}
    start = Path.cwd()
    os.chdir(directory)
    sys.path.insert(0, str(directory))
    try:
        for block in blocks(page):
            if block.marker == "not run":
                continue
            if block.marker == "file":
                (directory / block.argument).write_text(block.text)
            elif block.language == "python":
                if block.marker != "continues" or not namespaces:
                    namespaces.append({"__name__": f"docs_{len(namespaces)}"})
                code = compile(block.text, str(block), "exec")
                exec(code, namespaces[-1])
            elif block.language == "bash":
                done = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", block.text],
                    cwd=directory,
                    env=environment,
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                assert done.returncode == 0, f"{block}: {done.stderr[-3000:]}"
            elif block.language == "yaml":
                yaml.safe_load(block.text)
    finally:
        os.chdir(start)
        sys.path.remove(str(directory))
        for name, table in saved.items():
            constructors = getattr(registries, name)._constructors
            constructors.clear()
            constructors.update(table)
    return tuple(namespaces)


_REGISTRIES = ("models", "mappings", "methods", "datasets", "privileged_datasets", "kinds")


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_every_block_has_a_known_language_and_marker(page: Path) -> None:
    for block in blocks(page):
        assert block.language in LANGUAGES, f"{block}: fence language must be one of {LANGUAGES}"
        assert block.marker in (None, *MARKERS), f"{block}: unknown marker {block.marker!r}"
        if block.marker in ("not run", "file"):
            assert block.argument, f"{block}: <!-- {block.marker}: ... --> needs its argument"
        if block.marker == "continues":
            assert block.language == "python", f"{block}: only Python blocks continue"


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_every_block_runs_as_written(page: Path) -> None:
    run_page(page)


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_pages_name_papers_not_internal_documents_issues_or_commits(page: Path) -> None:
    text = page.read_text()
    for pattern in (r"SPEC", r"[Ss]eed `?00\d", r"[Ii]ssue #?\d"):
        found = re.search(pattern, text)
        assert found is None, f"{_id(page)}: {found and found.group(0)!r}"
    for token in set(re.findall(r"\b[0-9a-f]{7,40}\b", text)):
        done = subprocess.run(
            ["git", "cat-file", "-e", f"{token}^{{commit}}"], cwd=ROOT, capture_output=True
        )
        assert done.returncode != 0, f"{_id(page)}: commit hash {token}"


def test_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def test_the_block_reader_follows_markers_and_indentation(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n<!-- not run: takes an hour -->\n```bash\nsleep 3600\n```\n"
        "1. item\n\n    ```python\n    x = 1\n    ```\n<!-- continues -->\n```python\ny = x\n```\n"
    )
    found = blocks(page)
    assert [(b.language, b.marker, b.argument) for b in found] == [
        ("bash", "not run", "takes an hour"),
        ("python", None, ""),
        ("python", "continues", ""),
    ]
    assert found[1].text == "x = 1\n"
    assert run_page(page)[0]["y"] == 1


def _page(path: str) -> tuple[dict, ...]:
    return run_page(ROOT / path)


def test_readme_example_distils_a_small_student_through_phi() -> None:
    (example,) = _page("README.md")
    assert example["count_parameters"](example["student"]) == 1210
    assert example["history"][-1]["accuracy"] > 0.8


def test_getting_started_example_is_the_readme_example_and_distils() -> None:
    (example,) = _page("docs/getting-started.md")
    assert example["count_parameters"](example["student"]) == 1210
    assert example["history"][-1]["accuracy"] > 0.8


def test_bayes_guide_teachers_prior_beats_the_isotropic_one() -> None:
    (example,) = _page("docs/guides/bayes.md")
    scores = example["scores"]
    teacher, isotropic = scores["teacher's prior"], scores["N(0, I) prior"]
    assert 0.88 < teacher["accuracy"] < 0.92 and 0.82 < isotropic["accuracy"] < 0.86
    assert all(0 <= s["ece"] <= 1 for s in scores.values())


def test_cross_domain_teacher_helps_the_cache_runs_once_and_unlabelled_rows_help() -> None:
    distilled, translated, cached, unlabelled, consistent = _page("docs/guides/cross-domain.md")
    accuracy = unlabelled["accuracy"]
    assert accuracy["with unlabelled"] > accuracy["labelled only"] + 0.05
    assert all(0.9 < value < 0.96 for value in consistent["accuracy"].values())
    final = distilled["final"]
    assert final[0.5]["cross_entropy"] < final[1.0]["cross_entropy"]
    assert translated["translated"].shape[1:] == translated["source"].x.shape[1:]
    assert cached["cache"].computed == 1
    assert cached["first"].outputs is cached["again"].outputs


def test_privileged_student_beats_the_student_alone_and_gdda_trusts_the_good_teacher() -> None:
    distilled, gdda, deep = _page("docs/guides/privileged.md")
    test = distilled["data"].test.regular
    alone = evaluate(distilled["alone"], test, "classification")["accuracy"]
    student = evaluate(distilled["student"], test, "classification")["accuracy"]
    assert student > alone + 0.05
    weights = gdda["model"].lambda_
    assert weights[1] > 0.5 and weights[2] < 0.1
    history = deep["history"]  # the noise teacher gets no weight at any epoch
    assert all(row["lambda_noise"] == 0 for row in history)
    assert all(row["lambda_labels"] + row["lambda_good"] == pytest.approx(1) for row in history)


def test_growth_keeps_the_teachers_logits_and_the_objective_records_its_terms() -> None:
    grown, trained = _page("docs/guides/growth.md")
    student, teacher, x = grown["student"], grown["teacher"], grown["x"]
    assert (student(x)[:, :5] - teacher(x)).abs().max() < 1e-5
    assert tuple(grown["slots"]["1.weight"][0].shape) == (8,)
    assert {"train_fit", "train_anchor"} <= set(trained["history"][-1])


def test_own_method_trains_with_its_named_losses_and_stacks() -> None:
    (example,) = _page("docs/guides/own-method.md")
    last = example["history"][-1]
    assert {"train_labels", "train_teacher", "train_hint"} <= set(last)
    assert last["accuracy"] > 0.8
    assert example["stacking"](example["students"]) == "vmap"


def test_multi_teacher_example_merges_aligns_and_teaches() -> None:
    (example,) = _page("docs/guides/multi-teacher.md")
    soft = example["soft"]
    assert soft.shape == (200, 10)
    assert soft.sum(1).sub(1).abs().max() < 1e-5
    assert example["latent"].shape == (200, 8)
    last = example["history"][-1]
    assert {"train_labels", "train_teachers", "train_latent"} <= set(last)
    assert last["accuracy"] > 0.8


def test_data_guide_splits_have_the_sizes_it_states() -> None:
    named, own = _page("docs/guides/data.md")[:2]
    splits = named["splits"]
    assert (len(splits.big), len(splits.small), len(splits.test)) == (1200, 200, 397)
    assert (len(own["splits"].big), len(own["splits"].small), len(own["splits"].test)) == (
        350,
        50,
        100,
    )
