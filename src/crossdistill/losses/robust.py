"""The loss under input noise of the anti-distillation growth objective (Petrushina et al.,
"Anti-distillation: knowledge transfer from simple model to a complex one"):
L3^δ = E_{x′ ∈ U_δ(x)} L_f(w, x′, y), by sampling.

U_δ(x) is the uniform box [x − δ, x + δ] (every input coordinate shifted independently by
U[−δ, δ], δ in the units of ``x``), the L∞ ball of radius δ around x.

Random draws come from ``generator`` when one is given, else from the global CPU RNG (directly on
the CPU; on another device through a generator seeded from it), so that a run `fit` resumes from
its checkpoint — which holds the global CPU RNG state — draws the same noise on every device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .distillation import Task, task_loss


def device_generator(
    device: torch.device | str, generator: torch.Generator | None = None
) -> torch.Generator | None:
    """The generator to draw with for tensors on ``device``: ``generator`` if given; else None
    (the global RNG) on the CPU, and on another device a generator of that device seeded by one
    draw from the global CPU RNG."""
    device = torch.device(device)
    if generator is not None or device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    return torch.Generator(device=device).manual_seed(seed)


def _check_noise(delta: float, samples: int) -> None:
    if not delta >= 0:
        raise ValueError(f"delta must be >= 0, got {delta}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")


def box_noise(
    x: Tensor, delta: float, samples: int = 1, generator: torch.Generator | None = None
) -> Tensor:
    """``samples`` noisy copies of ``x`` ``(B, ...)``, each uniform in [x − δ, x + δ]:
    ``(samples · B, ...)``, copy s in rows ``s·B … s·B + B − 1``."""
    _check_noise(delta, samples)
    g = device_generator(x.device, generator)
    shape = (samples, *x.shape)
    u = torch.rand(shape, generator=g, dtype=x.dtype, device=x.device if g is None else g.device)
    noisy = x.unsqueeze(0) + delta * (2 * u.to(x.device) - 1)
    return noisy.reshape(samples * len(x), *x.shape[1:])


def robust_loss(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    delta: float,
    samples: int = 1,
    task: Task = "classification",
    generator: torch.Generator | None = None,
) -> Tensor:
    """L3^δ: the batch-mean task loss (`task_loss`) at inputs drawn uniformly from the box
    [x − δ, x + δ], averaged over ``samples`` draws per row; a scalar, differentiable in the
    model's parameters.

    ``model`` maps ``(N, ...)`` to logits ``(N, R)`` or predictions; ``x`` ``(B, ...)``,
    ``y`` ``(B,)`` int64 classes or regression targets ``(B,)``/``(B, K)``. The ``samples``
    noisy copies go through ``model`` as one batch of ``samples · B`` rows (a BatchNorm in
    training mode sees them together). At δ = 0 it is the clean loss ``task_loss(model(x), y)``,
    with no draw.
    """
    _check_noise(delta, samples)
    if delta == 0:
        return task_loss(task, model(x), y)
    noisy = box_noise(x, delta, samples, generator)
    return task_loss(task, model(noisy), y.repeat(samples, *([1] * (y.dim() - 1))))


class RobustLoss(nn.Module):
    """Module form of :func:`robust_loss`: ``RobustLoss(delta, samples, task)(model, x, y)``."""

    def __init__(self, delta: float, samples: int = 1, task: Task = "classification") -> None:
        super().__init__()
        _check_noise(delta, samples)
        self.delta, self.samples, self.task = delta, samples, task

    def forward(
        self,
        model: Callable[[Tensor], Tensor],
        x: Tensor,
        y: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        return robust_loss(model, x, y, self.delta, self.samples, self.task, generator)

    def extra_repr(self) -> str:
        return f"delta={self.delta}, samples={self.samples}, task={self.task!r}"
