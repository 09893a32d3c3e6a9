"""Many runs of one architecture trained at once as one stacked model: the seeds and settings
of a sweep cost about one run's per-step overhead instead of one each. Stacked layers
(`crossdistill.training.stacked`) where the method and its student allow, else ``torch.func``'s
vmap, else one run at a time (`stacking`)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from ..data.arrays import ArrayData, Columns
from ..files import read_rebuildable
from ..losses import Task
from . import distributed
from .devices import resident_device
from .loop import (
    PRECISIONS,
    Checkpoints,
    Trainable,
    _check_diverged,
    _since,
    build_optimizer,
    fit,
    flush_denormals,
    metrics,
)
from .stacked import StackedModel, stackable

UNVMAPPABLE = (nn.modules.batchnorm._BatchNorm, nn.RNNBase, nn.modules.conv._ConvNd)
"""Modules a vmap stack refuses: ``aten::lstm`` (and the other RNNs) has no vmap rule; vmap's
batch-norm backward rounds differently from the plain one (final metrics move by ~1e-3 after
20 epochs on the digits); and convolutions under vmap gained nothing on
``multiteacher_cifar10``'s CNN students (788 s against 771 s one by one) while their rounding,
amplified over 30 epochs, moved its Test accuracies by up to 0.005. Stacked layers
(`crossdistill.training.stacked`) cover convolutions and batch norm."""


def _vmappable(method: nn.Module) -> bool:
    """Whether copies of ``method`` may train as one vmap stack: not when it holds an
    `UNVMAPPABLE` module or one whose class sets ``batchable = False`` (such as a module that
    draws random numbers, whose stacked draws would differ from one run's), nor when it has a
    ``before_epoch`` hook (see `crossdistill.training.Trainable`), which works on one method's
    own modules."""
    if hasattr(method, "before_epoch"):
        return False
    return not any(
        isinstance(m, UNVMAPPABLE) or not getattr(m, "batchable", True) for m in method.modules()
    )


def stacks(methods: Sequence[nn.Module]) -> list[list[int]]:
    """The indices of ``methods`` grouped into the stacks `fit_many` accepts: each method joins
    the first group whose first method it is alike (see `fit_many`'s ValueError), in order."""
    groups: list[list[int]] = []
    for k, method in enumerate(methods):
        alike = (g for g in groups if _difference(methods[g[0]], method) is None)
        group = next(alike, None)
        if group is None:
            groups.append([k])
        else:
            group.append(k)
    return groups


def _difference(first: nn.Module, other: nn.Module) -> str | None:
    """What of ``other`` a stack built on ``first`` would ignore (a stack runs ``first``'s Python
    code with every method's parameters and buffers): a submodule's type or plain attribute,
    or a parameter's or buffer's name, shape, dtype or trained flag; None when nothing."""
    ours, theirs = dict(first.named_modules()), dict(other.named_modules())
    for path in _union(ours, theirs):
        where = f"submodule {path!r}" if path else "the method"
        if path not in ours or path not in theirs:
            return f"{where} is in one of them only"
        kinds = type(ours[path]), type(theirs[path])
        if kinds[0] is not kinds[1]:
            return f"{where} is a {kinds[0].__name__} against a {kinds[1].__name__}"
        a, b = _settings(ours[path]), _settings(theirs[path])
        for key in _union(a, b):
            if key not in a or key not in b or not _same(a[key], b[key]):
                return f"attribute {key!r} of {where} is {a.get(key)!r} against {b.get(key)!r}"
    for kind in ("parameter", "buffer"):
        a = dict(getattr(first, f"named_{kind}s")())
        b = dict(getattr(other, f"named_{kind}s")())
        for name in _union(a, b):
            if name not in a or name not in b:
                return f"{kind} {name!r} is in one of them only"
            found = [(tuple(t.shape), t.dtype, t.requires_grad) for t in (a[name], b[name])]
            if found[0] != found[1]:
                return f"{kind} {name!r} (shape, dtype, trained) is {found[0]} against {found[1]}"
    return None


def _settings(module: nn.Module) -> dict[str, Any]:
    """A module's plain attributes (not its parameters, buffers, submodules or train mode)."""
    return {k: v for k, v in vars(module).items() if not k.startswith("_") and k != "training"}


def _union(a: dict, b: dict) -> list:
    """The keys of ``a`` then those only in ``b``, in order."""
    return list(dict.fromkeys([*a, *b]))


def _same(a: Any, b: Any) -> bool:
    """Equal values (tensors: of the same shape and elements)."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and torch.equal(a, b)
    return bool(a == b)


def stacking(methods: Sequence[nn.Module]) -> Literal["layers", "vmap", "apart"]:
    """How `fit_many` trains ``methods`` (with one process):

    - ``"layers"``: the methods say they follow the stacked-layers rule (``stacks_layers``,
      see `crossdistill.methods.Method`), train no parameter outside their ``student``, and
      `crossdistill.training.stacked.stackable` takes the students (MLPs, CNNs, batch norm);
    - ``"vmap"``: else, where `_vmappable` allows, one ``torch.func.vmap`` over the methods;
    - ``"apart"``: else, or for one method, one `fit` each.
    """
    if len(methods) < 2 or distributed.processes() > 1:
        return "apart"
    first = methods[0]
    outside = any(
        p.requires_grad for n, p in first.named_parameters() if not n.startswith("student.")
    )
    if (
        getattr(first, "stacks_layers", False)
        and not outside
        and not hasattr(first, "before_epoch")
        and stackable([m.student for m in methods])
    ):
        return "layers"
    return "vmap" if _vmappable(first) else "apart"


class _Stack:
    """K methods trained as one: what the loop of `fit_many` needs of a way of stacking."""

    trained: list[Tensor]

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Each named loss, ``(K,)``: model k's mean over its batch ``batch[...][k]``."""
        raise NotImplementedError

    def outputs(self, x: Tensor) -> Tensor:
        """Every model's outputs ``(K, N, R)`` on ``x`` ``(N, ...)``, in eval mode."""
        raise NotImplementedError

    def train(self) -> None:
        raise NotImplementedError

    def state(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def load(self, state: dict[str, Tensor]) -> None:
        raise NotImplementedError

    def unstack(self) -> None:
        """Copy the stacked state into each method (method k gets entry k)."""
        raise NotImplementedError


class _LayerStack(_Stack):
    """The methods' code run once on ``(K, B, …)`` columns, their students one
    `~crossdistill.training.stacked.StackedModel` and each setting buffer ``(K,)``."""

    def __init__(self, methods: Sequence[nn.Module]) -> None:
        self.methods = methods
        self.method = copy.deepcopy(methods[0])
        self.method.student = StackedModel([m.student for m in methods])
        self.settings = [n for n, _ in methods[0].named_buffers() if not n.startswith("student.")]
        for name in self.settings:
            owner, _, leaf = name.rpartition(".")
            module = self.method.get_submodule(owner)
            stacked = torch.stack([m.get_buffer(name) for m in methods])
            module.register_buffer(
                leaf, stacked, persistent=leaf not in module._non_persistent_buffers_set
            )
        self.trained = [p for p in self.method.parameters() if p.requires_grad]

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        losses = self.method.forward_train(batch)[1]
        for key, value in losses.items():
            if value.shape != (len(self.methods),):
                raise ValueError(
                    f"{type(self.methods[0]).__name__} says it stacks by layers, but its loss "
                    f"{key!r} has shape {tuple(value.shape)}, not ({len(self.methods)},): one "
                    "mean per model (see `crossdistill.methods.Method.stacks_layers`)"
                )
        return losses

    def outputs(self, x: Tensor) -> Tensor:
        self.method.eval()
        return self.method(x.expand(len(self.methods), *x.shape))

    def train(self) -> None:
        self.method.train()

    def state(self) -> dict[str, Tensor]:
        return self.method.state_dict()

    def load(self, state: dict[str, Tensor]) -> None:
        self.method.load_state_dict(state)

    @torch.no_grad()
    def unstack(self) -> None:
        self.method.student.unstack([m.student for m in self.methods])
        for k, method in enumerate(self.methods):
            for name in self.settings:
                method.get_buffer(name).copy_(self.method.get_buffer(name)[k])


class _Losses(nn.Module):
    """A method whose ``forward`` is its ``forward_train``'s named losses (what vmap calls)."""

    def __init__(self, method: Trainable) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.method.forward_train(batch)[1]


class _VmapStack(_Stack):
    """The methods' parameters and buffers stacked (``torch.func.stack_module_state``), every
    step one ``vmap`` of method 0's code over them."""

    def __init__(self, methods: Sequence[nn.Module]) -> None:
        self.wrapped = [_Losses(method) for method in methods]
        self.params, self.buffers = stack_module_state(self.wrapped)
        frozen = {n for n, p in self.wrapped[0].named_parameters() if not p.requires_grad}
        for name in frozen:  # stack_module_state makes every parameter a leaf needing grad
            self.params[name] = self.params[name].detach()
        self.trained = [p for n, p in self.params.items() if n not in frozen]
        self.base = copy.deepcopy(self.wrapped[0]).to("meta")

        def losses_of(p: dict, b: dict, batch: dict) -> dict[str, Tensor]:
            return functional_call(self.base, (p, b), (batch,))

        def outputs_of(p: dict, b: dict, x: Tensor) -> Tensor:
            return functional_call(self.base.method, (p, b), (x,))

        self.step = vmap(losses_of, randomness="different")
        self.predict = vmap(outputs_of, in_dims=(0, 0, None), randomness="different")

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.step(self.params, self.buffers, batch)

    def outputs(self, x: Tensor) -> Tensor:
        self.base.eval()
        inner = {k.removeprefix("method."): v for k, v in self.params.items()}
        buffers = {k.removeprefix("method."): v for k, v in self.buffers.items()}
        return self.predict(inner, buffers, x)

    def train(self) -> None:
        self.base.train()

    def state(self) -> dict[str, Tensor]:
        return {**{n: p.detach() for n, p in self.params.items()}, **self.buffers}

    @torch.no_grad()
    def load(self, state: dict[str, Tensor]) -> None:
        for name, value in state.items():
            (self.params if name in self.params else self.buffers)[name].copy_(value)

    @torch.no_grad()
    def unstack(self) -> None:
        for k, module in enumerate(self.wrapped):
            for name, value in module.named_parameters():
                value.copy_(self.params[name][k])
            for name, value in module.named_buffers():
                value.copy_(self.buffers[name][k])


SCORE_ROWS = 4096
"""Rows of all K models together in one stacked forward pass of `fit_many`'s ``score``."""


def fit_many(
    methods: Sequence[Trainable],
    train: ArrayData | Mapping[str, Tensor] | Sequence[Mapping[str, Tensor]],
    *,
    seeds: Sequence[int],
    epochs: int,
    batch_size: int = 64,
    optimizer: Mapping[str, Any] | None = None,
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    score: ArrayData | None = None,
    task: Task = "classification",
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    timed: bool = False,
    progress: bool = False,
    names: Sequence[str] | None = None,
    precision: str = "float32",
) -> list[list[dict[str, float]]]:
    """Train K methods of one architecture as `fit` trains each: method k from its own initial
    weights, with the batch order of ``seeds[k]``, on ``train`` (shared) or ``train[k]``.

    How they train together is `stacking`'s choice, shown on the progress bar:

    - ``"layers"``: one copy of the method runs on ``(K, B, …)`` columns with the K students
      as one `~crossdistill.training.stacked.StackedModel` (batched matrix products, grouped
      convolutions, batch norm over K × C channels) and each setting buffer ``(K,)``; its
      losses are ``(K,)`` (the rule of `crossdistill.methods.Method.stacks_layers`);
    - ``"vmap"``: the methods' state stacked (``torch.func.stack_module_state``) and every
      step one ``vmap`` over them;
    - ``"apart"``: one `fit` each (then ``checkpoint`` gets ``-<k>`` before its suffix, one
      file per method); with several processes (`crossdistill.training.distributed`) each
      method's batches are split across them.

    Stacked, one optimizer steps all the stacked parameters: the same per-element updates as
    K runs of `fit` (Adam, SGD, RMSprop and AdamW act element-wise, and each model's loss is its
    own batch mean). The tests require the final metrics to agree with K `fit` runs within
    1e-5, per model family.

    Args:
        methods: the methods, alike but for the values of their parameters and buffers (such
            as `crossdistill.methods.Distillation`'s λ and T); trained in place.
        train: one dataset for all, or one per method (same columns and rows for each).
        seeds: the batch-order seed of each method.
        epochs, batch_size, optimizer, precision: as in `fit`; ``train`` (stacked when given
            per method) is kept on the methods' device where it fits, as there.
        validate: called with each method after each epoch; its dict joins that method's
            metrics (stacked, the methods are brought up to date for it every epoch).
        score, task: as in `fit` (the metrics of ``score`` join each method's after each
            epoch), computed for all K models together in stacked forward passes of
            `SCORE_ROWS` rows in all, without bringing the methods up to date.
        checkpoint: one file for the stack, written as `fit` writes its own (after the last
            epoch, every ``checkpoint_every`` epochs, and on an interrupt, atomically);
            training resumes from it with the same result as an uninterrupted run. A file
            of another way of stacking is treated as damaged (rebuilt, with a warning).
        checkpoint_every: epochs between checkpoints (default None: at the end and on an
            interrupt only).
        timed: add ``epoch_seconds`` to each epoch's metrics, as in `fit`; stacked, each
            model's share of the stack's training time (that time divided by K).
        progress: one progress bar for the stack.
        names: each method in messages (default ``model 0``, …).

    Returns:
        Each method's `fit` history, in order.

    Raises:
        ValueError: methods to be stacked differ where the stack would silently use method
            0's: a submodule's type or plain attribute (``columns``, a λ kept as a float, …),
            or a parameter's or buffer's name, shape, dtype or trained flag; the message names
            the method and what differs.
        TrainingDiverged: a method's epoch loss or validation metric is not finite, or
            exploded (`fit`'s rule), naming that method.
    """
    count = len(methods)
    names = list(names or [f"model {k}" for k in range(count)])
    if not count or len(seeds) != count or len(names) != count:
        raise ValueError(f"give one seed and name per method: {count}, {len(seeds)}, {len(names)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, found {precision!r}")
    shared = isinstance(train, (ArrayData, Mapping))
    per_method = [train] * count if shared else list(train)
    if len(per_method) != count:
        raise ValueError(f"give one dataset per method: {count} methods, {len(per_method)} sets")
    settings = {"epochs": epochs, "batch_size": batch_size, "optimizer": optimizer}
    how = stacking(methods)
    if how == "apart":
        return [
            fit(
                method,
                data,
                seed=seed,
                validate=validate,
                score=score,
                task=task,
                checkpoint=None if checkpoint is None else _numbered(Path(checkpoint), k),
                checkpoint_every=checkpoint_every,
                timed=timed,
                progress=progress,
                name=name,
                precision=precision,
                **settings,
            )
            for k, (method, data, seed, name) in enumerate(
                zip(methods, per_method, seeds, names, strict=True)
            )
        ]
    for k, method in enumerate(methods[1:], start=1):
        why = _difference(methods[0], method)
        if why is not None:
            raise ValueError(
                f"{names[k]} cannot be stacked with {names[0]} (the stack runs the first "
                f"method's Python code for all): {why}; train unlike methods apart (see `stacks`)"
            )
    device = next(methods[0].parameters()).device
    columns = _stacked_columns(per_method, methods[0].columns, shared)
    host = resident_device(columns, device)
    columns = {name: column.to(host) for name, column in columns.items()}
    first_column = next(iter(columns.values()))
    rows = first_column.shape[0 if shared else 1]
    stack = _LayerStack(methods) if how == "layers" else _VmapStack(methods)
    opt = build_optimizer(optimizer or {"name": "adam", "lr": 1e-3}, stack.trained)
    orders = [torch.Generator().manual_seed(seed) for seed in seeds]
    histories: list[list[dict[str, float]]] = [[] for _ in range(count)]
    first: list[float | None] = [None] * count

    path = None if checkpoint is None else Path(checkpoint)
    checkpoints = Checkpoints(path, checkpoint_every, epochs)
    state = None if path is None else read_rebuildable(path, partial(_read_stack, how=how))
    if state is not None:
        stack.load(state["stack"])
        opt.load_state_dict(state["optimizer"])
        for order, saved in zip(orders, state["orders"], strict=True):
            order.set_state(saved)
        torch.set_rng_state(state["torch_rng"])
        histories, first = state["histories"], state["first_losses"]

    every = torch.arange(count, device=host)[:, None]
    with flush_denormals(), checkpoints.kept_on_exit():
        bar = tqdm(
            total=epochs,
            initial=len(histories[0]),
            desc=f"{names[0]} and {count - 1} more, stacked by {how}",
            disable=None if progress else True,
            leave=False,
        )
        for epoch in range(len(histories[0]) + 1, epochs + 1):
            began = time.perf_counter()
            stack.train()
            order = torch.stack([torch.randperm(rows, generator=g) for g in orders]).to(host)
            totals: dict[str, Tensor] = {}
            for start in range(0, rows, batch_size):
                index = order[:, start : start + batch_size]
                batch = {
                    name: (column[index] if shared else column[every, index]).to(device)
                    for name, column in columns.items()
                }
                with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
                    losses = stack.losses(batch)
                if "loss" in losses:
                    kind = type(methods[0]).__name__
                    raise ValueError(f"{kind} names a loss 'loss', fit's total")
                summed = sum(losses.values())
                opt.zero_grad(set_to_none=True)
                summed.sum().backward()
                opt.step()
                for k in range(count):
                    if first[k] is None:
                        first[k] = float(summed[k].detach())
                for key, value in losses.items():
                    totals[key] = totals.get(key, 0.0) + value.detach() * index.shape[1]
            seconds = {"epoch_seconds": _since(began, device) / count} if timed else {}
            scores = _stacked_scores(stack, score, task, count)
            if validate is not None:
                stack.unstack()
            for k in range(count):
                named = {f"train_{key}": float(v[k]) / rows for key, v in totals.items()}
                metrics = {"epoch": epoch, "train_loss": sum(named.values()), **named}
                metrics |= seconds | scores[k]
                if validate is not None:
                    metrics |= validate(methods[k])
                _check_diverged(metrics, first[k], names[k], epoch)
                histories[k].append(metrics)
            checkpoints.finished(
                epoch,
                {
                    "stacking": how,
                    "stack": stack.state(),
                    "optimizer": opt.state_dict(),
                    "orders": [g.get_state() for g in orders],
                    "torch_rng": torch.get_rng_state(),
                    "histories": histories,
                    "first_losses": first,
                },
            )
            bar.update()
        bar.close()
    stack.unstack()
    return histories


@torch.no_grad()
def _stacked_scores(
    stack: _Stack, score: ArrayData | None, task: Task, count: int
) -> list[dict[str, float]]:
    """Each model's `metrics` on ``score`` (empty dicts without it), from stacked passes in
    eval mode (the next epoch puts the stack back in training mode)."""
    if score is None:
        return [{} for _ in range(count)]
    step = max(1, SCORE_ROWS // count)
    device = stack.trained[0].device
    outputs = torch.cat(
        [stack.outputs(score.x[i : i + step].to(device)) for i in range(0, len(score.x), step)],
        dim=1,
    )
    return [metrics(outputs[k], score.y, task) for k in range(count)]


def _stacked_columns(per_method: list, needed: Sequence[str], shared: bool) -> dict[str, Tensor]:
    """The columns the methods read: as given when shared, else stacked ``(K, N, ...)``
    (checked to have the same rows)."""
    sets = [d.columns() if isinstance(d, ArrayData) else Columns(d) for d in per_method]
    for data in sets:
        missing = [name for name in needed if name not in data]
        if missing:
            raise ValueError(
                f"the methods read column {missing[0]!r}, which the training data lacks "
                f"(it has {', '.join(data)})"
            )
    if shared:
        return {name: sets[0][name] for name in needed}
    rows = {len(data[needed[0]]) for data in sets}
    if len(rows) != 1:
        raise ValueError(f"every method's data must have the same rows, found {sorted(rows)}")
    return {name: torch.stack([data[name] for data in sets]) for name in needed}


def _numbered(path: Path, k: int) -> Path:
    return path.with_name(f"{path.stem}-{k}{path.suffix}")


def _read_stack(path: Path, how: str) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    keys = {"stacking", "stack", "optimizer", "orders", "torch_rng", "histories", "first_losses"}
    if not isinstance(state, dict) or set(state) != keys:
        raise ValueError(f"not a checkpoint of fit_many (expected the entries {', '.join(keys)})")
    if state["stacking"] != how:
        raise ValueError(f"a checkpoint of methods stacked by {state['stacking']}, not by {how}")
    return state
