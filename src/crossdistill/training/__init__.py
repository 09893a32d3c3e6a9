"""The training loop, evaluation, the teacher-output cache and forward hooks."""

from ..losses import Task
from .cache import TeacherCache, TeacherRun, fingerprint
from .hooks import capture
from .loop import Trainable, build_optimizer, evaluate, fit, metrics, predict

__all__ = [
    "Task",
    "TeacherCache",
    "TeacherRun",
    "Trainable",
    "build_optimizer",
    "capture",
    "evaluate",
    "fingerprint",
    "fit",
    "metrics",
    "predict",
]
