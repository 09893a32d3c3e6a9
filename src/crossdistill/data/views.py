"""Seeded augmented views of images for consistent distillation (Beyer et al., 2022, "Knowledge
distillation: a good teacher is patient and consistent"): view k of row i is a pure function of
(seed, i, k), so the student and, through φ, the teacher can see the very same view, and the
teacher's outputs on K views can be computed once and reused for every epoch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

_MASK = 0xFFFFFFFF


def _uniform(seed: int, rows: Tensor, views: Tensor, stream: int) -> Tensor:
    """A float in [0, 1) for each (row, view) pair, a hash of (seed, row, view, stream):
    the same numbers on every call and device (32-bit integer mixing, no generator state)."""
    h = rows.long() * 0x9E3779B1 + views.long() * 0x85EBCA77 + stream * 0xC2B2AE3D + seed
    h = h & _MASK
    for _ in range(3):
        h = ((h ^ (h >> 16)) * 0x45D9F3B) & _MASK
    h = h ^ (h >> 16)
    return h.double().div(2.0**32)


@dataclass(frozen=True)
class Views:
    """K augmented views of every row of image inputs ``(N, C, H, W)``: a random shift of up to
    ``shift`` pixels each way (zero padding), a horizontal flip with probability ½ when ``flip``,
    and, when ``mixup`` > 0, the image mixed with another row's, ``(1 − m)·x_i + m·x_j`` with m
    uniform in [0, ``mixup``] and j a random row. Every draw is a hash of (``seed``, row, view),
    so a view is the same whenever and wherever it is made.

    Only the K × N teacher outputs are ever stored (K·N·R floats); the views themselves are made
    on the fly, one batch (for the student) or one view of all rows (for the teacher) at a time.

    Args:
        count: K, the views per row.
        shift, flip, mixup, seed: as above.
    """

    count: int
    shift: int = 2
    flip: bool = False
    mixup: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("count", "shift", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name}: expected a whole number, found {value!r}")
        if self.count < 1:
            raise ValueError(f"count: expected at least 1 view, found {self.count}")
        if self.shift < 0:
            raise ValueError(f"shift: expected 0 or more pixels, found {self.shift}")
        if not 0.0 <= self.mixup <= 1.0:
            raise ValueError(f"mixup: expected a weight in [0, 1], found {self.mixup}")

    def make(self, x: Tensor, rows: Tensor, views: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The views ``views`` (B,) of the rows ``rows`` (B,) of ``x`` ``(N, C, H, W)``.

        Returns:
            The images ``(B, C, H, W)``, each mixed-in partner row ``(B,)`` and its weight m
            ``(B,)`` (0 without ``mixup``).
        """
        if x.dim() != 4:
            raise ValueError(f"views need images (N, C, H, W); found {tuple(x.shape)}")
        rows, views = rows.to(x.device), views.to(x.device)
        images = x[rows]
        if self.shift:
            images = self._shifted(images, rows, views)
        if self.flip:
            flipped = _uniform(self.seed, rows, views, 3) < 0.5
            images = torch.where(flipped[:, None, None, None], images.flip(-1), images)
        partner = (_uniform(self.seed, rows, views, 4) * len(x)).long().clamp_(max=len(x) - 1)
        weight = (_uniform(self.seed, rows, views, 5) * self.mixup).to(x.dtype)
        if self.mixup:
            others = x[partner]
            if self.shift:
                others = self._shifted(others, partner, views)
            images = (1 - weight)[:, None, None, None] * images + weight[
                :, None, None, None
            ] * others
        return images, partner, weight

    def __call__(self, x: Tensor, view: int) -> Tensor:
        """View ``view`` of every row of ``x`` ``(N, C, H, W)`` (what the teacher sees)."""
        rows = torch.arange(len(x), device=x.device)
        return self.make(x, rows, torch.full_like(rows, view))[0]

    def _shifted(self, images: Tensor, rows: Tensor, views: Tensor) -> Tensor:
        """``images`` (B, C, H, W) moved by the (row, view)'s shift, zeros coming in."""
        span = 2 * self.shift + 1
        dy = (_uniform(self.seed, rows, views, 1) * span).long().clamp_(max=span - 1)
        dx = (_uniform(self.seed, rows, views, 2) * span).long().clamp_(max=span - 1)
        height, width = images.shape[-2:]
        padded = torch.nn.functional.pad(images, [self.shift] * 4)
        ys = torch.arange(height, device=images.device)[None, :] + dy[:, None]  # (B, H)
        xs = torch.arange(width, device=images.device)[None, :] + dx[:, None]  # (B, W)
        batch = torch.arange(len(images), device=images.device)[:, None, None]
        moved = padded[batch, :, ys[:, :, None], xs[:, None, :]]  # (B, H, W, C)
        return moved.permute(0, 3, 1, 2)
