"""The project's own error type: every mistake in a user's input, and every run that cannot go
on, raises a subclass whose message says what was expected, what was found and where."""

from __future__ import annotations


class CrossdistillError(Exception):
    """Base of crossdistill's errors (`crossdistill.experiments.ConfigError`,
    `crossdistill.data.DataFormatError`, `crossdistill.models.ModelFileError`,
    `crossdistill.training.TrainingDiverged`); the command line prints the message, never a
    traceback."""
