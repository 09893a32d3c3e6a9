"""The VAE translator (Bayazitov, 2022, "Model distillation on multi-domain samples"): φ maps a
clothing image to a digit image of the same class.

One encoder q(z|x) reads a Fashion-MNIST image; two decoders p(x|z, β_Fashion) and
p(x′|z, β_MNIST) give Bernoulli pixel probabilities. Training pairs each clothing image x of
class k with a digit image x′ of class k and minimises (per image, averaged over the batch)

    BCE(x′, p(·|z, β_MNIST)) + BCE(x, p(·|z, β_Fashion)) + KL(q(z|x) ‖ N(0, σ²I)),

z = μ + e^{½ log s²}·ε one reparameterised sample, BCE summed over the pixels: the negative of
the translator's evidence lower bound (`crossdistill.losses.translator_loss`), trained through
`crossdistill.training.fit` as the method :class:`TranslatorTraining`. φ(x) is the digit
decoder's output at the mean code μ (deterministic).

The translator sees only the student's data — Fashion-MNIST-Small (``small`` images drawn with
``split_seed``, exactly the student's split) with its labels — and the MNIST training part; never
Fashion-MNIST-Big's labels, nor any test part.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from ..data.arrays import ArrayData, Columns
from ..data.sources import cache_dir
from ..figures import plot_before_after, save_figure, tile
from ..files import atomic_path, read_rebuildable
from ..losses.vae import translator_loss
from ..methods import Batch, Method
from ..registries import datasets, mappings
from ..training.loop import fit, predict

IMAGE_SHAPE = (1, 28, 28)
"""One image of either domain: (C, H, W)."""

_PIXELS = math.prod(IMAGE_SHAPE)

DIGIT_COLUMN = "digit"
"""The training column of the digit x′ paired with each clothing image ``x``."""


@dataclass(frozen=True)
class TranslatorSettings:
    """Everything that determines a trained translator; :meth:`key` names its saved file.

    Attributes:
        latent_dim: size of the code z (2 for the latent figure, e.g. 16 for a good φ).
        hidden: width of the one hidden layer of the encoder and of each decoder.
        prior_variance: σ² of the prior p(z) = N(0, σ²I).
        epochs: passes over the training pairs.
        pairs: digits paired with each clothing image (the pairs per epoch are ``small · pairs``).
        batch_size: pairs per optimisation step.
        lr: Adam learning rate.
        seed: seeds the initial weights, the pairing, the batch order and ε.
        small: size of Fashion-MNIST-Small, the student's split, the only clothing images used.
        split_seed: the seed of the Big/Small split that picks Fashion-MNIST-Small.
    """

    latent_dim: int = 16
    hidden: int = 512
    prior_variance: float = 1.0
    epochs: int = 30
    pairs: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    small: int = 1000
    split_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("prior_variance", "lr"):  # 1 and 1.0 from a config give the same key
            object.__setattr__(self, name, float(getattr(self, name)))
        positive = ("latent_dim", "hidden", "prior_variance", "epochs", "pairs", "batch_size", "lr")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    def key(self) -> str:
        """16 hex digits of the SHA-256 of the settings: the same settings, the same key."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class VAEOutput(NamedTuple):
    """What the translator computes for a batch of N clothing images and one sampled code.

    Attributes:
        digit_logits: ``(N, 1, 28, 28)`` logits of the digit decoder's pixel probabilities.
        clothing_logits: ``(N, 1, 28, 28)`` logits of the clothing decoder's.
        mu: ``(N, latent_dim)`` mean of q(z|x).
        logvar: ``(N, latent_dim)`` log-variance log s² of q(z|x).
    """

    digit_logits: Tensor
    clothing_logits: Tensor
    mu: Tensor
    logvar: Tensor


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """z = μ + e^{½ logvar}·ε, all ``(N, latent_dim)``."""
    return mu + torch.exp(0.5 * logvar) * eps


