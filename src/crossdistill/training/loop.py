"""The one training loop: teachers, students and grown models all train through `fit`."""

from __future__ import annotations

import copy
import functools
import inspect
import math
import operator
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data.arrays import ArrayData, Columns
from ..errors import CrossdistillError, number_hint
from ..files import atomic_path, main_process, read_rebuildable
from ..losses import Task
from . import distributed
from .devices import resident_device

DIVERGENCE_FACTOR = 1e4
"""`fit` stops when an epoch's mean loss exceeds this multiple of its first step's loss (or of
1, if that was smaller)."""


class TrainingDiverged(CrossdistillError, RuntimeError):
    """Training stopped: a loss, a teacher output or a validation metric is not finite, or the
    loss exploded (see `DIVERGENCE_FACTOR`); the message names the model and the epoch."""


OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}


def build_optimizer(spec: Mapping[str, Any], parameters) -> torch.optim.Optimizer:
    """An optimizer from ``{"name": "adam", "lr": 1e-3, ...}``; names are the keys of OPTIMIZERS.

    Raises:
        ValueError: see `check_optimizer`.
    """
    check_optimizer(spec)
    settings = dict(spec)
    return OPTIMIZERS[settings.pop("name", "adam")](parameters, **settings)


def check_optimizer(spec: Mapping[str, Any]) -> None:
    """Raise ValueError naming the setting, what it expects and what it found, unless ``spec``
    names an optimizer of OPTIMIZERS and only settings it takes, each of the type of its default
    (numbers finite) and in the range PyTorch accepts. Nothing is trained."""
    settings = dict(spec)
    name = settings.pop("name", "adam")
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ValueError(f"name: expected one of {', '.join(OPTIMIZERS)}, found {name!r}")
    defaults = {
        key: parameter.default
        for key, parameter in inspect.signature(OPTIMIZERS[name]).parameters.items()
        if key != "params"
    }
    for key, value in settings.items():
        if key not in defaults:
            raise ValueError(
                f"optimizer {name!r} has no setting {key!r}; it takes {', '.join(defaults)}"
            )
        problem = _setting_problem(defaults[key], value)
        if problem:
            raise ValueError(f"{key}: expected {problem}, found {value!r}")
    try:
        OPTIMIZERS[name]([torch.zeros(1, requires_grad=True)], **settings)
    except (TypeError, ValueError) as error:
        raise ValueError(f"optimizer {name!r}: {error}") from None


def _setting_problem(default: Any, value: Any) -> str:
    """What ``value`` should be, judged by the optimizer default it replaces ("" if fine)."""

    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    if isinstance(default, bool) or default is None:
        return "" if isinstance(value, bool) or value is None else "true or false"
    if isinstance(default, int | float):
        return "" if number(value) else "a finite number" + number_hint(value)
    if isinstance(default, tuple):
        fits = isinstance(value, list | tuple) and len(value) == len(default)
        return "" if fits and all(map(number, value)) else f"{len(default)} finite numbers"
    return ""


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter, else of its first buffer, else the CPU (a
    model holding no tensor, e.g. a TorchScript function of its input)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 2048) -> Tensor:
    """``model(x)`` in eval mode, without gradients, in slices of ``batch_size`` rows (``x``
    may have no rows), on the model's device (`model_device`)."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    outputs = torch.cat(
        [model(x[i : i + batch_size].to(device)) for i in range(0, max(len(x), 1), batch_size)]
    )
    model.train(was_training)
    return outputs


def evaluate(model: nn.Module, data: ArrayData, task: Task) -> dict[str, float]:
    """`metrics` of ``model``'s outputs on ``data``."""
    return metrics(predict(model, data.x), data.y, task)


