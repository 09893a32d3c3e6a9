"""Teacher outputs computed once per (teacher weights, mapping φ, data) and reused by every run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor, nn

from ..files import atomic_path
from .loop import predict


def fingerprint(*parts: nn.Module | Tensor | str) -> str:
    """SHA-256 hex digest of modules, tensors and strings.

    A module counts by its ``repr``, every parameter and buffer (name, shape, dtype, bytes) and
    the initial seed of every ``torch.Generator`` its submodules hold (a seeded noise φ).
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, nn.Module):
            digest.update(repr(part).encode())
            for name, value in part.state_dict().items():
                digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
                digest.update(_tensor_bytes(value))
            for name, submodule in part.named_modules():
                for attribute, value in vars(submodule).items():
                    if isinstance(value, torch.Generator):
                        digest.update(f"{name}.{attribute}:seed={value.initial_seed()}".encode())
        elif isinstance(part, Tensor):
            digest.update(str((tuple(part.shape), part.dtype)).encode())
            digest.update(_tensor_bytes(part))
        else:
            digest.update(part.encode())
    return digest.hexdigest()


def _tensor_bytes(tensor: Tensor) -> bytes:
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


class TeacherCache:
    """Memoises ``teacher(φ(x))`` by the fingerprint of teacher, φ and x.

    Outputs live in memory and, when ``directory`` is given, in ``directory/<key>.pt`` so that a
    resumed or repeated run reads them instead of running the teacher again. ``computed`` counts
    the teacher passes actually made (one per distinct key).

    Args:
        directory: where to keep outputs on disk; ``None`` keeps them in memory only.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = None if directory is None else Path(directory)
        self.computed = 0
        self._memory: dict[str, Tensor] = {}

    def outputs(self, teacher: nn.Module, mapping: nn.Module, x: Tensor) -> Tensor:
        """Teacher outputs ``(N, R)`` on ``mapping(x)`` for inputs ``x`` of shape ``(N, ...)``.

        φ is applied to the whole of ``x`` at once (a seeded noise φ thus draws one fixed sample),
        then the teacher runs in eval mode without gradients.
        """
        key = fingerprint(teacher, mapping, x)
        if key in self._memory:
            return self._memory[key]
        file = None if self.directory is None else self.directory / f"{key}.pt"
        if file is not None and file.exists():
            outputs = torch.load(file)
        else:
            with torch.no_grad():
                device = next(teacher.parameters()).device
                outputs = predict(teacher, mapping.to(device)(x.to(device))).cpu()
            self.computed += 1
            if file is not None:
                with atomic_path(file) as tmp:
                    torch.save(outputs, tmp)
        self._memory[key] = outputs
        return outputs
