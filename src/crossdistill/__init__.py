"""crossdistill: knowledge transfer between models and between data domains.

The pieces a researcher combines most often are importable from here; the subpackages hold the
rest: `crossdistill.data`, `crossdistill.mappings` (φ), `crossdistill.losses`,
`crossdistill.models`, `crossdistill.training`, `crossdistill.methods`,
`crossdistill.experiments`. ``__version__`` is the installed distribution's version.
"""

from importlib.metadata import PackageNotFoundError, version

from .data import ArrayData, Columns, DomainSplits, datasets, random_split
from .mappings import mappings
from .methods import Distillation, Method, Supervised, distill, methods
from .models import count_parameters, models
from .training import TeacherCache, evaluate, fit, predict

try:
    __version__ = version("crossdistill")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

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