def metrics(output: Tensor, y: Tensor, task: Task) -> dict[str, float]:
    """Quality of outputs ``(N, R)`` (logits, or predictions shaped like ``y``) against ``y``.

    Classification: ``accuracy`` (fraction in [0, 1]) and ``cross_entropy`` (nats per sample).
    Regression: ``mse`` (squared error summed over outputs, averaged over samples).
    """
    y = y.to(output.device)
    if task == "classification":
        return {
            "accuracy": (output.argmax(1) == y).float().mean().item(),
            "cross_entropy": F.cross_entropy(output, y).item(),
        }
    return {"mse": (output.reshape(y.shape) - y).pow(2).reshape(len(y), -1).sum(1).mean().item()}


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat subnormal floats as zero on the CPU while inside (restores PyTorch's default after).

    Adam's second moments of tiny gradients fall into the subnormal range, where CPU arithmetic
    is one to two orders of magnitude slower; flushing them changes values below 1e-38 only.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


class Checkpoints:
    """When `fit` and `fit_many` write their checkpoint file: after every ``every``-th epoch
    (None: none between) and after the last one; and, when training stops by an exception
    (Ctrl-C included), the state at the end of the last epoch it finished. Only the process
    of rank 0 writes.

    Args:
        path: the file, or None for no checkpoints.
        every: epochs between writes, a positive integer, or None.
        epochs: the epoch after which training ends.
    """

    def __init__(self, path: Path | None, every: int | None, epochs: int) -> None:
        if every is not None and (
            isinstance(every, bool) or not isinstance(every, int) or every < 1
        ):
            raise ValueError(
                f"checkpoint_every: expected a positive integer or None, found {every!r}"
            )
        self.path, self.every, self.epochs = path, every, epochs
        self._unwritten: dict | None = None

    def finished(self, epoch: int, state: dict) -> None:
        """Epoch ``epoch`` finished; ``state`` is what a checkpoint holds now (its tensors may
        be the live ones: a state kept for later is copied)."""
        if self.path is None or not main_process():
            return
        if epoch == self.epochs or (self.every is not None and epoch % self.every == 0):
            self._write(state)
            self._unwritten = None
        else:
            self._unwritten = copy.deepcopy(state)

    @contextmanager
    def kept_on_exit(self) -> Iterator[None]:
        """Write the last finished epoch's state, if not yet written, when the body raises."""
        try:
            yield
        except BaseException:
            if self._unwritten is not None:
                self._write(self._unwritten)
            raise

    def _write(self, state: dict) -> None:
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)


PRECISIONS = ("float32", "bf16")
"""What `fit` trains in: plain float32, or bfloat16 autocast."""


class Trainable(Protocol):
    """What `fit` trains: a module whose ``forward(x)`` is the model being trained and whose
    ``forward_train(batch)`` returns ``(outputs, {loss_name: scalar})`` for a batch of named
    columns (see `crossdistill.data.Columns`); `fit` minimises the sum of the named losses.
    `crossdistill.methods.Method` is the base class that meets it.

    Optionally it has ``before_epoch(train, epoch) -> dict[str, float]``: `fit` calls it at the
    start of every epoch (1-based) with all the training columns, on their storage device, and
    the dict joins that epoch's metrics (e.g. `crossdistill.methods.GDDADistillation` refits
    its imitation weights there). `crossdistill.training.fit_many` trains such a method one
    run at a time."""

    columns: tuple[str, ...]

    def forward_train(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]: ...


