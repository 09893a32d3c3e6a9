"""The devices a run may name, a check that the one named exists on this machine, and where a
training keeps its data."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import Tensor

_log = logging.getLogger(__name__)


def available_devices() -> list[str]:
    """The devices this machine has: ``cpu``, then ``cuda:0`` … and ``mps`` when present."""
    found = ["cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def check_device(name: str) -> str:
    """``name`` if it is a device of this machine (``cuda`` means ``cuda:0``); ``auto`` is
    ``cuda`` when this machine has a CUDA device, else ``cpu``.

    Raises:
        ValueError: the name is not a device PyTorch knows, or this machine lacks it (the
            message lists the devices it has).
    """
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    have = ", ".join(available_devices())
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"expected auto or a device such as cpu or cuda:0 (this machine has {have}); "
            f"found {name!r}"
        ) from None
    full = device.type if device.type in ("cpu", "mps") else f"{device.type}:{device.index or 0}"
    if full not in available_devices():
        raise ValueError(f"device {name!r} is not on this machine; it has {have}")
    return name


RESIDENT_SHARE = 0.5
"""Training data stays on a CUDA device when it takes at most this share of its free memory
(the rest is left to the model, its activations and the optimizer)."""


def resident_device(
    columns: Mapping[str, Tensor], device: torch.device, what: str = "training data"
) -> torch.device:
    """Where a training keeps ``columns`` (N rows each) for all its epochs, or a teacher pass
    its input: ``device`` when they fit there, the CPU otherwise (batches then move to
    ``device`` one at a time; ``what`` names the data in the log line that says so).

    They fit on the CPU and on MPS (which shares the CPU's memory) always, and on a CUDA
    device when their bytes are at most `RESIDENT_SHARE` of its free memory
    (``torch.cuda.mem_get_info``).
    """
    if device.type != "cuda":
        return device
    free, _ = torch.cuda.mem_get_info(device)
    needed = sum(column.nelement() * column.element_size() for column in columns.values())
    if needed <= RESIDENT_SHARE * free:
        return device
    _log.info(
        "%s (%.2f GB) kept on the CPU and moved to %s batch by batch: it is more "
        "than %g of the device's %.2f GB free",
        what,
        needed / 1e9,
        device,
        RESIDENT_SHARE,
        free / 1e9,
    )
    return torch.device("cpu")
