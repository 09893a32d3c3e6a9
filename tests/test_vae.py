"""The VAE translator φ and GeneratedMNIST: the loss and the training method against a hand
computation, φ's contract, training, saving, building by name once, pairing by class, generated
files, figures."""

from pathlib import Path

import numpy as np
import pytest
import torch

from crossdistill.data import ArrayData, read_idx
from crossdistill.losses import translator_loss
from crossdistill.mappings import (
    TranslatorSettings,
    TranslatorTraining,
    VAETranslator,
    generate_digits,
    pair_by_class,
    plot_latent_grid,
    plot_translations,
    train_translator,
    translation_pairs,
)
from crossdistill.mappings import vae as vae_module
from crossdistill.registries import datasets, mappings
from crossdistill.training import fingerprint

TINY = {"latent_dim": 2, "hidden": 16, "epochs": 1, "pairs": 1, "small": 50}
"""Translator settings small enough to train in a fraction of a second."""


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def tiny_translator(latent_dim: int = 3, seed: int = 0, **settings) -> VAETranslator:
    torch.manual_seed(seed)
    return VAETranslator(TranslatorSettings(latent_dim=latent_dim, hidden=8, **settings))


@pytest.fixture(scope="module")
def real(data_root: Path) -> tuple[ArrayData, ArrayData]:
    """100 Fashion-MNIST-Small clothing images and 1 000 MNIST training digits, labelled."""
    clothing = datasets.build("fashion_mnist", small=100, seed=0, data_dir=data_root).small
    digits = datasets.build("mnist", small=1000, seed=0, data_dir=data_root).small
    return clothing, digits


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_loss_and_training_method_equal_hand_computation() -> None:
    variance = 2.0
    translator = tiny_translator(prior_variance=variance)
    x, digits = images(4), images(4, seed=1)
    torch.manual_seed(2)
    eps = torch.randn(4, 3)
    with torch.no_grad():
        output = translator.reconstruct(x, eps)
        loss = translator_loss(*output, digits, x, prior_variance=variance)
        torch.manual_seed(2)  # the method draws the same ε from the global generator
        _, losses = TranslatorTraining(translator).forward_train({"x": x, "digit": digits})
        mu, logvar = (t.double().numpy() for t in translator.encode(x))
        z = mu + np.exp(logvar / 2) * eps.double().numpy()
        code = torch.from_numpy(z).float()
        p_digit = translator.decode_digits(code).double().numpy().reshape(4, -1)
        p_cloth = translator.decode_clothing(code).double().numpy().reshape(4, -1)

    def bce(p: np.ndarray, t: torch.Tensor) -> np.ndarray:
        t = t.double().numpy().reshape(4, -1)
        return -(t * np.log(p) + (1 - t) * np.log(1 - p)).sum(axis=1)

    kl = 0.5 * (np.log(variance) - logvar + (np.exp(logvar) + mu**2) / variance - 1).sum(axis=1)
    expected = (bce(p_digit, digits) + bce(p_cloth, x) + kl).mean()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert list(losses) == ["negative_elbo"]
    assert losses["negative_elbo"].equal(loss)


def test_kl_vanishes_when_the_posterior_is_the_prior() -> None:
    mu, logvar = torch.zeros(2, 3), torch.full((2, 3), np.log(0.5))
    logits, target = torch.zeros(2, 1, 28, 28), torch.zeros(2, 1, 28, 28)
    loss = translator_loss(logits, logits, mu, logvar, target, target, prior_variance=0.5)
    assert loss.item() == pytest.approx(2 * 784 * np.log(2), rel=1e-6)


def test_phi_is_a_deterministic_image_map() -> None:
    translator, x = tiny_translator(), images(5)
    with torch.no_grad():
        out = translator(x)
        assert out.shape == (5, 1, 28, 28)
        assert out.min() >= 0 and out.max() <= 1
        assert out.equal(translator(x))
        assert not translator.reconstruct(x).digit_logits.equal(translator.reconstruct(x)[0])


def test_pairs_share_the_class(real: tuple[ArrayData, ArrayData]) -> None:
    clothing, digits = real
    index = pair_by_class(clothing.y, digits.y, pairs=3, seed=0)
    assert index.shape == (100, 3)
    assert digits.y[index].equal(clothing.y[:, None].expand(100, 3))
    assert index.equal(pair_by_class(clothing.y, digits.y, pairs=3, seed=0))
    assert not index.equal(pair_by_class(clothing.y, digits.y, pairs=3, seed=1))
    columns = translation_pairs(clothing, digits, pairs=3, seed=0)
    assert set(columns) == {"x", "digit"}
    assert columns["x"].equal(clothing.x.repeat_interleave(3, dim=0))
    assert columns["digit"].equal(digits.x[index.reshape(-1)])
    with pytest.raises(ValueError, match="no image of class 9"):
        pair_by_class(clothing.y, digits.y[digits.y != 9])


