"""Mappings φ: shapes, exact values against hand computations, seeding, registry, fingerprint."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crossdistill.mappings import (
    Compose,
    Crop,
    DilatedConv,
    GaussianNoise,
    Identity,
    Mask,
    Resize,
    crop,
    dilated_conv,
    gaussian_noise,
    invert,
    mask,
    pad,
    resize,
    rotate,
)
from crossdistill.registries import mappings
from crossdistill.training import fingerprint


def images(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_shapes() -> None:
    assert Resize(size=(32, 32), channels=3)(images(2, 1, 28, 28)).shape == (2, 3, 32, 32)
    assert Resize(size=28)(images(2, 1, 8, 8)).shape == (2, 1, 28, 28)
    assert DilatedConv()(images(2, 3, 28, 28)).shape == (2, 3, 28, 28)
    assert DilatedConv(kernel_size=5)(images(1, 1, 8, 8)).shape == (1, 1, 8, 8)
    assert GaussianNoise()(images(5, 7)).shape == (5, 7)
    assert Identity()(images(4)).equal(images(4))


def test_resize_is_bilinear_without_corner_alignment() -> None:
    # align_corners=False samples the 2-pixel row [0, 1] at -0.25, 0.25, 0.75, 1.25 (clamped).
    x = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).reshape(1, 1, 2, 2)
    out = resize(x, (4, 4), channels=3)
    expected_row = torch.tensor([0.0, 0.25, 0.75, 1.0])
    assert torch.allclose(out, expected_row.expand(1, 3, 4, 4))


def test_resize_rejects_channels_it_cannot_replicate() -> None:
    with pytest.raises(ValueError, match="channels"):
        resize(images(1, 2, 4, 4), (8, 8), channels=3)
    assert resize(images(1, 3, 4, 4), (8, 8), channels=3).shape == (1, 3, 8, 8)


def test_noise_is_seeded() -> None:
    x1, x2 = images(3, 4), images(3, 4, seed=1)
    a, b, c = GaussianNoise(seed=3), GaussianNoise(seed=3), GaussianNoise(seed=4)
    first_a, second_a = a(x1), a(x2)
    assert first_a.equal(b(x1)) and second_a.equal(b(x2))
    assert not first_a.equal(c(x1))
    assert a(x1).equal(first_a)  # a fixed function: the same input gets the same noise


def test_noise_has_the_configured_variance_not_std() -> None:
    noise = GaussianNoise(variance=0.1, seed=0)(torch.zeros(200_000))
    assert noise.var().item() == pytest.approx(0.1, rel=0.02)
    assert noise.mean().item() == pytest.approx(0.0, abs=0.005)
    generator = torch.Generator().manual_seed(0)
    assert gaussian_noise(torch.ones(100_000), 4.0, generator).var().item() == pytest.approx(
        4.0, rel=0.03
    )


def test_dilated_conv_equals_hand_built_conv2d() -> None:
    kernel = torch.arange(9.0).reshape(3, 3) - 4
    x = images(2, 3, 9, 9)
    weight = kernel.reshape(1, 1, 3, 3).repeat(3, 1, 1, 1)
    expected = F.conv2d(x, weight, padding=2, dilation=2, groups=3)
    assert torch.allclose(dilated_conv(x, kernel, 2), expected)
    assert torch.allclose(DilatedConv(kernel=kernel.tolist())(x), expected)


def test_dilated_conv_places_kernel_taps_two_pixels_apart() -> None:
    # out[i, j] = Σ_ab k[a, b] x[i + 2(a − 1), j + 2(b − 1)]; a unit impulse at (4, 4) puts k[a, b]
    # at (4 − 2(a − 1), 4 − 2(b − 1)), e.g. k[0, 0] at (6, 6) and k[2, 2] at (2, 2).
    kernel = torch.arange(1.0, 10.0).reshape(3, 3)
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0
    out = dilated_conv(x, kernel, dilation=2)[0, 0]
    expected = torch.zeros(9, 9)
    for a in range(3):
        for b in range(3):
            expected[4 - 2 * (a - 1), 4 - 2 * (b - 1)] = kernel[a, b]
    assert out.equal(expected)


def test_default_kernel_is_seeded_and_normalised() -> None:
    conv = DilatedConv(kernel_size=3, seed=5)
    assert conv.kernel.abs().sum().item() == pytest.approx(1.0)
    assert conv.kernel.equal(DilatedConv(seed=5).kernel)
    assert not conv.kernel.equal(DilatedConv(seed=6).kernel)
    assert "kernel" in conv.state_dict()


def test_compose_applies_steps_in_order() -> None:
    up, conv = Resize(size=(6, 6)), DilatedConv(seed=1)
    x = images(1, 1, 3, 3)
    composed = Compose(up, conv)(x)
    assert composed.equal(conv(up(x)))
    assert not torch.allclose(composed, up(conv(x)))


def test_build_by_name_from_dict_specs() -> None:
    noise = mappings.build({"name": "gaussian_noise", "variance": 0.2, "seed": 7})
    assert isinstance(noise, GaussianNoise) and (noise.variance, noise.seed) == (0.2, 7)
    chain = mappings.build(
        {
            "name": "compose",
            "steps": [{"name": "resize", "size": [32, 32], "channels": 3}, "identity"],
        }
    )
    assert isinstance(chain, Compose) and isinstance(chain[1], Identity)
    assert chain[0].size == (32, 32)
    assert chain(images(2, 1, 28, 28)).shape == (2, 3, 32, 32)


def test_unknown_name_lists_the_registered_names() -> None:
    with pytest.raises(ValueError, match="dilated_conv.*gaussian_noise.*identity"):
        mappings.build("blur")


@pytest.mark.parametrize(
    "spec",
    [
        "identity",
        "gaussian_noise",
        "dilated_conv",
        "resize",
        {"name": "crop", "top": 1, "left": 2, "height": 3, "width": 4},
        {"name": "mask", "top": 1, "height": 2, "channels": [0]},
    ],
)
def test_mappings_hold_nothing_trainable(spec: str | dict) -> None:
    module = mappings.build({"name": "compose", "steps": [spec]})
    assert not any(t.requires_grad for t in [*module.parameters(), *module.buffers()])


def test_repr_shows_settings() -> None:
    assert "variance=0.1, seed=3" in repr(GaussianNoise(seed=3))
    assert "kernel_size=5, dilation=2, seed=1" in repr(DilatedConv(kernel_size=5, seed=1))
    assert "kernel=[[0.0, 1.0], [1.0, 0.0]]" in repr(DilatedConv(kernel=[[0, 1], [1, 0]]))
    assert "size=(32, 32), channels=3, mode='bilinear'" in repr(Resize(size=32, channels=3))


def test_fingerprint_is_stable_and_tracks_settings() -> None:
    base = fingerprint(GaussianNoise(variance=0.1, seed=0))
    assert base == fingerprint(GaussianNoise(variance=0.1, seed=0))
    assert base != fingerprint(GaussianNoise(variance=0.1, seed=1))
    assert base != fingerprint(GaussianNoise(variance=0.2, seed=0))
    conv = fingerprint(DilatedConv(kernel=[[1.0, 0.0], [0.0, 0.0]]))
    assert conv == fingerprint(DilatedConv(kernel=[[1.0, 0.0], [0.0, 0.0]]))
    assert conv != fingerprint(DilatedConv(kernel=[[1.0, 0.0], [0.0, 1e-6]]))
    assert fingerprint(DilatedConv(seed=0)) != fingerprint(DilatedConv(seed=1))
    assert fingerprint(Compose(Identity(), GaussianNoise(seed=0))) != fingerprint(
        Compose(Identity(), GaussianNoise(seed=1))
    )


def test_fingerprint_sees_buffer_bytes_beyond_repr() -> None:
    conv = DilatedConv(seed=0)
    before = fingerprint(conv)
    conv.kernel[0, 0] += 1.0
    assert fingerprint(conv) != before


def test_fingerprint_sees_the_generator_seed_beyond_repr() -> None:
    class Seeded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.generator = torch.Generator().manual_seed(0)

    module = Seeded()
    before = fingerprint(module)
    module.generator.manual_seed(5)
    assert fingerprint(module) != before


def test_rotate_pad_invert() -> None:
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 0, 2] = 1.0  # top middle
    left = torch.zeros(1, 1, 5, 5)
    left[0, 0, 2, 0] = 1.0
    torch.testing.assert_close(rotate(x, 90), left, atol=1e-6, rtol=0)
    images = torch.rand(3, 2, 6, 6)
    quarter = mappings.build({"name": "rotate", "degrees": 90})
    torch.testing.assert_close(quarter(quarter(quarter(quarter(images)))), images)
    framed = mappings.build({"name": "pad", "padding": 2, "value": 0.5})(images)
    assert framed.shape == (3, 2, 10, 10)
    assert torch.equal(framed[:, :, 2:-2, 2:-2], images) and framed[0, 0, 0, 0] == 0.5
    torch.testing.assert_close(invert(invert(images)), images)
    assert torch.equal(mappings.build("invert")(images), 1 - images)
    with pytest.raises(ValueError, match="padding"):
        pad(images, -1)


def seen_pixels(phi, shape: tuple[int, int, int, int]) -> torch.Tensor:
    """Boolean (C, H, W): the input pixels whose change alters a fixed random linear teacher's
    output on ``phi(x)``, found by changing each pixel of ``x`` in turn by +1."""
    x = images(*shape)
    weight = torch.randn(phi(x)[0].numel(), 3, generator=torch.Generator().manual_seed(1))

    def teacher(z: torch.Tensor) -> torch.Tensor:
        return z.flatten(1) @ weight

    before = teacher(phi(x))
    seen = torch.zeros(shape[1:], dtype=torch.bool)
    for c, i, j in itertools.product(*map(range, shape[1:])):
        changed = x.clone()
        changed[:, c, i, j] += 1.0
        seen[c, i, j] = not torch.equal(teacher(phi(changed)), before)
    return seen


def region(shape: tuple[int, int, int], channels, rows: slice, columns: slice) -> torch.Tensor:
    inside = torch.zeros(shape, dtype=torch.bool)
    inside[channels, rows, columns] = True
    return inside


def test_crop_is_the_slice_and_keeps_the_whole_image_when_it_fits_exactly() -> None:
    x = images(2, 3, 6, 7)
    assert crop(x, 1, 2, 3, 4).equal(x[:, :, 1:4, 2:6])
    assert Crop(top=1, left=2, height=3, width=4)(x).shape == (2, 3, 3, 4)
    assert Crop(top=0, left=0, height=6, width=7)(x).equal(x)
    assert crop(x, 5, 6, 1, 1).equal(x[:, :, 5:, 6:])


def test_mask_equals_a_hand_built_image() -> None:
    x = images(2, 3, 5, 6)
    expected = torch.full_like(x, 0.5)
    expected[:, [0, 2], 1:3, 2:] = x[:, [0, 2], 1:3, 2:]
    out = Mask(top=1, left=2, height=2, channels=[2, 0], value=0.5)(x)
    assert out.equal(expected) and out.dtype == x.dtype
    assert Mask()(x).equal(x)  # the defaults hide nothing
    right = mask(x, left=4)
    assert right[..., 4:].equal(x[..., 4:]) and not right[..., :4].any()


def test_a_teacher_after_crop_sees_exactly_its_region() -> None:
    shape = (2, 2, 5, 6)
    phi = Crop(top=1, left=2, height=3, width=3)
    inside = region(shape[1:], slice(None), slice(1, 4), slice(2, 5))
    assert seen_pixels(phi, shape).equal(inside)
    # every pixel outside changed at once: the same teacher output
    x = images(*shape)
    changed = torch.where(inside, x, images(*shape, seed=9))
    assert phi(changed).equal(phi(x)) and not changed.equal(x)


@pytest.mark.parametrize(
    ("settings", "channels", "rows", "columns"),
    [
        ({"top": 1, "left": 2, "height": 3, "width": 3}, [0, 1, 2], slice(1, 4), slice(2, 5)),
        ({"top": 2, "left": 4}, [0, 1, 2], slice(2, 5), slice(4, 6)),
        ({"channels": [1]}, [1], slice(0, 5), slice(0, 6)),
        (
            {"top": 3, "width": 2, "channels": [2, 0], "value": 0.5},
            [0, 2],
            slice(3, 5),
            slice(0, 2),
        ),
    ],
)
def test_a_teacher_after_mask_sees_exactly_its_region_and_channels(
    settings: dict, channels: list[int], rows: slice, columns: slice
) -> None:
    shape = (2, 3, 5, 6)
    phi = Mask(**settings)
    inside = region(shape[1:], channels, rows, columns)
    assert seen_pixels(phi, shape).equal(inside)
    x = images(*shape)
    changed = torch.where(inside, x, images(*shape, seed=9))
    assert phi(changed).equal(phi(x)) and not changed.equal(x)


def test_crop_and_mask_reject_rectangles_and_channels_that_do_not_fit() -> None:
    digits = images(1, 1, 28, 28)
    with pytest.raises(ValueError, match="crop rows 14…41 do not fit in an image of height 28"):
        crop(digits, 14, 0, 28, 5)
    with pytest.raises(ValueError, match="crop columns 20…28 do not fit in an image of width 28"):
        Crop(top=0, left=20, height=1, width=9)(digits)
    with pytest.raises(ValueError, match="mask rows 28 to the edge do not fit .* height 28"):
        Mask(top=28)(digits)
    with pytest.raises(ValueError, match="mask columns 27…28 do not fit .* width 28"):
        mask(digits, left=27, width=2)
    with pytest.raises(ValueError, match=r"mask channel 3 does not exist .* 3 channels \(0…2\)"):
        Mask(channels=[0, 3])(images(1, 3, 4, 4))
    with pytest.raises(ValueError, match="batch of images"):
        crop(images(1, 28, 28), 0, 0, 1, 1)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Crop(top=-1, left=0, height=1, width=1), "top must be an int >= 0, got -1"),
        (lambda: Crop(top=0, left=0, height=0, width=1), "height must be an int >= 1, got 0"),
        (lambda: Crop(top=0, left=1.5, height=1, width=1), "left must be an int >= 0, got 1.5"),
        (lambda: Crop(top=0, left=0, height=1, width=None), "width must be an int >= 1, got None"),
        (lambda: Mask(width=0), "width must be an int >= 1, got 0"),
        (lambda: Mask(top=True), "top must be an int >= 0, got True"),
        (lambda: Mask(channels=[-1]), "each of channels must be an int >= 0, got -1"),
        (lambda: Mask(channels=[]), "channels must be a non-empty list"),
        (lambda: Mask(channels=1), "channels must be a non-empty list"),
    ],
)
def test_crop_and_mask_check_their_settings_when_built(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_crop_and_mask_build_by_name() -> None:
    x = images(2, 3, 6, 7)
    cropped = mappings.build({"name": "crop", "top": 1, "left": 2, "height": 3, "width": 4})
    assert isinstance(cropped, Crop) and cropped(x).equal(x[:, :, 1:4, 2:6])
    masked = mappings.build({"name": "mask", "left": 3, "channels": [1], "value": 0.5})
    assert isinstance(masked, Mask) and masked.channels == (1,)
    assert masked(x).equal(mask(x, left=3, channels=[1], value=0.5))
    assert "top=1, left=2, height=3, width=4" in repr(cropped)
    assert "top=0, left=3, height=None, width=None, channels=(1,), value=0.5" in repr(masked)


def test_fingerprint_of_crop_and_mask_tracks_every_setting() -> None:
    settings = {"top": 1, "left": 2, "height": 3, "width": 4}
    base = fingerprint(Crop(**settings))
    assert base == fingerprint(Crop(**settings))
    for name in settings:
        assert base != fingerprint(Crop(**{**settings, name: settings[name] + 1})), name
    settings = {"top": 1, "left": 2, "height": 3, "width": 4, "channels": [0], "value": 0.0}
    base = fingerprint(Mask(**settings))
    assert base == fingerprint(Mask(**settings))
    assert base == fingerprint(Mask(**{**settings, "channels": (0,), "value": 0}))
    changes = {"top": 2, "left": 3, "height": None, "width": 5, "channels": [0, 1], "value": 1.0}
    for name, changed in changes.items():
        assert base != fingerprint(Mask(**{**settings, name: changed})), name
    assert fingerprint(Mask()) != fingerprint(Mask(channels=[0]))
