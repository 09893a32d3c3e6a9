"""The curvature term of the anti-distillation growth objective (Petrushina et al.,
"Anti-distillation: knowledge transfer from simple model to a complex one"): ‖∂²L/∂w²‖²_F, the
squared Frobenius norm of a loss's Hessian in the parameters, estimated by Hutchinson's method
without forming the Hessian.

For Rademacher v (entries ±1, so E[v vᵀ] = I), E_v ‖Hv‖² = E_v vᵀ H² v = tr(H²) = ‖H‖²_F; each
Hv is one Hessian-vector product by double backward. Draws as in `crossdistill.losses.robust`
(``generator``, else the global CPU RNG).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from .robust import device_generator


def _check_samples(samples: int) -> None:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")


def rademacher(like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A tensor shaped like ``like``, of its dtype and device, with independent ±1 entries."""
    g = device_generator(like.device, generator)
    device = like.device if g is None else g.device
    bits = torch.randint(0, 2, like.shape, generator=g, device=device)
    return (2 * bits - 1).to(like.device, like.dtype)


def hessian_norm(
    loss: Tensor,
    parameters: Iterable[Tensor],
    samples: int = 1,
    generator: torch.Generator | None = None,
    create_graph: bool = True,
) -> Tensor:
    """Hutchinson's estimate of ‖H‖²_F, H = ∂²``loss``/∂w² over all of ``parameters`` together
    (one Hessian of the concatenated parameters, cross terms included): the mean over ``samples``
    Rademacher vectors v of ‖Hv‖², in squared units of ``loss`` per squared unit of w.

    Unbiased; its variance falls as 1/``samples``. ``loss`` is a scalar computed from
    ``parameters`` (tensors with ``requires_grad``; those it does not use have zero rows in H)
    with its graph still alive; it is kept for a later backward. With ``create_graph`` the
    estimate is differentiable in the parameters (third derivatives of ``loss``), so that it can
    be minimised; without it the value is detached. Cost: one backward with a graph (∂L/∂w) and
    ``samples`` double-backward passes (Hv); with ``create_graph`` their graphs stay in memory
    until the estimate is backpropagated.
    """
    _check_samples(samples)
    if loss.dim() != 0:
        raise ValueError(f"loss must be a scalar, got shape {tuple(loss.shape)}")
    parameters = [p for p in parameters if p.requires_grad]
    if not parameters:
        raise ValueError("parameters holds no tensor that requires a gradient")
    grads = torch.autograd.grad(loss, parameters, create_graph=True, allow_unused=True)
    # A gradient without a graph is constant in w: those rows of H are zero.
    pairs: Sequence[tuple[Tensor, Tensor]] = [
        (p, g) for p, g in zip(parameters, grads, strict=True) if g is not None and g.requires_grad
    ]
    if not pairs:
        return loss.new_zeros(())
    inputs = [p for p, _ in pairs]
    outputs = [g for _, g in pairs]
    total = loss.new_zeros(())
    for _ in range(samples):
        vs = [rademacher(p, generator) for p in inputs]
        hv = torch.autograd.grad(
            outputs,
            inputs,
            grad_outputs=vs,
            retain_graph=True,
            create_graph=create_graph,
            allow_unused=True,
        )
        total = total + sum(h.pow(2).sum() for h in hv if h is not None)
    return total / samples


class HessianNorm(nn.Module):
    """Module form of :func:`hessian_norm`: ``HessianNorm(samples)(loss, parameters)``."""

    def __init__(self, samples: int = 1) -> None:
        super().__init__()
        _check_samples(samples)
        self.samples = samples

    def forward(
        self,
        loss: Tensor,
        parameters: Iterable[Tensor],
        generator: torch.Generator | None = None,
    ) -> Tensor:
        return hessian_norm(loss, parameters, self.samples, generator)

    def extra_repr(self) -> str:
        return f"samples={self.samples}"
