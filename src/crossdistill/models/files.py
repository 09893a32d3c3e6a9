"""Models a user already trained, read from files: a state dict for a model spec, or TorchScript."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import CrossdistillError


class ModelFileError(CrossdistillError, ValueError):
    """A model file that is missing, unreadable, or does not fit; the message names the file."""


def load_state_dict_file(model: nn.Module, path: str | Path) -> nn.Module:
    """``model`` with the weights of ``path`` (``torch.save(model.state_dict(), path)``).

    Raises:
        ModelFileError: the file is missing, is not a saved state dict, or its keys or shapes
            do not match ``model`` (the message lists the missing, unexpected and
            mismatched entries).
    """
    path = Path(path)
    state = _read(path, lambda: torch.load(path, map_location="cpu", weights_only=True))
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelFileError(
            f"{path}: expected a state dict (torch.save(model.state_dict(), path)), found "
            f"{type(state).__name__}"
        )
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k}: shape {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if problems:
        raise ModelFileError(
            f"{path} does not fit the model ({type(model).__name__}): " + "; ".join(problems[:5])
        )
    model.load_state_dict(state)
    return model


def load_torchscript(path: str | Path) -> nn.Module:
    """The TorchScript module saved at ``path`` (``torch.jit.save``), on the CPU.

    Raises:
        ModelFileError: the file is missing or is not a TorchScript archive.
    """
    path = Path(path)
    return _read(path, lambda: torch.jit.load(str(path), map_location="cpu"))


def check_outputs(model: nn.Module, example: Tensor, num_outputs: int, source: str) -> None:
    """Raise `ModelFileError` unless ``model`` maps ``example`` ``(1, ...)`` to ``(1, R)``
    outputs with R = ``num_outputs``; ``source`` names the model in the message."""
    try:
        with torch.no_grad():
            was_training = model.training
            output = model.eval()(example)
            model.train(was_training)
    except Exception as error:  # a user's model fails on our inputs: say so, with shapes
        raise ModelFileError(
            f"{source} fails on inputs of shape {tuple(example.shape)}: {error}"
        ) from None
    if not isinstance(output, Tensor) or tuple(output.shape) != (1, num_outputs):
        found = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ModelFileError(
            f"{source} gives outputs {found} for inputs {tuple(example.shape)}, "
            f"expected (1, {num_outputs})"
        )


def _read(path: Path, load):
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        return load()
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFileError(f"{path}: cannot read it as a model file: {first}") from None
