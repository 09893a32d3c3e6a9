"""Fixed mappings φ: identity, Gaussian noise, dilated convolution, resize, pad, rotate, invert,
crop, mask, compose.

Each exists as a function on tensors and as a registered ``nn.Module`` holding its settings.
None has trainable state: parameters and buffers never require grad.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossdistill.mappings.base import MappingSetting

from ..registries import mappings


def _check_images(x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be a batch of images (N, C, H, W), got shape {tuple(x.shape)}")


def gaussian_noise(x: Tensor, variance: float, generator: torch.Generator | None = None) -> Tensor:
    """``x + ε`` with ε ~ N(0, variance) drawn independently per element; any shape.

    ``variance`` is σ², not σ. The noise is drawn on ``generator``'s device (CPU by default) and
    moved to ``x``'s, so a seeded generator gives the same noise on every device.
    """
    if variance < 0:
        raise ValueError(f"variance must be >= 0, got {variance}")
    device = generator.device if generator is not None else x.device
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device)
    return x + math.sqrt(variance) * noise.to(x.device)


def dilated_conv(x: Tensor, kernel: Tensor, dilation: int) -> Tensor:
    """Convolve each channel of ``x`` (N, C, H, W) separately with the same 2-D ``kernel``
    (kh, kw) at the given ``dilation``; zero padding keeps the output (N, C, H, W).

    With an odd kernel side the padding is ``dilation * (side - 1) // 2`` on each side.
    """
    _check_images(x)
    if kernel.dim() != 2:
        raise ValueError(f"kernel must be 2-D (kh, kw), got shape {tuple(kernel.shape)}")
    channels = x.shape[1]
    weight = kernel.to(x).expand(channels, 1, *kernel.shape)
    return F.conv2d(x, weight, padding="same", dilation=dilation, groups=channels)


def resize(
    x: Tensor,
    size: Sequence[int],
    channels: int | None = None,
    mode: str = "bilinear",
    antialias: bool = False,
) -> Tensor:
    """Resize ``x`` (N, C, H, W) to (N, C', *size) with ``F.interpolate`` (``align_corners=False``
    for the linear and cubic modes); with ``channels`` given, a single channel is replicated to
    C' = ``channels`` (an input already having ``channels`` channels is kept as is).
    ``antialias`` low-pass filters a downscale (bilinear and bicubic modes), as PIL does.
    """
    _check_images(x)
    if channels is not None and x.shape[1] not in (1, channels):
        raise ValueError(f"cannot map {x.shape[1]} channels to channels={channels}; expected 1")
    align_corners = False if mode in ("linear", "bilinear", "bicubic", "trilinear") else None
    out = F.interpolate(
        x, size=tuple(size), mode=mode, align_corners=align_corners, antialias=antialias
    )
    if channels is not None and out.shape[1] != channels:
        out = out.repeat(1, channels, 1, 1)
    return out


def pad(x: Tensor, padding: int, value: float = 0.0) -> Tensor:
    """``x`` (N, C, H, W) framed by ``padding`` pixels of ``value`` on every side:
    (N, C, H + 2p, W + 2p)."""
    _check_images(x)
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    return F.pad(x, (padding,) * 4, value=value)


def rotate(x: Tensor, degrees: float) -> Tensor:
    """``x`` (N, C, H, W) rotated counter-clockwise by ``degrees`` about the image centre,
    bilinear, zeros outside the original frame; same shape."""
    _check_images(x)
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    # affine_grid maps output coordinates to input ones: the inverse (clockwise) rotation
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def invert(x: Tensor, maximum: float = 1.0) -> Tensor:
    """``maximum − x``: white digits on black become black on white; any shape."""
    return maximum - x


def _check_index(name: str, value: object, minimum: int) -> None:
    """``value`` must be an int (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_rectangle(
    top: int, left: int, height: int | None, width: int | None, *, to_edge: bool
) -> None:
    """Offsets ints ≥ 0 and sizes ints ≥ 1 (or None, "to the edge", where ``to_edge``)."""
    _check_index("top", top, 0)
    _check_index("left", left, 0)
    for name, length in [("height", height), ("width", width)]:
        if not (to_edge and length is None):
            _check_index(name, length, 1)


def _check_channels(channels: Sequence[int] | None) -> None:
    """``channels`` None or a non-empty sequence of ints ≥ 0."""
    if channels is None:
        return
    if isinstance(channels, int | str) or len(channels) == 0:
        raise ValueError(
            "channels must be a non-empty list of channel indices (None keeps every channel), "
            f"got {channels!r}"
        )
    for channel in channels:
        _check_index("each of channels", channel, 0)


def _span(kind: str, axis: str, start: int, length: int | None, size: int, side: str) -> slice:
    """The slice ``start … start + length − 1`` (to the edge when ``length`` is None) of an image
    axis of ``size`` pixels, or a ValueError naming both when it does not fit."""
    stop = size if length is None else start + length
    if start >= size or stop > size:
        span = f"{start} to the edge" if length is None else f"{start}…{stop - 1}"
        raise ValueError(f"{kind} {axis} {span} do not fit in an image of {side} {size}")
    return slice(start, stop)


def crop(x: Tensor, top: int, left: int, height: int, width: int) -> Tensor:
    """The rectangle of rows ``top … top + height − 1`` and columns ``left … left + width − 1``
    (pixels, from the top-left corner) of images ``x`` (N, C, H, W): (N, C, height, width), a
    contiguous copy (a slice's view would keep all of ``x`` alive in a cache). A rectangle that
    does not fit inside H × W raises ValueError."""
    _check_images(x)
    _check_rectangle(top, left, height, width, to_edge=False)
    rows = _span("crop", "rows", top, height, x.shape[2], "height")
    columns = _span("crop", "columns", left, width, x.shape[3], "width")
    return x[:, :, rows, columns].contiguous()


def mask(
    x: Tensor,
    top: int = 0,
    left: int = 0,
    height: int | None = None,
    width: int | None = None,
    channels: Sequence[int] | None = None,
    value: float = 0.0,
) -> Tensor:
    """Images ``x`` (N, C, H, W) with every pixel outside the rectangle of rows
    ``top … top + height − 1`` and columns ``left … left + width − 1`` (pixels; ``None`` height or
    width: to the bottom or right edge), and every channel not in ``channels`` (indices; ``None``:
    all), set to ``value``; same shape and dtype. A rectangle that does not fit inside H × W or a
    channel index ≥ C raises ValueError."""
    _check_images(x)
    _check_rectangle(top, left, height, width, to_edge=True)
    _check_channels(channels)
    rows = _span("mask", "rows", top, height, x.shape[2], "height")
    columns = _span("mask", "columns", left, width, x.shape[3], "width")
    count = x.shape[1]
    for channel in channels or ():
        if channel >= count:
            raise ValueError(
                f"mask channel {channel} does not exist in an image with {count} channels "
                f"(0…{count - 1})"
            )
    keep = torch.zeros(x.shape[1:], dtype=torch.bool, device=x.device)
    kept_channels = slice(None) if channels is None else list(channels)
    keep[kept_channels, rows, columns] = True
    return x.masked_fill(~keep, value)


@mappings.register("identity")
class Identity(nn.Module):
    """φ(x) = x, any shape (basic distillation, where D_t ⊂ D_s)."""

    def forward(self, x: Tensor) -> Tensor:
        return x


@mappings.register("gaussian_noise")
class GaussianNoise(nn.Module):
    """φ(x) = x + N(0, ``variance``), any shape, a fixed function of ``x``: every call draws the
    noise from a generator freshly seeded with ``seed``, so the same input always gets the same
    noise (as a mapping in front of a cached teacher must). Apply it to a whole dataset at once;
    batches of equal shape would all receive the same draw."""

    def __init__(self, *, variance: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        if variance < 0:
            raise ValueError(f"variance must be >= 0, got {variance}")
        self.variance = variance
        self.seed = seed

    def forward(self, x: Tensor) -> Tensor:
        return gaussian_noise(x, self.variance, torch.Generator().manual_seed(self.seed))

    def extra_repr(self) -> str:
        return f"variance={self.variance}, seed={self.seed}"


def corrupt_pixels(x: Tensor, fraction: float, generator: torch.Generator | None = None) -> Tensor:
    """Images ``(N, C, H, W)`` with ``round(fraction · H · W)`` seeded random pixel positions of
    each image replaced by U[0, 1] values (in every channel); ``fraction`` 0 returns ``x``."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    n, _, height, width = x.shape
    count = round(fraction * height * width)
    if count == 0:
        return x
    scores = torch.rand(n, height * width, generator=generator)
    mask = torch.zeros(n, height * width, dtype=torch.bool)
    mask.scatter_(1, scores.argsort(1)[:, :count], True)
    noise = torch.rand(x.shape, generator=generator).to(x)
    return torch.where(mask.reshape(n, 1, height, width).to(x.device), noise, x)


@mappings.register("corrupt_pixels")
class CorruptPixels(nn.Module):
    """φ(x) = `corrupt_pixels` of ``x`` at ``fraction`` (e.g. 0.3: 30 % of each image's pixels
    replaced by uniform noise), a fixed function of ``x`` (a generator freshly seeded with
    ``seed`` at every call, as `GaussianNoise`)."""

    def __init__(self, *, fraction: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
        self.fraction = fraction
        self.seed = seed

    def forward(self, x: Tensor) -> Tensor:
        return corrupt_pixels(x, self.fraction, torch.Generator().manual_seed(self.seed))

    def extra_repr(self) -> str:
        return f"fraction={self.fraction}, seed={self.seed}"


@mappings.register("dilated_conv")
class DilatedConv(nn.Module):
    """Fixed per-channel 2-D convolution (N, C, H, W) → (N, C, H, W), see :func:`dilated_conv`.

    The kernel is ``kernel`` (a square nested list; it then sets ``kernel_size`` and ``seed`` is
    unused) or else a ``kernel_size`` × ``kernel_size`` draw from N(0, 1) with ``seed``, divided
    by the sum of its absolute values, so that |φ(x)| ≤ max |x|: the transform keeps the scale
    of the images instead of amplifying it by a random factor.
    """

    kernel: Tensor

    def __init__(
        self,
        *,
        kernel_size: int = 3,
        dilation: int = 2,
        seed: int = 0,
        kernel: Sequence[Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        if kernel is None:
            generator = torch.Generator().manual_seed(seed)
            weights = torch.randn(kernel_size, kernel_size, generator=generator)
            weights = weights / weights.abs().sum()
        else:
            weights = torch.tensor(kernel, dtype=torch.float32)
            if weights.dim() != 2 or weights.shape[0] != weights.shape[1]:
                raise ValueError(f"kernel must be square 2-D, got shape {tuple(weights.shape)}")
            kernel_size = weights.shape[0]
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.seed = None if kernel is not None else seed
        self.register_buffer("kernel", weights)

    def forward(self, x: Tensor) -> Tensor:
        return dilated_conv(x, self.kernel, self.dilation)

    def extra_repr(self) -> str:
        source = f"seed={self.seed}" if self.seed is not None else f"kernel={self.kernel.tolist()}"
        return f"kernel_size={self.kernel_size}, dilation={self.dilation}, {source}"


@mappings.register("resize")
class Resize(nn.Module):
    """Resize to ``size`` and optionally replicate one channel to ``channels``, see
    :func:`resize`; e.g. (N, 1, 8, 8) → (N, 1, 28, 28) or (N, 1, 28, 28) → (N, 3, 32, 32)."""

    def __init__(
        self,
        *,
        size: int | Sequence[int] = (28, 28),
        channels: int | None = None,
        mode: str = "bilinear",
        antialias: bool = False,
    ) -> None:
        super().__init__()
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.channels = channels
        self.mode = mode
        self.antialias = antialias

    def forward(self, x: Tensor) -> Tensor:
        return resize(x, self.size, self.channels, self.mode, self.antialias)

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, channels={self.channels}, mode={self.mode!r}, "
            f"antialias={self.antialias}"
        )


@mappings.register("pad")
class Pad(nn.Module):
    """Frame images with ``padding`` pixels of ``value``, see :func:`pad`; e.g. sklearn's 8×8
    digits resized to 20×20 and padded by 4 sit in a 28×28 frame like MNIST's."""

    def __init__(self, *, padding: int, value: float = 0.0) -> None:
        super().__init__()
        self.padding = padding
        self.value = value

    def forward(self, x: Tensor) -> Tensor:
        return pad(x, self.padding, self.value)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, value={self.value}"


@mappings.register("rotate")
class Rotate(nn.Module):
    """Rotate images by ``degrees`` counter-clockwise, see :func:`rotate`."""

    def __init__(self, *, degrees: float) -> None:
        super().__init__()
        self.degrees = degrees

    def forward(self, x: Tensor) -> Tensor:
        return rotate(x, self.degrees)

    def extra_repr(self) -> str:
        return f"degrees={self.degrees}"


@mappings.register("invert")
class Invert(nn.Module):
    """``maximum − x``, see :func:`invert`."""

    def __init__(self, *, maximum: float = 1.0) -> None:
        super().__init__()
        self.maximum = maximum

    def forward(self, x: Tensor) -> Tensor:
        return invert(x, self.maximum)

    def extra_repr(self) -> str:
        return f"maximum={self.maximum}"


@mappings.register("crop")
class Crop(nn.Module):
    """Keep only a rectangle of each image: (N, C, H, W) → (N, C, ``height``, ``width``), see
    :func:`crop`; e.g. ``Crop(top=0, left=0, height=14, width=28)`` gives a teacher only the top
    half of a 28×28 digit. Settings are pixel offsets and sizes, checked here."""

    def __init__(self, *, top: int, left: int, height: int, width: int) -> None:
        super().__init__()
        _check_rectangle(top, left, height, width, to_edge=False)
        self.top = top
        self.left = left
        self.height = height
        self.width = width

    def forward(self, x: Tensor) -> Tensor:
        return crop(x, self.top, self.left, self.height, self.width)

    def extra_repr(self) -> str:
        return f"top={self.top}, left={self.left}, height={self.height}, width={self.width}"


@mappings.register("mask")
class Mask(nn.Module):
    """Hide all of each image but a rectangle and some channels, keeping the shape (N, C, H, W),
    see :func:`mask`; e.g. ``Mask(left=14)`` shows a teacher only the right half of a 28×28 digit,
    ``Mask(channels=[0])`` only the red channel of an RGB image. The defaults hide nothing."""

    def __init__(
        self,
        *,
        top: int = 0,
        left: int = 0,
        height: int | None = None,
        width: int | None = None,
        channels: Sequence[int] | None = None,
        value: float = 0.0,
    ) -> None:
        super().__init__()
        _check_rectangle(top, left, height, width, to_edge=True)
        _check_channels(channels)
        self.top = top
        self.left = left
        self.height = height
        self.width = width
        self.channels = None if channels is None else tuple(channels)
        self.value = float(value)

    def forward(self, x: Tensor) -> Tensor:
        return mask(x, self.top, self.left, self.height, self.width, self.channels, self.value)

    def extra_repr(self) -> str:
        return (
            f"top={self.top}, left={self.left}, height={self.height}, width={self.width}, "
            f"channels={self.channels}, value={self.value}"
        )


class Compose(nn.Sequential):
    """Apply mappings in order: ``Compose(a, b)(x) == b(a(x))``. Its modules are frozen."""

    def __init__(self, *modules: nn.Module) -> None:
        super().__init__(*modules)
        self.requires_grad_(False)


@mappings.register("compose")
def compose(*, steps: Sequence[MappingSetting]) -> Compose:
    """A :class:`Compose` of mappings built by name, e.g.
    ``{"name": "compose", "steps": ["identity", {"name": "resize", "size": [32, 32]}]}``."""
    return Compose(*(mappings.build(step) for step in steps))
