"""In-memory datasets: a pair of tensors sliced by index, never read sample by sample."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset


@dataclass(frozen=True)
class ArrayData(Dataset):
    """Inputs and targets held as two tensors with the same first dimension.

    Attributes:
        x: inputs, ``(N, ...)`` float32 (images ``(N, C, H, W)`` with values in [0, 1]).
        y: targets, ``(N,)`` int64 class indices, or ``(N,)`` / ``(N, K)`` float32 for regression.
    """

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"x and y differ in length: x has {self.x.shape[0]} rows, y has {self.y.shape[0]}"
            )

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.x[index], self.y[index]

    def columns(self, **extra: Tensor) -> Columns:
        """The rows as named columns ``{"x": x, "y": y, **extra}`` (see `Columns`)."""
        return Columns({"x": self.x, "y": self.y, **extra})

    def subset(self, index: Tensor) -> ArrayData:
        """The rows ``index`` (a ``(M,)`` int64 tensor) as a new dataset."""
        return ArrayData(self.x[index], self.y[index])

    def map_x(self, fn: Callable[[Tensor], Tensor]) -> ArrayData:
        """The same targets with inputs ``fn(x)`` (e.g. a mapping φ applied once)."""
        with torch.no_grad():
            return ArrayData(fn(self.x), self.y)

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> ArrayData:
        """Materialise any map-style ``Dataset`` of ``(x, y)`` pairs into two stacked tensors."""
        if isinstance(dataset, ArrayData):
            return dataset
        xs, ys = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
        return cls(torch.stack([torch.as_tensor(x) for x in xs]), torch.as_tensor(ys))

    @property
    def num_classes(self) -> int:
        """Number of classes, ``max(y) + 1`` (classification targets only)."""
        return int(self.y.max()) + 1


class Columns(dict[str, Tensor]):
    """Named tensors with the same first dimension N, sliced together by the same row indices.

    A training batch is ``{name: column[index]}``: ``x`` (inputs), ``y`` (targets) and any
    precomputed column, e.g. ``x_star`` (privileged inputs), ``teacher/<name>`` (a teacher's
    outputs) or ``features/<name>/<layer>`` (a teacher layer's activations).
    """

    def __init__(self, columns: Mapping[str, Tensor]) -> None:
        super().__init__(columns)
        lengths = {name: len(column) for name, column in self.items()}
        if len(set(lengths.values())) > 1:
            found = ", ".join(f"{name}: {n}" for name, n in lengths.items())
            raise ValueError(f"columns must have the same number of rows; found {found}")

    @property
    def num_rows(self) -> int:
        """N, the rows every column has (0 when there are no columns)."""
        return len(next(iter(self.values()))) if self else 0

    def subset(self, index: Tensor) -> Columns:
        """The rows ``index`` (a ``(M,)`` int64 tensor) of every column."""
        return Columns({name: column[index] for name, column in self.items()})


LABELLED = "labelled"
"""The column that marks the rows with a label, bool ``(N,)`` (see `with_unlabelled`)."""


def with_unlabelled(data: ArrayData, unlabelled: Tensor) -> Columns:
    """The columns of ``data`` (N rows) followed by the inputs ``unlabelled`` ``(U, ...)``,
    which have no label: ``x`` (N + U, ...), ``y`` with a zero placeholder on the U new rows
    (never read by a method that reads ``labelled``), and ``labelled`` (N + U,) bool, True on
    ``data``'s rows.

    Raises:
        ValueError: ``unlabelled`` is not shaped like ``data.x`` after the first dimension.
    """
    if unlabelled.shape[1:] != data.x.shape[1:] or unlabelled.dtype != data.x.dtype:
        raise ValueError(
            f"unlabelled inputs must be shaped and typed like the labelled ones, (U, "
            f"{', '.join(map(str, data.x.shape[1:]))}) {data.x.dtype}; found "
            f"{tuple(unlabelled.shape)} {unlabelled.dtype}"
        )
    rows = len(unlabelled)
    return Columns(
        {
            "x": torch.cat([data.x, unlabelled]),
            "y": torch.cat([data.y, data.y.new_zeros((rows, *data.y.shape[1:]))]),
            LABELLED: torch.cat(
                [torch.ones(len(data), dtype=torch.bool), torch.zeros(rows, dtype=torch.bool)]
            ),
        }
    )


def random_indices(n: int, first: int, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded random choice of ``first`` of ``range(n)`` and the rest, as two int64 tensors.

    The same ``seed`` always gives the same split; the two parts are disjoint and cover ``n``.
    """
    if not 0 <= first <= n:
        raise ValueError(f"cannot take {first} rows from a dataset of {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[:first], order[first:]


def random_split(data: ArrayData, first: int, seed: int) -> tuple[ArrayData, ArrayData]:
    """`random_indices` applied to ``data``: a seeded random part of ``first`` rows, the rest."""
    chosen, rest = random_indices(len(data), first, seed)
    return data.subset(chosen), data.subset(rest)
