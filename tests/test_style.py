"""Style transfer: VGG loading and preprocessing, Gram and losses by hand, Gatys optimisation,
the feed-forward network trained through `fit`, the registered mappings, the real VGG-16."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from crossdistill.losses import StyleLoss, content_loss, gram_matrix, style_loss
from crossdistill.mappings import (
    StyleTransfer,
    TransformNet,
    TransformNetTraining,
    load_image,
    stylize,
    train_transform_net,
)
from crossdistill.mappings import style as style_module
from crossdistill.models import VGGFeatures, load_vgg_features, vgg19_features
from crossdistill.models.vgg import preprocess
from crossdistill.registries import mappings


def images(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def stripes(height: int, width: int) -> torch.Tensor:
    """A style unlike uniform noise: red and blue vertical stripes 2 pixels wide, (1, 3, H, W)."""
    red = (torch.arange(width) // 2 % 2).float().expand(height, width)
    return torch.stack([red, torch.zeros_like(red), 1 - red])[None]


@pytest.fixture(scope="module")
def vgg19_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight VGG-19 state dict in torchvision's layout (with a classifier key, as
    torchvision's file has), initialised as torchvision initialises VGG."""
    torch.manual_seed(0)
    model = vgg19_features()
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    state = {**model.state_dict(), "classifier.0.weight": torch.zeros(2, 2)}
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def extractor(vgg19_file: Path) -> VGGFeatures:
    return load_vgg_features(vgg19_file, "vgg19")


@pytest.fixture(scope="module")
def style_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pixels = (stripes(20, 24)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("style") / "style.png"
    Image.fromarray(pixels).save(path)
    return path


def test_gram_matrix_by_hand() -> None:
    # One image, C=2 channels, H=1, W=2: rows (1, 2) and (3, 4); C·H·W = 4.
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 1, 2)
    expected = torch.tensor([[1 + 4, 3 + 8], [3 + 8, 9 + 16]]) / 4
    assert torch.allclose(gram_matrix(features), expected[None])


def test_style_and_content_losses_by_hand() -> None:
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 1, 2)  # Gram [[5, 11], [11, 25]] / 4
    b = torch.zeros(1, 2, 1, 2)
    target = torch.zeros(1, 2, 2)
    squares = (5**2 + 2 * 11**2 + 25**2) / 16 / 4  # mean over the 2×2 entries
    features, grams = {"x": a, "y": b}, {"x": target, "y": target}
    assert style_loss(features, grams).item() == pytest.approx(squares)
    assert style_loss(features, grams, {"x": 3.0, "y": 1.0}).item() == pytest.approx(3 * squares)
    assert content_loss(a, b).item() == pytest.approx((1 + 4 + 9 + 16) / 4)


def test_style_loss_module_combines_the_terms(extractor: VGGFeatures) -> None:
    style, content, output = (
        images(1, 3, 24, 24),
        images(2, 3, 16, 16, seed=1),
        images(2, 3, 16, 16, seed=2),
    )
    loss = StyleLoss(extractor, style, style_weight=7.0, content_weight=0.5)
    features = extractor(output, ["relu4_2", *loss.style_layers])
    style_grams = {
        layer: gram_matrix(f) for layer, f in extractor(style, loss.style_layers).items()
    }
    target = extractor(content, ["relu4_2"])["relu4_2"]
    expected = 0.5 * content_loss(features["relu4_2"], target) + 7.0 * style_loss(
        features, style_grams
    )
    assert loss(output, content).item() == pytest.approx(expected.item(), rel=1e-5)


def test_preprocessing_by_hand() -> None:
    pixel = torch.tensor([1.0, 0.5, 0.0]).reshape(1, 3, 1, 1)  # RGB
    caffe = preprocess(pixel, "caffe").flatten()  # BGR · 255 − mean
    assert caffe.tolist() == pytest.approx([-103.939, 127.5 - 116.779, 255 - 123.68], abs=1e-4)
    torchvision = preprocess(pixel, "torchvision").flatten()
    expected = [(1 - 0.485) / 0.229, (0.5 - 0.456) / 0.224, (0 - 0.406) / 0.225]
    assert torchvision.tolist() == pytest.approx(expected, abs=1e-5)


