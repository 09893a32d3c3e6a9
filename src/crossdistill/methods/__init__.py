"""Knowledge-transfer methods: one contract (`Method`), looked up by name in `methods`."""

from .base import Batch, Method, feature_column, methods, teacher_column, teachers_read
from .gdda import GDDAClassifier
from .growth import GrowthObjective
from .multidomain import Distillation, distill
from .supervised import Supervised

__all__ = [
    "Batch",
    "Distillation",
    "GDDAClassifier",
    "GrowthObjective",
    "Method",
    "Supervised",
    "distill",
    "feature_column",
    "methods",
    "teacher_column",
    "teachers_read",
]
