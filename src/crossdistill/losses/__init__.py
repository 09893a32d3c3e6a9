"""Losses: each a function on tensors, most with a thin ``nn.Module`` holding its settings —
distillation (SPEC §1.1–1.2), style transfer (Gatys et al.), the VAE translator (SPEC §1.3)."""

from crossdistill.losses.distillation import (
    KDLoss,
    MultiDomainLoss,
    RegressionDistillLoss,
    Task,
    kd_loss,
    multidomain_loss,
    regression_distill_loss,
    squared_error,
    task_loss,
)
from crossdistill.losses.style import (
    StyleLoss,
    content_loss,
    gram_matrix,
    style_loss,
)
from crossdistill.losses.vae import translator_loss

__all__ = [
    "KDLoss",
    "MultiDomainLoss",
    "RegressionDistillLoss",
    "StyleLoss",
    "Task",
    "content_loss",
    "gram_matrix",
    "kd_loss",
    "multidomain_loss",
    "regression_distill_loss",
    "squared_error",
    "style_loss",
    "task_loss",
    "translator_loss",
]
