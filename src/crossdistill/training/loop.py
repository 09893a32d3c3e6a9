"""The one training loop: teachers, students and grown models all train through `fit`."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data.arrays import ArrayData, Columns
from ..files import atomic_path
from ..losses import Task

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}


def build_optimizer(spec: Mapping[str, Any], parameters) -> torch.optim.Optimizer:
    """An optimizer from ``{"name": "adam", "lr": 1e-3, ...}``; names are the keys of OPTIMIZERS."""
    settings = dict(spec)
    name = settings.pop("name", "adam")
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](parameters, **settings)


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 2048) -> Tensor:
    """``model(x)`` in eval mode, without gradients, in slices of ``batch_size`` rows."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outputs = torch.cat(
        [model(x[i : i + batch_size].to(device)) for i in range(0, len(x), batch_size)]
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


class Trainable(Protocol):
    """What `fit` trains: a module whose ``forward(x)`` is the model being trained and whose
    ``forward_train(batch)`` returns ``(outputs, {loss_name: scalar})`` for a batch of named
    columns (see `crossdistill.data.Columns`); `fit` minimises the sum of the named losses.
    `crossdistill.methods.Method` is the base class that meets it."""

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
    checkpoint: str | Path | None = None,
    progress: bool | str = False,
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
        checkpoint: file written (atomically) after every epoch with the method, optimizer,
            random states and metrics so far; if it exists, training resumes from it and gives
            the same result as an uninterrupted run.
        progress: show a progress bar (a string is used as its label).

    Returns:
        ``[{"epoch": 1, "train_loss": ..., "train_<name>": ..., **validate(method)}, ...]`` for
        every epoch so far: the summed loss and each named loss, means over the epoch's rows.
    """
    columns = train.columns() if isinstance(train, ArrayData) else Columns(train)
    missing = [name for name in method.columns if name not in columns]
    if missing:
        raise ValueError(
            f"{type(method).__name__} reads column {missing[0]!r}, which the training data "
            f"lacks (it has {', '.join(columns)})"
        )
    device = next(method.parameters()).device
    columns = {name: column.to(device) for name, column in columns.items()}
    rows = len(next(iter(columns.values())))
    trained = [p for p in method.parameters() if p.requires_grad]
    opt = build_optimizer(optimizer or {"name": "adam", "lr": 1e-3}, trained)
    order = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []

    path = None if checkpoint is None else Path(checkpoint)
    if path is not None and path.exists():
        state = torch.load(path, weights_only=False)
        method.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        order.set_state(state["order"])
        torch.set_rng_state(state["torch_rng"])
        history = state["history"]

    with flush_denormals():
        bar = tqdm(
            total=epochs,
            initial=len(history),
            desc=progress if isinstance(progress, str) else None,
            disable=None if progress else True,
            leave=False,
        )
        for epoch in range(len(history) + 1, epochs + 1):
            method.train()
            totals: dict[str, Tensor] = {}
            for index in torch.randperm(rows, generator=order).split(batch_size):
                index = index.to(device)
                _, losses = method.forward_train({k: c[index] for k, c in columns.items()})
                if "loss" in losses:
                    raise ValueError(f"{type(method).__name__} names a loss 'loss', fit's total")
                loss = functools.reduce(operator.add, losses.values())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                for name, value in (("loss", loss), *losses.items()):
                    totals[name] = totals.get(name, 0.0) + value.detach() * len(index)
            metrics = {"epoch": epoch, **{f"train_{k}": float(v) / rows for k, v in totals.items()}}
            if validate is not None:
                metrics |= validate(method)
            history.append(metrics)
            if path is not None:
                with atomic_path(path) as tmp:
                    torch.save(
                        {
                            "model": method.state_dict(),
                            "optimizer": opt.state_dict(),
                            "order": order.get_state(),
                            "torch_rng": torch.get_rng_state(),
                            "history": history,
                        },
                        tmp,
                    )
            bar.update()
            bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if k != "epoch"})
        bar.close()
    return history
