"""Distillation on multi-domain data (Orlov and Grabovoy, "Model distillation on multi-domained
datasets"): a student on X_t learns from a teacher on X_s."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..data.arrays import LABELLED, ArrayData, with_unlabelled
from ..losses import Task, squared_error, task_loss
from ..registries import methods
from ..training import TeacherCache, evaluate, fit
from ..training.cache import Mapping
from .base import Batch, Method, register_lam_temperature, soft_term, teacher_column


@methods.register("distillation")
class Distillation(Method):
    """Multi-domain distillation:
    ``{"labels": λ·CE(y, softmax(z)), "teacher": (1 − λ)·kd_loss(z, v, T)}`` (classification) or
    ``{"labels": λ‖y − g‖², "teacher": (1 − λ)‖g − v‖²}`` (regression), with z = g = student(x) and
    v the column ``teacher/<teacher>`` (the teacher's outputs on φ(x), or on privileged inputs x*
    for generalized distillation). At λ = 1 only ``labels``, and no teacher column is read. λ and T
    are buffers (`register_lam_temperature`), so that `crossdistill.training.fit_many` trains
    methods of a (λ, T) sweep as one stack.

    Args:
        student: maps ``x`` ``(B, ...)`` to logits ``(B, R)`` or predictions.
        teacher: the name of the teacher whose column is read.
        lam: weight of the true labels, in [0, 1].
        temperature: softmax temperature T of the teacher term (classification).
        t2_scale: multiply the teacher term by T² (Hinton's gradient-scale correction).
        soften_student: compare the teacher's softmax at T with the student's at T (Hinton);
            False takes the student's plain softmax (Lopez-Paz et al.'s implementation).
        task: ``"classification"`` or ``"regression"``.
        unlabelled: the data may hold rows without a label: read the column ``labelled`` and
            give those rows the teacher term alone (`crossdistill.losses.task_loss`).
    """

    def __init__(
        self,
        student: nn.Module,
        *,
        teacher: str = "teacher",
        lam: float = 0.5,
        temperature: float = 1.0,
        t2_scale: bool = True,
        soften_student: bool = True,
        task: Task = "classification",
        unlabelled: bool = False,
    ) -> None:
        super().__init__(student)
        register_lam_temperature(self, lam, temperature)
        self.teacher = teacher
        self.t2_scale, self.soften_student, self.task = t2_scale, soften_student, task
        self.stacks_layers = task == "classification"
        self.unlabelled = unlabelled
        columns = ("x", "y") if lam == 1.0 else ("x", "y", teacher_column(teacher))
        self.columns = (*columns, LABELLED) if unlabelled else columns

    def forward_train(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        output = self.student(batch["x"])
        mask = batch[LABELLED] if self.unlabelled else None
        labels = task_loss(self.task, output, batch["y"], mask)
        column = teacher_column(self.teacher)
        if column not in self.columns:  # λ = 1, fixed when built (alike in a stack)
            return output, {"labels": labels}
        if self.task == "classification":
            imitation = soft_term(self, output, batch[column])
        else:
            imitation = squared_error(output, batch[column])
        return output, {"labels": self.lam * labels, "teacher": self.teacher_weight * imitation}

    def extra_repr(self) -> str:
        return (
            f"teacher={self.teacher!r}, lam={float(self.lam):g}, "
            f"temperature={float(self.temperature):g}, t2_scale={self.t2_scale}, "
            f"soften_student={self.soften_student}, task={self.task!r}"
        )


def distill(
    student: nn.Module,
    train: ArrayData,
    *,
    teacher: nn.Module | None = None,
    mapping: Mapping | None = None,
    privileged: Tensor | None = None,
    lam: float = 0.5,
    temperature: float = 1.0,
    t2_scale: bool = True,
    soften_student: bool = True,
    task: Task = "classification",
    unlabelled: Tensor | None = None,
    test: ArrayData | None = None,
    cache: TeacherCache | None = None,
    **training: Any,
) -> list[dict[str, float]]:
    """Train ``student`` on ``train`` with the help of ``teacher ∘ mapping`` (`Distillation`).

    Args:
        student: maps ``train.x`` (target domain X_t) to logits ``(N, R)`` or predictions.
        train: the student's labelled data D_t.
        teacher: a trained model on the source domain X_s; not needed when ``lam == 1``.
        mapping: φ: X_t → X_s in front of the frozen teacher, a module or a plain callable
            (default identity).
        privileged: generalized distillation (Lopez-Paz et al., 2016): the teacher's own inputs x*
            ``(N, ...)``, row-aligned with ``train``, seen instead of φ(``train.x``); the student
            never sees them. Give ``mapping`` or ``privileged``, not both.
        lam, temperature, t2_scale, soften_student, task: as in `Distillation`.
        unlabelled: target-domain inputs without labels ``(U, ...)``: the teacher labels them
            through ``mapping`` (with ``train``, in one cached pass) and the student learns
            them from the teacher term alone (`crossdistill.data.with_unlabelled`); not with
            ``privileged``, whose inputs exist for ``train``'s rows only.
        test: if given, its metrics (`crossdistill.training.evaluate`) are recorded every epoch.
        cache: where teacher outputs are memoised; pass one cache to a sweep so that the
            teacher runs once over ``train`` for all its λ, T and seeds.
        **training: passed on to `crossdistill.training.fit` (``epochs``, ``batch_size``,
            ``optimizer``, ``seed``, ``checkpoint``, ``progress``).

    Returns:
        One metrics dict per epoch (``train_loss``, ``train_labels``, ``train_teacher`` and,
        with ``test``, its metrics).
    """
    method = Distillation(
        student,
        lam=lam,
        temperature=temperature,
        t2_scale=t2_scale,
        soften_student=soften_student,
        task=task,
        unlabelled=unlabelled is not None,
    )
    if unlabelled is not None and privileged is not None:
        raise ValueError("unlabelled rows have no privileged inputs: give one or the other")
    columns = train.columns() if unlabelled is None else with_unlabelled(train, unlabelled)
    if teacher_column(method.teacher) in method.columns:
        if teacher is None:
            raise ValueError(f"lam={lam} gives the teacher a weight, but no teacher was given")
        if privileged is not None and mapping is not None:
            raise ValueError("give the teacher a mapping or privileged inputs, not both")
        if privileged is not None and len(privileged) != len(train):
            raise ValueError(f"privileged has {len(privileged)} rows but train has {len(train)}")
        inputs = columns["x"] if privileged is None else privileged
        outputs = (cache or TeacherCache()).outputs(teacher, mapping, inputs)
        columns[teacher_column(method.teacher)] = outputs
    return fit(
        method,
        columns,
        validate=None if test is None else lambda model: evaluate(model, test, task),
        **training,
    )
