"""Intermediate activations by module path, taken with forward hooks (no surgery on the model)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import Tensor, nn


@contextmanager
def capture(
    model: nn.Module, layers: Sequence[str], detach: bool = True
) -> Iterator[dict[str, list[Tensor]]]:
    """Record the outputs of ``model``'s submodules ``layers`` while inside.

    Args:
        model: any module; ``layers`` name its submodules by path as ``named_modules`` does
            (``"1"`` in a ``Sequential``, ``"features.3"``, ``"blocks.0.conv"``).
        layers: the paths to record.
        detach: record the outputs detached (a teacher's features); ``False`` keeps them in the
            graph, for a loss on a student's hidden layer.

    Yields:
        ``{layer: [output of each forward call while inside, ...]}``; the hooks are removed on
        exit.

    Raises:
        ValueError: a path names no submodule (the message lists the model's paths).
    """
    modules = dict(model.named_modules())
    unknown = [layer for layer in layers if layer not in modules or layer == ""]
    if unknown:
        paths = ", ".join(repr(name) for name in modules if name)
        raise ValueError(f"{type(model).__name__} has no submodule {unknown[0]!r}; it has {paths}")
    recorded: dict[str, list[Tensor]] = {layer: [] for layer in layers}

    def hook(layer: str):
        def record(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            if not isinstance(output, Tensor):
                raise TypeError(
                    f"submodule {layer!r} returns {type(output).__name__}, not a tensor"
                )
            recorded[layer].append(output.detach() if detach else output)

        return record

    handles = [modules[layer].register_forward_hook(hook(layer)) for layer in layers]
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()