def fit(
    method: Trainable,
    train: ArrayData | Mapping[str, Tensor],
    *,
    epochs: int,
    batch_size: int = 64,
    optimizer: Mapping[str, Any] | None = None,
    seed: int = 0,
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    score: ArrayData | None = None,
    task: Task = "classification",
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    timed: bool = False,
    progress: bool = False,
    name: str = "model",
    precision: str = "float32",
) -> list[dict[str, float]]:
    """Train ``method`` in place for ``epochs`` epochs and return one metrics dict per epoch.

    Args:
        method: a `Trainable` (`crossdistill.methods.Method`); every parameter of it that
            requires a gradient is optimised.
        train: in-memory data, ``ArrayData`` or named columns of N rows each; each epoch visits
            a seeded random permutation in slices, every column sliced by the same indices.
            Must hold every column in ``method.columns``.
        epochs: total number of epochs (a resumed run trains only the missing ones).
        batch_size: rows per step; the last batch of an epoch may be smaller.
        optimizer: ``{"name": "adam", "lr": 1e-3}`` style spec (default Adam, lr 1e-3).
        seed: seeds the batch order; the model's initial weights are the caller's.
        validate: called with ``method`` after each epoch; its dict joins the epoch's metrics.
        score: data whose `metrics` (for ``task``) join the epoch's metrics after each epoch
            (`evaluate`), before those of ``validate``.
        checkpoint: file written (atomically) with the method, optimizer, random states and
            metrics so far: after the last epoch, after every ``checkpoint_every``-th, and with
            the last finished epoch when training stops by an exception or Ctrl-C
            (`Checkpoints`). If it exists, training resumes from it and gives the same result
            as an uninterrupted run.
        checkpoint_every: epochs between checkpoints (default None: only at the end and on
            an interrupt).
        timed: add ``epoch_seconds`` to each epoch's metrics: the wall time of its training
            (``before_epoch`` and the steps; not ``score``, ``validate`` or the checkpoint).
        progress: show a progress bar, labelled ``name``.
        name: the model in messages, e.g. ``"student of arm 'noise', seed 1"``.
        precision: ``"float32"``, or ``"bf16"``: each step's forward pass and losses under
            bfloat16 autocast on the method's device (meant for GPUs; the parameters, the
            optimizer and the backward pass's accumulation stay float32).

    The method trains on the device of its parameters. ``train`` moves there once, for all
    epochs, where it fits (`crossdistill.training.devices.resident_device`: on a GPU, at most
    half its free memory); otherwise it stays on the CPU and each batch moves there in turn.

    With several processes (`crossdistill.training.distributed.start`) every process calls
    ``fit`` alike: each batch's rows are split across them (``batch_size`` stays the batch of
    all of them together), the method trains wrapped in DistributedDataParallel, and each
    process's loss is weighted by its share of the batch, so the gradients are those of one
    process up to float rounding. Random draws inside ``forward_train`` (dropout) and
    batch-norm statistics are each process's own and do not match one process's. The history
    is of the whole batches, the same on every process, and only rank 0 writes ``checkpoint``.

    Returns:
        ``[{"epoch": 1, "train_loss": ..., "train_<name>": ..., **validate(method)}, ...]`` for
        every epoch so far: the summed loss and each named loss, means over the epoch's rows,
        and what the method's ``before_epoch`` returned for that epoch, if it has one (see
        `Trainable`).

    Raises:
        TrainingDiverged: an epoch's loss or ``validate`` metric is not finite, or its loss is
            over `DIVERGENCE_FACTOR` times the first step's; that epoch is not checkpointed.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, found {precision!r}")
    columns = train.columns() if isinstance(train, ArrayData) else Columns(train)
    missing = [name for name in method.columns if name not in columns]
    if missing:
        raise ValueError(
            f"{type(method).__name__} reads column {missing[0]!r}, which the training data "
            f"lacks (it has {', '.join(columns)})"
        )
    path = None if checkpoint is None else Path(checkpoint)
    checkpoints = Checkpoints(path, checkpoint_every, epochs)
    state = None if path is None else read_rebuildable(path, _read_checkpoint)
    if state is not None:
        method.load_state_dict(state["model"])
    # Wrapping for several processes waits for all of them, and rank 0 writes the checkpoint
    # only after a step they all take part in: every process has read the same file by then.
    step = distributed.forward_train(method)
    processes = distributed.processes()
    device = next(method.parameters()).device
    host = resident_device(columns, device)
    columns = {name: column.to(host) for name, column in columns.items()}
    rows = len(next(iter(columns.values())))
    trained = [p for p in method.parameters() if p.requires_grad]
    opt = build_optimizer(optimizer or {"name": "adam", "lr": 1e-3}, trained)
    order = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    first_loss = None
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        order.set_state(state["order"])
        torch.set_rng_state(state["torch_rng"])
        history, first_loss = state["history"], state["first_loss"]
    distributed.describe_batches(batch_size, name)

    with flush_denormals(), checkpoints.kept_on_exit():
        bar = tqdm(
            total=epochs,
            initial=len(history),
            desc=name,
            disable=None if progress and main_process() else True,
            leave=False,
        )
        for epoch in range(len(history) + 1, epochs + 1):
            began = time.perf_counter()
            method.train()
            before = method.before_epoch(columns, epoch) if hasattr(method, "before_epoch") else {}
            totals: dict[str, Tensor] = {}
            for index in torch.randperm(rows, generator=order).split(batch_size):
                part, weight = distributed.shard(index.to(host))
                batch = {k: c[part].to(device) for k, c in columns.items()}
                with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
                    _, losses = step(batch)
                if "loss" in losses:
                    raise ValueError(f"{type(method).__name__} names a loss 'loss', fit's total")
                loss = functools.reduce(operator.add, losses.values())
                opt.zero_grad(set_to_none=True)
                (loss * weight if weight != 1.0 else loss).backward()
                opt.step()
                if first_loss is None:  # the whole batch's, like every loss recorded
                    first_loss = float(distributed.reduce_sum(loss.detach() * weight)) / processes
                for key, value in losses.items():
                    totals[key] = totals.get(key, 0.0) + value.detach() * len(index) * weight
            summed = distributed.reduce_sum(torch.stack([*totals.values()])) if totals else []
            named = {
                f"train_{k}": float(v) / rows / processes
                for k, v in zip(totals, summed, strict=True)
            }
            metrics = {"epoch": epoch, "train_loss": sum(named.values()), **named, **before}
            if timed:
                metrics["epoch_seconds"] = _since(began, device)
            if score is not None:
                metrics |= evaluate(method, score, task)
            if validate is not None:
                metrics |= validate(method)
            _check_diverged(metrics, first_loss, name, epoch)
            history.append(metrics)
            checkpoints.finished(
                epoch,
                {
                    "model": method.state_dict(),
                    "optimizer": opt.state_dict(),
                    "order": order.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "history": history,
                    "first_loss": first_loss,
                },
            )
            bar.update()
            bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if k != "epoch"})
        bar.close()
    return history


def _since(began: float, device: torch.device) -> float:
    """Seconds since ``began`` (a `time.perf_counter` reading), once ``device`` has finished
    the work queued on it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - began


def _read_checkpoint(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    keys = {"model", "optimizer", "order", "torch_rng", "history", "first_loss"}
    if not isinstance(state, dict) or set(state) != keys:
        raise ValueError(f"not a checkpoint of fit (expected the entries {', '.join(keys)})")
    return state


def _check_diverged(
    metrics: dict[str, float], first_loss: float | None, name: str, epoch: int
) -> None:
    """Raise `TrainingDiverged` for a non-finite metric or an exploded ``train_loss``."""
    for key, value in metrics.items():
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"{name}: training diverged at epoch {epoch}: {key} is {value}; nothing of this "
                "epoch was kept (lower the learning rate, or check the data and teacher outputs)"
            )
    limit = DIVERGENCE_FACTOR * max(first_loss or 0.0, 1.0)
    if metrics["train_loss"] > limit:
        raise TrainingDiverged(
            f"{name}: training diverged at epoch {epoch}: train_loss is "
            f"{metrics['train_loss']:.4g}, over {DIVERGENCE_FACTOR:g} times its first step's "
            f"{first_loss:.4g}; nothing of this epoch was kept (lower the learning rate)"
        )
