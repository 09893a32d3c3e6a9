"""Consistent ("patient") distillation (Beyer et al., 2022, "Knowledge distillation: a good teacher
is patient and consistent"): the student and the teacher see the same augmented view of each
image, the teacher through φ. The teacher's outputs on K seeded views of every row are computed
once (`teacher_views`), so the teacher costs K passes in all, not one per step."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..data.arrays import ArrayData, Columns
from ..data.views import Views
from ..registries import methods
from ..training import TeacherCache
from ..training.cache import Mapping
from .base import Batch, Method, register_lam_temperature, soft_term

INDEX = "index"
"""The column of each row's position in the training data, int64 ``(N,)``: the view a row gets
and the teacher's outputs on it are looked up by it."""


def views_column(teacher: str) -> str:
    """The column of teacher ``teacher``'s outputs on every view, ``views/<teacher>``
    ``(N, K, R)``."""
    return f"views/{teacher}"


def teacher_views(
    teacher: nn.Module,
    mapping: Mapping | None,
    x: Tensor,
    views: Views,
    cache: TeacherCache | None = None,
    name: str = "teacher",
) -> Tensor:
    """The teacher's outputs on φ(view k) of every row of ``x`` ``(N, C, H, W)``, ``(N, K, R)``:
    one cached teacher pass per view (``cache.computed`` grows by K the first time, by 0 after),
    each view made for all rows at once and dropped after its pass, so the memory held is one
    view of the data plus the K·N·R outputs."""
    cache = cache or TeacherCache()
    passes = [cache.outputs(teacher, mapping, views(x, k), name=name) for k in range(views.count)]
    return torch.stack(passes, dim=1)


def consistent_columns(
    train: ArrayData,
    teacher: nn.Module,
    mapping: Mapping | None,
    views: Views,
    cache: TeacherCache | None = None,
    teacher_name: str = "teacher",
) -> Columns:
    """``train``'s columns with ``index`` and ``views/<teacher_name>`` (`teacher_views`): what
    `ConsistentDistillation` trains on."""
    columns = train.columns()
    columns[INDEX] = torch.arange(len(train))
    outputs = teacher_views(teacher, mapping, train.x, views, cache, teacher_name)
    columns[views_column(teacher_name)] = outputs
    return columns


@methods.register("consistent_distillation")
class ConsistentDistillation(Method):
    """Distillation on one seeded augmented view per row and epoch, the same view the teacher's
    cached outputs were computed on: ``{"labels": λ·CE(y, softmax(z)), "teacher": (1 − λ)·
    kd_loss(z, v_k, T)}`` with z = student(view k of x) and v_k the column
    ``views/<teacher>`` at view k. With ``mixup``, the labels term of a mixed view
    ``(1 − m)·x_i + m·x_j`` is ``(1 − m)·CE(y_i) + m·CE(y_j)``.

    Before every epoch (`before_epoch`) each row draws its view k, a seeded function of
    (``view_seed``, epoch), so a resumed run draws the same. It trains one run at a time
    (`crossdistill.training.fit_many`); classification only.

    Args:
        student: maps views ``(B, C, H, W)`` to logits ``(B, R)``.
        teacher, lam, temperature, t2_scale, soften_student: as in `Distillation`.
        task: must be ``"classification"``.
        views: K, the views per row whose teacher outputs are cached.
        shift, flip, mixup, view_seed: the augmentation (`crossdistill.data.views.Views`).
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
        task: str = "classification",
        views: int = 4,
        shift: int = 2,
        flip: bool = False,
        mixup: float = 0.0,
        view_seed: int = 0,
    ) -> None:
        super().__init__(student)
        if task != "classification":
            raise ValueError(f"task: consistent distillation is for classification, found {task!r}")
        register_lam_temperature(self, lam, temperature)
        self.views = Views(count=views, shift=shift, flip=flip, mixup=mixup, seed=view_seed)
        self.teacher, self.t2_scale, self.soften_student = teacher, t2_scale, soften_student
        self.columns = ("x", "y", INDEX, views_column(teacher))
        self._train: dict[str, Tensor] = {}
        self._view_of = torch.zeros(0, dtype=torch.long)

    def before_epoch(self, train: dict[str, Tensor], epoch: int) -> dict[str, float]:
        """Keep the training rows (views are made from them, mixup partners included) and draw
        each row's view for ``epoch`` (1-based)."""
        self._train = {"x": train["x"], "y": train["y"]}
        order = torch.Generator().manual_seed(self.views.seed * 1_000_003 + epoch)
        self._view_of = torch.randint(self.views.count, (len(train["x"]),), generator=order)
        return {}

    def forward_train(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        rows = batch[INDEX]
        view = self._view_of[rows.cpu()].to(rows.device)
        images, partner, weight = self.views.make(self._train["x"], rows, view)
        output = self.student(images.to(batch["x"].device))
        labels = F.cross_entropy(output, batch["y"], reduction="none")
        if self.views.mixup:
            other = self._train["y"][partner].to(output.device)
            mix = weight.to(output.device)
            labels = (1 - mix) * labels + mix * F.cross_entropy(output, other, reduction="none")
        seen = batch[views_column(self.teacher)][torch.arange(len(rows)), view]
        return output, {
            "labels": self.lam * labels.mean(),
            "teacher": self.teacher_weight * soft_term(self, output, seen),
        }

    def extra_repr(self) -> str:
        return (
            f"teacher={self.teacher!r}, lam={float(self.lam):g}, "
            f"temperature={float(self.temperature):g}, views={self.views}"
        )
