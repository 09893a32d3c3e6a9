"""Experiments from configs: the schema, one driver for every kind, the report.

Each kind is one module that registers its `ExperimentKind` in
`crossdistill.registries.kinds`: `distillation` (a teacher through a mapping φ), `deep_gdda`
(imitation weights learned inside a network, against a validation grid), `privileged`
(generalized distillation), `gdda` (the GDDA-SVM), `gdda_multisource` (how accurately the
GDDA-SVM learns several imitation weights, on data whose truth is known), `growth`
(anti-distillation) and `multiteacher` (several teachers through a shared latent).
"""

from . import (  # noqa: F401  (register the kinds)
    bayes,
    deep_gdda,
    distillation,
    gdda,
    growth,
    multisource,
    multiteacher,
    privileged,
)
from .config import ConfigError, ExperimentConfig, builtin_configs, load_config
from .driver import ExperimentKind, choose, run_experiment

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "ExperimentKind",
    "builtin_configs",
    "choose",
    "load_config",
    "run_experiment",
]
