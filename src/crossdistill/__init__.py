"""crossdistill: knowledge transfer between models and between data domains.

The pieces a researcher combines most often are importable from here; the subpackages hold the
rest: `crossdistill.data`, `crossdistill.mappings` (φ), `crossdistill.losses`,
`crossdistill.models`, `crossdistill.training`, `crossdistill.methods`,
`crossdistill.experiments`. ``__version__`` is the installed distribution's version.

The names below are imported on first use (PEP 562), so that ``import crossdistill`` and the
``crossdistill`` command's ``--help``, ``--version`` and ``list`` do not import torch or
scikit-learn.
"""

import importlib
import sys
import types
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
    "datasets": "data",
    "random_split": "data",
    "mappings": "mappings",
    "Distillation": "methods",
    "Method": "methods",
    "Supervised": "methods",
    "distill": "methods",
    "methods": "methods",
    "count_parameters": "models",
    "models": "models",
    "TeacherCache": "training",
    "evaluate": "training",
    "fit": "training",
    "predict": "training",
}
"""Each public name → the subpackage it is imported from."""

__all__ = [
    "ArrayData",
    "Columns",
    "Distillation",
    "DomainSplits",
    "Method",
    "Supervised",
    "TeacherCache",
    "count_parameters",
    "datasets",
    "distill",
    "evaluate",
    "fit",
    "mappings",
    "methods",
    "models",
    "predict",
    "random_split",
]


def __getattr__(name: str) -> Any:
    """A public name, imported from its subpackage on first access and then kept here."""
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_SOURCES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The type of this module. Importing a subpackage binds it as an attribute of its parent;
    this keeps the registries `mappings`, `methods` and `models` under those names rather than
    the subpackages that define them (as when they were imported eagerly)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SOURCES and getattr(value, "__name__", None) == f"{__name__}.{name}":
            return  # left to __getattr__, which imports the registry
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
