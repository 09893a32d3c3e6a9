"""The experiments shipped with the package: one YAML file each in ``crossdistill/configs``,
found and described without importing torch (what ``crossdistill list`` needs)."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import yaml

_SENTENCE_END = re.compile(
    r"(?<!\bal)(?<!\be\.g)(?<!\bi\.e)(?<!\bcf)(?<!\bvs)(?<!\bFig)[.!?](?=\s+[A-Z])"
)
"""The end of a sentence: ``.``, ``!`` or ``?`` before a space and a capital letter, except after
the abbreviations of citations and asides ("et al. (2015)", "e.g. MNIST", "vs. Net2Net")."""


def builtin_configs() -> dict[str, Path]:
    """The experiments shipped with the package: name → YAML path."""
    folder = resources.files("crossdistill.configs")
    return {Path(f.name).stem: Path(str(f)) for f in folder.iterdir() if f.name.endswith(".yaml")}


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` (all of it when it has one), on one line.

    >>> first_sentence("Distillation on digits: a student against no teacher. Teacher MLP on Big.")
    'Distillation on digits: a student against no teacher.'
    >>> first_sentence("After Hinton et al. (2015): soft labels. More.")
    'After Hinton et al. (2015): soft labels.'
    """
    text = " ".join(text.split())
    end = _SENTENCE_END.search(text)
    return text[: end.end()] if end else text


def summary(path: Path) -> str:
    """The first sentence of a config file's ``description`` ("" when it has none), read
    without validating the rest of the file: what ``crossdistill list`` shows."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    description = raw.get("description") if isinstance(raw, dict) else None
    return first_sentence(description) if isinstance(description, str) else ""
