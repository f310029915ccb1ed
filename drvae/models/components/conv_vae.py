"""Convolutional encoder and decoder of the VAE, for any square size that 2**depth divides.

Each of the `depth` stages halves (encoder) or doubles (decoder) the resolution with a
4x4 stride-2 convolution, so a 64 px image with depth 4 reaches 4x4 in the encoder. Channel
widths are `width * 2**i`, capped at `width * 8`. Conditioning on the grade (when
`num_classes > 0`):

- `concat`: the label code is added as constant input channels of the encoder and
  concatenated to z before the decoder;
- `film`: every encoder and decoder stage is modulated by FiLM from the label code.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Literal

import torch
from torch import Tensor, nn

from drvae.models.components.conditioning import FiLM, LabelCode, LabelEmbedding, label_planes

LOGVAR_RANGE = (-12.0, 6.0)  # keeps exp(logvar) finite in the first, wild steps
Norm = Literal["batch", "group", "instance", "none"]
Upsample = Literal["transposed", "nearest"]
Conditioning = Literal["concat", "film"]


def stage_channels(width: int, depth: int) -> list[int]:
    """Channels after each encoder stage: width, 2 width, 4 width, 8 width, 8 width, ..."""
    return [width * 2 ** min(i, 3) for i in range(depth)]


def check_geometry(image_size: int, depth: int) -> int:
    """The bottleneck's spatial size; a clear error when 2**depth does not divide the size."""
    if depth < 1 or image_size % 2**depth or image_size < 2**depth:
        raise ValueError(
            f"image_size {image_size} is not divisible by 2**depth = {2**depth} (depth {depth}); "
            f"choose a depth whose power of two divides the image size"
        )
    return image_size // 2**depth


def make_norm(kind: Norm, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        # Up to 32 groups of >= 4 channels; the count must divide the channels (width 7: 14).
        cap = min(32, channels // 4) or 1
        return nn.GroupNorm(max(g for g in range(1, cap + 1) if channels % g == 0), channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of batch, group, instance, none; got {kind!r}")


def resample(c_in: int, c_out: int, up: bool, upsample: Upsample, bias: bool) -> nn.Module:
    """Halve (4x4 stride-2 conv) or double the resolution: a 4x4 stride-2 transposed conv,
    or nearest-neighbour upsampling then a 3x3 conv (no checkerboard artefacts, Odena et
    al. 2016)."""
    if not up:
        return nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=bias)
    if upsample == "transposed":
        return nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=bias)
    if upsample == "nearest":
        conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=bias)
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv)
    raise ValueError(f"upsample must be 'transposed' or 'nearest', got {upsample!r}")


class Stage(nn.Module):
    """Resample (down or up), norm, optional FiLM, LeakyReLU."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        up: bool,
        norm: Norm,
        film_dim: int,
        upsample: Upsample = "transposed",
    ) -> None:
        super().__init__()
        self.conv = resample(c_in, c_out, up, upsample, bias=norm == "none")
        self.norm = make_norm(norm, c_out)
        self.film = FiLM(film_dim, c_out) if film_dim else None
        self.act = nn.LeakyReLU(0.2)

    def forward(self, h: Tensor, code: Tensor | None) -> Tensor:
        h = self.norm(self.conv(h))
        if self.film is not None:
            h = self.film(h, code)
        return self.act(h)


class _Conditioned(nn.Module):
    """Shared set-up: the label code (or none) and how it enters the network."""

    def __init__(
        self,
        num_classes: int,
        conditioning: Conditioning,
        label_embedding: LabelEmbedding,
        embed_dim: int,
    ) -> None:
        super().__init__()
        if conditioning not in ("concat", "film"):
            raise ValueError(f"conditioning must be 'concat' or 'film', got {conditioning!r}")
        self.num_classes = num_classes
        self.conditioning = conditioning
        self.code = LabelCode(num_classes, label_embedding, embed_dim) if num_classes else None
        code_dim = self.code.dim if self.code is not None else 0
        self.concat_dim = code_dim if conditioning == "concat" else 0
        self.film_dim = code_dim if conditioning == "film" else 0

    def label_code(self, labels: Tensor | None, batch: int) -> Tensor | None:
        if self.code is None:
            return None
        if labels is None:
            raise ValueError(f"this VAE is conditioned on {self.num_classes} grades: pass grades")
        code = self.code(labels)
        if code.shape[0] != batch:
            raise ValueError(f"{code.shape[0]} grades for a batch of {batch}")
        return code


def split_moments(params: Tensor) -> tuple[Tensor, Tensor]:
    """(B, 2K, ...) -> mu, logvar (B, K, ...), logvar clamped to LOGVAR_RANGE: without it a
    128 px conv VAE's KL went to infinity in epoch 16."""
    mu, logvar = params.chunk(2, dim=1)
    return mu, logvar.clamp(*LOGVAR_RANGE)


