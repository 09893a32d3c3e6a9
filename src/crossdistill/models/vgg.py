"""VGG-16 / VGG-19 convolutional feature extractors (no classifier) with frozen ImageNet weights.

The weights are read from a state-dict file in torchvision's layout (``features.N.weight`` and
``features.N.bias``, N the index of the convolution in ``vgg.features``), from a ``.pth`` / ``.pt``
file (``torch.load``) or a ``.npz`` file (numpy). Two input conventions exist for such weights:

- ``"torchvision"``: RGB in [0, 1], then ``(x - mean) / std`` with ImageNet's mean
  (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) — torchvision's own weights;
- ``"caffe"``: BGR, 0–255, minus the per-channel mean (103.939, 116.779, 123.68) — the original
  VGG release, as in ``vgg16-imagenet/vgg16_features_caffe.npz``.

The extractor takes RGB images in [0, 1] and applies its convention itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

Arch = Literal["vgg16", "vgg19"]
Convention = Literal["torchvision", "caffe"]

CONFIGS: dict[str, tuple[int, ...]] = {
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}
"""Convolutions per block; the blocks have 64, 128, 256, 512, 512 channels, each ends in a
2×2 max-pool."""

WIDTHS = (64, 128, 256, 512, 512)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class KnownWeights:
    """Where this project looks for an architecture's weights and how to get them."""

    relative_path: str
    """Path under ``$CROSSDISTILL_DATA`` used when no path is given."""
    convention: Convention
    """Input convention of that file, the default of ``input_convention``."""
    how_to_get: str
    """What to obtain, for the error raised when the file is missing."""


KNOWN_WEIGHTS: dict[str, KnownWeights] = {
    "vgg19": KnownWeights(
        "vgg19/vgg19.pth",
        "torchvision",
        "torchvision's ImageNet VGG-19 weights vgg19-dcbd7d83.pth "
        "(https://download.pytorch.org/models/vgg19-dcbd7d83.pth; a state dict whose "
        "features.* keys are used)",
    ),
    "vgg16": KnownWeights(
        "vgg16-imagenet/vgg16_features_caffe.npz",
        "caffe",
        "the ImageNet VGG-16 convolutional weights in Caffe's input convention, "
        "vgg16_features_caffe.npz (keys features.{0,2,5,...,28}.{weight,bias})",
    ),
}


def layer_names(arch: Arch) -> list[str]:
    """Names of the modules of ``vgg.features`` in order: ``conv1_1, relu1_1, ..., pool5``."""
    names = []
    for block, convs in enumerate(CONFIGS[arch], start=1):
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


