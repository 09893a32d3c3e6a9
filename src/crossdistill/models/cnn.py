"""Small convolutional networks."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..registries import models


@models.register("cnn")
def cnn(
    in_shape: Sequence[int],
    num_outputs: int,
    channels: Sequence[int] = (32, 64),
    hidden: int = 128,
    batch_norm: bool = False,
) -> nn.Sequential:
    """[Conv3×3 (padding 1) → ReLU → MaxPool2] per ``channels`` entry, then Flatten → Linear
    (``hidden``) → ReLU → Linear: (N, C, H, W) → (N, R).

    ``batch_norm`` puts a ``BatchNorm2d`` after each convolution, before its ReLU, and leaves
    that convolution without a bias: the batch norm subtracts the batch mean, so such a bias
    would get a zero gradient up to rounding, which Adam would turn into steps of random sign.
    The default, False, builds the same modules, and draws the same initial weights, as before
    the option.

    Each pooling halves H and W (rounding down), so 28×28, 32×32 and 8×8 inputs all fit the
    default two stages; an input too small for the stages is a ``ValueError``.
    """
    if len(in_shape) != 3:
        raise ValueError(f"cnn needs in_shape (C, H, W), got {tuple(in_shape)}")
    sizes = [*channels, hidden]
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes):
        raise ValueError(
            f"channels and hidden: expected positive integers, found {list(channels)}, {hidden}"
        )
    if not isinstance(batch_norm, bool):
        raise ValueError(f"batch_norm: expected true or false, found {batch_norm!r}")
    in_channels, height, width = in_shape
    layers: list[nn.Module] = []
    for out_channels in channels:
        layers.append(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=not batch_norm)
        )
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
        in_channels, height, width = out_channels, height // 2, width // 2
    if height < 1 or width < 1:
        raise ValueError(f"in_shape {tuple(in_shape)} is too small for {len(channels)} poolings")
    layers += [
        nn.Flatten(),
        nn.Linear(in_channels * height * width, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_outputs),
    ]
    return nn.Sequential(*layers)
