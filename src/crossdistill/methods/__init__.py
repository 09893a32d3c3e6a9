"""Knowledge-transfer methods built on the shared losses, loop and cache."""

from .multidomain import distill, distillation_loss

__all__ = ["distill", "distillation_loss"]