def preprocess(x: Tensor, convention: Convention) -> Tensor:
    """RGB images ``(N, 3, H, W)`` in [0, 1] → the network's input ``(N, 3, H, W)``.

    ``"torchvision"``: ``(x - IMAGENET_MEAN) / IMAGENET_STD`` per channel; ``"caffe"``: channels
    reversed to BGR, times 255, minus ``CAFFE_MEAN_BGR``.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected RGB images (N, 3, H, W), got shape {tuple(x.shape)}")
    if convention == "torchvision":
        mean, std = x.new_tensor(IMAGENET_MEAN), x.new_tensor(IMAGENET_STD)
        return (x - mean[:, None, None]) / std[:, None, None]
    if convention == "caffe":
        return x.flip(1) * 255 - x.new_tensor(CAFFE_MEAN_BGR)[:, None, None]
    raise ValueError(f"unknown input_convention {convention!r}; expected 'torchvision' or 'caffe'")


class VGGFeatures(nn.Module):
    """The convolutional part of VGG: (N, 3, H, W) RGB in [0, 1] → activations at named layers.

    ``features`` is an ``nn.Sequential`` laid out as torchvision's ``vgg.features`` (Conv3×3
    padding 1 → ReLU per convolution, MaxPool 2×2 after each block), so torchvision state dicts
    load into it unchanged. Layer ``relu{b}_{i}`` has ``WIDTHS[b-1]`` channels and spatial size
    ``H / 2**(b-1)`` (rounded down at every pooling). Parameters are frozen (no grad); gradients
    still flow to the input.
    """

    def __init__(self, arch: Arch = "vgg19", input_convention: Convention | None = None) -> None:
        super().__init__()
        if arch not in CONFIGS:
            raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(CONFIGS)}")
        self.arch = arch
        self.input_convention = input_convention or KNOWN_WEIGHTS[arch].convention
        preprocess(torch.zeros(1, 3, 1, 1), self.input_convention)  # reject unknown conventions
        layers: list[nn.Module] = []
        in_channels = 3
        for convs, width in zip(CONFIGS[arch], WIDTHS, strict=True):
            for _ in range(convs):
                layers += [nn.Conv2d(in_channels, width, kernel_size=3, padding=1), nn.ReLU()]
                in_channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.names = layer_names(arch)
        self.requires_grad_(False)

    def forward(self, x: Tensor, layers: Iterable[str]) -> dict[str, Tensor]:
        """Activations ``{name: (N, C_l, H_l, W_l)}`` of ``x`` (N, 3, H, W) RGB in [0, 1].

        Only the layers up to the deepest one asked for run.
        """
        wanted = set(layers)
        unknown = wanted - set(self.names)
        if unknown:
            raise ValueError(
                f"{self.arch} has no layer {sorted(unknown)[0]!r}; expected names like "
                f"relu1_1, relu4_2, conv5_1, pool3"
            )
        out: dict[str, Tensor] = {}
        h = preprocess(x, self.input_convention)
        for name, module in zip(self.names, self.features, strict=True):
            if len(out) == len(wanted):
                break
            h = module(h)
            if name in wanted:
                out[name] = h
        return out

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, input_convention={self.input_convention!r}"


def vgg16_features(input_convention: Convention | None = None) -> VGGFeatures:
    """VGG-16's 13 convolutions with PyTorch's default (random) initialisation."""
    return VGGFeatures("vgg16", input_convention)


def vgg19_features(input_convention: Convention | None = None) -> VGGFeatures:
    """VGG-19's 16 convolutions with PyTorch's default (random) initialisation."""
    return VGGFeatures("vgg19", input_convention)


def default_weights_path(arch: Arch) -> Path | None:
    """``$CROSSDISTILL_DATA/<KNOWN_WEIGHTS[arch].relative_path>``, or None when it is unset."""
    root = os.environ.get("CROSSDISTILL_DATA")
    return Path(root).expanduser() / KNOWN_WEIGHTS[arch].relative_path if root else None


def load_vgg_features(
    path: str | Path | None = None,
    arch: Arch = "vgg19",
    input_convention: Convention | None = None,
) -> VGGFeatures:
    """A frozen :class:`VGGFeatures` holding the weights of a state-dict file.

    Args:
        path: a ``.pth`` / ``.pt`` (torch) or ``.npz`` (numpy) file with keys
            ``features.N.weight`` (out, in, 3, 3) and ``features.N.bias`` (out,) for every
            convolution of ``arch``; other keys not starting with ``features.`` (torchvision's
            ``classifier.*``) are ignored. None: :func:`default_weights_path`.
        arch: ``"vgg19"`` or ``"vgg16"``.
        input_convention: ``"torchvision"`` or ``"caffe"`` (see the module docstring); None: the
            convention of the file this project knows for ``arch`` (``KNOWN_WEIGHTS``):
            torchvision for VGG-19, caffe for VGG-16.

    Raises:
        FileNotFoundError: the file is missing; the message says what to obtain and where to
            put it.
        ValueError: a key is missing or unexpected, or a tensor has the wrong shape; the message
            names the file, the key, and the expected and found shapes.
    """
    model = VGGFeatures(arch, input_convention)
    file = Path(path).expanduser() if path is not None else default_weights_path(arch)
    if file is None or not file.is_file():
        known = KNOWN_WEIGHTS[arch]
        if file is None:
            problem = "no VGG weights path given and $CROSSDISTILL_DATA is not set"
        else:
            problem = f"VGG weights file {file} does not exist"
        raise FileNotFoundError(
            f"{problem}. Obtain {known.how_to_get} and put it at {file or 'the given path'} "
            f"or at $CROSSDISTILL_DATA/{known.relative_path}."
        )
    state = {k: v for k, v in _read_state_dict(file).items() if k.startswith("features.")}
    expected = model.state_dict()
    unexpected = sorted(state.keys() - expected.keys())
    if unexpected:
        first, last = next(iter(expected)), next(reversed(expected))
        raise ValueError(
            f"{file}: unexpected key {unexpected[0]!r} for {arch}, whose keys run from "
            f"{first!r} to {last!r}; is this a file for another architecture?"
        )
    for key, value in expected.items():
        if key not in state:
            raise ValueError(f"{file}: missing key {key!r} (expected shape {tuple(value.shape)})")
        if tuple(state[key].shape) != tuple(value.shape):
            raise ValueError(
                f"{file}: key {key!r} has shape {tuple(state[key].shape)}, "
                f"expected {tuple(value.shape)} for {arch}"
            )
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model


def _read_state_dict(file: Path) -> dict[str, Tensor]:
    if file.suffix == ".npz":
        with np.load(file) as arrays:
            return {key: torch.from_numpy(arrays[key]) for key in arrays.files}
    if file.suffix in (".pth", ".pt"):
        state = torch.load(file, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{file}: expected a state dict, found {type(state).__name__}")
        return state
    raise ValueError(f"{file}: unknown weights format {file.suffix!r}; expected .pth, .pt or .npz")