def _decoder(latent_dim: int, hidden: int) -> nn.Sequential:
    """z ``(N, latent_dim)`` → pixel logits ``(N, 1, 28, 28)``."""
    return nn.Sequential(
        nn.Linear(latent_dim, hidden),
        nn.ReLU(),
        nn.Linear(hidden, _PIXELS),
        nn.Unflatten(1, IMAGE_SHAPE),
    )


class VAETranslator(nn.Module):
    """φ: clothing images ``(N, 1, 28, 28)`` → digit images ``(N, 1, 28, 28)`` in [0, 1].

    MLPs: encoder 784-``hidden``-2·``latent_dim`` (μ and log s²), decoders
    ``latent_dim``-``hidden``-784. ``forward`` is φ, the digit decoder at the mean code; its
    repr shows ``settings``, so a fingerprint of the translator names how it was trained.

    Attributes:
        settings: the :class:`TranslatorSettings` it was built (and is to be trained) with.
        history_: per-epoch training metrics, empty until trained.
    """

    def __init__(self, settings: TranslatorSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or TranslatorSettings()
        latent_dim, hidden = self.settings.latent_dim, self.settings.hidden
        self.encoder = nn.Sequential(
            nn.Flatten(), nn.Linear(_PIXELS, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim)
        )
        self.digit_decoder = _decoder(latent_dim, hidden)
        self.clothing_decoder = _decoder(latent_dim, hidden)
        self.history_: list[dict[str, float]] = []

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """μ and log s² of q(z|x), each ``(N, latent_dim)``, for clothing ``x`` (N, 1, 28, 28)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode_digits(self, z: Tensor) -> Tensor:
        """Digit pixel probabilities ``(N, 1, 28, 28)`` for codes ``z`` (N, latent_dim)."""
        return torch.sigmoid(self.digit_decoder(z))

    def decode_clothing(self, z: Tensor) -> Tensor:
        """Clothing pixel probabilities ``(N, 1, 28, 28)`` for codes ``z`` (N, latent_dim)."""
        return torch.sigmoid(self.clothing_decoder(z))

    def reconstruct(self, x: Tensor, eps: Tensor | None = None) -> VAEOutput:
        """Both decoders' logits at one code z = μ + s·ε per image (ε ~ N(0, I) if not given,
        from the global torch generator); ``eps`` is ``(N, latent_dim)``."""
        mu, logvar = self.encode(x)
        eps = torch.randn_like(mu) if eps is None else eps
        z = reparameterize(mu, logvar, eps)
        return VAEOutput(self.digit_decoder(z), self.clothing_decoder(z), mu, logvar)

    def forward(self, x: Tensor) -> Tensor:
        """φ(x): the digit decoder's probabilities at the mean code, ``(N, 1, 28, 28)``."""
        mu, _ = self.encode(x)
        return self.decode_digits(mu)

    def save(self, path: str | Path) -> None:
        """Write settings, weights and history to ``path`` in one step (atomically)."""
        state = {
            "settings": asdict(self.settings),
            "state_dict": self.state_dict(),
            "history": self.history_,
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    @classmethod
    def load(cls, path: str | Path) -> VAETranslator:
        """A translator as :meth:`save` wrote it, in eval mode."""
        state = torch.load(path, weights_only=True)
        translator = cls(TranslatorSettings(**state["settings"]))
        translator.load_state_dict(state["state_dict"])
        translator.history_ = state["history"]
        return translator.eval()

    def write_figures(self, directory: str | Path, images: Tensor) -> None:
        """The run's figures of φ: ``translations.png`` of ``images`` (clothing, ``(N, 1, 28, 28)``)
        and, for a 2-D latent, ``latent_grid.png`` (see `plot_latent_grid`)."""
        directory = Path(directory)
        plot_translations(self, images, directory / "translations.png")
        if self.settings.latent_dim == 2:
            plot_latent_grid(self, directory / "latent_grid.png")

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={value!r}" for name, value in asdict(self.settings).items())


class TranslatorTraining(Method):
    """The method that trains a translator: ``{"negative_elbo": translator_loss}`` of
    :meth:`VAETranslator.reconstruct` on the clothing column ``x`` (one code per image, ε from
    the global torch generator) against ``x`` and the paired digit column ``digit``, both
    ``(B, 1, 28, 28)`` in [0, 1]; σ² is the translator's ``settings.prior_variance``.

    ``forward(x)`` is φ; ``forward_train`` returns the :class:`VAEOutput` and the loss.

    Args:
        student: the :class:`VAETranslator` trained.
    """

    columns = ("x", DIGIT_COLUMN)

    def forward_train(self, batch: Batch) -> tuple[VAEOutput, dict[str, Tensor]]:
        x = batch["x"]
        output = self.student.reconstruct(x)
        prior_variance = self.student.settings.prior_variance
        loss = translator_loss(*output, batch[DIGIT_COLUMN], x, prior_variance)
        return output, {"negative_elbo": loss}


def pair_by_class(labels: Tensor, pool_labels: Tensor, pairs: int = 1, seed: int = 0) -> Tensor:
    """For each label k in ``labels`` ``(N,)``, ``pairs`` random rows of the pool with label k.

    Drawn uniformly with replacement with a generator seeded by ``seed``.

    Returns:
        int64 indices into the pool, ``(N, pairs)``; ``pool_labels[index[i, j]] == labels[i]``.

    Raises:
        ValueError: a label of ``labels`` has no row in the pool.
    """
    generator = torch.Generator().manual_seed(seed)
    index = torch.empty(len(labels), pairs, dtype=torch.long)
    for k in labels.unique().tolist():
        rows = (labels == k).nonzero().squeeze(1)
        candidates = (pool_labels == k).nonzero().squeeze(1)
        if len(candidates) == 0:
            raise ValueError(f"the pool holds no image of class {k}")
        draw = torch.randint(len(candidates), (len(rows), pairs), generator=generator)
        index[rows] = candidates[draw]
    return index


def translation_pairs(
    clothing: ArrayData, digits: ArrayData, pairs: int = 1, seed: int = 0
) -> Columns:
    """Training data of a translator: each clothing image with ``pairs`` digits of its class
    (drawn by :func:`pair_by_class` with ``seed``).

    Returns:
        ``x``: ``(N·pairs, 1, 28, 28)`` clothing images, each repeated ``pairs`` times;
        ``digit`` (:data:`DIGIT_COLUMN`): ``(N·pairs, 1, 28, 28)`` the paired digits.
    """
    index = pair_by_class(clothing.y, digits.y, pairs, seed).reshape(-1)
    x = clothing.x.repeat_interleave(pairs, dim=0)
    return Columns({"x": x, DIGIT_COLUMN: digits.x[index]})


def train_translator(
    settings: TranslatorSettings,
    clothing: ArrayData,
    digits: ArrayData,
    progress: bool | str = False,
) -> VAETranslator:
    """A translator trained with ``settings`` as :class:`TranslatorTraining` through
    `crossdistill.training.fit`, on :func:`translation_pairs` of the data.

    Args:
        settings: architecture and training settings (its ``small``/``split_seed`` are only
            recorded here: the caller passes the data).
        clothing: labelled clothing images ``(N, 1, 28, 28)`` — the student's Fashion-MNIST-Small.
        digits: labelled digit images ``(M, 1, 28, 28)`` to pair with them — MNIST's Train.
        progress: show a progress bar (a string is its label).

    Returns:
        The trained translator in eval mode, ``history_`` set. The global torch random state
        is left as it was; the result depends only on the arguments.
    """
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        translator = VAETranslator(settings)
        translator.history_ = fit(
            TranslatorTraining(translator),
            translation_pairs(clothing, digits, settings.pairs, settings.seed),
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            optimizer={"name": "adam", "lr": settings.lr},
            seed=settings.seed,
            progress=bool(progress),
            name=progress if isinstance(progress, str) else "VAE translator",
        )
    return translator.eval()


def student_clothing(
    settings: TranslatorSettings, data_dir: str | Path | None = None, download: bool = True
) -> ArrayData:
    """Fashion-MNIST-Small as the student sees it (``settings.small``, ``settings.split_seed``)."""
    spec = {"name": "fashion_mnist", "small": settings.small, "seed": settings.split_seed}
    return datasets.build(spec, data_dir=data_dir, download=download).small


def translator_path(settings: TranslatorSettings) -> Path:
    """Where :func:`vae_translator` keeps a translator: ``cache_dir()/translators/<key>.pt``."""
    return cache_dir() / "translators" / f"{settings.key()}.pt"


def build_translator(
    settings: TranslatorSettings,
    data_dir: str | Path | None = None,
    download: bool = True,
    progress: bool | str = True,
) -> VAETranslator:
    """The translator for ``settings``, loaded from :func:`translator_path` if saved there,
    else trained on Fashion-MNIST-Small and MNIST's Train (read from ``data_dir`` as
    `crossdistill.data.datasets` does) and saved there first. Frozen, in eval mode."""
    path = translator_path(settings)
    translator = read_rebuildable(path, VAETranslator.load)
    if translator is None:
        clothing = student_clothing(settings, data_dir, download)
        spec = {"name": "mnist", "small": settings.small, "seed": settings.split_seed}
        digits = datasets.build(spec, data_dir=data_dir, download=download).train
        translator = train_translator(settings, clothing, digits, progress)
        translator.save(path)
    return translator.requires_grad_(False)


def _settings_in_signature(builder: Callable[..., VAETranslator]) -> Callable[..., VAETranslator]:
    """Show the :class:`TranslatorSettings` fields in place of ``builder``'s ``**settings`` in
    its signature, so that `Registry.check` rejects a misspelt config key before anything runs."""
    signature = inspect.signature(builder)
    settings = [
        inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=field.default)
        for field in fields(TranslatorSettings)
    ]
    parameters = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    spelled_out = signature.replace(parameters=[*parameters, *settings])
    builder.__signature__ = spelled_out  # type: ignore[attr-defined]
    return builder


