"""Models a user already trained, read from files: a state dict for a model spec, or TorchScript."""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import CrossdistillError


class ModelFileError(CrossdistillError, ValueError):
    """A model file that is missing, unreadable, or does not fit; the message names the file."""


def load_state_dict_file(model: nn.Module, path: str | Path) -> nn.Module:
    """``model`` with the weights of ``path`` (``torch.save(model.state_dict(), path)``).

    Raises:
        ModelFileError: the file is missing, unreadable (not written by ``torch.save``, or
            holding pickled objects other than tensors, which ``weights_only`` loading
            refuses), is not a saved state dict, holds a non-finite floating-point entry, or its
            keys or shapes do not match ``model`` (the message lists the missing, unexpected
            and mismatched entries).
    """
    path = Path(path)
    state = _read(
        path,
        lambda: torch.load(path, map_location="cpu", weights_only=True),
        "a state dict (torch.save(model.state_dict(), path))",
    )
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelFileError(
            f"{path}: expected a state dict (torch.save(model.state_dict(), path)), found "
            f"{type(state).__name__}"
        )
    _check_finite(state.items(), path)
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
        ModelFileError: the file is missing, is not a TorchScript archive, or one of its
            parameters or floating-point buffers is not finite.
    """
    path = Path(path)
    model = _read(path, lambda: torch.jit.load(str(path), map_location="cpu"), "a TorchScript file")
    _check_finite([*model.named_parameters(), *model.named_buffers()], path)
    return model


def check_outputs(model: nn.Module, example: Tensor, num_outputs: int, source: str) -> None:
    """Raise `ModelFileError` unless ``model``, in eval mode without gradients, maps the first
    row of ``example`` ``(N, ...)`` to ``(1, R)`` outputs and, when N > 1, all of ``example``
    to ``(N, R)`` outputs (R = ``num_outputs``), floating-point and finite; ``source`` names the
    model in the message.

    A few rows (say 8) find a model that fails on batches, mixes its rows up or returns
    integers; one row is checked first, so a model of the wrong output size is told as
    ``(1, R')``.
    """
    was_training = model.training
    model.eval()
    try:
        for rows in (example[:1], example) if len(example) > 1 else (example,):
            output = _outputs(model, rows, num_outputs, source)
    finally:
        model.train(was_training)
    bad = int((~torch.isfinite(output)).any(1).sum()) if output.numel() else 0
    if bad:
        raise ModelFileError(
            f"{source} gives non-finite outputs (NaN or ±inf) on {bad} of the {len(example)} "
            f"rows it was checked on"
        )


def _outputs(model: nn.Module, x: Tensor, num_outputs: int, source: str) -> Tensor:
    """``model(x)``, a `ModelFileError` unless it runs and gives floating-point ``(N, R)``."""
    shape, expected = tuple(x.shape), (len(x), num_outputs)
    try:
        with torch.no_grad():
            output = model(x)
    except Exception as error:  # a user's model fails on our inputs: say so, with shapes
        raise ModelFileError(
            f"{source} fails on inputs of shape {shape}: {_summary(error)}"
        ) from None
    if not isinstance(output, Tensor) or tuple(output.shape) != expected:
        found = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ModelFileError(
            f"{source} gives outputs {found} for inputs {shape}, expected {expected}"
        )
    if not output.is_floating_point():
        raise ModelFileError(
            f"{source} gives {output.dtype} outputs for inputs {shape}; expected floating-point "
            "logits or predictions"
        )
    return output


def _check_finite(tensors: Iterable[tuple[str, Tensor]], path: Path) -> None:
    """Raise `ModelFileError` naming the first floating-point entry of ``tensors`` (named
    parameters, buffers or state-dict entries of the file ``path``) that is NaN or ±inf."""
    for name, tensor in tensors:
        if not tensor.is_floating_point():
            continue
        bad = ~torch.isfinite(tensor.detach())
        if bad.any():
            where = [int(i) for i in bad.nonzero()[0]]
            value = tensor.detach().reshape(-1)[int(bad.reshape(-1).nonzero()[0])].item()
            raise ModelFileError(
                f"{path}: its weights are not finite: {name!r} holds {value} at {where} "
                f"({int(bad.sum())} of {tensor.numel()} entries); a model trained into NaN or "
                "inf cannot be used"
            )


_READ_ERRORS = (
    OSError,
    EOFError,
    LookupError,
    ValueError,
    TypeError,
    RuntimeError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)
"""What ``torch.load`` (unpickling) and ``torch.jit.load`` raise on a file that is not what
they read: a text file (KeyError), truncated bytes (EOFError), a zip of something else
(RuntimeError), pickled objects ``weights_only`` refuses (UnpicklingError), undecodable bytes
(UnicodeDecodeError, a ValueError), an unreadable file (OSError)."""


def _read(path: Path, load, expected: str):
    """``load()`` of the user's model file ``path``, every failure a `ModelFileError` naming
    it and ``expected`` (what the file should be)."""
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        with warnings.catch_warnings():  # torch.load handing a TorchScript file on: refused below
            warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive")
            return load()
    except _READ_ERRORS as error:
        raise ModelFileError(
            f"{path}: cannot read it as a model file: {_reason(error)}; expected {expected}"
        ) from None


def _reason(error: BaseException) -> str:
    """Why reading a model file failed, in one line."""
    text = _summary(error)
    refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    if refused:
        return (
            f"it holds a pickled {refused.group(1)}, not only tensors, and pickled objects are "
            "never loaded (they can run code); save model.state_dict()"
        )
    if "TorchScript archives" in text:
        return "it is a TorchScript archive (torch.jit.save), not a state dict"
    unpickler = re.search(r"WeightsUnpickler error:\s*(.+)", str(error), flags=re.DOTALL)
    if unpickler:
        text = unpickler.group(1).strip().splitlines()[0]
    if isinstance(error, LookupError | pickle.UnpicklingError) or unpickler:
        return f"not a file written by torch.save: {type(error).__name__}: {text}"
    return text


def _summary(error: BaseException) -> str:
    """An exception's message in one line: its first line, or for an error raised inside
    TorchScript (whose message is a traceback) its last; colour codes and torch's notes about
    its own internals removed."""
    lines = [
        line.strip()
        for line in re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines()
        if line.strip()
    ]
    if not lines:
        return type(error).__name__
    line = lines[-1] if "TorchScript interpreter" in lines[0] else lines[0]
    return line.split(" This is an internal")[0][:300]
