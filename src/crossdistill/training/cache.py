"""Teacher outputs computed once per (teacher, what the teacher sees) and reused by every run."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..files import atomic_path, main_process, read_rebuildable
from . import distributed
from .devices import resident_device
from .hooks import capture
from .loop import TrainingDiverged, model_device, predict

Mapping = Callable[[Tensor], Tensor]
"""A mapping φ: a module or any callable from a tensor ``(N, ...)`` to a tensor ``(N, ...)``."""


def fingerprint(*parts: nn.Module | Tensor | str) -> str:
    """SHA-256 hex digest of modules, tensors and strings.

    A module counts by its ``repr``, every parameter and buffer (name, shape, dtype, bytes) and
    the initial seed of every ``torch.Generator`` its submodules hold; plain Python attributes
    do not count (a setting that changes a module's outputs belongs in its ``repr`` or a
    buffer). A tensor counts by shape, dtype and bytes.
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, nn.Module):
            digest.update(repr(part).encode())
            for name, value in part.state_dict().items():
                digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
                digest.update(_tensor_bytes(value))
            for name, submodule in part.named_modules():
                for attribute, value in sorted(vars(submodule).items()):
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


class TeacherRun(NamedTuple):
    """A teacher's pass over a whole input: ``outputs`` ``(N, R)`` and ``features``, the
    activations ``{layer: (N, ...)}`` of the submodules asked for."""

    outputs: Tensor
    features: dict[str, Tensor]


class TeacherCache:
    """Memoises ``teacher(φ(x))`` (and named layers' activations) by a fingerprint of the
    teacher (`fingerprint`) and of the very tensor ``φ(x)`` it sees: outputs are reused only
    for exactly the same teacher input, whatever φ is (a module, a plain callable, two modules
    that differ only in a plain attribute).

    Outputs live in memory and, when ``directory`` is given, in ``directory/<key>.pt`` so that a
    resumed or repeated run reads them instead of running the teacher again. ``computed`` counts
    the teacher passes actually made (one per distinct key). With several processes
    (`crossdistill.training.distributed`) each passes the teacher over its shard of the rows,
    the outputs are gathered once into every process, and rank 0 alone writes the file.

    Args:
        directory: where to keep outputs on disk; ``None`` keeps them in memory only.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = None if directory is None else Path(directory)
        self.computed = 0
        self._memory: dict[str, TeacherRun] = {}

    def outputs(
        self, teacher: nn.Module, mapping: Mapping | None, x: Tensor, name: str = "teacher"
    ) -> Tensor:
        """Teacher outputs ``(N, R)`` on ``mapping(x)`` for inputs ``x`` of shape ``(N, ...)``
        (`run` without layers)."""
        return self.run(teacher, mapping, x, name=name).outputs

    def run(
        self,
        teacher: nn.Module,
        mapping: Mapping | None,
        x: Tensor,
        layers: Sequence[str] = (),
        name: str = "teacher",
    ) -> TeacherRun:
        """The teacher's outputs on ``mapping(x)`` and the activations of its submodules
        ``layers`` (module paths, see `crossdistill.training.hooks.capture`).

        φ (a module or a plain callable; ``None`` is the identity) is applied to the whole of
        ``x`` at once without gradients (a seeded noise φ thus draws one fixed sample); then the
        teacher runs in eval mode without gradients, in slices. φ runs on the teacher's device
        when ``x`` fits there (`crossdistill.training.devices.resident_device`), else on the
        CPU, a module φ moved there, and the slices of ``φ(x)`` move to the teacher one at a
        time. A damaged cache file is recomputed.

        Raises:
            crossdistill.training.TrainingDiverged: the outputs are not finite (``name``, the
                teacher, is named in the message).
        """
        host = resident_device({"x": x}, model_device(teacher), f"{name}'s input")
        with torch.no_grad():
            if isinstance(mapping, nn.Module):
                mapping = mapping.to(host)
            seen = x.to(host) if mapping is None else mapping(x.to(host))
        layers = tuple(dict.fromkeys(layers))
        key = fingerprint(teacher, seen, "layers:" + "\0".join(layers))
        if key in self._memory:
            return self._memory[key]
        file = None if self.directory is None else self.directory / f"{key}.pt"
        result = None if file is None else read_rebuildable(file, _read_entry)
        if result is None:
            result = _teacher_pass(teacher, seen, layers)
            bad = (~torch.isfinite(result.outputs)).reshape(len(seen), -1).any(1).sum()
            if bad:
                raise TrainingDiverged(
                    f"{name}: its outputs are not finite on {int(bad)} of {len(seen)} rows; "
                    "it cannot teach (retrain it with a lower learning rate, or check its file)"
                )
            self.computed += 1
            if file is not None and main_process():
                with atomic_path(file) as tmp:
                    torch.save(result._asdict(), tmp)
        self._memory[key] = result
        return result


def _read_entry(path: Path) -> TeacherRun:
    """The `TeacherRun` a cache file holds, read without running code; ValueError for a file
    that holds anything else."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    outputs, features = (
        (saved.get("outputs"), saved.get("features")) if isinstance(saved, dict) else (None, None)
    )
    if not (
        isinstance(outputs, Tensor)
        and isinstance(features, dict)
        and all(isinstance(value, Tensor) for value in features.values())
    ):
        raise ValueError("not a teacher-cache entry (expected outputs and a dict of features)")
    return TeacherRun(outputs, features)


def _teacher_pass(teacher: nn.Module, seen: Tensor, layers: tuple[str, ...]) -> TeacherRun:
    """One `predict` pass of ``teacher`` over ``seen`` with ``layers`` hooked; with several
    processes, each passes over its shard of the rows and the parts are gathered."""
    with capture(teacher, layers) as recorded:
        outputs = predict(teacher, distributed.local_part(seen))
    return TeacherRun(
        distributed.gather_rows(outputs).cpu(),
        {k: distributed.gather_rows(torch.cat(v)).cpu() for k, v in recorded.items()},
    )
