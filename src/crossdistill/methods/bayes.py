"""Bayesian distillation (Grabovoy and Strijov, 2021, "Bayesian distillation of deep learning
models"): the teacher's Gaussian posterior over its weights, restricted to the units a narrower
student keeps, is the student's prior; the student learns on the evidence lower bound under it.

The restriction is growth's slot bookkeeping run the other way (`crossdistill.models.unit_slots`):
growth writes a small model's tensors into a wider one's, restriction reads a narrower model's
tensors out of a wider one's."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from ..data import ArrayData
from ..losses import task_loss
from ..models import Slots, at_slot
from ..registries import methods
from .base import Batch, Method, register_lam_temperature, soft_term, teacher_column

Curvature = Literal["fisher", "empirical"]
UnitRule = Literal["snr", "random"]


@dataclass(frozen=True)
class GaussianPosterior:
    """A diagonal Gaussian over a model's trainable parameters: ``mean`` and ``variance`` by
    parameter name (the model's ``named_parameters`` keys), each shaped like its parameter,
    the variance in squared weight units and > 0."""

    mean: dict[str, Tensor]
    variance: dict[str, Tensor]

    def __post_init__(self) -> None:
        if self.mean.keys() != self.variance.keys():
            raise ValueError(
                f"mean and variance name other parameters: {sorted(self.mean)} and "
                f"{sorted(self.variance)}"
            )
        for name, mean in self.mean.items():
            variance = self.variance[name]
            if variance.shape != mean.shape:
                raise ValueError(
                    f"parameter {name!r}: mean of shape {tuple(mean.shape)}, variance of "
                    f"shape {tuple(variance.shape)}"
                )
            if not bool(torch.isfinite(variance).all() and (variance > 0).all()):
                raise ValueError(f"parameter {name!r}: variances must be finite and > 0")

    @classmethod
    def isotropic(cls, model: nn.Module, variance: float = 1.0) -> GaussianPosterior:
        """N(0, ``variance`` · I) over ``model``'s trainable parameters (the prior of a
        student trained from scratch)."""
        parameters = trainable(model)
        return cls(
            {name: torch.zeros_like(p) for name, p in parameters.items()},
            {name: torch.full_like(p, float(variance)) for name, p in parameters.items()},
        )

    def restrict(self, slots: Slots) -> GaussianPosterior:
        """The marginal on the entries at ``slots`` (parameter name → `crossdistill.models.Slot`,
        e.g. `crossdistill.models.unit_slots` of a narrower model in this one): the mean and
        variance of each named parameter at its slot, the other entries left out."""
        missing = sorted(name for name in slots if name not in self.mean)
        if missing:
            raise ValueError(f"slots name parameters the posterior lacks: {missing}")
        return GaussianPosterior(
            {name: at_slot(self.mean[name], slot) for name, slot in slots.items()},
            {name: at_slot(self.variance[name], slot) for name, slot in slots.items()},
        )

    def signal_to_noise(self) -> dict[str, Tensor]:
        """|μ| / σ of every entry, by parameter name (dimensionless)."""
        return {name: m.abs() / self.variance[name].sqrt() for name, m in self.mean.items()}


def trainable(model: nn.Module) -> dict[str, Tensor]:
    """``model``'s parameters that require a gradient, by name, detached."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def fisher_diagonal(
    model: nn.Module,
    data: ArrayData,
    *,
    curvature: Curvature = "fisher",
    batch_size: int = 32,
) -> dict[str, Tensor]:
    """The curvature Σ_n h_n of a trained classifier's negative log-likelihood in each of its
    weights, summed over the rows of ``data`` (float64, by parameter name, in 1 / squared
    weight units), for `laplace_posterior`:

    - ``"fisher"``: the diagonal of the Fisher information, equal to the generalised
      Gauss-Newton matrix for the softmax cross-entropy: h_n = Σ_c p_c(x_n) g_{n,c}², g_{n,c}
      the gradient of −log p_c(x_n), over every class c (C per-row gradients);
    - ``"empirical"``: h_n = g_{n,y_n}², the squared gradient at the true label (one per row).

    Written here rather than through ``laplace-torch``: that library's diagonal backends
    (BackPACK, ASDL) need their own extensions of each layer type, while per-row gradients
    through ``torch.func`` serve every model of this zoo, in a few lines.

    Args:
        model: a classifier mapping inputs ``(B, ...)`` to logits ``(B, C)``, run in eval mode
            (its buffers, such as BatchNorm statistics, are held fixed).
        data: the rows it was trained on; ``y`` class labels ``(N,)``.
        curvature: ``"fisher"`` or ``"empirical"``.
        batch_size: rows per chunk of per-row gradients (memory: chunk × parameters floats).

    Raises:
        ValueError: an unknown curvature, or no rows.
    """
    if curvature not in ("fisher", "empirical"):
        raise ValueError(f"curvature: expected 'fisher' or 'empirical', found {curvature!r}")
    if not len(data):
        raise ValueError("data: no rows to take the curvature from")
    training = model.training
    model.eval()
    parameters = trainable(model)
    device = next(iter(parameters.values())).device

    def row_loss(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        logits = functional_call(model, params, (x.unsqueeze(0),))
        return F.cross_entropy(logits, y.unsqueeze(0))

    per_row = vmap(grad(row_loss), in_dims=(None, 0, 0))
    linears = _linear_layers(model, parameters)
    total = {name: torch.zeros_like(p, dtype=torch.float64) for name, p in parameters.items()}
    for start in range(0, len(data), batch_size):
        x = data.x[start : start + batch_size].to(device)
        y = data.y[start : start + batch_size].to(device)
        with torch.no_grad():
            p = model(x).softmax(1)
        if curvature == "empirical":
            labels, weights = [y], [torch.ones(len(x), device=device)]
        else:
            labels = [torch.full_like(y, c) for c in range(p.shape[1])]
            weights = list(p.T)
        squares = None if linears is None else _linear_squares(model, linears, x, labels, weights)
        if squares is None:
            squares = _row_squares(per_row, parameters, x, labels, weights)
        for name, square in squares.items():
            total[name] += square.double()
    model.train(training)
    return total


def _linear_layers(
    model: nn.Module, parameters: Mapping[str, Tensor]
) -> dict[str, nn.Linear] | None:
    """``model``'s Linear layers by name when they hold all of its trained parameters (then
    per-row squared gradients factor into matrix products), else None."""
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    owned = {f"{name}.{p}" for name, m in linears.items() for p, _ in m.named_parameters()}
    return linears if owned == set(parameters) else None


def _linear_squares(
    model: nn.Module,
    linears: Mapping[str, nn.Linear],
    x: Tensor,
    labels: list[Tensor],
    weights: list[Tensor],
) -> dict[str, Tensor] | None:
    """Σ_n w_n g_n² for a model whose trained parameters are all in Linear layers: a layer's
    per-row weight gradient is the outer product δ_n a_nᵀ of its output gradient and input,
    so its square sums as (w δ²)ᵀ a², one backward pass of the chunk per label set. None
    when a Linear reads more than (B, in) (a sequence), whose rows' gradients do not factor."""
    inputs: dict[str, Tensor] = {}
    outputs: dict[str, Tensor] = {}

    def keep(name: str):
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            inputs[name], outputs[name] = args[0].detach(), output

        return hook

    handles = [m.register_forward_hook(keep(name)) for name, m in linears.items()]
    try:
        logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    if any(a.dim() != 2 for a in inputs.values()):
        return None
    squares: dict[str, Tensor] = {}
    names = list(outputs)
    for label, weight in zip(labels, weights, strict=True):
        loss = F.cross_entropy(logits, label, reduction="sum")
        deltas = torch.autograd.grad(loss, [outputs[n] for n in names], retain_graph=True)
        for name, delta in zip(names, deltas, strict=True):
            weighted = weight[:, None] * delta.square()
            layer = linears[name]
            parts = {f"{name}.weight": weighted.T @ inputs[name].square()}
            if layer.bias is not None:
                parts[f"{name}.bias"] = weighted.sum(0)
            for key, value in parts.items():
                squares[key] = squares[key] + value if key in squares else value
    return {key: value.detach() for key, value in squares.items()}


def _row_squares(
    per_row: Callable[..., dict[str, Tensor]],
    parameters: Mapping[str, Tensor],
    x: Tensor,
    labels: list[Tensor],
    weights: list[Tensor],
) -> dict[str, Tensor]:
    """Σ_n w_n g_n² from per-row gradients (``torch.func``), for any model."""
    squares: dict[str, Tensor] = {}
    for label, weight in zip(labels, weights, strict=True):
        for name, g in per_row(parameters, x, label).items():
            shape = (-1,) + (1,) * (g.dim() - 1)
            value = (weight.view(shape) * g.square()).sum(0)
            squares[name] = squares[name] + value if name in squares else value
    return squares


def laplace_posterior(
    model: nn.Module, curvature: Mapping[str, Tensor], prior_precision: float = 1.0
) -> GaussianPosterior:
    """The diagonal Laplace approximation of a trained model's posterior: the mean is
    ``model``'s weights (taken as the maximum a posteriori), the variance of each weight
    1 / (τ + Σ_n h_n), with τ = ``prior_precision`` (a N(0, 1/τ) prior, in 1 / squared weight
    units) and Σ_n h_n its ``curvature`` (`fisher_diagonal`, computed once for any τ).

    Raises:
        ValueError: τ ≤ 0 or not finite, or a curvature over other parameters.
    """
    if not 0 < prior_precision < float("inf"):
        raise ValueError(f"prior_precision: expected a finite number > 0, found {prior_precision}")
    parameters = trainable(model)
    if set(curvature) != set(parameters):
        raise ValueError(
            f"curvature: over {sorted(curvature)}, the model's parameters are {sorted(parameters)}"
        )
    variance = {
        name: (1.0 / (prior_precision + curvature[name].double())).to(p.dtype)
        for name, p in parameters.items()
    }
    return GaussianPosterior({n: p.clone() for n, p in parameters.items()}, variance)


def kept_units(
    posterior: GaussianPosterior,
    teacher: nn.Module,
    student: nn.Module,
    rule: UnitRule = "snr",
    seed: int = 0,
) -> dict[str, Tensor]:
    """Which of the teacher's units each hidden layer of the narrower ``student`` keeps: layer
    name → the ``(n_student,)`` indices of teacher units, ascending, for
    `crossdistill.models.unit_slots`.

    The hidden layers are the Linear and Conv2d modules but the last (the classes). Rules:

    - ``"snr"``: the units with the largest mean posterior signal-to-noise |μ| / σ over their
      incoming weights and bias;
    - ``"random"``: a uniform draw with ``seed`` (each layer its own).

    Raises:
        ValueError: an unknown rule, or a student layer wider than the teacher's.
    """
    if rule not in ("snr", "random"):
        raise ValueError(f"rule: expected 'snr' or 'random', found {rule!r}")
    snr = posterior.signal_to_noise()
    layers = [n for n, m in teacher.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    generator = torch.Generator().manual_seed(seed)
    kept = {}
    for name in layers[:-1]:
        units = _units(teacher.get_submodule(name))
        keep = _units(student.get_submodule(name))
        if keep > units:
            raise ValueError(
                f"layer {name!r}: {keep} units in the student, more than the teacher's {units}"
            )
        if rule == "random":
            chosen = torch.randperm(units, generator=generator)[:keep]
        else:
            parts = [snr[f"{name}.{p}"] for p in ("weight", "bias") if f"{name}.{p}" in snr]
            score = torch.cat([part.reshape(units, -1) for part in parts], 1).mean(1)
            chosen = score.argsort(descending=True, stable=True)[:keep].cpu()
        kept[name] = chosen.sort().values
    return kept


def _units(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def gaussian_kl(mean_q: Tensor, variance_q: Tensor, mean_p: Tensor, variance_p: Tensor) -> Tensor:
    """KL(N(μ_q, σ_q²) ‖ N(μ_p, σ_p²)) of independent entries, summed, in nats:
    Σ ½ [log(σ_p² / σ_q²) + (σ_q² + (μ_q − μ_p)²) / σ_p² − 1]."""
    ratio = variance_q / variance_p
    return 0.5 * (ratio - ratio.log() + (mean_q - mean_p).square() / variance_p - 1).sum()


class MeanField(nn.Module):
    """A mean-field Gaussian q(w) = Π N(μ, σ²) over ``model``'s trainable parameters (Bayes by
    backprop, Blundell et al., 2015): μ are the model's own parameters, σ = softplus(ρ).

    In training mode each forward pass draws one w = μ + σ ε, ε ~ N(0, I), for the whole batch
    (the reparameterisation trick; gradients reach μ and ρ). In eval mode it returns the
    model's logits at w = μ when ``samples`` is 0, else the log of the mean softmax of
    ``samples`` draws made with a generator seeded ``seed`` on every call (the same draws each
    time: evaluation is deterministic). Its draws use the global random state, so copies of it
    train one by one (``batchable``), never stacked.

    Args:
        model: the network whose weights q is over, ``(B, ...) -> (B, C)``.
        std: σ at the start: one number for every weight, or a `GaussianPosterior` whose means
            and standard deviations q starts at (its mean is copied into ``model``).
        samples: draws of the predictive in eval mode (0: the mean weights).
        seed: the seed of those draws.
    """

    batchable = False

    def __init__(
        self,
        model: nn.Module,
        std: float | GaussianPosterior = 1e-3,
        samples: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.model = model
        self.names = list(trainable(model))
        if isinstance(std, GaussianPosterior):
            if set(std.mean) != set(self.names):
                raise ValueError(
                    f"std: a posterior over {sorted(std.mean)}, the model's parameters are "
                    f"{sorted(self.names)}"
                )
            parameters = dict(model.named_parameters())
            with torch.no_grad():
                for name in self.names:
                    parameters[name].copy_(std.mean[name])
            sigmas = [std.variance[name].sqrt() for name in self.names]
        else:
            if not 0 < std < float("inf"):
                raise ValueError(f"std: expected a finite number > 0, found {std}")
            sigmas = [torch.full_like(p, std) for p in trainable(model).values()]
        if samples < 0:
            raise ValueError(f"samples: expected a number ≥ 0, found {samples}")
        self.rho = nn.ParameterList(
            nn.Parameter(s.detach() + torch.log(-torch.expm1(-s.detach()))) for s in sigmas
        )
        self.samples, self.seed = samples, seed

    def posterior(self) -> GaussianPosterior:
        """q as a `GaussianPosterior` (detached)."""
        return GaussianPosterior(
            {name: mean.detach().clone() for name, mean in self._means().items()},
            {name: v.detach().clone() for name, v in self.variances().items()},
        )

    def variances(self) -> dict[str, Tensor]:
        """σ² of every weight, by parameter name (differentiable in ρ)."""
        return {
            name: F.softplus(rho).square() for name, rho in zip(self.names, self.rho, strict=True)
        }

    def kl(self, prior: Mapping[str, tuple[Tensor, Tensor]]) -> Tensor:
        """KL(q ‖ prior), in nats; ``prior``: parameter name → (mean, variance)."""
        variances, means = self.variances(), self._means()
        return sum(gaussian_kl(means[n], variances[n], *prior[n]) for n in self.names)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return functional_call(self.model, self._draw(None), (x,))
        if not self.samples:
            return self.model(x)
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        probabilities = torch.stack(
            [
                functional_call(self.model, self._draw(generator), (x,)).softmax(1)
                for _ in range(self.samples)
            ]
        )
        return probabilities.mean(0).log()

    def _means(self) -> dict[str, Tensor]:
        parameters = dict(self.model.named_parameters())
        return {name: parameters[name] for name in self.names}

    def _draw(self, generator: torch.Generator | None) -> dict[str, Tensor]:
        means, weights = self._means(), {}
        for name, rho in zip(self.names, self.rho, strict=True):
            noise = torch.randn(rho.shape, generator=generator, device=rho.device, dtype=rho.dtype)
            weights[name] = means[name] + F.softplus(rho) * noise
        return weights

    def extra_repr(self) -> str:
        return f"samples={self.samples}, seed={self.seed}"


class _PriorMethod(Method):
    """The shared part of the methods under a Gaussian prior: the prior's means and variances
    as buffers (non-persistent), and the labels and teacher terms of
    `crossdistill.methods.Distillation` (λ · labels + (1 − λ) · T² · KD; λ = 1: no teacher)."""

    def __init__(
        self,
        student: nn.Module,
        prior: GaussianPosterior,
        rows: int,
        lam: float,
        temperature: float,
        teacher: str,
        soften_student: bool,
        t2_scale: bool,
    ) -> None:
        super().__init__(student)
        network = self.network
        if set(prior.mean) != set(trainable(network)):
            raise ValueError(
                f"prior: over {sorted(prior.mean)}, the student's parameters are "
                f"{sorted(trainable(network))}"
            )
        if rows < 1:
            raise ValueError(f"rows: expected the number of training rows, ≥ 1, found {rows}")
        register_lam_temperature(self, lam, temperature)
        self.rows, self.teacher = rows, teacher
        self.soften_student, self.t2_scale = soften_student, t2_scale
        self.uses_teacher = lam < 1.0
        self.columns = ("x", "y", teacher_column(teacher)) if self.uses_teacher else ("x", "y")
        self.prior_names = sorted(prior.mean)
        for i, name in enumerate(self.prior_names):
            self.register_buffer(f"prior_mean_{i}", prior.mean[name].clone(), persistent=False)
            self.register_buffer(f"prior_variance_{i}", prior.variance[name].clone(), False)

    @property
    def network(self) -> nn.Module:
        """The student network the prior is over: inside the `MeanField` of a variational
        student (whose σ doubles the trained parameters, not the network's weights)."""
        student = self.student
        return student.model if isinstance(student, MeanField) else student

    def prior(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Parameter name → (mean, variance) of the prior."""
        return {
            name: (getattr(self, f"prior_mean_{i}"), getattr(self, f"prior_variance_{i}"))
            for i, name in enumerate(self.prior_names)
        }

    def data_terms(self, batch: Batch, output: Tensor) -> dict[str, Tensor]:
        losses = {"labels": self.lam * task_loss("classification", output, batch["y"])}
        if self.uses_teacher:
            teacher = batch[teacher_column(self.teacher)]
            losses["teacher"] = self.teacher_weight * soft_term(self, output, teacher)
        return losses


@methods.register("variational_distillation")
class VariationalDistillation(_PriorMethod):
    """A `MeanField` student trained on the evidence lower bound under a Gaussian ``prior``,
    per training row: λ · CE(y, f_w(x)) with one draw w ~ q per batch, plus KL(q ‖ prior) /
    ``rows`` (``kl``), plus (1 − λ) · T² · KD against the teacher's soft labels when λ < 1
    (``teacher``). With λ = 1 and a N(0, I) prior it is Bayes by backprop.

    Args:
        student: the `MeanField` over the student network.
        prior: a `GaussianPosterior` over the network's parameters (e.g. the teacher's,
            restricted; or `GaussianPosterior.isotropic`).
        rows: the number of training rows N, which the KL is divided by.
        lam, temperature, teacher, soften_student, t2_scale: as in
            `crossdistill.methods.Distillation`.
    """

    def __init__(
        self,
        student: MeanField,
        prior: GaussianPosterior,
        rows: int,
        lam: float = 1.0,
        temperature: float = 1.0,
        teacher: str = "teacher",
        soften_student: bool = True,
        t2_scale: bool = True,
    ) -> None:
        if not isinstance(student, MeanField):
            raise TypeError(f"student: expected a MeanField, found {type(student).__name__}")
        super().__init__(student, prior, rows, lam, temperature, teacher, soften_student, t2_scale)

    def forward_train(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        output = self.student(batch["x"])
        losses = self.data_terms(batch, output)
        losses["kl"] = self.student.kl(self.prior()) / self.rows
        return output, losses


@methods.register("prior_map")
class PriorMAP(_PriorMethod):
    """A student with point weights w, the maximum a posteriori under a Gaussian ``prior``, per
    training row: λ · CE(y, f_w(x)) plus Σ (w − μ)² / (2 σ²) / ``rows`` (``prior``), plus
    (1 − λ) · T² · KD when λ < 1 (``teacher``). The cheaper variant of
    `VariationalDistillation`: one network, no draws.

    Args:
        student: the network; ``prior`` is over its trainable parameters.
        prior, rows, lam, temperature, teacher, soften_student, t2_scale: as in
            `VariationalDistillation`.
    """

    def __init__(
        self,
        student: nn.Module,
        prior: GaussianPosterior,
        rows: int,
        lam: float = 1.0,
        temperature: float = 1.0,
        teacher: str = "teacher",
        soften_student: bool = True,
        t2_scale: bool = True,
    ) -> None:
        super().__init__(student, prior, rows, lam, temperature, teacher, soften_student, t2_scale)

    def forward_train(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        output = self.student(batch["x"])
        losses = self.data_terms(batch, output)
        parameters = dict(self.student.named_parameters())
        penalty = sum(
            ((parameters[name] - mean).square() / (2 * variance)).sum()
            for name, (mean, variance) in self.prior().items()
        )
        losses["prior"] = penalty / self.rows
        return output, losses
