"""VAE benchmarks: training throughput through Lightning against a hand-written loop on the
same model, data and batch size (in the same process), and generation throughput."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drvae.bench.data import timed
from drvae.bench.training import compare_training, image_loader
from drvae.data.synthetic import write_synthetic_set
from drvae.models.vae import ConditionalVAE, to_unit
from drvae.models.vae_loss import reconstruction_loss

DEPTH = {32: 3, 64: 4, 128: 5, 256: 6}


def _vae_loss(model: torch.nn.Module, images: torch.Tensor, grades: torch.Tensor) -> torch.Tensor:
    """The minimal loop's loss: the same BCE + KL as `ConditionalVAE`, written out."""
    x = to_unit(images)
    logits, _, kl_per_element = model(x, grades)
    return (reconstruction_loss(logits, x) + kl_per_element.sum(1)).mean()


def bench_vae_training(
    size: int,
    n: int = 512,
    epochs: int = 3,
    batch: int = 64,
    device: str = "cpu",
    architecture: str = "conv",
) -> dict[str, Any]:
    """Images/s of VAE training (median epoch after the first), drvae and hand-written.
    `architecture="hierarchical"` benches vae=hierarchical's model (its z2 at 16x16)."""
    arch: dict[str, Any] = dict(image_size=size, depth=DEPTH[size], architecture=architecture)
    if architecture == "hierarchical":
        arch |= dict(latent_dim=64, spatial_depth=DEPTH[size] - 2)
    figures = compare_training(
        lambda: ConditionalVAE(**arch),
        _vae_loss,
        lambda model: torch.optim.Adam(model.parameters(), lr=1e-3),
        image_loader(n, size, batch, device),
        epochs,
        device,
    )
    ratio = figures.pop("ratio")
    return {
        "size": size,
        "architecture": architecture,
        "depth": DEPTH[size],
        "batch_size": batch,
        **figures,
        "vae_overhead_ratio": ratio,
    }


def bench_generation(
    size: int, n: int = 1024, batch: int = 256, device: str = "cpu"
) -> dict[str, Any]:
    """Sampling images/s, and the rate of a whole synthetic set (sampling + PNG writing)."""
    vae = ConditionalVAE(image_size=size, depth=DEPTH[size]).eval().to(device)
    grades = [g % 5 for g in range(n)]

    def sample() -> np.ndarray:
        generator = torch.Generator().manual_seed(0)
        out = [vae.sample(grades[i : i + batch], generator=generator) for i in range(0, n, batch)]
        return (torch.cat(out) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()

    sample_s, images = timed(sample)
    with tempfile.TemporaryDirectory() as tmp:
        runs = iter(range(10))
        write_s, _ = timed(
            lambda: write_synthetic_set(Path(tmp) / str(next(runs)), images, grades, {})
        )
    return {
        "size": size,
        "n": n,
        "device": device,
        "sampling_images_per_second": round(n / sample_s, 1),
        "png_writing_images_per_second": round(n / write_s, 1),
        "synthetic_set_images_per_second": round(n / (sample_s + write_s), 1),
    }
