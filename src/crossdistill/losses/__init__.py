"""Losses: each a function on tensors, most with a thin ``nn.Module`` holding its settings —
distillation (Hinton et al., 2015; multi-domain, Orlov and Grabovoy), style transfer (Gatys et
al.), the VAE translator (Bayazitov, 2022), the robust and curvature terms of the
anti-distillation growth objective (Petrushina et al.), the triplet loss (Schroff et al., 2015)."""

from crossdistill.losses.curvature import HessianNorm, hessian_norm, rademacher
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
from crossdistill.losses.robust import RobustLoss, box_noise, device_generator, robust_loss
from crossdistill.losses.style import (
    StyleLoss,
    content_loss,
    gram_matrix,
    style_loss,
)
from crossdistill.losses.triplet import (
    TripletLoss,
    class_triplets,
    semi_hard_triplets,
    triplet_loss,
)
from crossdistill.losses.vae import translator_loss

__all__ = [
    "HessianNorm",
    "KDLoss",
    "MultiDomainLoss",
    "RegressionDistillLoss",
    "RobustLoss",
    "StyleLoss",
    "TripletLoss",
    "Task",
    "box_noise",
    "class_triplets",
    "content_loss",
    "device_generator",
    "gram_matrix",
    "hessian_norm",
    "kd_loss",
    "multidomain_loss",
    "rademacher",
    "regression_distill_loss",
    "robust_loss",
    "semi_hard_triplets",
    "squared_error",
    "style_loss",
    "task_loss",
    "translator_loss",
    "triplet_loss",
]
