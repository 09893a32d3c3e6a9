"""A fixed random linear map between feature spaces (the synthetic regression pair's φ)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..registries import mappings


@mappings.register("random_projection")
class RandomProjection(nn.Module):
    """φ(x) = x Aᵀ for features ``(N, in_features)`` → ``(N, out_features)``.

    A is a fixed draw from N(0, 1 / in_features) with ``seed``; with ``out_features ≥
    in_features`` it is injective (almost surely), as multi-domain distillation asks of φ.
    """

    matrix: Tensor

    def __init__(self, *, in_features: int, out_features: int, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        matrix = torch.randn(out_features, in_features, generator=generator) / in_features**0.5
        self.seed = seed
        self.register_buffer("matrix", matrix)

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.matrix.T

    def extra_repr(self) -> str:
        out_features, in_features = self.matrix.shape
        return f"in_features={in_features}, out_features={out_features}, seed={self.seed}"
