"""The mapping registry."""

from __future__ import annotations

from typing import Annotated

from crossdistill.registries import Spec, mappings

"""Mappings φ: X_t → X_s by name, e.g. ``mappings.build({"name": "resize", "size": [28, 28]})``."""

MappingSetting = Annotated[Spec, mappings]
"""A component's setting that is the spec of a mapping (checked with the component's spec)."""
