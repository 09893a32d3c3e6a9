"""K models of one architecture as one module of stacked layers: each layer runs the K models
with one batched kernel (a batched matrix product, a grouped convolution, batch norm over
K × C channels) instead of ``vmap``'s per-operation bookkeeping.

A `StackedModel` maps ``(K, B, *in_shape)`` to ``(K, B, R)``: row k of the input goes through
model k. Convolutions and batch norms work on ``(B, K·C, H, W)``, the K models' channels side by
side (model k's are channels ``k·C … (k+1)·C − 1``), so one grouped kernel serves all K; the
stack moves between the two layouts only where a layer needs the other one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.GELU, nn.Sigmoid, nn.Identity, nn.LeakyReLU)
"""Modules that act on each element alone: the same module serves the stack in any layout."""


def stackable(models: Sequence[nn.Module]) -> bool:
    """Whether `StackedModel` takes ``models``: one or more models alike (the same layers, with
    the same settings and parameter shapes), each an ``nn.Sequential`` (nested ones included)
    of ``Linear``, ``Conv2d`` (zero padding), ``BatchNorm1d``/``BatchNorm2d`` (with running
    statistics and a momentum), ``MaxPool2d``/``AvgPool2d``, ``Flatten`` (from dimension 1)
    and `ELEMENTWISE` modules. Not an LSTM, dropout (its draws would differ from one run's) or
    any module with a ``forward`` of its own."""
    if not models or not all(map(_covered, models)):
        return False
    first = _leaves(models[0])
    return all(
        len(leaves) == len(first)
        and all(
            type(a) is type(b) and _signature(a) == _signature(b)
            for a, b in zip(first, leaves, strict=True)
        )
        for leaves in map(_leaves, models[1:])
    )


def _covered(model: nn.Module) -> bool:
    """Whether every module of ``model`` has a stacked form (see `stackable`)."""
    if type(model) is nn.Sequential:
        return all(_covered(child) for child in model)
    if isinstance(model, nn.Conv2d):
        return type(model) is nn.Conv2d and model.padding_mode == "zeros"
    if isinstance(model, nn.BatchNorm1d | nn.BatchNorm2d):
        return model.track_running_stats and model.momentum is not None
    if isinstance(model, nn.Flatten):
        return model.start_dim == 1 and model.end_dim == -1
    return type(model) in (nn.Linear, nn.MaxPool2d, nn.AvgPool2d, *ELEMENTWISE)


class StackedModel(nn.Module):
    """K models alike but for their weights, as one module (see the module docstring).

    Args:
        models: K models that `stackable` accepts; their parameters and buffers are copied.

    ``forward(x)``: ``x`` ``(K, B, *in_shape)`` → ``(K, B, R)``; in training mode each batch
    norm updates each model's running statistics from that model's rows only, exactly as K
    separate models would. `unstack` copies the weights back into K models.
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if not stackable(models):
            raise ValueError("StackedModel needs models that `stackable` accepts")
        self.count = len(models)
        self.layers = nn.ModuleList(
            _stacked_layer([leaves[i] for leaves in map(_leaves, models)])
            for i in range(len(_leaves(models[0])))
        )

    def forward(self, x: Tensor) -> Tensor:
        layout = "models"
        for layer in self.layers:
            wanted = getattr(layer, "layout", layout)
            if wanted != layout:
                x = _to_channels(x) if wanted == "channels" else _to_models(x, self.count)
                layout = wanted
            x = layer(x)
        return x if layout == "models" else _to_models(x, self.count)

    @torch.no_grad()
    def unstack(self, models: Sequence[nn.Module]) -> None:
        """Copy model k's parameters and buffers from the stack into ``models[k]``."""
        for k, model in enumerate(models):
            for layer, leaf in zip(self.layers, _leaves(model), strict=True):
                if hasattr(layer, "copy_into"):
                    layer.copy_into(leaf, k)


def _leaves(model: nn.Module) -> list[nn.Module]:
    """The non-Sequential modules of a (nested) Sequential, in the order they run."""
    if type(model) is nn.Sequential:
        return [leaf for child in model for leaf in _leaves(child)]
    return [model]


def _signature(module: nn.Module) -> tuple:
    """What two stacked modules must share: settings, parameter and buffer shapes."""
    settings = {k: v for k, v in vars(module).items() if not k.startswith("_") and k != "training"}
    shapes = [(n, tuple(t.shape), t.dtype) for n, t in module.state_dict().items()]
    return repr(sorted(settings.items())), shapes


def _to_channels(x: Tensor) -> Tensor:
    """``(K, B, C, *spatial)`` → ``(B, K·C, *spatial)``."""
    count, batch, channels, *spatial = x.shape
    return x.transpose(0, 1).reshape(batch, count * channels, *spatial)


def _to_models(x: Tensor, count: int) -> Tensor:
    """``(B, K·C, *spatial)`` → ``(K, B, C, *spatial)`` (a view)."""
    batch, channels, *spatial = x.shape
    return x.reshape(batch, count, channels // count, *spatial).transpose(0, 1)


def _stacked_layer(layers: list[nn.Module]) -> nn.Module:
    """The stacked form of K alike layers (an elementwise one serves as it is)."""
    first = layers[0]
    if isinstance(first, nn.Linear):
        return _Linear(layers)
    if isinstance(first, nn.Conv2d):
        return _Conv2d(layers)
    if isinstance(first, nn.BatchNorm1d | nn.BatchNorm2d):
        return _BatchNorm(layers)
    if isinstance(first, nn.Flatten):
        return _Flatten()
    if isinstance(first, nn.MaxPool2d | nn.AvgPool2d):
        return _Channels(first)
    return first  # elementwise: any layout


class _Linear(nn.Module):
    """K ``Linear`` layers: ``(K, B, in)`` → ``(K, B, out)`` by one batched matrix product
    with a ``(K, out, in)`` weight, then the bias: the arithmetic of ``vmap`` over
    ``F.linear``, so that a layer stack gives the numbers of a vmap stack bit for bit."""

    layout = "models"

    def __init__(self, layers: list[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers]).clone())
        self.weight.requires_grad_(layers[0].weight.requires_grad)
        self.bias = None
        if layers[0].bias is not None:
            self.bias = nn.Parameter(torch.stack([m.bias.detach()[None] for m in layers]).clone())
            self.bias.requires_grad_(layers[0].bias.requires_grad)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.matmul(x, self.weight.transpose(1, 2))
        return out if self.bias is None else out + self.bias

    def copy_into(self, layer: nn.Linear, k: int) -> None:
        layer.weight.copy_(self.weight[k])
        if self.bias is not None:
            layer.bias.copy_(self.bias[k, 0])


class _Conv2d(nn.Module):
    """K ``Conv2d`` layers as one convolution with K times the groups, on ``(B, K·C, H, W)``."""

    layout = "channels"

    def __init__(self, layers: list[nn.Conv2d]) -> None:
        super().__init__()
        first = layers[0]
        self.stride, self.padding, self.dilation = first.stride, first.padding, first.dilation
        self.groups = first.groups * len(layers)
        self.weight = nn.Parameter(torch.cat([m.weight.detach() for m in layers]).clone())
        self.weight.requires_grad_(first.weight.requires_grad)
        self.bias = None
        if first.bias is not None:
            self.bias = nn.Parameter(torch.cat([m.bias.detach() for m in layers]).clone())
            self.bias.requires_grad_(first.bias.requires_grad)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )

    def copy_into(self, layer: nn.Conv2d, k: int) -> None:
        out = layer.out_channels
        layer.weight.copy_(self.weight[k * out : (k + 1) * out])
        if self.bias is not None:
            layer.bias.copy_(self.bias[k * out : (k + 1) * out])


