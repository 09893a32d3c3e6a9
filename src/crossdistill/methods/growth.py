"""The growth objective of anti-distillation (Petrushina, Grabovoy, Bakhteev and Strijov,
"Anti-distillation: knowledge transfer from simple model to a complex one"): a grown student
trained to stay near the teacher it was grown from, and to be robust to input noise and flat in
its weights."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from ..losses import Task, hessian_norm, robust_loss, task_loss
from ..models.growth import Slot, Slots, at_slot
from ..registries import methods
from .base import Batch, Method

TERMS = ("fit", "anchor", "robust", "curvature")
"""The names of the four terms, in the order of ``weights`` (λ1 … λ4)."""


class _Anchor(nn.Module):
    """A teacher tensor u and its slot in the student's tensor ``name``, as non-persistent
    buffers (they follow the method to its device, and stay out of its checkpoints)."""

    def __init__(self, name: str, u: Tensor, slot: Slot) -> None:
        super().__init__()
        self.name, self.dims = name, len(slot)
        self.register_buffer("u", u.detach().clone(), persistent=False)
        for dim, index in enumerate(slot):
            self.register_buffer(f"index{dim}", index.to(torch.int64), persistent=False)

    def slot(self) -> Slot:
        return tuple(getattr(self, f"index{dim}") for dim in range(self.dims))

    def extra_repr(self) -> str:
        return f"{self.name!r}, shape={tuple(self.u.shape)}"


def check_weights(weights: Sequence[float]) -> tuple[float, float, float, float]:
    """``weights`` (λ1, λ2, λ3, λ4) as floats, or ValueError naming them unless they are four
    finite non-negative numbers summing to 1 (within 1e-6)."""
    values = tuple(weights)
    if len(values) != 4 or not all(
        isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) for w in values
    ):
        raise ValueError(f"weights: expected four finite numbers (λ1 … λ4), got {weights!r}")
    for name, w in zip(TERMS, values, strict=True):
        if w < 0:
            raise ValueError(f"weights: the {name} weight is negative ({w}) in {list(values)}")
    if not math.isclose(sum(values), 1.0, rel_tol=0.0, abs_tol=1e-6):
        raise ValueError(f"weights: expected a sum of 1, got {sum(values):.6g} for {list(values)}")
    return tuple(float(w) for w in values)  # type: ignore[return-value]


@methods.register("growth")
class GrowthObjective(Method):
    """Anti-distillation's φ(u) = argmin_w λ1 L_f(w, D1*) + λ2 ‖u − w[u]‖² + λ3 L3^δ(w, D1)
    + λ4 ‖∂²L_f/∂w²‖²_F, as the named terms (those of non-zero weight only):

    - ``fit``: λ1 · `task_loss` of the student on the batch (``x`` holds ψ(x): the caller
      applies ψ);
    - ``anchor``: λ2 · Σ ‖u − w[u]‖², squared differences summed over the entries of every
      slotted parameter (u the teacher's tensor, w[u] = ``at_slot(w, slot)``);
    - ``robust``: λ3 · `robust_loss` at inputs uniform in the box [x − δ, x + δ] (``x`` = ψ(x)
      as in ``fit``), ``robust_samples`` draws per row;
    - ``curvature``: λ4 · `hessian_norm` of the ``fit`` loss (before weighting) in all the
      student's trained parameters, ``hessian_samples`` Rademacher vectors.

    Each term is a batch mean except ``anchor``, which does not depend on the batch. Noise and
    Rademacher vectors are drawn from the global CPU RNG inside `forward_train`, whose state
    `crossdistill.training.fit` checkpoints, so a resumed run gives the numbers of an
    uninterrupted one.

    Args:
        student: the grown model, ``(B, ...) -> (B, R)`` logits or predictions.
        teacher_state: the anchor's tensors u by name; only the names in ``slots`` are read.
            The teacher's ``state_dict()``, or `crossdistill.models.placed` of the student
            taken right after `crossdistill.models.grow`: the teacher as growth wrote it, so
            that the anchor is 0 at the start of any function-preserving growth (net2net
            divides the weights reading a copied unit, which the raw teacher's would not
            match).
        slots: where each teacher tensor sits in the student's tensor of the same name
            (`crossdistill.models.growth.Slots`). Names of student buffers (BatchNorm running
            statistics) are skipped: they are not weights and no gradient moves them.
        weights: (λ1, λ2, λ3, λ4), non-negative, summing to 1; the default weighs every term
            equally.
        delta: δ ≥ 0, the half-width of the noise box, in the units of ``x``.
        robust_samples: noisy copies of the batch per step for ``robust``.
        hessian_samples: Hutchinson vectors per step for ``curvature``.
        task: ``"classification"`` (``y`` int64 ``(B,)``) or ``"regression"``.
    """

    columns = ("x", "y")

    def __init__(
        self,
        student: nn.Module,
        *,
        teacher_state: Mapping[str, Tensor],
        slots: Slots,
        weights: Sequence[float] = (0.25, 0.25, 0.25, 0.25),
        delta: float = 0.1,
        robust_samples: int = 1,
        hessian_samples: int = 1,
        task: Task = "classification",
    ) -> None:
        super().__init__(student)
        self.weights = check_weights(weights)
        if not (isinstance(delta, int | float) and math.isfinite(delta) and delta >= 0):
            raise ValueError(f"delta: expected a finite number >= 0, got {delta!r}")
        counts = {"robust_samples": robust_samples, "hessian_samples": hessian_samples}
        for name, count in counts.items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"{name}: expected a positive integer, got {count!r}")
        self.delta, self.task = delta, task
        self.robust_samples, self.hessian_samples = robust_samples, hessian_samples
        self.anchors = nn.ModuleList(_anchors(student, teacher_state, slots))

    def anchor(self) -> Tensor:
        """Σ ‖u − w[u]‖² over the slotted parameters: a scalar, in squared weight units."""
        terms = [
            (anchor.u - at_slot(self.student.get_parameter(anchor.name), anchor.slot()))
            .pow(2)
            .sum()
            for anchor in self.anchors
        ]
        if not terms:
            return next(self.student.parameters()).new_zeros(())
        return torch.stack(terms).sum()

    def forward_train(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        x, y = batch["x"], batch["y"]
        lam_fit, lam_anchor, lam_robust, lam_curvature = self.weights
        output = self.student(x)
        fit = task_loss(self.task, output, y)
        terms: dict[str, Tensor] = {}
        if lam_fit:
            terms["fit"] = lam_fit * fit
        if lam_anchor:
            terms["anchor"] = lam_anchor * self.anchor()
        if lam_robust:
            robust = robust_loss(self.student, x, y, self.delta, self.robust_samples, self.task)
            terms["robust"] = lam_robust * robust
        if lam_curvature:
            trained = [p for p in self.student.parameters() if p.requires_grad]
            terms["curvature"] = lam_curvature * hessian_norm(fit, trained, self.hessian_samples)
        return output, terms

    def extra_repr(self) -> str:
        return (
            f"weights={self.weights}, delta={self.delta}, robust_samples={self.robust_samples}, "
            f"hessian_samples={self.hessian_samples}, task={self.task!r}"
        )


def _anchors(student: nn.Module, teacher_state: Mapping[str, Tensor], slots: Slots) -> list:
    """One `_Anchor` per slotted parameter of ``student``, each checked: ValueError naming the
    tensor if the teacher lacks it, the student has no such tensor, or the slot does not fit."""
    parameters = dict(student.named_parameters())
    buffers = dict(student.named_buffers())
    anchors = []
    for name, slot in slots.items():
        if name in buffers:
            continue
        if name not in parameters:
            raise ValueError(f"slots: the student has no parameter {name!r}")
        if name not in teacher_state:
            raise ValueError(f"slots: teacher_state has no tensor {name!r}")
        u, w = teacher_state[name], parameters[name]
        _check_slot(name, slot, w)
        placed = at_slot(w.detach(), slot)
        if placed.shape != u.shape:
            raise ValueError(
                f"slots: {name!r} places {tuple(placed.shape)} entries but the teacher's tensor "
                f"is {tuple(u.shape)}"
            )
        anchors.append(_Anchor(name, u.to(w.device, w.dtype), slot))
    return anchors


def _check_slot(name: str, slot: Slot, w: Tensor) -> None:
    """ValueError naming ``name`` unless ``slot`` holds one 1-D index tensor per dimension of
    ``w``, each inside that dimension."""
    if len(slot) != w.dim():
        raise ValueError(f"slots: {name!r} has {len(slot)} index tensors for a {w.dim()}-D tensor")
    for dim, index in enumerate(slot):
        if index.dim() != 1:
            raise ValueError(
                f"slots: {name!r} dimension {dim}: expected 1-D indices, got shape "
                f"{tuple(index.shape)}"
            )
        if index.numel() and not (int(index.min()) >= 0 and int(index.max()) < w.shape[dim]):
            raise ValueError(
                f"slots: {name!r} dimension {dim}: indices in [{int(index.min())}, "
                f"{int(index.max())}] fall outside [0, {w.shape[dim]})"
            )
