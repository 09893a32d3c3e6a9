"""The training loop, evaluation and the teacher-output cache."""

from .cache import TeacherCache, fingerprint
from .loop import LossFn, Task, build_optimizer, evaluate, fit, metrics, predict

__all__ = [
    "LossFn",
    "Task",
    "TeacherCache",
    "build_optimizer",
    "evaluate",
    "fingerprint",
    "fit",
    "metrics",
    "predict",
]
