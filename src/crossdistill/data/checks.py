"""Checks every loaded dataset passes before anything trains on it.

Labels must lie inside the classes the dataset declares (a single label 200 would otherwise make
a 201-class model), and the parts of one domain (Big, Small, Test; or Train, Test) must hold the
same kind of inputs and targets. A failure raises `DataFormatError` saying where (the split, and
the file when it is known), what was expected and what was found.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .idx import DataFormatError

_SHOWN = 5
"""How many offending rows a message lists at most."""


def check_num_classes(num_classes: int | None, owner: str) -> None:
    """Raise ValueError unless ``num_classes`` is None or an int ≥ 1 (``owner`` names it)."""
    if num_classes is None:
        return
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"{owner}: num_classes must be a positive integer or None, found {num_classes!r}"
        )


def check_labels(y: Tensor, num_classes: int, where: str, owner: str) -> None:
    """Raise unless ``y`` is ``(N,)`` integer class indices in ``[0, num_classes)``.

    Args:
        y: the labels.
        num_classes: the classes declared.
        where: the labels' place, first in the message, e.g. ``"Test"`` or
            ``"/data/train-labels-idx1-ubyte.gz: Train"``.
        owner: who declares the classes, e.g. ``"fashion_mnist"``.

    Raises:
        DataFormatError: e.g. ``"Train label 200 at row 17 outside 0–9: fashion_mnist has 10
            classes"`` (rows counted from 0; further offending rows are counted and the first
            few listed), or ``"Test labels: expected integer class indices (N,), found float32
            (N, 2)"``.
    """
    if y.ndim != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise DataFormatError(
            f"{where} labels: expected integer class indices (N,) for the {num_classes} classes "
            f"of {owner}, found {describe(y)}"
        )
    outside = ((y < 0) | (y >= num_classes)).nonzero().squeeze(1)
    if not len(outside):
        return
    row = int(outside[0])
    more = ""
    if len(outside) > 1:
        listed = ", ".join(map(str, outside[1:_SHOWN].tolist()))
        etc = ", …" if len(outside) > _SHOWN else ""
        more = f" ({len(outside)} of {len(y)} labels outside, also at rows {listed}{etc})"
    raise DataFormatError(
        f"{where} label {int(y[row])} at row {row} outside 0–{num_classes - 1}{more}: "
        f"{owner} has {num_classes} classes"
    )


def check_alike(what: str, tensors: Mapping[str, Tensor]) -> None:
    """Raise unless the ``tensors`` (e.g. each split's inputs) agree in dtype and row shape.

    Args:
        what: what the tensors are, for the message (``"inputs"``, ``"targets"``).
        tensors: split name → tensor ``(N, ...)``; the first one is the reference.

    Raises:
        DataFormatError: e.g. ``"Test inputs are float32 (N, 3, 32, 32), expected float32
            (N, 1, 28, 28) as in Big"``.
    """
    (first, reference), *others = tensors.items()
    for name, tensor in others:
        if tensor.dtype != reference.dtype or tensor.shape[1:] != reference.shape[1:]:
            raise DataFormatError(
                f"{name} {what} are {describe(tensor)}, expected {describe(reference)} "
                f"as in {first}"
            )


def describe(tensor: Tensor) -> str:
    """A tensor's dtype and shape with N for its rows, e.g. ``"float32 (N, 1, 28, 28)"``."""
    dtype = str(tensor.dtype).removeprefix("torch.")
    if tensor.ndim == 0:
        return f"{dtype} scalar"
    rows = ", ".join(["N", *map(str, tensor.shape[1:])])
    return f"{dtype} ({rows}{',' if tensor.ndim == 1 else ''})"
