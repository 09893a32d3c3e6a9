"""The project's own error type: every mistake in a user's input, and every run that cannot go
on, raises a subclass whose message says what was expected, what was found and where."""

from __future__ import annotations

from typing import Any


class CrossdistillError(Exception):
    """Base of crossdistill's errors (`crossdistill.experiments.ConfigError`,
    `crossdistill.data.DataFormatError`, `crossdistill.models.ModelFileError`,
    `crossdistill.training.TrainingDiverged`); the command line prints the message, never a
    traceback."""


def number_hint(value: Any) -> str:
    """How to write a number that YAML 1.1 read as text (``1e-3``, ``1.0e6``), as a clause to
    append to an error message; ``""`` for any other value."""
    try:
        number = float(value) if isinstance(value, str) else None
    except ValueError:
        number = None
    if number is None:
        return ""
    text = repr(number)
    if "e" in text and "." not in text:  # YAML 1.1 reads an exponent only after a dot
        text = text.replace("e", ".0e")
    return f" (YAML reads {value} as text: write {text})"
