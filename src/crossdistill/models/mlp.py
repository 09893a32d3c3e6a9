"""Fully connected networks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

from torch import nn

from ..registries import models

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
}


@models.register("mlp")
def mlp(
    in_shape: Sequence[int],
    num_outputs: int,
    hidden: Sequence[int] = (64,),
    activation: str = "relu",
) -> nn.Sequential:
    """Flatten → [Linear → activation] per ``hidden`` width → Linear: (N, *in_shape) → (N, R).

    E.g. ``mlp((1, 28, 28), 10)`` is 784-64-10; ``hidden=(1200, 1200)`` gives 784-1200-1200-10.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}"
        )
    if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in hidden):
        raise ValueError(f"hidden: expected positive integer widths, found {list(hidden)}")
    widths = [math.prod(in_shape), *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for width_in, width_out in pairwise(widths):
        layers += [nn.Linear(width_in, width_out), ACTIVATIONS[activation]()]
    layers.append(nn.Linear(widths[-1], num_outputs))
    return nn.Sequential(*layers)
