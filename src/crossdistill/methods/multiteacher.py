"""Multi-teacher distillation through a shared latent space (Sedova, Gorpinich, Bakhteev and
Strijov, 2022, "Knowledge distillation using a representation of the sample in a shared latent
space of models").

Teachers with incomplete knowledge (each knows some of the classes, sees its own transform of
the input, or was trained on some of the rows) teach one student in two ways:

- **soft labels**, merged over the full label space by `merge_soft_labels` (the cross-entropy
  rule of Vongkulbhisal et al., 2019), with equal teacher weights (plain averaging when every
  teacher knows every class, as TextBrewer's multi-teacher distiller) or per-sample
  `confidence_weights` (CA-MKD, Zhang et al., 2022);
- a **shared latent**: each teacher's hidden layer, reduced by PCA, encoded by a
  `LatentAutoencoder` into one latent space of a configured size, trained by `LatentAlignment`
  (reconstruction, plus the triplet loss mined by class); the student's hidden layer, through
  its own linear projection, is trained to match it (`MultiTeacherDistillation`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..losses import class_triplets, triplet_loss
from ..training.hooks import capture
from .base import Batch, Method, register_lam_temperature

MERGE_ITERATIONS = 200
"""EM iterations of `merge_soft_labels` (a teacher that knows every class is exact after one)."""


def merge_soft_labels(
    probabilities: Sequence[Tensor],
    classes: Sequence[Tensor],
    num_classes: int,
    weights: Tensor | None = None,
    iterations: int = MERGE_ITERATIONS,
) -> Tensor:
    """One distribution over all ``num_classes`` classes from teachers that each know a subset.

    The rule is the cross-entropy one of Vongkulbhisal et al. (2019, "Unifying Heterogeneous
    Classifiers with Distillation"): teacher i's distribution p_i over its classes L_i is read as
    the merged q conditioned on L_i, p_i(l) = q_l / Σ_{k∈L_i} q_k, and q minimises
    Σ_i w_i Σ_{l∈L_i} −p_i(l) log(q_l / Σ_{k∈L_i} q_k) on the simplex. It is solved per row by
    EM (the teachers' outputs as truncated observations of q), from the uniform q. When every
    teacher knows every class the minimiser is the weighted average Σ_i w_i p_i / Σ_i w_i; a
    class no teacher knows, or the relative mass of class sets that no teacher links, keeps the
    uniform start's share (one teacher that knows k of C classes gives them mass k/C).

    Args:
        probabilities: per teacher, ``(N, K_i)`` distributions over its classes.
        classes: per teacher, ``(K_i,)`` int64 indices of its classes in ``0 … num_classes − 1``.
        num_classes: C, the size of the full label space.
        weights: ``(N, M)`` non-negative per-row teacher weights (default equal); a row whose
            weights are all zero takes equal weights.
        iterations: EM iterations.

    Returns:
        ``(N, C)`` rows that are probability distributions.
    """
    if len(probabilities) != len(classes) or not probabilities:
        raise ValueError(
            f"give one class list per teacher: {len(probabilities)} distributions, "
            f"{len(classes)} class lists"
        )
    rows = len(probabilities[0])
    for p, known in zip(probabilities, classes, strict=True):
        if p.shape != (rows, len(known)):
            raise ValueError(
                f"a teacher's distribution is {tuple(p.shape)}, expected ({rows}, {len(known)})"
            )
        if len(known) and (int(known.min()) < 0 or int(known.max()) >= num_classes):
            raise ValueError(f"classes must lie in 0 … {num_classes - 1}, found {known.tolist()}")
    if weights is None:
        weights = probabilities[0].new_ones(rows, len(probabilities))
    if weights.shape != (rows, len(probabilities)):
        raise ValueError(f"weights are {tuple(weights.shape)}, expected ({rows}, {len(classes)})")
    weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, torch.ones_like(weights))
    merged = probabilities[0].new_full((rows, num_classes), 1.0 / num_classes)
    for _ in range(iterations):
        counts = torch.zeros_like(merged)
        for i, (p, known) in enumerate(zip(probabilities, classes, strict=True)):
            inside = merged[:, known]
            mass = inside.sum(1, keepdim=True).clamp_min(torch.finfo(merged.dtype).tiny)
            w = weights[:, i : i + 1]
            counts += w * merged / mass  # the mass expected outside L_i …
            counts[:, known] += w * (p - inside / mass)  # … and the observed p_i inside it
        updated = counts / counts.sum(1, keepdim=True)
        if torch.allclose(updated, merged, rtol=0, atol=1e-7):
            return updated
        merged = updated
    return merged


def confidence_weights(
    probabilities: Sequence[Tensor], classes: Sequence[Tensor], labels: Tensor
) -> Tensor:
    """CA-MKD's per-sample teacher weights (Zhang et al., 2022): with L_i = −log p_i(y) each
    teacher's cross-entropy on the true label, w_i = (1 − softmax(L)_i) / (M′ − 1) over the M′
    teachers that know class y (a teacher that does not know it gets 0; if one teacher knows
    it, it gets 1; if none does, all get 1/M).

    Args:
        probabilities, classes: as in `merge_soft_labels`.
        labels: ``(N,)`` true classes in ``0 … C − 1``.

    Returns:
        ``(N, M)`` weights, each row summing to 1.
    """
    losses = []
    for p, known in zip(probabilities, classes, strict=True):
        position = torch.full((int(max(known.max(), labels.max())) + 1,), -1, dtype=torch.long)
        position[known] = torch.arange(len(known))
        where = position[labels]
        taken = p.gather(1, where.clamp_min(0)[:, None]).squeeze(1)
        loss = -taken.clamp_min(torch.finfo(p.dtype).tiny).log()
        losses.append(torch.where(where >= 0, loss, torch.inf))
    losses = torch.stack(losses, 1)
    knowing = torch.isfinite(losses)
    count = knowing.sum(1, keepdim=True)
    share = torch.softmax(torch.where(knowing, losses, -torch.inf), 1).nan_to_num(0.0)
    weights = (1 - share) * knowing / (count - 1).clamp_min(1)
    weights = torch.where(count == 1, knowing.to(weights.dtype), weights)
    return torch.where(count == 0, torch.full_like(weights, 1 / losses.shape[1]), weights)


class LatentAutoencoder(nn.Module):
    """Teachers' hidden layers of any sizes mapped into one latent space of ``size`` dimensions.

    Per teacher t: its features ``(N, d_t)`` (flattened) are centred and projected on their
    first ``reduce`` principal components (fitted here on ``features``, frozen; at most
    min(d_t, N)), divided by one scale (so the reduced features have unit mean variance), then
    encoded by an MLP (``hidden`` units) into a code ``(N, size)``; the shared latent is the
    mean of the teachers' codes, and a decoder per teacher reconstructs its reduced features
    from it.

    Args:
        features: per teacher name, the features ``(N, ...)`` the PCA is fitted on.
        size: the latent's dimension.
        reduce: principal components kept per teacher.
        hidden: width of each encoder's and decoder's hidden layer.
    """

    def __init__(
        self, features: Mapping[str, Tensor], size: int, reduce: int = 32, hidden: int = 64
    ) -> None:
        super().__init__()
        if not features:
            raise ValueError("the latent needs the features of at least one teacher")
        self.names = list(features)
        self.size, self.reduce = size, reduce
        self.encoders, self.decoders = nn.ModuleDict(), nn.ModuleDict()
        for index, (name, value) in enumerate(features.items()):
            flat = value.reshape(len(value), -1).float()
            centre = flat.mean(0)
            _, _, vh = torch.linalg.svd(flat - centre, full_matrices=False)
            basis = vh[: min(reduce, len(vh))].T.contiguous()
            scale = ((flat - centre) @ basis).pow(2).mean().sqrt().clamp_min(1e-12)
            self.register_buffer(f"centre_{index}", centre)
            self.register_buffer(f"basis_{index}", basis)
            self.register_buffer(f"scale_{index}", scale)
            width = basis.shape[1]
            self.encoders[name] = nn.Sequential(
                nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, size)
            )
            self.decoders[name] = nn.Sequential(
                nn.Linear(size, hidden), nn.ReLU(), nn.Linear(hidden, width)
            )

    def reduced(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each teacher's features ``(N, ...)`` as its scaled principal components ``(N, r_t)``."""
        out = {}
        for index, name in enumerate(self.names):
            flat = features[name].reshape(len(features[name]), -1).float()
            centre, basis = getattr(self, f"centre_{index}"), getattr(self, f"basis_{index}")
            out[name] = (flat - centre) @ basis / getattr(self, f"scale_{index}")
        return out

    def codes(self, reduced: Mapping[str, Tensor]) -> Tensor:
        """The teachers' codes ``(M, N, size)`` of their reduced features."""
        return torch.stack([self.encoders[name](reduced[name]) for name in self.names])

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        """The shared latent ``(N, size)`` of the teachers' features (the mean of their codes)."""
        return self.codes(self.reduced(features)).mean(0)

    def extra_repr(self) -> str:
        return f"teachers={self.names}, size={self.size}, reduce={self.reduce}"


class LatentAlignment(Method):
    """Trains a `LatentAutoencoder`: ``reconstruction``, the mean squared error of every
    teacher's reduced features decoded from the shared latent, and ``triplet``,
    ``triplet_weight`` × `triplet_loss` with margin ``margin`` on the teachers' codes — triplets
    mined by class within the batch, each of anchor, positive and negative the code of a
    random teacher (so that different teachers' codes of one class meet). At
    ``triplet_weight=0`` the autoencoder is trained by reconstruction alone.

    Args:
        autoencoder: the model trained.
        columns: per teacher name (as in the autoencoder), the batch column of its features.
        margin: the triplet margin m, in squared latent units.
        triplet_weight: the triplet term's weight (≥ 0).
    """

    def __init__(
        self,
        autoencoder: LatentAutoencoder,
        columns: Mapping[str, str],
        margin: float = 1.0,
        triplet_weight: float = 1.0,
    ) -> None:
        super().__init__(autoencoder)
        if triplet_weight < 0:
            raise ValueError(f"triplet_weight must be ≥ 0, got {triplet_weight}")
        self.feature_columns = dict(columns)
        self.margin, self.triplet_weight = margin, triplet_weight
        self.columns = ("y", *self.feature_columns.values())

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:  # type: ignore[override]
        """The shared latent ``(N, size)`` of the teachers' features, by teacher name."""
        return self.student(features)

    def forward_train(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        autoencoder: LatentAutoencoder = self.student
        reduced = autoencoder.reduced({t: batch[c] for t, c in self.feature_columns.items()})
        codes = autoencoder.codes(reduced)
        latent = codes.mean(0)
        reconstruction = torch.stack(
            [F.mse_loss(autoencoder.decoders[t](latent), reduced[t]) for t in autoencoder.names]
        ).mean()
        losses = {"reconstruction": reconstruction}
        if self.triplet_weight > 0:
            anchor, positive, negative = class_triplets(batch["y"])
            who = torch.randint(len(codes), (3, len(anchor)), device=codes.device)
            losses["triplet"] = self.triplet_weight * triplet_loss(
                codes[who[0], anchor], codes[who[1], positive], codes[who[2], negative], self.margin
            )
        return latent, losses

    def extra_repr(self) -> str:
        return f"margin={self.margin}, triplet_weight={self.triplet_weight}"


class MultiTeacherDistillation(Method):
    """λ·CE(y, softmax(z)) (``labels``) + (1 − λ)·T²·CE(q, softmax(z/T)) (``teachers``, q the
    column ``soft_labels``: merged soft labels at temperature T) + γ·‖P(h) − s‖² (``latent``,
    the mean squared error between the student's hidden layer h through its linear
    projection P and the column ``latent`` s, the teachers' shared latent). λ and T are buffers
    (`register_lam_temperature`), so that `crossdistill.training.fit_many` trains methods of a
    (λ, T) sweep as one stack.

    Args:
        student: maps ``x`` ``(B, ...)`` to logits ``(B, C)``.
        lam: weight λ of the true labels, in [0, 1]; at 1 no soft labels are read.
        temperature: T of the soft labels (they come in already softened at T).
        latent_weight: γ ≥ 0; at 0 no latent is read and the student has no projection.
        layer: the student's submodule (module path) whose output is h, with latent_weight > 0.
        hidden_size: h's size (flattened), with latent_weight > 0.
        latent_size: s's size, with latent_weight > 0.
    """

    def __init__(
        self,
        student: nn.Module,
        *,
        lam: float = 0.5,
        temperature: float = 1.0,
        latent_weight: float = 0.0,
        layer: str | None = None,
        hidden_size: int | None = None,
        latent_size: int | None = None,
    ) -> None:
        super().__init__(student)
        register_lam_temperature(self, lam, temperature)
        if latent_weight < 0:
            raise ValueError(f"latent_weight must be ≥ 0, got {latent_weight}")
        self.latent_weight = latent_weight
        self.layer = layer
        columns = ["x", "y"] + (["soft_labels"] if lam < 1 else [])
        if latent_weight > 0:
            if layer is None or hidden_size is None or latent_size is None:
                raise ValueError("a latent term needs the student's layer, hidden and latent size")
            self.projection = nn.Linear(hidden_size, latent_size)
            columns.append("latent")
        self.columns = tuple(columns)

    def forward_train(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        layers = [self.layer] if self.latent_weight > 0 else []
        with capture(self.student, layers, detach=False) as recorded:
            output = self.student(batch["x"])
        losses = {"labels": self.lam * F.cross_entropy(output, batch["y"])}
        if "soft_labels" in self.columns:  # λ < 1, fixed when built (alike in a stack)
            soft = F.cross_entropy(output / self.temperature, batch["soft_labels"])
            losses["teachers"] = self.teacher_weight * (soft * self.temperature_squared)
        if self.latent_weight > 0:
            hidden = recorded[self.layer][0]
            projected = self.projection(hidden.reshape(len(hidden), -1))
            losses["latent"] = self.latent_weight * F.mse_loss(projected, batch["latent"])
        return output, losses

    def project(self, x: Tensor) -> Tensor:
        """The student's hidden layer through its projection, ``(N, latent_size)``, no grad."""
        with torch.no_grad(), capture(self.student, [self.layer]) as recorded:
            self.student(x)
            hidden = recorded[self.layer][0]
            return self.projection(hidden.reshape(len(hidden), -1))

    def extra_repr(self) -> str:
        return (
            f"lam={float(self.lam):g}, temperature={float(self.temperature):g}, "
            f"latent_weight={self.latent_weight}, layer={self.layer!r}"
        )
