"""How much a VAE's latent carries: KL to the prior per unit, and active units (Burda et al.
2016: units whose posterior mean varies across images). Pure functions on tensors."""

from __future__ import annotations

from torch import Tensor


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """(B, D) KL(N(mu, exp(logvar)) || N(0, 1)) per latent dimension, in nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1)


class LatentMoments:
    """Running mean and variance of mu per latent unit over an epoch (for active units)."""

    def __init__(self) -> None:
        self.n, self.total, self.squares = 0, None, None

    def update(self, mu: Tensor) -> None:
        mu = mu.detach().double()
        total, squares = mu.sum(0), mu.pow(2).sum(0)
        self.n += mu.shape[0]
        self.total = total if self.total is None else self.total + total
        self.squares = squares if self.squares is None else self.squares + squares

    def variance(self) -> Tensor | None:
        if self.n < 2:
            return None
        mean = self.total / self.n
        return (self.squares / self.n - mean.pow(2)).clamp(min=0)


def kl_per_dimension(mu: Tensor, logvar: Tensor) -> Tensor:
    """(Z,) mean KL(q(z_u | x) || N(0, 1)) per latent unit over N images, in nats."""
    return gaussian_kl(mu, logvar).mean(dim=0)


def active_units(mu: Tensor, threshold: float) -> int:
    """Latent units with Var_x(E[z_u | x]) > threshold, as the VAE's `val/active_units`."""
    moments = LatentMoments()
    moments.update(mu)
    variance = moments.variance()
    if variance is None:
        raise ValueError(f"need at least 2 posterior means, got {len(mu)}")
    return int((variance > threshold).sum())
