"""The model registry and model bookkeeping.

Every registered constructor is called as ``models.build(spec, in_shape=..., num_outputs=R)``
with ``in_shape`` one example's shape, (C, H, W) or (D,), and returns an ``nn.Module`` mapping
(N, *in_shape) → (N, R).
"""

from __future__ import annotations

from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Number of trainable (``requires_grad``) scalar parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
