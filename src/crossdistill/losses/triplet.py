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
