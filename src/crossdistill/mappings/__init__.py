"""Mappings φ: X_t → X_s between data domains, looked up by name in :data:`mappings`."""

from crossdistill.mappings.base import mappings
from crossdistill.mappings.basic import (
    Compose,
    DilatedConv,
    GaussianNoise,
    Identity,
    Resize,
    compose,
    dilated_conv,
    gaussian_noise,
    resize,
)

__all__ = [
    "Compose",
    "DilatedConv",
    "GaussianNoise",
    "Identity",
    "Resize",
    "compose",
    "dilated_conv",
    "gaussian_noise",
    "mappings",
    "resize",
]
