"""Mappings φ: X_t → X_s between data domains, looked up by name in
`crossdistill.registries.mappings`.

Importing this package also registers the datasets made with a mapping: ``generated_mnist``
(`crossdistill.registries.datasets`) and ``regular_view``
(`crossdistill.registries.privileged_datasets`).
"""

from crossdistill.mappings.basic import (
    Compose,
    CorruptPixels,
    Crop,
    DilatedConv,
    GaussianNoise,
    Identity,
    Invert,
    Mask,
    Pad,
    Resize,
    Rotate,
    compose,
    corrupt_pixels,
    crop,
    dilated_conv,
    gaussian_noise,
    invert,
    mask,
    pad,
    resize,
    rotate,
)
from crossdistill.mappings.generated import (
    generate_digits,
    generated_mnist,
    write_generated_mnist,
)
from crossdistill.mappings.linear import RandomProjection
from crossdistill.mappings.style import (
    FastStyleTransfer,
    StyleTransfer,
    TransformNet,
    TransformNetTraining,
    load_image,
    stylize,
    train_transform_net,
)
from crossdistill.mappings.vae import (
    TranslatorSettings,
    TranslatorTraining,
    VAEOutput,
    VAETranslator,
    build_translator,
    pair_by_class,
    plot_latent_grid,
    plot_translations,
    train_translator,
    translation_pairs,
    vae_translator,
)
from crossdistill.mappings.views import regular_view

__all__ = [
    "Compose",
    "CorruptPixels",
    "Crop",
    "DilatedConv",
    "FastStyleTransfer",
    "GaussianNoise",
    "Identity",
    "Invert",
    "Mask",
    "Pad",
    "RandomProjection",
    "Resize",
    "Rotate",
    "StyleTransfer",
    "TransformNet",
    "TransformNetTraining",
    "TranslatorSettings",
    "TranslatorTraining",
    "VAEOutput",
    "VAETranslator",
    "build_translator",
    "compose",
    "corrupt_pixels",
    "crop",
    "dilated_conv",
    "gaussian_noise",
    "generate_digits",
    "generated_mnist",
    "invert",
    "load_image",
    "mask",
    "pad",
    "pair_by_class",
    "plot_latent_grid",
    "plot_translations",
    "regular_view",
    "resize",
    "rotate",
    "stylize",
    "train_transform_net",
    "train_translator",
    "translation_pairs",
    "vae_translator",
    "write_generated_mnist",
]
