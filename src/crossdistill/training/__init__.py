"""The training loop, evaluation, the teacher-output cache and forward hooks."""

from ..losses import Task
from .batched import fit_many, stacking, stacks
from .cache import TeacherCache, TeacherRun, fingerprint
from .calibration import ECE_BINS, Reliability, expected_calibration_error, reliability
from .devices import available_devices, check_device
from .hooks import capture
from .loop import (
    Trainable,
    TrainingDiverged,
    build_optimizer,
    check_optimizer,
    evaluate,
    fit,
    metrics,
    predict,
)

__all__ = [
    "ECE_BINS",
    "Reliability",
    "Task",
    "TeacherCache",
    "TeacherRun",
    "Trainable",
    "TrainingDiverged",
    "available_devices",
    "build_optimizer",
    "capture",
    "check_device",
    "check_optimizer",
    "evaluate",
    "expected_calibration_error",
    "fingerprint",
    "fit",
    "fit_many",
    "metrics",
    "predict",
    "reliability",
    "stacking",
    "stacks",
]
