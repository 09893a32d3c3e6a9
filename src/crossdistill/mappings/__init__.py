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
from crossdistill.mappings.linear import RandomProjection

__all__ = [
    "Compose",
    "DilatedConv",
    "GaussianNoise",
    "Identity",
    "RandomProjection",
    "Resize",
    "compose",
    "dilated_conv",
    "gaussian_noise",
    "mappings",
    "resize",
]
