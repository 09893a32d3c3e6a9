"""Multi-teacher distillation through a shared latent space (Sedova, Gorpinich, Bakhteev and
Strijov, 2022, "Knowledge distillation using a representation of the sample in a shared latent
space of models").

Teachers with incomplete knowledge (each knows some of the classes, sees its own part or
transform of the input, or was trained on some of the rows) teach one student in two ways:

- **soft labels**, merged over the full label space by `merge_soft_labels` (the cross-entropy
  rule of Vongkulbhisal et al., 2019), with equal teacher weights (the average of the
  teachers' probabilities when every teacher knows every class; TextBrewer's multi-teacher
  distiller averages logits instead) or per-sample `confidence_weights` (CA-MKD, Zhang et al.,
  2022);
- a **shared latent**: each teacher's hidden layer, reduced by `PrincipalComponents`, encoded
  by a `LatentAutoencoder` into one latent space of a configured size, trained by
  `LatentAlignment` (reconstruction, plus the triplet loss mined by class); the student's
  hidden layer, through its own linear projection, is trained to match it
  (`MultiTeacherDistillation`). The same method with one target per teacher (its reduced
  hidden layer, its own projection) is per-teacher FitNets hints, the control that tells a
  shared latent from any hint.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..losses import class_triplets, semi_hard_triplets, triplet_loss
from ..training.hooks import capture
from .base import Batch, Method, register_lam_temperature, register_setting

MERGE_TOLERANCE = 1e-9
"""`merge_soft_labels` stops when every row's gradient (in logit space) is at most this, in
max norm."""

MERGE_ITERATIONS = 100
"""The most Newton steps `merge_soft_labels` takes before it reports that it did not converge."""

MERGE_CHUNK = 4096
"""Rows `merge_soft_labels` solves at once (its memory is ``MERGE_CHUNK`` × C² doubles)."""


def merge_soft_labels(
    probabilities: Sequence[Tensor],
    classes: Sequence[Tensor],
    num_classes: int,
    weights: Tensor | None = None,
    tolerance: float = MERGE_TOLERANCE,
) -> Tensor:
    """One distribution over all ``num_classes`` classes from teachers that each know a subset.

    The rule is the cross-entropy one of Vongkulbhisal et al. (2019, "Unifying Heterogeneous
    Classifiers with Distillation"): teacher i's distribution p_i over its classes L_i is read as
    the merged q conditioned on L_i, and q minimises
    Σ_i w_i Σ_{l∈L_i} −p_i(l) log(q_l / Σ_{k∈L_i} q_k) on the simplex. With q = softmax(u) this
    is the convex f(u) = Σ_i w_i (logsumexp_{L_i}(u) − Σ_{l∈L_i} p_i(l) u_l), whose gradient is
    Σ_i w_i (softmax_{L_i}(u) − p_i) on L_i. It is solved per row in float64 by Newton's method
    with a backtracking line search, until the gradient's max norm is at most ``tolerance``
    (`MERGE_ITERATIONS` steps at most; more raise `RuntimeError`).

    When every teacher knows every class the minimiser is the weighted average
    Σ_i w_i p_i / Σ_i w_i. f fixes only the ratios of q within each group of classes that
    teachers with a positive weight link (a class no teacher knows is a group of its own), so
    each group gets the share of the uniform distribution: a group of k of the C classes has
    mass k/C (one teacher that knows k classes gives them mass k/C).

    Args:
        probabilities: per teacher, ``(N, K_i)`` distributions over its classes.
        classes: per teacher, ``(K_i,)`` int64 indices of its classes in ``0 … num_classes − 1``.
        num_classes: C, the size of the full label space.
        weights: ``(N, M)`` non-negative per-row teacher weights (default equal); a row whose
            weights are all zero takes equal weights.
        tolerance: the largest gradient (max norm, in probability units) accepted as converged.

    Returns:
        ``(N, C)`` rows that are probability distributions, in the dtype of ``probabilities``.
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
    # each teacher as a full-width row: its p scattered on L_i, and L_i as a 0/1 mask
    masks = torch.zeros(len(classes), num_classes, dtype=torch.float64)
    spread = torch.zeros(rows, len(classes), num_classes, dtype=torch.float64)
    for i, (p, known) in enumerate(zip(probabilities, classes, strict=True)):
        masks[i, known.cpu()] = 1.0
        exact = p.detach().cpu().double()  # renormalised: float32 rows sum to 1 ± 1e-7
        spread[:, i, known.cpu()] = exact / exact.sum(1, keepdim=True).clamp_min(1e-300)
    w = weights.detach().cpu().double()
    merged = torch.cat(
        [
            _newton_merge(spread[k : k + MERGE_CHUNK], masks, w[k : k + MERGE_CHUNK], tolerance)
            for k in range(0, rows, MERGE_CHUNK)
        ]
    )
    return merged.to(probabilities[0])


def _newton_merge(p: Tensor, masks: Tensor, w: Tensor, tolerance: float) -> Tensor:
    """`merge_soft_labels` on float64 ``p`` ``(N, M, C)`` (zero off each teacher's classes),
    ``masks`` ``(M, C)`` and weights ``w`` ``(N, M)``: the ``(N, C)`` merged rows."""
    rows, _, size = p.shape
    on = masks.bool()

    def objective(u: Tensor) -> Tensor:
        inside = torch.where(on, u[:, None, :], -torch.inf)  # (N, M, C)
        per_teacher = torch.logsumexp(inside, 2) - (p * u[:, None, :]).sum(2)
        return (w * per_teacher).sum(1)

    def conditioned(u: Tensor) -> Tensor:  # softmax over each L_i, (N, M, C)
        return torch.where(on, u[:, None, :], -torch.inf).softmax(2).nan_to_num(0.0)

    # groups of classes linked by weighted teachers: the null space of f's Hessian
    knowing = (w > 0).double()[:, :, None] * masks  # (N, M, C)
    linked = torch.matmul(knowing.transpose(1, 2), masks) > 0
    linked |= torch.eye(size, dtype=torch.bool)
    for _ in range(max(size - 1, 1).bit_length()):
        linked = torch.bmm(linked.double(), linked.double()) > 0
    projector = linked.double() / linked.sum(2, keepdim=True)
    ridge = 1e-12 * torch.eye(size, dtype=torch.float64)  # classes of probability ≈ 0
    # start: each class's mean probability over the teachers that know it
    known = (w[:, :, None] * masks).sum(1)
    start = (w[:, :, None] * p).sum(1) / known.clamp_min(1e-300)
    u = torch.where(known > 0, start.clamp_min(1e-300).log(), 0.0)
    for step_count in itertools.count():
        s = conditioned(u)
        weighted = w[:, :, None] * s
        gradient = weighted.sum(1) - (w[:, :, None] * p).sum(1)
        largest = float(gradient.abs().amax())
        if largest <= tolerance:
            break
        if step_count == MERGE_ITERATIONS or not math.isfinite(largest):
            raise RuntimeError(
                f"the soft-label merge did not converge in {step_count} Newton steps: the "
                f"largest gradient is {largest:.3g}, expected ≤ {tolerance:g}"
            )
        curvature = weighted.sum(1).diag_embed() - torch.bmm(weighted.transpose(1, 2), s)
        step = -torch.linalg.solve(curvature + projector + ridge, gradient)
        value, slope = objective(u), (gradient * step).sum(1)
        length = torch.ones(rows, dtype=torch.float64)
        searching = -slope > 1e-12  # below, f's change is rounding: Newton's own phase
        for _ in range(40):  # backtracking (Armijo), per row
            worse = objective(u + length[:, None] * step) > value + 1e-4 * length * slope
            short = worse & searching
            if not short.any():
                break
            length = torch.where(short, length / 2, length)
        u = u + length[:, None] * step
    q = u.softmax(1)
    group_mass = torch.bmm(linked.double(), q[:, :, None]).squeeze(2)  # each class's group mass
    share = linked.sum(2) / size
    return q / group_mass * share


def confidence_weights(
    probabilities: Sequence[Tensor], classes: Sequence[Tensor], labels: Tensor
) -> Tensor:
    """CA-MKD's per-sample teacher weights (Zhang et al., 2022), made safe for teachers that
    know some of the classes.

    With L_i = −log p_i(y) each teacher's cross-entropy on the true label, w_i = (1 −
    softmax(L)_i) / (M′ − 1) over the M′ teachers that know class y (a teacher that does not
    know it gets 0; if one teacher knows it, it gets 1; if none does, all get 1/M). A row on
    which the teachers with a positive weight do not together know every class that some
    teacher knows takes equal weights 1/M instead: there `merge_soft_labels` could not place
    the classes those teachers lack, and would give them the uniform share (with two teachers
    of classes 0–6 and 3–9, rows of class 0 would put 3/10 of their mass on classes 7–9).

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
    size = max(int(known.max()) for known in classes) + 1
    masks = torch.zeros(len(classes), size, dtype=torch.bool)
    for i, known in enumerate(classes):
        masks[i, known] = True
    covered = ((weights > 0).to(torch.long) @ masks.to(torch.long)) > 0  # (N, C)
    whole = (covered | ~masks.any(0)).all(1, keepdim=True)
    return torch.where(whole, weights, torch.full_like(weights, 1 / losses.shape[1]))


class PrincipalComponents(nn.Module):
    """Features ``(N, ...)`` (flattened to ``(N, d)``) centred, projected on their first
    ``reduce`` principal components (at most min(d, N)) and divided by one scale, so that the
    reduced features ``(N, r)`` have unit mean variance on the rows it was fitted on. Fitted
    here on ``features``, then frozen (buffers).

    Args:
        features: the ``(N, ...)`` rows the components and the scale are fitted on.
        reduce: the number of components kept.
    """

    def __init__(self, features: Tensor, reduce: int) -> None:
        super().__init__()
        flat = features.reshape(len(features), -1).float()
        centre = flat.mean(0)
        _, _, vh = torch.linalg.svd(flat - centre, full_matrices=False)
        basis = vh[: min(reduce, len(vh))].T.contiguous()
        self.register_buffer("centre", centre)
        self.register_buffer("basis", basis)
        self.register_buffer(
            "scale", ((flat - centre) @ basis).pow(2).mean().sqrt().clamp_min(1e-12)
        )

    @property
    def size(self) -> int:
        """r, the number of components kept."""
        return self.basis.shape[1]

    def forward(self, features: Tensor) -> Tensor:
        """The reduced features ``(N, r)`` of ``features`` ``(N, ...)``."""
        flat = features.reshape(len(features), -1).float()
        return (flat - self.centre) @ self.basis / self.scale


class LatentAutoencoder(nn.Module):
    """Teachers' hidden layers of any sizes mapped into one latent space of ``size`` dimensions.

    Per teacher t: its features ``(N, d_t)`` are reduced by `PrincipalComponents` (``reduce``
    components, fitted here on ``features``), then encoded by an MLP (``hidden`` units) into a
    code ``(N, size)``, L2-normalised to unit length with ``normalize`` (as FaceNet's
    embeddings, so that a triplet margin is measured on a fixed scale); the shared latent is
    the mean of the teachers' codes, and a decoder per teacher reconstructs its reduced
    features from it.

    Args:
        features: per teacher name, the features ``(N, ...)`` the PCA is fitted on.
        size: the latent's dimension.
        reduce: principal components kept per teacher.
        hidden: width of each encoder's and decoder's hidden layer.
        normalize: whether each code is scaled to unit L2 norm.
    """

    def __init__(
        self,
        features: Mapping[str, Tensor],
        size: int,
        reduce: int = 32,
        hidden: int = 64,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if not features:
            raise ValueError("the latent needs the features of at least one teacher")
        self.names = list(features)
        self.size, self.reduce, self.normalize = size, reduce, normalize
        self.reducers = nn.ModuleDict(
            {name: PrincipalComponents(value, reduce) for name, value in features.items()}
        )
        self.encoders, self.decoders = nn.ModuleDict(), nn.ModuleDict()
        for name, reducer in self.reducers.items():
            self.encoders[name] = nn.Sequential(
                nn.Linear(reducer.size, hidden), nn.ReLU(), nn.Linear(hidden, size)
            )
            self.decoders[name] = nn.Sequential(
                nn.Linear(size, hidden), nn.ReLU(), nn.Linear(hidden, reducer.size)
            )

    def reduced(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each teacher's features ``(N, ...)`` as its scaled principal components ``(N, r_t)``."""
        return {name: self.reducers[name](features[name]) for name in self.names}

    def codes(self, reduced: Mapping[str, Tensor]) -> Tensor:
        """The teachers' codes ``(M, N, size)`` of their reduced features (unit rows with
        ``normalize``)."""
        codes = torch.stack([self.encoders[name](reduced[name]) for name in self.names])
        return F.normalize(codes, dim=2) if self.normalize else codes

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        """The shared latent ``(N, size)`` of the teachers' features (the mean of their codes)."""
        return self.codes(self.reduced(features)).mean(0)

    def extra_repr(self) -> str:
        return (
            f"teachers={self.names}, size={self.size}, reduce={self.reduce}, "
            f"normalize={self.normalize}"
        )


class LatentAlignment(Method):
    """Trains a `LatentAutoencoder`: ``reconstruction``, the mean squared error of every
    teacher's reduced features decoded from the shared latent, and ``triplet``,
    ``triplet_weight`` × `triplet_loss` with margin ``margin`` on the teachers' codes, so that
    different teachers' codes of one class meet. ``mining`` picks the triplets within the
    batch: ``random`` (`class_triplets`: each row anchors once, with a random positive and
    negative, each the code of a random teacher) or ``semi_hard`` (`semi_hard_triplets` over
    the codes of every teacher and row: every same-class pair, with FaceNet's semi-hard
    negative). At ``triplet_weight=0`` the autoencoder is trained by reconstruction alone.

    Args:
        autoencoder: the model trained.
        columns: per teacher name (as in the autoencoder), the batch column of its features.
        margin: the triplet margin m, in squared latent units.
        triplet_weight: the triplet term's weight (≥ 0).
        mining: ``random`` or ``semi_hard``.
    """

    def __init__(
        self,
        autoencoder: LatentAutoencoder,
        columns: Mapping[str, str],
        margin: float = 0.2,
        triplet_weight: float = 1.0,
        mining: str = "semi_hard",
    ) -> None:
        super().__init__(autoencoder)
        if triplet_weight < 0:
            raise ValueError(f"triplet_weight must be ≥ 0, got {triplet_weight}")
        if mining not in ("random", "semi_hard"):
            raise ValueError(f"mining must be 'random' or 'semi_hard', got {mining!r}")
        self.feature_columns = dict(columns)
        self.margin, self.triplet_weight, self.mining = margin, triplet_weight, mining
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
            losses["triplet"] = self.triplet_weight * self._triplets(codes, batch["y"])
        return latent, losses

    def _triplets(self, codes: Tensor, labels: Tensor) -> Tensor:
        """The triplet loss of the codes ``(M, B, size)`` of a batch with ``labels`` ``(B,)``."""
        if self.mining == "semi_hard":
            flat = codes.reshape(-1, codes.shape[2])
            anchor, positive, negative = semi_hard_triplets(flat, labels.repeat(len(codes)))
            return triplet_loss(flat[anchor], flat[positive], flat[negative], self.margin)
        anchor, positive, negative = class_triplets(labels)
        who = torch.randint(len(codes), (3, len(anchor)), device=codes.device)
        return triplet_loss(
            codes[who[0], anchor], codes[who[1], positive], codes[who[2], negative], self.margin
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}, triplet_weight={self.triplet_weight}, mining={self.mining!r}"


class MultiTeacherDistillation(Method):
    """λ·CE(y, softmax(z)) (``labels``) + (1 − λ)·T²·CE(q, softmax(z/T)) (``teachers``, q the
    column ``soft_labels``: merged soft labels at temperature T) + γ·mean_j ‖P_j(h) − s_j‖²
    (``latent``: for each target column s_j, the mean squared error between the student's
    hidden layer h through its own linear projection P_j and s_j). One target ``latent`` (the
    teachers' shared latent) is the shared-latent method; one target per teacher (each
    teacher's reduced hidden layer) is per-teacher FitNets hints. λ and T are buffers
    (`register_lam_temperature`), so that `crossdistill.training.fit_many` trains methods of a
    (λ, T) sweep as one stack; so is γ (``latent_weight``).

    Args:
        student: maps ``x`` ``(B, ...)`` to logits ``(B, C)``.
        lam: weight λ of the true labels, in [0, 1]; at 1 no soft labels are read.
        temperature: T of the soft labels (they come in already softened at T).
        latent_weight: γ ≥ 0; at 0 no target is read and the student has no projection.
        layer: the student's submodule (module path) whose output is h, with latent_weight > 0.
        hidden_size: h's size (flattened), with latent_weight > 0.
        targets: with latent_weight > 0, each target column's name and size, ``{"latent": 16}``.
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
        targets: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(student)
        register_lam_temperature(self, lam, temperature)
        if latent_weight < 0:
            raise ValueError(f"latent_weight must be ≥ 0, got {latent_weight}")
        register_setting(self, "latent_weight", latent_weight)
        self.matches_hidden = latent_weight > 0  # γ is a buffer: a stack may sweep it
        self.layer = layer
        columns = ["x", "y"] + (["soft_labels"] if lam < 1 else [])
        if self.matches_hidden:
            if layer is None or hidden_size is None or not targets:
                raise ValueError("a latent term needs the student's layer, hidden size and targets")
            self.projections = nn.ModuleDict(
                {name: nn.Linear(hidden_size, size) for name, size in targets.items()}
            )
            columns += list(targets)
        self.columns = tuple(columns)

    def forward_train(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        layers = [self.layer] if self.matches_hidden else []
        with capture(self.student, layers, detach=False) as recorded:
            output = self.student(batch["x"])
        losses = {"labels": self.lam * F.cross_entropy(output, batch["y"])}
        if "soft_labels" in self.columns:  # λ < 1, fixed when built (alike in a stack)
            soft = F.cross_entropy(output / self.temperature, batch["soft_labels"])
            losses["teachers"] = self.teacher_weight * (soft * self.temperature_squared)
        if self.matches_hidden:
            hidden = recorded[self.layer][0].reshape(len(output), -1)
            matched = [F.mse_loss(P(hidden), batch[name]) for name, P in self.projections.items()]
            losses["latent"] = self.latent_weight * torch.stack(matched).mean()
        return output, losses

    def project(self, x: Tensor, target: str = "latent") -> Tensor:
        """The student's hidden layer through the projection of ``target``, ``(N, size)``, no
        grad."""
        with torch.no_grad(), capture(self.student, [self.layer]) as recorded:
            self.student(x)
            hidden = recorded[self.layer][0]
            return self.projections[target](hidden.reshape(len(hidden), -1))

    def extra_repr(self) -> str:
        return (
            f"lam={float(self.lam):g}, temperature={float(self.temperature):g}, "
            f"latent_weight={float(self.latent_weight):g}, layer={self.layer!r}"
        )