@mappings.register("vae_translator")
@_settings_in_signature
def vae_translator(
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    progress: bool | str = "vae translator",
    **settings: Any,
) -> VAETranslator:
    """:func:`build_translator` from a config: ``{"name": "vae_translator", "latent_dim": 16,
    "epochs": 30, ...}``; the other keys are the fields of :class:`TranslatorSettings`."""
    return build_translator(TranslatorSettings(**settings), data_dir, download, progress)


def plot_latent_grid(
    translator: VAETranslator, path: str | Path, n: int = 15, span: float = 3.0
) -> None:
    """Save a PNG of both decoders on an ``n`` × ``n`` grid of codes in [−span, span]²
    (z₁ left to right, z₂ bottom to top): clothing on the left, digits on the right.

    Raises:
        ValueError: the translator's latent space is not 2-D.
    """
    if translator.settings.latent_dim != 2:
        raise ValueError(
            f"the latent grid needs latent_dim=2, got {translator.settings.latent_dim}"
        )
    values = torch.linspace(-span, span, n)
    z2, z1 = torch.meshgrid(values.flip(0), values, indexing="ij")
    codes = torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1)
    figure = Figure(figsize=(12, 6.4))
    axes = figure.subplots(1, 2)
    with torch.no_grad():
        panels = [translator.decode_clothing(codes), translator.decode_digits(codes)]
    for ax, images, title in zip(axes, panels, ["clothing decoder", "digit decoder"], strict=True):
        ax.imshow(tile(images, n), cmap="gray", vmin=0, vmax=1, extent=(-span, span, -span, span))
        ax.set(title=title, xlabel="z₁", ylabel="z₂")
    figure.suptitle(f"VAE translator: 2-D latent space decoded on a {n}×{n} grid")
    save_figure(figure, path)


def plot_translations(translator: VAETranslator, images: Tensor, path: str | Path) -> None:
    """Save a PNG of clothing ``images`` ``(N, 1, 28, 28)`` (top row) above φ(images) (below)."""
    plot_before_after(images, predict(translator, images), path, ("clothing x", "φ(x)"))
