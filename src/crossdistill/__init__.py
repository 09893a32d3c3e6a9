"""crossdistill: knowledge transfer between models and between data domains.

The pieces a researcher combines most often are importable from here; the subpackages hold the
rest: `crossdistill.data`, `crossdistill.mappings` (φ), `crossdistill.losses`,
`crossdistill.models`, `crossdistill.training`, `crossdistill.methods`,
`crossdistill.experiments`; `crossdistill.registries` holds the name → constructor tables
that configs use (models, mappings, methods, datasets, experiment kinds). ``__version__``
is the installed distribution's version.

The names below are imported on first use (PEP 562), so that ``import crossdistill`` and the
``crossdistill`` command's ``--help``, ``--version`` and ``list`` do not import torch or
scikit-learn.
"""

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("crossdistill")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

_SOURCES = {
    "ArrayData": "data",
    "Columns": "data",
    "DomainSplits": "data",
    "random_split": "data",
    "Distillation": "methods",
    "Method": "methods",
    "Supervised": "methods",
    "distill": "methods",
    "count_parameters": "models",
    "TeacherCache": "training",
    "evaluate": "training",
    "fit": "training",
    "predict": "training",
}
"""Each public name → the subpackage it is imported from."""

_SUBPACKAGES = frozenset(
    {"data", "experiments", "losses", "mappings", "methods", "models", "registries", "training"}
)
"""Subpackages (and the registries module) reachable as attributes, imported on first use."""

__all__ = [
    "ArrayData",
    "Columns",
    "Distillation",
    "DomainSplits",
    "Method",
    "Supervised",
    "TeacherCache",
    "count_parameters",
    "distill",
    "evaluate",
    "fit",
    "predict",
    "random_split",
]


def __getattr__(name: str) -> Any:
    """A public name or a subpackage, imported on first access and then kept here."""
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_SOURCES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBPACKAGES)
