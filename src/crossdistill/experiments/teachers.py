"""Teachers by name for every experiment kind (trained once, checkpointed, or read from a file),
and how every kind hands a train config to the training loop."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ..data import ArrayData
from ..losses import Task
from ..methods import Supervised
from ..models import ModelFileError, check_outputs, load_state_dict_file, load_torchscript
from ..registries import models
from ..training import evaluate, fit, fit_many, stacks
from .config import TeacherConfig, TrainConfig

CHECK_ROWS = 8
"""Rows of its own Test inputs a teacher read from a file is checked on (see `load_teacher`)."""


def load_teacher(
    name: str,
    spec: TeacherConfig,
    test: ArrayData,
    num_outputs: int,
    device: str,
    *,
    at: str | None = None,
) -> nn.Module:
    """Teacher ``name`` read from the user's file (``spec.checkpoint`` for ``spec.model``, or
    ``spec.torchscript``), in eval mode, checked on the first `CHECK_ROWS` rows of its own
    ``test``: its weights (parameters and floating-point buffers) finite, and its outputs
    floating-point, finite and ``(1, R)`` for one row as ``(rows, R)`` for all of them (R =
    ``num_outputs``). ``at`` is the config field that names it in messages (default
    ``teachers.<name>``).

    Raises:
        crossdistill.models.ModelFileError: the file is missing, unreadable or does not fit,
            its weights are not finite, or the model fails on those rows or gives other
            outputs (the message names ``at``, the file and the mismatch).
    """
    at = f"teachers.{name}" if at is None else at
    try:
        if spec.torchscript is not None:
            teacher, file = load_torchscript(spec.torchscript), spec.torchscript
        else:
            teacher = models.build(
                spec.model, in_shape=tuple(test.x.shape[1:]), num_outputs=num_outputs
            )
            teacher, file = load_state_dict_file(teacher, spec.checkpoint), spec.checkpoint
    except ModelFileError as error:
        raise ModelFileError(f"{at}: {error}") from None
    check_outputs(teacher, test.x[:CHECK_ROWS], num_outputs, f"{at} ({file})")
    return teacher.to(device).eval()


def train_teacher(
    spec: TeacherConfig,
    train: ArrayData,
    test: ArrayData | None,
    task: Task,
    num_outputs: int,
    *,
    checkpoint: Path,
    device: str,
    progress: bool = False,
    name: str = "teacher",
) -> tuple[nn.Module, list[dict]]:
    """A teacher built from ``spec.model`` (weights seeded by ``spec.seed``) and trained on
    ``train`` (resuming from ``checkpoint``), scored on ``test`` every epoch when given; in
    eval mode, with its per-epoch history. ``name`` names it in the progress bar and in
    errors."""
    torch.manual_seed(spec.seed)
    teacher = models.build(
        spec.model, in_shape=tuple(train.x.shape[1:]), num_outputs=num_outputs
    ).to(device)
    history = fit(
        Supervised(teacher, task),
        train,
        seed=spec.seed,
        validate=None if test is None else lambda model: evaluate(model, test, task),
        checkpoint=checkpoint,
        progress=progress,
        name=name,
        **training(spec.train),
    )
    return teacher.eval(), history


def prepare_teacher(
    spec: TeacherConfig,
    loaded: nn.Module | None,
    train: ArrayData | None,
    test: ArrayData,
    task: Task,
    num_outputs: int,
    *,
    checkpoint: Path,
    device: str,
    progress: bool = False,
    name: str = "teacher",
) -> tuple[nn.Module, list[dict]]:
    """The teacher of ``spec`` with its history on ``test``: trained here by `train_teacher`
    (on ``train``), or ``loaded`` (read from its file by `load_teacher`) scored once."""
    if not spec.trained_here:
        return loaded, [evaluate(loaded, test, task)]
    return train_teacher(
        spec,
        train,
        test,
        task,
        num_outputs,
        checkpoint=checkpoint,
        device=device,
        progress=progress,
        name=name,
    )


def training(train: TrainConfig) -> dict:
    """`fit` keywords (``epochs``, ``batch_size``, ``optimizer``, ``precision``,
    ``checkpoint_every``) of a train config."""
    return {
        "epochs": train.epochs,
        "batch_size": train.batch_size,
        "optimizer": train.optimizer,
        "precision": train.precision,
        "checkpoint_every": train.checkpoint_every,
    }


def train_seeds(
    methods: Sequence[nn.Module],
    train: Mapping | Sequence[Mapping],
    seeds: Sequence[int],
    config: TrainConfig,
    *,
    batched: bool,
    checkpoints: Path | None,
    names: Sequence[str],
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    score: ArrayData | None = None,
    task: Task = "classification",
    timed: bool = False,
    progress: bool = False,
) -> list[list[dict]]:
    """Train each method (``methods[k]`` with the batch order of ``seeds[k]``, on ``train`` or
    ``train[k]``; the seeds of one setting, or every setting × seed of a sweep): together by
    `crossdistill.training.fit_many` when ``batched`` (checkpoint ``<checkpoints>-seeds.pt``;
    methods unlike the first, e.g. at λ = 1 among λ < 1, form further stacks, checkpoints
    ``-seeds1.pt``, …, see `crossdistill.training.stacks`), else one `fit` each
    (``<checkpoints>-seed<s>.pt``). ``checkpoints`` is a path stem, or None for no checkpoints;
    ``validate``, ``score``, ``task`` and ``timed`` are those of `fit` and `fit_many` (a stack
    scores ``score`` in stacked passes); returns each method's history.

    Raises:
        ValueError: one by one with checkpoints, a seed given twice (their runs would share
            one checkpoint file; give each setting its own ``checkpoints`` stem).
    """
    shared = isinstance(train, Mapping)
    if not batched and checkpoints is not None and len(set(seeds)) < len(seeds):
        raise ValueError(
            f"{checkpoints}: trained one by one, runs of the same seed would share a checkpoint "
            f"(seeds {list(seeds)}); give each setting its own checkpoint stem"
        )
    if batched:
        histories: list[list[dict]] = [[] for _ in methods]
        for g, group in enumerate(stacks(methods)):
            found = fit_many(
                [methods[k] for k in group],
                train if shared else [train[k] for k in group],
                seeds=[seeds[k] for k in group],
                validate=validate,
                score=score,
                task=task,
                timed=timed,
                checkpoint=None
                if checkpoints is None
                else checkpoints.with_name(f"{checkpoints.name}-seeds{g or ''}.pt"),
                progress=progress,
                names=[names[k] for k in group],
                **training(config),
            )
            for k, history in zip(group, found, strict=True):
                histories[k] = history
        return histories
    return [
        fit(
            method,
            train if shared else train[k],
            seed=seed,
            validate=validate,
            score=score,
            task=task,
            timed=timed,
            checkpoint=None
            if checkpoints is None
            else checkpoints.with_name(f"{checkpoints.name}-seed{seed}.pt"),
            progress=progress,
            name=names[k],
            **training(config),
        )
        for k, (method, seed) in enumerate(zip(methods, seeds, strict=True))
    ]
