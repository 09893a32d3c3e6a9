"""The method contract: a method is a module holding the student and whatever else it trains."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ..losses import kd_loss

Batch = dict[str, Tensor]
"""A batch of named columns, all sliced by the same row indices: ``x``, ``y``, ``x_star``,
``teacher/<name>``, ``features/<name>/<layer>``, ``labelled`` (see `crossdistill.data.Columns`)."""


def teacher_column(teacher: str) -> str:
    """The column of teacher ``teacher``'s outputs, ``teacher/<teacher>``."""
    return f"teacher/{teacher}"


def feature_column(teacher: str, layer: str) -> str:
    """The column of the activations of ``teacher``'s submodule ``layer`` (a module path such
    as ``"1"`` or ``"features.3"``), ``features/<teacher>/<layer>``."""
    return f"features/{teacher}/{layer}"


def teachers_read(columns: Iterable[str]) -> dict[str, list[str]]:
    """The teachers a method's ``columns`` read, with the layers whose activations it reads:
    ``("x", "teacher/t", "features/t/1")`` → ``{"t": ["1"]}``; ``views/<t>`` (outputs on
    augmented views, `crossdistill.methods.ConsistentDistillation`) reads teacher t too."""
    read: dict[str, list[str]] = {}
    for column in columns:
        kind, _, rest = column.partition("/")
        if kind in ("teacher", "views"):
            read.setdefault(rest, [])
        elif kind == "features":
            teacher, _, layer = rest.partition("/")
            read.setdefault(teacher, []).append(layer)
    return read


def check_lam_temperature(lam: float, temperature: float) -> None:
    """Refuse a label weight λ outside [0, 1] or a temperature T ≤ 0 (ValueError)."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def register_lam_temperature(method: nn.Module, lam: float, temperature: float) -> None:
    """Check λ and T (`check_lam_temperature`) and hold them in ``method`` as 0-dim float32
    buffers ``lam`` (λ), ``teacher_weight`` (1 − λ), ``temperature`` (T) and
    ``temperature_squared`` (T²), on the device of its parameters.

    Each is computed in Python and rounded to float32 once — the very factor float32 arithmetic
    with the Python number uses — so the losses are bit for bit those of Python floats. As
    buffers they are stacked by `crossdistill.training.fit_many` (each stacked method trains
    with its own λ and T); non-persistent, so ``state_dict`` and checkpoints hold none of them.
    """
    check_lam_temperature(lam, temperature)
    values = {
        "lam": lam,
        "teacher_weight": 1.0 - lam,
        "temperature": temperature,
        "temperature_squared": temperature**2,
    }
    for name, value in values.items():
        register_setting(method, name, value)


def soft_term(method: nn.Module, output: Tensor, teacher_logits: Tensor) -> Tensor:
    """Hinton's soft term of ``method``'s student ``output`` (B, R) against ``teacher_logits``
    (B, R) with the method's temperature buffers (`register_lam_temperature`) and its
    ``soften_student`` and ``t2_scale``: `crossdistill.losses.kd_loss` times Python's T²
    rounded once to float32, not the float32 T squared."""
    loss = kd_loss(output, teacher_logits, method.temperature, False, method.soften_student)
    return loss * method.temperature_squared if method.t2_scale else loss


def register_setting(method: nn.Module, name: str, value: float) -> None:
    """Hold the number ``value`` in ``method`` as the 0-dim float32 buffer ``name``, on the
    device of its parameters and non-persistent: a setting that `crossdistill.training.fit_many`
    stacks, so that each method of a sweep trains with its own value."""
    device = next(method.parameters(), torch.empty(0)).device
    method.register_buffer(name, torch.tensor(float(value), device=device), persistent=False)


class Method(nn.Module):
    """A knowledge-transfer method, trained by `crossdistill.training.fit`.

    Subclasses set ``columns`` (the batch columns they read) and implement `forward_train`;
    ``forward(x)`` is the student's, so evaluation and prediction see the student alone.
    A method may also define ``before_epoch(train, epoch)``, which `fit` calls at the start of
    every epoch with all the training columns (see `crossdistill.training.Trainable`).
    Frozen parts (a teacher's outputs, a VGG) come in as columns or as parameters with
    ``requires_grad=False``; every parameter that requires a gradient is trained.

    Args:
        student: the model that maps a batch ``x`` ``(B, ...)`` to outputs ``(B, R)``.
    """

    columns: tuple[str, ...] = ("x", "y")
    stacks_layers: bool = False
    """Whether `forward_train` follows the stacked-layers rule, so that
    `crossdistill.training.fit_many` may train K copies as one (its ``"layers"`` stacking): it
    is then called once for the K models with every column ``(K, B, …)`` (model k's batch in
    row k), ``student`` a `crossdistill.training.stacked.StackedModel` mapping ``(K, B, …)``
    to ``(K, B, R)``, and every buffer outside the student ``(K,)`` (model k's setting in
    entry k), and it returns each loss as ``(K,)``, model k's own batch mean. The losses of
    `crossdistill.losses` that take a leading model dimension (`crossdistill.losses.task_loss`
    for classification, `crossdistill.losses.kd_loss`) and arithmetic that broadcasts ``(K,)``
    settings against them keep it. A method that sets it trains no parameter outside its
    student."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(self, x: Tensor) -> Tensor:
        """The student's outputs ``(B, R)`` for inputs ``x`` ``(B, ...)``."""
        return self.student(x)

    def forward_train(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """The student's outputs on ``batch["x"]`` and the named scalar losses on the batch
        (any names but ``loss``); `fit` minimises their sum (``train_loss``) and records each
        per epoch as ``train_<name>``."""
        raise NotImplementedError
