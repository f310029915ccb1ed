"""Architectures as plain `nn.Module`s (no Lightning import)."""

from drvae.models.components.conv_vae import Decoder, Encoder

__all__ = ["Decoder", "Encoder"]
