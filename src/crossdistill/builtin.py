"""The experiments shipped with the package: one YAML file each in ``crossdistill/configs``,
found and described without importing torch (what ``crossdistill list`` needs)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml


def builtin_configs() -> dict[str, Path]:
    """The experiments shipped with the package: name → YAML path."""
    folder = resources.files("crossdistill.configs")
    return {Path(f.name).stem: Path(str(f)) for f in folder.iterdir() if f.name.endswith(".yaml")}


def summary(path: Path) -> str:
    """The first line of a config file's ``description`` ("" when it has none), read without
    validating the rest of the file."""
    raw = yaml.safe_load(path.read_text())
    description = raw.get("description") if isinstance(raw, dict) else None
    lines = description.strip().splitlines() if isinstance(description, str) else []
    return lines[0] if lines else ""
