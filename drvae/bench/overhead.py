"""Per-step overhead: tiny models at 16 px, where an optimiser step costs a few milliseconds
on the CPU, as a full-size step does on a fast GPU. There drvae's ratio to a hand-written
loop measures what drvae and Lightning add to every step, not the model."""

from __future__ import annotations

from typing import Any

import torch

from drvae.bench.classifier import _ce_loss
from drvae.bench.training import compare_training, image_loader
from drvae.bench.vae import _vae_loss
from drvae.models.classifier import GradeClassifier
from drvae.models.vae import ConditionalVAE


def bench_step_overhead(device: str = "cpu", n: int = 2048, epochs: int = 5) -> dict[str, Any]:
    loader = image_loader(n, 16, 64, device)
    vae = compare_training(
        lambda: ConditionalVAE(image_size=16, depth=2, width=4, latent_dim=4),
        _vae_loss,
        lambda model: torch.optim.Adam(model.parameters(), lr=1e-3),
        loader,
        epochs,
        device,
    )
    classifier = compare_training(
        lambda: GradeClassifier("test_resnet", image_size=16),
        _ce_loss,
        lambda model: torch.optim.AdamW(model.parameters(), lr=2e-3),
        loader,
        epochs,
        device,
    )
    return {
        "size": 16,
        "batch_size": 64,
        **{f"vae_{k}": v for k, v in vae.items()},
        **{f"classifier_{k}": v for k, v in classifier.items()},
    }
