"""Knowledge-transfer methods: one contract (`Method`), looked up by name in
`crossdistill.registries.methods`."""

from .base import Batch, Method, feature_column, teacher_column, teachers_read
from .bayes import (
    GaussianPosterior,
    MeanField,
    PriorMAP,
    VariationalDistillation,
    fisher_diagonal,
    gaussian_kl,
    kept_units,
    laplace_posterior,
)
from .consistent import ConsistentDistillation, consistent_columns, teacher_views
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
    "ConsistentDistillation",
    "Distillation",
    "GDDAClassifier",
    "GDDADistillation",
    "GaussianPosterior",
    "GrowthObjective",
    "LatentAlignment",
    "LatentAutoencoder",
    "MeanField",
    "Method",
    "MultiTeacherDistillation",
    "PrincipalComponents",
    "PriorMAP",
    "Supervised",
    "VariationalDistillation",
    "WeightedDistillation",
    "confidence_weights",
    "consistent_columns",
    "distill",
    "feature_column",
    "fisher_diagonal",
    "gaussian_kl",
    "kept_units",
    "laplace_posterior",
    "merge_soft_labels",
    "teacher_column",
    "teacher_views",
    "teachers_read",
]
