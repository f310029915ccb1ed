"""The classification head's losses: cross-entropy (optionally class-weighted,
label-smoothed) and focal loss. (Losses against mixup's blended grades, for every head:
`drvae.models.grading_heads.soft_target_loss`.)"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOSSES = ("ce", "focal")


class FocalLoss(nn.Module):
    """Multi-class focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p_true)^gamma,
    so confidently right images weigh little. `weight` plays the role of alpha per class;
    the mean is weighted like `F.cross_entropy`'s."""

    def __init__(
        self, gamma: float = 2.0, weight: Tensor | None = None, label_smoothing: float = 0.0
    ) -> None:
        super().__init__()
        self.gamma, self.label_smoothing = gamma, label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:  # (B, K), (B,)
        ce = F.cross_entropy(
            logits,
            target,
            weight=self.weight,
            reduction="none",
            label_smoothing=self.label_smoothing,
        )  # (B,)
        p_true = logits.softmax(dim=1).gather(1, target[:, None]).squeeze(1).detach()  # (B,)
        loss = (1 - p_true).pow(self.gamma) * ce
        norm = self.weight[target].sum() if self.weight is not None else len(target)
        return loss.sum() / norm


def make_loss(
    name: str,
    class_weights: Sequence[float] | None = None,
    label_smoothing: float = 0.0,
    focal_gamma: float = 2.0,
) -> nn.Module:
    """The loss `name` ("ce" or "focal"), weighted per class when `class_weights` is given."""
    weight = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
    if name == "ce":
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
    if name == "focal":
        return FocalLoss(focal_gamma, weight, label_smoothing)
    raise ValueError(f"loss {name!r}: expected one of {LOSSES}")
