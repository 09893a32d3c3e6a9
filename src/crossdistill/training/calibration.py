"""Calibration of a classifier's probabilities: the reliability of its confidence, binned."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

ECE_BINS = 15
"""Equal-width confidence bins of the expected calibration error (Guo et al., 2017)."""


@dataclass(frozen=True)
class Reliability:
    """A classifier's confidence against its accuracy in equal-width bins of [0, 1].

    Bin b holds the rows whose confidence (the largest softmax probability) lies in
    [b / B, (b + 1) / B), the last bin also 1 (the binning of torchmetrics). Each field is
    ``(B,)``: ``count`` rows per bin, their mean ``confidence`` and their ``accuracy`` (both 0
    in an empty bin)."""

    count: Tensor
    confidence: Tensor
    accuracy: Tensor

    @property
    def error(self) -> float:
        """The expected calibration error Σ_b (n_b / N) |accuracy_b − confidence_b|, in [0, 1]."""
        gap = (self.accuracy - self.confidence).abs()
        return float((self.count * gap).sum() / self.count.sum())


def reliability(output: Tensor, y: Tensor, bins: int = ECE_BINS) -> Reliability:
    """The `Reliability` of logits (or log-probabilities) ``output`` ``(N, C)`` against class
    labels ``y`` ``(N,)``, in ``bins`` equal-width bins.

    Raises:
        ValueError: no rows, ``bins`` < 1, or ``output`` and ``y`` of other shapes.
    """
    if bins < 1:
        raise ValueError(f"bins: expected at least 1, found {bins}")
    if output.ndim != 2 or y.shape != (len(output),) or not len(output):
        raise ValueError(
            f"expected logits (N, C) and labels (N,) with N ≥ 1, found {tuple(output.shape)} "
            f"and {tuple(y.shape)}"
        )
    probabilities = output.detach().double().softmax(1)
    confidence, predicted = probabilities.max(1)
    correct = (predicted == y.to(output.device)).double()
    index = torch.floor(confidence * bins).long().clamp(0, bins - 1)
    count = torch.zeros(bins, dtype=torch.float64, device=output.device)
    count.index_add_(0, index, torch.ones_like(confidence))
    sums = torch.zeros(2, bins, dtype=torch.float64, device=output.device)
    sums[0].index_add_(0, index, confidence)
    sums[1].index_add_(0, index, correct)
    means = sums / count.clamp(min=1)
    return Reliability(count.cpu(), means[0].cpu(), means[1].cpu())


def expected_calibration_error(output: Tensor, y: Tensor, bins: int = ECE_BINS) -> float:
    """The expected calibration error of logits ``output`` ``(N, C)`` against labels ``y``
    ``(N,)``, in [0, 1]: `reliability`'s `Reliability.error`."""
    return reliability(output, y, bins).error
