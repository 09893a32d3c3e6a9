"""Experiments from configs: the schema, one driver for every kind, the report.

Each kind is one module that registers its `ExperimentKind` in `kinds`: `distillation`
(SPEC §1.2), `privileged` (generalized distillation), `gdda` (the GDDA-SVM), `growth`
(anti-distillation) and `multiteacher` (SPEC §1.7).
"""

from . import distillation, gdda, growth, multiteacher, privileged  # noqa: F401  (register the kinds)
from .config import ConfigError, ExperimentConfig, builtin_configs, load_config
from .driver import ExperimentKind, choose, kinds, run_experiment

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "ExperimentKind",
    "builtin_configs",
    "choose",
    "kinds",
    "load_config",
    "run_experiment",
]
