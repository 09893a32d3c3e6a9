"""Many runs of one architecture trained at once as one stacked model (``torch.func``): the
seeds of a sweep cost about one run's per-step overhead instead of one each."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from ..data.arrays import ArrayData, Columns
from ..files import atomic_path, read_rebuildable
from . import distributed
from .devices import resident_device
from .loop import PRECISIONS, Trainable, _check_diverged, build_optimizer, fit, flush_denormals

UNBATCHABLE = (nn.modules.batchnorm._BatchNorm, nn.RNNBase, nn.modules.conv._ConvNd)
"""Modules `can_batch` refuses, whose runs train one by one: ``aten::lstm`` (and the other RNNs)
has no vmap rule; vmap's batch-norm backward rounds differently from the plain one (final
metrics move by ~1e-3 after 20 epochs on the digits); and convolutions under vmap gained
nothing on ``multiteacher_cifar10``'s CNN students (788 s against 771 s one by one) while their
rounding, amplified over 30 epochs, moved its Test accuracies by up to 0.005."""


def can_batch(method: nn.Module) -> bool:
    """Whether `fit_many` trains copies of ``method`` as one stacked model (else one by one):
    not when it holds an `UNBATCHABLE` module or one whose class sets ``batchable = False``
    (such as a module that draws random numbers, whose stacked draws would differ from one
    run's), nor when it has a ``before_epoch`` hook (see `crossdistill.training.Trainable`),
    which works on one method's own modules."""
    if hasattr(method, "before_epoch"):
        return False
    return not any(
        isinstance(m, UNBATCHABLE) or not getattr(m, "batchable", True) for m in method.modules()
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
    """What of ``other`` a stack built on ``first`` would ignore (vmap runs ``first``'s Python
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


class _Losses(nn.Module):
    """A method whose ``forward`` is its ``forward_train``'s named losses (what vmap calls)."""

    def __init__(self, method: Trainable) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.method.forward_train(batch)[1]


def fit_many(
    methods: Sequence[Trainable],
    train: ArrayData | Mapping[str, Tensor] | Sequence[Mapping[str, Tensor]],
    *,
    seeds: Sequence[int],
    epochs: int,
    batch_size: int = 64,
    optimizer: Mapping[str, Any] | None = None,
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = False,
    names: Sequence[str] | None = None,
    precision: str = "float32",
) -> list[list[dict[str, float]]]:
    """Train K methods of one architecture as `fit` trains each: method k from its own initial
    weights, with the batch order of ``seeds[k]``, on ``train`` (shared) or ``train[k]``.

    Where `can_batch` allows and K > 1, the K methods are stacked
    (``torch.func.stack_module_state``) and every step is one ``vmap`` over them with one
    optimizer over the stacked parameters — the same per-element updates as K runs of `fit`
    (Adam, SGD, RMSprop and AdamW act element-wise);
    the tests require the final metrics to agree within 1e-5. Otherwise each trains by `fit`
    (then ``checkpoint`` gets ``-<k>`` before its suffix, one file per method): a single
    method trains faster that way than through vmap, and with several processes
    (`crossdistill.training.distributed`) each method's batches are split across them.

    Args:
        methods: the methods, alike but for the values of their parameters and buffers (such
            as `crossdistill.methods.Distillation`'s λ and T); trained in place.
        train: one dataset for all, or one per method (same columns and rows for each).
        seeds: the batch-order seed of each method.
        epochs, batch_size, optimizer, precision: as in `fit`; ``train`` (stacked when given
            per method) is kept on the methods' device where it fits, as there.
        validate: called with each method after each epoch; its dict joins that method's
            metrics.
        checkpoint: one file for the stack, written after every epoch (atomically); training
            resumes from it with the same result as an uninterrupted run.
        progress: one progress bar for the stack.
        names: each method in messages (default ``model 0``, …).

    Returns:
        Each method's `fit` history, in order.

    Raises:
        ValueError: methods to be stacked differ where vmap would silently use method 0's:
            a submodule's type or plain attribute (``columns``, a λ kept as a float, …), or a
            parameter's or buffer's name, shape, dtype or trained flag; the message names the
            method and what differs.
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
    if count == 1 or not can_batch(methods[0]) or distributed.processes() > 1:
        return [
            fit(
                method,
                data,
                seed=seed,
                validate=validate,
                checkpoint=None if checkpoint is None else _numbered(Path(checkpoint), k),
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
                f"{names[k]} cannot be stacked with {names[0]} (vmap runs the first method's "
                f"Python code for all): {why}; train unlike methods apart (see `stacks`)"
            )
    device = next(methods[0].parameters()).device
    columns = _stacked_columns(per_method, methods[0].columns, shared)
    host = resident_device(columns, device)
    columns = {name: column.to(host) for name, column in columns.items()}
    first_column = next(iter(columns.values()))
    rows = first_column.shape[0 if shared else 1]
    wrapped = [_Losses(method) for method in methods]
    params, buffers = stack_module_state(wrapped)
    frozen = {n for n, p in wrapped[0].named_parameters() if not p.requires_grad}
    for name in frozen:  # stack_module_state makes every parameter a leaf that requires grad
        params[name] = params[name].detach()
    base = copy.deepcopy(wrapped[0]).to("meta")
    opt = build_optimizer(
        optimizer or {"name": "adam", "lr": 1e-3},
        [p for n, p in params.items() if n not in frozen],
    )
    orders = [torch.Generator().manual_seed(seed) for seed in seeds]
    histories: list[list[dict[str, float]]] = [[] for _ in range(count)]
    first: list[float | None] = [None] * count

    path = None if checkpoint is None else Path(checkpoint)
    state = None if path is None else read_rebuildable(path, _read_stack)
    if state is not None:
        with torch.no_grad():
            for name, value in state["params"].items():
                params[name].copy_(value)
            for name, value in state["buffers"].items():
                buffers[name].copy_(value)
        opt.load_state_dict(state["optimizer"])
        for order, saved in zip(orders, state["orders"], strict=True):
            order.set_state(saved)
        torch.set_rng_state(state["torch_rng"])
        histories, first = state["histories"], state["first_losses"]

    def losses_of(p: dict, b: dict, batch: dict) -> dict[str, Tensor]:
        return functional_call(base, (p, b), (batch,))

    step = vmap(losses_of, randomness="different")
    every = torch.arange(count, device=host)[:, None]
    with flush_denormals():
        bar = tqdm(
            total=epochs,
            initial=len(histories[0]),
            desc=f"{names[0]} and {count - 1} more" if count > 1 else names[0],
            disable=None if progress else True,
            leave=False,
        )
        for epoch in range(len(histories[0]) + 1, epochs + 1):
            base.train()
            order = torch.stack([torch.randperm(rows, generator=g) for g in orders]).to(host)
            totals: dict[str, Tensor] = {}
            for start in range(0, rows, batch_size):
                index = order[:, start : start + batch_size]
                batch = {
                    name: (column[index] if shared else column[every, index]).to(device)
                    for name, column in columns.items()
                }
                with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
                    losses = step(params, buffers, batch)
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
            _unstack(params, buffers, wrapped)
            for k in range(count):
                named = {f"train_{key}": float(v[k]) / rows for key, v in totals.items()}
                metrics = {"epoch": epoch, "train_loss": sum(named.values()), **named}
                if validate is not None:
                    metrics |= validate(methods[k])
                _check_diverged(metrics, first[k], names[k], epoch)
                histories[k].append(metrics)
            if path is not None:
                with atomic_path(path) as tmp:
                    torch.save(
                        {
                            "params": {n: p.detach() for n, p in params.items()},
                            "buffers": buffers,
                            "optimizer": opt.state_dict(),
                            "orders": [g.get_state() for g in orders],
                            "torch_rng": torch.get_rng_state(),
                            "histories": histories,
                            "first_losses": first,
                        },
                        tmp,
                    )
            bar.update()
        bar.close()
    _unstack(params, buffers, wrapped)
    return histories


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


def _unstack(params: dict, buffers: dict, wrapped: list[_Losses]) -> None:
    """Copy the stacked state into each method (method k gets entry k)."""
    with torch.no_grad():
        for k, module in enumerate(wrapped):
            for name, value in module.named_parameters():
                value.copy_(params[name][k])
            for name, value in module.named_buffers():
                value.copy_(buffers[name][k])


def _numbered(path: Path, k: int) -> Path:
    return path.with_name(f"{path.stem}-{k}{path.suffix}")


def _read_stack(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    keys = {"params", "buffers", "optimizer", "orders", "torch_rng", "histories", "first_losses"}
    if not isinstance(state, dict) or set(state) != keys:
        raise ValueError(f"not a checkpoint of fit_many (expected the entries {', '.join(keys)})")
    return state
