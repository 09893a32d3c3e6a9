"""The devices a run may name, and a check that the one named exists on this machine."""

from __future__ import annotations

import torch


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
