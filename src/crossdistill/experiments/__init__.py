"""Experiments from configs: schema and loading, the runner, tables and figures."""

from .config import ConfigError, ExperimentConfig, builtin_configs, load_config
from .runner import Experiment, run_experiment

__all__ = [
    "ConfigError",
    "Experiment",
    "ExperimentConfig",
    "builtin_configs",
    "load_config",
    "run_experiment",
]
