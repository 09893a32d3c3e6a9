"""Neural style-transfer losses (Gatys et al., 2016) on frozen VGG features.

- content loss: mean squared difference of the features at ``content_layer`` (default relu4_2)
  between the output and the content image;
- style loss: Σ_l w_l · mean squared difference between the output's Gram matrix at layer l and
  the style image's (default relu1_1, relu2_1, relu3_1, relu4_1, relu5_1, every w_l = 1).

The mappings that use them (Gatys optimisation, Johnson et al.'s feed-forward network) are in
`crossdistill.mappings.style`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.vgg import VGGFeatures

DEFAULT_CONTENT_LAYER = "relu4_2"
"""The VGG layer whose features are compared with the content image's."""

DEFAULT_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
"""The VGG layers whose Gram matrices are compared with the style image's."""

DEFAULT_STYLE_WEIGHT: dict[str, float] = {"torchvision": 1e5, "caffe": 1.0}
"""``style_weight`` when none is given, by the extractor's input convention (content weight 1).

Caffe-convention features are tens of times larger than torchvision-convention ones, and the
style term grows with their fourth power, the content term with their square. 1.0 was chosen on
the Caffe VGG-16 here: a 160×160 photograph is visibly stylised within 150 Adam steps (lr 0.02)
and keeps its content (3.0 stylises more strongly, 0.1 barely). 1e5 is the ratio of pytorch/
examples' fast_neural_style (style 1e10, content 1e5, same Gram normalisation and mean squared
errors, torchvision convention); it is untested here, as no VGG-19 weights are available offline.
"""


def gram_matrix(features: Tensor) -> Tensor:
    """Gram matrices ``(N, C, C)`` of features ``(N, C, H, W)``:
    G_nij = Σ_hw F_nihw F_njhw / (C·H·W)."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def style_loss(
    features: Mapping[str, Tensor],
    target_grams: Mapping[str, Tensor],
    weights: Mapping[str, float] | None = None,
) -> Tensor:
    """Σ_l w_l · mean_(n,i,j) (G(F_l)_nij − A_l,ij)² over the layers l of ``target_grams``.

    ``features[l]`` is ``(N, C, H, W)``; ``target_grams[l]`` is ``(1, C, C)`` (one style for the
    batch) or ``(N, C, C)``; ``weights`` default to 1 per layer. Returns a scalar.
    """
    total = features[next(iter(target_grams))].new_zeros(())
    for layer, target in target_grams.items():
        gram = gram_matrix(features[layer])
        weight = 1.0 if weights is None else weights[layer]
        total = total + weight * F.mse_loss(gram, target.expand_as(gram))
    return total


def content_loss(features: Tensor, target: Tensor) -> Tensor:
    """Mean squared difference of features ``(N, C, H, W)`` and ``target`` (same shape); scalar."""
    return F.mse_loss(features, target)


class StyleLoss(nn.Module):
    """``loss(output, content) = content_weight · content_loss + style_weight · style_loss``.

    ``output`` and ``content`` are RGB images ``(N, 3, H, W)`` in [0, 1]; the style's Gram
    matrices are computed once, from ``style_image`` ``(1, 3, H', W')`` (any size: the Gram
    normalisation makes them independent of it). It has no trainable parameters: the VGG is
    frozen and the Gram matrices are buffers; gradients flow to ``output`` only.

    Args:
        extractor: frozen VGG features.
        style_image: ``(1, 3, H', W')`` in [0, 1].
        style_weight: None: ``DEFAULT_STYLE_WEIGHT[extractor.input_convention]``.
        content_weight: weight of the content term.
        content_layer: the layer compared with the content image.
        style_layers: the layers whose Gram matrices are compared with the style image's.
        layer_weights: w_l per style layer, default 1 each.
    """

    def __init__(
        self,
        extractor: VGGFeatures,
        style_image: Tensor,
        *,
        style_weight: float | None = None,
        content_weight: float = 1.0,
        content_layer: str = DEFAULT_CONTENT_LAYER,
        style_layers: Sequence[str] = DEFAULT_STYLE_LAYERS,
        layer_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        if style_image.dim() != 4 or style_image.shape[:2] != (1, 3):
            raise ValueError(f"style_image must be (1, 3, H, W), got {tuple(style_image.shape)}")
        self.extractor = extractor
        if style_weight is None:
            style_weight = DEFAULT_STYLE_WEIGHT[extractor.input_convention]
        self.style_weight = style_weight
        self.content_weight = content_weight
        self.content_layer = content_layer
        self.style_layers = tuple(style_layers)
        self.layer_weights = None if layer_weights is None else dict(layer_weights)
        with torch.no_grad():
            style_features = extractor(style_image, self.style_layers)
        for layer in self.style_layers:
            self.register_buffer(f"gram_{layer}", gram_matrix(style_features[layer]))

    @property
    def target_grams(self) -> dict[str, Tensor]:
        """The style image's Gram matrices ``{layer: (1, C, C)}``."""
        return {layer: getattr(self, f"gram_{layer}") for layer in self.style_layers}

    def content_target(self, content: Tensor) -> Tensor:
        """Features of ``content`` (N, 3, H, W) at ``content_layer``, without gradients."""
        with torch.no_grad():
            return self.extractor(content, [self.content_layer])[self.content_layer]

    def compare(self, output: Tensor, content_target: Tensor) -> Tensor:
        """The loss of ``output`` (N, 3, H, W) against precomputed content features; scalar."""
        features = self.extractor(output, {self.content_layer, *self.style_layers})
        return self.content_weight * content_loss(
            features[self.content_layer], content_target
        ) + self.style_weight * style_loss(features, self.target_grams, self.layer_weights)

    def forward(self, output: Tensor, content: Tensor) -> Tensor:
        """The loss of ``output`` for ``content`` (both (N, 3, H, W)); scalar."""
        return self.compare(output, self.content_target(content))

    def extra_repr(self) -> str:
        return (
            f"style_weight={self.style_weight}, content_weight={self.content_weight}, "
            f"content_layer={self.content_layer!r}, style_layers={self.style_layers}, "
            f"layer_weights={self.layer_weights}"
        )
