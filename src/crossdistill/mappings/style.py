"""Neural style transfer as a mapping φ: restyle images like a fixed style image.

Two ways to the same losses (Gatys et al., 2016) on frozen VGG features, a content loss and a
Gram-matrix style loss (`crossdistill.losses.StyleLoss`).

``style_transfer`` (:class:`StyleTransfer`) optimises every image itself (Gatys et al.): faithful,
but ≈ 0.3 s per step per 160×160 image on 2 CPU cores with VGG-16, ~150 steps per image.
``fast_style_transfer`` (:class:`FastStyleTransfer`) trains a small image-transformation network
once on a set of content images with the same losses (Johnson et al., 2016), as the method
:class:`TransformNetTraining` through `crossdistill.training.fit`; φ is then one forward pass.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import numpy as np
import sklearn.datasets
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from ..data.arrays import Columns, random_indices
from ..data.datasets import DatasetSetting
from ..data.sources import cache_dir
from ..figures import plot_before_after
from ..files import UNREADABLE, atomic_path, read_rebuildable
from ..losses.style import DEFAULT_CONTENT_LAYER, DEFAULT_STYLE_LAYERS, StyleLoss
from ..methods import Batch, Method
from ..models.vgg import Arch, Convention, load_vgg_features
from ..registries import Spec, datasets, mappings
from ..training.cache import fingerprint
from ..training.loop import fit, predict
from .basic import resize

SKLEARN_IMAGES = "sklearn:"
"""Prefix of a style-image path naming a scikit-learn sample photograph."""


def load_image(path: str | Path, size: int | Sequence[int] | None = None) -> Tensor:
    """An image file (PNG, JPEG, ... via Pillow) as RGB ``(1, 3, H, W)`` float32 in [0, 1].

    ``path`` may name one of scikit-learn's bundled sample photographs as ``sklearn:china.jpg``
    or ``sklearn:flower.jpg`` (no file needed). ``size``: ``(H, W)`` or one int for a square,
    resized with Pillow's bilinear filter (antialiased); None keeps the file's size.
    """
    if str(path).startswith(SKLEARN_IMAGES):
        path = Path(sklearn.datasets.__file__).parent / "images" / str(path)[len(SKLEARN_IMAGES) :]
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"style image {path} does not exist")
    with Image.open(path) as file:
        image = file.convert("RGB")
    if size is not None:
        height, width = (size, size) if isinstance(size, int) else size
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255


def stylize(
    content: Tensor, loss: StyleLoss, *, steps: int = 150, lr: float = 0.02
) -> tuple[Tensor, list[float]]:
    """Gatys et al.: optimise images, starting from ``content`` (N, 3, H, W) in [0, 1], with Adam
    (``lr`` in pixel units) on ``loss`` for ``steps`` steps, clamping to [0, 1] after each.

    The gradient is that of the sum of the images' losses, so each image gets the gradient it
    would get alone and the result does not depend on how images are batched.

    Returns:
        The stylised images ``(N, 3, H, W)`` in [0, 1] and the loss (mean over the images) before
        each step (``steps`` floats).
    """
    target = loss.content_target(content)
    image = content.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([image], lr=lr)
    losses = []
    with torch.enable_grad():
        for _ in range(steps):
            value = loss.compare(image, target)
            optimizer.zero_grad(set_to_none=True)
            (value * len(image)).backward()
            optimizer.step()
            with torch.no_grad():
                image.clamp_(0, 1)
            losses.append(value.item())
    return image.detach(), losses


def _conv(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1
) -> list[nn.Module]:
    return [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            padding_mode="reflect",
        ),
        nn.InstanceNorm2d(out_channels, affine=True),
        nn.ReLU(),
    ]


class ResidualBlock(nn.Module):
    """``x + IN(conv(ReLU(IN(conv(x)))))`` with 3×3 convolutions, ``(N, C, H, W)`` kept."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv(channels, channels, 3), *_conv(channels, channels, 3)[:2])

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class TransformNet(nn.Module):
    """Johnson et al.'s image-transformation network, small: RGB ``(N, 3, H, W)`` in [0, 1] →
    ``(N, 3, H, W)`` in (0, 1), any H, W.

    A 9×9 convolution to ``channels[0]``, a stride-2 3×3 convolution to each further entry of
    ``channels``, ``residual_blocks`` residual blocks, then as many nearest-neighbour upsamplings
    (to the exact sizes seen on the way down) each followed by a 3×3 convolution, every
    convolution with instance norm and ReLU; a last 9×9 convolution gives a residual r and the
    output is ``sigmoid(logit(x) + r)``. That convolution starts at zero, so an untrained network
    is the identity (up to clamping x to [1e-3, 1 - 1e-3]).
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64), residual_blocks: int = 3) -> None:
        super().__init__()
        steps = list(pairwise(channels))
        self.stem = nn.Sequential(*_conv(3, channels[0], 9))
        self.down = nn.ModuleList(nn.Sequential(*_conv(a, b, 3, stride=2)) for a, b in steps)
        self.residual = nn.Sequential(
            *(ResidualBlock(channels[-1]) for _ in range(residual_blocks))
        )
        self.up = nn.ModuleList(nn.Sequential(*_conv(b, a, 3)) for a, b in reversed(steps))
        self.head = nn.Conv2d(channels[0], 3, 9, padding=4, padding_mode="reflect")
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        sizes = []
        for stage in self.down:
            sizes.append(h.shape[-2:])
            h = stage(h)
        h = self.residual(h)
        for stage, size in zip(self.up, reversed(sizes), strict=True):
            h = stage(F.interpolate(h, size=size, mode="nearest"))
        return torch.sigmoid(torch.logit(x, eps=1e-3) + self.head(h))


class TransformNetTraining(Method):
    """The method that trains a feed-forward style network:
    ``{"perceptual": loss(network(x), x)}`` on content images ``x`` ``(B, 3, H, W)`` in [0, 1],
    ``loss`` the frozen :class:`~crossdistill.losses.StyleLoss` (content term against ``x``'s
    own features).

    Args:
        student: the :class:`TransformNet` trained.
        loss: a style loss without trainable parameters (its VGG frozen).

    Raises:
        ValueError: a parameter of ``loss`` requires a gradient (`fit` would train it).
    """

    columns = ("x",)

    def __init__(self, student: TransformNet, loss: StyleLoss) -> None:
        super().__init__(student)
        trainable = [name for name, p in loss.named_parameters() if p.requires_grad]
        if trainable:
            raise ValueError(
                f"the style loss must be frozen, but its parameter {trainable[0]!r} requires "
                "a gradient (call loss.requires_grad_(False))"
            )
        self.loss = loss

    def forward_train(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        x = batch["x"]
        output = self.student(x)
        return output, {"perceptual": self.loss(output, x)}


def train_transform_net(
    network: TransformNet,
    content: Tensor,
    loss: StyleLoss,
    *,
    epochs: int,
    batch_size: int = 4,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool | str = False,
) -> list[dict[str, float]]:
    """Train ``network`` in place as :class:`TransformNetTraining` with
    `crossdistill.training.fit` on content images ``(M, 3, H, W)`` in [0, 1] to minimise
    ``loss(network(x), x)``; Adam at ``lr``.

    Returns ``fit``'s history (``train_loss`` = ``train_perceptual`` per epoch).
    """
    with torch.enable_grad():
        return fit(
            TransformNetTraining(network, loss),
            Columns({"x": content}),
            epochs=epochs,
            batch_size=batch_size,
            optimizer={"name": "adam", "lr": lr},
            seed=seed,
            progress=bool(progress),
            name=progress if isinstance(progress, str) else "style transform network",
        )


def build_style_loss(
    style_image: str | Path,
    *,
    style_size: int | Sequence[int] | None = None,
    weights: str | Path | None = None,
    arch: Arch = "vgg19",
    input_convention: Convention | None = None,
    style_weight: float | None = None,
    content_weight: float = 1.0,
    content_layer: str = DEFAULT_CONTENT_LAYER,
    style_layers: Sequence[str] = DEFAULT_STYLE_LAYERS,
) -> StyleLoss:
    """A :class:`StyleLoss` from files: the style image (:func:`load_image` at ``style_size``)
    and the VGG weights (`crossdistill.models.vgg.load_vgg_features`)."""
    return StyleLoss(
        load_vgg_features(weights, arch, input_convention),
        load_image(style_image, style_size),
        style_weight=style_weight,
        content_weight=content_weight,
        content_layer=content_layer,
        style_layers=style_layers,
    )


def _loss_settings(
    style_image: str | Path,
    style_size: int | Sequence[int] | None,
    weights: str | Path | None,
    arch: Arch,
    input_convention: Convention | None,
    style_weight: float | None,
    content_weight: float,
    content_layer: str,
    style_layers: Sequence[str],
) -> dict[str, Any]:
    """The keyword arguments of :func:`build_style_loss` as a mapping stores them (paths as
    strings, sequences as lists), so that they print, hash and save alike."""
    return {
        "style_image": str(style_image),
        "style_size": style_size if isinstance(style_size, int | None) else list(style_size),
        "weights": None if weights is None else str(weights),
        "arch": arch,
        "input_convention": input_convention,
        "style_weight": style_weight,
        "content_weight": content_weight,
        "content_layer": content_layer,
        "style_layers": list(style_layers),
    }


def _settings_repr(settings: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in settings.items())


@mappings.register("style_transfer")
class StyleTransfer(nn.Module):
    """φ(x) = :func:`stylize` (Gatys et al.) of every image ``(N, 3, H, W)`` in [0, 1], in
    batches of ``batch_size``; output the same shape, in [0, 1].

    Slow: every image is optimised for ``steps`` steps, each a VGG forward and backward pass —
    ≈ 0.3 s per step per 160×160 image on 2 CPU cores with VGG-16
    (`benchmarks/style_transfer.py`). For many images use :class:`FastStyleTransfer`.

    Settings: ``style_image`` (a file), ``style_size`` (None: the file's size), ``weights``,
    ``arch``, ``input_convention`` (see `load_vgg_features`), ``steps``, ``lr``, and the
    :class:`StyleLoss` settings ``style_weight``, ``content_weight``, ``content_layer``,
    ``style_layers``. The images are independent of ``batch_size``.
    """

    def __init__(
        self,
        *,
        style_image: str | Path,
        style_size: int | Sequence[int] | None = None,
        weights: str | Path | None = None,
        arch: Arch = "vgg19",
        input_convention: Convention | None = None,
        style_weight: float | None = None,
        content_weight: float = 1.0,
        content_layer: str = DEFAULT_CONTENT_LAYER,
        style_layers: Sequence[str] = DEFAULT_STYLE_LAYERS,
        steps: int = 150,
        lr: float = 0.02,
        batch_size: int = 8,
    ) -> None:
        super().__init__()
        loss_settings = _loss_settings(
            style_image,
            style_size,
            weights,
            arch,
            input_convention,
            style_weight,
            content_weight,
            content_layer,
            style_layers,
        )
        self.loss = build_style_loss(**loss_settings)
        self.settings = {**loss_settings, "steps": steps, "lr": lr, "batch_size": batch_size}

    def forward(self, x: Tensor) -> Tensor:
        steps, lr = self.settings["steps"], self.settings["lr"]
        return torch.cat(
            [
                stylize(chunk, self.loss, steps=steps, lr=lr)[0]
                for chunk in x.split(self.settings["batch_size"])
            ]
        )

    def extra_repr(self) -> str:
        return _settings_repr(self.settings)


@mappings.register("fast_style_transfer")
class FastStyleTransfer(nn.Module):
    """φ(x) = a trained :class:`TransformNet` (Johnson et al.), ``(N, 3, H, W)`` → same shape,
    in [0, 1]; run without gradients in batches of ``batch_size``.

    Either ``checkpoint``: a file saved by an earlier training (see below), or the settings to
    train one: ``style_image`` .. ``style_layers`` as in :class:`StyleTransfer`, and

    - ``content``: a dataset spec (`crossdistill.data.datasets`, e.g. ``{"name": "cifar10",
      "small": 1000}``); its ``part`` ("big", "small" or "test") gives the content images, of
      which a seeded random ``images`` are used, resized to ``image_size`` (None: as they are)
      with one channel replicated to three;
    - ``epochs``, ``batch_size`` (images per step, also the batch of φ), ``lr`` (Adam), ``seed``
      (weights, image choice, batch order, the dataset's split); ``channels``, ``residual_blocks``
      (the network's size).

    A trained network is saved (atomically) to ``cache_dir()/style/<key>.pt``, the key the
    fingerprint of the settings, the VGG weights, the style image and the content images; a later
    build with the same key loads it instead of training. The repr shows the settings and the
    checkpoint file.

    Attributes:
        checkpoint: the file the network was loaded from.
        settings: the settings it was trained with (read from the checkpoint).
        history: ``fit``'s per-epoch history of its training.
    """

    def __init__(
        self,
        *,
        checkpoint: str | Path | None = None,
        style_image: str | Path | None = None,
        style_size: int | Sequence[int] | None = None,
        weights: str | Path | None = None,
        arch: Arch = "vgg19",
        input_convention: Convention | None = None,
        style_weight: float | None = None,
        content_weight: float = 1.0,
        content_layer: str = DEFAULT_CONTENT_LAYER,
        style_layers: Sequence[str] = DEFAULT_STYLE_LAYERS,
        content: DatasetSetting | None = None,
        part: Literal["big", "small", "test"] = "big",
        images: int = 1000,
        image_size: int | None = None,
        epochs: int = 2,
        batch_size: int = 4,
        lr: float = 1e-3,
        seed: int = 0,
        channels: Sequence[int] = (16, 32, 64),
        residual_blocks: int = 3,
        progress: bool | str = "fast style transfer",
    ) -> None:
        super().__init__()
        if checkpoint is None:
            if style_image is None or content is None:
                raise ValueError(
                    "fast_style_transfer needs checkpoint=<file>, or style_image and content "
                    "(a dataset spec of the images to train on)"
                )
            loss_settings = _loss_settings(
                style_image,
                style_size,
                weights,
                arch,
                input_convention,
                style_weight,
                content_weight,
                content_layer,
                style_layers,
            )
            loss = build_style_loss(**loss_settings)
            settings = {
                **loss_settings,
                "content": content if isinstance(content, str) else dict(content),
                "part": part,
                "images": images,
                "image_size": image_size,
                "epochs": epochs,
                "batch_size": batch_size,
                "lr": lr,
                "seed": seed,
                "channels": list(channels),
                "residual_blocks": residual_blocks,
            }
            checkpoint = _train_or_find(loss, settings, progress)
        elif style_image is not None or content is not None:
            raise ValueError("give either checkpoint or the settings to train (style_image ...)")
        self.checkpoint = Path(checkpoint).expanduser()
        if not self.checkpoint.is_file():
            raise FileNotFoundError(f"fast style transfer checkpoint {self.checkpoint} not found")
        try:
            saved = _read_checkpoint(self.checkpoint)
        except UNREADABLE as error:
            raise ValueError(
                f"{self.checkpoint}: not a style network checkpoint ({error})"
            ) from None
        self.settings: dict[str, Any] = saved["settings"]
        self.history: list[dict[str, float]] = saved["history"]
        self.network = TransformNet(self.settings["channels"], self.settings["residual_blocks"])
        self.network.load_state_dict(saved["network"])
        self.network.requires_grad_(False).eval()

    def forward(self, x: Tensor) -> Tensor:
        return predict(self.network, x, self.settings["batch_size"])

    def write_figures(self, directory: str | Path, images: Tensor) -> None:
        """The run's figure of φ: ``stylised.png``, ``images`` ``(N, 3, H, W)`` above φ(images)."""
        plot_before_after(images, self(images), Path(directory) / "stylised.png")

    def extra_repr(self) -> str:
        return _settings_repr({"checkpoint": str(self.checkpoint), **self.settings})


def content_images(
    content: Spec,
    part: str = "big",
    images: int = 1000,
    image_size: int | None = None,
    seed: int = 0,
) -> Tensor:
    """A seeded random ``images`` of the ``part`` of a dataset, ``(images, 3, S, S)`` in [0, 1]
    (S = ``image_size``, or the dataset's own size when None; grey images replicated to RGB)."""
    if part not in ("big", "small", "test"):
        raise ValueError(f"part must be 'big', 'small' or 'test', got {part!r}")
    x = getattr(datasets.build(content, seed=seed), part).x
    x = x[random_indices(len(x), images, seed)[0]]
    size = x.shape[-2:] if image_size is None else (image_size, image_size)
    return resize(x, size, channels=3)


def _train_or_find(loss: StyleLoss, settings: dict[str, Any], progress: bool | str) -> Path:
    """The checkpoint of a network trained with ``settings``, training and saving it if new."""
    content = content_images(
        settings["content"],
        settings["part"],
        settings["images"],
        settings["image_size"],
        settings["seed"],
    )
    key = fingerprint(loss, content, json.dumps(settings, sort_keys=True))
    path = cache_dir() / "style" / f"{key[:16]}.pt"
    if read_rebuildable(path, _read_checkpoint) is not None:
        return path
    torch.manual_seed(settings["seed"])
    network = TransformNet(settings["channels"], settings["residual_blocks"])
    history = train_transform_net(
        network,
        content,
        loss,
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        lr=settings["lr"],
        seed=settings["seed"],
        progress=progress,
    )
    with atomic_path(path) as tmp:
        torch.save({"settings": settings, "network": network.state_dict(), "history": history}, tmp)
    return path


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """A style network checkpoint: ``settings``, ``network`` (state dict) and ``history``."""
    saved = torch.load(path, weights_only=True)
    if not isinstance(saved, dict) or not {"settings", "network", "history"} <= set(saved):
        raise ValueError("expected the entries settings, network and history")
    return saved