class Encoder(_Conditioned):
    """(B, C, S, S) images and grades -> mu, logvar, each (B, latent_dim)."""

    def __init__(
        self,
        image_size: int,
        channels: int = 3,
        width: int = 32,
        depth: int = 4,
        latent_dim: int = 128,
        norm: Norm = "batch",
        num_classes: int = 5,
        conditioning: Conditioning = "concat",
        label_embedding: LabelEmbedding = "onehot",
        embed_dim: int = 16,
    ) -> None:
        super().__init__(num_classes, conditioning, label_embedding, embed_dim)
        self.image_size = image_size
        self.bottleneck = check_geometry(image_size, depth)
        widths = stage_channels(width, depth)
        c_ins = [channels + self.concat_dim, *widths[:-1]]
        self.stages = nn.ModuleList(
            Stage(c_in, c_out, False, norm, self.film_dim)
            for c_in, c_out in zip(c_ins, widths, strict=True)
        )
        self.to_moments = nn.Linear(widths[-1] * self.bottleneck**2, 2 * latent_dim)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        code = self.label_code(labels, x.shape[0])
        h = x  # (B, C, S, S)
        if self.concat_dim:
            h = torch.cat([h, label_planes(code, self.image_size)], dim=1)  # (B, C + D, S, S)
        for stage in self.stages:
            h = stage(h, code)  # (B, C_i, S / 2**i, S / 2**i)
        return split_moments(self.to_moments(h.flatten(1)))  # (B, latent) each


class Decoder(_Conditioned):
    """(B, latent_dim) z and grades -> (B, C, S, S) logits (apply a sigmoid for pixels)."""

    def __init__(
        self,
        image_size: int,
        channels: int = 3,
        width: int = 32,
        depth: int = 4,
        latent_dim: int = 128,
        norm: Norm = "batch",
        num_classes: int = 5,
        conditioning: Conditioning = "concat",
        label_embedding: LabelEmbedding = "onehot",
        embed_dim: int = 16,
        upsample: Upsample = "transposed",
    ) -> None:
        super().__init__(num_classes, conditioning, label_embedding, embed_dim)
        self.bottleneck = check_geometry(image_size, depth)
        widths = stage_channels(width, depth)[::-1]  # deepest first
        self.start = widths[0]
        self.from_latent = nn.Linear(latent_dim + self.concat_dim, widths[0] * self.bottleneck**2)
        self.stages = nn.ModuleList(
            Stage(c_in, c_out, True, norm, self.film_dim, upsample)
            for c_in, c_out in pairwise(widths)
        )
        # The last upsampling stage outputs logits: no norm, no activation.
        self.to_logits = resample(widths[-1], channels, True, upsample, bias=True)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        code = self.label_code(labels, z.shape[0])
        if self.concat_dim:
            z = torch.cat([z, code], dim=1)  # (B, latent + D)
        h = self.from_latent(z).view(-1, self.start, self.bottleneck, self.bottleneck)
        for stage in self.stages:
            h = stage(h, code)  # doubles the resolution
        return self.to_logits(h)  # (B, C, S, S)