def test_extractor_shapes_and_frozen_weights(extractor: VGGFeatures, vgg19_file: Path) -> None:
    saved = torch.load(vgg19_file, weights_only=True)
    assert extractor.features[34].weight.equal(saved["features.34.weight"])  # conv5_4
    assert not any(p.requires_grad for p in extractor.parameters())
    out = extractor(images(2, 3, 32, 32), ["relu1_1", "relu3_1", "relu5_1"])
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "relu1_1": (2, 64, 32, 32),
        "relu3_1": (2, 256, 8, 8),
        "relu5_1": (2, 512, 2, 2),
    }
    with pytest.raises(ValueError, match="relu6_1"):
        extractor(images(1, 3, 8, 8), ["relu6_1"])


def test_missing_weights_say_what_to_fetch(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError) as error:
        load_vgg_features(path, "vgg19")
    message = str(error.value)
    assert str(path) in message and "vgg19-dcbd7d83.pth" in message
    assert "$CROSSDISTILL_DATA/vgg19/vgg19.pth" in message
    monkeypatch.delenv("CROSSDISTILL_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="CROSSDISTILL_DATA is not set"):
        load_vgg_features(None, "vgg16")
    with pytest.raises(FileNotFoundError, match="vgg16_features_caffe.npz"):
        load_vgg_features(tmp_path / "vgg16.npz", "vgg16")


def test_wrong_keys_and_shapes_name_file_key_and_shapes(tmp_path: Path) -> None:
    wrong_key = tmp_path / "wrong_key.npz"
    np.savez(wrong_key, **{"features.1.weight": np.zeros((64, 3, 3, 3), np.float32)})
    with pytest.raises(ValueError, match=r"wrong_key\.npz: unexpected key 'features\.1\.weight'"):
        load_vgg_features(wrong_key, "vgg19")

    wrong_shape = tmp_path / "wrong_shape.pt"
    torch.save({"features.0.weight": torch.zeros(64, 3, 5, 5)}, wrong_shape)
    with pytest.raises(ValueError) as error:
        load_vgg_features(wrong_shape, "vgg19")
    message = str(error.value)
    assert "wrong_shape.pt" in message and "'features.0.weight'" in message
    assert "(64, 3, 5, 5)" in message and "expected (64, 3, 3, 3)" in message

    missing = tmp_path / "missing.pt"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, missing)
    with pytest.raises(
        ValueError, match=r"missing key 'features\.0\.bias' \(expected shape \(64,\)\)"
    ):
        load_vgg_features(missing, "vgg19")


def test_stylize_lowers_the_loss_and_keeps_images_in_range(extractor: VGGFeatures) -> None:
    content = images(2, 3, 32, 32)
    loss = StyleLoss(extractor, stripes(32, 32), style_weight=1e5)
    out, losses = stylize(content, loss, steps=6, lr=0.05)
    assert out.shape == content.shape and len(losses) == 6
    assert out.min() >= 0 and out.max() <= 1
    assert losses[-1] < 0.8 * losses[0]
    assert loss(out, content).item() < losses[0]


def test_style_transfer_mapping_is_independent_of_batch_size(
    vgg19_file: Path, style_png: Path
) -> None:
    spec = {"name": "style_transfer", "style_image": str(style_png), "weights": str(vgg19_file)}
    spec |= {"steps": 3, "lr": 0.05, "style_weight": 1e5}
    one = mappings.build({**spec, "batch_size": 1})
    two = mappings.build({**spec, "batch_size": 2})
    x = images(2, 3, 16, 16)
    with torch.no_grad():  # as TeacherCache calls φ: stylize turns gradients back on itself
        out = one(x)
    assert torch.allclose(out, two(x), atol=1e-4)
    assert not out.equal(x)
    assert "style.png" in repr(one) and "steps=3" in repr(one)
    assert isinstance(one, StyleTransfer)


