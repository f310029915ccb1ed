"""Classifier benchmark: `GradeClassifier` training images/s through Lightning against a
hand-written loop on the same timm model, data and batch size (`classifier_overhead_ratio`)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from drvae.bench.training import compare_training, image_loader
from drvae.models.classifier import GradeClassifier

MODEL = "resnet10t"  # conf/classifier/resnet10t.yaml


def _ce_loss(model: torch.nn.Module, images: torch.Tensor, grades: torch.Tensor) -> torch.Tensor:
    """The same forward (scaling, normalisation, channels-last timm net) and cross-entropy."""
    return F.cross_entropy(model(images), grades)


def bench_classifier_training(
    size: int, n: int = 1024, epochs: int = 3, batch: int = 64, device: str = "cpu"
) -> dict[str, Any]:
    """Images/s of classifier training (median epoch after the first), drvae and hand-written."""
    figures = compare_training(
        lambda: GradeClassifier(MODEL, image_size=size),
        _ce_loss,
        lambda model: torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4),
        image_loader(n, size, batch, device),
        epochs,
        device,
    )
    ratio = figures.pop("ratio")
    return {
        "model": MODEL,
        "size": size,
        "batch_size": batch,
        **figures,
        "classifier_overhead_ratio": ratio,
    }
