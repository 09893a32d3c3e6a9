"""Deep GDDA: a neural student whose imitation weights λ are learned by the GDDA-SVM's
leave-one-out loss while it trains (after Ao, 2016, "Distilling", who asks whether GDDA-SVM can
be built into a deep network).

Both methods here train the student on the weighted sum of its sources, the true labels and M
teachers' soft labels (each seen through its own φ, cached as column ``teacher/<name>``):

    λ₀·CE(y, softmax(z)) + Σ_j λ_j·T²·CE(softmax(v_j / T), softmax(z / T)),   λ on the simplex.

`WeightedDistillation` holds λ fixed (λ₀ = ``lam``, the teachers sharing 1 − λ₀ equally): the
weights a validation grid chooses. `GDDADistillation` learns λ: before every ``refit_every``-th
epoch it takes the student's current features of the training rows (the input of its last
``nn.Linear``, or the output of a named submodule), fits `GDDAClassifier` (a linear LS-SVM with
the true labels and each teacher's softmax(v_j / T) as sources) on them, and trains the network
with that classifier's LOO-best λ until the next refit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..data.arrays import LABELLED
from ..losses import Task, task_loss
from ..registries import methods
from ..training.hooks import capture
from .base import (
    Batch,
    Method,
    check_lam_temperature,
    register_setting,
    soft_term,
    teacher_column,
)
from .gdda import GDDAClassifier


def _teacher_names(teacher: str, teachers: Sequence[str] | None) -> tuple[str, ...]:
    """``teachers`` as a tuple, or ``(teacher,)`` when None; refuses none and duplicates."""
    names = (teacher,) if teachers is None else tuple(teachers)
    if not names:
        raise ValueError("teachers: give at least one teacher's name")
    if len(set(names)) < len(names):
        raise ValueError(f"teachers: each teacher once, found {list(names)}")
    return names


@methods.register("weighted_distillation")
class WeightedDistillation(Method):
    """Distillation from the true labels and several teachers with fixed imitation weights:
    ``{"labels": λ₀·CE(y, softmax(z)), "teacher_<name>": λ_j·kd_loss(z, v_j, T), …}`` with
    z = student(x), v_j the column ``teacher/<name>``, λ₀ = ``lam`` and each of the M teachers
    weighted (1 − λ₀)/M. With one teacher this is `crossdistill.methods.Distillation`'s loss.

    The weights λ (M + 1,), ``imitation_weights``, and T are non-persistent buffers, so that
    `crossdistill.training.fit_many` trains the methods of a (λ, T) sweep as one stack.

    Args:
        student: maps ``x`` ``(B, ...)`` to logits ``(B, R)``.
        teachers: the teachers' names, in the order of λ₁…λ_M; default ``(teacher,)``.
        teacher: the single teacher's name when ``teachers`` is not given.
        lam: the true labels' weight λ₀, in [0, 1].
        temperature: softmax temperature T of the teachers' terms.
        t2_scale: multiply the teachers' terms by T² (Hinton's gradient-scale correction).
        soften_student: compare each teacher's softmax at T with the student's at T (Hinton);
            False takes the student's plain softmax.
        task: must be ``"classification"`` (soft labels are class probabilities).
        unlabelled: the data may hold rows without a label: read the column ``labelled`` and
            give those rows the teachers' terms alone.
    """

    def __init__(
        self,
        student: nn.Module,
        *,
        teachers: Sequence[str] | None = None,
        teacher: str = "teacher",
        lam: float = 0.5,
        temperature: float = 1.0,
        t2_scale: bool = True,
        soften_student: bool = True,
        task: Task = "classification",
        unlabelled: bool = False,
    ) -> None:
        super().__init__(student)
        if task != "classification":
            raise ValueError(f"task: imitation weights need class probabilities, found {task!r}")
        check_lam_temperature(lam, temperature)
        self.teachers = _teacher_names(teacher, teachers)
        self.t2_scale, self.soften_student, self.unlabelled = t2_scale, soften_student, unlabelled
        columns = ("x", "y", *(teacher_column(name) for name in self.teachers))
        self.columns = (*columns, LABELLED) if unlabelled else columns
        register_setting(self, "temperature", temperature)
        register_setting(self, "temperature_squared", temperature**2)
        count = len(self.teachers)
        weights = torch.tensor([lam, *[(1.0 - lam) / count] * count], dtype=torch.float64)
        device = self.temperature.device
        self.register_buffer("imitation_weights", weights.float().to(device), persistent=False)

    def forward_train(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        output = self.student(batch["x"])
        weights = self.imitation_weights
        mask = batch[LABELLED] if self.unlabelled else None
        losses = {"labels": weights[0] * task_loss("classification", output, batch["y"], mask)}
        for j, name in enumerate(self.teachers, start=1):
            soft = soft_term(self, output, batch[teacher_column(name)])
            losses[f"teacher_{name}"] = weights[j] * soft
        return output, losses

    def weights(self) -> dict[str, float]:
        """The current imitation weights by source: ``{"labels": λ₀, <teacher>: λ_j, …}``."""
        values = self.imitation_weights.tolist()
        return dict(zip(("labels", *self.teachers), values, strict=True))

    def extra_repr(self) -> str:
        shown = ", ".join(f"{name}={value:.3g}" for name, value in self.weights().items())
        return (
            f"weights=({shown}), temperature={float(self.temperature):g}, "
            f"t2_scale={self.t2_scale}, soften_student={self.soften_student}"
        )


@methods.register("gdda_distillation")
class GDDADistillation(WeightedDistillation):
    """Deep GDDA: `WeightedDistillation` whose weights λ are refit by the GDDA-SVM's
    leave-one-out loss on the student's own features while it trains.

    Before epoch e (1, 1 + ``refit_every``, …, and never after ``freeze_after``) `before_epoch`
    runs the student in eval mode over every training row, takes its features (L, d), fits
    ``GDDAClassifier(C=C, kernel="linear")`` on them with the true labels and each teacher's
    softmax(v_j / T) (L, M, R), and sets λ to the classifier's ``lambda_``. With ``shared``
    the teachers share one weight: the classifier sees their mean soft label as one source
    (exactly the weights (λ₀, (1 − λ₀)/M, …)) and λ₀ is learned alone.

    Cost per refit: one forward pass over the L training rows, plus the LS-SVM's primal
    solve, O(L·d² + d³) for the Gram matrix and one (d + 1)² Cholesky per λ search step, with
    the leave-one-out loss and its gradient O(L·M·R) per step (d: the feature width, e.g. 64).
    The methods train one run at a time (`crossdistill.training.fit_many` does not stack a
    method with `before_epoch`). ``imitation_weights`` is a persistent buffer here: a resumed
    run keeps the weights a warm-up froze.

    Args:
        student, teachers, teacher, temperature, t2_scale, soften_student, task, unlabelled:
            as in `WeightedDistillation`; the leave-one-out loss is over the labelled rows, and
            the unlabelled ones join the LS-SVM with the teachers' soft labels
            (`GDDAClassifier`'s ``unlabelled``).
        lam: λ₀ before the first refit; only its check matters, since epoch 1 refits first.
        layer: the student's submodule whose output is the feature (``named_modules`` path);
            None takes the input of the student's last ``nn.Linear``.
        refit_every: epochs between refits (1: before every epoch).
        freeze_after: the last epoch whose start refits; None refits all along (a warm-up of
            W epochs: ``freeze_after=W``).
        shared: one weight shared by all teachers instead of one per teacher.
        C: the LS-SVM's regularisation (`GDDAClassifier`'s ``C``).
    """

    def __init__(
        self,
        student: nn.Module,
        *,
        teachers: Sequence[str] | None = None,
        teacher: str = "teacher",
        lam: float = 0.5,
        temperature: float = 1.0,
        t2_scale: bool = True,
        soften_student: bool = True,
        task: Task = "classification",
        unlabelled: bool = False,
        layer: str | None = None,
        refit_every: int = 1,
        freeze_after: int | None = None,
        shared: bool = False,
        C: float = 1.0,
    ) -> None:
        super().__init__(
            student,
            teachers=teachers,
            teacher=teacher,
            lam=lam,
            temperature=temperature,
            t2_scale=t2_scale,
            soften_student=soften_student,
            task=task,
            unlabelled=unlabelled,
        )
        for name, value in {"refit_every": refit_every, "freeze_after": freeze_after}.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name}: expected a whole number of epochs, found {value!r}")
        if refit_every < 1:
            raise ValueError(f"refit_every: expected at least 1 epoch, found {refit_every}")
        if freeze_after is not None and freeze_after < 1:
            raise ValueError(f"freeze_after: expected at least 1 epoch, found {freeze_after}")
        if layer is None and not any(isinstance(m, nn.Linear) for m in student.modules()):
            raise ValueError("layer: the student has no nn.Linear; name the feature submodule")
        if layer is not None and (layer == "" or layer not in dict(student.named_modules())):
            paths = ", ".join(repr(path) for path, _ in student.named_modules() if path)
            raise ValueError(f"layer: the student has no submodule {layer!r}; it has {paths}")
        self.layer, self.refit_every, self.freeze_after = layer, refit_every, freeze_after
        if isinstance(C, bool) or not isinstance(C, (int, float)) or not C > 0:
            raise ValueError(f"C: expected a positive number, found {C!r}")
        self.shared, self.C = shared, C
        self.register_buffer("imitation_weights", self.imitation_weights, persistent=True)

    def refits_at(self, epoch: int) -> bool:
        """Whether the start of ``epoch`` (1-based) refits λ."""
        frozen = self.freeze_after is not None and epoch > self.freeze_after
        return not frozen and (epoch - 1) % self.refit_every == 0

    def before_epoch(self, train: dict[str, Tensor], epoch: int) -> dict[str, float]:
        """Refit λ on ``train`` (the columns `crossdistill.training.fit` trains on) if
        `refits_at` ``epoch``; return λ by source as ``lambda_<source>`` (the epoch's
        metrics) and the refit's wall time in seconds as ``refit_seconds`` (0 without one)."""
        seconds = 0.0
        if self.refits_at(epoch):
            start = time.perf_counter()
            self.refit(train)
            seconds = time.perf_counter() - start
        lam = {f"lambda_{name}": value for name, value in self.weights().items()}
        return {**lam, "refit_seconds": seconds}

    def refit(self, train: dict[str, Tensor]) -> GDDAClassifier:
        """Set λ to the LOO-best weights of a GDDA-SVM on the student's current features of the
        rows of ``train`` (columns ``x``, ``y`` and the teachers'); return the fitted classifier."""
        features = self.features(train["x"]).double().cpu().numpy()
        labels = train["y"].cpu().numpy()
        with torch.no_grad():
            soft = torch.stack(
                [
                    F.softmax(train[teacher_column(name)].double() / self.temperature.item(), 1)
                    for name in self.teachers
                ],
                dim=1,
            )  # (L, M, R)
        if self.shared:
            soft = soft.mean(dim=1, keepdim=True)
        classes = np.arange(soft.shape[2])
        classifier = GDDAClassifier(C=self.C, kernel="linear", classes=classes)
        unlabelled = ~train[LABELLED].cpu().numpy() if self.unlabelled else None
        classifier.fit(features, labels, soft.cpu().numpy(), unlabelled)
        lam = classifier.lambda_
        if self.shared:
            lam = np.r_[lam[0], np.full(len(self.teachers), lam[1] / len(self.teachers))]
        self.imitation_weights.copy_(torch.as_tensor(lam))
        return classifier

    def features(self, x: Tensor, batch_size: int = 2048) -> Tensor:
        """The student's features ``(N, d)`` of inputs ``x`` ``(N, ...)``, in eval mode and
        without gradients, flattened after the batch dimension."""
        was_training = self.training
        self.eval()
        device = self.imitation_weights.device
        parts = []
        try:
            with torch.no_grad(), self._recording() as recorded:
                for rows in x.split(batch_size):
                    self.student(rows.to(device))
                    parts.append(recorded.pop().flatten(1))
        finally:
            self.train(was_training)
        return torch.cat(parts)

    @contextmanager
    def _recording(self) -> Iterator[list[Tensor]]:
        """Record the feature of each forward pass while inside (see ``layer``)."""
        if self.layer is not None:
            with capture(self.student, [self.layer]) as recorded:
                yield recorded[self.layer]
            return
        recorded_inputs: list[Tensor] = []
        last = [m for m in self.student.modules() if isinstance(m, nn.Linear)][-1]
        handle = last.register_forward_pre_hook(lambda m, inputs: recorded_inputs.append(inputs[0]))
        try:
            yield recorded_inputs
        finally:
            handle.remove()

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, layer={self.layer!r}, refit_every={self.refit_every}, "
            f"freeze_after={self.freeze_after}, shared={self.shared}, C={self.C:g}"
        )
