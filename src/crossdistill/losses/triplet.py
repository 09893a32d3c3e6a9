"""The triplet loss (Schroff et al., 2015, "FaceNet"), with anchors, positives and negatives
mined by class."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def triplet_loss(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 1.0) -> Tensor:
    """Mean over triplets of max(0, m + ‖f(a) − f(p)‖² − ‖f(a) − f(n)‖²) (Schroff et al. write
    the sum; the mean makes the scale independent of the number of triplets).

    ``anchor``, ``positive`` and ``negative`` are embeddings ``(N, D)`` (row i is one triplet);
    ``margin`` m ≥ 0 is in squared embedding units. Returns a scalar: 0 when N = 0 (a batch
    from which `class_triplets` mines none, e.g. one row per class), not the NaN of an empty mean.
    """
    if not anchor.shape == positive.shape == negative.shape or anchor.dim() != 2:
        raise ValueError(
            f"anchor {tuple(anchor.shape)}, positive {tuple(positive.shape)} and negative "
            f"{tuple(negative.shape)} must all be (N, D)"
        )
    if margin < 0:
        raise ValueError(f"margin must be ≥ 0, got {margin}")
    near = (anchor - positive).pow(2).sum(1)
    far = (anchor - negative).pow(2).sum(1)
    return torch.relu(margin + near - far).sum() / max(len(anchor), 1)


class TripletLoss(nn.Module):
    """`triplet_loss` with its margin m held."""

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"margin must be ≥ 0, got {margin}")
        self.margin = margin

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return triplet_loss(anchor, positive, negative, self.margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


def class_triplets(
    labels: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Triplets mined by class among ``labels`` ``(N,)``: every row whose class has another row
    and which has a row of another class is an anchor, with a random positive (same class,
    another row) and a random negative (another class).

    Returns:
        Row indices ``(anchor, positive, negative)``, each ``(M,)`` with M ≤ N (empty when no
        row can anchor).
    """
    same = labels[:, None] == labels[None, :]
    positives = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    negatives = ~same
    anchors = (positives.any(1) & negatives.any(1)).nonzero().squeeze(1)
    if len(anchors) == 0:
        empty = anchors.new_empty(0)
        return empty, empty, empty
    scores = torch.rand(len(anchors), len(labels), generator=generator, device=labels.device)
    positive = torch.where(positives[anchors], scores, -1.0).argmax(1)
    negative = torch.where(negatives[anchors], scores, -1.0).argmax(1)
    return anchors, positive, negative


def semi_hard_triplets(embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Triplets with semi-hard negatives (Schroff et al., 2015), chosen by the rule of TensorFlow
    Addons' ``triplet_semihard_loss``: every ordered pair (a, p), a ≠ p, of one class among
    ``labels`` ``(N,)`` whose anchor a has a row of another class is a triplet; with squared
    Euclidean distances d between rows of ``embeddings`` ``(N, D)``, its negative n is the row of
    another class with the smallest d(a, n) among those with d(a, n) > d(a, p) (farther than the
    positive), or, when there is none, the one with the largest d(a, n). Ties go to the lower row.

    The rule does not restrict to FaceNet's band d(a, p) < d(a, n) < d(a, p) + m, so it takes no
    margin: m enters only `triplet_loss`. Distances are computed without gradient (mining picks
    rows; ``triplet_loss(embeddings[a], embeddings[p], embeddings[n], m)`` carries it). Time and
    memory are O(N²) (a few (N, N) tensors): fine for N up to a few thousand. So is M, the number
    of triplets; the loss on them gathers three (M, D) tensors.

    Returns:
        Row indices ``(anchor, positive, negative)``, each ``(M,)`` on ``labels``' device, ordered
        by anchor then positive: M = Σ n_c (n_c − 1) over the classes c (n_c rows each), or 0
        (empty) when all rows are of one class.
    """
    if embeddings.dim() != 2 or labels.shape != (len(embeddings),):
        raise ValueError(
            f"embeddings {tuple(embeddings.shape)} must be (N, D) and labels "
            f"{tuple(labels.shape)} must be (N,)"
        )
    device = labels.device
    n = len(labels)
    same = labels[:, None] == labels[None, :]
    negatives = ~same
    pairs = same & ~torch.eye(n, dtype=torch.bool, device=device) & negatives.any(1, keepdim=True)
    anchor, positive = pairs.nonzero().unbind(1)
    if len(anchor) == 0:
        return anchor, positive, positive
    with torch.no_grad():
        x = embeddings.detach().to(device, torch.promote_types(embeddings.dtype, torch.float32))
        sq = x.pow(2).sum(1)
        d = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(0)
        # Per anchor, its negatives' distances ascending (others pushed to the end as +inf); the
        # first one > d(a, p) is the semi-hard negative, if it is a negative at all.
        far, order = torch.where(negatives, d, torch.inf).sort(dim=1, stable=True)
        first = torch.searchsorted(far, d, right=True).clamp_max(n - 1)  # (N, N): row a, col p
        semi_hard = order.gather(1, first)
        found = first < negatives.sum(1, keepdim=True)
        hardest = torch.where(negatives, d, -torch.inf).argmax(1)
        negative = torch.where(found, semi_hard, hardest[:, None])[anchor, positive]
    return anchor, positive, negative
