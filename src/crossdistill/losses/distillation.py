"""Distillation losses: Hinton's soft term (Hinton et al., 2015, "Distilling the knowledge in a
neural network") and the multi-domain losses of Orlov and Grabovoy ("Model distillation on
multi-domained datasets").

Every loss is a mean over the batch where the papers write a sum over objects i — a constant
factor 1/N that leaves the minimiser unchanged and makes the scale independent of the batch size.
Teacher outputs are f∘φ(x): the caller applies the mapping φ and runs the teacher (without
gradients); these functions do not detach them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Task = Literal["classification", "regression"]
"""Classification: logits ``(N, R)`` against int64 classes ``(N,)``; regression: predictions
against float targets ``(N,)`` or ``(N, K)``."""


def _check_lam(lam: float) -> None:
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")


def _check_temperature(temperature: float) -> None:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _mix(
    lam: float, hard: Tensor, teacher_output: Tensor | None, soft: Callable[[Tensor], Tensor]
) -> Tensor:
    """λ·hard + (1 − λ)·soft(teacher_output); at λ = 1 the teacher is unused and may be None."""
    if lam == 1.0:
        return hard
    if teacher_output is None:
        raise ValueError(f"a teacher output is required when lam < 1 (lam={lam})")
    return lam * hard + (1.0 - lam) * soft(teacher_output)


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float | Tensor = 1.0,
    t2_scale: bool = True,
    soften_student: bool = True,
) -> Tensor:
    """Hinton's soft term: −Σ_r softmax(v/T)_r · log softmax(z/T)_r averaged over the batch,
    times T² when ``t2_scale`` (keeps the gradient scale independent of T).

    ``soften_student=False`` compares the softened teacher with the student's plain
    softmax(z) instead — generalized distillation as Lopez-Paz et al. implement it, where a high
    T pulls the student towards near-uniform targets.

    ``student_logits`` z and ``teacher_logits`` v are (N, R); returns a scalar. ``temperature``
    is a number (checked > 0) or a 0-dim tensor, e.g. a method's buffer stacked by
    `crossdistill.training.fit_many` (not checked: its method checked it when built).

    K models stacked by layers (`crossdistill.training.fit_many`) give z and v as (K, B, R)
    and ``temperature`` as a number or a (K,) tensor; the result is then (K,), each model's
    own batch mean.
    """
    stacked = student_logits.dim() == 3
    if student_logits.shape != teacher_logits.shape or student_logits.dim() not in (2, 3):
        raise ValueError(
            f"student_logits {tuple(student_logits.shape)} and teacher_logits "
            f"{tuple(teacher_logits.shape)} must both be (N, R), or (K, B, R) when stacked"
        )
    if not isinstance(temperature, Tensor):
        _check_temperature(temperature)
    if stacked:
        each = temperature[:, None, None] if isinstance(temperature, Tensor) else temperature
        soft_targets = F.softmax(teacher_logits / each, dim=-1)
        student = student_logits / each if soften_student else student_logits
        # F.cross_entropy's own sum over rows and classes, then / B, for each model
        logs = F.log_softmax(student, dim=-1)
        loss = -(logs * soft_targets).sum((1, 2)) / student.shape[1]
    else:
        soft_targets = F.softmax(teacher_logits / temperature, dim=1)
        student = student_logits / temperature if soften_student else student_logits
        loss = F.cross_entropy(student, soft_targets)
    return loss * temperature**2 if t2_scale else loss


def multidomain_loss(
    student_logits: Tensor,
    target: Tensor,
    teacher_logits: Tensor | None = None,
    lam: float = 0.5,
    temperature: float = 1.0,
    t2_scale: bool = True,
    soften_student: bool = True,
) -> Tensor:
    """Multi-domain classification loss: λ·CE(y, softmax(z)) + (1 − λ)·``kd_loss``(z, v, T).

    ``student_logits`` z (N, R), ``target`` y (N,) int64 class indices, ``teacher_logits`` v
    (N, R) = f∘φ(x) logits, needed unless ``lam`` = 1 (then ignored). The hard term is at T = 1.
    """
    _check_lam(lam)
    hard = F.cross_entropy(student_logits, target)
    return _mix(
        lam,
        hard,
        teacher_logits,
        lambda v: kd_loss(student_logits, v, temperature, t2_scale, soften_student),
    )


def squared_error(prediction: Tensor, target: Tensor) -> Tensor:
    """‖a − b‖² summed over output dimensions, averaged over the batch; (N,) or (N, K)."""
    a, b = prediction.reshape(len(prediction), -1), target.reshape(len(target), -1)
    if a.shape != b.shape:
        raise ValueError(f"shapes {tuple(prediction.shape)} and {tuple(target.shape)} do not match")
    return (a - b).pow(2).sum(dim=1).mean()


def task_loss(task: Task, output: Tensor, target: Tensor, labelled: Tensor | None = None) -> Tensor:
    """The loss against true targets: ``F.cross_entropy`` (classification, ``output`` (N, R)
    logits, ``target`` (N,) int64) or `squared_error` (regression); a batch mean.

    ``labelled`` (N,) bool marks the rows that have a target: the others add nothing (their
    ``target`` is never read, only its placeholder's shape and dtype), and the sum over the
    labelled rows is still divided by N, so that each labelled row weighs what it weighs in a
    batch without unlabelled rows.

    K classifiers stacked by layers (`crossdistill.training.fit_many`) give ``output``
    (K, B, R), ``target`` and ``labelled`` (K, B); the result is then (K,), each model's own
    batch mean. Regression is not stacked this way.
    """
    if task == "classification" and output.dim() == 3:
        count, batch, classes = output.shape
        if labelled is not None:
            target = torch.where(labelled, target, 0)
        per_row = F.cross_entropy(
            output.reshape(-1, classes), target.reshape(-1), reduction="none"
        ).reshape(count, batch)
        if labelled is None:
            return per_row.mean(-1)
        return torch.where(labelled, per_row, 0.0).sum(-1) / batch
    if labelled is None:
        if task == "classification":
            return F.cross_entropy(output, target)
        return squared_error(output, target)
    if task == "classification":
        per_row = F.cross_entropy(output, torch.where(labelled, target, 0), reduction="none")
    else:
        a, b = output.reshape(len(output), -1), target.reshape(len(target), -1)
        per_row = (a - b).pow(2).sum(dim=1)
    return torch.where(labelled, per_row, 0.0).sum() / len(target)


def regression_distill_loss(
    prediction: Tensor,
    target: Tensor,
    teacher_prediction: Tensor | None = None,
    lam: float = 0.5,
) -> Tensor:
    """Multi-domain regression loss (Orlov and Grabovoy): λ‖y − g‖² + (1 − λ)‖g − f∘φ‖².

    ``prediction`` g, ``target`` y and ``teacher_prediction`` f∘φ(x) are (N,) or (N, K)
    (an (N, 1) prediction matches an (N,) target); the teacher is needed unless ``lam`` = 1.
    """
    _check_lam(lam)
    hard = squared_error(prediction, target)
    return _mix(lam, hard, teacher_prediction, lambda f: squared_error(prediction, f))


class KDLoss(nn.Module):
    """Module form of :func:`kd_loss`; ``forward`` ignores ``target``."""

    def __init__(
        self, temperature: float = 1.0, t2_scale: bool = True, soften_student: bool = True
    ) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.temperature = temperature
        self.t2_scale = t2_scale
        self.soften_student = soften_student

    def forward(
        self, output: Tensor, target: Tensor, teacher_output: Tensor | None = None
    ) -> Tensor:
        if teacher_output is None:
            raise ValueError("KDLoss needs teacher_output")
        return kd_loss(output, teacher_output, self.temperature, self.t2_scale, self.soften_student)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, t2_scale={self.t2_scale}, "
            f"soften_student={self.soften_student}"
        )


class MultiDomainLoss(nn.Module):
    """Module form of :func:`multidomain_loss`."""

    def __init__(
        self,
        lam: float = 0.5,
        temperature: float = 1.0,
        t2_scale: bool = True,
        soften_student: bool = True,
    ) -> None:
        super().__init__()
        _check_lam(lam)
        _check_temperature(temperature)
        self.lam = lam
        self.temperature = temperature
        self.t2_scale = t2_scale
        self.soften_student = soften_student

    def forward(
        self, output: Tensor, target: Tensor, teacher_output: Tensor | None = None
    ) -> Tensor:
        return multidomain_loss(
            output,
            target,
            teacher_output,
            self.lam,
            self.temperature,
            self.t2_scale,
            self.soften_student,
        )

    def extra_repr(self) -> str:
        return (
            f"lam={self.lam}, temperature={self.temperature}, t2_scale={self.t2_scale}, "
            f"soften_student={self.soften_student}"
        )


class RegressionDistillLoss(nn.Module):
    """Module form of :func:`regression_distill_loss`."""

    def __init__(self, lam: float = 0.5) -> None:
        super().__init__()
        _check_lam(lam)
        self.lam = lam

    def forward(
        self, output: Tensor, target: Tensor, teacher_output: Tensor | None = None
    ) -> Tensor:
        return regression_distill_loss(output, target, teacher_output, self.lam)

    def extra_repr(self) -> str:
        return f"lam={self.lam}"
