"""Grade conditioning for the VAE's encoder and decoder: label codes, and FiLM.

A `LabelCode` turns grades into a vector: a fixed one-hot code or a learned embedding. It
accepts hard grades (B,) or soft grade weights (B, K), so a decoder can be driven between
grades (latent interpolation across grades).
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

LabelEmbedding = Literal["onehot", "learned"]


class LabelCode(nn.Module):
    """Grades -> (B, dim) code: one-hot (dim = num_classes) or a learned embedding."""

    def __init__(self, num_classes: int, kind: LabelEmbedding = "onehot", dim: int = 16) -> None:
        super().__init__()
        if kind not in ("onehot", "learned"):
            raise ValueError(f"label_embedding must be 'onehot' or 'learned', got {kind!r}")
        self.num_classes = num_classes
        self.kind = kind
        self.dim = num_classes if kind == "onehot" else dim
        self.embedding = nn.Linear(num_classes, dim, bias=False) if kind == "learned" else None

    def forward(self, labels: Tensor) -> Tensor:
        if labels.dim() == 1:  # hard grades (B,) -> (B, K)
            weights = F.one_hot(labels.long(), self.num_classes).float()
        else:  # soft grade weights (B, K)
            weights = labels.float()
        return weights if self.embedding is None else self.embedding(weights)  # (B, dim)


class FiLM(nn.Module):
    """Feature-wise linear modulation: h * (1 + gamma(c)) + beta(c), per channel."""

    def __init__(self, code_dim: int, channels: int) -> None:
        super().__init__()
        self.project = nn.Linear(code_dim, 2 * channels)
        nn.init.zeros_(self.project.weight)  # starts as the identity
        nn.init.zeros_(self.project.bias)

    def forward(self, h: Tensor, code: Tensor) -> Tensor:
        gamma, beta = self.project(code)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        return h * (1 + gamma) + beta


def label_planes(code: Tensor, size: int) -> Tensor:
    """(B, D) code -> (B, D, size, size) constant planes, to concatenate as channels."""
    return code[:, :, None, None].expand(-1, -1, size, size)
