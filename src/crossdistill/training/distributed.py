"""Training over several processes, through Lightning Fabric: N CPU processes (gloo) or one
process per GPU (nccl), launched by ``torchrun`` or by Fabric's own launcher (`start`).

Every process runs the same program on all of the data. `crossdistill.training.fit` splits
each batch of ``batch_size`` rows across the processes and trains the method wrapped in
DistributedDataParallel (the model a method trains; a frozen teacher is never wrapped: its
outputs reach the method as columns); `crossdistill.training.TeacherCache` runs a teacher over
one shard of the rows per process and gathers the outputs once; losses are summed across
processes before they are recorded, so every process holds the same history; and only the
first process (rank 0) writes checkpoints, cache files and run outputs
(`crossdistill.files.main_process`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor, nn

if TYPE_CHECKING:
    from lightning_fabric import Fabric

_log = logging.getLogger(__name__)
_engine: Fabric | None = None
_launcher: int | None = None
"""The process id of the first process (rank 0), in a process it launched (see `stopped`)."""


def start(processes: int | None = None, accelerator: str = "cpu") -> Fabric | None:
    """Join (under ``torchrun``) or launch (``processes`` > 1) a distributed run and return its
    ``lightning_fabric.Fabric``; `engine` returns it from then on. ``None`` for one process.

    Under ``torchrun`` (or Fabric's ``fabric run``) the processes exist already and
    ``processes`` must be None or their number. Otherwise ``processes`` > 1 starts that many:
    Fabric runs this program's command line again in ``processes - 1`` child processes, so call
    this from a script or the ``crossdistill`` command, before any work that should not be
    repeated by every process.

    Args:
        processes: the number of processes (None: those ``torchrun`` started, else 1).
        accelerator: ``cpu`` (gloo) or ``cuda`` (nccl, one GPU per process).

    Raises:
        ValueError: ``processes`` is below 1, disagrees with ``torchrun``'s, or asks for
            more GPUs than this machine has.
    """
    global _engine
    if _engine is not None:
        return _engine
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if processes is not None and processes < 1:
        raise ValueError(f"processes: expected at least 1, found {processes}")
    if launched > 1 and processes not in (None, launched):
        raise ValueError(f"processes: {processes} asked for, but torchrun started {launched}")
    count = launched if launched > 1 else processes or 1
    if count == 1:
        return None
    if accelerator not in ("cpu", "cuda"):
        raise ValueError(f"accelerator: expected cpu or cuda, found {accelerator!r}")
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", count))
    if accelerator == "cuda" and per_node > torch.cuda.device_count():
        raise ValueError(
            f"{per_node} processes on this machine need as many GPUs; it has "
            f"{torch.cuda.device_count()}"
        )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if accelerator == "cpu" and per_node > (cores or 1):
        raise ValueError(
            f"processes: {per_node} processes on this machine need as many CPU cores; it has "
            f"{cores} (give at most {cores})"
        )
    if accelerator == "cpu":  # cores / processes threads each
        torch.set_num_threads(max(1, (cores or 1) // per_node))
    from lightning_fabric import Fabric
    from lightning_fabric.strategies import DDPStrategy

    fabric = Fabric(
        accelerator=accelerator,
        devices=per_node,
        num_nodes=count // per_node,
        # a static graph: DDP accepts trainable parts a method never uses, with no search
        strategy=DDPStrategy(static_graph=True),
    )
    global _launcher
    if int(os.environ.get("LOCAL_RANK", 0)) > 0 and "TORCHELASTIC_RUN_ID" not in os.environ:
        _launcher = os.getppid()  # this process was started by rank 0's launch (not torchrun)
    fabric.launch()
    _engine = fabric
    return fabric


def stopped(wait: float = 3.0) -> list[str]:
    """The other processes of this run that are known to have stopped, as ``"rank R (how)"``:
    on the first process, those it launched that ended with an error or a signal; on a process
    it launched, the first process once it is gone. Empty alone, under ``torchrun`` (whose
    agent watches the processes), and while all run.

    A peer's sockets close a moment before its death can be seen (its exit status, or this
    process's new parent), so this looks again for up to ``wait`` seconds before answering
    that none stopped; it is called only once an error has already stopped this process."""
    if _engine is None:
        return []
    deadline = time.monotonic() + wait
    while not (found := _stopped_now()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def _stopped_now() -> list[str]:
    """`stopped`, looked at once."""
    found = []
    children = getattr(getattr(_engine.strategy, "launcher", None), "procs", [])
    for rank, child in enumerate(children, start=1):
        code = child.poll()
        if code:
            how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            found.append(f"rank {rank} ({how})")
    if _launcher is not None and os.getppid() != _launcher:
        found.append("rank 0")
    return found


def engine() -> Fabric | None:
    """The ``lightning_fabric.Fabric`` of this process's distributed run (see `start`), or
    None when it trains alone."""
    return _engine


def processes() -> int:
    """How many processes train together (1 alone)."""
    return 1 if _engine is None else _engine.world_size


def forward_train(method: nn.Module) -> Callable:
    """``method.forward_train``, through DistributedDataParallel when several processes train
    (the method moves to this process's device; its frozen parts are not synchronised)."""
    if _engine is None:
        return method.forward_train
    wrapped = _engine.setup_module(method)
    wrapped.mark_forward_method("forward_train")
    return wrapped.forward_train


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for alone)."""
    if _engine is not None:
        _engine.barrier()


def local_part(rows: Tensor) -> Tensor:
    """This process's part of ``rows`` ``(B, ...)``: the rows split in order into one part per
    process, as equal as possible (``Tensor.tensor_split``; a part may be empty). Alone: all."""
    return rows if _engine is None else rows.tensor_split(_engine.world_size)[_engine.global_rank]


def shard(rows: Tensor) -> tuple[Tensor, float]:
    """This process's part of the row indices ``rows`` ``(B,)``, and the weight that makes the
    processes' averaged gradients those of the mean loss over all ``B`` rows.

    Rows are split in order into as-equal-as-possible parts, one per process. The weight is
    ``processes * part / B``: DistributedDataParallel averages the processes' gradients, and
    each computes a mean over its own part. A process whose part is empty (``B`` below the
    number of processes) gets the first row with weight 0, so that it still takes part.
    """
    if _engine is None:
        return rows, 1.0
    part = local_part(rows)
    if not len(part):
        return rows[:1], 0.0
    return part, _engine.world_size * len(part) / len(rows)


def gather_rows(tensor: Tensor) -> Tensor:
    """Each process's ``tensor`` ``(n_rank, ...)``, concatenated in rank order (alone: as is).

    The parts may differ in rows (by `shard`'s split); every other size must agree.
    """
    if _engine is None:
        return tensor
    local = tensor.to(_engine.device)
    sizes = [torch.zeros((), dtype=torch.int64, device=local.device) for _ in range(processes())]
    dist.all_gather(sizes, torch.tensor(len(local), device=local.device))
    longest = max(int(n) for n in sizes)
    padded = torch.cat([local, local.new_zeros((longest - len(local), *local.shape[1:]))])
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(n)] for part, n in zip(parts, sizes, strict=True)]).to(
        tensor.device
    )


def reduce_sum(values: Tensor) -> Tensor:
    """``values`` summed over the processes (alone: as is)."""
    if _engine is None:
        return values
    summed = values.to(_engine.device, copy=True)
    dist.all_reduce(summed)
    return summed.to(values.device)


def describe_batches(batch_size: int, name: str) -> None:
    """Log (on the first process) the batch sizes of a distributed run of ``name``."""
    if _engine is not None and _engine.global_rank == 0:
        per_process = -(-batch_size // _engine.world_size)
        _log.info(
            "%s: %d processes, batch size %d per process (at most), %d in all",
            name,
            _engine.world_size,
            per_process,
            batch_size,
        )
