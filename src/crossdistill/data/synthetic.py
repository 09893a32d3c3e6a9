"""A synthetic regression domain whose source features are a fixed linear map of the target's."""

from __future__ import annotations

from pathlib import Path

import torch

from ..registries import datasets
from .arrays import ArrayData
from .datasets import DomainSplits, split_held_out


@datasets.register("synthetic_regression")
def synthetic_regression(
    *,
    small: int,
    seed: int = 0,
    size: int = 6000,
    test: int = 1000,
    features: int = 8,
    noise: float = 0.5,
    function_seed: int = 0,
    data_dir: str | Path | None = None,
    download: bool = True,
) -> DomainSplits:
    """Target-domain features x ~ N(0, I) ``(size, features)`` and noisy targets ``(size,)``.

    y = sin(u·x) + ½ (v·x)² − ½ + ε, ε ~ N(0, ``noise``²), with unit vectors u, v drawn with
    ``function_seed``; the noiseless part has variance ≈ 1. A teacher sees the source domain
    through φ = ``random_projection`` (x ↦ x Aᵀ); the generator is seeded with ``seed`` for
    the samples and noise, and Test (``test`` rows) is held out before Train is split.
    """
    weights = torch.randn(2, features, generator=torch.Generator().manual_seed(function_seed))
    u, v = weights / weights.norm(dim=1, keepdim=True)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(size, features, generator=g)
    y = torch.sin(x @ u) + 0.5 * (x @ v) ** 2 - 0.5 + noise * torch.randn(size, generator=g)
    return split_held_out(ArrayData(x, y), test, small, seed)
