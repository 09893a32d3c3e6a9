"""Distillation on multi-domain data (SPEC §1.2): a student on X_t learns from a teacher on X_s."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..data.arrays import ArrayData
from ..losses import MultiDomainLoss, RegressionDistillLoss
from ..mappings import mappings
from ..training import Task, TeacherCache, evaluate, fit


def distillation_loss(
    task: Task,
    lam: float,
    temperature: float = 1.0,
    t2_scale: bool = True,
    soften_student: bool = True,
) -> nn.Module:
    """The multi-domain loss for ``task``: classification (with T) or regression (T unused)."""
    if task == "classification":
        return MultiDomainLoss(
            lam=lam, temperature=temperature, t2_scale=t2_scale, soften_student=soften_student
        )
    return RegressionDistillLoss(lam=lam)


def distill(
    student: nn.Module,
    train: ArrayData,
    *,
    teacher: nn.Module | None = None,
    mapping: nn.Module | None = None,
    privileged: Tensor | None = None,
    lam: float = 0.5,
    temperature: float = 1.0,
    t2_scale: bool = True,
    soften_student: bool = True,
    task: Task = "classification",
    test: ArrayData | None = None,
    cache: TeacherCache | None = None,
    **training: Any,
) -> list[dict[str, float]]:
    """Train ``student`` on ``train`` with the help of ``teacher ∘ mapping``.

    Args:
        student: maps ``train.x`` (target domain X_t) to logits ``(N, R)`` or predictions.
        train: the student's labelled data D_t.
        teacher: a trained model on the source domain X_s; not needed when ``lam == 1``.
        mapping: φ: X_t → X_s in front of the frozen teacher (default identity).
        privileged: generalized distillation (SPEC §1.6): the teacher's own inputs x*
            ``(N, ...)``, row-aligned with ``train``, seen instead of φ(``train.x``); the student
            never sees them. Give ``mapping`` or ``privileged``, not both.
        lam: weight of the true labels; ``1 - lam`` weighs the teacher's outputs.
        temperature: softmax temperature T of the teacher term (classification).
        t2_scale: multiply the teacher term by T² (Hinton's gradient-scale correction).
        soften_student: compare the teacher's softmax at T with the student's at T (Hinton);
            False takes the student's plain softmax (Lopez-Paz et al.'s implementation).
        task: ``"classification"`` or ``"regression"``.
        test: if given, its metrics (`crossdistill.training.evaluate`) are recorded every epoch.
        cache: where teacher outputs are memoised; pass one cache to a sweep so that the
            teacher runs once over ``train`` for all its λ, T and seeds.
        **training: passed on to `crossdistill.training.fit` (``epochs``, ``batch_size``,
            ``optimizer``, ``seed``, ``checkpoint``, ``progress``).

    Returns:
        One metrics dict per epoch (``train_loss`` and, with ``test``, its metrics).
    """
    teacher_outputs = None
    if lam < 1.0:
        if teacher is None:
            raise ValueError(f"lam={lam} gives the teacher a weight, but no teacher was given")
        if privileged is not None and mapping is not None:
            raise ValueError("give the teacher a mapping or privileged inputs, not both")
        mapping = mapping if mapping is not None else mappings.build("identity")
        inputs = train.x if privileged is None else privileged
        teacher_outputs = (cache or TeacherCache()).outputs(teacher, mapping, inputs)
    return fit(
        student,
        distillation_loss(task, lam, temperature, t2_scale, soften_student),
        train,
        teacher_outputs=teacher_outputs,
        validate=None if test is None else lambda model: evaluate(model, test, task),
        **training,
    )
