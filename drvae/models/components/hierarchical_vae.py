"""A two-level residual VAE (NVAE/VDVAE-style, top-down), conditioned on the grade everywhere.

Why: a flat latent behind a deep bottleneck carries 20-40 bits per image, far too little for
vessels and lesions; the decoder then draws a plain orange disc. Here a flat top latent z1
(global layout: field of view, disc position, grade) sits above a spatial latent z2 at
S / 2**spatial_depth (local detail: vessels, lesions), whose prior p(z2 | z1, grade) is learnt
by the decoder's top-down path, so samples get detail that fits their layout and grade.

    encoder:  x -> stride-2 conv -> [ResBlock, down] x (depth - 1) -> flatten -> q(z1 | x, y)
                   (the features at the z2 resolution are kept for q(z2 | x, z1, y))
    decoder:  z1 -> linear -> [up, ResBlock] to the z2 resolution = h
              p(z2 | h, y) from h;  q(z2 | h, features, y) as a residual on p (NVAE)
              h + proj(z2) -> [up, ResBlock] to S / 2 -> up, conv, conv -> logits

No residual block runs at full resolution: on a CPU those would cost most of the time, and
the spatial latent and the S / 2 blocks already place detail to the pixel.

Every block: GroupNorm whose scale and shift come from the grade code (conditional
normalisation, which the decoder cannot ignore), SiLU, 3x3 convolutions; upsampling is
nearest-neighbour then a 3x3 convolution (no checkerboard).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drvae.models.components.conditioning import FiLM, LabelCode, LabelEmbedding
from drvae.models.components.conv_vae import (
    LOGVAR_RANGE,
    check_geometry,
    make_norm,
    split_moments,
)


def level_channels(width: int, depth: int) -> list[int]:
    """Channels at level i = resolution S / 2**(i+1), i = 0 .. depth - 1: width, 2 width,
    4 width, 4 width, ... (the bottleneck, level depth - 1, keeps level depth - 2's)."""
    widths = [width * 2 ** min(i, 2) for i in range(depth - 1)]
    return [*widths, widths[-1]]


class CondNorm(nn.Module):
    """GroupNorm, its scale and shift given by the grade code (plain GroupNorm without one)."""

    def __init__(self, channels: int, code_dim: int) -> None:
        super().__init__()
        self.norm = make_norm("group", channels)
        self.film = FiLM(code_dim, channels) if code_dim else None

    def forward(self, h: Tensor, code: Tensor | None) -> Tensor:
        h = self.norm(h)
        return h if self.film is None else self.film(h, code)


class ResBlock(nn.Module):
    """norm-SiLU-conv, twice, plus the input (a 1x1 projection when the width changes)."""

    def __init__(self, c_in: int, c_out: int, code_dim: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = CondNorm(c_in, code_dim), CondNorm(c_out, code_dim)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: stable depth
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: Tensor, code: Tensor | None) -> Tensor:
        out = self.conv1(F.silu(self.norm1(h, code)))
        out = self.conv2(F.silu(self.norm2(out, code)))
        return self.skip(h) + out


class Up(nn.Module):
    """Double the resolution: a 1x1 convolution to the new width at the low resolution
    (cheap), nearest-neighbour doubling, a 3x3 convolution that smooths the 2x2 blocks (no
    checkerboard, unlike a transposed convolution)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(c_in, c_out, 1)
        self.smooth = nn.Conv2d(c_out, c_out, 3, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        return self.smooth(F.interpolate(self.reduce(h), scale_factor=2.0, mode="nearest"))


class _Coded(nn.Module):
    """The grade code shared set-up (None for an unconditional VAE)."""

    def __init__(self, num_classes: int, label_embedding: LabelEmbedding, embed_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.code = LabelCode(num_classes, label_embedding, embed_dim) if num_classes else None
        self.code_dim = self.code.dim if self.code is not None else 0

    def label_code(self, labels: Tensor | None) -> Tensor | None:
        if self.code is None:
            return None
        if labels is None:
            raise ValueError(f"this VAE is conditioned on {self.num_classes} grades: pass grades")
        return self.code(labels)


class HierarchicalEncoder(_Coded):
    """(B, C, S, S) images -> q(z1 | x, y) moments; `features` also returns the map that
    q(z2 | x, z1, y) reads."""

    def __init__(
        self,
        image_size: int,
        channels: int = 3,
        width: int = 32,
        depth: int = 4,
        spatial_depth: int = 2,
        latent_dim: int = 64,
        num_classes: int = 5,
        label_embedding: LabelEmbedding = "onehot",
        embed_dim: int = 16,
    ) -> None:
        super().__init__(num_classes, label_embedding, embed_dim)
        if not 0 < spatial_depth < depth:
            raise ValueError(
                f"spatial_depth must be in 1..depth-1 = {depth - 1}, got {spatial_depth}"
            )
        self.bottleneck = check_geometry(image_size, depth)
        self.spatial_depth = spatial_depth
        widths = level_channels(width, depth)
        self.stem = nn.Conv2d(channels, widths[0], 4, stride=2, padding=1)
        self.blocks = nn.ModuleList(  # block i runs at level i, then halves the size
            ResBlock(widths[max(i - 1, 0)], widths[i], self.code_dim) for i in range(depth - 1)
        )
        self.to_moments = nn.Linear(widths[-1] * self.bottleneck**2, 2 * latent_dim)

    def features(self, x: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """mu, logvar (B, latent_dim) of z1 and the (B, C, S', S') map at the z2 resolution."""
        code = self.label_code(labels)
        h, kept = self.stem(x), None  # (B, width, S / 2, S / 2)
        for i, block in enumerate(self.blocks):
            h = block(h, code)  # (B, C_i, S / 2**(i+1), ...)
            if i + 1 == self.spatial_depth:
                kept = h
            h = F.avg_pool2d(h, 2)
        mu, logvar = split_moments(self.to_moments(F.silu(h).flatten(1)))
        return mu, logvar, kept

    def forward(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mu, logvar, _ = self.features(x, labels)
        return mu, logvar


class TopDownDecoder(_Coded):
    """z1 and grades -> logits, with the spatial latent z2 drawn from q (given encoder
    features) or from the learnt prior p(z2 | z1, y) (without)."""

    def __init__(
        self,
        image_size: int,
        channels: int = 3,
        width: int = 32,
        depth: int = 4,
        spatial_depth: int = 2,
        latent_dim: int = 64,
        spatial_channels: int = 8,
        num_classes: int = 5,
        label_embedding: LabelEmbedding = "onehot",
        embed_dim: int = 16,
    ) -> None:
        super().__init__(num_classes, label_embedding, embed_dim)
        self.bottleneck = check_geometry(image_size, depth)
        self.spatial_depth, self.spatial_channels = spatial_depth, spatial_channels
        widths = level_channels(width, depth)
        self.start = widths[-1]
        self.from_latent = nn.Linear(latent_dim, widths[-1] * self.bottleneck**2)
        # top-down path, level i+1 -> i (level i: S / 2**(i+1)), for i = depth-2 .. 0
        self.ups = nn.ModuleList(Up(widths[i + 1], widths[i]) for i in range(depth - 1))
        self.blocks = nn.ModuleList(
            ResBlock(widths[i], widths[i], self.code_dim) for i in range(depth - 1)
        )
        c = widths[spatial_depth - 1]
        self.prior = ResBlock(c, c, self.code_dim)  # the context p(z2) and q(z2) read
        self.to_prior = nn.Conv2d(c, 2 * spatial_channels, 3, padding=1)
        self.to_posterior = nn.Conv2d(2 * c, 2 * spatial_channels, 3, padding=1)
        nn.init.zeros_(self.to_posterior.weight)  # q starts at p: no KL shock at step 0
        nn.init.zeros_(self.to_posterior.bias)
        self.from_z2 = nn.Conv2d(spatial_channels, c, 1)
        self.to_full = Up(widths[0], widths[0] // 2)  # S / 2 -> S
        self.to_logits = nn.Conv2d(widths[0] // 2, channels, 3, padding=1)

    def _level(self, h: Tensor, i: int, code: Tensor | None) -> Tensor:
        return self.blocks[i](self.ups[i](h), code)

    def _context(self, z1: Tensor, code: Tensor | None) -> tuple[Tensor, Tensor]:
        """h at the z2 resolution, from z1, and the context p(z2) and q(z2) read."""
        h = self.from_latent(z1).view(-1, self.start, self.bottleneck, self.bottleneck)
        for i in range(len(self.blocks) - 1, self.spatial_depth - 2, -1):
            h = self._level(h, i, code)  # up to the z2 resolution
        return h, self.prior(h, code)

    def _posterior(
        self, context: Tensor, features: Tensor, mu_p: Tensor, logvar_p: Tensor
    ) -> tuple[Tensor, Tensor]:
        """q(z2 | x, z1, y)'s moments, a residual on p's (NVAE)."""
        delta_mu, delta_logvar = self.to_posterior(torch.cat([context, features], 1)).chunk(2, 1)
        return mu_p + delta_mu, (logvar_p + delta_logvar).clamp(*LOGVAR_RANGE)

    def _render(self, h: Tensor, z2: Tensor, code: Tensor | None) -> Tensor:
        """Logits (B, C, S, S) from h and z2, both at the z2 resolution."""
        h = h + self.from_z2(z2)
        for i in range(self.spatial_depth - 2, -1, -1):
            h = self._level(h, i, code)
        h = F.silu(self.to_full(F.silu(h)))  # (B, width / 2, S, S)
        return self.to_logits(h)

    def forward(
        self,
        z1: Tensor,
        labels: Tensor | None = None,
        features: Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        sample_posterior: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """Logits (B, C, S, S) and, given encoder `features`, KL(q(z2) || p(z2)) per element
        (B, spatial_channels * S'^2), z2 drawn from q (or its mean: `sample_posterior`
        False); without features, z2 ~ p. Either at `temperature` (0: the mean), the noise
        from `generator` image by image (q without a generator: the global RNG, batched)."""
        code = self.label_code(labels)
        h, context = self._context(z1, code)
        mu_p, logvar_p = split_moments(self.to_prior(context))  # (B, K, S', S') each
        kl = None
        if features is not None:
            mu_q, logvar_q = self._posterior(context, features, mu_p, logvar_p)
            z2 = mu_q
            if sample_posterior:
                noise = image_noise(mu_q, generator) if generator else torch.randn_like(mu_q)
                z2 = mu_q + temperature * noise * (0.5 * logvar_q).exp()
            kl = gaussian_kl_between(mu_q, logvar_q, mu_p, logvar_p).flatten(1)
        else:
            z2 = mu_p + temperature * image_noise(mu_p, generator) * (0.5 * logvar_p).exp()
        return self._render(h, z2, code), kl

    def spatial_posterior(
        self, z1: Tensor, labels: Tensor | None, features: Tensor
    ) -> tuple[Tensor, Tensor]:
        """q(z2 | x, z1, y)'s mean and log-variance (B, K, S', S') given z1 and the encoder's
        features."""
        code = self.label_code(labels)
        _, context = self._context(z1, code)
        return self._posterior(context, features, *split_moments(self.to_prior(context)))

    def decode_spatial(self, z1: Tensor, z2: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits (B, C, S, S) for given latents at both levels: z2 (B, K, S', S') is not
        drawn but taken, e.g. from a second-stage model of the aggregate posterior."""
        code = self.label_code(labels)
        h, _ = self._context(z1, code)
        return self._render(h, z2, code)


def image_noise(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normals shaped like `like`, drawn image by image on the CPU: the i-th image's
    noise does not depend on the batch size (prefix-stable sets)."""
    noise = torch.stack([torch.randn(like.shape[1:], generator=generator) for _ in like])
    return noise.to(like.device)


def gaussian_kl_between(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))) per element, in nats."""
    return 0.5 * (
        logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1
    )
