"""Knowledge-transfer methods: one contract (`Method`), looked up by name in
`crossdistill.registries.methods`."""

from .base import Batch, Method, feature_column, teacher_column, teachers_read
from .deep_gdda import GDDADistillation, WeightedDistillation
from .gdda import GDDAClassifier
from .growth import GrowthObjective
from .multidomain import Distillation, distill
from .multiteacher import (
    LatentAlignment,
    LatentAutoencoder,
    MultiTeacherDistillation,
    PrincipalComponents,
    confidence_weights,
    merge_soft_labels,
)
from .supervised import Supervised

__all__ = [
    "Batch",
    "Distillation",
    "GDDAClassifier",
    "GDDADistillation",
    "GrowthObjective",
    "LatentAlignment",
    "LatentAutoencoder",
    "Method",
    "MultiTeacherDistillation",
    "PrincipalComponents",
    "Supervised",
    "WeightedDistillation",
    "confidence_weights",
    "distill",
    "feature_column",
    "merge_soft_labels",
    "teacher_column",
    "teachers_read",
]
