"""The VAE's loss, stated exactly, and the schedule of its KL weight (beta).

Per image, with x in [0, 1] and the decoder's logits l:

    reconstruction = sum over pixels of BCE(sigmoid(l), x)      (or squared error: "mse")
    KL             = 0.5 * sum over latent dims of (mu^2 + sigma^2 - log sigma^2 - 1)
    loss           = mean over the batch of (reconstruction + beta * KL)

This KL is the closed form of KL(N(mu, sigma^2) || N(0, I))
(`drvae.metrics.latent.gaussian_kl`). The paper's Eq. (2) writes it without the factor 1/2
and with log(sigma) in place of log(sigma^2); we implement the correct closed form. With
beta = 1 the loss is the negative ELBO; beta < 1 trades prior matching for sharper
reconstructions, beta > 1 the reverse (beta-VAE).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Reconstruction = Literal["bce", "mse"]
Warmup = Literal["none", "linear", "cyclical"]


def reconstruction_loss(logits: Tensor, x: Tensor, kind: Reconstruction = "bce") -> Tensor:
    """(B,) per-image reconstruction loss, summed over pixels and channels."""
    if kind == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    elif kind == "mse":
        per_pixel = F.mse_loss(torch.sigmoid(logits), x, reduction="none")
    else:
        raise ValueError(f"reconstruction must be 'bce' or 'mse', got {kind!r}")
    return per_pixel.flatten(1).sum(dim=1)


def reconstruction_floor(x: Tensor, kind: Reconstruction = "bce") -> Tensor:
    """(B,) the least reconstruction loss possible for x: with BCE on continuous pixel values
    it is their binary entropy (about 1 bit for a mid-grey pixel), not 0. The gap above it
    is what the decoder misses; compare models by the gap or the ELBO, not by raw BCE."""
    if kind == "mse":
        return x.new_zeros(x.shape[0])
    # the binary entropy, written out: F.binary_cross_entropy refuses CUDA autocast (bf16)
    entropy = -(torch.special.xlogy(x, x) + torch.special.xlogy(1 - x, 1 - x))
    return entropy.flatten(1).sum(dim=1)


def kl_with_free_bits(kl_per_dim: Tensor, free_bits: float) -> Tensor:
    """(B,) KL to optimise: with free bits (Kingma et al. 2016), a latent dimension whose
    batch-mean KL is below `free_bits` nats is not pushed further towards the prior."""
    if free_bits <= 0:
        return kl_per_dim.sum(dim=1)
    floor = kl_per_dim.mean(dim=0).clamp(min=free_bits)  # (D,)
    # Same value for every image of the batch: the batch mean is what is floored.
    return floor.sum().expand(kl_per_dim.shape[0])


def beta_at(
    step: int,
    beta: float,
    warmup: Warmup = "none",
    warmup_steps: int = 1000,
    cycles: int = 4,
) -> float:
    """The KL weight at optimiser step `step`.

    `linear`: rises from 0 to `beta` over `warmup_steps`, then stays (Bowman et al. 2016).
    `cyclical`: `cycles` cycles of `warmup_steps` steps each; in every cycle beta rises
    linearly over the first half and holds for the second (Fu et al. 2019), then stays.
    """
    if warmup == "none" or warmup_steps <= 0:
        return beta
    if warmup == "linear":
        return beta * min(1.0, step / warmup_steps)
    if warmup == "cyclical":
        if step >= cycles * warmup_steps:
            return beta
        phase = (step % warmup_steps) / warmup_steps
        return beta * min(1.0, 2 * phase)
    raise ValueError(f"kl_warmup must be 'none', 'linear' or 'cyclical', got {warmup!r}")


def bits_per_dim(nats_per_image: Tensor, dims: int) -> Tensor:
    """Nats per image -> bits per pixel channel."""
    return nats_per_image / (dims * math.log(2))