def test_training_lowers_the_loss_and_save_load_round_trips(
    real: tuple[ArrayData, ArrayData], tmp_path: Path
) -> None:
    settings = TranslatorSettings(latent_dim=2, hidden=32, epochs=4, pairs=2, batch_size=32)
    state = torch.get_rng_state()
    translator = train_translator(settings, *real)
    assert torch.get_rng_state().equal(state)
    losses = [epoch["train_loss"] for epoch in translator.history_]
    assert len(losses) == 4 and losses[-1] < 0.9 * losses[0]
    assert losses == [epoch["train_negative_elbo"] for epoch in translator.history_]
    assert "latent_dim=2" in repr(translator) and "epochs=4" in repr(translator)

    translator.save(tmp_path / "t.pt")
    loaded = VAETranslator.load(tmp_path / "t.pt")
    x = real[0].x[:8]
    with torch.no_grad():
        assert loaded(x).equal(translator(x))
    assert loaded.history_ == translator.history_
    assert fingerprint(loaded) == fingerprint(translator)
    assert train_translator(settings, *real)(x).equal(translator(x))  # seeded


def test_building_by_name_trains_once(
    data_root: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained = []

    def counting(*args, **kwargs):
        trained.append(args[0])
        return train_translator(*args, **kwargs)

    monkeypatch.setattr(vae_module, "train_translator", counting)
    spec = {"name": "vae_translator", **TINY, "data_dir": data_root, "progress": False}
    first, second = mappings.build(spec), mappings.build(spec)
    assert len(trained) == 1
    assert (cache / "translators" / f"{trained[0].key()}.pt").is_file()
    x = images(3)
    with torch.no_grad():
        assert first(x).equal(second(x))
    assert not any(p.requires_grad for p in second.parameters())
    assert TranslatorSettings(**TINY).key() != TranslatorSettings(**{**TINY, "seed": 1}).key()
    with pytest.raises(ValueError, match="no setting 'latnt_dim'"):
        mappings.check({"name": "vae_translator", "latnt_dim": 2})


def test_generated_mnist_tiny(data_root: Path, cache: Path) -> None:
    spec = {
        "name": "generated_mnist",
        "small": 20,
        "seed": 0,
        "data_dir": data_root,
        "translator": TINY,
        "train": 200,
        "test": 50,
    }
    splits = datasets.build(spec)
    assert (len(splits.big), len(splits.small), len(splits.test)) == (180, 20, 50)
    assert splits.train.x.min() >= 0 and splits.train.x.max() <= 1
    # Balanced draws: every class within 1 of an equal share.
    assert (splits.train.y.bincount(minlength=10) - 20).abs().max() <= 1
    assert (splits.test.y.bincount(minlength=10) - 5).abs().max() <= 1

    folders = list((cache / "generated-mnist").glob("*/*"))
    assert len(folders) == 1
    files = sorted(folders[0].iterdir())
    assert [f.name for f in files] == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]
    assert read_idx(files[0]).shape == (50, 28, 28) and read_idx(files[0]).dtype == np.uint8
    assert read_idx(files[3]).shape == (200,)
    stamps = [f.stat().st_mtime_ns for f in files]
    again = datasets.build(spec)
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert again.train.x.equal(splits.train.x)


def test_generated_images_vary_for_one_source() -> None:
    source = ArrayData(images(1), torch.tensor([3]))
    pixels, labels = generate_digits(tiny_translator(), source, 2, torch.Generator())
    assert pixels.dtype == torch.uint8 and pixels.shape == (2, 28, 28)
    assert labels.tolist() == [3, 3]
    assert not pixels[0].equal(pixels[1])


def test_figures_write_pngs(tmp_path: Path) -> None:
    translator = tiny_translator(latent_dim=2)
    plot_latent_grid(translator, tmp_path / "latent.png", n=4)
    plot_translations(translator, images(6), tmp_path / "translations.png")
    for name in ("latent.png", "translations.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="latent_dim=2"):
        plot_latent_grid(tiny_translator(latent_dim=3), tmp_path / "x.png")


def test_write_figures_gives_the_run_its_latent_grid_and_translations(tmp_path: Path) -> None:
    tiny_translator(latent_dim=2).write_figures(tmp_path / "two", images(4))
    assert {p.name for p in (tmp_path / "two").iterdir()} == {"latent_grid.png", "translations.png"}
    tiny_translator(latent_dim=3).write_figures(tmp_path / "three", images(4))
    assert {p.name for p in (tmp_path / "three").iterdir()} == {"translations.png"}
