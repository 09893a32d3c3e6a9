"""What ``crossdistill list`` shows of the built-in experiments: each description names the
method, its paper and what the experiment compares, in a user's words (no reference to the
project's internal documents), and its first sentence is the one-line summary."""

from __future__ import annotations

import re

import pytest
import yaml

from crossdistill.builtin import builtin_configs, first_sentence, summary
from crossdistill.cli import main

INTERNAL = ("seed 0", "Seed 0", "SPEC", "seed's", "§", "../shared")
"""What a user cannot look up: the project's source documents and its own folders."""


def _descriptions() -> dict[str, str]:
    return {
        name: yaml.safe_load(path.read_text(encoding="utf-8"))["description"]
        for name, path in sorted(builtin_configs().items())
    }


@pytest.mark.parametrize("name", sorted(builtin_configs()))
def test_a_builtin_description_names_its_paper_without_internal_references(name) -> None:
    description = _descriptions()[name]
    assert not [word for word in INTERNAL if word in description], description
    assert re.search(r'"[A-Z][^"]{8,}"', description), "no paper title in quotes"
    assert re.search(r"\b(19|20)\d\d\b|MIPT", description), "no year or institution"
    first = first_sentence(description)
    assert 40 < len(first) < 240 and first != description  # a summary, then the details
    assert re.search(r"\b(against|compared with)\b", first), "says what it compares"


def test_first_sentence_keeps_citations_and_abbreviations_whole() -> None:
    text = "After Hinton et al. (2015), e.g. MNIST: a student. Teacher on Big. More."
    assert first_sentence(text) == "After Hinton et al. (2015), e.g. MNIST: a student."
    assert first_sentence("One sentence, no end") == "One sentence, no end"
    assert first_sentence("  Spread\n  over lines.  Next one.") == "Spread over lines."


def test_list_prints_the_first_sentence_of_each_description(capsys) -> None:
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(builtin_configs())
    for line, (name, path) in zip(lines, sorted(builtin_configs().items()), strict=True):
        assert line == f"{name:26s} {summary(path)}"
        assert not [word for word in INTERNAL if word in line]
