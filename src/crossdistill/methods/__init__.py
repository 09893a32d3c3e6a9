"""Knowledge-transfer methods built on the shared losses, loop and cache."""

from .gdda import GDDAClassifier
from .multidomain import distill, distillation_loss

__all__ = ["GDDAClassifier", "distill", "distillation_loss"]
