"""PNG figures: atomic writing, image tiles and before/after sheets (for run directories)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from .files import write_if_changed


def tile(images: Tensor, columns: int) -> np.ndarray:
    """Images ``(R·columns, C, H, W)`` (C = 1 or 3) as one ``(R·H, columns·W[, 3])`` array."""
    rows = len(images) // columns
    _, channels, height, width = images.shape
    grid = images.detach().cpu().reshape(rows, columns, channels, height, width)
    grid = grid.permute(0, 3, 1, 4, 2).reshape(rows * height, columns * width, channels)
    return (grid[..., 0] if channels == 1 else grid.clamp(0, 1)).numpy()


def save_figure(figure: Figure, path: str | Path) -> None:
    """Write ``figure`` as a PNG at ``path``, atomically (not at all if the file already holds
    that image)."""
    png = io.BytesIO()
    figure.savefig(png, dpi=120, format="png")
    write_if_changed(path, png.getvalue())


def plot_before_after(
    images: Tensor, mapped: Tensor, path: str | Path, titles: tuple[str, str] = ("x", "φ(x)")
) -> None:
    """Save a PNG of ``images`` ``(N, C, H, W)`` in [0, 1] (top row) above ``mapped`` (below)."""
    figure = Figure(figsize=(max(4.0, 0.6 * len(images)), 2.8))
    for ax, row, title in zip(figure.subplots(2, 1), [images, mapped], titles, strict=True):
        ax.imshow(tile(row, len(row)), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title)
        ax.set_axis_off()
    save_figure(figure, path)
