"""VAE benchmarks: training throughput through Lightning against a hand-written loop on the
same model, data and batch size (in the same process), and generation throughput."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from drvae.bench.data import timed
from drvae.data.synthetic import write_synthetic_set
from drvae.models.vae import ConditionalVAE, to_unit
from drvae.models.vae_loss import gaussian_kl, reconstruction_loss

DEPTH = {32: 3, 64: 4, 128: 5, 256: 6}


def _data(n: int, size: int) -> TensorDataset:
    """Smooth random images (uint8, (N, 3, S, S)) and grades: the model's cost does not
    depend on content, but the loader's copy of uint8 pixels is as in training."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8)
    images = torch.nn.functional.interpolate(torch.from_numpy(small).float(), size=size)
    return TensorDataset(images.byte(), torch.from_numpy(rng.integers(0, 5, n)))


class EpochTimer(L.Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def _lightning_epochs(model: ConditionalVAE, loader: DataLoader, epochs: int) -> list[float]:
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(model, train_dataloaders=loader)
    return timer.seconds


def _plain_epochs(model: ConditionalVAE, loader: DataLoader, epochs: int) -> list[float]:
    """The minimal PyTorch loop for the same model and loss."""
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for images, grades in loader:
            x = to_unit(images)
            mu, logvar = model.encoder(x, grades)
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
            recon = reconstruction_loss(model.decoder(z, grades), x)
            loss = (recon + gaussian_kl(mu, logvar).sum(1)).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        seconds.append(time.perf_counter() - start)
    return seconds


def bench_vae_training(size: int, n: int = 512, epochs: int = 3, batch: int = 64) -> dict:
    """Images/s of VAE training (median epoch after the first), drvae and hand-written."""
    data = _data(n, size)
    loader = DataLoader(data, batch_size=batch, shuffle=True, drop_last=True)
    arch = dict(image_size=size, depth=DEPTH[size])
    torch.manual_seed(0)
    drvae_s = statistics.median(_lightning_epochs(ConditionalVAE(**arch), loader, epochs)[1:])
    torch.manual_seed(0)
    plain_s = statistics.median(_plain_epochs(ConditionalVAE(**arch), loader, epochs)[1:])
    trained = n // batch * batch
    return {
        "size": size,
        "depth": DEPTH[size],
        "batch_size": batch,
        "images_per_epoch": trained,
        "drvae_images_per_second": round(trained / drvae_s, 1),
        "hand_written_images_per_second": round(trained / plain_s, 1),
        "vae_overhead_ratio": round(plain_s / drvae_s, 3),
    }


def bench_generation(size: int, n: int = 1024, batch: int = 256) -> dict[str, Any]:
    """Sampling images/s, and the rate of a whole synthetic set (sampling + PNG writing)."""
    vae = ConditionalVAE(image_size=size, depth=DEPTH[size]).eval()
    grades = [g % 5 for g in range(n)]

    def sample() -> np.ndarray:
        generator = torch.Generator().manual_seed(0)
        out = [vae.sample(grades[i : i + batch], generator=generator) for i in range(0, n, batch)]
        return (torch.cat(out) * 255).round().byte().permute(0, 2, 3, 1).numpy()

    sample_s, images = timed(sample)
    with tempfile.TemporaryDirectory() as tmp:
        runs = iter(range(10))
        write_s, _ = timed(
            lambda: write_synthetic_set(Path(tmp) / str(next(runs)), images, grades, {})
        )
    return {
        "size": size,
        "n": n,
        "sampling_images_per_second": round(n / sample_s, 1),
        "png_writing_images_per_second": round(n / write_s, 1),
        "synthetic_set_images_per_second": round(n / (sample_s + write_s), 1),
    }