class _BatchNorm(nn.Module):
    """K batch norms as one over K × C channels, on ``(B, K·C, …)``: each channel's batch
    statistics and running averages are those of its own model's rows, as apart."""

    layout = "channels"

    def __init__(self, layers: list[nn.modules.batchnorm._BatchNorm]) -> None:
        super().__init__()
        first = layers[0]
        self.eps, self.momentum = first.eps, first.momentum
        self.weight = self.bias = None
        if first.affine:
            self.weight = nn.Parameter(torch.cat([m.weight.detach() for m in layers]).clone())
            self.bias = nn.Parameter(torch.cat([m.bias.detach() for m in layers]).clone())
        for name in ("running_mean", "running_var"):
            self.register_buffer(name, torch.cat([getattr(m, name) for m in layers]).clone())
        tracked = torch.stack([m.num_batches_tracked for m in layers]).clone()
        self.register_buffer("num_batches_tracked", tracked)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training,
            self.momentum,
            self.eps,
        )

    def copy_into(self, layer: nn.modules.batchnorm._BatchNorm, k: int) -> None:
        size = layer.num_features
        part = slice(k * size, (k + 1) * size)
        if self.weight is not None:
            layer.weight.copy_(self.weight[part])
            layer.bias.copy_(self.bias[part])
        layer.running_mean.copy_(self.running_mean[part])
        layer.running_var.copy_(self.running_var[part])
        layer.num_batches_tracked.copy_(self.num_batches_tracked[k])


class _Flatten(nn.Module):
    """``Flatten`` of each model's rows: ``(K, B, C, H, W)`` → ``(K, B, C·H·W)``."""

    layout = "models"

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(*x.shape[:2], -1)


class _Channels(nn.Module):
    """A pooling layer, applied to the K models' channels side by side (it acts per channel)."""

    layout = "channels"

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)