def test_load_image(style_png: Path, tmp_path: Path) -> None:
    image = load_image(style_png)
    assert image.shape == (1, 3, 20, 24) and image.dtype == torch.float32
    assert image.max() <= 1 and image.min() >= 0
    assert load_image(style_png, 8).shape == (1, 3, 8, 8)
    assert load_image(style_png, (6, 10)).shape == (1, 3, 6, 10)
    with pytest.raises(FileNotFoundError, match="style image .*missing.png"):
        load_image(tmp_path / "missing.png")


def test_transform_net_keeps_shape_and_starts_as_identity() -> None:
    network = TransformNet()
    for shape in [(2, 3, 32, 32), (1, 3, 30, 34)]:
        x = images(*shape)
        out = network(x)
        assert out.shape == x.shape
        assert torch.allclose(out, x.clamp(1e-3, 1 - 1e-3), atol=1e-6)


def test_training_the_transform_net_through_fit_lowers_its_loss(extractor: VGGFeatures) -> None:
    torch.manual_seed(0)
    network, content = TransformNet(), images(4, 3, 32, 32)
    loss = StyleLoss(extractor, stripes(32, 32), style_weight=1e5)
    before = loss(network(content), content).item()
    frozen = copy.deepcopy(loss.state_dict())
    history = train_transform_net(network, content, loss, epochs=4, batch_size=4)
    assert len(history) == 4
    assert [e["train_perceptual"] for e in history] == [e["train_loss"] for e in history]
    assert loss(network(content), content).item() < 0.8 * before
    assert all(loss.state_dict()[name].equal(value) for name, value in frozen.items())


def test_transform_net_training_refuses_a_trainable_loss(extractor: VGGFeatures) -> None:
    loss = copy.deepcopy(StyleLoss(extractor, stripes(16, 16))).requires_grad_(True)
    with pytest.raises(ValueError, match="must be frozen.*'extractor.features.0.weight'"):
        TransformNetTraining(TransformNet(), loss)


def test_fast_style_transfer_trains_once_then_loads(
    vgg19_file: Path, style_png: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path / "cache"))
    spec = {
        "name": "fast_style_transfer",
        "style_image": str(style_png),
        "weights": str(vgg19_file),
        "content": {"name": "digits", "small": 100},
        "images": 8,
        "image_size": 16,
        "epochs": 1,
        "batch_size": 4,
        "progress": False,
    }
    trained = mappings.build(spec)
    assert trained.checkpoint.parent == tmp_path / "cache" / "style"
    assert len(trained.history) == 1
    text = repr(trained)
    assert "style.png" in text and "'digits'" in text and "checkpoint=" in text
    x = images(3, 3, 16, 16)
    out = trained(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(style_module, "train_transform_net", no_training)
    assert mappings.build(spec).checkpoint == trained.checkpoint
    loaded = mappings.build({"name": "fast_style_transfer", "checkpoint": trained.checkpoint})
    assert loaded(x).equal(out)
    with pytest.raises(ValueError, match="checkpoint"):
        mappings.build({"name": "fast_style_transfer"})


def test_real_vgg16_weights_load(data_root: Path) -> None:
    path = data_root / "vgg16-imagenet" / "vgg16_features_caffe.npz"
    with np.load(path) as arrays:
        assert len(arrays.files) == 26
    model = load_vgg_features(path, "vgg16", "caffe")
    assert sum(p.numel() for p in model.parameters()) == 14_714_688
    with torch.no_grad():
        features = model(images(1, 3, 64, 64), ["relu4_2"])["relu4_2"]
    assert features.shape == (1, 512, 8, 8)
    assert features.min() >= 0 and features.max() > 0
