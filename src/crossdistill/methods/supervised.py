"""Plain supervised training (teachers, students alone): the loss against the true labels."""

from __future__ import annotations

from torch import Tensor, nn

from ..losses import task_loss
from ..registries import methods
from ..training import Task
from .base import Batch, Method


@methods.register("supervised")
class Supervised(Method):
    """``{"labels": CE(y, softmax(model(x)))}`` (classification) or ``‖y − model(x)‖²``
    (regression), batch means.

    Args:
        student: the model trained, ``(B, ...) -> (B, R)`` logits or ``(B,)``/``(B, K)``.
        task: ``"classification"`` (``y`` int64 ``(B,)``) or ``"regression"``.
    """

    def __init__(self, student: nn.Module, task: Task = "classification") -> None:
        super().__init__(student)
        self.task = task
        self.stacks_layers = task == "classification"

    def forward_train(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        output = self.student(batch["x"])
        return output, {"labels": task_loss(self.task, output, batch["y"])}

    def extra_repr(self) -> str:
        return f"task={self.task!r}"
