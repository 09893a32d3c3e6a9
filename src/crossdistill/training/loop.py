"""The one training loop: teachers, students and grown models all train through `fit`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data.arrays import ArrayData
from ..files import atomic_path

Task = Literal["classification", "regression"]
LossFn = Callable[[Tensor, Tensor, Tensor | None], Tensor]
"""``loss(output, target, teacher_output) -> scalar``, as every `crossdistill.losses` module."""

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


def fit(
    model: nn.Module,
    loss: LossFn,
    train: ArrayData,
    *,
    epochs: int,
    teacher_outputs: Tensor | None = None,
    batch_size: int = 64,
    optimizer: Mapping[str, Any] | None = None,
    seed: int = 0,
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    checkpoint: str | Path | None = None,
    progress: bool | str = False,
) -> list[dict[str, float]]:
    """Train ``model`` in place for ``epochs`` epochs and return one metrics dict per epoch.

    Args:
        model: maps a batch ``train.x[i:j]`` to outputs ``(B, R)`` (logits) or ``(B,)``/``(B, K)``.
        loss: called as ``loss(model(x), y, teacher_output)`` on every batch.
        train: in-memory data; each epoch visits a seeded random permutation in slices.
        epochs: total number of epochs (a resumed run trains only the missing ones).
        teacher_outputs: ``(N, R)`` outputs of the teacher on φ(train.x), row-aligned with
            ``train``, computed once (see `TeacherCache`); sliced with the same batch indices.
        batch_size: rows per step; the last batch of an epoch may be smaller.
        optimizer: ``{"name": "adam", "lr": 1e-3}`` style spec (default Adam, lr 1e-3).
        seed: seeds the batch order; the model's initial weights are the caller's.
        validate: called after each epoch; its dict joins the epoch's metrics.
        checkpoint: file written (atomically) after every epoch with the model, optimizer,
            random states and metrics so far; if it exists, training resumes from it and gives
            the same result as an uninterrupted run.
        progress: show a progress bar (a string is used as its label).

    Returns:
        ``[{"epoch": 1, "train_loss": ..., **validate(model)}, ...]`` for every epoch so far.
    """
    if teacher_outputs is not None and len(teacher_outputs) != len(train):
        raise ValueError(
            f"teacher_outputs has {len(teacher_outputs)} rows but train has {len(train)}"
        )
    device = next(model.parameters()).device
    x, y = train.x.to(device), train.y.to(device)
    t = None if teacher_outputs is None else teacher_outputs.to(device)
    opt = build_optimizer(optimizer or {"name": "adam", "lr": 1e-3}, model.parameters())
    order = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []

    path = None if checkpoint is None else Path(checkpoint)
    if path is not None and path.exists():
        state = torch.load(path, weights_only=False)
        model.load_state_dict(state["model"])
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
            model.train()
            total, count = 0.0, 0
            for index in torch.randperm(len(x), generator=order).split(batch_size):
                index = index.to(device)
                batch_loss = loss(model(x[index]), y[index], None if t is None else t[index])
                opt.zero_grad(set_to_none=True)
                batch_loss.backward()
                opt.step()
                total += batch_loss.detach() * len(index)
                count += len(index)
            metrics = {"epoch": epoch, "train_loss": float(total) / count}
            if validate is not None:
                metrics |= validate(model)
            history.append(metrics)
            if path is not None:
                with atomic_path(path) as tmp:
                    torch.save(
                        {
                            "model": model.state_dict(),
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
