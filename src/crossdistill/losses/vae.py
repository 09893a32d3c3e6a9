"""The VAE translator's objective (Bayazitov, 2022, "Model distillation on multi-domain
samples"): the negative evidence lower bound of a clothing image x and its paired digit x′ under
one encoder and two Bernoulli decoders.

Per image, for one reparameterised code z ~ q(z|x):

    BCE(x′, p(·|z, β_MNIST)) + BCE(x, p(·|z, β_Fashion)) + KL(q(z|x) ‖ N(0, σ²I)),

BCE summed over the pixels (nats). The translator itself is `crossdistill.mappings.vae`.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor


def _bernoulli_nll(logits: Tensor, target: Tensor) -> Tensor:
    """−log p(target | sigmoid(logits)), summed over all but the first dimension: ``(N,)``."""
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(1)


def translator_loss(
    digit_logits: Tensor,
    clothing_logits: Tensor,
    mu: Tensor,
    logvar: Tensor,
    digits: Tensor,
    clothing: Tensor,
    prior_variance: float = 1.0,
) -> Tensor:
    """The negative VAE translator objective for one sampled code, averaged over the batch.

    Per image: BCE(x′, sigmoid(digit_logits)) + BCE(x, sigmoid(clothing_logits)), each summed
    over the pixels (nats), plus the closed-form KL(N(μ, e^{logvar}) ‖ N(0, σ²I))
    = ½ Σ_j (e^{logvar_j}/σ² + μ_j²/σ² − 1 − logvar_j + log σ²).

    Args:
        digit_logits, clothing_logits: ``(N, 1, 28, 28)`` decoder logits at the sampled code.
        mu, logvar: ``(N, latent_dim)`` parameters of q(z|x).
        digits: ``(N, 1, 28, 28)`` paired digit images x′ in [0, 1].
        clothing: ``(N, 1, 28, 28)`` the clothing images x in [0, 1].
        prior_variance: σ².

    Returns:
        A scalar (nats per image).
    """
    if prior_variance <= 0:
        raise ValueError(f"prior_variance must be > 0, got {prior_variance}")
    log_prior = math.log(prior_variance)
    kl = 0.5 * ((logvar.exp() + mu.pow(2)) / prior_variance - 1.0 - logvar + log_prior).sum(1)
    nll = _bernoulli_nll(digit_logits, digits) + _bernoulli_nll(clothing_logits, clothing)
    return (nll + kl).mean()
