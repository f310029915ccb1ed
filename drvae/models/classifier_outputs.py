"""What a trained grading classifier makes of uint8 images: its penultimate features (the
space the audit's FD, KID and PRDC compare in) and its grade probabilities (the judge of the
fidelity stage, the audit and the confidence filter)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from drvae.models.classifier import GradeClassifier


@torch.no_grad()
def classifier_outputs(
    model: GradeClassifier, images: np.ndarray, batch_size: int = 256
) -> tuple[Tensor, Tensor]:
    """Penultimate features (N, D) and grade probabilities (N, K) of uint8 (N, S, S, 3) images,
    in one eval-mode pass through the classifier's own forward (its scaling and normalisation)."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected images (N, S, S, 3), got {images.shape}")
    features: list[Tensor] = []
    # The head's input is timm's forward_head(x, pre_logits=True) (dropout is off in eval).
    hook = model.net.get_classifier().register_forward_hook(
        lambda _module, args, _out: features.append(args[0].flatten(1).float().cpu())
    )
    probabilities, was_training = [], model.training
    model.eval()
    try:
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
            logits = model(batch.permute(0, 3, 1, 2).to(model.device))  # (B, 3, S, S) uint8 in
            probabilities.append(model.grade_probabilities(logits).cpu())  # argmax: its grade
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(features), torch.cat(probabilities)


def classifier_features(
    model: GradeClassifier, images: np.ndarray, batch_size: int = 256
) -> Tensor:
    """(N, D) pre-logits features of the grading classifier: the space FD, KID and PRDC use."""
    return classifier_outputs(model, images, batch_size)[0]


def classifier_probabilities(
    model: GradeClassifier, images: np.ndarray, batch_size: int = 256
) -> Tensor:
    """(N, K) grade probabilities (a regression or ordinal head's grade scores)."""
    return classifier_outputs(model, images, batch_size)[1]
