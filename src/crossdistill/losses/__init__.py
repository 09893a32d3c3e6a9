"""Distillation losses: each a function on tensors and a module with
``forward(output, target, teacher_output=None)``."""

from crossdistill.losses.distillation import (
    KDLoss,
    MultiDomainLoss,
    RegressionDistillLoss,
    kd_loss,
    multidomain_loss,
    regression_distill_loss,
)

__all__ = [
    "KDLoss",
    "MultiDomainLoss",
    "RegressionDistillLoss",
    "kd_loss",
    "multidomain_loss",
    "regression_distill_loss",
]
