"""Recurrent networks reading an image row by row."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..registries import models


class RowLSTM(nn.Module):
    """An image (N, C, H, W) read as a sequence of H rows of C·W values (step t holds row t of
    every channel, channel-major: feature ``c·W + w``), one ``nn.LSTM`` (batch_first, zero
    initial state) over the rows, then ``head``, a Linear from the last step's hidden state to
    the R outputs: (N, C, H, W) → (N, R)."""

    def __init__(self, in_shape: Sequence[int], num_outputs: int, hidden: int = 64) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"lstm needs in_shape (C, H, W), got {tuple(in_shape)}")
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden: expected a positive integer, found {hidden!r}")
        channels, _, width = in_shape
        self.lstm = nn.LSTM(channels * width, hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")
        n, channels, height, width = x.shape
        steps = x.permute(0, 2, 1, 3).reshape(n, height, channels * width)
        outputs, _ = self.lstm(steps)
        return self.head(outputs[:, -1])


@models.register("lstm")
def lstm(in_shape: Sequence[int], num_outputs: int, hidden: int = 64) -> RowLSTM:
    """A :class:`RowLSTM`: the H rows of a (C, H, W) image as H steps of C·W features, ``hidden``
    LSTM units, a Linear from the last step: (N, C, H, W) → (N, R).

    E.g. ``lstm((1, 28, 28), 10)`` reads 28 steps of 28 pixels.
    """
    return RowLSTM(in_shape, num_outputs, hidden)
