"""The mapping registry."""

from __future__ import annotations

from torch import nn

from crossdistill.registry import Registry

mappings: Registry[nn.Module] = Registry("mapping")
"""Mappings φ: X_t → X_s by name, e.g. ``mappings.build({"name": "resize", "size": [28, 28]})``."""
