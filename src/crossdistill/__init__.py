"""crossdistill: knowledge transfer between models and between data domains.

The pieces a researcher combines most often are importable from here; the subpackages hold the
rest: `crossdistill.data`, `crossdistill.mappings` (φ), `crossdistill.losses`,
`crossdistill.models`, `crossdistill.training`, `crossdistill.methods`,
`crossdistill.experiments`.
"""

from .data import ArrayData, DomainSplits, datasets, random_split
from .mappings import mappings
from .methods import distill, distillation_loss
from .models import count_parameters, models
from .training import TeacherCache, evaluate, fit, predict

__all__ = [
    "ArrayData",
    "DomainSplits",
    "TeacherCache",
    "count_parameters",
    "datasets",
    "distill",
    "distillation_loss",
    "evaluate",
    "fit",
    "mappings",
    "models",
    "predict",
    "random_split",
]
